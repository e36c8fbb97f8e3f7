//! OTLP profiles: OpenTelemetry's profiling signal, still in development
//! (proto [`OTLP_PROTO_VERSION`], package
//! `opentelemetry.proto.profiles.v1development`), as a `ProfilesData`
//! message — what a collector's file receiver or an OTLP exporter carries.
//!
//! One `ResourceProfiles` per process of each capture (resource attributes
//! `host.name`, `process.pid`, `process.executable.name`/`path`), one
//! `Profile` in it, one `Sample` per (thread, request, stack) with the wall
//! time of every sample taken there. A sample joined to a request links to
//! its trace (and to the caller's span the request carried). One dictionary
//! is shared by all: mappings with ranges, file offsets and GNU build ids,
//! a location per address with its inlined functions as several lines.

use std::collections::HashMap;
use std::io::Write;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1::Resource;
use profcap_format::SampleKind;
use prost::Message;

use super::pprof::{for_each_labelled, AddrBuilder, LabelledKey, PbProfile};
use crate::capture::Material;
use crate::profile::ProfileOptions;
use crate::{Error, Result};

/// The OTLP proto release the messages are generated from.
pub const OTLP_PROTO_VERSION: &str = "1.10.0";

/// Attribute keys (OpenTelemetry semantic conventions).
const BUILD_ID: &str = "process.executable.build_id.gnu";
const FRAME_TYPE: &str = "profile.frame.type";
/// A request id that is not a trace id (no link can carry it).
const REQUEST_ID: &str = "profcap.request.id";

/// Builds one `ProfilesData` from one or more captures.
#[derive(Debug, Default)]
pub struct OtlpBuilder {
    dict: Dict,
    resources: Vec<pb::ResourceProfiles>,
}

/// A value of the attribute table, hashable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Value {
    Str(String),
    Int(i64),
}

#[derive(Debug, Default)]
struct Dict {
    d: pb::ProfilesDictionary,
    strings: HashMap<String, i32>,
    attributes: HashMap<(i32, Value), i32>,
    links: HashMap<(Vec<u8>, Vec<u8>), i32>,
    stacks: HashMap<Vec<i32>, i32>,
}

impl Dict {
    fn new() -> Dict {
        let mut d = Dict::default();
        // Index 0 of every table is the zero value ("not set").
        d.string("");
        d.d.mapping_table.push(pb::Mapping::default());
        d.d.location_table.push(pb::Location::default());
        d.d.function_table.push(pb::Function::default());
        d.d.link_table.push(pb::Link::default());
        d.d.attribute_table.push(pb::KeyValueAndUnit::default());
        d.d.stack_table.push(pb::Stack::default());
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = index(self.d.string_table.len());
        self.d.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key = self.string(key);
        if let Some(&i) = self.attributes.get(&(key, value.clone())) {
            return i;
        }
        let i = index(self.d.attribute_table.len());
        self.d.attribute_table.push(pb::KeyValueAndUnit {
            key_strindex: key,
            value: Some(any(&value)),
            unit_strindex: 0,
        });
        self.attributes.insert((key, value), i);
        i
    }

