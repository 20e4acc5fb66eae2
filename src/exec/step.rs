//! The Step contract: what the walker needs from a step, and nothing about AWS.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::Limits;

/// Where a step's calls go: decides which limiters and clients apply. Plain strings on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Scope {
    pub account: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    pub fn new(
        account: impl Into<String>,
        region: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        Scope {
            account: account.into(),
            region: region.into(),
            service: service.into(),
        }
    }
}

/// What a step found when it looked (read-only).
#[derive(Debug, Clone)]
pub enum Observation {
    /// Nothing to do; these are the step's outputs.
    Done(Value),
    /// Work to do; the change is handed to `apply` unchanged.
    Todo(Value),
    /// The step's own earlier (or concurrent) submission is still running: poll it.
    InProgress(Submitted),
}

/// An asynchronous operation the step started, to be completed by the poller of `poll_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// Names the batch this id is polled in, e.g. `ec2.snapshot/111122223333/eu-west-2`.
    pub poll_key: String,
    /// The id of the resource being created, e.g. the new snapshot id.
    pub id: String,
}

/// What `apply` achieved.
#[derive(Debug, Clone)]
pub enum Applied {
    Done(Value),
    Submitted(Submitted),
}

/// A poller's answer for one id.
#[derive(Debug, Clone)]
pub enum PollAnswer {
    Pending { percent: Option<f32> },
    Done(Value),
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
pub struct StepCx<'a, C> {
    pub(crate) ctx: &'a Arc<C>,
    pub(crate) limits: &'a Arc<Limits>,
    pub(crate) inputs: &'a [(Arc<str>, Arc<Value>)],
}

impl<'a, C> StepCx<'a, C> {
    /// The caller's context (clients, settings). The walker never looks inside it.
    pub fn ctx(&self) -> &'a Arc<C> {
        self.ctx
    }
    /// Output of the dependency with this step id, if it is a dependency.
    pub fn input(&self, dep_id: &str) -> Option<&'a Value> {
        self.inputs
            .iter()
            .find(|(id, _)| &**id == dep_id)
            .map(|(_, v)| &**v)
    }
    /// All dependencies' outputs, in the order the dependencies were added.
    pub fn inputs(&self) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.inputs.iter().map(|(id, v)| (&**id, &**v))
    }
    /// The shared limiter, to draw tokens for calls the walker does not make for you
    /// (e.g. describe calls inside `observe`).
    pub fn limits(&self) -> &'a Arc<Limits> {
        self.limits
    }
}

/// One node of the graph. Implementations hold all service semantics; the walker holds none.
#[async_trait]
pub trait Step<C: Send + Sync + 'static>: Send + Sync + 'static {
    /// Stable across runs: `<owner>/<resource>/<action>`.
    fn id(&self) -> &str;
    /// e.g. `ec2.copy-snapshot`.
    fn kind(&self) -> &str;
    fn scope(&self) -> &Scope;
    /// Token buckets `apply` draws one token from each (e.g. `prod/us-east-1/ec2:CopySnapshot`).
    /// The walker takes them before `apply`, without holding a concurrency slot while it waits.
    fn buckets(&self) -> &[String] {
        &[]
    }
    /// Concurrency gate held from before `apply` until the submitted operation has finished
    /// (e.g. `snapshot-copies/prod/eu-west-2`).
    fn gate(&self) -> Option<&str> {
        None
    }
    /// Read-only: is the work already done?
    ///
    /// `observe` and `apply` are first polled on the walker's coordinator (a call that finishes
    /// at once costs no task); they must not block the thread before their first `.await`.
    async fn observe(&self, cx: &StepCx<'_, C>) -> Result<Observation, StepError>;
    /// What `apply` will use to make itself findable or repeatable (client token, tags).
    /// Journaled before `apply` is called. Must not contain secrets.
    fn intent(&self, _change: &Value) -> Value {
        Value::Null
    }
    /// Mutate. Called only after `observe` said `Todo`; must be safe to repeat.
    async fn apply(&self, cx: &StepCx<'_, C>, change: Value) -> Result<Applied, StepError>;
}

/// Answers, for one poll key, about all pending ids of that key at once (one batched call).
#[async_trait]
pub trait Poller<C: Send + Sync + 'static>: Send + Sync + 'static {
    /// Must answer for every id; ids left out stay pending.
    async fn poll(
        &self,
        ctx: &Arc<C>,
        limits: &Arc<Limits>,
        poll_key: &str,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer)>, StepError>;
}
