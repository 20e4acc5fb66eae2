//! The AWS side of every step kind: observe (read-only), apply (idempotent), batched polls.
//! Each module is one AWS area; `build` turns the compiled [`PlannedStep`]s into executable
//! steps, each holding its typed spec.

pub mod batch;
pub mod destroy;
pub mod destroy_s3;
pub mod ec2;
pub mod iam;
pub mod kms;
pub mod multipart;
pub mod output;
pub mod pace;
pub mod permissions;
pub mod policy;
pub mod rds;
pub mod retention;
pub mod s3;
pub mod share;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_smithy_async::future::pagination_stream::PaginationStream;
use serde::Serialize;
use serde_json::Value;

use crate::aws::{Aws, AwsError};
use crate::exec::{self, BucketConfig, BucketKey, ErrorClass, GateKey, Limits, Step, StepError};
use crate::graph::{DestKey, DestinationKey, PlanGraph, PlannedStep, StepSpec};
use crate::ids::{AccountName, KeyArn, StepId};
use crate::quotas::{self, Quota};

pub use crate::quotas::bucket;
pub use output::StepOutput;

/// What every step can reach: the clients, and facts the resolve stage established.
pub struct Cx {
    pub aws: Arc<Aws>,
    pub plan: String,
    /// Plan account name -> AWS account id (checked with GetCallerIdentity).
    pub account_ids: BTreeMap<String, String>,
    /// (account, region, key reference) -> key ARN, for keys known to exist.
    pub keys: Mutex<HashMap<(String, String, String), KeyArn>>,
    /// Outputs of steps done in earlier runs of this state (newest wins): how an undo step
    /// knows what ferry added before, so it takes back exactly that.
    pub earlier: HashMap<StepId, StepOutput>,
    /// The plan's earlier copies, listed once per (account, region).
    pub copy_index: ec2::CopyIndex,
    /// How fast copies of each region pair go: which copies are quick.
    pub copy_pace: pace::CopyPace,
    /// What each account already shares with another, listed once per (account, region).
    pub shares: share::SharedIndex,
    /// Shares this process made or took back, so that a run after its dry run sees them
    /// without listing again.
    pub shared_now: Mutex<HashMap<share::ShareFact, bool>>,
    /// Failed copies each copy step made in earlier attempts (step id -> copy ids), from the
    /// journals: the removed ones are not visible any more, but still count as attempts.
    pub failed_before: HashMap<String, Vec<String>>,
    /// What share and key-access steps of this process set out to add (step id -> resources):
    /// ferry's, even where the answer was lost.
    pub attempted_shares: Mutex<HashMap<String, Vec<String>>>,
    /// Steps whose last mutating call failed without an answer (a 5xx, a reset, a timeout): the
    /// work may have been done, and may not show yet. Step id -> when.
    pub ambiguous: Mutex<HashMap<String, u64>>,
    /// Copies (by `migration/source`) whose copy AWS failed once in this process: the next
    /// failure is final.
    pub copies_retried: Mutex<std::collections::HashSet<String>>,
    /// Submitted copy ids the pollers have not seen yet, and since when: one that still does
    /// not show after the visibility wait is gone.
    pub unseen: Mutex<HashMap<String, std::time::Instant>>,
    /// Steps that set out to change something, and when (ms since the epoch; in this process,
    /// or journaled by an earlier one): reads lag changes of shares, grants and policies
    /// (eventual consistency), so an undo that finds nothing to undo soon after looks again
    /// before it believes it.
    pub changed: Mutex<HashMap<String, u64>>,
    /// Steps done in earlier runs, and when (ms since the epoch).
    pub done_before: HashMap<String, u64>,
    /// When each step first set out to change something in this run (its resumes included).
    pub first_changed: Mutex<HashMap<String, u64>>,
    /// Key ARN -> (when, the policy read before, the policy ferry wrote): a read that still
    /// shows the old document soon after is stale, and the merge starts from what was written.
    pub key_policies: Mutex<HashMap<String, (std::time::Instant, Value, Value)>>,
    /// The run this process applies (set before it starts; a dry run has none). Tokens of
    /// operations that must never be started twice in one run are derived from it.
    pub run_id: std::sync::OnceLock<String>,
}

impl exec::Context for Cx {
    type Output = StepOutput;
    type Change = Change;

