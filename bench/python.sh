#!/usr/bin/env bash
# Python frames against py-spy (PyPI), side by side (root).
#
# 1. Shares: fixtures/programs/pywork.py (hot gets 3 units of work, cold 1,
#    through <module> -> main -> level1 -> level2 -> Worker.step) on every
#    CPython here (pyenv 3.8-3.13, Debian's python3.11), SHARE_S each, at
#    99 Hz under profrec and under `py-spy record`: hot's share of hot+cold
#    against the program's own measure (perf_counter around each call), and
#    the share of spin's samples with the whole Python caller chain.
# 2. Overhead at 99 Hz on pywork.py (CPython 3.12, RUN_S per run): rounds per second alone,
#    under profrec, under py-spy; REPS rounds interleaved, medians and the
#    spread; the machine's busy CPU (/proc/stat) per second beside it, which
#    counts the BPF walk and profrec wherever they run.
# 3. Bytes per sample of the capture.
# Usage: bench/python.sh [SHARE_S] [RUN_S] [REPS]   (defaults 30, 10, 5; SHARE_S 0 skips part 1)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
SHARE_S=${1:-30}
SECONDS_EACH=${2:-10}
REPS=${3:-5}
FREQ=99
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
PYSPY_VERSION=0.4.3
pyspy=target/tools/py-spy-$PYSPY_VERSION/py-spy
if [ ! -x "$pyspy" ]; then
  d=target/tools/py-spy-$PYSPY_VERSION
  mkdir -p "$d"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$d" "py-spy==$PYSPY_VERSION"
  python3 -m zipfile -e "$d"/py_spy-*.whl "$d/whl"
  cp "$d"/whl/py_spy-*.data/scripts/py-spy "$pyspy"
  chmod +x "$pyspy"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prog=fixtures/programs/pywork.py
rec=target/release/profrec
ana=target/release/profanalyze

# Shares in a folded file: "hot_share full_chain_share samples".
shares() {
  python3 - "$1" "$2" <<'EOF'
import re, sys
path, style = sys.argv[1], sys.argv[2]
hot = cold = spin = full = total = 0
for line in open(path):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    if not n.isdigit():
        continue
    n = int(n)
    total += n
    frames = stack.split(";")
    if style == "profcap":   # py::pywork.hot (pywork.py:18)
        py = [re.sub(r"^py::[^.]*\.", "", f).split(" (")[0] for f in frames if f.startswith("py::")]
    else:                    # py-spy raw: hot (pywork.py:19)
        py = [f.split(" (")[0] for f in frames if "(" in f and ".py" in f]
    py = ["step" if f == "Worker.step" else f for f in py]
    hot += n * ("hot" in py)
    cold += n * ("cold" in py)
    if py and py[-1] == "spin":
        spin += n
        full += n * (py in (["<module>", "main", "level1", "level2", "step", w, "spin"] for w in ("hot", "cold")))
print(f"{100 * hot / max(1, hot + cold):.1f} {100 * full / max(1, spin):.1f} {total}")
EOF
}

interpreters=()
for m in 8 9 10 11 12 13; do
  p=$(ls -d ~/.pyenv/versions/3.$m.* 2>/dev/null | sort -V | tail -1)
  [ -n "$p" ] && interpreters+=("$p/bin/python3.$m")
done
interpreters+=(/usr/bin/python3.11)

if [ "$SHARE_S" -gt 0 ]; then
echo "== 1. shares, $SHARE_S s each at $FREQ Hz (hot's share of hot+cold; full = whole Python caller chain)"
printf '  %-46s %7s | %8s %6s %6s | %8s %6s %6s\n' interpreter truth profrec diff full py-spy diff full
for py in "${interpreters[@]}"; do
  truth_a=$("$rec" -q -F $FREQ -o "$tmp/a.cap" -- "$py" $prog "$SHARE_S" | awk '{print $4}')
  "$ana" folded --python only "$tmp/a.cap" > "$tmp/a.folded"
  read -r ours ours_full _ < <(shares "$tmp/a.folded" profcap)
  "$pyspy" record -r $FREQ -f raw -o "$tmp/b.folded" -- "$py" $prog "$SHARE_S" > "$tmp/b.out" 2>/dev/null || true
  truth_b=$(awk '/hot_share/ {print $4}' "$tmp/b.out")
  read -r theirs theirs_full _ < <(shares "$tmp/b.folded" pyspy)
  printf '  %-46s %7s | %8s %+6.1f %5s%% | %8s %+6.1f %5s%%   (py-spy run truth %s)\n' "$py" "$truth_a" \
    "$ours" "$(echo "$ours - $truth_a" | bc)" "$ours_full" "$theirs" "$(echo "$theirs - $truth_b" | bc)" "$theirs_full" "$truth_b"
done
fi

echo "== 2. overhead at $FREQ Hz on pywork.py, CPython 3.12 ($REPS rounds interleaved, medians)"
py312=$(ls -d ~/.pyenv/versions/3.12.* | sort -V | tail -1)/bin/python3.12
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
hz=$(getconf CLK_TCK)
run() {  # config -> "rounds_per_s busy_cpu_per_s"
  local b0 b1 out
  b0=$(busy)
  case $1 in
    base) out=$("$py312" $prog "$SECONDS_EACH") ;;
    profrec) out=$("$rec" -q -F $FREQ -o "$tmp/o.cap" -- "$py312" $prog "$SECONDS_EACH") ;;
    py-spy) out=$("$pyspy" record -r $FREQ -f raw -o "$tmp/o.folded" -- "$py312" $prog "$SECONDS_EACH" 2>/dev/null) ;;
  esac
  b1=$(busy)
  echo "$out" | awk -v s="$SECONDS_EACH" -v b="$(( b1 - b0 ))" -v hz="$hz" '/rounds/ {printf "%.2f %.3f\n", $2 / s, b / hz / s}'
}
for ((i = 0; i < REPS; i++)); do
  for c in base profrec py-spy; do run $c >> "$tmp/$c.runs"; done
done
printf '  %-8s %14s %8s %20s %16s\n' config "rounds/s" "vs base" "spread (min-max)" "busy CPU/s"
base=$(awk '{print $1}' "$tmp/base.runs" | median)
for c in base profrec py-spy; do
  r=$(awk '{print $1}' "$tmp/$c.runs" | median); b=$(awk '{print $2}' "$tmp/$c.runs" | median)
  lo=$(awk '{print $1}' "$tmp/$c.runs" | sort -g | head -1); hi=$(awk '{print $1}' "$tmp/$c.runs" | sort -g | tail -1)
  printf '  %-8s %14s %+7.2f%% %20s %16s\n' "$c" "$r" "$(echo "100 * ($r - $base) / $base" | bc -l)" "$lo-$hi" "$b"
done

echo "== 3. capture size"
"$ana" info "$tmp/o.cap" | grep -E "^(samples|python|size):"
