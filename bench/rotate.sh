#!/usr/bin/env bash
# Cost of continuous recording (root): `profrec --all --rotate` on an idle
# and on a busy machine, against one capture of the same length and against
# no recording at all, interleaved, medians of REPS rounds.
#
# Each run lasts SECONDS. Idle: nothing but the machine's own background.
# Busy: fixtures/programs/fixed_work (one thread per CPU, a fixed amount of
# work per round) runs in a loop; its throughput is rounds per second.
# Measured per run: the machine's busy CPU (from /proc/stat, which also
# counts BPF work charged to other tasks), profrec's own CPU time (its
# summary line), bytes written, and for the rotating runs the share of the
# files that is symbol material (profanalyze info DIR --json). Bytes per
# hour are bytes / SECONDS * 3600.
# Usage: bench/rotate.sh [SECONDS] [REPS] [PERIOD]   (defaults 30, 3, 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
SECONDS_PER_RUN=${1:-30}
REPS=${2:-3}
PERIOD=${3:-10s}
FREQ=99
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
trap 'pkill -f "$tmp/loop" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal).
busy_cpu() { awk '/^cpu / {print ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }

# The busy workload: fixed_work rounds in a loop, one line per finished run.
cat > "$tmp/loop" <<EOF
#!/bin/sh
while :; do $PWD/target/fixtures/fixed_work 40 $(nproc) | awk '/^elapsed/ {print \$2}'; done
EOF
chmod +x "$tmp/loop"

# One run: load (idle|busy), config (none|single|rotate); appends
# "busy-cpu-s profrec-cpu-s bytes material-share rounds-per-s" to its list.
run_once() {
  local load=$1 config=$2 out=$tmp/$1-$2 b0 b1 pid_load= pid_rec= cpu=0 bytes=0 share=0 rps=0
  rm -rf "$out.d" "$out.cap" "$out.work"
  if [ "$load" = busy ]; then "$tmp/loop" > "$out.work" & pid_load=$!; sleep 1; fi
  b0=$(busy_cpu)
  case $config in
    none) sleep "$SECONDS_PER_RUN" ;;
    single) target/release/profrec -F $FREQ --all -d "$SECONDS_PER_RUN" -o "$out.cap" 2> "$out.log" ;;
    rotate) target/release/profrec -F $FREQ --all -d "$SECONDS_PER_RUN" --rotate "$PERIOD" -o "$out.d" 2> "$out.log" ;;
  esac
  b1=$(busy_cpu)
  if [ -n "$pid_load" ]; then
    kill "$pid_load"; wait "$pid_load" 2>/dev/null || true; pkill -f fixed_work || true
    # Rounds per second: each finished fixed_work run did 40 rounds per thread.
    rps=$(awk -v t=$(nproc) '{n++; s+=$1} END {if (s > 0) printf "%.2f", n * 40 * t / s; else print 0}' "$out.work")
  fi
  if [ "$config" != none ]; then
    cpu=$(grep -o 'using [0-9.]*s CPU' "$out.log" | grep -o '[0-9.]*' || echo 0)
    if [ "$config" = single ]; then
      bytes=$(stat -c %s "$out.cap")
      share=$(target/release/profanalyze info --json "$out.cap" | python3 -c 'import json,sys; i=json.load(sys.stdin); print(round(100*i["material_bytes"]/max(1,i["file_bytes"]),1))')
    else
      bytes=$(cat "$out.d"/*.cap | wc -c)
      share=$(target/release/profanalyze info --json "$out.d" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(100*sum(x["material_bytes"] for x in r)/max(1,sum(x["file_bytes"] for x in r)),1))')
      ls "$out.d"/*.cap | wc -l > "$out.files"
    fi
  fi
  echo "$(echo "$b1 - $b0" | bc) $cpu $bytes $share $rps" >> "$out.runs"
}

echo "profrec --all -F $FREQ, $SECONDS_PER_RUN s per run, rotation every $PERIOD, $REPS rounds interleaved, medians [min-max]"
for _ in $(seq "$REPS"); do
  for load in idle busy; do
    for config in none single rotate; do run_once "$load" "$config"; done
  done
done

col() { awk -v c="$2" '{print $c}' "$1" | median; }
spread() { awk -v c="$2" '{print $c}' "$1" | sort -g | awk '{a[NR]=$1} END {printf "%s-%s", a[1], a[NR]}'; }
printf '\n%-6s %-8s %16s %14s %14s %10s %14s %9s\n' load config "busy CPU (s)" "+ vs none" "profrec CPU" "MiB/hour" "rounds/s" material
for load in idle busy; do
  base=$(col "$tmp/$load-none.runs" 1)
  for config in none single rotate; do
    f=$tmp/$load-$config.runs
    busy=$(col "$f" 1); extra=$(echo "($busy - $base) / $SECONDS_PER_RUN * 100" | bc -l)
    mib=$(echo "$(col "$f" 3) / $SECONDS_PER_RUN * 3600 / 1048576" | bc -l)
    printf '%-6s %-8s %7.2f [%s] %+9.2f%%cpu %8.2f s %10.1f %6s [%s] %7s%%\n' "$load" "$config" "$busy" "$(spread "$f" 1)" \
      "$extra" "$(col "$f" 2)" "$mib" "$(col "$f" 5)" "$(spread "$f" 5)" "$(col "$f" 4)"
  done
done
echo
echo "'+ vs none': the machine's extra busy CPU over the run, as % of one CPU."
echo "files per rotating run: $(cat "$tmp"/*-rotate.files | tr '\n' ' ')"