    /// A region pair's snapshot copies: as many as its throughput keeps busy (`pace`).
    fn gate_slots(&self, gate: &exec::GateKey) -> Option<usize> {
        (gate.limit() == ec2::SNAPSHOT_PAIR_GATE).then(|| self.copy_pace.slots(gate.scope()))
    }
}

impl Cx {
    /// The context of a run, from what the resolve stage established.
    pub fn new(aws: Arc<Aws>, plan: &str, resolution: &crate::resolve::Resolution) -> Cx {
        let keys: HashMap<_, _> = resolution
            .known_keys()
            .map(|(a, r, k, arn)| ((a.to_string(), r.to_string(), k.to_string()), arn))
            .collect();
        Cx {
            aws,
            plan: plan.to_string(),
            account_ids: resolution.account_ids.clone(),
            keys: Mutex::new(keys),
            earlier: HashMap::new(),
            copy_index: Default::default(),
            copy_pace: Default::default(),
            shares: Default::default(),
            shared_now: Default::default(),
            ambiguous: Default::default(),
            attempted_shares: Default::default(),
            failed_before: HashMap::new(),
            copies_retried: Default::default(),
            unseen: Default::default(),
            changed: Default::default(),
            done_before: HashMap::new(),
            first_changed: Default::default(),
            key_policies: Default::default(),
            run_id: Default::default(),
        }
    }

    /// `step` is about to change a share, grant or policy.
    pub fn changing(&self, step: &str) {
        let now = crate::exec::now_ms();
        self.changed
            .lock()
            .expect("changed")
            .insert(step.to_string(), now);
        self.first_changed
            .lock()
            .expect("changed")
            .entry(step.to_string())
            .or_insert(now);
    }

    /// How much longer reads may not show what `undone` changed, for `undo`, the step that
    /// takes it back: none once the undo was done after that change. (An undo that only tried
    /// may have failed before it took effect: it still reads with care.)
    pub fn settling_after(&self, undo: &str, undone: &str) -> Option<std::time::Duration> {
        let at = *self.changed.lock().expect("changed").get(undone)?;
        if self.done_before.get(undo).is_some_and(|t| *t >= at) {
            return None;
        }
        wait_left(at)
    }

    /// When `step` first set out to change something in this run, resumes included (ms since
    /// the epoch).
    pub fn first_changed_at(&self, step: &str) -> Option<u64> {
        self.first_changed
            .lock()
            .expect("changed")
            .get(step)
            .copied()
    }

    /// The most time left for any step matching `which` (see [`Cx::settling_after`]).
    pub fn settling_after_any(
        &self,
        undo: &str,
        which: impl Fn(&str) -> bool,
    ) -> Option<std::time::Duration> {
        let steps: Vec<String> = self
            .changed
            .lock()
            .expect("changed")
            .keys()
            .filter(|s| which(s))
            .cloned()
            .collect();
        steps
            .iter()
            .filter_map(|s| self.settling_after(undo, s))
            .max()
    }

    /// Ferry wrote `written` over `before` as the policy of `key`.
    pub fn wrote_key_policy(&self, key: &str, before: &Value, written: &Value) {
        self.key_policies.lock().expect("policies").insert(
            key.to_string(),
            (std::time::Instant::now(), before.clone(), written.clone()),
        );
    }

    /// The policy of `key` as read, unless the read is the document ferry replaced moments
    /// ago (a stale read): then the one ferry wrote.
    pub fn key_policy_read(&self, key: &str, read: Value) -> Value {
        match self.key_policies.lock().expect("policies").get(key) {
            Some((at, before, written))
                if at.elapsed() < *VISIBILITY_WAIT && policy::same(&read, before) =>
            {
                written.clone()
            }
            _ => read,
        }
    }

    /// A copy of `what` failed: true the first time in this process (remove it and copy
    /// once more), false after that.
    pub fn retry_failed_copy(&self, what: &str) -> bool {
        self.copies_retried
            .lock()
            .expect("retried")
            .insert(what.to_string())
    }

    /// A poll did not list the submitted copy `id`: true once it has not shown for longer
    /// than new resources take to show (it was deleted, or the submit never happened).
    pub fn vanished(&self, id: &str) -> bool {
        let mut unseen = self.unseen.lock().expect("unseen");
        let since = *unseen
            .entry(id.to_string())
            .or_insert_with(std::time::Instant::now);
        since.elapsed() > *VISIBILITY_WAIT
    }

