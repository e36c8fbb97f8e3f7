//! Where CPython keeps what the frame walk reads, per version (x86-64).
//!
//! 3.8 to 3.12 from the table below, written from `scripts/python-offsets.py`
//! (gdb on pyenv's interpreters, which carry debug info); 3.13 from the
//! interpreter itself: `_PyRuntime` starts with `_Py_DebugOffsets`, written
//! for out-of-process debuggers.

use profcap_format::python::PyLineTable;

use crate::probes::{PyLayout, PY_ABSENT};

/// What profrec reads of code objects and strings in user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeLayout {
    pub(crate) filename: u16,
    pub(crate) name: u16,
    /// `PY_ABSENT` before 3.11.
    pub(crate) qualname: u16,
    pub(crate) firstlineno: u16,
    pub(crate) linetable: u16,
    /// Start of the bytecode inside the code object (3.11+; else `PY_ABSENT`).
    pub(crate) code_adaptive: u16,
    pub(crate) line_format: PyLineTable,
    /// An 8-byte word that differs between code objects made one after the
    /// other: around `co_firstlineno` before 3.12, `co_version` from 3.12.
    pub(crate) tag: u16,
    /// `sizeof(PyASCIIObject)`: where an ASCII string's characters start.
    pub(crate) ascii_size: u16,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' start.
    pub(crate) compact_size: u16,
}

/// Everything version-specific about one interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) version: (u8, u8),
    /// For the BPF walk, but for the code fields (see [`Layout::walk`]).
    walk_fields: PyLayout,
    pub(crate) code: CodeLayout,
}

impl Layout {
    /// What the BPF walk needs of a process whose `_PyRuntime` is at `runtime`.
    pub(crate) fn walk(&self, runtime: u64) -> PyLayout {
        PyLayout {
            runtime,
            code_name: self.code.name,
            code_tag: self.code.tag,
            str_hash: UNICODE_HASH as u16,
            ..self.walk_fields
        }
    }
}

/// `PyUnicodeObject` fields, the same from 3.8 to 3.13.
pub(crate) const UNICODE_LENGTH: u64 = 16;
pub(crate) const UNICODE_STATE: u64 = 32;
/// `PyASCIIObject.hash`, the same from 3.8 to 3.13.
pub(crate) const UNICODE_HASH: u64 = 24;
/// `PyBytesObject.ob_size` and `.ob_sval`, the same from 3.8 to 3.13.
pub(crate) const BYTES_SIZE: u64 = 16;
pub(crate) const BYTES_SVAL: u64 = 32;
/// `PyObject.ob_type`.
pub(crate) const OB_TYPE: u64 = 8;

const A: u16 = PY_ABSENT;

#[allow(clippy::too_many_arguments)]
const fn walk(
    interp_head: u16,
    threads_head: u16,
    thread_id: u16,
    frame: u16,
    cframe_current: u16,
    (previous, code, instr): (u16, u16, u16),
    (is_entry, owner): (u16, u16),
    pointer: bool,
) -> PyLayout {
    PyLayout {
        runtime: 0,
        runtime_interp_head: interp_head,
        interp_threads_head: threads_head,
        tstate_next: 8,
        tstate_thread_id: thread_id,
        tstate_frame: frame,
        cframe_current_frame: cframe_current,
        frame_previous: previous,
        frame_code: code,
        frame_instr: instr,
        frame_is_entry: is_entry,
        frame_owner: owner,
        instr_is_pointer: pointer as u8,
        // Before 3.11 every Python frame is a run of the eval loop of its own.
        every_frame_entry: !pointer as u8,
        // Filled in from the code layout (`Layout::walk`).
        code_name: 0,
        code_tag: 0,
        str_hash: 0,
        pad: 0,
    }
}

const fn code(
    (filename, name, qualname): (u16, u16, u16),
    (firstlineno, tag): (u16, u16),
    linetable: u16,
    code_adaptive: u16,
    line_format: PyLineTable,
    (ascii_size, compact_size): (u16, u16),
) -> CodeLayout {
    CodeLayout {
        filename,
        name,
        qualname,
        firstlineno,
        tag,
        linetable,
        code_adaptive,
        line_format,
        ascii_size,
        compact_size,
    }
}

/// `PyCodeObject.co_version` in 3.12 and 3.13 (not among 3.13's debug offsets).
const CO_VERSION: u16 = 92;

