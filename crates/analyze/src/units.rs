//! Units: how times and sizes are written for people, and what one on-CPU
//! sample stands for. Every renderer and table uses these.

/// The time one on-CPU sample stands for at `freq_hz`; `None` if unknown (0).
pub fn sample_period_ns(freq_hz: u32) -> Option<f64> {
    (freq_hz > 0).then(|| 1e9 / f64::from(freq_hz))
}

/// "1.23 s", "45.6 ms", "789 µs".
pub fn format_ns(ns: f64) -> String {
    let a = ns.abs();
    if a >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if a >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if a >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// "12.3 MiB" etc.
pub fn format_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_times_sizes_and_periods() {
        assert_eq!(format_ns(1_234_000_000.0), "1.23 s");
        assert_eq!(format_ns(45_600_000.0), "45.6 ms");
        assert_eq!(format_ns(789_000.0), "789 µs");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(12_900_000), "12.3 MiB");
        assert_eq!(sample_period_ns(0), None);
        assert_eq!(sample_period_ns(1000), Some(1e6));
    }
}
