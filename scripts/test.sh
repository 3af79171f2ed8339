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

step "state machine definition (asl-validator)"
asl-validator --json-path statemachine/purchase.asl.json

step "DynamoDB-API server (moto) on 127.0.0.1"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
start_moto

step "tests"
cargo test --workspace

step "end-to-end tests again, on the DynamoDB store (moto)"
PURCHASE_TEST_STORE=dynamodb cargo test -p purchase-orchestrator-local
