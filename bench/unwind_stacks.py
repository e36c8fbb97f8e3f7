#!/usr/bin/env python3
"""Stack completeness of folded profiles, for bench/unwind.sh.

  unwind_stacks.py fold-perf COMM < perf-script-output > folded
      folds `perf script -F comm,ip,sym` output (leaf-first call chains, one
      block per sample) of the threads named COMM (perf's 15-character
      comm) into `root;...;leaf count` lines.
  unwind_stacks.py compare OURS PERF NAME...
      prints, for two folded files of the same workload, the share of
      samples whose stack reaches a root (process entry or thread start) and
      the total (inclusive) share of each named function.
"""
import collections
import re
import sys

# Outermost frames of a complete stack: the process entry, a thread start
# (the clone that made it, or start_thread when the unwinder stops there),
# and Go's goroutine and thread bases.
ROOTS = {
    "_start", "__libc_start_main", "__libc_start_main_impl", "__libc_start_call_main",
    "clone", "clone3", "__clone", "__clone3", "__GI___clone3", "__GI___clone", "start_thread",
    "runtime.goexit.abi0", "runtime.goexit", "runtime.rt0_go.abi0", "runtime.mstart.abi0",
    "runtime.clone.abi0", "_dl_start_user", "_dl_start",
}


def fold_perf(lines, comm):
    counts = collections.Counter()
    frames = []
    keep = False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames and keep:
                counts[";".join(reversed(frames))] += 1
            frames, keep = [], False
            continue
        if line.startswith((" ", "\t")):
            parts = line.split(None, 1)
            sym = parts[1] if len(parts) > 1 else "[unknown]"
            sym = re.sub(r"\s+\(.*\)$", "", sym)  # "(dso)" if printed
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            frames.append(sym or "[unknown]")
        else:
            keep = line.strip().startswith(comm[:15])  # the sample's comm
    if frames and keep:
        counts[";".join(reversed(frames))] += 1
    for stack, n in counts.items():
        print(f"{stack} {n}")


def read_folded(path):
    stacks = []
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack and n.isdigit():
                # Kernel frames are not part of the question (user stacks).
                user = [fr for fr in stack.split(";") if not fr.endswith("_[k]")]
                stacks.append((user, int(n)))
    return stacks


def reaches_root(stack):
    # A stripped executable's _start has no name: its caller-less frame is
    # `prog+0x...`, followed by libc's __libc_start_main_impl; so a root
    # among the three outermost frames counts.
    return any(f in ROOTS for f in stack[:3])


def metrics(stacks, names):
    total = sum(n for _, n in stacks) or 1
    rooted = sum(n for s, n in stacks if reaches_root(s))
    shares = {}
    for name in names:
        shares[name] = 100.0 * sum(n for s, n in stacks if name in s) / total
    return 100.0 * rooted / total, shares, total


def compare(ours, perf, names):
    (r1, s1, n1), (r2, s2, n2) = metrics(read_folded(ours), names), metrics(read_folded(perf), names)
    print(f"    samples: profrec {n1}, perf dwarf {n2}")
    print(f"    reach a root:   profrec {r1:6.2f}%   perf dwarf {r2:6.2f}%   diff {r1 - r2:+6.2f}")
    for name in names:
        print(f"    {name[:40]:40s} profrec {s1[name]:6.2f}%   perf dwarf {s2[name]:6.2f}%   diff {s1[name] - s2[name]:+6.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["fold-perf"] and len(sys.argv) == 3:
        fold_perf(sys.stdin, sys.argv[2])
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) >= 4:
        compare(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