    /// A poll listed `id`.
    pub fn seen(&self, id: &str) {
        self.unseen.lock().expect("unseen").remove(id);
    }

    pub fn with_failed_copies(mut self, failed: HashMap<String, Vec<String>>) -> Cx {
        self.failed_before = failed;
        self
    }

    /// The failed copies `step` made in earlier attempts.
    pub fn failed_copies(&self, step: &str) -> Vec<String> {
        self.failed_before.get(step).cloned().unwrap_or_default()
    }

    /// `step` is about to add `resource` (a share, or access to a key).
    pub fn attempt_share(&self, step: &str, resource: &str) {
        let mut a = self.attempted_shares.lock().expect("attempted");
        let list = a.entry(step.to_string()).or_default();
        if !list.iter().any(|r| r == resource) {
            list.push(resource.to_string());
        }
    }

    /// What `step` set out to add in this process.
    pub fn shares_attempted(&self, step: &str) -> Vec<String> {
        self.attempted_shares
            .lock()
            .expect("attempted")
            .get(step)
            .cloned()
            .unwrap_or_default()
    }

    /// When steps of earlier runs last journaled an intent, first did in the run this process
    /// resumes, and were last done (ms since the epoch): their changes may not show yet either.
    pub fn with_changes(
        mut self,
        intents: &HashMap<String, u64>,
        first: &HashMap<String, u64>,
        done: &HashMap<String, u64>,
    ) -> Cx {
        self.changed
            .lock()
            .expect("changed")
            .extend(intents.iter().map(|(k, v)| (k.clone(), *v)));
        self.first_changed
            .lock()
            .expect("changed")
            .extend(first.iter().map(|(k, v)| (k.clone(), *v)));
        self.done_before = done.clone();
        self
    }

    /// Steps of earlier runs whose intent got no outcome (the process died around the call),
    /// with when the intent was journaled: each is looked for as after a lost answer, for what
    /// is left of the visibility wait, before its call is made again.
    pub fn with_unanswered(self, unanswered: &HashMap<String, u64>) -> Cx {
        for (step, ts) in unanswered {
            if wait_left(*ts).is_some() {
                self.ambiguous
                    .lock()
                    .expect("ambiguous")
                    .insert(step.clone(), *ts);
                // It looks for itself directly: the shared listing, made once at the start,
                // would never show a copy that appears later.
                self.copy_index.attempt(step);
            }
        }
        self
    }

    /// Records that `step`'s call may have taken effect without an answer.
    pub fn ambiguous_attempt(&self, step: &str) {
        self.ambiguous
            .lock()
            .expect("ambiguous")
            .insert(step.to_string(), crate::exec::now_ms());
    }

    /// How much longer a look for `step`'s possibly made resource must go on before making it
    /// again: new resources show in listings only after a while (eventual consistency).
    pub fn still_settling(&self, step: &str) -> Option<std::time::Duration> {
        wait_left(*self.ambiguous.lock().expect("ambiguous").get(step)?)
    }

    pub fn with_earlier(mut self, earlier: HashMap<StepId, StepOutput>) -> Cx {
        self.earlier = earlier;
        self
    }

    pub fn earlier_output(&self, step: &StepId) -> Option<&StepOutput> {
        self.earlier.get(step)
    }

