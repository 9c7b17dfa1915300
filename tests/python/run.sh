#!/usr/bin/env bash
# The Python cross-language suite: real breakerd binary, Python gRPC clients
# generated from proto/.
#
#   tests/python/run.sh [pytest args...]
#
# BREAKERD_BIN=path  test that binary instead of building target/debug/breakerd.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

"$here/setup-venv.sh"

if [ -z "${BREAKERD_BIN:-}" ]; then
  # Always (re)build: a stale binary would test yesterday's server. A no-op
  # when it is up to date.
  (cd "$root" && cargo build --locked -p breakerd --bin breakerd)
  export BREAKERD_BIN="$root/target/debug/breakerd"
fi

cd "$here"
set +e
"$here/.venv/bin/python" -m pytest "$@"
status=$?
set -e
case $status in
  0) ;;
  5) echo "tests/python: pytest collected no tests; that is a failure, not a pass" >&2 ;;
  *) echo "tests/python: pytest failed (exit $status)" >&2 ;;
esac
exit "$status"
