//! Output formats, one module each: folded stacks, flame graphs, top tables,
//! pprof, the leak table, the memory timeline and the samples table.

mod flame;
mod folded;
mod leaks;
mod memtimeline;
mod pprof;
mod samples;
mod top;

pub use flame::{flame_graph, FlameOptions};
pub use folded::{folded_lines, frame_label, write_folded};
pub use leaks::write_leaks;
pub use memtimeline::timeline_svg;
pub use pprof::write_pprof;
pub use samples::write_samples;
pub use top::{top_table, write_top, TopBy, TopRow};
