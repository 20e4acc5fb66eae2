//! The Step contract: what the walker needs from a step, and nothing about AWS.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{BucketKey, GateKey, PollKey};
use super::limits::Limits;

/// What a caller's steps exchange through the walker: the walker moves these values around,
/// journals the outputs (as JSON) and never looks inside.
pub trait Context: Send + Sync + 'static {
    /// What a done step hands to its dependents (and, serialized, to the journal).
    type Output: Clone + std::fmt::Debug + Send + Sync + Serialize + 'static;
    /// What `observe` found to do, handed to `apply` unchanged.
    type Change: std::fmt::Debug + Send + Sync + 'static;
    /// The slots `gate` has as things stand, where they are learned while the run goes (how
    /// many copies a region pair keeps busy). The walker gives at most the fewer of these and
    /// the configured slots; `None`: the configured ones.
    fn gate_slots(&self, _gate: &GateKey) -> Option<usize> {
        None
    }
}

/// What a step found when it looked (read-only).
#[derive(Debug, Clone)]
pub enum Observation<O, Ch> {
    /// Nothing to do; these are the step's outputs.
    Done(O),
    /// Work to do; the change is handed to `apply` unchanged.
    Todo(Ch),
    /// The step's own earlier (or concurrent) submission is still running: poll it.
    InProgress(Submitted),
}

/// An asynchronous operation the step started, to be completed by the poller of `poll_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// Names the batch this id is polled in, e.g. `ec2.snapshot/prod/eu-west-2`.
    pub poll_key: PollKey,
    /// The id of the resource being created, e.g. the new snapshot id.
    pub id: String,
}

/// What `apply` achieved.
#[derive(Debug, Clone)]
pub enum Applied<O> {
    Done(O),
    Submitted(Submitted),
}

/// A poller's answer for one id.
#[derive(Debug, Clone)]
pub enum PollAnswer<O> {
    Pending {
        percent: Option<f32>,
        /// What the operation says of its progress (tasks done of total, say).
        detail: Option<String>,
        /// When the operation expects to finish, from now, if it can tell (a job that knows
        /// its own rate). Without one, the finish is predicted from `percent`, linearly from
        /// when polling began.
        eta: Option<std::time::Duration>,
    },
    Done(O),
    Failed(StepError),
}

/// How the walker reacts to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Retry later and slow the step's token buckets down.
    Throttled,
    /// Retry with backoff.
    Transient,
    /// Retry with backoff for longer (IAM/KMS propagation, NotFound right after create).
    NotYetConsistent,
    /// A quota on things in flight (e.g. 20 snapshot copies): wait and retry, never fail.
    QuotaExceeded,
    /// Fail the step at once.
    Permanent,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::NotYetConsistent => "not-yet-consistent",
            ErrorClass::QuotaExceeded => "quota-exceeded",
            ErrorClass::Permanent => "permanent",
        })
    }
}

/// An error from a step, already classified by the step (which knows the AWS codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{class}: {code}: {message}")]
pub struct StepError {
    pub class: ErrorClass,
    /// The service's error code, e.g. `AccessDenied`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What the user can do about it (e.g. which principal lacked which action on which resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl StepError {
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        StepError {
            class,
            code: code.into(),
            message: message.into(),
            request_id: None,
            hint: None,
        }
    }
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, code, message)
    }
    /// AccessDenied with the hint users need: who lacked which action on what.
    pub fn access_denied(
        principal: &str,
        action: &str,
        resource: &str,
        message: impl Into<String>,
    ) -> Self {
        Self::permanent("AccessDenied", message).with_hint(format!(
            "{principal} is not allowed to {action} on {resource}; allow it in the principal's IAM policy \
             (and in the key policy, for a KMS key)"
        ))
    }
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What a step gets when it runs: the caller's context, its dependencies' outputs and the limiter.
pub struct StepCx<'a, C: Context> {
    pub(crate) ctx: &'a Arc<C>,
    pub(crate) limits: &'a Arc<Limits>,
    pub(crate) inputs: &'a [(Arc<str>, Arc<C::Output>)],
    /// Where `progress` goes: the walker, which emits it as an event (none in a dry run).
    pub(crate) notes: Option<&'a Notes>,
    pub(crate) step: Option<u32>,
}

