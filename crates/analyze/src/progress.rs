//! A progress bar on standard error for reads that take a while: shown only
//! when stderr is a terminal and the work has gone on for a second
//! (`PROFCAP_PROGRESS_AFTER_MS` sets that delay), cleared when done.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress through `total` bytes of a capture.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    shown: bool,
    started: Instant,
    after: Duration,
}

impl Progress {
    /// A bar for `what` ("reading x.cap") over `total` bytes; nothing is
    /// drawn unless stderr is a terminal.
    pub(crate) fn new(what: &str, total: u64) -> Progress {
        let after = std::env::var("PROFCAP_PROGRESS_AFTER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_millis);
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_owned());
            bar
        });
        Progress { bar, shown: false, started: Instant::now(), after }
    }

    /// `done` bytes are read.
    pub(crate) fn set(&mut self, done: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(done);
        if !self.shown && self.started.elapsed() >= self.after {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
