#!/usr/bin/env bash
# Recording overhead of profrec versus perf, in one go (root).
#
# Runs a fixed amount of CPU work (fixtures/programs/fixed_work.c, one thread
# per CPU) alone, under `profrec`, and under `perf record -g`, at 99 Hz and
# 999 Hz, REPS times each. The slowdown is the workload's own run time (it
# times itself, so a profiler's start-up and shutdown are not counted; they
# are shown apart as the whole command's wall time). Prints the ratios,
# profrec's own CPU time, and capture bytes per sample versus perf.data's.
# Usage: bench/record_overhead.sh [ROUNDS] [REPS]   (defaults 800, 9)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
ROUNDS=${1:-800}
REPS=${2:-9}
THREADS=$(nproc)
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder
work=(target/fixtures/fixed_work "$ROUNDS" "$THREADS")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
# Prints "workload-seconds command-wall-seconds" for one run.
timed() {
  local t0 out; t0=$(now)
  out=$("$@" 2>"$tmp/err") || { cat "$tmp/err" >&2; exit 1; }
  echo "$(echo "$out" | awk '/^elapsed/ {print $2}') $(echo "$(now) - $t0" | bc)"
}

# One run of a configuration, appended to its list.
run_once() { # name, then the command prefix (empty for the baseline)
  local name=$1; shift
  timed "$@" "${work[@]}" >> "$tmp/$name.runs"
}

echo "workload: ${work[*]} ($THREADS threads), $REPS rounds of every configuration, interleaved, medians"
# Interleaved so that drift of this machine's speed over minutes hits every
# configuration alike.
for _ in $(seq "$REPS"); do
  run_once base
  for hz in 99 999; do
    run_once "profrec$hz" target/release/profrec -q -F "$hz" -o "$tmp/p$hz.cap" --
    run_once "perf$hz" perf record -q -F "$hz" -g -e cpu-clock -o "$tmp/perf$hz.data" --
  done
done
for name in base profrec99 perf99 profrec999 perf999; do
  awk '{print $1}' "$tmp/$name.runs" | median > "$tmp/$name.time"
  awk '{print $2}' "$tmp/$name.runs" | median > "$tmp/$name.wall"
done
for hz in 99 999; do
  target/release/profrec -F "$hz" -o "$tmp/p$hz.cap" -- "${work[@]}" 2>"$tmp/profrec$hz.log" >/dev/null
done

base=$(cat "$tmp/base.time")
printf '\n%-20s %14s %10s %16s\n' config "workload (s)" "slowdown" "command wall (s)"
printf '%-20s %14.3f %10s %16.3f\n' "alone" "$base" "-" "$(cat "$tmp/base.wall")"
for hz in 99 999; do
  for tool in profrec perf; do
    t=$(cat "$tmp/$tool$hz.time")
    printf '%-20s %14.3f %9.2f%% %16.3f\n' "$tool at $hz Hz" "$t" "$(echo "($t / $base - 1) * 100" | bc -l)" "$(cat "$tmp/$tool$hz.wall")"
  done
done

echo
for hz in 99 999; do
  cap=$tmp/p$hz.cap
  samples=$(target/release/profanalyze info --json "$cap" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples"])' || echo 0)
  psamp=$(perf script -i "$tmp/perf$hz.data" -F period 2>/dev/null | grep -c . || true)
  csize=$(stat -c %s "$cap"); psize=$(stat -c %s "$tmp/perf$hz.data")
  target/release/profrec -q -F "$hz" --embed none -o "$tmp/n$hz.cap" -- "${work[@]}" >/dev/null
  nsize=$(stat -c %s "$tmp/n$hz.cap")
  printf '%4s Hz: profrec %s (%s)\n' "$hz" "$(grep -o 'using [0-9.]*s CPU and [0-9.]* MiB of memory at most' "$tmp/profrec$hz.log")" "$(grep -o '[0-9]* samples' "$tmp/profrec$hz.log")"
  printf '         capture %d bytes, %d samples: %.1f bytes/sample (symbols included)\n' "$csize" "$samples" "$(echo "$csize / $samples" | bc -l)"
  printf '         perf.data %d bytes, %d samples: %.1f bytes/sample; capture/perf.data = %.2f\n' \
    "$psize" "$psamp" "$(echo "$psize / $psamp" | bc -l)" "$(echo "$csize / $psize" | bc -l)"
  printf '         with --embed none (no symbol tables; like perf.data, needs the binaries): %d bytes, /perf.data = %.3f\n' \
    "$nsize" "$(echo "$nsize / $psize" | bc -l)"
done

# Size over a recording of realistic length: the symbol material embedded
# once per object (~125 KiB here, mostly libc's tables) dominates a 3 s
# capture at 99 Hz but not a 30 s one.
LONG=$((ROUNDS * 10))
echo
target/release/profrec -q -F 99 -o "$tmp/long.cap" -- target/fixtures/fixed_work "$LONG" "$THREADS" >/dev/null
perf record -q -F 99 -g -e cpu-clock -o "$tmp/long.data" -- target/fixtures/fixed_work "$LONG" "$THREADS" >/dev/null 2>&1
lc=$(stat -c %s "$tmp/long.cap"); lp=$(stat -c %s "$tmp/long.data")
printf 'a %dx longer run at 99 Hz: capture %d bytes, perf.data %d bytes, capture/perf.data = %.3f\n' \
  10 "$lc" "$lp" "$(echo "$lc / $lp" | bc -l)"

# The sampling program's own cost, from the kernel's BPF run-time statistics.
echo
bpf_stats_on
target/release/profrec -q -F 999 -o "$tmp/s.cap" -- "${work[@]}" >/dev/null &
rec=$!
sleep 2
echo "on_cpu_sample at 999 Hz:"
bpf_prog_costs on_cpu_sample
wait "$rec" || true
bpf_stats_off
