//! Folding a run's events into per-step state: for resume, status and the runs list.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::exec::{Event, PollKey, Resume, RunResult, StepError, Submitted};

/// The last known state of one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StepState {
    NotStarted,
    /// Observing (or retrying); nothing mutating was attempted since.
    Started,
    /// A mutating call was about to be made; its outcome is unknown. Re-observed on resume.
    Intent {
        intent: Value,
    },
    Submitted {
        poll_key: PollKey,
        id: String,
    },
    Done {
        outputs: Value,
    },
    Failed {
        error: StepError,
    },
    Skipped {
        root: String,
    },
}

impl StepState {
    pub fn label(&self) -> &'static str {
        match self {
            StepState::NotStarted => "not started",
            StepState::Started => "started",
            StepState::Intent { .. } => "intent",
            StepState::Submitted { .. } => "submitted",
            StepState::Done { .. } => "done",
            StepState::Failed { .. } => "failed",
            StepState::Skipped { .. } => "skipped",
        }
    }
}

/// A run's events folded.
#[derive(Debug, Clone, Default)]
pub struct RunFold {
    pub run_id: String,
    pub plan: String,
    pub plan_hash: String,
    /// First start, ms since the epoch.
    pub started_ms: Option<u64>,
    /// Attempts (the run and its resumes).
    pub attempts: usize,
    /// Result of the latest attempt, if it finished.
    pub finished: Option<(RunResult, u64)>,
    pub steps: HashMap<String, StepState>,
    /// Step ids in the order first seen.
    pub order: Vec<String>,
    /// The latest progress journaled per step (what the step said of it).
    pub progress: HashMap<String, String>,
}

/// Fold events, oldest first. The latest event about a step wins.
pub fn fold(events: &[Event]) -> RunFold {
    let mut f = RunFold::default();
    for ev in events {
        let state = match ev {
            Event::RunStarted {
                run_id,
                plan,
                plan_hash,
                ts,
                ..
            } => {
                if f.started_ms.is_none() {
                    f.started_ms = Some(*ts);
                    f.run_id = run_id.clone();
                    f.plan = plan.clone();
                }
                f.plan_hash = plan_hash.clone();
                f.attempts += 1;
                f.finished = None;
                continue;
            }
            Event::RunFinished { result, ts, .. } => {
                f.finished = Some((*result, *ts));
                continue;
            }
            Event::StepStarted { .. } => StepState::Started,
            Event::StepIntent { intent, .. } => StepState::Intent {
                intent: intent.clone(),
            },
            Event::StepSubmitted { poll_key, id, .. } => StepState::Submitted {
                poll_key: poll_key.clone(),
                id: id.clone(),
            },
            Event::StepDone { outputs, .. } => StepState::Done {
                outputs: outputs.clone(),
            },
            Event::StepFailed { error, .. } => StepState::Failed {
                error: error.clone(),
            },
            Event::StepSkipped { root, .. } => StepState::Skipped { root: root.clone() },
            Event::StepProgress {
                step,
                detail: Some(d),
                ..
            } => {
                f.progress.insert(step.clone(), d.clone());
                continue;
            }
            Event::StepProgress { .. } | Event::StepRetry { .. } => continue,
        };
        let id = ev.step().unwrap_or_default();
        match f.steps.get_mut(id) {
            Some(s) => *s = state,
            None => {
                f.order.push(id.to_string());
                f.steps.insert(id.to_string(), state);
            }
        }
    }
    f
}

impl RunFold {
    /// What a resumed run takes over: done steps (not observed again) and submitted operations
    /// (polled again). Intent-without-outcome, failed and skipped steps start from observe.
    pub fn resume(&self) -> Resume<Value> {
        let mut r = Resume {
            resumed: true,
            ..Resume::default()
        };
        for (id, s) in &self.steps {
            match s {
                StepState::Done { outputs } => {
                    r.done.insert(id.clone(), outputs.clone());
                }
                StepState::Submitted { poll_key, id: op } => {
                    r.submitted.insert(
                        id.clone(),
                        Submitted {
                            poll_key: poll_key.clone(),
                            id: op.clone(),
                        },
                    );
                }
                _ => {}
            }
        }
        r
    }

    pub fn result(&self) -> Option<RunResult> {
        self.finished.map(|(r, _)| r)
    }

    pub fn summary(&self, run_id: &str) -> RunSummary {
        RunSummary {
            run_id: run_id.to_string(),
            plan: self.plan.clone(),
            started_ms: self.started_ms,
            attempts: self.attempts,
            result: self.result(),
        }
    }