    /// The AWS account id of a plan account (resolved before any step runs).
    pub fn account_id(&self, account: &AccountName) -> &str {
        self.account_ids
            .get(account.as_str())
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn known_key(&self, account: &str, region: &str, key: &str) -> Option<KeyArn> {
        self.keys
            .lock()
            .expect("key cache")
            .get(&(account.to_string(), region.to_string(), key.to_string()))
            .cloned()
    }

    pub fn remember_key(&self, account: &str, region: &str, key: &str, arn: &KeyArn) {
        self.keys.lock().expect("key cache").insert(
            (account.to_string(), region.to_string(), key.to_string()),
            arn.clone(),
        );
    }
}

/// How long a resource made by a call whose answer was lost may take to show in listings.
/// EC2's Describe calls are eventually consistent; a minute covers what AWS documents as
/// "typically seconds". `FERRY_VISIBILITY_WAIT_MS` sets it (tests).
static VISIBILITY_WAIT: std::sync::LazyLock<std::time::Duration> = std::sync::LazyLock::new(|| {
    std::env::var("FERRY_VISIBILITY_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
        .unwrap_or(std::time::Duration::from_secs(60))
});

/// What a step found to do: what a dry run shows, and what `apply` needs.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub action: Action,
    /// The lines a person reads under the step in `ferry plan` (`+ …`, `- …`, `~ …`).
    pub diff: Vec<String>,
    /// What `apply` acts on, as `observe` found it.
    #[serde(skip)]
    pub todo: Todo,
}

/// What a change does to the resource, as Terraform says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `+`: the resource does not exist yet.
    Create,
    /// `~`: it exists and some properties change.
    Update,
    /// `-/+`: a new resource takes the old one's place (the old one is kept; see the diff).
    Replace,
    /// `-`: the resource is deleted (or taken back): `ferry destroy`, retention.
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// What `apply` needs from its observation, per kind of step. Serialized only into a saved
/// plan's fingerprint of what the step saw (`ferry plan --out`).
#[derive(Debug, Clone, Default, Serialize)]
pub enum Todo {
    #[default]
    Nothing,
    /// CreateKey: a key of this plan whose alias was never made, to adopt instead of creating.
    AdoptKey(Option<String>),
    /// A copy: ferry's failed copies to remove first, and its copies under other keys (kept).
    /// `failed_before`: every failed copy this step made, in this run or earlier (journaled):
    /// an image copy's client token counts them.
    Copy {
        failed: Vec<String>,
        kept: Vec<KeptCopy>,
        failed_before: Vec<String>,
    },
    /// Copies made twice: remove `extra` (and failed ones), `keep` is the copy.
    Extras {
        keep: String,
        done: bool,
        extra: Vec<String>,
        kept: Vec<KeptCopy>,
    },
    /// Shares: the resources to share or stop sharing.
    Resources(Vec<String>),
    /// A policy edit, with the document before it (journaled for rollback).
    Policy { before: Value },
    /// A grant to revoke.
    Grant { id: Option<String> },
    /// A batch job to create, after `ended` jobs of the migration ended without success (its
    /// client token counts them).
    BatchJob { ended: usize },
    /// The step cannot succeed as things are (the user must act first): `apply` fails with
    /// this error and changes nothing.
    Failed { code: String, message: String },
    /// Tags (`copy_tags`) to write onto a finished copy, which is then `done`.
    Tags {
        resource: String,
        tags: BTreeMap<String, String>,
        done: Box<StepOutput>,
    },
    /// A backfill: what the listing found.
    /// `objects: 0` when the listing was too long to keep (the apply streams it again).
    Backfill { objects: u64, bytes: u64 },
}

/// A copy ferry made earlier under another key than the plan's: kept, never deleted (only a
/// retention setting would delete copies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KeptCopy {
    pub id: String,
    /// The key it is under, as ferry tagged it (`ferry:key`) or else its ARN.
    pub key: String,
}

impl Change {
    /// A policy edit's document before it (`null` for other changes): journaled with the
    /// intent, for rollback.
    pub fn policy_before(&self) -> Value {
        match &self.todo {
            Todo::Policy { before } => before.clone(),
            _ => Value::Null,
        }
    }
}

/// A policy edit as a change, or `None` when the edit changes nothing: the diff shown, and the
/// document before it kept for the intent.
pub(crate) fn policy_edit(before: Value, after: &Value) -> Option<Change> {
    if policy::same(&before, after) {
        return None;
    }
    let diff = policy::diff(&before, after);
    Some(change(Action::Update, diff, Todo::Policy { before }))
}

pub(crate) fn change(action: Action, diff: Vec<String>, todo: Todo) -> Change {
    Change { action, diff, todo }
}

/// The configuration of an S3 call sent once, without the SDK's retries: one that is not
/// idempotent (a copy into a versioned bucket makes a version each time), whose caller looks
/// at what a lost answer may have done before it calls again.
pub(crate) fn sent_once_s3() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new().retry_config(aws_config::retry::RetryConfig::disabled())
}

/// The SDK's error for an operation whose service error is `E`.
pub(crate) type SdkError<E> =
    aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>;