/// Progress a running step reports: (step index, percent, what it says).
pub(crate) type Notes = tokio::sync::mpsc::UnboundedSender<(u32, f32, String)>;

impl<'a, C: Context> StepCx<'a, C> {
    /// The caller's context (clients, settings). The walker never looks inside it.
    pub fn ctx(&self) -> &'a Arc<C> {
        self.ctx
    }
    /// Output of the dependency with this step id, if it is a dependency.
    pub fn input(&self, dep_id: &str) -> Option<&'a C::Output> {
        self.inputs
            .iter()
            .find(|(id, _)| &**id == dep_id)
            .map(|(_, v)| &**v)
    }
    /// All dependencies' outputs, in the order the dependencies were added.
    pub fn inputs(&self) -> impl Iterator<Item = (&'a str, &'a C::Output)> + 'a {
        self.inputs.iter().map(|(id, v)| (&**id, &**v))
    }
    /// The shared limiter, to draw tokens for calls the walker does not make for you
    /// (e.g. describe calls inside `observe`).
    pub fn limits(&self) -> &'a Arc<Limits> {
        self.limits
    }
    /// Reports how far a long `apply` has come; it reaches every subscriber as a
    /// `StepProgress` event (library code never prints).
    pub fn progress(&self, percent: f32, detail: String) {
        if let Some((n, i)) = self.notes.zip(self.step) {
            let _ = n.send((i, percent, detail));
        }
    }
}

/// One node of the graph. Implementations hold all service semantics; the walker holds none.
#[async_trait]
pub trait Step<C: Context>: Send + Sync + 'static {
    /// Stable across runs: `<owner>/<resource>/<action>`.
    fn id(&self) -> &str;
    /// e.g. `ec2.copy-snapshot`.
    fn kind(&self) -> &str;
    /// Token buckets `apply` draws one token from each (e.g. `prod/us-east-1/ec2:CopySnapshot`).
    /// The walker takes them before `apply`, without holding a concurrency slot while it waits.
    fn buckets(&self) -> &[BucketKey] {
        &[]
    }
    /// Concurrency gate held from before `apply` until the submitted operation has finished
    /// (e.g. `snapshot-copies/prod/eu-west-2`).
    fn gate(&self) -> Option<&GateKey> {
        None
    }
    /// A narrower limit within `gate` (copies per region pair within copies per region),
    /// taken before it and held as long. Asked each time the step wants its slots: a step
    /// may go without it as things stand (a copy that should end within a few polls).
    fn inner_gate(&self, _ctx: &C) -> Option<&GateKey> {
        None
    }
    /// Among steps waiting for the slots of one gate, the highest goes first, and equal ones
    /// in the order they came (for copies: the bytes left in the copy's chain, so the longest
    /// chain is never the one started last).
    fn priority(&self) -> u64 {
        0
    }
    /// How long the operation `apply` submits should take at most, if the step knows (a copy
    /// asked to complete within a duration): it is polled then at the latest.
    fn expected_duration(&self) -> Option<std::time::Duration> {
        None
    }
    /// Read-only: is the work already done?
    ///
    /// `observe` and `apply` are first polled on the walker's coordinator (a call that finishes
    /// at once costs no task); they must not block the thread before their first `.await`.
    async fn observe(
        &self,
        cx: &StepCx<'_, C>,
    ) -> Result<Observation<C::Output, C::Change>, StepError>;
    /// What `apply` will use to make itself findable or repeatable (client token, tags).
    /// Journaled before `apply` is called. Must not contain secrets.
    fn intent(&self, _change: &C::Change) -> Value {
        Value::Null
    }
    /// Mutate. Called only after `observe` said `Todo`; must be safe to repeat.
    async fn apply(
        &self,
        cx: &StepCx<'_, C>,
        change: C::Change,
    ) -> Result<Applied<C::Output>, StepError>;
}

/// Answers, for one poll key, about all pending ids of that key at once (one batched call).
#[async_trait]
pub trait Poller<C: Context>: Send + Sync + 'static {
    /// Must answer for every id; ids left out stay pending.
    async fn poll(
        &self,
        ctx: &Arc<C>,
        limits: &Arc<Limits>,
        poll_key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<C::Output>)>, StepError>;
}
