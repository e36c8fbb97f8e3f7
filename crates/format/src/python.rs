//! Python frames (format 1.4): how a stack's interpreter frames are encoded,
//! the code objects they name, and the rule that turns a bytecode offset into
//! a line, for each CPython line-table format. The recorder writes these, the
//! analyzer reads them; both go through this module.

/// How a [`PyCode::line_table`] maps bytecode offsets to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PyLineTable {
    /// Not known (a newer recorder's format): lines are not shown.
    #[default]
    Unknown,
    /// `co_lnotab` of CPython 3.8 and 3.9.
    Lnotab,
    /// `co_linetable` of CPython 3.10.
    Lines310,
    /// The location table of CPython 3.11 and later.
    Locations311,
}

impl PyLineTable {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            PyLineTable::Unknown => 0,
            PyLineTable::Lnotab => 1,
            PyLineTable::Lines310 => 2,
            PyLineTable::Locations311 => 3,
        }
    }

    /// The format of an on-disk code (unknown codes read as `Unknown`).
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => PyLineTable::Lnotab,
            2 => PyLineTable::Lines310,
            3 => PyLineTable::Locations311,
            _ => PyLineTable::Unknown,
        }
    }
}

/// A Python code object as the recorder read it from a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyCode {
    /// Referenced by [`PyFrame::code`]; unique within a capture.
    pub id: u32,
    pub name: String,
    /// `Class.method`; empty before CPython 3.11.
    pub qualname: String,
    pub filename: String,
    pub first_line: u32,
    pub line_format: PyLineTable,
    pub line_table: Vec<u8>,
}

/// Most bytes of a name or file name the recorder reads.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most bytes of a line table the recorder reads.
pub const MAX_LINE_TABLE_BYTES: usize = 1 << 20;

impl PyCode {
    /// The line of the instruction at byte `offset` of the bytecode, if the
    /// table says; else the function's first line.
    pub fn line_at(&self, offset: u32) -> u32 {
        line_at(self.line_format, &self.line_table, self.first_line, offset).unwrap_or(self.first_line)
    }

    /// The name to show: the qualified name where the interpreter has one.
    pub fn display_name(&self) -> &str {
        if self.qualname.is_empty() {
            &self.name
        } else {
            &self.qualname
        }
    }
}

/// One interpreter frame of a stack (`Stack::python`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyFrame {
    /// The [`PyCode::id`] it runs.
    pub code: u32,
    /// Byte offset of the current instruction in the code's bytecode.
    pub offset: u32,
    /// The last (outermost) frame that one run of the eval loop executed:
    /// the native eval-loop frame that ran it lies between this frame and the
    /// next one towards the root.
    pub entry: bool,
}

const ENTRY_BIT: u64 = 1 << 31;
const OFFSET_MASK: u64 = ENTRY_BIT - 1;

impl PyFrame {
    /// The on-disk form: `code << 32 | entry << 31 | offset` (offsets past
    /// 2^31 - 1 are capped).
    pub fn encode(self) -> u64 {
        u64::from(self.code) << 32
            | if self.entry { ENTRY_BIT } else { 0 }
            | u64::from(self.offset).min(OFFSET_MASK)
    }

    pub fn decode(v: u64) -> PyFrame {
        PyFrame { code: (v >> 32) as u32, offset: (v & OFFSET_MASK) as u32, entry: v & ENTRY_BIT != 0 }
    }
}

/// The line of the instruction at byte `offset`, or `None` if the table has
/// no line for it (or is damaged: every read is bounded).
pub fn line_at(format: PyLineTable, table: &[u8], first_line: u32, offset: u32) -> Option<u32> {
    let line = match format {
        PyLineTable::Unknown => return None,
        PyLineTable::Lnotab => lnotab_line(table, first_line, offset),
        PyLineTable::Lines310 => lines310_line(table, first_line, offset)?,
        PyLineTable::Locations311 => locations_line(table, first_line, offset)?,
    };
    u32::try_from(line).ok().filter(|&l| l > 0)
}