    /// Every step of the run (ids from the graph, in graph order), with its state.
    pub fn status(&self, run_id: &str, step_ids: &[String], torn_tail: bool) -> RunStatus {
        let mut steps: Vec<(String, StepState)> = step_ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    self.steps.get(id).cloned().unwrap_or(StepState::NotStarted),
                )
            })
            .collect();
        // Steps journaled but not in the graph file (should not happen) are still shown.
        let known: std::collections::HashSet<&String> = step_ids.iter().collect();
        for id in &self.order {
            if !known.contains(id) {
                steps.push((id.clone(), self.steps[id].clone()));
            }
        }
        RunStatus {
            summary: self.summary(run_id),
            steps,
            progress: self.progress.clone(),
            torn_tail,
        }
    }
}

/// One line of `ferry runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub plan: String,
    pub started_ms: Option<u64>,
    pub attempts: usize,
    /// `None`: still running, or killed (resumable).
    pub result: Option<RunResult>,
}

/// `ferry status`: a run and every step's state.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub summary: RunSummary,
    pub steps: Vec<(String, StepState)>,
    /// The latest progress journaled per step, for those still going.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub progress: HashMap<String, String>,
    pub torn_tail: bool,
}

fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".into(),
    }
}

fn result_text(r: Option<RunResult>) -> String {
    r.map(|r| r.to_string())
        .unwrap_or_else(|| "unfinished".into())
}

pub fn render_runs(runs: &[RunSummary]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<26} {:<21} {:<12} PLAN", "RUN", "STARTED", "RESULT");
    for r in runs {
        let _ = writeln!(
            s,
            "{:<26} {:<21} {:<12} {}",
            r.run_id,
            time(r.started_ms),
            result_text(r.result),
            r.plan
        );
    }
    s
}

pub fn render_status(st: &RunStatus) -> String {
    let mut s = String::new();
    let sm = &st.summary;
    let _ = writeln!(
        s,
        "run {}  plan {}  started {}  attempts {}  result {}",
        sm.run_id,
        sm.plan,
        time(sm.started_ms),
        sm.attempts,
        result_text(sm.result)
    );
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for (id, state) in &st.steps {
        *counts.entry(state.label()).or_default() += 1;
        let detail = match state {
            StepState::Submitted { id: op, .. } => match st.progress.get(id) {
                Some(p) => format!("  ({op}; last seen: {p})"),
                None => format!("  ({op})"),
            },
            StepState::Started => match st.progress.get(id) {
                Some(p) => format!("  (last seen: {p})"),
                None => String::new(),
            },
            StepState::Failed { error } => {
                let mut d = format!("  {}: {}", error.code, error.message);
                if let Some(r) = &error.request_id {
                    let _ = write!(d, " (request id {r})");
                }
                if let Some(h) = &error.hint {
                    let _ = write!(d, "\n{:14}hint: {h}", "");
                }
                d
            }
            StepState::Skipped { root } => format!("  ({root} failed)"),
            StepState::Intent { .. } => "  (outcome unknown: re-observed on resume)".into(),
            _ => String::new(),
        };
        let _ = writeln!(s, "  {:<12}{id}{detail}", state.label());
    }
    let order = [
        "done",
        "submitted",
        "intent",
        "started",
        "failed",
        "skipped",
        "not started",
    ];
    let parts: Vec<String> = order
        .iter()
        .filter_map(|k| counts.get(k).map(|n| format!("{n} {k}")))
        .collect();
    let _ = writeln!(s, "{}", parts.join(", "));
    if st.torn_tail {
        let _ = writeln!(
            s,
            "(the journal's last line was cut short by a crash and was ignored)"
        );
    }
    s
}

/// A short line diff of two plan texts (what changed, not a patch).
pub fn plan_diff(old: &str, new: &str) -> String {
    const MAX_LINES: usize = 40;
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 16_000_000 {
        return format!(
            "  (plan too large to diff: {} lines before, {} now)",
            a.len(),
            b.len()
        );
    }
    // LCS table, from the end.
    let (n, m) = (a.len(), b.len());
    let mut t = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[at(i, j)] = if a[i] == b[j] {
                t[at(i + 1, j + 1)] + 1
            } else {
                t[at(i + 1, j)].max(t[at(i, j + 1)])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || t[at(i + 1, j)] >= t[at(i, j + 1)]) {
            out.push(format!("  line {:>4} - {}", i + 1, a[i]));
            i += 1;
        } else {
            out.push(format!("  line {:>4} + {}", j + 1, b[j]));
            j += 1;
        }
    }
    let total = out.len();
    out.truncate(MAX_LINES);
    if total > MAX_LINES {
        out.push(format!(
            "  ... and {} more changed lines",
            total - MAX_LINES
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_lines() {
        let d = plan_diff("a: 1\nb: 2\nc: 3\n", "a: 1\nb: 5\nc: 3\nd: 4\n");
        assert_eq!(
            d,
            "  line    2 - b: 2\n  line    2 + b: 5\n  line    4 + d: 4"
        );
    }
}
