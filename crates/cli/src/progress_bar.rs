//! A one-line progress bar on stderr, drawn only when stderr is a terminal (never into a
//! pipe or a log): done/failed/pending, rate and ETA.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW_EVERY: Duration = Duration::from_millis(100);
const WIDTH: usize = 24;

pub(crate) struct ProgressBar {
    enabled: bool,
    started: Instant,
    drawn: Option<Instant>,
}

impl ProgressBar {
    pub(crate) fn new() -> Self {
        Self { enabled: std::io::stderr().is_terminal(), started: Instant::now(), drawn: None }
    }

    /// Redraws (at most every 100 ms, unless `force`): `label [###...] done/total detail, rate, ETA`.
    pub(crate) fn update(&mut self, label: &str, done: usize, total: usize, detail: &str, force: bool) {
        if !self.enabled || (!force && self.drawn.is_some_and(|t| t.elapsed() < REDRAW_EVERY)) {
            return;
        }
        self.drawn = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
        let eta = if done > 0 && done < total {
            format!(", ETA {:.0}s", (total - done) as f64 / rate)
        } else {
            String::new()
        };
        let line = format!(
            "\r\x1b[K{label} [{}{}] {done}/{total} {detail}, {rate:.1}/s{eta}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    /// Clears the bar so what follows starts on a clean line.
    pub(crate) fn finish(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
    }
}