/// 3.8/3.9 `co_lnotab`: (bytecode increment, signed line increment) pairs;
/// the line of `offset` is the line after the last increment at or before it.
fn lnotab_line(table: &[u8], first_line: u32, offset: u32) -> i64 {
    let mut line = i64::from(first_line);
    let mut addr: u64 = 0;
    for pair in table.chunks_exact(2) {
        addr += u64::from(pair[0]);
        if addr > u64::from(offset) {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    line
}

/// 3.10 `co_linetable`: (bytecode length, signed line delta) pairs, each
/// covering a range; a delta of -128 means the range has no line.
fn lines310_line(table: &[u8], first_line: u32, offset: u32) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut start: u64 = 0;
    for pair in table.chunks_exact(2) {
        let end = start + u64::from(pair[0]);
        let delta = pair[1] as i8;
        if delta != -128 {
            line += i64::from(delta);
        }
        if (start..end).contains(&u64::from(offset)) {
            return (delta != -128).then_some(line);
        }
        start = end;
    }
    None
}

/// Reads a 3.11 location-table varint (6 bits per byte, bit 6 = more).
fn varint(table: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *table.get(*at)?;
        *at += 1;
        value |= u64::from(b & 63).checked_shl(shift)?;
        if b & 64 == 0 {
            return Some(value);
        }
        shift += 6;
        if shift > 60 {
            return None;
        }
    }
}

fn svarint(table: &[u8], at: &mut usize) -> Option<i64> {
    let v = varint(table, at)?;
    let magnitude = (v >> 1) as i64;
    Some(if v & 1 != 0 { -magnitude } else { magnitude })
}

/// 3.11+ location table: entries of a first byte `1 CCCC LLL` (code `C`,
/// `L + 1` code units of 2 bytes) and the code's operands; codes 0-9 are the
/// short form (same line), 10-12 one line further by `C - 10`, 13 a line
/// delta only, 14 the long form, 15 no location.
fn locations_line(table: &[u8], first_line: u32, offset: u32) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut at = 0;
    let mut start: u64 = 0;
    while at < table.len() {
        let first = table[at];
        at += 1;
        if first & 0x80 == 0 {
            return None; // not an entry start: damaged
        }
        let code = (first >> 3) & 15;
        let end = start + 2 * (u64::from(first & 7) + 1);
        let has_line = match code {
            15 => false,
            14 => {
                line += svarint(table, &mut at)?;
                for _ in 0..3 {
                    varint(table, &mut at)?;
                }
                true
            }
            13 => {
                line += svarint(table, &mut at)?;
                true
            }
            10..=12 => {
                line += i64::from(code - 10);
                at += 2;
                true
            }
            _ => {
                at += 1;
                true
            }
        };
        if (start..end).contains(&u64::from(offset)) {
            return has_line.then_some(line);
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_cap_the_offset() {
        for f in [
            PyFrame { code: 0, offset: 0, entry: false },
            PyFrame { code: u32::MAX, offset: 0x7fff_fffe, entry: true },
            PyFrame { code: 7, offset: 12, entry: false },
        ] {
            assert_eq!(PyFrame::decode(f.encode()), f);
        }
        let big = PyFrame { code: 3, offset: u32::MAX, entry: false };
        assert_eq!(PyFrame::decode(big.encode()).offset, 0x7fff_ffff);
        assert_eq!(PyFrame::decode(big.encode()).code, 3);
    }

    #[test]
    fn damaged_tables_give_no_line_and_never_panic() {
        for format in [PyLineTable::Lnotab, PyLineTable::Lines310, PyLineTable::Locations311] {
            for table in
                [&[][..], &[0xff], &[0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]]
            {
                for offset in [0, 1, 2, 100, u32::MAX] {
                    let _ = line_at(format, table, 1, offset);
                }
            }
        }
        // A 3.11 table whose first byte is not an entry start.
        assert_eq!(line_at(PyLineTable::Locations311, &[0x01, 0x02], 10, 0), None);
        assert_eq!(line_at(PyLineTable::Unknown, &[0x80], 10, 0), None);
    }
}
