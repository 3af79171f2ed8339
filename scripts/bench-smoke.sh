#!/usr/bin/env bash
# Bench smoke (issue 14): checks that take seconds, run by scripts/test.sh
# after the tests, so the cold-start and size wins measured by
# scripts/bench.sh cannot quietly rot. Each check reports through `fail`
# with the function and what is wrong; the script exits 1 if any did.
#
#   1. links: what each function under functions/ links;
#   2. init: what each function does before its first `next` poll: started
#      under bench/'s Runtime API with the counting proxy in front of a dead
#      AWS endpoint and its CA trust store pointed at a trap (bench-driver
#      smoke), it must reach its first poll without any AWS call and
#      without reading a trust store.
#
#   scripts/bench-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

failures=()
fail() { failures+=("$*"); }

# ---------------------------------------------------------------- 1. links
# Every function is built alone (`cargo build -p <function>`, as
# scripts/build-lambdas.sh and `sam build` do; docs/deploy.md "Build"), so
# what it links is its own dependency tree with its own features, which
# `cargo tree -p <function>` shows without compiling anything. Which
# function is which comes from its code: what its main.rs runs.

# api | step | reconciler | other
kind_of() {
  local main="functions/$1/src/main.rs"
  if grep -q 'run_endpoint(' "$main"; then
    echo api
  elif grep -q 'run_step(' "$main"; then
    echo step
  elif grep -q 'run_reconciler(' "$main"; then
    echo reconciler
  else
    echo other
  fi
}

# What a function of each kind must not link: crates, and features of the
# shared crate (shared/src/lib.rs lists them).
forbidden_crates() {
  local common="redb asl purchase-orchestrator-local"
  case "$1" in
    api) echo "$common" ;;
    step | reconciler | other) echo "$common jsonwebtoken" ;;
  esac
}
forbidden_features() {
  case "$1" in
    api) echo "embedded steps simulators" ;;
    step) echo "embedded api lambda-http" ;;
    reconciler) echo "embedded api lambda-http steps simulators" ;;
    # The console serves static files: no handlers, no AWS calls.
    other) echo "embedded api lambda-http steps simulators aws-sdk dynamodb sfn" ;;
  esac
}

check_links() {
  local dir function kind tree shared_features crate feature
  for dir in functions/*/; do
    function=$(basename "$dir")
    kind=$(kind_of "$function")
    # One line per package: `<name> v<version> [(<path>)] <feature,feature>`.
    if ! tree=$(cargo tree --quiet -p "$function" -e normal --prefix none -f '{p} {f}'); then
      fail "$function: cargo tree failed"
      continue
    fi
    for crate in $(forbidden_crates "$kind"); do
      if grep -q "^$crate v" <<<"$tree"; then
        fail "$function ($kind function) links crate $crate (see: cargo tree -p $function -e normal -i $crate)"
      fi
    done
    # The features are the last field, absent when there are none (the
    # line then ends with the path); `(*)` marks a package shown before.
    shared_features=$(sed 's/ (\*)$//' <<<"$tree" |
      awk '$1 == "shared" && !seen { seen = 1; if ($NF !~ /\)$/) print $NF }' | tr ',' ' ')
    for feature in $(forbidden_features "$kind"); do
      if [[ " $shared_features " == *" $feature "* ]]; then
        fail "$function ($kind function) links shared with feature \`$feature\` (its features: ${shared_features// /, }; see functions/$function/Cargo.toml)"
      fi
    done
    printf '  %-22s %-10s shared: %s\n' "$function" "$kind" "${shared_features:-(no features)}"
  done
}

# ---------------------------------------------------------------- 2. init
# The debug function binaries. `cargo test` builds only the test harnesses
# of bin crates; `--tests` in the same build keeps cargo test's feature
# resolution (dev-dependencies active), so after the tests no dependency is
# rebuilt: the binaries are linked once, later runs are a no-op. (So the
# binaries carry the workspace's unified features, not each function's own:
# what init does is decided by each main.rs and the shared crate's glue, and
# the links check above covers what each function links on its own.)
check_init() {
  local target=${CARGO_TARGET_DIR:-target} output
  if ! cargo build --workspace --bins --tests --quiet; then
    fail "init: cargo build --workspace --bins --tests failed"
    return
  fi
  # bench-driver prints one line per function and exits non-zero with the
  # list of problems when any function called AWS or read a trust store.
  if ! output=$("$target/debug/bench-driver" smoke --tree "current=.:$target/debug" \
    --out "$target/bench-smoke" 2>&1); then
    printf '%s\n' "$output"
    fail "init: $(grep -v '^\(ok \|FAIL\)' <<<"$output" | tr '\n' ' ')"
    return
  fi
  printf '%s\n' "$output"
}

# ---------------------------------------------------------------- run
echo "links (cargo tree -p <function>):"
check_links
echo "init (bench-driver smoke: AWS calls and trust-store reads before the first poll):"
check_init

if [ "${#failures[@]}" -gt 0 ]; then
  printf '\nbench smoke FAILED:\n' >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "bench smoke: ok"
