# Sourced by scripts/test.sh: starts moto's server on a free loopback port,
# waits until it answers, exports AWS_TEST_ENDPOINT (and DYNAMODB_TEST_ENDPOINT,
# the same), and stops it on exit.
#
# moto's DynamoDB keeps no locks of its own, and its `moto_server` command
# always serves requests on parallel threads, so two concurrent
# TransactWriteItems could interleave their condition checks and writes —
# something real DynamoDB never does. The server is therefore started with
# the same WSGI app on a single thread: requests are handled one at a time
# (each on its own connection; moto answers `Connection: close`), so every
# request is atomic, as on DynamoDB, and the concurrency tests race for real
# without being able to pass or fail by a thread switch.
start_moto() {
  local port log
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # Not under target/: CARGO_TARGET_DIR may point elsewhere (or not exist yet).
  log=$(mktemp "${TMPDIR:-/tmp}/moto.XXXXXX.log")
  .venv/bin/python - "$port" > "$log" 2>&1 <<'PY' &
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
PY
  MOTO_PID=$!
  trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
  local deadline=$((SECONDS + 60))
  until curl -s -o /dev/null "http://127.0.0.1:$port/moto-api/"; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 $MOTO_PID 2>/dev/null; then
      echo "moto did not start; log ($log):" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.2
  done
  # One server answers every AWS API the tests use (DynamoDB, Step Functions).
  export AWS_TEST_ENDPOINT="http://127.0.0.1:$port"
  export DYNAMODB_TEST_ENDPOINT="$AWS_TEST_ENDPOINT"
  # Credentials moto accepts, so the SDK's default chain never looks further
  # (no instance metadata calls, no real account).
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  echo "moto listening at $AWS_TEST_ENDPOINT"
}
