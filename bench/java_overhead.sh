#!/usr/bin/env bash
# The cost of `profrec --mem` on a JVM (uprobes on AllocTracer): the
# JavaAlloc fixture's run time and CPU time alone and recorded, REPS rounds
# interleaved, medians (min-max); and what the samples add up to against
# what the program allocates. Root.
# Usage: bench/java_overhead.sh [REPS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
REPS=${1:-5}
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
java=(java -Xmx512m -XX:+PreserveFramePointer -cp target/fixtures/java JavaAlloc)
run() { /usr/bin/time -f '%e %U %S' -o "$tmp/t" "$@" >/dev/null 2>&1; awk '{printf "%.3f %.3f\n", $1, $2 + $3}' "$tmp/t"; }
: > "$tmp/alone"; : > "$tmp/mem"
for _ in $(seq "$REPS"); do
  run "${java[@]}" >> "$tmp/alone"
  # profrec's own CPU is in the time too (it is the parent): the whole cost.
  run target/release/profrec -q --mem -o "$tmp/j.cap" -- "${java[@]}" >> "$tmp/mem"
done
cell() { local c=$1 f=$2; printf '%s [%s-%s]' "$(awk -v c="$c" '{print $c}' "$f" | median)" \
  "$(awk -v c="$c" '{print $c}' "$f" | sort -g | head -1)" "$(awk -v c="$c" '{print $c}' "$f" | sort -g | tail -1)"; }
printf '%-16s %-24s %-24s\n' "" "wall s" "CPU s (with profrec's)"
printf '%-16s %-24s %-24s\n' alone "$(cell 1 "$tmp/alone")" "$(cell 2 "$tmp/alone")"
printf '%-16s %-24s %-24s\n' "profrec --mem" "$(cell 1 "$tmp/mem")" "$(cell 2 "$tmp/mem")"
echo
echo "last capture (truth: Big[] 50 x 4194320 = 209716000 bytes, Point 2000000 x 24 = 48000000 bytes):"
target/release/profanalyze top "$tmp/j.cap" --kind alloc -n 4
rm -rf "$tmp"
