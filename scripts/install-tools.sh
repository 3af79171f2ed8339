#!/usr/bin/env bash
# Installs the test tools into project-local, git-ignored folders:
#   .venv/          moto[server] (DynamoDB API), cfn-lint (SAM/CloudFormation linter)
#   node_modules/   asl-validator (Amazon States Language validator)
#   chromium        Debian's package, for the console's browser tests (only if missing)
# Idempotent: a second run only checks versions.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

if [ ! -x node_modules/.bin/asl-validator ]; then
  npm install --no-audit --no-fund --silent
fi

# Headless Chromium for the review console's browser tests (Playwright drives
# this one; it never downloads a browser of its own).
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
