#!/usr/bin/env bash
# Off-CPU recording overhead on a context-switch-heavy workload (root):
# fixtures/programs/pingpong.c bounces a byte between two threads over pipes.
# Configurations run alternately, REPS times each (this VM's context-switch
# speed drifts over seconds), and the medians are printed:
#   alone; control (profrec records an unrelated sleeping process: the same
#   polling and the same sched_switch hook on every switch, no stacks taken
#   for the workload); profrec --events offcpu (the defaults); the same
#   without kernel stacks; perf record -e sched:sched_switch -g (the anchor).
# The overhead measure is the machine's busy CPU time over the program's own
# rounds, which pingpong reads from /proc/uptime's idle time (exact on a
# tickless CPU). The program's own CPU time hides the cost: BPF work in
# sched_switch runs before the switch and is charged to the task that runs
# next, often the idle task. /proc/stat's user and system fields hide it too:
# they are tick samples and miss most of a load that sleeps for microseconds
# (they said 0.97 s busy for a run whose own CPU time was 1.62 s). Also
# printed: wall time and throughput, and each tool's own CPU time and peak
# memory (profrec's from its summary, perf's from GNU time less pingpong's).
# Usage: bench/offcpu_overhead.sh [ROUNDS] [REPS]   (defaults 50000, 7)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
ROUNDS=${1:-50000}
REPS=${2:-7}
need perf
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
work=(target/fixtures/pingpong "$ROUNDS")
# "wall cpu busy" as pingpong measured them, from its output in $1.
measured() { awk '/^elapsed/ {w=$2} /^cpu/ {c=$2} /^busy/ {b=$2} END {printf "%s %s %s", w, c, b}' "$1"; }
alone() { "${work[@]}" > "$tmp/out"; echo "$(measured "$tmp/out") 0 0"; }
# profrec with these options; appends profrec's CPU seconds and peak MiB.
profrec() {
  target/release/profrec -o "$tmp/o.cap" --events offcpu "$@" -- "${work[@]}" > "$tmp/out" 2> "$tmp/err"
  echo "$(measured "$tmp/out") $(profrec_usage "$tmp/err")"
}
control() {
  sleep 600 & local idle=$!
  target/release/profrec -o "$tmp/c.cap" --events offcpu -p "$idle" 2> "$tmp/err" & local rec=$!
  sleep 1
  "${work[@]}" > "$tmp/out"
  kill -INT "$rec"; wait "$rec" || true
  kill "$idle"; wait "$idle" 2>/dev/null || true
  echo "$(measured "$tmp/out") $(profrec_usage "$tmp/err")"
}
perf_sched() {
  /usr/bin/time -f '%U %S %M' -o "$tmp/time" \
    perf record -q -e sched:sched_switch -g -o "$tmp/perf.data" -- "${work[@]}" > "$tmp/out" 2>/dev/null
  local m; m=$(measured "$tmp/out")
  echo "$m $(awk -v own="$(echo "$m" | awk '{print $2}')" '{printf "%.3f %.1f", $1 + $2 - own, $3 / 1024}' "$tmp/time")"
}
for _ in $(seq "$REPS"); do
  alone >> "$tmp/base"
  control >> "$tmp/control"
  profrec >> "$tmp/off"
  profrec --no-offcpu-kernel-stacks >> "$tmp/nokernel"
  perf_sched >> "$tmp/perf"
done
col() { awk -v c="$1" '{print $c}' "$tmp/$2" | median; }
spread() { awk -v c="$1" '{print $c}' "$tmp/$2" | sort -g | awk '{a[NR]=$1} END {printf "%.2f-%.2f", a[1], a[NR]}'; }
printf 'pingpong %s rounds, %s alternating runs, medians (busy: the machine'"'"'s busy CPU over the rounds)\n' "$ROUNDS" "$REPS"
printf '%-44s %8s %8s %8s %11s %9s %9s %9s %9s\n' config "wall s" "CPU s" "busy s" "busy range" "vs alone" "rounds/s" "tool CPU" "tool MiB"
alone_busy=$(col 3 base)
for cfg in base:"alone" control:"control (profrec on another process)" off:"profrec --events offcpu" \
  nokernel:"profrec --events offcpu --no-offcpu-kernel-stacks" perf:"perf record -e sched:sched_switch -g"; do
  name=${cfg%%:*}; label=${cfg#*:}
  w=$(col 1 "$name"); c=$(col 2 "$name"); b=$(col 3 "$name")
  printf '%-44s %8.3f %8.3f %8.3f %11s %+8.1f%% %9.0f %9.3f %9.1f\n' "$label" "$w" "$c" "$b" "$(spread 3 "$name")" \
    "$(echo "($b / $alone_busy - 1) * 100" | bc -l)" "$(echo "$ROUNDS / $w" | bc -l)" "$(col 4 "$name")" "$(col 5 "$name")"
done
echo
target/release/profanalyze info "$tmp/o.cap" | grep -E '^(samples|duration|recorder|lost)|^  offcpu'
s=$(target/release/profanalyze info --json "$tmp/o.cap" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["samples"] / d["duration_s"])')
printf 'sustained: %.0f off-CPU events/s\n' "$s"

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
