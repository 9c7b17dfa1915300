#!/usr/bin/env bash
# The Node.js example's tests: clients/node/example.js (acquire/report through
# the .proto with @grpc/grpc-js) against the real breakerd binary.
#
#   clients/node/run.sh [extra `node --test` args...]
#
# BREAKERD_BIN=path  test that binary instead of building target/debug/breakerd.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "clients/node: $tool is not installed (Node.js >= 20 is needed)" >&2
    exit 1
  fi
done

cd "$here"
# Exactly the locked versions when there is a lock; npm ci also removes
# whatever a previous install left in node_modules.
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi

if [ -z "${BREAKERD_BIN:-}" ]; then
  # Always (re)build: a stale binary would test yesterday's server.
  (cd "$root" && cargo build --locked -p breakerd --bin breakerd)
  export BREAKERD_BIN="$root/target/debug/breakerd"
fi

node --test "$@" test.js
