//! Output formats, one module each: folded stacks, flame graphs, top tables,
//! pprof, OTLP profiles, Parquet rows, speedscope, the leak table, the memory timeline, the samples and requests tables and
//! the `info` summary. (The diff table and graph stay in `diff/`, which builds on these.)

mod firefox;
mod flame;
mod folded;
mod heatmap;
mod info_text;
mod leaks;
mod memtimeline;
mod otlp;
mod parquet;
mod pprof;
mod requests_table;
mod samples;
mod speedscope;
mod timeline;
mod top;

pub use self::parquet::{capture_rows, CaptureRows, ParquetWriter};
pub use firefox::firefox_profile;
pub use flame::{flame_graph, FlameOptions};
pub use folded::{folded_lines, frame_label, write_folded};
pub use heatmap::{heatmap_svg, HeatmapOptions};
pub use info_text::write_info;
pub use leaks::{write_leaks, write_leaks_json};
pub use memtimeline::timeline_svg;
pub use otlp::{write_otlp, OtlpBuilder, OTLP_PROTO_VERSION};
pub use pprof::{
    for_each_labelled, labelled_groups, write_pprof, write_pprof_labelled, LabelledKey, PprofTimes,
};
pub use requests_table::write_requests;
pub use samples::{write_samples, write_samples_json};
pub use speedscope::{speedscope_json, write_speedscope};
pub use timeline::{timeline_strips_svg, MAX_THREADS};
pub use top::{top_table, write_top, write_top_json, TopBy, TopRow};

/// Text made safe inside the SVG exports' elements and attribute values.
pub(crate) fn xml_escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
