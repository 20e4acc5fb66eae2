//! `ferry apply --output json`: one JSON object per line on stdout, for CI systems and
//! dashboards. The shape is a contract (docs/events.md, docs/events.schema.json, generated
//! from these types and checked by a test): fields are only ever added.

use std::io::Write;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::exec::{Event, RunResult, Subscriber, SubscriberError};

/// The version of the event lines' shape; a `plan` and a `run-started` line carry it.
pub const EVENTS_VERSION: u32 = 1;

/// One line of `ferry apply --output json`, told apart by `type`.
#[derive(Debug, Serialize, JsonSchema)]
// Strict in the schema: a field the documentation does not name fails the schema test.
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EventLine {
    /// The plan as observed before anything changes (the document of `ferry plan --output json`).
    Plan {
        format_version: u32,
        plan: String,
        document: Value,
    },
    RunStarted {
        format_version: u32,
        run_id: String,
        plan: String,
        /// Steps in the run.
        steps: usize,
        /// Steps an earlier attempt of this run finished (`ferry resume`).
        already_done: usize,
        resumed: bool,
        /// Milliseconds since the Unix epoch.
        ts: u64,
    },
    StepStarted {
        step: String,
        /// e.g. `ec2.copy-snapshot`.
        kind: String,
        ts: u64,
    },
    /// An asynchronous operation was submitted (a snapshot copy, say); it is followed until it ends.
    StepSubmitted {
        step: String,
        /// What AWS calls it (the new snapshot's id, say).
        operation_id: String,
        ts: u64,
    },
    StepProgress {
        step: String,
        percent: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A call failed in a way that is retried (throttled, say).
    StepRetry {
        step: String,
        code: String,
        message: String,
        attempt: usize,
        delay_ms: u64,
    },
    StepDone {
        step: String,
        /// What the step made or found (ids, ARNs): what `ferry status` shows.
        outputs: Value,
        ts: u64,
    },
    StepFailed {
        step: String,
        code: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        ts: u64,
    },
    /// Not run because a step it depends on failed.
    StepSkipped {
        step: String,
        because_of: String,
        ts: u64,
    },
    /// The last line of every run.
    Summary {
        /// Absent when nothing had to change (no run was started).
        #[serde(skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        result: Outcome,
        done: usize,
        failed: usize,
        skipped: usize,
        not_started: usize,
        /// The command that continues the run, when it did not succeed.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
        ts: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
    /// The plan had no changes: nothing ran.
    NoChanges,
}

impl EventLine {
    /// The line of a run event; `None` for those that are not shown (intents).
    fn of(ev: &Event, run_id: &str) -> Option<EventLine> {
        Some(match ev {
            Event::RunStarted {
                run_id,
                plan,
                steps,
                already_done,
                resumed,
                ts,
                ..
            } => EventLine::RunStarted {
                format_version: EVENTS_VERSION,
                run_id: run_id.clone(),
                plan: plan.clone(),
                steps: *steps,
                already_done: *already_done,
                resumed: *resumed,
                ts: *ts,
            },
            Event::StepStarted { step, kind, ts } => EventLine::StepStarted {
                step: step.clone(),
                kind: kind.clone(),
                ts: *ts,
            },
            Event::StepIntent { .. } => return None,
            Event::StepSubmitted { step, id, ts, .. } => EventLine::StepSubmitted {
                step: step.clone(),
                operation_id: id.clone(),
                ts: *ts,
            },
            Event::StepProgress {
                step,
                percent,
                detail,
            } => EventLine::StepProgress {
                step: step.clone(),
                percent: *percent,
                detail: detail.clone(),
            },
            Event::StepRetry {
                step,
                code,
                message,
                attempt,
                delay_ms,
                ..
            } => EventLine::StepRetry {
                step: step.clone(),
                code: code.clone(),
                message: message.clone(),
                attempt: *attempt,
                delay_ms: *delay_ms,
            },
            Event::StepDone { step, outputs, ts } => EventLine::StepDone {
                step: step.clone(),
                outputs: outputs.clone(),
                ts: *ts,
            },
            Event::StepFailed { step, error, ts } => EventLine::StepFailed {
                step: step.clone(),
                code: error.code.clone(),
                message: error.message.clone(),
                hint: error.hint.clone(),
                ts: *ts,
            },
            Event::StepSkipped { step, root, ts } => EventLine::StepSkipped {
                step: step.clone(),
                because_of: root.clone(),
                ts: *ts,
            },
            Event::RunFinished {
                result,
                done,
                failed,
                skipped,
                not_started,
                ts,
            } => EventLine::Summary {
                run_id: Some(run_id.to_string()),
                result: match result {
                    RunResult::Succeeded => Outcome::Succeeded,
                    RunResult::Failed => Outcome::Failed,
                    RunResult::Interrupted => Outcome::Interrupted,
                },
                done: *done,
                failed: *failed,
                skipped: *skipped,
                not_started: *not_started,
                resume: (*result != RunResult::Succeeded).then(|| format!("ferry resume {run_id}")),
                ts: *ts,
            },
        })
    }

    /// The line: one JSON object, no newline inside.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
}

/// The JSON Schema of one line (docs/events.schema.json).
pub fn events_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(EventLine)).expect("a schema is JSON")
}

/// The subscriber that writes a line per event, flushed at once (a reader follows the run).
pub struct JsonEvents {
    out: Box<dyn Write + Send>,
    run_id: String,
}

impl JsonEvents {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        JsonEvents {
            out,
            run_id: String::new(),
        }
    }
}

impl Subscriber for JsonEvents {
    fn on_event(&mut self, ev: &Event) -> Result<(), SubscriberError> {
        if let Event::RunStarted { run_id, .. } = ev {
            self.run_id = run_id.clone();
        }
        if let Some(line) = EventLine::of(ev, &self.run_id) {
            writeln!(self.out, "{}", line.to_line())?;
            self.out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema in docs/ is what these types produce: the documented contract cannot drift
    /// from the code (regenerate with `FERRY_WRITE_SCHEMA=1 cargo test events_schema`).
    #[test]
    fn the_documented_events_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.schema.json");
        let want = serde_json::to_string_pretty(&events_schema()).unwrap() + "\n";
        if std::env::var_os("FERRY_WRITE_SCHEMA").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/events.schema.json is not what the event types produce; regenerate it"
        );
    }

    #[test]
    fn a_failed_run_ends_with_a_summary_that_says_how_to_resume() {
        let ev = Event::RunFinished {
            result: RunResult::Failed,
            done: 3,
            failed: 1,
            skipped: 2,
            not_started: 0,
            ts: 7,
        };
        let line = EventLine::of(&ev, "R1").unwrap().to_line();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["result"], "failed");
        assert_eq!(v["resume"], "ferry resume R1");
        assert!(!line.contains('\n'));
    }
}
