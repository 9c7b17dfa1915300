#!/usr/bin/env bash
# The dashboard in a real browser: tests/browser/dashboard.test.js drives
# Debian's Chromium (through playwright-core, which downloads no browser)
# against the real breakerd binary, tripping a circuit over gRPC.
#
#   tests/browser/run.sh [extra `node --test` args...]
#
# BREAKERD_BIN=path  test that binary instead of building target/debug/breakerd.
# CHROMIUM=path      use that browser instead of /usr/bin/chromium.
# Installs the `chromium` package with apt-get when it is missing (CI runs as
# root on a fresh machine); never runs `playwright install`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "tests/browser: $tool is not installed (Node.js >= 20 is needed)" >&2
    exit 1
  fi
done

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/browser: $CHROMIUM is missing; install Debian's chromium package (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
  echo "tests/browser: installing Debian's chromium package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

cd "$here"
# Exactly the locked versions; npm ci also clears what an earlier install left.
npm ci --no-audit --no-fund --loglevel=error

if [ -z "${BREAKERD_BIN:-}" ]; then
  # Always (re)build: a stale binary would test yesterday's server. A no-op
  # when it is up to date.
  (cd "$root" && cargo build --locked -p breakerd --bin breakerd)
  export BREAKERD_BIN="$root/target/debug/breakerd"
fi

node --test "$@" dashboard.test.js