    fn link(&mut self, trace_id: Vec<u8>, span_id: Vec<u8>) -> i32 {
        if let Some(&i) = self.links.get(&(trace_id.clone(), span_id.clone())) {
            return i;
        }
        let i = index(self.d.link_table.len());
        self.d.link_table.push(pb::Link { trace_id: trace_id.clone(), span_id: span_id.clone() });
        self.links.insert((trace_id, span_id), i);
        i
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&i) = self.stacks.get(&locations) {
            return i;
        }
        let i = index(self.d.stack_table.len());
        self.d.stack_table.push(pb::Stack { location_indices: locations.clone() });
        self.stacks.insert(locations, i);
        i
    }

    /// The sample of one (thread, request, stack): its stack, thread
    /// attributes, link, and (time, value) pairs in time order; `counted`
    /// samples (on-CPU) are one each, their values left out.
    fn sample(
        &mut self,
        k: &LabelledKey,
        stack: &[u64],
        locations: &[i32],
        pairs: &[(u64, i64)],
        counted: bool,
    ) -> pb::Sample {
        let location_indices = stack
            .iter()
            .map(|&id| usize::try_from(id).ok().and_then(|i| locations.get(i)).copied().unwrap_or(0))
            .collect::<Vec<i32>>();
        // W3C trace ids are 16 bytes; B3's 64-bit ones are padded on the
        // left, as OpenTelemetry's B3 propagator does. Other request
        // ids (X-Request-ID…) cannot be links: an attribute says them.
        let trace = k
            .trace_id
            .as_deref()
            .and_then(|t| id_bytes(t, 16).or_else(|| id_bytes(t, 8).map(|b| [vec![0; 8], b].concat())));
        let link_index = trace
            .map(|t| {
                let span = k.parent_span_id.as_deref().and_then(|s| id_bytes(s, 8)).unwrap_or_default();
                self.link(t, span)
            })
            .unwrap_or(0);
        let mut attribute_indices = vec![
            self.attribute("thread.id", Value::Int(i64::from(k.tid))),
            self.attribute("thread.name", Value::Str(k.thread_name.to_string())),
        ];
        if let (Some(id), 0) = (&k.trace_id, link_index) {
            attribute_indices.push(self.attribute(REQUEST_ID, Value::Str(id.clone())));
        }
        pb::Sample {
            stack_index: self.stack(location_indices),
            attribute_indices,
            link_index,
            // On-CPU: every timestamp counts one sample; off-CPU: its ns.
            values: if counted { Vec::new() } else { pairs.iter().map(|p| p.1).collect() },
            timestamps_unix_nano: pairs.iter().map(|p| p.0).collect(),
        }
    }

    /// Adds a capture's pprof-shaped tables (ids from 1, string 0 empty);
    /// returns the new index of each location id.
    fn import(&mut self, t: &PbProfile, kernel_mapping: Option<u64>) -> Vec<i32> {
        let s: Vec<i32> = t.string_table.iter().map(|x| self.string(x)).collect();
        let str_of = |i: i64| usize::try_from(i).ok().and_then(|i| s.get(i)).copied().unwrap_or(0);
        let mut mappings = vec![0];
        for m in &t.mapping {
            let mut attribute_indices = Vec::new();
            let build_id = t.string_table.get(usize::try_from(m.build_id).unwrap_or(0)).cloned();
            if let Some(b) = build_id.filter(|b| !b.is_empty()) {
                attribute_indices.push(self.attribute(BUILD_ID, Value::Str(b)));
            }
            mappings.push(index(self.d.mapping_table.len()));
            self.d.mapping_table.push(pb::Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename_strindex: str_of(m.filename),
                attribute_indices,
            });
        }
        let mut functions = vec![0];
        for f in &t.function {
            functions.push(index(self.d.function_table.len()));
            self.d.function_table.push(pb::Function {
                name_strindex: str_of(f.name),
                system_name_strindex: str_of(f.system_name),
                filename_strindex: str_of(f.filename),
                start_line: 0,
            });
        }
        let at = |v: &[i32], id: u64| usize::try_from(id).ok().and_then(|i| v.get(i)).copied().unwrap_or(0);
        let types = [
            self.attribute(FRAME_TYPE, Value::Str("kernel".into())),
            self.attribute(FRAME_TYPE, Value::Str("native".into())),
            self.attribute(FRAME_TYPE, Value::Str("cpython".into())),
        ];
        let mut locations = vec![0];
        for l in &t.location {
            // Python frames have no mapping; `[truncated]` neither, and no line.
            let frame_type = match l.mapping_id {
                0 if l.line.iter().all(|x| x.line == 0) => None,
                0 => Some(types[2]),
                m if Some(m) == kernel_mapping => Some(types[0]),
                _ => Some(types[1]),
            };
            locations.push(index(self.d.location_table.len()));
            self.d.location_table.push(pb::Location {
                mapping_index: at(&mappings, l.mapping_id),
                address: l.address,
                lines: l
                    .line
                    .iter()
                    .map(|x| pb::Line {
                        function_index: at(&functions, x.function_id),
                        line: x.line,
                        column: 0,
                    })
                    .collect(),
                attribute_indices: frame_type.into_iter().collect(),
            });
        }
        locations
    }
}

fn index(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn any(v: &Value) -> AnyValue {
    AnyValue {
        value: Some(match v {
            Value::Str(s) => any_value::Value::StringValue(s.clone()),
            Value::Int(i) => any_value::Value::IntValue(*i),
        }),
    }
}

fn key_value(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(any(&v)), ..KeyValue::default() }
}

/// Bytes of a hex id of `len` bytes, if it is one.
fn id_bytes(hex: &str, len: usize) -> Option<Vec<u8>> {
    if hex.len() != 2 * len || !hex.is_ascii() {
        return None;
    }
    (0..len).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect()
}

/// Every sample of one (thread, request, stack): wall times and values.
type Series = (Vec<u64>, Vec<i64>);

impl OtlpBuilder {
    pub fn new() -> OtlpBuilder {
        OtlpBuilder { dict: Dict::new(), resources: Vec::new() }
    }

