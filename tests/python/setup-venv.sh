#!/usr/bin/env bash
# Prepare the Python side of breakerd's tests: a virtualenv of its own with
# the pinned packages of requirements.txt, and Python stubs generated from
# proto/. Idempotent and quick when nothing changed, so every entry point
# (tests/python/run.sh, scripts/demo) calls it first.
#
#   tests/python/.venv   the virtualenv   (gitignored)
#   tests/python/gen     generated stubs  (gitignored)
#
# PYTHON picks the interpreter (default python3.11, else python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$here/.venv"
gen="$here/gen"

python=${PYTHON:-}
if [ -z "$python" ]; then
  if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi

# Rebuild the venv when the pins or the interpreter change; a stale venv
# would test against packages nobody asked for.
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version)' | head -n1)"
have=$(cat "$venv/.breakerd-stamp" 2>/dev/null || true)
if [ ! -x "$venv/bin/python" ] || [ "$want" != "$have" ]; then
  echo "setup-venv: creating $venv with $("$python" --version 2>&1)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet --no-input -r "$here/requirements.txt"
  printf '%s\n' "$want" >"$venv/.breakerd-stamp"
fi

# Regenerate the stubs every time (well under a second) so they can never
# drift from the .proto. Build them aside and swap, so that a failed protoc
# run leaves no half-written package behind.
tmp=$(mktemp -d "$venv/gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(
  cd "$root/proto"
  "$venv/bin/python" -m grpc_tools.protoc -I . \
    --python_out="$tmp" --grpc_python_out="$tmp" --pyi_out="$tmp" \
    $(find . -name '*.proto' | sort)
)
rm -rf "$gen"
mv "$tmp" "$gen"
trap - EXIT
