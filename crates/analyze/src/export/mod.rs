//! Output formats: folded stacks, flame graphs, top tables, pprof.

mod flame;
mod folded;
mod pprof;
mod top;

pub use flame::{flame_graph, FlameOptions};
pub use folded::{folded_lines, frame_label, write_folded};
pub use pprof::write_pprof;
pub use top::{top_table, write_top, TopBy, TopRow};
