#!/usr/bin/env bash
# Cost of allocation recording (root): fixtures/programs/malloc_loop.c does
# ROUNDS malloc/free pairs (16-1040 bytes, the common small-block case) and
# times itself. Runs it alone, with a do-nothing malloc/free wrapper
# preloaded (bench/noop_malloc_wrapper.c: the floor any LD_PRELOAD wrapper
# adds), with the sampler preloaded but no profrec (with and without its
# per-thread cache of freed small blocks), under `profrec --mem
# --preload` (sampled, at the default 2 MiB and at 64 KiB), under `profrec
# --mem` (every call through uprobes), and under heaptrack, REPS times each
# alternating, and prints the medians (and minimums) and slowdowns; then the
# uprobe cost per call. The figure is the loop's own CPU time, which on this
# VM leaves out the time the host takes the CPU away (steal), the largest
# noise here; the loop runs on CPU 1, profrec on CPU 0.
# Done twice: bare malloc/free pairs (the worst case: ~25 ns each), and with
# each block written in full after allocation ("fill").
# Usage: bench/mem_overhead.sh [ROUNDS] [REPS]   (defaults 10000000, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-10000000}
REPS=${2:-5}
source bench/common.sh
need heaptrack
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
sampler=$(ls -t target/release/build/profcap-recorder-*/out/libprofcap_sampler.so | head -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -fPIC -shared -fno-plt -o "$tmp/noop.so" bench/noop_malloc_wrapper.c
# The loop's own CPU time, as it measured it.
elapsed() { "$@" 2>/dev/null | awk '/^cpu/ {print $2}'; }
minimum() { sort -g | head -1; }
for MODE in bare fill; do
  work=(target/fixtures/malloc_loop "$ROUNDS" "$MODE")
  rm -f "$tmp"/{alone,noop,preloaded,nocache,sampled,sampled_nocache,sampled64,attach,heaptrack}
  pinned=(taskset -c 1 "${work[@]}")
  for _ in $(seq "$REPS"); do
    elapsed "${pinned[@]}" >> "$tmp/alone"
    elapsed env LD_PRELOAD="$tmp/noop.so" "${pinned[@]}" >> "$tmp/noop"
    elapsed env LD_PRELOAD="$sampler" "${pinned[@]}" >> "$tmp/preloaded"
    elapsed env LD_PRELOAD="$sampler" PROFCAP_SAMPLER_CACHE=0 "${pinned[@]}" >> "$tmp/nocache"
    elapsed taskset -c 0 target/release/profrec -q -o "$tmp/s.cap" --mem --preload -- "${pinned[@]}" >> "$tmp/sampled"
    PROFCAP_SAMPLER_CACHE=0 elapsed taskset -c 0 target/release/profrec -q -o "$tmp/sn.cap" --mem --preload -- "${pinned[@]}" >> "$tmp/sampled_nocache"
    elapsed taskset -c 0 target/release/profrec -q -o "$tmp/s64.cap" --mem --preload --sample-bytes 65536 -- "${pinned[@]}" >> "$tmp/sampled64"
    elapsed target/release/profrec -q -o "$tmp/a.cap" --mem -- target/fixtures/malloc_loop $((ROUNDS / 100)) "$MODE" >> "$tmp/attach"
    (cd "$tmp" && elapsed heaptrack -o "$tmp/ht" "$OLDPWD/${work[0]}" "$ROUNDS" "$MODE") >> "$tmp/heaptrack"
    rm -f "$tmp"/ht*
  done
  printf '\nmalloc_loop %s malloc/free pairs (%s), %s alternating runs, loop CPU time it measured: median (minimum)\n' "$ROUNDS" "$MODE" "$REPS"
  base=$(median < "$tmp/alone")
  base_min=$(minimum < "$tmp/alone")
  for cfg in alone:"alone" noop:"do-nothing malloc/free wrapper preloaded" preloaded:"sampler preloaded, no profrec (wrappers)" \
             nocache:"the same, its small-block cache off" \
             sampled:"profrec --mem --preload (default)" sampled_nocache:"the same, the sampler's cache off" \
             sampled64:"profrec --mem --preload --sample-bytes 64K" \
             attach:"profrec --mem (attach; ROUNDS/100, scaled)" heaptrack:"heaptrack"; do
    name=${cfg%%:*}; label=${cfg#*:}
    t=$(median < "$tmp/$name")
    m=$(minimum < "$tmp/$name")
    [ "$name" = attach ] && t=$(echo "$t * 100" | bc -l) && m=$(echo "$m * 100" | bc -l)
    printf '%-44s %9.4f s  x%7.2f  (%+6.1f%%; minimum %+6.1f%%)  %8.1f ns per malloc+free\n' "$label" "$t" \
      "$(echo "$t / $base" | bc -l)" "$(echo "($t / $base - 1) * 100" | bc -l)" \
      "$(echo "($m / $base_min - 1) * 100" | bc -l)" "$(echo "$t * 1000000000 / $ROUNDS" | bc -l)"
  done
  for c in s s64 a; do
    printf '  %s: ' "$c.cap"
    target/release/profanalyze info "$tmp/$c.cap" | grep -E '^(lost)' | tr '\n' ' '
    target/release/profanalyze info --json "$tmp/$c.cap" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d bytes" % d["file_bytes"])'
  done
done
echo
bpf_stats_on
target/release/profrec -q -o "$tmp/b.cap" --mem -- target/fixtures/malloc_loop $((ROUNDS / 2)) >/dev/null &
rec=$!
sleep 3
echo "BPF run time per call under profrec --mem (attach):"
bpf_prog_costs alloc_enter alloc_exit free_enter
wait "$rec" || true
bpf_stats_off
