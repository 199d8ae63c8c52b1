//! What the user watches: indicatif bars (with rate and time left) when stderr is a
//! terminal, plain log lines every tenth of a phase otherwise. Log lines go through a
//! logger that hides the bars while it writes, so the two never garble each other.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// Installs the logger (`level`, refined by RUST_LOG) and returns the bar holder.
pub fn init(level: log::LevelFilter) -> Progress {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(level)
        .format_target(false)
        .format_timestamp_secs();
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let inner = builder.build();
    let max = inner.filter();
    let interactive = std::io::stderr().is_terminal();
    let multi = interactive.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let logger = BarAwareLogger {
        inner,
        multi: multi.clone(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    Progress { multi }
}

struct BarAwareLogger {
    inner: env_logger::Logger,
    multi: Option<MultiProgress>,
}

impl log::Log for BarAwareLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }
    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        match &self.multi {
            Some(m) => m.suspend(|| self.inner.log(record)),
            None => self.inner.log(record),
        }
    }
    fn flush(&self) {
        self.inner.flush()
    }
}

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// A phase of `total` items (`unit`: "games", "steps").
    pub fn phase(&self, label: &str, total: u64, unit: &'static str) -> Phase {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix:>10}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{rate}} ETA {{eta}} {{msg}}"
                ))
                .expect("static progress template")
                .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.2}/s", state.per_sec());
                })
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Phase {
            bar,
            label: label.to_string(),
            unit,
            total,
            done: 0,
            start: Instant::now(),
            next_log: 1,
        }
    }
}

pub struct Phase {
    bar: Option<ProgressBar>,
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    next_log: u64,
}

impl Phase {
    /// One more item done; `msg` is shown beside the bar or in the log line.
    pub fn advance(&mut self, msg: impl FnOnce() -> String) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(msg());
                bar.inc(1);
            }
            None => {
                // Roughly ten lines per phase, plus the last item.
                if self.done >= self.next_log || self.done == self.total {
                    let secs = self.start.elapsed().as_secs_f64();
                    let rate = self.done as f64 / secs.max(1e-9);
                    let left = (self.total.saturating_sub(self.done)) as f64 / rate.max(1e-9);
                    log::info!(
                        "{} {}/{} {} ({:.2} {}/s, {:.0}s left) {}",
                        self.label,
                        self.done,
                        self.total,
                        self.unit,
                        rate,
                        self.unit,
                        left,
                        msg()
                    );
                    self.next_log = self.done + (self.total / 10).max(1);
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The pipeline stages' progress drawn as bars (or log lines without a terminal).
pub struct Bars<'a> {
    progress: &'a Progress,
    phase: Option<Phase>,
}

impl Progress {
    pub fn observer(&self) -> Bars<'_> {
        Bars {
            progress: self,
            phase: None,
        }
    }
}

impl ember_engine::pipeline::Observer for Bars<'_> {
    fn start(&mut self, phase: &'static str, total: u64, unit: &'static str) {
        self.phase = Some(self.progress.phase(phase, total, unit));
    }
    fn advance(&mut self, detail: &dyn Fn() -> String) {
        if let Some(p) = &mut self.phase {
            p.advance(detail);
        }
    }
    fn finish(&mut self) {
        if let Some(p) = self.phase.take() {
            p.finish();
        }
    }
}