    /// Adds the on-CPU or off-CPU samples `opts` selects from a capture.
    pub fn add(&mut self, m: &Material, opts: &ProfileOptions) -> Result<()> {
        let kind = opts.filter.kind.unwrap_or_else(|| crate::profile::default_kind(m));
        if !matches!(kind, SampleKind::Cpu | SampleKind::OffCpu) || opts.filter.wall {
            return Err(Error::Unsupported(format!(
                "otlp: --kind {} is not exported yet (on-CPU and off-CPU are); use pprof for memory and wall",
                if opts.filter.wall { "wall" } else { kind.name() }
            )));
        }
        let wall = |t: u64| m.meta.start_wall_ns.saturating_add(t.saturating_sub(m.meta.start_mono_ns));
        let mut series: HashMap<LabelledKey, Series> = HashMap::new();
        for_each_labelled(m, opts, |key, value, t| {
            let s = series.entry(key).or_default();
            s.0.push(wall(t));
            s.1.push(value);
        })?;
        let mut keys: Vec<LabelledKey> = series.keys().cloned().collect();
        keys.sort_by_key(|k| (k.pid, k.tid, k.stack_id, k.generation, k.trace_id.clone()));

        let mut a = AddrBuilder::new(m, opts);
        let kernel = !opts.filter.no_kernel;
        let stacks: Vec<Vec<u64>> =
            keys.iter().map(|k| a.stack(k.pid, k.generation, k.stack_id, kernel)).collect();
        let locations = self.dict.import(a.tables(), a.kernel_mapping);

        let start = m.meta.start_wall_ns;
        let duration = m.meta.end_mono_ns.saturating_sub(m.meta.start_mono_ns);
        let period_ns = crate::units::sample_period_ns(m.freq()).unwrap_or(0.0) as i64;
        let d = &mut self.dict;
        let (sample_type, period_type) = match kind {
            SampleKind::Cpu => (("samples", "count"), Some(("cpu", "nanoseconds"))),
            _ => (("off_cpu", "nanoseconds"), None),
        };
        let sample_type = Some(pb::ValueType {
            type_strindex: d.string(sample_type.0),
            unit_strindex: d.string(sample_type.1),
        });
        let period_type = period_type
            .map(|(t, u)| pb::ValueType { type_strindex: d.string(t), unit_strindex: d.string(u) });
        let mut by_pid: Vec<(u32, Vec<pb::Sample>)> = Vec::new();
        for (k, stack) in keys.iter().zip(stacks) {
            let Some((mut times, values)) = series.remove(k) else { continue };
            let mut pairs: Vec<(u64, i64)> = times.drain(..).zip(values).collect();
            pairs.sort_unstable();
            let sample = d.sample(k, &stack, &locations, &pairs, kind == SampleKind::Cpu);
            match by_pid.last_mut() {
                Some((pid, v)) if *pid == k.pid => v.push(sample),
                _ => by_pid.push((k.pid, vec![sample])),
            }
        }
        for (pid, samples) in by_pid {
            let profile = pb::Profile {
                sample_type,
                samples,
                time_unix_nano: start,
                duration_nano: duration,
                period_type,
                period: if kind == SampleKind::Cpu { period_ns } else { 0 },
                ..pb::Profile::default()
            };
            self.resources.push(resource_profiles(resource(m, pid), profile));
        }
        Ok(())
    }

    pub fn finish(self) -> pb::ProfilesData {
        pb::ProfilesData { resource_profiles: self.resources, dictionary: Some(self.dict.d) }
    }
}

/// A resource's one profile, from profcap.
fn resource_profiles(resource: Resource, profile: pb::Profile) -> pb::ResourceProfiles {
    pb::ResourceProfiles {
        resource: Some(resource),
        scope_profiles: vec![pb::ScopeProfiles {
            scope: Some(InstrumentationScope {
                name: "profcap".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..InstrumentationScope::default()
            }),
            profiles: vec![profile],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The resource of a process: its host and who it is.
fn resource(m: &Material, pid: u32) -> Resource {
    let mut attributes = vec![key_value("host.name", Value::Str(m.meta.hostname.clone()))];
    attributes.push(key_value("process.pid", Value::Int(i64::from(pid))));
    let process = m.processes.get(&pid).and_then(|ps| ps.iter().rev().find(|p| !p.exe.is_empty()));
    let name = m.process_name(pid);
    attributes.push(key_value("process.executable.name", Value::Str(name)));
    if let Some(p) = process {
        attributes.push(key_value("process.executable.path", Value::Str(p.exe.clone())));
        if !p.cmdline.is_empty() {
            attributes.push(key_value("process.command_line", Value::Str(p.cmdline.join(" "))));
        }
    }
    Resource { attributes, ..Resource::default() }
}

/// Writes `data` as protobuf, or as OTLP/JSON (the protobuf JSON mapping,
/// ids in hex) when `json`.
pub fn write_otlp(data: &pb::ProfilesData, json: bool, mut out: impl Write) -> Result<()> {
    if json {
        serde_json::to_writer(&mut out, data).map_err(|e| Error::Output(e.into()))?;
        out.write_all(b"\n").map_err(Error::Output)
    } else {
        out.write_all(&data.encode_to_vec()).map_err(Error::Output)
    }
}
