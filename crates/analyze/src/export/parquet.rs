//! Rows for analytic engines (DuckDB, ClickHouse, Spark): a table of
//! samples and a table of the frames of their stacks, as Parquet files.
//!
//! `samples.parquet`: one row per on-CPU or off-CPU sample — capture,
//! host, wall time, pid, tid, process, thread, kind, unit, value, stack id,
//! and the trace and span ids of the request it belongs to.
//! `frames.parquet`: one row per frame of each stack — capture, stack id,
//! depth (0 is the leaf), function, module, frame kind, source file and
//! line, build id, address, inline depth. A stack id is unique within its
//! capture; join on (capture, stack_id). The frames are the ones every other
//! output shows (`top`'s function is the depth-0 frame's). Layout:
//! `docs/user-guide.md`.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, Type as PhysicalType, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use profcap_format::SampleKind;

use super::pprof::for_each_labelled;
use crate::capture::Material;
use crate::profile::ProfileOptions;
use crate::symbolize::{FrameKind, Symbolizer};
use crate::{Error, Result};

const SAMPLES_SCHEMA: &str = "message samples {
    REQUIRED BYTE_ARRAY capture (STRING);
    REQUIRED BYTE_ARRAY host (STRING);
    REQUIRED INT64 time (TIMESTAMP(NANOS,true));
    REQUIRED INT32 pid;
    REQUIRED INT32 tid;
    REQUIRED BYTE_ARRAY process (STRING);
    REQUIRED BYTE_ARRAY thread (STRING);
    REQUIRED BYTE_ARRAY kind (STRING);
    REQUIRED BYTE_ARRAY unit (STRING);
    REQUIRED INT64 value;
    REQUIRED INT64 stack_id;
    OPTIONAL BYTE_ARRAY trace_id (STRING);
    OPTIONAL BYTE_ARRAY span_id (STRING);
}";

const FRAMES_SCHEMA: &str = "message frames {
    REQUIRED BYTE_ARRAY capture (STRING);
    REQUIRED INT64 stack_id;
    REQUIRED INT32 depth;
    REQUIRED BYTE_ARRAY function (STRING);
    REQUIRED BYTE_ARRAY module (STRING);
    REQUIRED BYTE_ARRAY frame_kind (STRING);
    OPTIONAL BYTE_ARRAY file (STRING);
    OPTIONAL INT32 line;
    OPTIONAL BYTE_ARRAY build_id (STRING);
    OPTIONAL INT64 address (INTEGER(64,false));
    REQUIRED INT32 inline_depth;
}";

