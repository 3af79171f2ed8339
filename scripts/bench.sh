#!/usr/bin/env bash
# Benchmarks (issue 9): cold start, warm handler cost, local server load,
# binary sizes / peak RSS and the cost model, written to docs/benchmarks.md.
# Not part of scripts/test.sh. Installs what it needs (wrk from Debian, moto
# via scripts/install-tools.sh), builds the release binaries once, runs
# everything on 127.0.0.1 with bounded request counts and durations.
#
# Knobs (environment):
#   BENCH_RUNS=20          cold starts per binary
#   BENCH_LOAD_SECS=10     seconds per wrk run (4 runs)
#   BENCH_CONNECTIONS=16   wrk connections
#   BENCH_PURCHASES=5      purchases per cost-model scenario
#   BENCH_MEASURE_SECS=3   criterion measurement time per benchmark
#   BENCH_SKIP_BUILD=1     reuse target/release as it is
#   BENCH_LAMBDA_DIRS      where cargo-lambda put <fn>/bootstrap (arm64 sizes),
#                          ':'-separated; default target/lambda
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
mkdir -p "$OUT"
# Fragments of an earlier run must not leak into this report.
rm -f "$OUT"/*.md "$OUT"/*.json

echo "==> tools"
if ! command -v wrk >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk
  else
    echo "wrk is needed (Debian/Ubuntu: apt-get install wrk)" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import moto' 2>/dev/null; then
  scripts/install-tools.sh
fi

echo "==> release build (functions, local server, bench binaries)"
if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  cargo build --release --workspace --bins
fi
# The hello worlds are stripped exactly like the functions (the bench
# crate's own binaries keep symbols for profiling).
mkdir -p "$OUT/bin"
for hello in hello-lambda-http hello-lambda-runtime hello-hyper; do
  cp "target/release/$hello" "$OUT/bin/$hello"
  strip "$OUT/bin/$hello"
done
DRIVER=target/release/bench-driver

echo "==> moto (DynamoDB and Step Functions API on 127.0.0.1)"
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
start_moto

echo "==> 1. cold start"
"$DRIVER" coldstart --moto "$AWS_TEST_ENDPOINT" --runs "${BENCH_RUNS:-20}" \
  --bin-dir target/release --hello-dir "$OUT/bin" --out "$OUT"

echo "==> 3. local server load"
"$DRIVER" load --wrk "$(command -v wrk)" --duration "${BENCH_LOAD_SECS:-10}" \
  --connections "${BENCH_CONNECTIONS:-16}" --bin-dir target/release --hello-dir "$OUT/bin" --out "$OUT"

echo "==> 5. cost model"
"$DRIVER" cost --moto "$AWS_TEST_ENDPOINT" --purchases "${BENCH_PURCHASES:-5}" \
  --bin-dir target/release --out "$OUT"

echo "==> 2. warm handler cost (criterion)"
rm -rf target/criterion/handler_disk target/criterion/handler_tmpfs \
  target/criterion/invocation target/criterion/parts
BENCH_MEASURE_SECS="${BENCH_MEASURE_SECS:-3}" cargo bench -p bench --bench handlers
"$DRIVER" criterion --criterion-dir target/criterion --out "$OUT"

echo "==> 4. sizes"
"$DRIVER" sizes --bin-dir target/release --hello-dir "$OUT/bin" \
  --lambda-dir "${BENCH_LAMBDA_DIRS:-target/lambda}" --out "$OUT"

echo "==> profiles (callgrind: where a cold start's instructions go)"
# The functions are stripped; `probe` runs the same code with symbols.
profile_one() { # name binary
  local name=$1 binary=$2 out="$OUT/callgrind.$1"
  rm -f "$out"
  "$DRIVER" coldstart --moto "$AWS_TEST_ENDPOINT" --runs 1 --only "$name" --binary "$binary" \
    --wrapper "valgrind --tool=callgrind --callgrind-out-file=$out" --timeout 300 \
    --bin-dir target/release --hello-dir target/release --out "$OUT"
  callgrind_annotate --inclusive=yes "$out" 2>/dev/null > "$out.txt" || true
}
if command -v valgrind >/dev/null 2>&1; then
  profile_one hello-lambda-http target/release/hello-lambda-http
  profile_one get-purchase target/release/probe
  profile_one reserve-stock target/release/probe
  # A/B of the dominant cost the profile shows (the CA trust store parsed at
  # init): the same binaries, the system store vs Amazon's roots only.
  cat /etc/ssl/certs/Amazon_Root_CA_{1,2,3,4}.pem \
    /etc/ssl/certs/Starfield_Services_Root_Certificate_Authority_-_G2.pem > "$OUT/amazon-roots.pem" 2>/dev/null || true
  ab_line() { # name wrapper
    "$DRIVER" coldstart --moto "$AWS_TEST_ENDPOINT" --runs "${BENCH_AB_RUNS:-10}" --only "$1" --wrapper "$2" \
      --bin-dir target/release --hello-dir "$OUT/bin" --out "$OUT" 2>&1 | tail -1
  }
  if [ -s "$OUT/amazon-roots.pem" ]; then
    {
      echo
      echo "**Trust-store A/B** (${BENCH_AB_RUNS:-10} runs each, every process started through \`env\`, medians):"
      echo
      echo '```'
      for round in 1 2; do
        ab_line hello-lambda-http "env BENCH_CONTROL=1" | sed "s/^/round $round, system trust store: /"
        ab_line get-purchase "env BENCH_CONTROL=1" | sed "s/^/round $round, system trust store: /"
        ab_line get-purchase "env SSL_CERT_FILE=$OUT/amazon-roots.pem SSL_CERT_DIR=/nonexistent" \
          | sed "s/^/round $round, Amazon roots only:   /"
      done
      echo '```'
    } > "$OUT/trust-store-ab.md"
  fi
  {
    echo "callgrind counts instructions (Ir) from exec to the first response, not wall time:"
    echo "I/O waits (moto, disk) do not show here. Top inclusive entries; \"probe\" is the"
    echo "function's own \`main\` rebuilt with symbols (bench/src/bin/probe.rs)."
    for name in hello-lambda-http get-purchase reserve-stock; do
      f="$OUT/callgrind.$name.txt"
      [ -s "$f" ] || continue
      echo
      echo "**$name** — $(grep -m1 'PROGRAM TOTALS' "$f" | sed 's/ *PROGRAM TOTALS//;s/^ *//') instructions"
      echo
      echo '```'
      awk '/file:function/{found=1; next} found && /^-+$/ {next} found && NF {print}' "$f" \
        | grep -v 'PROGRAM TOTALS' | head -"${BENCH_PROFILE_LINES:-40}" | cut -c1-170 || true
      echo '```'
    done
    cat "$OUT/trust-store-ab.md" 2>/dev/null || true
  } > "$OUT/profile.md"
fi
cp bench/tuning.md "$OUT/tuning.md"

echo "==> report"
"$DRIVER" report --doc docs/benchmarks.md --out "$OUT"
echo "docs/benchmarks.md written"
