#!/usr/bin/env python3
"""Writes line-table test vectors from the running interpreter: for each code
object of a sample source, its line table and the line CPython itself gives
for every instruction offset. crates/format/tests/python_lines.rs checks
profcap's decoder against them. Regenerate with every supported version:
    for p in ~/.pyenv/versions/3.{8,9,10,11,12,13}*/bin/python3; do $p scripts/python-line-vectors.py; done \
        > crates/format/tests/data/python_lines.txt
"""
import dis, sys

SOURCE = '''
import os

def simple(a, b):
    c = a + b
    return c * 2

class Shape:
    def area(self, w,
             h):
        total = (w *
                 h)
        if total > 10:
            return total
        return -total

def loops(n):
    out = []
    for i in range(n):
        try:
            out.append([j * i for j in range(i)])
        except ValueError:
            pass
        finally:
            n -= 1
    while n > 0:
        n -= 1
    return out
''' + "\n" * 300 + '''
def far_away(x):
    y = x
''' + "\n" * 200 + '''
    return y
def long_body(x):
''' + "".join(f"    x = x + {i}\n" for i in range(120)) + '''
    return x
'''


def codes(co):
    yield co
    for c in co.co_consts:
        if hasattr(c, "co_code"):
            yield from codes(c)


def lines(co):
    """(offset, line or 0) for every instruction offset."""
    n = len(co.co_code)
    out = [0] * (n // 2)
    if hasattr(co, "co_lines"):
        for start, end, line in co.co_lines():
            for off in range(start, end, 2):
                if off // 2 < len(out):
                    out[off // 2] = line or 0
    else:
        starts = list(dis.findlinestarts(co))
        line = co.co_firstlineno
        i = 0
        for off in range(0, n, 2):
            while i < len(starts) and starts[i][0] <= off:
                line = starts[i][1]
                i += 1
            out[off // 2] = line
    return [(2 * i, l) for i, l in enumerate(out)]


v = sys.version_info
fmt = "lnotab" if v < (3, 10) else "lines310" if v < (3, 11) else "locations311"
for co in codes(compile(SOURCE, "sample.py", "exec")):
    table = co.co_lnotab if v < (3, 10) else co.co_linetable
    print(f"code {v.major}.{v.minor} {fmt} {co.co_firstlineno} {co.co_name} {table.hex() or '-'}")
    for off, line in lines(co):
        print(f"at {off} {line}")
