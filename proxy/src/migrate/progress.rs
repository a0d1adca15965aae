//! Progress bars (on a terminal only) for the batch loop.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Op;

/// One table's progress bar: rows done / estimated total, rate and ETA. Hidden when stdout is
/// not a terminal (scripts and tests get the one-line summary only).
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(table: &str, op: Op, est_rows: u64, report: bool) -> Progress {
        let bar = ProgressBar::new(est_rows.max(1));
        if report && std::io::stdout().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  ETA {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(format!("{op} {table}"));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress { bar }
    }

    pub fn advance(&self, rows: u64) {
        // The total is an estimate (reltuples); grow it rather than overflow the bar.
        let pos = self.bar.position() + rows;
        if let Some(len) = self.bar.length() {
            if pos > len {
                self.bar.set_length(pos);
            }
        }
        self.bar.set_position(pos);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
