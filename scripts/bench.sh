#!/usr/bin/env bash
# Benchmarks (issues 9 and 14), before and after in one run, written to
# docs/benchmarks.md: cold start, warm invocation, AWS calls per endpoint and
# step, write units and cost, local throughput, sizes. Not part of
# scripts/test.sh (its init smoke test is: scripts/bench-smoke.sh).
#
# "after" is this working tree; "before" is a git revision, exported with
# `git archive` into target/bench/before/src (no worktree, no commit) and built
# with its OWN target dir (target/bench/before/target): workspace crates of
# two trees in one target dir overwrite each other's artifacts. Every
# function is built on its own (`-p <function>`), so it links only its own
# features. The hello-world baselines are built once, from this tree, with
# the same profile. Both trees and the baselines are measured in this run,
# interleaved where it matters, and every ratio is against this run's
# baseline.
#
# Knobs (environment):
#   BENCH_BEFORE=bb18b99     the revision #14's work starts from
#   BENCH_QUICK=1            the whole pipeline in a few minutes after the
#                            builds: the defaults marked (quick) below
#   BENCH_RUNS=21 (3)        cold starts per binary
#   BENCH_RACE_RUNS=2000 (200)  runs of the Runtime API race reproduction
#   BENCH_PURCHASES=5 (2)    purchases per cost-model scenario
#   BENCH_THROUGHPUT=3000 (300)  purchases of the throughput driver
#   BENCH_CLIENTS=16         its client tasks
#   BENCH_LOAD_SECS=10 (2)   seconds per wrk run
#   BENCH_CONNECTIONS=16     wrk connections
#   BENCH_MEASURE_SECS=3 (1) criterion measurement time per benchmark
#   BENCH_ARM64=1 (0)        cross-build each tree's largest function for
#                            arm64 with cargo-lambda (≈ 45 min per tree from
#                            scratch); 0 skips it, and so does a machine
#                            where no aarch64 std can be installed (the
#                            report then says so and shows x86_64 sizes)
#   BENCH_PROFILE=1 (0)      callgrind profiles of a cold start
#   BENCH_SKIP_BUILD=1       reuse the binaries as they are
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=${BENCH_QUICK:-}
pick() { if [ -n "$quick" ]; then echo "$2"; else echo "$1"; fi; }
RUNS=${BENCH_RUNS:-$(pick 21 3)}
RACE_RUNS=${BENCH_RACE_RUNS:-$(pick 2000 200)}
PURCHASES=${BENCH_PURCHASES:-$(pick 5 2)}
THROUGHPUT=${BENCH_THROUGHPUT:-$(pick 3000 300)}
CLIENTS=${BENCH_CLIENTS:-16}
LOAD_SECS=${BENCH_LOAD_SECS:-$(pick 10 2)}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
MEASURE_SECS=${BENCH_MEASURE_SECS:-$(pick 3 1)}
ARM64=${BENCH_ARM64:-$(pick 1 0)}
PROFILE=${BENCH_PROFILE:-$(pick 1 0)}
BEFORE_REV=${BENCH_BEFORE:-bb18b99}

# Absolute paths: the before tree is built from its own directory.
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")
OUT=$root/target/bench
BEFORE=$OUT/before
BEFORE_SRC=$BEFORE/src
BEFORE_TARGET=$BEFORE/target
mkdir -p "$OUT"
# Fragments of an earlier run must not leak into this report.
rm -f "$OUT"/*.md "$OUT"/*.json

step() { printf '\n==> %s\n' "$*"; }

step "tools"
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import moto' 2>/dev/null; then
  scripts/install-tools.sh
fi

step "before: $BEFORE_REV exported into $BEFORE_SRC"
sha=$(git rev-parse --verify "$BEFORE_REV^{commit}")
if [ "$(cat "$BEFORE_SRC/.bench-rev" 2>/dev/null)" != "$sha" ]; then
  rm -rf "$BEFORE_SRC"
  mkdir -p "$BEFORE_SRC"
  git archive "$sha" | tar -x -C "$BEFORE_SRC"
  # Files of another revision may carry older times than the artifacts
  # already in the before target dir: make every file newer so cargo
  # rebuilds what changed instead of trusting the old build.
  find "$BEFORE_SRC" -type f -exec touch {} +
  echo "$sha" > "$BEFORE_SRC/.bench-rev"
fi

# The function packages of a tree (the crates under functions/).
functions_of() {
  for manifest in "$1"/functions/*/Cargo.toml; do
    sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -1
  done
}

