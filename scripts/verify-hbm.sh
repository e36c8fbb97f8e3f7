#!/usr/bin/env bash
# Checks profrec --hbm against a real CUDA driver (root, on a machine with an
# NVIDIA GPU): records fixtures/programs/cuda/gpu_user.c, which allocates
# known amounts through the driver API, and compares what profanalyze
# reports per function with what the program did. CI runs the same checks
# against the stand-in driver (crates/recorder/tests/hbm.rs); this script is
# for a GPU machine, and says so and exits 0 when there is no driver with a
# device here.
# Usage: scripts/verify-hbm.sh [LIBCUDA]   (default: the system's libcuda.so.1)
# On a lent GPU machine: scripts/verify-hbm.sh, then read its ok/FAILED lines.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${1:-}
if [ -z "$lib" ]; then
  lib=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')
fi
if [ -z "$lib" ] || [ ! -e "$lib" ]; then
  echo "SKIPPED: no libcuda.so.1 on this machine (no NVIDIA driver); nothing was checked"
  exit 0
fi
# PROFCAP_HBM_STANDIN=1 runs the checks against the stand-in given as LIBCUDA
# (target/fixtures/cuda/libcuda.so.1), to check this script itself.
if [ -z "${PROFCAP_HBM_STANDIN:-}" ] && { ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; }; then
  echo "SKIPPED: $lib is here but no GPU answers nvidia-smi -L; nothing was checked"
  exit 0
fi
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
fixtures/build.sh target/fixtures >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$(target/release/profrec -q --hbm --cuda-lib "$lib" -o "$tmp/gpu.cap" -- target/fixtures/gpu_user "$lib")
pitch=$(echo "$out" | awk '/^pitch/ {print $2}')
echo "driver: $lib; pitch of the 1000-byte rows: $pitch"
fold() { target/release/profanalyze folded "$tmp/gpu.cap" "$@" | awk '{n=split($1, f, ";"); s[f[n]] += $2} END {for (k in s) print k, s[k]}' | sort; }
MiB=1048576
expect_alloc=$(printf '%s\n' "expandable $((8 * MiB))" "images $((pitch * 300))" "managed $((3 * MiB))" "stream $((4 * MiB))" "weights $((8 * MiB))" | sort)
expect_end=$(printf '%s\n' "expandable $((4 * MiB))" "images $((pitch * 300))" "weights $((6 * MiB))" | sort)
expect_peak=$(printf '%s\n' "expandable $((8 * MiB))" "images $((pitch * 300))" "weights $((6 * MiB))" | sort)
status=0
check() { # what, expected, got
  if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAILED: $1"; echo "  expected: $2" | tr '\n' ' '; echo; echo "  got:      $3" | tr '\n' ' '; echo; status=1; fi
}
check "allocated per function (--kind hbm-alloc)" "$expect_alloc" "$(fold --kind hbm-alloc)"
check "in use at the end (--kind hbm-inuse)" "$expect_end" "$(fold --kind hbm-inuse)"
check "in use at the peak (--kind hbm-inuse --at peak)" "$expect_peak" "$(fold --kind hbm-inuse --at peak)"
exit $status