/// One column's values, in schema order; `None` entries are nulls.
#[derive(Debug)]
enum Column {
    Str(Vec<Option<Arc<str>>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
}

/// The rows of one table of one capture, column by column.
#[derive(Debug)]
pub struct Rows {
    columns: Vec<Column>,
    len: usize,
}

impl Rows {
    /// Empty columns for `schema`, one per field, of the field's physical type.
    fn new(schema: &str) -> Result<Rows> {
        let schema = parse_message_type(schema).map_err(parquet_error)?;
        let columns = schema
            .get_fields()
            .iter()
            .map(|f| match f.get_physical_type() {
                PhysicalType::BYTE_ARRAY => Column::Str(Vec::new()),
                PhysicalType::INT32 => Column::I32(Vec::new()),
                _ => Column::I64(Vec::new()),
            })
            .collect();
        Ok(Rows { columns, len: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A value of a row, in schema order.
enum V {
    S(Option<Arc<str>>),
    I(Option<i32>),
    L(Option<i64>),
}

impl Rows {
    fn push(&mut self, row: Vec<V>) {
        for (c, v) in self.columns.iter_mut().zip(row) {
            match (c, v) {
                (Column::Str(c), V::S(v)) => c.push(v),
                (Column::I32(c), V::I(v)) => c.push(v),
                (Column::I64(c), V::L(v)) => c.push(v),
                _ => debug_assert!(false, "row does not match the schema"),
            }
        }
        self.len += 1;
    }
}

/// Both tables of one capture.
#[derive(Debug)]
pub struct CaptureRows {
    pub samples: Rows,
    pub frames: Rows,
}

fn s(v: &str) -> V {
    V::S(Some(Arc::from(v)))
}

fn frame_kind(k: FrameKind) -> &'static str {
    match k {
        FrameKind::User => "native",
        FrameKind::Inlined => "inlined",
        FrameKind::Kernel => "kernel",
        FrameKind::Jit => "jit",
        FrameKind::Python => "python",
    }
}

/// The rows of a capture: its on-CPU and off-CPU samples (the one kind of
/// `--kind` where given) that `opts` selects, and their stacks' frames.
/// `capture` names the capture in both tables.
pub fn capture_rows(m: &Material, opts: &ProfileOptions, capture: &str) -> Result<CaptureRows> {
    let kinds = match opts.filter.kind {
        Some(k @ (SampleKind::Cpu | SampleKind::OffCpu)) if !opts.filter.wall => vec![k],
        None if !opts.filter.wall => vec![SampleKind::Cpu, SampleKind::OffCpu],
        k => {
            return Err(Error::Unsupported(format!(
                "parquet: --kind {} is not exported yet (on-CPU and off-CPU are)",
                if opts.filter.wall { "wall" } else { k.map_or("?", |k| k.name()) }
            )))
        }
    };
    let mut samples = Rows::new(SAMPLES_SCHEMA)?;
    let mut frames = Rows::new(FRAMES_SCHEMA)?;
    let capture: Arc<str> = Arc::from(capture);
    let host: Arc<str> = Arc::from(m.meta.hostname.as_str());
    let mut sym = Symbolizer::new(m, opts.symbolize.clone());
    let kernel = !opts.filter.no_kernel;
    let mut ids: HashMap<(u32, u64, u64), i64> = HashMap::new();
    let wall = |t: u64| m.meta.start_wall_ns.saturating_add(t.saturating_sub(m.meta.start_mono_ns));
    for kind in kinds {
        let mut o = opts.clone();
        o.filter.kind = Some(kind);
        let unit = if kind == SampleKind::Cpu { "samples" } else { "nanoseconds" };
        let (kind_name, unit): (Arc<str>, Arc<str>) = (Arc::from(kind.name()), Arc::from(unit));
        for_each_labelled(m, &o, |k, value, t| {
            let next = i64::try_from(ids.len()).unwrap_or(i64::MAX) + 1;
            let stack_id = *ids.entry((k.pid, k.generation, k.stack_id)).or_insert_with(|| {
                let details = sym.stack_details(k.pid, k.generation, k.stack_id, kernel);
                for (depth, (f, d)) in details.iter().rev().enumerate() {
                    frames.push(vec![
                        V::S(Some(Arc::clone(&capture))),
                        V::L(Some(next)),
                        V::I(Some(i32::try_from(depth).unwrap_or(i32::MAX))),
                        V::S(Some(Arc::clone(&f.name))),
                        V::S(Some(Arc::clone(&f.module))),
                        s(frame_kind(f.kind)),
                        V::S(d.file.clone()),
                        V::I((d.line != 0).then(|| i32::try_from(d.line).unwrap_or(i32::MAX))),
                        V::S(d.build_id.clone()),
                        // Stored as Parquet's unsigned 64-bit integer.
                        V::L(d.address.map(|a| a as i64)),
                        V::I(Some(i32::try_from(d.inline_depth).unwrap_or(i32::MAX))),
                    ]);
                }
                next
            });
            samples.push(vec![
                V::S(Some(Arc::clone(&capture))),
                V::S(Some(Arc::clone(&host))),
                V::L(Some(i64::try_from(wall(t)).unwrap_or(i64::MAX))),
                V::I(Some(k.pid as i32)),
                V::I(Some(k.tid as i32)),
                V::S(Some(Arc::clone(&k.process_name))),
                V::S(Some(Arc::clone(&k.thread_name))),
                V::S(Some(Arc::clone(&kind_name))),
                V::S(Some(Arc::clone(&unit))),
                V::L(Some(value)),
                V::L(Some(stack_id)),
                V::S(k.trace_id.as_deref().map(Arc::from)),
                V::S(k.parent_span_id.as_deref().map(Arc::from)),
            ]);
        })?;
    }
    Ok(CaptureRows { samples, frames })
}

/// Writes `samples.parquet` and `frames.parquet` into a directory, a row
/// group per capture, zstd-compressed.
#[derive(Debug)]
pub struct ParquetWriter {
    samples: SerializedFileWriter<File>,
    frames: SerializedFileWriter<File>,
    /// Rows written: samples, frames.
    pub written: (usize, usize),
}

fn parquet_error(e: parquet::errors::ParquetError) -> Error {
    Error::Output(std::io::Error::other(e))
}

impl ParquetWriter {
    /// Creates `samples.parquet` and `frames.parquet` in `dir` (which must
    /// exist), replacing earlier ones.
    pub fn create(dir: &Path) -> Result<ParquetWriter> {
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(parquet_error)?))
                .set_created_by(format!("profcap {}", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let open = |name: &str, schema: &str| -> Result<SerializedFileWriter<File>> {
            let schema = Arc::new(parse_message_type(schema).map_err(parquet_error)?);
            let file = File::create(dir.join(name)).map_err(Error::Output)?;
            SerializedFileWriter::new(file, schema, Arc::clone(&props)).map_err(parquet_error)
        };
        Ok(ParquetWriter {
            samples: open("samples.parquet", SAMPLES_SCHEMA)?,
            frames: open("frames.parquet", FRAMES_SCHEMA)?,
            written: (0, 0),
        })
    }

    /// Writes one capture's rows (a row group in each table).
    pub fn write(&mut self, rows: &CaptureRows) -> Result<()> {
        row_group(&mut self.samples, &rows.samples).map_err(parquet_error)?;
        row_group(&mut self.frames, &rows.frames).map_err(parquet_error)?;
        self.written.0 += rows.samples.len();
        self.written.1 += rows.frames.len();
        Ok(())
    }

    /// Ends both files (their footers).
    pub fn finish(self) -> Result<()> {
        self.samples.close().map_err(parquet_error)?;
        self.frames.close().map_err(parquet_error)?;
        Ok(())
    }
}

fn row_group(w: &mut SerializedFileWriter<File>, rows: &Rows) -> parquet::errors::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut rg = w.next_row_group()?;
    let mut columns = rows.columns.iter();
    while let Some(mut col) = rg.next_column()? {
        let Some(values) = columns.next() else { break };
        // Definition levels for OPTIONAL columns only (1: present).
        macro_rules! put {
            ($t:ty, $v:expr, $data:expr) => {{
                let w = col.typed::<$t>();
                let def: Option<Vec<i16>> = (w.get_descriptor().max_def_level() > 0)
                    .then(|| $v.iter().map(|x| i16::from(x.is_some())).collect());
                w.write_batch(&$data, def.as_deref(), None)?;
            }};
        }
        match values {
            Column::Str(v) => {
                put!(
                    ByteArrayType,
                    v,
                    v.iter().flatten().map(|x| ByteArray::from(x.as_bytes())).collect::<Vec<_>>()
                )
            }
            Column::I32(v) => put!(Int32Type, v, v.iter().flatten().copied().collect::<Vec<i32>>()),
            Column::I64(v) => put!(Int64Type, v, v.iter().flatten().copied().collect::<Vec<i64>>()),
        }
        col.close()?;
    }
    rg.close()?;
    Ok(())
}
