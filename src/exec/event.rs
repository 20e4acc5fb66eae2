//! The one event stream of a run, and its subscribers (journal writer, progress, reports).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::PollKey;
use super::step::{ErrorClass, StepError};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    /// Every step is done.
    Succeeded,
    /// At least one step failed (its dependents were skipped).
    Failed,
    /// Cancelled (Ctrl-C): in-flight calls finished, nothing new started. Resumable.
    Interrupted,
}

impl std::fmt::Display for RunResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunResult::Succeeded => "succeeded",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything that happens in a run. Durable events are journaled; the rest are for displays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        run_id: String,
        plan: String,
        plan_hash: String,
        steps: usize,
        /// Steps already done by an earlier attempt of this run (resume).
        already_done: usize,
        resumed: bool,
        ts: u64,
    },
    StepStarted {
        step: String,
        kind: String,
        ts: u64,
    },
    /// Written before every mutating call, with the token/tags it will use.
    StepIntent {
        step: String,
        intent: Value,
        ts: u64,
    },
    StepSubmitted {
        step: String,
        poll_key: PollKey,
        id: String,
        ts: u64,
    },
    StepDone {
        step: String,
        outputs: Value,
        ts: u64,
    },
    StepFailed {
        step: String,
        #[serde(flatten)]
        error: StepError,
        ts: u64,
    },
    StepSkipped {
        step: String,
        root: String,
        ts: u64,
    },
    RunFinished {
        result: RunResult,
        done: usize,
        failed: usize,
        skipped: usize,
        not_started: usize,
        ts: u64,
    },
    /// Progress of a long step or a submitted operation. Not journaled by the walker; the
    /// journal keeps one per step now and then (those with a detail), for `ferry status`.
    StepProgress {
        step: String,
        percent: f32,
        /// What the step says of its progress (objects and bytes copied, say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Not journaled: a retry is scheduled.
    StepRetry {
        step: String,
        class: ErrorClass,
        code: String,
        /// What went wrong, as the service said it (never a secret: errors carry none).
        message: String,
        attempt: usize,
        delay_ms: u64,
    },
}

impl Event {
    /// Whether the journal keeps this event.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Event::StepProgress { .. } | Event::StepRetry { .. })
    }
    /// The step this event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step, .. }
            | Event::StepIntent { step, .. }
            | Event::StepSubmitted { step, .. }
            | Event::StepDone { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepProgress { step, .. }
            | Event::StepRetry { step, .. } => Some(step),
            Event::RunStarted { .. } | Event::RunFinished { .. } => None,
        }
    }
    /// The `event` tag of every durable event type, as written in the journal.
    pub const DURABLE_TYPES: &'static [&'static str] = &[
        "run-started",
        "step-started",
        "step-intent",
        "step-submitted",
        "step-done",
        "step-failed",
        "step-skipped",
        "run-finished",
        // Kept now and then by the journal writer (not every one: see `JournalWriter`).
        "step-progress",
    ];
}

pub type SubscriberError = Box<dyn std::error::Error + Send + Sync>;

/// Receives every event in order, on the walker's coordinator. A durable subscriber (the journal)
/// must have made the event durable when it returns: the walker does not go on before that.
/// An error stops the run (a journal that cannot be written must not be outrun).
pub trait Subscriber: Send {
    fn on_event(&mut self, event: &Event) -> Result<(), SubscriberError>;
}

impl<F: FnMut(&Event) -> Result<(), SubscriberError> + Send> Subscriber for F {
    fn on_event(&mut self, event: &Event) -> Result<(), SubscriberError> {
        self(event)
    }
}
