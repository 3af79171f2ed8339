#!/usr/bin/env bash
# Runs the AWS deployment of template.yaml on this machine, no AWS account and
# no Docker: moto for DynamoDB, every Lambda function as its real debug binary
# (with the environment the template gives it), a Step Functions endpoint
# running statemachine/ and an API Gateway shim on http://127.0.0.1:$PORT.
# Runs in the foreground; Ctrl-C or SIGTERM stops all of it.
#
# Honours the local server's variables with the same meaning: PORT (3000),
# DATA_DIR (./.data: the development JWT secret, shared with
# `purchase-orchestrator token`, and the execution journal), CATALOG_FILE,
# JWT_HS256_SECRET, JWT_ISSUER, JWT_AUDIENCE; and RETRY_DELAY_SCALE.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
cargo build --workspace --bins
target="${CARGO_TARGET_DIR:-target}"

# shellcheck source=scripts/moto.sh
source scripts/moto.sh
start_moto # exports AWS_TEST_ENDPOINT; stops moto when this script exits
export DYNAMODB_ENDPOINT="$AWS_TEST_ENDPOINT"

# moto keeps nothing between runs, so the executions journaled by the last
# run have no purchases any more: start them afresh too. (The development
# secret in DATA_DIR stays, so tokens keep working.)
data_dir="${DATA_DIR:-./.data}"
rm -rf "$data_dir/step-functions"

"$target/debug/aws-local" &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
wait "$pid"
