#!/usr/bin/env bash
# A fleet's captures to one flame graph: N captures of about SAMPLES samples
# each (one real recording of fixed_work, copied N times: the work of
# reading, symbolizing and adding up is the same as for N hosts' files of one
# binary), through `profanalyze flame DIR`, `top DIR` and `parquet DIR`, on 1
# and on 2 cores (taskset + RAYON_NUM_THREADS). Prints wall time, CPU time
# and peak RSS of each (median of ROUNDS, the spread in brackets). Root, to
# record.
# Usage: bench/many_captures.sh [N] [SAMPLES] [ROUNDS]   (defaults 100, 100000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
N=${1:-100}
SAMPLES=${2:-100000}
ROUNDS=${3:-3}
FREQ=20000
CPUS=$(nproc)
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$tmp/fleet"
old_rate=$(cat /proc/sys/kernel/perf_event_max_sample_rate)
echo $((FREQ * 2)) > /proc/sys/kernel/perf_event_max_sample_rate
trap 'echo "$old_rate" > /proc/sys/kernel/perf_event_max_sample_rate' EXIT
# fixed_work does ~165 rounds/s per thread here while sampled at 20 kHz.
rounds=$(awk -v s="$SAMPLES" -v f="$FREQ" -v c="$CPUS" 'BEGIN {printf "%d", s / (f * c) * 165 + 1}')
target/release/profrec -q -F "$FREQ" -o "$tmp/one.cap" -- target/fixtures/fixed_work "$rounds" "$CPUS" >/dev/null
got=$(target/release/profanalyze info "$tmp/one.cap" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples"])')
size=$(stat -c %s "$tmp/one.cap")
for i in $(seq -w 1 "$N"); do cp "$tmp/one.cap" "$tmp/fleet/host$i.cap"; done
echo "$N captures of $got samples each ($(( got * N )) samples, $(( size * N / 1048576 )) MiB in all)"

# One run: wall s, CPU s (user+sys), peak RSS MiB.
run() {
  local cores=$1; shift
  local cpus=0; [ "$cores" -gt 1 ] && cpus=0-$((cores - 1))
  RAYON_NUM_THREADS=$cores /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" \
    taskset -c "$cpus" target/release/profanalyze -q "$@" >/dev/null
  awk '{printf "%.2f %.2f %.0f\n", $1, $2 + $3, $4 / 1024}' "$tmp/time"
}

printf '\n%-8s %5s  %-22s %-22s %-20s\n' command cores "wall s" "CPU s" "peak RSS MiB"
for cmd in flame top parquet; do
  for cores in 1 2; do
    [ "$cores" -gt "$CPUS" ] && continue
    : > "$tmp/runs"
    for _ in $(seq "$ROUNDS"); do
      case $cmd in
        flame) run "$cores" flame "$tmp/fleet" -o "$tmp/fleet.svg" >> "$tmp/runs" ;;
        top) run "$cores" top "$tmp/fleet" -n 5 >> "$tmp/runs" ;;
        parquet) run "$cores" parquet "$tmp/fleet" -o "$tmp/rows" >> "$tmp/runs" ;;
      esac
    done
    col() { awk -v c="$1" '{print $c}' "$tmp/runs"; }
    cell() { printf '%s [%s-%s]' "$(col "$1" | median)" "$(col "$1" | sort -g | head -1)" "$(col "$1" | sort -g | tail -1)"; }
    printf '%-8s %5s  %-22s %-22s %-20s\n' "$cmd" "$cores" "$(cell 1)" "$(cell 2)" "$(cell 3)"
  done
done
echo
echo "one capture alone:"
for cores in 1 2; do
  : > "$tmp/runs"
  for _ in $(seq "$ROUNDS"); do run "$cores" flame "$tmp/one.cap" -o "$tmp/one.svg" >> "$tmp/runs"; done
  printf 'flame    %5s  wall %s s, peak RSS %s MiB\n' "$cores" "$(awk '{print $1}' "$tmp/runs" | median)" "$(awk '{print $3}' "$tmp/runs" | median)"
done
[ -z "${BENCH_DIR:-}" ] && rm -rf "$tmp"
