#!/usr/bin/env bash
# Off-CPU recording overhead on a context-switch-heavy workload (root):
# fixtures/programs/pingpong.c bounces a byte between two threads over pipes.
# Runs alone and under `profrec --events offcpu` alternately, REPS times each
# (alternating, because this VM's context-switch speed drifts over seconds),
# and prints the median run times (the program times itself), the slowdown,
# the event rate profrec sustained, and drops. Also at --min-block 0.
#
# A control run matters here: on this VM an idle CPU wakes slowly, and any
# process that polls (as profrec does every 100 ms) makes ping-pong faster.
# "control" runs the workload while profrec records an unrelated sleeping
# process: same polling and the same sched_switch hook on every switch, but
# no stacks taken for the workload. Overhead = recorded versus control.
# Usage: bench/offcpu_overhead.sh [ROUNDS] [REPS]   (defaults 50000, 7)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
ROUNDS=${1:-50000}
REPS=${2:-7}
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
work=(target/fixtures/pingpong "$ROUNDS")
# The machine's busy CPU seconds so far (/proc/stat: all but idle and iowait):
# BPF work in sched_switch is charged to whichever task runs, and profrec's
# own work counts too, so this is the cost that a program's own CPU time hides.
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }
# Prints "wall-seconds cpu-seconds busy-seconds" of one run: the first two as
# the program measured them, the last the whole machine's.
elapsed() {
  local b0 b1
  b0=$(busy)
  "$@" 2>"$tmp/err" | awk '/^elapsed/ {w=$2} /^cpu/ {c=$2} END {printf "%s %s", w, c}'
  b1=$(busy)
  echo " $(echo "$b1 - $b0" | bc -l)"
}
control() {
  sleep 600 & local idle=$!
  target/release/profrec -q -o "$tmp/c.cap" --events offcpu -p "$idle" & local rec=$!
  sleep 1
  elapsed "${work[@]}"
  kill -INT "$rec"; wait "$rec" || true
  kill "$idle"; wait "$idle" 2>/dev/null || true
}
for _ in $(seq "$REPS"); do
  elapsed "${work[@]}" >> "$tmp/base"
  control >> "$tmp/control"
  elapsed target/release/profrec -q -o "$tmp/o.cap" --events offcpu -- "${work[@]}" >> "$tmp/off"
  elapsed target/release/profrec -q -o "$tmp/z.cap" --events offcpu --min-block 0 -- "${work[@]}" >> "$tmp/zero"
done
col() { awk -v c="$1" '{print $c}' "$tmp/$2" | median; }
printf 'pingpong %s rounds, %s alternating runs, medians of the times the program measured\n' "$ROUNDS" "$REPS"
printf '%-40s %9s %9s %9s %11s %11s %11s\n' config "wall (s)" "CPU (s)" "vs control" "busy (s)" "vs alone" "rounds/s"
ctl=$(col 2 control)
alone_busy=$(col 3 base)
for cfg in base:"alone" control:"control (profrec on another process)" off:"profrec --events offcpu" zero:"profrec --events offcpu --min-block 0"; do
  name=${cfg%%:*}; label=${cfg#*:}
  w=$(col 1 "$name"); c=$(col 2 "$name"); b=$(col 3 "$name")
  printf '%-40s %9.3f %9.3f %+8.2f%% %11.3f %+10.2f%% %11.0f\n' "$label" "$w" "$c" \
    "$(echo "($c / $ctl - 1) * 100" | bc -l)" "$b" "$(echo "($b / $alone_busy - 1) * 100" | bc -l)" \
    "$(echo "$ROUNDS / $w" | bc -l)"
done
echo "(busy: the machine's busy CPU during the run, profrec's start and end included)"
for f in o z; do
  echo
  target/release/profanalyze info "$tmp/$f.cap" | grep -E '^(samples|duration|lost|size)|^  offcpu'
  s=$(target/release/profanalyze info --json "$tmp/$f.cap" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["samples"] / d["duration_s"])')
  printf 'sustained: %.0f off-CPU events/s\n' "$s"
done

# The probe's own cost, from the kernel's BPF run-time statistics.
echo
bpf_stats_on
for flags in "" "--no-offcpu-kernel-stacks"; do
  # Long enough to still be running when bpftool reads the statistics.
  target/release/profrec -q -o "$tmp/s.cap" --events offcpu $flags -- target/fixtures/pingpong $((ROUNDS * 5)) >/dev/null &
  rec=$!
  sleep 2
  echo "profrec --events offcpu $flags:"
  bpf_prog_costs on_switch on_sys_exit on_waking
  wait "$rec" || true
done
bpf_stats_off
