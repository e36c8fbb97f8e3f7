#!/usr/bin/env bash
# Analysis speed: profanalyze versus the perf + inferno pipeline, from file to
# SVG, on the same recorded workload (root, to record).
#
# Records fixed_work (one thread per CPU) with profrec and with perf record -g
# at the same time, at FREQ Hz until profrec has at least SAMPLES samples, then
# times `profanalyze flame` against
# `perf script | inferno-collapse-perf | inferno-flamegraph`, and profanalyze's
# aggregation throughput (samples/s, from its -v log).
# Usage: bench/analyze_speed.sh [SAMPLES] [FREQ]   (defaults 1000000, 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${1:-1000000}
FREQ=${2:-20000}
CPUS=$(nproc)
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
if [ ! -x target/tools/bin/inferno-flamegraph ]; then
  echo "installing inferno's command-line tools into target/tools"
  cargo install --quiet --locked inferno --root target/tools
fi
tmp=${BENCH_DIR:-$(mktemp -d)}
old_rate=$(cat /proc/sys/kernel/perf_event_max_sample_rate)
echo $((FREQ * 2)) > /proc/sys/kernel/perf_event_max_sample_rate
trap 'echo "$old_rate" > /proc/sys/kernel/perf_event_max_sample_rate' EXIT

seconds=$(( SAMPLES / (FREQ * CPUS) * 11 / 10 + 2 ))
rounds=$(( seconds * 260 ))   # fixed_work does ~260 rounds/s per thread here
echo "recording ~${seconds}s of fixed_work at $FREQ Hz with profrec and perf together"
target/release/profrec -q -F "$FREQ" -o "$tmp/w.cap" -- \
  perf record -q -F "$FREQ" -g -e cpu-clock -o "$tmp/perf.data" -- \
  target/fixtures/fixed_work "$rounds" "$CPUS" >/dev/null
target/release/profanalyze info "$tmp/w.cap" | grep -E 'samples:|lost|size:'

t() { local t0; t0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc; }
echo
echo "profanalyze flame (file -> SVG):"
a=$(t sh -c "target/release/profanalyze -v flame --comm fixed_work $tmp/w.cap -o $tmp/a.svg 2>$tmp/a.log")
grep -o 'aggregated.*' "$tmp/a.log" || true
echo "  ${a}s"
echo "perf script | inferno-collapse-perf | inferno-flamegraph (file -> SVG):"
b=$(t sh -c "perf script -i $tmp/perf.data --comm fixed_work 2>/dev/null | target/tools/bin/inferno-collapse-perf | target/tools/bin/inferno-flamegraph > $tmp/b.svg")
psamples=$(perf script -i "$tmp/perf.data" --comm fixed_work -F period 2>/dev/null | grep -c . || true)
echo "  ${b}s ($psamples samples)"
printf '\nspeed-up: %.1fx\n' "$(echo "$b / $a" | bc -l)"