/// What every operation's service error offers.
pub(crate) trait ServiceError:
    aws_smithy_types::error::metadata::ProvideErrorMetadata
    + aws_types::request_id::RequestId
    + std::error::Error
    + 'static
{
}
impl<T> ServiceError for T where
    T: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + aws_types::request_id::RequestId
        + std::error::Error
        + 'static
{
}

/// A step error from a failed AWS call, with the codes that mean "not yet" for this call.
pub(crate) fn failed(e: AwsError, not_yet_consistent: &[&str]) -> StepError {
    e.into_step_error(not_yet_consistent)
}

/// Maps an SDK error of `service:op` into ferry's.
pub(crate) fn sdk_error<E: ServiceError>(
    service: &'static str,
    op: &'static str,
) -> impl Fn(SdkError<E>) -> AwsError {
    move |e| AwsError::from_sdk(service, op, e)
}

/// Values read once per process per key, however many steps ask at once: the first asker
/// reads, the others wait for its answer. A failed read is not kept: the next asker reads again.
pub struct ReadOnce<K, V>(Mutex<HashMap<K, Arc<tokio::sync::OnceCell<V>>>>);

impl<K, V> Default for ReadOnce<K, V> {
    fn default() -> Self {
        ReadOnce(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + std::hash::Hash, V: Clone> ReadOnce<K, V> {
    pub async fn get<F, Fut>(&self, key: K, read: F) -> Result<V, StepError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, StepError>>,
    {
        let cell = self
            .0
            .lock()
            .expect("read-once map")
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_try_init(read).await.cloned()
    }
}

/// Reads every page of an EC2 listing, each after a token from `action`'s bucket, handing each
/// page to `each`.
pub(crate) async fn each_page<O, E: ServiceError>(
    limits: &Limits,
    account: &str,
    region: &str,
    action: &'static str,
    mut pages: PaginationStream<Result<O, SdkError<E>>>,
    mut each: impl FnMut(O),
) -> Result<(), StepError> {
    let tokens = [bucket(account, region, &format!("ec2:{action}"))];
    loop {
        limits.take(&tokens).await;
        let Some(page) = pages.next().await else {
            return Ok(());
        };
        each(page.map_err(|e| failed(AwsError::from_sdk("ec2", action, e), &[]))?);
    }
}

/// The id, kind and token buckets every step has, from its planned step.
macro_rules! step_identity {
    () => {
        fn id(&self) -> &str {
            &self.base.id_text
        }
        fn kind(&self) -> &str {
            self.base.kind
        }
        fn buckets(&self) -> &[crate::exec::BucketKey] {
            &self.base.buckets
        }
    };
}
pub(crate) use step_identity;

/// What every step keeps of its planned step.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub id_text: String,
    pub kind: &'static str,
    pub account: String,
    pub region: String,
    pub buckets: Vec<BucketKey>,
}

impl Base {
    /// `api`: the quota the step's mutating call draws from (empty: none).
    pub fn new(step: &PlannedStep, api: &str) -> Base {
        let region = step
            .scope
            .region
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let account = step.scope.account.to_string();
        let buckets = if api.is_empty() {
            Vec::new()
        } else {
            vec![bucket(&account, &region, api)]
        };
        Base {
            id_text: step.id.to_string(),
            kind: step.kind().as_str(),
            account,
            region,
            buckets,
        }
    }

    /// The gate of `limit` for this step's account and region.
    pub fn gate(&self, limit: &str) -> GateKey {
        GateKey::new(limit, &format!("{}/{}", self.account, self.region))
    }
}

/// The destination key's ARN: as resolved, or from the step that made it. `None` while it
/// does not exist (a dry run before the key is made: no copy can be under it yet).
pub(crate) async fn key_arn(
    cx: &exec::StepCx<'_, Cx>,
    key: &DestinationKey,
    account: &str,
    region: &str,
) -> Result<Option<KeyArn>, StepError> {
    match &key.key {
        DestKey::Existing(arn) => Ok(Some(arn.clone())),
        DestKey::MadeBy(step) => Ok(made_key(cx, step, region)),
        DestKey::Unresolved(reference) => lookup_key(cx, account, region, reference).await,
    }
}

/// The key `step` made in `region`, from its output.
fn made_key(cx: &exec::StepCx<'_, Cx>, step: &StepId, region: &str) -> Option<KeyArn> {
    cx.input(&step.to_string())
        .and_then(StepOutput::key_arn)
        .filter(|arn| arn.region() == region)
        .cloned()
}

async fn lookup_key(
    cx: &exec::StepCx<'_, Cx>,
    account: &str,
    region: &str,
    reference: &str,
) -> Result<Option<KeyArn>, StepError> {
    if let Some(arn) = cx.ctx().known_key(account, region, reference) {
        return Ok(Some(arn));
    }
    let found = crate::lookup::describe_key(&cx.ctx().aws, cx.limits(), account, region, reference)
        .await
        .map_err(|e| failed(e, &["NotFoundException"]))?;
    if let Some(k) = &found {
        cx.ctx().remember_key(account, region, reference, &k.arn);
    }
    Ok(found.map(|k| k.arn))
}

/// What is left of the visibility wait for a change made at `since_ms` (ms since the epoch).
fn wait_left(since_ms: u64) -> Option<std::time::Duration> {
    let age = std::time::Duration::from_millis(crate::exec::now_ms().saturating_sub(since_ms));
    (*VISIBILITY_WAIT).checked_sub(age)
}

/// A read that may not show a change made moments ago: looked at again, with backoff, until it
/// shows or the visibility wait has passed. `code` names what is awaited.
pub(crate) fn not_visible_yet(
    code: &'static str,
    what: String,
    left: std::time::Duration,
) -> StepError {
    StepError::new(
        ErrorClass::NotYetConsistent,
        code,
        format!(
            "{what} may not show yet; looking again for up to {}",
            humantime::format_duration(std::time::Duration::from_secs(left.as_secs().max(1)))
        ),
    )
}

/// Whether `named` (what AWS echoes back as put: a key id, key ARN, alias name or alias ARN)
/// names the key `wanted`, so that another form of the same key is never a change.
pub(crate) async fn names_key(
    cx: &exec::StepCx<'_, Cx>,
    account: &str,
    region: &str,
    named: &str,
    wanted: &KeyArn,
) -> Result<bool, StepError> {
    if named == wanted.as_str() || named == wanted.key_id() {
        return Ok(true);
    }
    if !named.contains("alias/") {
        return Ok(false);
    }
    Ok(lookup_key(cx, account, region, named).await?.as_ref() == Some(wanted))
}

/// The destination key's ARN where the key must exist (in `apply`): a key made by a step that
/// did not hand it on (an earlier run) is looked up by its reference.
pub(crate) async fn existing_key_arn(
    cx: &exec::StepCx<'_, Cx>,
    key: &DestinationKey,
    account: &str,
    region: &str,
) -> Result<KeyArn, StepError> {
    let found = match &key.key {
        DestKey::Existing(arn) => Some(arn.clone()),
        DestKey::MadeBy(step) => match made_key(cx, step, region) {
            Some(arn) => Some(arn),
            None => lookup_key(cx, account, region, &key.shown).await?,
        },
        DestKey::Unresolved(reference) => lookup_key(cx, account, region, reference).await?,
    };
    found.ok_or_else(|| {
        StepError::new(
            ErrorClass::NotYetConsistent,
            "NotFoundException",
            format!(
                "destination key {} not found in {account}/{region} yet",
                key.shown
            ),
        )
    })
}

/// Gate serializing edits of one key's policy (`key-policy/<key>`): PutKeyPolicy replaces the
/// whole document, so two read-merge-write edits of one key must not overlap.
pub const KEY_POLICY_GATE: &str = "key-policy";

/// Gates serializing the read-merge-write of one bucket's replication configuration and of its
/// bucket policy: two migrations from (or into) one bucket must not lose each other's rule or
/// statement.
pub const REPLICATION_GATE: &str = "bucket-replication";
pub const BUCKET_POLICY_GATE: &str = "bucket-policy";

/// What the step `share_step` added, in this run (its output, read by the undoing step) or in
/// an earlier run recorded in the same state.
pub(crate) fn added_by_ferry(cx: &exec::StepCx<'_, Cx>, share_step: &StepId) -> Vec<String> {
    let mut added: Vec<String> = cx
        .input(&share_step.to_string())
        .into_iter()
        .chain(cx.ctx().earlier_output(share_step))
        .filter_map(|out| match out {
            StepOutput::Share(s) => Some(s.added_by_ferry.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    added.sort();
    added.dedup();
    added
}

/// The answers for submitted ids a poll did not list: pending while they may still show,
/// then gone (a transient failure: the retry re-observes and copies again if need be).
pub(crate) fn unlisted(
    ctx: &Cx,
    ids: &[String],
    answers: &[(String, exec::PollAnswer<StepOutput>)],
) -> Vec<(String, exec::PollAnswer<StepOutput>)> {
    for (id, _) in answers {
        ctx.seen(id);
    }
    ids.iter()
        .filter(|id| !answers.iter().any(|(a, _)| a == *id))
        .filter(|id| ctx.vanished(id))
        .map(|id| {
            ctx.seen(id);
            let e = StepError::new(
                ErrorClass::Transient,
                "CopyVanished",
                format!(
                    "the copy {id} is no longer listed: looking for this source's copies again"
                ),
            );
            (id.clone(), exec::PollAnswer::Failed(e))
        })
        .collect()
}

/// The limiter for a plan: the default quota table with the plan's overrides.
pub fn limits(overrides: &BTreeMap<String, crate::plan::QuotaOverride>) -> Limits {
    let mut buckets = HashMap::new();
    let mut gates = HashMap::new();
    for (name, q) in quotas::DEFAULTS {
        let o = overrides.get(*name);
        match q {
            Quota::Rate { burst, per_second } => {
                let burst = o.and_then(|o| o.burst).unwrap_or(*burst);
                let rate = o.and_then(|o| o.per_second).unwrap_or(*per_second);
                buckets.insert(name.to_string(), BucketConfig::new(burst as f64, rate));
            }
            Quota::InFlight(n) => {
                let n = o.and_then(|o| o.in_flight).unwrap_or(*n);
                let gate = match *name {
                    "ec2:snapshot-copies-in-flight" => ec2::SNAPSHOT_COPY_GATE,
                    "ec2:snapshot-copies-per-region-pair" => ec2::SNAPSHOT_PAIR_GATE,
                    "ec2:image-copies-in-flight" => ec2::IMAGE_COPY_GATE,
                    "rds:snapshot-copies-in-flight" => rds::DB_SNAPSHOT_COPY_GATE,
                    "rds:cluster-snapshot-copies-in-flight" => rds::DB_CLUSTER_SNAPSHOT_COPY_GATE,
                    other => other,
                };
                gates.insert(gate.to_string(), n as usize);
            }
        }
    }
    for gate in [KEY_POLICY_GATE, REPLICATION_GATE, BUCKET_POLICY_GATE] {
        gates.insert(gate.to_string(), 1);
    }
    Limits::new(buckets, gates)
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("step `{0}` stands for a selector that was not expanded (an offline plan cannot run)")]
    NotExpanded(StepId),
    #[error(transparent)]
    Graph(#[from] exec::GraphError),
}

/// Only the planned steps `keep` selects, as executable steps without edges (`ferry verify`
/// runs its checks on their own).
pub fn build_only(
    graph: &PlanGraph,
    keep: impl Fn(&PlannedStep) -> bool,
) -> Result<exec::StepGraph<Cx>, BuildError> {
    let mut b = exec::StepGraphBuilder::<Cx>::new();
    for step in graph.in_order().filter(|s| keep(s)) {
        b.add_step(step_for(step)?)?;
    }
    Ok(b.seal()?)
}

/// Turns planned steps into executable steps, in the graph's order, with its edges.
pub fn build(graph: &PlanGraph) -> Result<exec::StepGraph<Cx>, BuildError> {
    let mut b = exec::StepGraphBuilder::<Cx>::new();
    for step in graph.in_order() {
        b.add_step(step_for(step)?)?;
    }
    for step in graph.in_order() {
        let me = b.index_of(&step.id.to_string()).expect("just added");
        for dep in graph.dependencies(&step.id) {
            let d = b
                .index_of(&dep.to_string())
                .expect("dependencies are steps");
            b.add_dependency(me, d)?;
        }
    }
    Ok(b.seal()?)
}

fn step_for(step: &PlannedStep) -> Result<Arc<dyn Step<Cx>>, BuildError> {
    if step.target.is_expanded_later() {
        return Err(BuildError::NotExpanded(step.id.clone()));
    }
    Ok(match &step.spec {
        StepSpec::CreateKey(s) => Arc::new(kms::CreateKey::new(step, s.clone())),
        StepSpec::EnableKeyRotation(s) => Arc::new(kms::EnableRotation::new(step, s.clone())),
        StepSpec::ReplicateKey(s) => Arc::new(kms::ReplicateKey::new(step, s.clone())),
        StepSpec::MergeKeyPolicy(s) => Arc::new(kms::MergeKeyPolicy::new(step, s.clone(), true)),
        StepSpec::RemoveKeyPolicyStatements(s) => {
            Arc::new(kms::MergeKeyPolicy::new(step, s.clone(), false))
        }
        StepSpec::ScheduleKeyDeletion(s) => {
            Arc::new(kms::ScheduleKeyDeletion::new(step, s.clone()))
        }
        StepSpec::DeleteCopies(s) => Arc::new(destroy::DeleteCopies::new(step, s.clone())),
        StepSpec::RemoveReplication(s) => {
            Arc::new(destroy_s3::RemoveReplication::new(step, s.clone()))
        }
        StepSpec::RemoveBucketPolicy(s) => {
            Arc::new(destroy_s3::RemoveBucketPolicy::new(step, s.clone()))
        }
        StepSpec::DeleteBucket(s) => Arc::new(destroy_s3::DeleteBucket::new(step, s.clone())),
        StepSpec::DeleteRole(s) => Arc::new(iam::DeleteRole::new(step, s.clone())),
        StepSpec::DeleteIntermediate(s) => {
            Arc::new(destroy::DeleteIntermediate::new(step, s.clone()))
        }
        StepSpec::CopySnapshot(s) => Arc::new(ec2::CopySnapshot::new(step, s.clone())),
        StepSpec::CopyImage(s) => Arc::new(ec2::CopyImage::new(step, s.clone())),
        StepSpec::ShareSnapshot(s) | StepSpec::ShareImage(s) => {
            Arc::new(share::Permission::new(step, s.clone(), true))
        }
        StepSpec::UnshareSnapshot(s) | StepSpec::UnshareImage(s) => {
            Arc::new(share::Permission::new(step, s.clone(), false))
        }
        StepSpec::GrantKeyAccess(s) => Arc::new(share::SourceKeyAccess::new(step, s.clone(), true)),
        StepSpec::RevokeKeyAccess(s) => {
            Arc::new(share::SourceKeyAccess::new(step, s.clone(), false))
        }
        StepSpec::EnableVersioning(s) => Arc::new(s3::EnableVersioning::new(step, s.clone())),
        StepSpec::CreateBucket(s) => Arc::new(s3::CreateBucket::new(step, s.clone())),
        StepSpec::AllowReplicationRole(s) => {
            Arc::new(s3::AllowReplicationRole::new(step, s.clone()))
        }
        StepSpec::PutReplication(s) => Arc::new(s3::PutReplication::new(step, s.clone())),
        StepSpec::Backfill(s) => Arc::new(s3::Backfill::new(step, s.clone())),
        StepSpec::BatchReplication(s) => Arc::new(batch::BatchReplication::new(step, s.clone())),
        StepSpec::VerifyReplication(s) => Arc::new(verify::VerifyReplication::new(step, s.clone())),
        StepSpec::EnsureRole(s) => Arc::new(iam::EnsureRole::new(step, s.clone())),
        StepSpec::CopyDbSnapshot(s) => Arc::new(rds::CopyDbSnapshot::new(step, s.clone())),
        StepSpec::ShareDbSnapshot(s) => Arc::new(rds::ShareDbSnapshot::new(step, s.clone(), true)),
        StepSpec::UnshareDbSnapshot(s) => {
            Arc::new(rds::ShareDbSnapshot::new(step, s.clone(), false))
        }
        StepSpec::DeleteDbSnapshot(s) => Arc::new(rds::DeleteDbSnapshot::new(step, s.clone())),
        StepSpec::PruneCopies(s) => Arc::new(retention::PruneCopies::new(step, s.clone())),
        // Selectors are expanded by the resolve stage: a find step never runs (checked above).
        StepSpec::FindSnapshots(_) | StepSpec::FindImages(_) | StepSpec::FindDbSnapshots(_) => {
            return Err(BuildError::NotExpanded(step.id.clone()));
        }
    })
}
