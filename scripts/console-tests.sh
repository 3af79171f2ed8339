#!/usr/bin/env bash
# Browser tests of the review console (console/tests/, pytest + Playwright)
# in real headless Chromium (Debian's `chromium`) against a fresh local
# server: debug build, free port on 127.0.0.1, temporary DATA_DIR, the demo
# catalog (CATALOG_FILE to use another). Stops the server and removes the
# data when done, pass or fail.
#
#   scripts/console-tests.sh                      # what scripts/test.sh runs
#   scripts/console-tests.sh -k conflict          # extra arguments go to pytest
#   CONSOLE_SCREENSHOT_DIR=docs scripts/console-tests.sh   # refresh README's screenshots
#
# Needs .venv/ with playwright and pytest, and chromium: scripts/install-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$root/.venv/bin:$PATH"

for tool in python pytest; do
  [ -x ".venv/bin/$tool" ] || { echo "no .venv/bin/$tool: run scripts/install-tools.sh" >&2; exit 1; }
done
chromium=${CHROMIUM:-$(command -v chromium || true)}
[ -n "$chromium" ] || { echo "no chromium on PATH: run scripts/install-tools.sh" >&2; exit 1; }

cargo build --quiet --bin purchase-orchestrator
target_dir=${CARGO_TARGET_DIR:-$root/target}
server_bin="$target_dir/debug/purchase-orchestrator"
log="$target_dir/console-server.log"

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
catalog=${CATALOG_FILE:-$root/catalog/demo.json}
# No JWT variables: the server generates its development secret in $data,
# which turns the console's developer sign-in on.
env -u JWKS_URL -u JWT_HS256_SECRET DATA_DIR="$data" PORT="$port" HOST=127.0.0.1 \
  CATALOG_FILE="$catalog" RUST_LOG="${RUST_LOG:-warn}" "$server_bin" > "$log" 2>&1 &
server=$!
stop() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap stop EXIT

base="http://127.0.0.1:$port/purchase-orchestrator"
deadline=$((SECONDS + 60))
until curl -s -o /dev/null "$base/console/"; do
  if [ $SECONDS -ge $deadline ] || ! kill -0 "$server" 2>/dev/null; then
    echo "the local server did not start:" >&2; cat "$log" >&2; exit 1
  fi
  sleep 0.2
done

PYTHONDONTWRITEBYTECODE=1 CONSOLE_BASE_URL="$base" CONSOLE_DATA_DIR="$data" CONSOLE_SERVER_BIN="$server_bin" CHROMIUM="$chromium" \
  python -m pytest console/tests -p no:cacheprovider -q "$@"
