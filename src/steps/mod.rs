//! The AWS side of every step kind: observe (read-only), apply (idempotent), batched polls.
//! Each module is one AWS area; `build` turns the compiled [`StepSpec`]s into executable steps.

pub mod ec2;
pub mod iam;
pub mod kms;
pub mod permissions;
pub mod policy;
pub mod s3;
pub mod share;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::aws::{Aws, AwsError};
use crate::exec::{self, BucketConfig, Limits, Step, StepError};
use crate::graph::{StepKind, StepSpec};
use crate::quotas::{self, Quota};

/// What every step can reach: the clients, and facts the resolve stage established.
pub struct Cx {
    pub aws: Arc<Aws>,
    pub plan: String,
    /// Plan account name -> AWS account id (checked with GetCallerIdentity).
    pub account_ids: BTreeMap<String, String>,
    /// (account, region, key reference as written) -> key ARN, for keys that already exist.
    pub keys: Mutex<HashMap<(String, String, String), String>>,
    /// Outputs of steps done in earlier runs of this state (newest wins): how an undo step
    /// knows what ferry added before, so it takes back exactly that.
    pub earlier: HashMap<String, Value>,
    /// The plan's earlier copies, listed once per (account, region).
    pub copy_index: ec2::CopyIndex,
    /// What each account already shares with another, listed once per (account, region).
    pub shares: share::SharedIndex,
    /// Facts read once per process and kept up to date by the steps that change them (the
    /// dry run and the run that follows it would otherwise read each twice).
    pub memo: Mutex<HashMap<String, Value>>,
}

impl Cx {
    /// The context of a run, from what the resolve stage established.
    pub fn new(aws: Arc<Aws>, plan: &str, resolution: &crate::resolve::Resolution) -> Cx {
        let keys: HashMap<_, _> = resolution
            .keys
            .iter()
            .filter_map(|(slot, arn)| {
                let mut parts = slot.splitn(3, '/');
                let (a, r, k) = (parts.next()?, parts.next()?, parts.next()?);
                Some(((a.to_string(), r.to_string(), k.to_string()), arn.clone()))
            })
            .collect();
        Cx {
            account_ids: resolution.account_ids.clone(),
            keys: Mutex::new(keys),
            ..Cx::bare(aws, plan)
        }
    }

    /// A context that knows nothing yet (what the resolve stage starts from).
    pub fn bare(aws: Arc<Aws>, plan: &str) -> Cx {
        Cx {
            aws,
            plan: plan.to_string(),
            account_ids: BTreeMap::new(),
            keys: Default::default(),
            earlier: HashMap::new(),
            copy_index: Default::default(),
            shares: Default::default(),
            memo: Default::default(),
        }
    }

    pub fn recall(&self, fact: &str) -> Option<Value> {
        self.memo.lock().expect("memo").get(fact).cloned()
    }

    pub fn remember(&self, fact: &str, value: Value) {
        self.memo
            .lock()
            .expect("memo")
            .insert(fact.to_string(), value);
    }

    pub fn with_earlier(mut self, earlier: HashMap<String, Value>) -> Cx {
        self.earlier = earlier;
        self
    }

    pub fn earlier_output(&self, step: &str) -> Option<Value> {
        self.earlier.get(step).cloned()
    }

    pub fn account_id(&self, account: &str) -> &str {
        self.account_ids
            .get(account)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn known_key(&self, account: &str, region: &str, key: &str) -> Option<String> {
        self.keys
            .lock()
            .expect("key cache")
            .get(&(account.to_string(), region.to_string(), key.to_string()))
            .cloned()
    }

    pub fn remember_key(&self, account: &str, region: &str, key: &str, arn: &str) {
        self.keys.lock().expect("key cache").insert(
            (account.to_string(), region.to_string(), key.to_string()),
            arn.to_string(),
        );
    }
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

/// The `Todo` change of a step: `action` is what a dry run shows (`create`, `update`), `diff`
/// the lines that would change.
pub fn todo(action: &str, detail: Value) -> Value {
    let mut v = json!({ "action": action });
    if let (Value::Object(m), Value::Object(d)) = (&mut v, detail) {
        m.extend(d);
    }
    v
}

/// Gate serializing edits of one key's policy (`key-policy/<key>`): PutKeyPolicy replaces the
/// whole document, so two read-merge-write edits of one key must not overlap.
pub const KEY_POLICY_GATE: &str = "key-policy";

/// Token bucket key for one API call in one account and region.
pub fn bucket(account: &str, region: &str, api: &str) -> String {
    format!("{account}/{region}/{api}")
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
                    "ec2:image-copies-in-flight" => ec2::IMAGE_COPY_GATE,
                    other => other,
                };
                gates.insert(gate.to_string(), n as usize);
            }
        }
    }
    gates.insert(KEY_POLICY_GATE.to_string(), 1);
    Limits::new(buckets, gates)
}

