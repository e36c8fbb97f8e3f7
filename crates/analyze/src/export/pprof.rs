//! Gzipped profile.proto, as `go tool pprof` reads it.
//!
//! The messages are declared here with prost derives (field numbers from
//! github.com/google/pprof/proto/profile.proto), which saves a protoc step.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use profcap_format::SampleKind;
use prost::Message;

use crate::profile::Profile;
use crate::symbolize::Frame;
use crate::{Error, Result};

#[derive(Clone, PartialEq, Message)]
struct PbProfile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<PbValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<PbSample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<PbMapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<PbLocation>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<PbFunction>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<PbValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
}

#[derive(Clone, PartialEq, Message)]
struct PbValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct PbSample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct PbMapping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "5")]
    filename: i64,
    #[prost(bool, tag = "7")]
    has_functions: bool,
}

#[derive(Clone, PartialEq, Message)]
struct PbLocation {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<PbLine>,
}

#[derive(Clone, PartialEq, Message)]
struct PbLine {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

#[derive(Clone, PartialEq, Message)]
struct PbFunction {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
}

#[derive(Default)]
struct Builder {
    p: PbProfile,
    strings: HashMap<String, i64>,
    functions: HashMap<String, u64>,
    mappings: HashMap<String, u64>,
    locations: HashMap<Frame, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn value_type(&mut self, t: &str, unit: &str) -> PbValueType {
        PbValueType { r#type: self.string(t), unit: self.string(unit) }
    }

    fn location(&mut self, f: &Frame) -> u64 {
        if let Some(&id) = self.locations.get(f) {
            return id;
        }
        let fid = match self.functions.get(&*f.name) {
            Some(&id) => id,
            None => {
                let id = self.p.function.len() as u64 + 1;
                let name = self.string(&super::frame_label(f));
                self.p.function.push(PbFunction { id, name, system_name: name });
                self.functions.insert(f.name.to_string(), id);
                id
            }
        };
        let mid = match self.mappings.get(&*f.module) {
            Some(&id) => id,
            None => {
                let id = self.p.mapping.len() as u64 + 1;
                let filename = self.string(&f.module);
                self.p.mapping.push(PbMapping { id, filename, has_functions: true });
                self.mappings.insert(f.module.to_string(), id);
                id
            }
        };
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(PbLocation { id, mapping_id: mid, line: vec![PbLine { function_id: fid }] });
        self.locations.insert(f.clone(), id);
        id
    }
}

/// Writes `p` as a gzipped pprof profile.
pub fn write_pprof(p: &Profile, duration_ns: u64, out: impl Write) -> Result<()> {
    let mut b = Builder::default();
    b.string("");
    let ns = p.ns_per_unit();
    let types: Vec<(&str, &str)> = match p.kind {
        SampleKind::Cpu => vec![("samples", "count"), ("cpu", "nanoseconds")],
        SampleKind::OffCpu => vec![("off_cpu", "nanoseconds")],
        SampleKind::Alloc => vec![("alloc_space", "bytes")],
        SampleKind::Inuse => vec![("inuse_space", "bytes")],
        SampleKind::Unknown(_) => vec![("samples", "count")],
    };
    b.p.sample_type = types.iter().map(|(t, u)| b.value_type(t, u)).collect();
    if p.kind == SampleKind::Cpu {
        b.p.period_type = Some(b.value_type("cpu", "nanoseconds"));
        b.p.period = ns.unwrap_or(0.0) as i64;
    }
    b.p.duration_nanos = i64::try_from(duration_ns).unwrap_or(i64::MAX);
    for (frames, v) in &p.stacks {
        let location_id: Vec<u64> = frames.iter().rev().map(|f| b.location(f)).collect();
        let value = match p.kind {
            SampleKind::Cpu => vec![*v, (*v as f64 * ns.unwrap_or(0.0)) as i64],
            _ => vec![*v],
        };
        b.p.sample.push(PbSample { location_id, value });
    }
    let mut gz = GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&b.p.encode_to_vec()).map_err(Error::Output)?;
    gz.finish().map_err(Error::Output)?;
    Ok(())
}
