#!/usr/bin/env bash
# On-CPU sampling against its floor (root): fixed_work on every CPU alone,
# under bench/bare_timer.c (cpu-clock sampling events at FREQ Hz, no BPF, no
# ring: the timer interrupt and perf's overflow handling only), and under
# profrec at FREQ Hz; REPS rounds interleaved, medians of the work's own run
# time. Then on_cpu_sample's run time per sample from the kernel's BPF
# statistics, and the ratio of profrec's extra cost per sample to the bare
# timer event's.
# Usage: bench/oncpu_floor.sh [FREQ] [REPS] [ROUNDS]   (defaults 999, 5, 600)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
FREQ=${1:-999}
REPS=${2:-5}
ROUNDS=${3:-600}
CPUS=$(nproc)
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
gcc -O2 -o "$tmp/bare_timer" bench/bare_timer.c
work=(target/fixtures/fixed_work "$ROUNDS" "$CPUS")
secs() { "$@" 2>&1 | awk '/elapsed|seconds/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) {print $i; exit}}'; }
for _ in $(seq "$REPS"); do
  secs "${work[@]}" >> "$tmp/alone"
  "$tmp/bare_timer" "$FREQ" & t=$!
  sleep 0.2
  secs "${work[@]}" >> "$tmp/timer"
  kill "$t"; wait "$t" 2>/dev/null || true
  secs target/release/profrec -q -F "$FREQ" -o "$tmp/p.cap" -- "${work[@]}" >> "$tmp/profrec"
done
a=$(median < "$tmp/alone"); t=$(median < "$tmp/timer"); p=$(median < "$tmp/profrec")
samples=$(echo "$FREQ * $CPUS * $a" | bc -l)
printf 'fixed_work %s rounds on %s CPUs at %s Hz, medians of %s (work time, s):\n' "$ROUNDS" "$CPUS" "$FREQ" "$REPS"
printf '  alone %.3f [%s]\n  bare timer events %.3f (%+.2f%%) [%s]\n  profrec %.3f (%+.2f%%) [%s]\n' \
  "$a" "$(sort -g "$tmp/alone" | tr '\n' ' ')" "$t" "$(echo "($t / $a - 1) * 100" | bc -l)" \
  "$(sort -g "$tmp/timer" | tr '\n' ' ')" "$p" "$(echo "($p / $a - 1) * 100" | bc -l)" \
  "$(sort -g "$tmp/profrec" | tr '\n' ' ')"
per_timer=$(echo "($t - $a) * $CPUS / $samples * 1000000" | bc -l)
per_profrec=$(echo "($p - $a) * $CPUS / $samples * 1000000" | bc -l)
printf '  per sample (CPU time lost / %.0f samples): bare timer %.2f us, profrec %.2f us' "$samples" "$per_timer" "$per_profrec"
# The ratio means little when the timer's own cost is within the noise.
if [ "$(echo "$per_timer > 0.05" | bc -l)" = 1 ]; then
  printf ' (profrec / bare timer = %.2f)\n' "$(echo "$per_profrec / $per_timer" | bc -l)"
else
  printf ' (the bare timer'"'"'s cost is within the noise here: no ratio)\n'
fi
target/release/profrec -F "$FREQ" -o "$tmp/u.cap" -- "${work[@]}" 2> "$tmp/err" >/dev/null
read -r cpu mib <<< "$(profrec_usage "$tmp/err")"
printf '  profrec itself: %s s CPU, %s MiB peak memory\n' "$cpu" "$mib"
bpf_stats_on
target/release/profrec -q -F "$FREQ" -o "$tmp/s.cap" -- target/fixtures/fixed_work $((ROUNDS * 3)) "$CPUS" >/dev/null &
rec=$!
sleep 3
echo "on_cpu_sample at $FREQ Hz (BPF statistics):"
costs=$(bpf_prog_costs on_cpu_sample)
echo "$costs"
bpf_ns=$(echo "$costs" | awk 'NF >= 4 {print $(NF-3)}')
if [ -n "$bpf_ns" ] && [ "$(echo "$per_timer > 0.05" | bc -l)" = 1 ]; then
  printf '  BPF time per sample / bare timer event cost = %.2f\n' "$(echo "$bpf_ns / ($per_timer * 1000)" | bc -l)"
fi
wait "$rec" || true
bpf_stats_off
rm -rf "$tmp"