# Release builds of one tree with its own target dir: each function alone,
# then the local server (and, for the working tree, the bench binaries).
build_tree() { # source_dir target_dir extra-cargo-args...
  local src=$1 dir=$2
  shift 2
  (
    cd "$src"
    export CARGO_TARGET_DIR="$dir"
    for function in $(functions_of .); do
      echo "    $function"
      cargo build --release --quiet -p "$function"
    done
    cargo build --release --quiet -p purchase-orchestrator-local --bin purchase-orchestrator
    for extra in "$@"; do
      cargo build --release --quiet $extra
    done
    # The criterion benchmark binary, built now so no build runs during
    # the measurements.
    cargo bench --quiet -p bench --bench handlers --no-run
  )
}

# The largest function binary of a tree (x86_64).
largest_of() { # source_dir bin_dir
  for function in $(functions_of "$1"); do
    if [ -f "$2/$function" ]; then stat -c '%s %n' "$2/$function"; fi
  done | sort -n | tail -1 | awk '{print $2}' | xargs -r basename
}

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  step "after: release builds ($TARGET)"
  build_tree "$root" "$TARGET" "-p bench --bins"
  step "before: release builds ($BEFORE_TARGET)"
  build_tree "$BEFORE_SRC" "$BEFORE_TARGET"
  if [ "$ARM64" = 1 ]; then
    step "arm64 bootstrap of each tree's largest function (cargo-lambda, zig)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check 'cargo-lambda==1.9.*' ziglang
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu &&
      ! rustup target add aarch64-unknown-linux-gnu; then
      # The run goes on: the report says why the arm64 row is empty.
      echo "    no aarch64 standard library here: arm64 skipped"
      ARM64=0
    fi
  fi
  if [ "$ARM64" = 1 ]; then
    for tree in "after:$root:$TARGET" "before:$BEFORE_SRC:$BEFORE_TARGET"; do
      IFS=: read -r label src dir <<< "$tree"
      largest=$(largest_of "$src" "$dir/release")
      echo "    $label: $largest"
      (cd "$src" && PATH="$root/.venv/bin:$PATH" CARGO_TARGET_DIR="$dir" \
        cargo lambda build --release --arm64 -p "$largest")
    done
  fi
fi

# The hello worlds are stripped exactly like the functions (the bench
# crate's own binaries keep symbols for profiling).
mkdir -p "$OUT/bin"
for hello in hello-lambda-http hello-lambda-runtime hello-hyper; do
  cp "$TARGET/release/$hello" "$OUT/bin/$hello"
  strip "$OUT/bin/$hello"
done
DRIVER=$TARGET/release/bench-driver
AFTER_TREE="after=$root:$TARGET/release"
BEFORE_TREE="before=$BEFORE_SRC:$BEFORE_TARGET/release"
# Before first: the report's last column is the one the targets are checked on.
TREES=(--tree "$BEFORE_TREE" --tree "$AFTER_TREE")

step "moto (DynamoDB and Step Functions API on 127.0.0.1)"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
start_moto

dirty=""
[ -z "$(git status --porcelain --untracked-files=no)" ] || dirty=" with uncommitted changes"
"$DRIVER" trees --out "$OUT" \
  --tree "before=\`$(git rev-parse --short "$sha")\` ($BEFORE_REV), \`git archive\` into \`target/bench/before/src\`:$BEFORE_SRC" \
  --tree "after=the working tree at \`$(git rev-parse --short HEAD)\`$dirty:$root"

# Other engineers build on this machine too: the report shows the load
# before each measuring phase, so readers know what the numbers ran beside.
load_average() { # phase
  printf -- '- %s: %s\n' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/load-averages.md"
}

load_average "Runtime API race"
step "1. the lost cold-start event, reproduced ($RACE_RUNS runs each way)"
"$DRIVER" runtime-race --binary "$OUT/bin/hello-lambda-runtime" --runs "$RACE_RUNS" --out "$OUT"

load_average "cold start and AWS calls"
step "1. cold start and 3. AWS calls ($RUNS runs per binary, both trees interleaved)"
"$DRIVER" coldstart --moto "$AWS_TEST_ENDPOINT" --runs "$RUNS" --hello-dir "$OUT/bin" \
  "${TREES[@]}" --out "$OUT"

