# Sourced by scripts/test.sh: starts moto's server on a free loopback port,
# waits until it answers, exports DYNAMODB_TEST_ENDPOINT, and stops it on exit.
start_moto() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  .venv/bin/moto_server -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
  MOTO_PID=$!
  trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
  local deadline=$((SECONDS + 60))
  until curl -s -o /dev/null "http://127.0.0.1:$port/moto-api/"; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 $MOTO_PID 2>/dev/null; then
      echo "moto did not start; log:" >&2; cat target/moto.log >&2; return 1
    fi
    sleep 0.2
  done
  export DYNAMODB_TEST_ENDPOINT="http://127.0.0.1:$port"
  echo "moto listening at $DYNAMODB_TEST_ENDPOINT"
}
