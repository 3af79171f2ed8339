#!/usr/bin/env bash
# Runs every check and test of the project, installing what it needs first.
# This is README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "tools (project-local, git-ignored: .venv/, node_modules/)"
scripts/install-tools.sh
export PATH="$root/.venv/bin:$root/node_modules/.bin:$PATH"

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "state machine definitions (asl-validator)"
asl-validator --json-path statemachine/purchase.asl.json --json-path statemachine/review.asl.json

step "SAM template (cfn-lint; sam validate --lint), offline"
cfn-lint template.yaml
# aws-sam-cli pins its own cfn-lint, boto3 and pydantic, so it lives in a venv
# of its own inside the git-ignored .venv/ (about 40 s to install once).
[ -x .venv/sam/bin/python ] || python3 -m venv .venv/sam
.venv/sam/bin/python -m pip install --quiet --disable-pip-version-check 'aws-sam-cli==1.170.*'
# No AWS access: the transform and lint run locally; no profile is read.
SAM_CLI_TELEMETRY=0 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  .venv/sam/bin/sam validate --lint --region eu-west-1 --template-file template.yaml

step "OpenAPI description (openapi-spec-validator)"
openapi-spec-validator openapi.yaml

step "DynamoDB-API server (moto) on 127.0.0.1"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
start_moto

step "build: the function binaries aws-local runs (with the tests' feature set, so the tests build nothing again)"
cargo build --workspace --bins --tests

step "tests"
# The generated-interleavings test runs a fixed number of cases so CI time
# stays predictable; it prints its seed. Run it longer with
#   INTERLEAVING_CASES=20000 cargo test -p purchase-orchestrator-local --test interleavings -- --nocapture
export INTERLEAVING_CASES="${INTERLEAVING_CASES:-2000}"
cargo test --workspace

step "end-to-end tests again, on the DynamoDB store (moto)"
# The reliability load tests (1,000 buyers, 200 racing writers) and the crash
# test stay on the embedded store: single-threaded moto measures moto, not
# the orchestrator. `--workspace` keeps the first pass's feature set, so
# nothing is built again.
PURCHASE_TEST_STORE=dynamodb INTERLEAVING_CASES=40 cargo test --workspace \
  --test api --test workflow --test rules --test idempotency --test definition \
  --test lifecycle --test operations --test matrix --test interleavings

step "workflow tests again, with the purchase workflow as EXPRESS"
# The local runner runs the purchase machine with Express semantics: runs
# lost with the process, no describe or redrive (a new run instead),
# duplicates of a name run side by side, five minutes per run.
WORKFLOW_TYPE=EXPRESS INTERLEAVING_CASES=200 cargo test --workspace \
  --test workflow --test lifecycle --test operations --test rules --test matrix \
  --test interleavings

step "end-to-end tests again, against the AWS shape (aws-local: the function binaries, the Step Functions endpoint, the API Gateway shim)"
scripts/aws-local-tests.sh

step "bench smoke: what each function links (scripts/bench-smoke.sh)"
# Seconds, not minutes: cargo tree per function, no compiling. Fails when a
# function links a feature or crate it should not (issue 14).
scripts/bench-smoke.sh

step "schemathesis: openapi.yaml against the local server"
scripts/schemathesis.sh

step "review console: browser tests (headless Chromium, Playwright)"
scripts/console-tests.sh
