//! Progress bars (indicatif) with rate and ETA. Hidden when stderr is not a terminal, so logs
//! and tests get plain lines instead of redraw escapes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(&format!(
        "{what} {{bar:30.cyan/blue}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}, {{per_sec}}] {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

/// Prints a line above the bar (or plainly when there is none).
pub fn println(pb: &ProgressBar, line: &str) {
    if pb.is_hidden() {
        errln!("{line}");
    } else {
        pb.println(line);
    }
}
