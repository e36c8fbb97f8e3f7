//! The requests table (`profanalyze requests`), one line per request.

use std::io::Write;

use crate::requests::RequestStats;
use crate::units::format_ns;

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The request table, one line per request.
pub fn write_requests(rows: &[RequestStats], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6}  {:<32}  {:<6} {:<28} {:>6} {:>10} {:>10} {:>10}  {:>7}  TOP FUNCTION",
        "ID", "TRACE ID", "METHOD", "PATH", "STATUS", "LATENCY", "ON-CPU", "OFF-CPU", "TID"
    )?;
    for r in rows {
        let top = match &r.top_function {
            Some(f) => format!("{} ({:.0}%)", f, r.top_function_share * 100.0),
            None => "-".into(),
        };
        writeln!(
            out,
            "{:>6}  {:<32}  {:<6} {:<28} {:>6} {:>10} {:>10} {:>10}  {:>7}  {}",
            r.id,
            cut(r.trace_id.as_deref().unwrap_or("-"), 32),
            cut(&r.method, 6),
            cut(&r.target, 28),
            r.status.map_or("-".into(), |s| s.to_string()),
            format_ns(r.latency_ns as f64),
            format_ns(r.on_cpu_ns as f64),
            format_ns(r.off_cpu_ns as f64),
            r.tids.first().copied().unwrap_or(0),
            top
        )?;
    }
    Ok(())
}
