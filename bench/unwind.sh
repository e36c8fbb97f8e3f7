#!/usr/bin/env bash
# DWARF unwinding against `perf record --call-graph dwarf`, side by side (root).
#
# 1. Completeness: programs without frame pointers (C -O2 with large frames
#    and a libc callback, a Rust release build, Go) and Debian's own `sort`,
#    `xz`, `gzip`, `sqlite3` and `python3.11`, each recorded by profrec and by
#    perf dwarf in the same run (perf record -- profrec -- COMMAND; perf's
#    samples of the command's threads only), at FREQ Hz: the share of samples
#    whose user stack reaches a root (process entry or thread start) and the
#    totals of named callers, with the difference in points.
# 2. Overhead: xz -9 on a fixed input, alone, under profrec and under perf
#    dwarf at 99 and 999 Hz, REPS rounds interleaved, medians: the workload's
#    own run time and the machine's busy CPU (/proc/stat) during the run,
#    which counts profrec's unwinding and BPF work wherever it runs.
# 3. Bytes per sample: the capture (default, and --keep-stacks) against
#    perf.data and perf.data compressed with zstd -3.
# 4. profrec's own cost per unwound stack (its summary line).
# Usage: bench/unwind.sh [FREQ] [REPS]   (defaults 499, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
FREQ=${1:-499}
REPS=${2:-5}
need perf sqlite3 xz gzip zstd
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fold=bench/unwind_stacks.py

# Inputs: text for sort, a less compressible file for xz and gzip, a
# database for sqlite3, a CPU-bound script for Python.
python3 - "$tmp" <<'EOF'
import random, sys
d = sys.argv[1]
r = random.Random(7)
words = [''.join(r.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(r.randint(3, 12))) for _ in range(50000)]
with open(f"{d}/lines.txt", "w") as f:
    size = 0
    while size < 50 << 20:
        line = ' '.join(r.choice(words) for _ in range(r.randint(3, 10))) + '\n'
        f.write(line); size += len(line)
with open(f"{d}/data.bin", "wb") as f:
    f.write(bytes(r.choice(b'abcdefgh \n') for _ in range(6 << 20)))
with open(f"{d}/fib.py", "w") as f:
    f.write("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(31))\n")
with open(f"{d}/q.sql", "w") as f:
    f.write("create table t(a integer, b text);\n"
            "with recursive c(x) as (select 1 union all select x + 1 from c where x < 400000)\n"
            "insert into t select x * 7919 % 100003, hex(randomblob(8)) from c;\n"
            "select count(*), sum(length(b)) from (select b from t order by b);\n"
            "select a % 97, count(*) from t group by 1 order by 2 desc limit 3;\n")
EOF

declare -A CMD NAMES COMM
CMD[c-nofp]="target/fixtures/nofp 3";                     NAMES[c-nofp]="main run_deep run_sort deep_b compare_slow"
CMD[rust-release]="target/fixtures/rust_split_release 3"; NAMES[rust-release]="rust_split::main rust_split::parse_records"
CMD[go]="target/fixtures/goleaf 3";                       NAMES[go]="main.main main.hotA main.levelA"
CMD[sort]="sort -o /dev/null $tmp/lines.txt";             NAMES[sort]="__libc_start_call_main start_thread"
CMD[xz]="xz -9 -T1 -k -c $tmp/data.bin";                  NAMES[xz]="__libc_start_call_main lzma_code"
CMD[gzip]="gzip -9 -c $tmp/data.bin";                     NAMES[gzip]="__libc_start_call_main"
CMD[sqlite3]="sqlite3 :memory: -init $tmp/q.sql .quit";   NAMES[sqlite3]="__libc_start_call_main sqlite3_step"
CMD[python3]="/usr/bin/python3.11 $tmp/fib.py";            NAMES[python3]="Py_RunMain _PyEval_EvalFrameDefault"
COMM[c-nofp]=nofp; COMM[rust-release]=rust_split_release; COMM[go]=goleaf; COMM[sort]=sort; COMM[xz]=xz
COMM[gzip]=gzip; COMM[sqlite3]=sqlite3; COMM[python3]=python3.11
ORDER="c-nofp rust-release go sort xz gzip sqlite3 python3"

