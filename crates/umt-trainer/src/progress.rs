//! Progress reporting: one indicatif bar with ETA per stage when stderr is a terminal, plain
//! log lines otherwise (CI logs, redirected output), nothing at all when disabled (tests).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bars on a terminal, log lines otherwise.
    Auto,
    /// Nothing.
    Quiet,
}

impl Progress {
    /// A bar of `total` steps for `stage` (hidden unless stderr is a terminal; in `Auto` mode a
    /// log line announces the stage either way).
    pub fn bar(&self, stage: &str, total: u64) -> ProgressBar {
        match self {
            Progress::Quiet => ProgressBar::hidden(),
            Progress::Auto => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                if std::io::stderr().is_terminal() {
                    let style = ProgressStyle::with_template(
                        "{prefix:>32} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style.progress_chars("=> "));
                    bar.set_prefix(stage.to_string());
                } else {
                    bar.set_draw_target(ProgressDrawTarget::hidden());
                    eprintln!("[umt] {stage}: {total} steps");
                }
                bar
            }
        }
    }

    /// A log line (printed in `Auto` mode).
    pub fn log(&self, line: &str) {
        if *self == Progress::Auto {
            eprintln!("[umt] {line}");
        }
    }
}
