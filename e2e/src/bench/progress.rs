//! The progress bar of a benchmark run (indicatif): one bar over every
//! planned measurement and a message naming the current step. Hidden when
//! stderr is not a terminal; the steps are then printed as lines.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress over all sections of a run.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `steps` measurements.
    pub fn new(steps: u64) -> Self {
        let bar = ProgressBar::new(steps);
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self { bar }
    }

    /// Names what is running now.
    pub fn phase(&self, message: impl Into<String>) {
        let message = message.into();
        self.bar.set_message(message.clone());
        if self.bar.is_hidden() {
            eprintln!("bench: {message}");
        }
    }

    /// One measurement done.
    pub fn step(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