echo "== 1. complete stacks at $FREQ Hz, same runs: profrec (DWARF, default --stack-bytes) vs perf --call-graph dwarf (8 KiB)"
for w in $ORDER; do
  echo "  $w: ${CMD[$w]}"
  # shellcheck disable=SC2086
  perf record -q -F "$FREQ" -e cpu-clock --call-graph dwarf -o "$tmp/$w.data" -- \
    target/release/profrec -q -F "$FREQ" -o "$tmp/$w.cap" -- ${CMD[$w]} >/dev/null 2>"$tmp/$w.err" || { cat "$tmp/$w.err"; exit 1; }
  target/release/profanalyze -q folded --no-local-files "$tmp/$w.cap" > "$tmp/$w.ours"
  perf script -i "$tmp/$w.data" -F comm,ip,sym 2>/dev/null | python3 "$fold" fold-perf "${COMM[$w]}" > "$tmp/$w.perf"
  # shellcheck disable=SC2086
  python3 "$fold" compare "$tmp/$w.ours" "$tmp/$w.perf" ${NAMES[$w]}
  target/release/profanalyze info "$tmp/$w.cap" | sed -n '/^unwinding/,/^processes/p' | grep -v '^processes' | sed 's/^/    /'
done

echo
echo "== 2. overhead on xz -9 of 6 MiB ($REPS rounds, interleaved, medians)"
work=(xz -9 -T1 -k -c "$tmp/data.bin")
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
run_once() { # name, then the command prefix (empty for the baseline)
  local name=$1; shift
  local b0 b1 t0 t1
  b0=$(busy); t0=$(date +%s.%N)
  "$@" "${work[@]}" > /dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  t1=$(date +%s.%N); b1=$(busy)
  # workload wall seconds (the profiler's start and end included) and busy CPU seconds
  echo "$(echo "$t1 - $t0" | bc) $(echo "$b0 $b1" | awk -v hz="$(getconf CLK_TCK)" '{print ($3 - $1) / hz}')" >> "$tmp/$name.runs"
}
for _ in $(seq "$REPS"); do
  run_once base
  for hz in 99 999; do
    run_once "profrec$hz" target/release/profrec -q -F "$hz" -o "$tmp/o$hz.cap" --
    run_once "perf$hz" perf record -q -F "$hz" -e cpu-clock --call-graph dwarf -o "$tmp/o$hz.data" --
  done
done
printf '  %-12s %12s %9s %16s %9s   (spread of wall: min-max)\n' config "wall (s)" ratio "busy CPU (s)" ratio
bw=$(awk '{print $1}' "$tmp/base.runs" | median); bc_=$(awk '{print $2}' "$tmp/base.runs" | median)
for name in base profrec99 perf99 profrec999 perf999; do
  w=$(awk '{print $1}' "$tmp/$name.runs" | median); c=$(awk '{print $2}' "$tmp/$name.runs" | median)
  lo=$(awk '{print $1}' "$tmp/$name.runs" | sort -g | head -1); hi=$(awk '{print $1}' "$tmp/$name.runs" | sort -g | tail -1)
  printf '  %-12s %12.3f %9.4f %16.3f %9.4f   (%.3f-%.3f)\n' "$name" "$w" "$(echo "$w / $bw" | bc -l)" "$c" "$(echo "$c / $bc_" | bc -l)" "$lo" "$hi"
done

echo
echo "== 3. bytes per sample, xz at 999 Hz"
target/release/profrec -q -F 999 -o "$tmp/d.cap" -- "${work[@]}" >/dev/null
target/release/profrec -q -F 999 --keep-stacks -o "$tmp/k.cap" -- "${work[@]}" >/dev/null
perf record -q -F 999 -e cpu-clock --call-graph dwarf -o "$tmp/p.data" -- "${work[@]}" >/dev/null 2>&1
zstd -q -3 -f "$tmp/p.data" -o "$tmp/p.data.zst"
per() { # file, samples
  echo "$1 $2" | awk '{printf "%.0f", $1 / $2}'
}
n_ours=$(target/release/profanalyze info --json "$tmp/d.cap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples"])')
n_keep=$(target/release/profanalyze info --json "$tmp/k.cap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples"])')
n_perf=$(perf script -i "$tmp/p.data" -F tid 2>/dev/null | wc -l)
d=$(per "$(stat -c %s "$tmp/d.cap")" "$n_ours"); k=$(per "$(stat -c %s "$tmp/k.cap")" "$n_keep")
p=$(per "$(stat -c %s "$tmp/p.data")" "$n_perf"); z=$(per "$(stat -c %s "$tmp/p.data.zst")" "$n_perf")
echo "  profrec default: $d B/sample   --keep-stacks: $k B/sample"
echo "  perf dwarf perf.data: $p B/sample   zstd -3: $z B/sample"
echo "  default vs perf.data: 1/$(echo "$p / $d" | bc)   --keep-stacks vs perf.data.zst: $(echo "scale=2; $k / $z" | bc)x"

echo
echo "== 4. profrec's own cost (summary line of a 999 Hz recording of xz)"
target/release/profrec -F 999 -o "$tmp/s.cap" -- "${work[@]}" 2>&1 >/dev/null | grep 'profrec: wrote' | sed 's/^/  /'
