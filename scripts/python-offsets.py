#!/usr/bin/env python3
"""Prints the CPython struct offsets profrec's Python frame walker uses, read
with gdb from the debug info of pyenv's interpreters (x86_64).

The table in crates/recorder/src/python/layouts.rs was written from this
output; run it again when a version is added:
    scripts/python-offsets.py ~/.pyenv/versions/3.1[0-2]* ~/.pyenv/versions/3.[89]*
3.13+ need no table: the interpreter describes itself (_Py_DebugOffsets)."""
import glob, re, subprocess, sys

FIELDS = {
    "runtime_interpreters_head": "((_PyRuntimeState*)0)->interpreters.head",
    "interp_threads_head": ["((PyInterpreterState*)0)->threads.head", "((PyInterpreterState*)0)->tstate_head"],
    "tstate_next": "((PyThreadState*)0)->next",
    "tstate_thread_id": "((PyThreadState*)0)->thread_id",
    "tstate_frame": ["((PyThreadState*)0)->cframe", "((PyThreadState*)0)->frame"],
    "cframe_current_frame": "((_PyCFrame*)0)->current_frame",
    "frame_previous": ["((_PyInterpreterFrame*)0)->previous", "((PyFrameObject*)0)->f_back"],
    "frame_code": ["((_PyInterpreterFrame*)0)->f_code", "((PyFrameObject*)0)->f_code"],
    "frame_instr": ["((_PyInterpreterFrame*)0)->prev_instr", "((PyFrameObject*)0)->f_lasti"],
    "frame_is_entry": "((_PyInterpreterFrame*)0)->is_entry",
    "frame_owner": "((_PyInterpreterFrame*)0)->owner",
    "code_filename": "((PyCodeObject*)0)->co_filename",
    "code_name": "((PyCodeObject*)0)->co_name",
    "code_qualname": "((PyCodeObject*)0)->co_qualname",
    "code_firstlineno": "((PyCodeObject*)0)->co_firstlineno",
    "code_linetable": ["((PyCodeObject*)0)->co_linetable", "((PyCodeObject*)0)->co_lnotab"],
    "code_code_adaptive": "((PyCodeObject*)0)->co_code_adaptive",
    "unicode_ascii_size": "sizeof(PyASCIIObject)",
    "unicode_compact_size": "sizeof(PyCompactUnicodeObject)",
    "bytes_sval": "((PyBytesObject*)0)->ob_sval",
}


def value(lib, expr):
    e = expr if expr.startswith("sizeof") else f"(long)&({expr})"
    out = subprocess.run(["gdb", "-q", "-batch", "-ex", f"print {e}", lib], capture_output=True, text=True).stdout
    m = re.search(r"\$1 = (\d+)", out)
    return int(m.group(1)) if m else None


for prefix in sys.argv[1:]:
    lib = glob.glob(f"{prefix}/lib/libpython3*.so.1.0")[0]
    print(f"# {lib}")
    for name, exprs in FIELDS.items():
        for expr in exprs if isinstance(exprs, list) else [exprs]:
            v = value(lib, expr)
            if v is not None:
                print(f"{name} = {v}  # {expr}")
                break
        else:
            print(f"{name} = -")