/// Turns compiled step specs into executable steps, in the graph's order, with its edges.
pub fn build(graph: &crate::graph::StepGraph) -> Result<exec::StepGraph<Cx>, exec::GraphError> {
    let mut b = exec::StepGraphBuilder::<Cx>::new();
    for spec in graph.in_order() {
        b.add_step(step_for(spec))?;
    }
    for spec in graph.in_order() {
        let me = b.index_of(&spec.id).expect("just added");
        for dep in graph.dependencies(&spec.id) {
            let d = b.index_of(dep).expect("dependencies are steps");
            b.add_dependency(me, d)?;
        }
    }
    b.seal()
}

fn step_for(spec: &StepSpec) -> Arc<dyn Step<Cx>> {
    match spec.kind {
        StepKind::CreateKey => Arc::new(kms::CreateKey::new(spec)),
        StepKind::EnableKeyRotation => Arc::new(kms::EnableRotation::new(spec)),
        StepKind::ReplicateKey => Arc::new(kms::ReplicateKey::new(spec)),
        StepKind::MergeKeyPolicy => Arc::new(kms::MergeKeyPolicy::new(spec)),
        StepKind::CopySnapshot => Arc::new(ec2::CopySnapshot::new(spec)),
        StepKind::CopyImage => Arc::new(ec2::CopyImage::new(spec)),
        StepKind::ShareSnapshot
        | StepKind::UnshareSnapshot
        | StepKind::ShareImage
        | StepKind::UnshareImage => Arc::new(share::Permission::new(spec)),
        StepKind::GrantKeyAccess | StepKind::RevokeKeyAccess => {
            Arc::new(share::KeyAccess::new(spec))
        }
        StepKind::EnableVersioning => Arc::new(s3::EnableVersioning::new(spec)),
        StepKind::CreateBucket => Arc::new(s3::CreateBucket::new(spec)),
        StepKind::AllowReplicationRole => Arc::new(s3::AllowReplicationRole::new(spec)),
        StepKind::PutReplication => Arc::new(s3::PutReplication::new(spec)),
        StepKind::Backfill => Arc::new(s3::Backfill::new(spec)),
        StepKind::EnsureRole => Arc::new(iam::EnsureRole::new(spec)),
        _ => Arc::new(NotYet::new(spec)),
    }
}

/// A step kind whose AWS side is not built yet: it fails with a clear message (and its
/// dependents are skipped), never pretends to have done anything.
struct NotYet {
    base: Base,
}

impl NotYet {
    fn new(spec: &StepSpec) -> Self {
        NotYet {
            base: Base::new(spec, ""),
        }
    }
}

#[async_trait::async_trait]
impl Step<Cx> for NotYet {
    fn id(&self) -> &str {
        &self.base.id
    }
    fn kind(&self) -> &str {
        &self.base.kind
    }
    fn scope(&self) -> &exec::Scope {
        &self.base.scope
    }
    async fn observe(&self, _cx: &exec::StepCx<'_, Cx>) -> Result<exec::Observation, StepError> {
        Err(StepError::permanent(
            "NotImplemented",
            format!("ferry cannot run `{}` steps yet", self.base.kind),
        ))
    }
    async fn apply(
        &self,
        _cx: &exec::StepCx<'_, Cx>,
        _change: Value,
    ) -> Result<exec::Applied, StepError> {
        Err(StepError::permanent(
            "NotImplemented",
            format!("ferry cannot run `{}` steps yet", self.base.kind),
        ))
    }
}

/// What every step keeps from its spec.
pub(crate) struct Base {
    pub id: String,
    pub kind: String,
    pub scope: exec::Scope,
    pub account: String,
    pub region: String,
    pub params: BTreeMap<String, Value>,
    pub target: String,
    pub owner: String,
    pub buckets: Vec<String>,
}

impl Base {
    pub fn new(spec: &StepSpec, api: &str) -> Base {
        let region = spec.scope.region.clone().unwrap_or_default();
        let account = spec.scope.account.clone();
        let buckets = if api.is_empty() {
            Vec::new()
        } else {
            vec![bucket(&account, &region, api)]
        };
        Base {
            id: spec.id.clone(),
            kind: spec.kind.as_str().to_string(),
            scope: exec::Scope::new(&account, &region, spec.kind.service()),
            account,
            region,
            params: spec.params.clone(),
            target: match &spec.target {
                crate::graph::Target::One(t) => t.clone(),
                other => other.to_string(),
            },
            owner: spec.owner.clone(),
            buckets,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }
}