/// The versions a table describes.
const TABLE: [Layout; 5] = [
    Layout {
        version: (3, 8),
        walk_fields: walk(32, 8, 176, 24, A, (24, 32, 104), (A, A), false),
        code: code((104, 112, A), (40, 40), 120, A, PyLineTable::Lnotab, (48, 72)),
    },
    Layout {
        version: (3, 9),
        walk_fields: walk(32, 8, 176, 24, A, (24, 32, 104), (A, A), false),
        code: code((104, 112, A), (40, 40), 120, A, PyLineTable::Lnotab, (48, 72)),
    },
    Layout {
        version: (3, 10),
        walk_fields: walk(32, 8, 176, 24, A, (24, 32, 96), (A, A), false),
        code: code((104, 112, A), (40, 40), 120, A, PyLineTable::Lines310, (48, 72)),
    },
    Layout {
        version: (3, 11),
        walk_fields: walk(40, 16, 152, 56, 8, (48, 32, 56), (68, 69), true),
        code: code((112, 120, 128), (72, 72), 136, 184, PyLineTable::Locations311, (48, 72)),
    },
    Layout {
        version: (3, 12),
        walk_fields: walk(40, 72, 136, 56, 0, (8, 0, 56), (A, 70), true),
        code: code((112, 120, 128), (68, CO_VERSION), 136, 192, PyLineTable::Locations311, (40, 56)),
    },
];

/// The layout of a version from the table (3.8 to 3.12).
pub(crate) fn from_table(version: (u8, u8)) -> Option<Layout> {
    TABLE.iter().find(|l| l.version == version).copied()
}

/// Bytes of `_Py_DebugOffsets` read (the 3.13 struct: 73 u64 fields).
pub(crate) const DEBUG_OFFSETS_BYTES: usize = 73 * 8;

/// The layout a 3.13 interpreter describes in `_Py_DebugOffsets` (the
/// first `DEBUG_OFFSETS_BYTES` of `_PyRuntime`); `Err` says why not.
pub(crate) fn from_debug_offsets(raw: &[u8]) -> Result<Layout, String> {
    let field = |i: usize| -> u64 {
        raw.get(i * 8..i * 8 + 8).map_or(u64::MAX, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0xff; 8])))
    };
    if raw.get(..8) != Some(b"xdebugpy") {
        return Err("_PyRuntime does not start with the debug offsets cookie".into());
    }
    let hex = field(1);
    let version = ((hex >> 24) as u8, (hex >> 16) as u8);
    if version != (3, 13) {
        return Err(format!("debug offsets of version {}.{} (only 3.13 is known)", version.0, version.1));
    }
    if field(2) != 0 {
        return Err("free-threaded interpreters are not supported".into());
    }
    // A field that does not fit the BPF side's 16 bits is refused, not cut.
    let small = |i: usize| -> Result<u16, String> {
        u16::try_from(field(i)).map_err(|_| format!("debug offset {i} out of range: {}", field(i)))
    };
    let walk = PyLayout {
        runtime: 0,
        runtime_interp_head: small(5)?,
        interp_threads_head: small(9)?,
        tstate_next: small(21)?,
        tstate_thread_id: small(24)?,
        tstate_frame: small(23)?,
        cframe_current_frame: A,
        frame_previous: small(29)?,
        frame_code: small(30)?,
        frame_instr: small(31)?,
        frame_is_entry: A,
        frame_owner: small(33)?,
        instr_is_pointer: 1,
        every_frame_entry: 0,
        code_name: 0,
        code_tag: 0,
        str_hash: 0,
        pad: 0,
    };
    let ascii_size = small(70)?;
    let code = CodeLayout {
        filename: small(35)?,
        name: small(36)?,
        qualname: small(37)?,
        firstlineno: small(39)?,
        tag: CO_VERSION,
        linetable: small(38)?,
        code_adaptive: small(43)?,
        line_format: PyLineTable::Locations311,
        ascii_size,
        // PyCompactUnicodeObject adds utf8_length and utf8 to PyASCIIObject.
        compact_size: ascii_size + 16,
    };
    if field(68) != UNICODE_STATE || field(69) != UNICODE_LENGTH || field(66) != BYTES_SVAL {
        return Err("string or bytes layout differs from the known one".into());
    }
    Ok(Layout { version, walk_fields: walk, code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_offsets_are_checked_before_use() {
        let mut raw = vec![0u8; DEBUG_OFFSETS_BYTES];
        assert!(from_debug_offsets(&raw).unwrap_err().contains("cookie"));
        raw[..8].copy_from_slice(b"xdebugpy");
        raw[8..16].copy_from_slice(&0x030e_00f0u64.to_ne_bytes());
        assert!(from_debug_offsets(&raw).unwrap_err().contains("3.14"));
        raw[8..16].copy_from_slice(&0x030d_00f0u64.to_ne_bytes());
        raw[5 * 8..6 * 8].copy_from_slice(&0x1_0000u64.to_ne_bytes());
        assert!(from_debug_offsets(&raw).unwrap_err().contains("out of range"));
        assert!(from_debug_offsets(&raw[..16]).is_err(), "a short read is refused");
    }

    #[test]
    fn the_table_knows_each_version_once() {
        for minor in 8..=12 {
            assert_eq!(TABLE.iter().filter(|l| l.version == (3, minor)).count(), 1);
        }
        assert!(from_table((3, 7)).is_none());
        assert!(from_table((3, 13)).is_none(), "3.13 describes itself");
    }
}
