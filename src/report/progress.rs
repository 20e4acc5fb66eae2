//! The progress display: a subscriber. Bars on a terminal, plain lines otherwise, errors only
//! when quiet.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::{Event, RunResult, Subscriber, SubscriberError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars if stderr is a terminal, plain lines otherwise.
    Auto,
    Bars,
    Plain,
    /// Nothing but failures.
    Quiet,
}

struct Bars {
    _multi: MultiProgress,
    overall: ProgressBar,
    copies: ProgressBar,
}

/// Progress subscriber.
pub struct Progress {
    mode: ProgressMode,
    out: Box<dyn Write + Send>,
    total: usize,
    finished: usize,
    /// Submitted operations in flight and their latest percentage.
    in_flight: HashMap<String, f32>,
    bars: Option<Bars>,
}

impl Progress {
    /// Writes to stderr.
    pub fn new(mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Self::with_writer(mode, Box::new(std::io::stderr()))
    }

    /// Plain or quiet output into any writer (bars always draw on stderr).
    pub fn with_writer(mode: ProgressMode, out: Box<dyn Write + Send>) -> Self {
        Progress {
            mode,
            out,
            total: 0,
            finished: 0,
            in_flight: HashMap::new(),
            bars: None,
        }
    }

    fn line(&mut self, s: &str) -> std::io::Result<()> {
        if let Some(b) = &self.bars {
            b.overall.println(s);
            Ok(())
        } else {
            writeln!(self.out, "{s}")
        }
    }

    fn update_copies(&self) {
        if let Some(b) = &self.bars {
            let n = self.in_flight.len();
            if n == 0 {
                b.copies.set_message("no copies in flight");
            } else {
                let avg = self.in_flight.values().sum::<f32>() / n as f32;
                b.copies
                    .set_message(format!("{n} copies in flight, {avg:.0}% on average"));
            }
        }
    }
}

impl Subscriber for Progress {
    fn on_event(&mut self, ev: &Event) -> Result<(), SubscriberError> {
        let quiet = self.mode == ProgressMode::Quiet;
        match ev {
            Event::RunStarted {
                run_id,
                steps,
                already_done,
                resumed,
                ..
            } => {
                self.total = *steps;
                self.finished = *already_done;
                if self.mode == ProgressMode::Bars {
                    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                    let overall = multi.add(ProgressBar::new(*steps as u64));
                    overall.set_style(
                        ProgressStyle::with_template(
                            "{bar:40} {pos}/{len} steps  {elapsed} (eta {eta})  {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    overall.set_position(*already_done as u64);
                    let copies = multi.add(ProgressBar::new_spinner());
                    copies.enable_steady_tick(Duration::from_millis(200));
                    self.bars = Some(Bars {
                        _multi: multi,
                        overall,
                        copies,
                    });
                    self.update_copies();
                } else if !quiet {
                    let verb = if *resumed { "resuming" } else { "starting" };
                    self.line(&format!(
                        "{verb} run {run_id}: {steps} steps, {already_done} already done"
                    ))?;
                }
            }
            Event::StepSubmitted { step, id, .. } => {
                self.in_flight.insert(step.clone(), 0.0);
                self.update_copies();
                if self.mode == ProgressMode::Plain {
                    self.line(&format!("submitted {step} ({id})"))?;
                }
            }
            Event::StepProgress {
                step,
                percent,
                detail,
            } => {
                if let Some(p) = self.in_flight.get_mut(step) {
                    *p = *percent;
                }
                self.update_copies();
                if let Some(d) = detail {
                    match &self.bars {
                        Some(b) => b.overall.set_message(format!("{step}: {d}")),
                        None if !quiet => self.line(&format!("{step}: {d}"))?,
                        None => {}
                    }
                }
            }
            Event::StepDone { step, .. } => {
                self.finished += 1;
                self.in_flight.remove(step);
                self.update_copies();
                if let Some(b) = &self.bars {
                    b.overall.inc(1);
                } else if self.mode == ProgressMode::Plain {
                    let (n, t) = (self.finished, self.total);
                    self.line(&format!("[{n}/{t}] done {step}"))?;
                }
            }
            Event::StepFailed { step, error, .. } => {
                self.finished += 1;
                self.in_flight.remove(step);
                self.update_copies();
                if let Some(b) = &self.bars {
                    b.overall.inc(1);
                }
                let mut s = format!("failed {step}: {}: {}", error.code, error.message);
                if let Some(r) = &error.request_id {
                    s.push_str(&format!(" (request id {r})"));
                }
                if let Some(h) = &error.hint {
                    s.push_str(&format!("\n  hint: {h}"));
                }
                self.line(&s)?;
            }
            Event::StepSkipped { step, root, .. } => {
                self.finished += 1;
                if let Some(b) = &self.bars {
                    b.overall.inc(1);
                } else if self.mode == ProgressMode::Plain {
                    self.line(&format!("skipped {step}: {root} failed"))?;
                }
            }
            Event::StepRetry {
                step,
                class,
                code,
                message,
                attempt,
                delay_ms,
            } => {
                if self.mode == ProgressMode::Plain {
                    self.line(&format!(
                        "retrying {step} in {delay_ms} ms ({class}: {code}, attempt {attempt}): {message}"
                    ))?;
                }
            }
            Event::RunFinished {
                result,
                done,
                failed,
                skipped,
                not_started,
                ..
            } => {
                if let Some(b) = self.bars.take() {
                    b.copies.finish_and_clear();
                    b.overall.finish();
                }
                let summary = format!(
                    "run {result}: {done} done, {failed} failed, {skipped} skipped, {not_started} not started"
                );
                if !quiet || *result != RunResult::Succeeded {
                    self.line(&summary)?;
                }
                if *result == RunResult::Interrupted && !quiet {
                    self.line("interrupted: `ferry resume` goes on from here")?;
                }
            }
            Event::StepStarted { .. } | Event::StepIntent { .. } => {}
        }
        Ok(())
    }
}
