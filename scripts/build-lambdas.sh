#!/usr/bin/env bash
# Release build of every Lambda function for AWS: `cargo lambda build --release
# --arm64` (Graviton, provided.al2023), one `target/lambda/<function>/bootstrap`
# per crate in functions/, then their sizes.
#
# Each function is built on its own (`-p <function>`): cargo unifies features
# across the packages of one build, so building several at once would link
# every function with the union of their `shared` features (the API's JWT
# verification into the steps, the simulators into the API...). Functions
# with the same feature set share their compiled dependencies; each distinct
# set compiles `shared` (and a few dependencies) once more. docs/deploy.md
# ("Build") has the measurements.
#
# Not part of scripts/test.sh: it compiles the AWS SDK in release mode for
# aarch64 (up to ~30 minutes from scratch on 2 cores). `sam build` runs the same
# cargo-lambda per function and reuses this target/ directory.
#
#   scripts/build-lambdas.sh                  # every function
#   scripts/build-lambdas.sh --bin get-purchase [--bin capture-payment ...]
#   scripts/build-lambdas.sh --output-format zip   # target/lambda/<fn>/bootstrap.zip
#
# Tools come from PyPI into the git-ignored .venv/: cargo-lambda and zig (its
# cross-linker). The Rust standard library for aarch64 comes from rustup.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "tools: cargo-lambda and zig (PyPI, into .venv/)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check 'cargo-lambda==1.9.*'
export PATH="$PWD/.venv/bin:$PATH"
cargo lambda --version

step "Rust target aarch64-unknown-linux-gnu"
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi

# `--bin <function>` picks functions (each built alone, as above); every
# other argument goes to cargo lambda.
functions=()
passthrough=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --bin) functions+=("${2:?--bin needs a function name}"); shift 2 ;;
    --bin=*) functions+=("${1#--bin=}"); shift ;;
    *) passthrough+=("$1"); shift ;;
  esac
done
if [ "${#functions[@]}" -eq 0 ]; then
  # Only the function crates: local/ and asl/ are not Lambdas.
  for manifest in functions/*/Cargo.toml; do
    functions+=("$(basename "$(dirname "$manifest")")")
  done
fi
for function in "${functions[@]}"; do
  step "cargo lambda build --release --arm64 -p $function ${passthrough[*]}"
  cargo lambda build --release --arm64 -p "$function" "${passthrough[@]}"
done

step "artifacts"
target_dir=${CARGO_TARGET_DIR:-target}
for artifact in "$target_dir"/lambda/*/bootstrap*; do
  printf '%8s KiB  %s\n' "$(( $(stat -c %s "$artifact") / 1024 ))" "$artifact"
done