load_average "write units and cost"
step "4. write units and cost ($PURCHASES purchases per scenario)"
"$DRIVER" cost --moto "$AWS_TEST_ENDPOINT" --purchases "$PURCHASES" "${TREES[@]}" --out "$OUT"

load_average "local throughput and wrk"
step "5. local throughput ($THROUGHPUT purchases, $CLIENTS clients) and wrk"
"$DRIVER" throughput --purchases "$THROUGHPUT" --clients "$CLIENTS" "${TREES[@]}" --out "$OUT"
"$DRIVER" load --wrk "$(command -v wrk)" --duration "$LOAD_SECS" --connections "$CONNECTIONS" \
  --hello-dir "$OUT/bin" "${TREES[@]}" --out "$OUT"

load_average "warm invocation (criterion)"
step "2. warm invocation (criterion, each tree's own benchmark)"
for tree in "before:$BEFORE_SRC:$BEFORE_TARGET" "after:$root:$TARGET"; do
  IFS=: read -r label src dir <<< "$tree"
  rm -rf "$dir/criterion"
  (cd "$src" && CARGO_TARGET_DIR="$dir" BENCH_MEASURE_SECS="$MEASURE_SECS" \
    cargo bench --quiet -p bench --bench handlers)
done
"$DRIVER" criterion --criterion "before=$BEFORE_TARGET/criterion" \
  --criterion "after=$TARGET/criterion" --out "$OUT"

step "6. sizes"
if [ "$ARM64" = 1 ]; then
  arm64_note="not built in this run"
elif ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  arm64_note="not built here: no aarch64 std"
else
  arm64_note="not built in this run (BENCH_ARM64=0)"
fi
"$DRIVER" sizes --hello-dir "$OUT/bin" "${TREES[@]}" --arm64-note "$arm64_note" \
  --lambda-dir "before=$BEFORE_TARGET/lambda" --lambda-dir "after=$TARGET/lambda" --out "$OUT"

if [ "$PROFILE" = 1 ] && command -v valgrind >/dev/null 2>&1; then
  step "profiles (callgrind: where a cold start's instructions go, after)"
  # The functions are stripped; `probe` runs the same code with symbols.
  profile_one() { # name binary
    local name=$1 binary=$2 out="$OUT/callgrind.$1"
    rm -f "$out"
    "$DRIVER" coldstart --moto "$AWS_TEST_ENDPOINT" --runs 1 --only "$name" --binary "$binary" \
      --wrapper "valgrind --tool=callgrind --callgrind-out-file=$out" --timeout 300 \
      --hello-dir "$TARGET/release" --tree "$AFTER_TREE" --out "$OUT/profile-runs"
    callgrind_annotate --inclusive=yes "$out" 2>/dev/null > "$out.txt" || true
  }
  profile_one hello-lambda-http "$TARGET/release/hello-lambda-http"
  profile_one get-purchase "$TARGET/release/probe"
  profile_one reserve-stock "$TARGET/release/probe"
  {
    echo "callgrind counts instructions (Ir) from exec to the first response, not wall time:"
    echo "I/O waits (moto, disk) do not show here. Top inclusive entries of the working tree;"
    echo "\"probe\" is the function's own \`main\` rebuilt with symbols (bench/src/bin/probe.rs)."
    for name in hello-lambda-http get-purchase reserve-stock; do
      f="$OUT/callgrind.$name.txt"
      [ -s "$f" ] || continue
      echo
      echo "**$name** — $(grep -m1 'PROGRAM TOTALS' "$f" | sed 's/ *PROGRAM TOTALS//;s/^ *//') instructions"
      echo
      echo '```'
      awk '/file:function/{found=1; next} found && /^-+$/ {next} found && NF {print}' "$f" \
        | grep -v 'PROGRAM TOTALS' | head -"${BENCH_PROFILE_LINES:-30}" | cut -c1-170 || true
      echo '```'
    done
  } > "$OUT/profile.md"
fi
cp bench/tuning.md "$OUT/tuning.md"

step "report"
"$DRIVER" report --doc docs/benchmarks.md --trees before,after --out "$OUT"
echo "docs/benchmarks.md written"
