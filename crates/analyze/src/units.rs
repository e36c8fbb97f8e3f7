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

/// Wall-clock nanoseconds since the Unix epoch as UTC, RFC 3339 to the
/// second ("2026-12-01T11:38:00Z"); `None` for 0 (not recorded).
pub fn format_utc(unix_ns: u64) -> Option<String> {
    if unix_ns == 0 {
        return None;
    }
    let secs = unix_ns / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_match_known_dates() {
        assert_eq!(format_utc(0), None);
        assert_eq!(format_utc(1).as_deref(), Some("1970-01-01T00:00:00Z"));
        // date -u -d @951782400 (a leap day), @1796125080
        assert_eq!(format_utc(951_782_400_000_000_000).as_deref(), Some("2000-02-29T00:00:00Z"));
        assert_eq!(format_utc(1_796_125_080_123_456_789).as_deref(), Some("2026-12-01T11:38:00Z"));
    }

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
