//! Output formats, one module each: folded stacks, flame graphs, top tables,
//! pprof, the leak table and the memory timeline.

mod flame;
mod folded;
mod leaks;
mod memtimeline;
mod pprof;
mod top;

pub use flame::{flame_graph, FlameOptions};
pub use folded::{folded_lines, frame_label, write_folded};
pub use leaks::write_leaks;
pub use memtimeline::timeline_svg;
pub use pprof::write_pprof;
pub use top::{top_table, write_top, TopBy, TopRow};
