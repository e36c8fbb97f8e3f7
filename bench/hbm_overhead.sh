#!/usr/bin/env bash
# Cost of profrec --hbm per GPU memory call (root): N cuMemAlloc_v2 +
# cuMemFree_v2 pairs of the stand-in driver (fixtures/programs/cuda/), whose
# functions do almost nothing, alone and under `profrec --hbm`, interleaved,
# medians of REPS. The difference per pair is the probes' cost (a uprobe on
# each entry and a uretprobe on the allocation's return); a real driver's
# cuMemAlloc takes tens to hundreds of microseconds, so this is the upper
# bound of the relative cost.
# Usage: bench/hbm_overhead.sh [N] [REPS]   (defaults 200000, 7)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
N=${1:-200000}
REPS=${2:-7}
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder
lib=$PWD/target/fixtures/cuda/libcuda.so.1
prog=(target/fixtures/gpu_user "$lib" loop "$N")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for _ in $(seq "$REPS"); do
  "${prog[@]}" | awk '/^elapsed/ {print $2}' >> "$tmp/alone"
  target/release/profrec -q --hbm --cuda-lib "$lib" -o "$tmp/h.cap" -- "${prog[@]}" | awk '/^elapsed/ {print $2}' >> "$tmp/hbm"
done
alone=$(median < "$tmp/alone"); hbm=$(median < "$tmp/hbm")
spread() { sort -g "$1" | awk '{a[NR]=$1} END {printf "%s-%s", a[1], a[NR]}'; }
printf 'N=%d alloc/free pairs, medians of %d [min-max]\n' "$N" "$REPS"
us() { awk -v t="$1" -v n="$N" 'BEGIN {printf "%.2f", t / n * 1e6}'; }
printf '  alone:         %.3f s [%s]  %s us per pair\n' "$alone" "$(spread "$tmp/alone")" "$(us "$alone")"
printf '  profrec --hbm: %.3f s [%s]  %s us per pair (+%s us)\n' "$hbm" "$(spread "$tmp/hbm")" \
  "$(us "$hbm")" "$(us "$(awk -v a="$alone" -v b="$hbm" 'BEGIN {print b - a}')")"
events=$(target/release/profanalyze info --json "$tmp/h.cap" | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["device_allocs"], i["device_frees"])')
echo "  last capture: $events device allocations and frees (expected $N $N)"
