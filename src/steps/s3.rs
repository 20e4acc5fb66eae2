//! S3 steps of `s3-replication`: versioning, the destination bucket, the destination bucket
//! policy for a cross-account role, the replication configuration (merged by rule id) and the
//! backfill of objects that existed before the rule.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::types::{
    AccessControlTranslation, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination,
    EncryptionConfiguration, OwnerOverride, ReplicationConfiguration, ReplicationRule,
    ReplicationRuleFilter, ReplicationRuleStatus, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    SourceSelectionCriteria, SseKmsEncryptedObjects, SseKmsEncryptedObjectsStatus, StorageClass,
    Tag, Tagging, VersioningConfiguration,
};
use serde_json::{Value, json};

use super::output::{BackfillOutput, BucketOutput};
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, bucket, change, existing_key_arn, failed, key_arn,
    names_key, policy, policy_edit, sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{
    Applied, BucketKey, ErrorClass, GateKey, Limits, Observation, RetryPolicies, Step, StepCx,
    StepError, with_retries,
};
use crate::graph::{
    BackfillSpec, BucketPolicySpec, CreateBucketSpec, PlannedStep, ReplicationSpec, RoleRef,
    VersioningSpec,
};
use crate::ids::{AccountName, BucketName};
use crate::lookup::role_arn;

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

pub(super) fn s3_error<E: super::ServiceError>(
    op: &'static str,
) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("s3", op)
}

/// Codes that, right after the bucket (or role) was made, mean "not visible yet".
const FRESH: &[&str] = &["NoSuchBucket"];

fn bucket_output(bucket: &BucketName) -> BucketOutput {
    BucketOutput {
        bucket: bucket.to_string(),
        region: None,
        versioning: None,
        rule: None,
    }
}

/// A role's ARN, by name in `account` or as given.
fn role_of(cx: &Cx, role: &RoleRef, account: &AccountName) -> String {
    match role {
        RoleRef::Name(n) => role_arn(cx.account_id(account), n),
        RoleRef::Arn(a) => a.clone(),
    }
}

// ---------------------------------------------------------------------------------------------

/// `s3.enable-versioning`: replication needs versioning on both buckets.
pub struct EnableVersioning {
    base: Base,
    spec: VersioningSpec,
}

impl EnableVersioning {
    pub fn new(step: &PlannedStep, spec: VersioningSpec) -> Self {
        EnableVersioning {
            base: Base::new(step, "s3:PutBucketVersioning"),
            spec,
        }
    }

    fn done(&self) -> StepOutput {
        StepOutput::Bucket(BucketOutput {
            versioning: Some("Enabled".into()),
            ..bucket_output(&self.spec.bucket)
        })
    }
}

#[async_trait]
impl Step<Cx> for EnableVersioning {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let out = cx
            .ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .get_bucket_versioning()
            .bucket(self.spec.bucket.as_str())
            .send()
            .await;
        let status = match out {
            Ok(o) => o
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "Off".into()),
            Err(e) => {
                let e = s3_error("GetBucketVersioning")(e);
                if !e.is_code(FRESH) {
                    return Err(failed(e, &[]));
                }
                "(new bucket)".into()
            }
        };
        if status == "Enabled" {
            return Ok(Observation::Done(self.done()));
        }
        Ok(Observation::Todo(change(
            Action::Update,
            vec![format!(
                "~ versioning of {}: {status} -> Enabled",
                self.spec.bucket
            )],
            Todo::Nothing,
        )))
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        cx.ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .put_bucket_versioning()
            .bucket(self.spec.bucket.as_str())
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed(s3_error("PutBucketVersioning")(e), FRESH))?;
        Ok(Applied::Done(self.done()))
    }
}

// ---------------------------------------------------------------------------------------------

/// `s3.create-bucket`: the destination bucket, tagged, with default SSE-KMS under the
/// destination key and Bucket Keys per `bucket_key`. An existing bucket that ferry did not make
/// is used as it is.
pub struct CreateBucket {
    base: Base,
    spec: CreateBucketSpec,
}

/// What the bucket is like now.
enum BucketNow {
    Missing,
    /// It exists; `ours` when it carries this migration's ferry tags.
    Exists {
        ours: bool,
        key: Option<String>,
        bucket_key: bool,
    },
}

impl CreateBucket {
    pub fn new(step: &PlannedStep, spec: CreateBucketSpec) -> Self {
        CreateBucket {
            base: Base::new(step, "s3:CreateBucket"),
            spec,
        }
    }

    fn done(&self) -> StepOutput {
        StepOutput::Bucket(BucketOutput {
            region: Some(self.base.region.clone()),
            ..bucket_output(&self.spec.bucket)
        })
    }

    async fn now(&self, cx: &StepCx<'_, Cx>) -> Result<BucketNow, StepError> {
        let s3 = cx.ctx().aws.s3(&self.base.account, &self.base.region);
        let bucket = self.spec.bucket.as_str();
        let (account, region) = (&self.base.account, &self.base.region);
        let Some(ours) =
            made_by_ferry(cx, account, region, &self.spec.bucket, &self.spec.migration).await?
        else {
            return Ok(BucketNow::Missing);
        };
        let (key, bucket_key) = match s3.get_bucket_encryption().bucket(bucket).send().await {
            Ok(o) => {
                let rule = o
                    .server_side_encryption_configuration()
                    .and_then(|c| c.rules().first());
                (
                    rule.and_then(|r| r.apply_server_side_encryption_by_default())
                        .and_then(|d| d.kms_master_key_id())
                        .map(str::to_string),
                    rule.and_then(|r| r.bucket_key_enabled()).unwrap_or(false),
                )
            }
            Err(e) => {
                let e = s3_error("GetBucketEncryption")(e);
                if !e.is_code(&["ServerSideEncryptionConfigurationNotFoundError"]) {
                    return Err(failed(e, FRESH));
                }
                (None, false)
            }
        };
        Ok(BucketNow::Exists {
            ours,
            key,
            bucket_key,
        })
    }
}

/// Whether the bucket carries this plan's and this migration's ferry tags (which ferry writes
/// first when it creates one); `None` when there is no such bucket.
pub(super) async fn made_by_ferry(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    bucket: &BucketName,
    migration: &crate::ids::MigrationId,
) -> Result<Option<bool>, StepError> {
    let s3 = cx.ctx().aws.s3(account, region);
    let tags = match s3.get_bucket_tagging().bucket(bucket.as_str()).send().await {
        Ok(t) => t.tag_set().to_vec(),
        Err(e) => {
            let e = s3_error("GetBucketTagging")(e);
            if e.is_code(&["NoSuchBucket"]) {
                return Ok(None);
            }
            if !e.is_code(&["NoSuchTagSet"]) {
                return Err(failed(e, &[]));
            }
            Vec::new()
        }
    };
    let plan = cx.ctx().plan.as_str();
    let has = |k: &str, v: &str| tags.iter().any(|t| t.key() == k && t.value() == v);
    Ok(Some(
        has("ferry:plan", plan) && has("ferry:migration", migration.as_str()),
    ))
}

#[async_trait]
impl Step<Cx> for CreateBucket {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let (account, region) = (&self.base.account, &self.base.region);
        let key = key_arn(cx, &self.spec.key, account, region).await?;
        let shown = key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_else(|| self.spec.key.shown.clone());
        let on_off = if self.spec.bucket_key { "on" } else { "off" };
        let encryption = format!("default encryption SSE-KMS with {shown}, bucket key {on_off}");
        match self.now(cx).await? {
            BucketNow::Missing => Ok(Observation::Todo(change(
                Action::Create,
                vec![
                    format!("+ bucket {} in {region}", self.spec.bucket),
                    format!("+ {encryption}"),
                ],
                Todo::Nothing,
            ))),
            BucketNow::Exists { ours: false, .. } => Ok(Observation::Done(self.done())),
            BucketNow::Exists {
                ours: true,
                key: now_key,
                bucket_key,
            } => {
                let same_key = match (&key, &now_key) {
                    (Some(k), Some(n)) => names_key(cx, account, region, n, k).await?,
                    _ => false,
                };
                if same_key && bucket_key == self.spec.bucket_key {
                    return Ok(Observation::Done(self.done()));
                }
                let was = format!(
                    "{}, bucket key {}",
                    now_key.as_deref().unwrap_or("no default key"),
                    if bucket_key { "on" } else { "off" }
                );
                Ok(Observation::Todo(change(
                    Action::Update,
                    vec![format!(
                        "~ default encryption: {was} -> {shown}, bucket key {on_off}"
                    )],
                    Todo::Nothing,
                )))
            }
        }
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "bucket": self.spec.bucket, "tags": self.spec.tags })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let (account, region) = (&self.base.account, &self.base.region);
        let key = existing_key_arn(cx, &self.spec.key, account, region).await?;
        let s3 = cx.ctx().aws.s3(account, region);
        let bucket = self.spec.bucket.as_str();
        if let BucketNow::Missing = self.now(cx).await? {
            let mut req = s3.create_bucket().bucket(bucket);
            if region != "us-east-1" {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region.as_str()))
                        .build(),
                );
            }
            if let Err(e) = req.send().await {
                let e = s3_error("CreateBucket")(e);
                if !e.is_code(&["BucketAlreadyOwnedByYou"]) {
                    return Err(failed(e, &[]));
                }
            }
            // Tags first: they are how a later run knows the bucket is ferry's to configure.
            let mut tagging = Tagging::builder();
            for (k, v) in &self.spec.tags {
                tagging = tagging.tag_set(Tag::builder().key(k).value(v).build().expect("set"));
            }
            s3.put_bucket_tagging()
                .bucket(bucket)
                .tagging(tagging.build().expect("tag set"))
                .send()
                .await
                .map_err(|e| failed(s3_error("PutBucketTagging")(e), FRESH))?;
        }
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::AwsKms)
                    .kms_master_key_id(key.as_str())
                    .build()
                    .expect("algorithm set"),
            )
            .bucket_key_enabled(self.spec.bucket_key)
            .build();
        s3.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .expect("rules set"),
            )
            .send()
            .await
            .map_err(|e| failed(s3_error("PutBucketEncryption")(e), FRESH))?;
        Ok(Applied::Done(self.done()))
    }
}

// ---------------------------------------------------------------------------------------------

/// `s3.allow-replication-role`: the destination bucket policy lets another account's
/// replication role replicate into it (statements merged by Sid).
pub struct AllowReplicationRole {
    base: Base,
    spec: BucketPolicySpec,
    gate: GateKey,
}

impl AllowReplicationRole {
    pub fn new(step: &PlannedStep, spec: BucketPolicySpec) -> Self {
        let base = Base::new(step, "s3:PutBucketPolicy");
        AllowReplicationRole {
            gate: GateKey::new(
                super::BUCKET_POLICY_GATE,
                &format!("{}/{}", base.account, spec.bucket),
            ),
            base,
            spec,
        }
    }

    pub(super) fn statements(&self, cx: &Cx) -> Vec<Value> {
        let role = role_of(cx, &self.spec.role, &self.spec.role_account);
        let sid = &self.spec.sid;
        let b = &self.spec.bucket;
        vec![
            json!({
                "Sid": format!("{sid}-objects"),
                "Effect": "Allow",
                "Principal": { "AWS": role },
                "Action": [
                    "s3:ReplicateObject",
                    "s3:ReplicateDelete",
                    "s3:ReplicateTags",
                    "s3:ObjectOwnerOverrideToBucketOwner"
                ],
                "Resource": format!("arn:aws:s3:::{b}/*"),
            }),
            json!({
                "Sid": format!("{sid}-bucket"),
                "Effect": "Allow",
                "Principal": { "AWS": role },
                "Action": ["s3:GetBucketVersioning", "s3:PutBucketVersioning"],
                "Resource": format!("arn:aws:s3:::{b}"),
            }),
        ]
    }

    pub(super) async fn current(&self, cx: &StepCx<'_, Cx>) -> Result<Value, StepError> {
        let out = cx
            .ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .get_bucket_policy()
            .bucket(self.spec.bucket.as_str())
            .send()
            .await;
        match out {
            Ok(o) => policy::parse(
                o.policy(),
                &format!("the bucket policy of {}", self.spec.bucket),
            ),
            Err(e) => {
                let e = s3_error("GetBucketPolicy")(e);
                if e.is_code(&["NoSuchBucketPolicy", "NoSuchBucket"]) {
                    Ok(json!({}))
                } else {
                    Err(failed(e, &[]))
                }
            }
        }
    }
}

#[async_trait]
impl Step<Cx> for AllowReplicationRole {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let before = self.current(cx).await?;
        let after = policy::merge(&before, &self.statements(cx.ctx()));
        Ok(match policy_edit(before, &after) {
            Some(c) => Observation::Todo(c),
            None => Observation::Done(StepOutput::Bucket(bucket_output(&self.spec.bucket))),
        })
    }

    fn intent(&self, change: &Change) -> Value {
        json!({ "policy_before": change.policy_before() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let before = self.current(cx).await?;
        let after = policy::merge(&before, &self.statements(cx.ctx()));
        cx.ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .put_bucket_policy()
            .bucket(self.spec.bucket.as_str())
            .policy(after.to_string())
            .send()
            .await
            // A role made seconds ago is refused as an invalid principal for a while.
            .map_err(|e| {
                failed(
                    s3_error("PutBucketPolicy")(e),
                    &["MalformedPolicy", "NoSuchBucket"],
                )
            })?;
        Ok(Applied::Done(StepOutput::Bucket(bucket_output(
            &self.spec.bucket,
        ))))
    }
}

// ---------------------------------------------------------------------------------------------

/// `s3.put-replication`: ferry's rule in the source bucket's replication configuration, merged
/// by rule id: every other rule stays exactly as it is.
pub struct PutReplication {
    base: Base,
    spec: ReplicationSpec,
    gate: GateKey,
}

/// A bucket's replication configuration; `None` when it has none.
pub(super) async fn replication_configuration(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    bucket: &BucketName,
) -> Result<Option<ReplicationConfiguration>, StepError> {
    let out = cx
        .ctx()
        .aws
        .s3(account, region)
        .get_bucket_replication()
        .bucket(bucket.as_str())
        .send()
        .await;
    match out {
        Ok(o) => Ok(o.replication_configuration),
        Err(e) => {
            let e = s3_error("GetBucketReplication")(e);
            if e.is_code(&["ReplicationConfigurationNotFoundError"]) {
                Ok(None)
            } else {
                Err(failed(e, &[]))
            }
        }
    }
}

/// A rule as ferry compares and shows it.
// Rules of the older schema carry their prefix on the rule itself, not in a filter.
#[allow(deprecated)]
pub fn rule_json(r: &ReplicationRule) -> Value {
    let d = r.destination();
    json!({
        "id": r.id(),
        "priority": r.priority(),
        "status": r.status().as_str(),
        // S3 reads back an absent prefix as "" and absent delete-marker replication as
        // Disabled: the same rule, not a change.
        "prefix": r.filter().and_then(|f| f.prefix()).or(r.prefix()).unwrap_or(""),
        "delete_markers": r
            .delete_marker_replication()
            .and_then(|m| m.status())
            .map_or("Disabled", |s| s.as_str()),
        "sse_kms_encrypted_objects": r
            .source_selection_criteria()
            .and_then(|c| c.sse_kms_encrypted_objects())
            .map(|s| s.status().as_str()),
        "destination": d.map(|d| d.bucket()),
        "destination_account": d.and_then(|d| d.account()),
        "owner_override": d
            .and_then(|d| d.access_control_translation())
            .map(|a| a.owner().as_str()),
        "replica_kms_key_id": d
            .and_then(|d| d.encryption_configuration())
            .and_then(|e| e.replica_kms_key_id()),
    })
}

/// The fields of a rule that differ: `~ rule <id>: <field> <was> -> <wanted>`.
fn rule_diff(id: &str, was: &Value, wanted: &Value) -> Vec<String> {
    let (Some(was), Some(wanted)) = (was.as_object(), wanted.as_object()) else {
        return Vec::new();
    };
    wanted
        .iter()
        .filter(|(k, v)| was.get(*k) != Some(*v))
        .map(|(k, v)| {
            let old = was.get(k).cloned().unwrap_or(Value::Null);
            format!("~ rule {id}: {k} {old} -> {v}")
        })
        .collect()
}

/// `rules` with `ours` in place of the rule with its id (or added): every other rule stays
/// exactly as it is, in its place.
fn merge_rules(mut rules: Vec<ReplicationRule>, ours: ReplicationRule) -> Vec<ReplicationRule> {
    match rules.iter().position(|r| r.id() == ours.id()) {
        Some(i) => rules[i] = ours,
        None => rules.push(ours),
    }
    rules
}

impl PutReplication {
    pub fn new(step: &PlannedStep, spec: ReplicationSpec) -> Self {
        let base = Base::new(step, "s3:PutBucketReplication");
        PutReplication {
            gate: GateKey::new(
                super::REPLICATION_GATE,
                &format!("{}/{}", base.account, spec.bucket),
            ),
            base,
            spec,
        }
    }

    pub(super) fn role(&self, cx: &Cx) -> String {
        role_of(
            cx,
            &self.spec.role,
            &AccountName::new(self.base.account.as_str()),
        )
    }

    fn rule(&self, cx: &Cx, replica_key: &str) -> ReplicationRule {
        let dst_account = &self.spec.destination_account;
        let cross = cx.account_id(dst_account)
            != cx.account_id(&AccountName::new(self.base.account.as_str()));
        let mut dest = Destination::builder()
            .bucket(format!("arn:aws:s3:::{}", self.spec.destination_bucket))
            .encryption_configuration(
                EncryptionConfiguration::builder()
                    .replica_kms_key_id(replica_key)
                    .build(),
            );
        if cross {
            dest = dest
                .account(cx.account_id(dst_account))
                .access_control_translation(
                    AccessControlTranslation::builder()
                        .owner(OwnerOverride::Destination)
                        .build()
                        .expect("owner set"),
                );
        }
        let rule = &self.spec.rule;
        let delete_markers = if rule.delete_markers {
            DeleteMarkerReplicationStatus::Enabled
        } else {
            DeleteMarkerReplicationStatus::Disabled
        };
        ReplicationRule::builder()
            .id(&rule.id)
            .priority(rule.priority as i32)
            .status(ReplicationRuleStatus::Enabled)
            .filter(
                ReplicationRuleFilter::builder()
                    .prefix(&rule.prefix)
                    .build(),
            )
            .delete_marker_replication(
                DeleteMarkerReplication::builder()
                    .status(delete_markers)
                    .build(),
            )
            .source_selection_criteria(
                SourceSelectionCriteria::builder()
                    .sse_kms_encrypted_objects(
                        SseKmsEncryptedObjects::builder()
                            .status(SseKmsEncryptedObjectsStatus::Enabled)
                            .build()
                            .expect("status set"),
                    )
                    .build(),
            )
            .destination(dest.build().expect("bucket set"))
            .build()
            .expect("status set")
    }

    async fn current(
        &self,
        cx: &StepCx<'_, Cx>,
    ) -> Result<Option<ReplicationConfiguration>, StepError> {
        replication_configuration(cx, &self.base.account, &self.base.region, &self.spec.bucket)
            .await
    }

    fn destination_region(&self) -> &str {
        self.spec
            .destination_region
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("")
    }

    fn done(&self) -> StepOutput {
        StepOutput::Bucket(BucketOutput {
            rule: Some(self.spec.rule.id.clone()),
            ..bucket_output(&self.spec.bucket)
        })
    }
}

#[async_trait]
impl Step<Cx> for PutReplication {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let account = self.spec.destination_account.as_str();
        let key = key_arn(cx, &self.spec.key, account, self.destination_region()).await?;
        let shown = key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_else(|| self.spec.key.shown.clone());
        let wanted = rule_json(&self.rule(cx.ctx(), &shown));
        let role = self.role(cx.ctx());
        let rule_id = self.spec.rule.id.as_str();
        let now = self.current(cx).await?;
        let (now_role, mut now_rule) = match &now {
            Some(c) => (
                Some(c.role().to_string()),
                c.rules()
                    .iter()
                    .find(|r| r.id() == Some(rule_id))
                    .map(rule_json),
            ),
            None => (None, None),
        };
        // The replica key named by id, alias or alias ARN is the same key: not a change.
        if let (Some(k), Some(r)) = (&key, now_rule.as_mut())
            && let Some(named) = r["replica_kms_key_id"].as_str().map(str::to_string)
            && named != k.as_str()
            && names_key(cx, account, self.destination_region(), &named, k).await?
        {
            r["replica_kms_key_id"] = json!(k.as_str());
        }
        if key.is_some()
            && now_role.as_deref() == Some(role.as_str())
            && now_rule.as_ref() == Some(&wanted)
        {
            return Ok(Observation::Done(self.done()));
        }
        let mut diff = Vec::new();
        if now_role.as_deref() != Some(role.as_str()) {
            diff.push(format!(
                "~ role: {} -> {role}",
                now_role.as_deref().unwrap_or("(none)")
            ));
        }
        match &now_rule {
            Some(r) => diff.extend(rule_diff(rule_id, r, &wanted)),
            None => diff.push(format!("+ rule {wanted}")),
        }
        if let Some(c) = &now {
            for r in c.rules().iter().filter(|r| r.id() != Some(rule_id)) {
                diff.push(format!("= rule {} (kept)", r.id().unwrap_or("(no id)")));
            }
        }
        let action = if now.is_some() {
            Action::Update
        } else {
            Action::Create
        };
        Ok(Observation::Todo(change(action, diff, Todo::Nothing)))
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let account = self.spec.destination_account.as_str();
        let key = existing_key_arn(cx, &self.spec.key, account, self.destination_region()).await?;
        let wanted = self.rule(cx.ctx(), key.as_str());
        // Merge into the live configuration, read right before writing.
        let rules = merge_rules(
            self.current(cx)
                .await?
                .map(|c| c.rules().to_vec())
                .unwrap_or_default(),
            wanted,
        );
        let config = ReplicationConfiguration::builder()
            .role(self.role(cx.ctx()))
            .set_rules(Some(rules))
            .build()
            .expect("role and rules set");
        cx.ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .put_bucket_replication()
            .bucket(self.spec.bucket.as_str())
            .replication_configuration(config)
            .send()
            .await
            .map_err(|e| failed(s3_error("PutBucketReplication")(e), &[]))?;
        Ok(Applied::Done(self.done()))
    }
}

// ---------------------------------------------------------------------------------------------

/// One object of a listing.
#[derive(Debug, Clone)]
struct Object {
    key: String,
    size: i64,
    /// Seconds since the epoch.
    modified: i64,
    /// As listed; a copy is STANDARD unless the request names the class (S3 user guide,
    /// "Copying objects"), so a copy of any other class must name it.
    storage_class: Option<String>,
    /// The version listed (source only). A copy names it, so an object overwritten after the
    /// listing is copied as listed and its newer version is left to replication, which the rule
    /// already covers. None for an object written before versioning (version `null`).
    version: Option<String>,
}

/// How a listing reads its bucket.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    /// ListObjectsV2: the current objects (the destination).
    Current,
    /// ListObjectVersions, keeping each key's current version that is not a delete marker
    /// (the source: a copy names its version id).
    Versions,
}

/// A bucket listing read a page at a time (never the whole listing in memory). Keys come in
/// S3's order (UTF-8 binary), which is what the merge join relies on.
struct Listing {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    read: Read,
    limiter: Vec<BucketKey>,
    page: VecDeque<Object>,
    /// ListObjectsV2's continuation token, or ListObjectVersions' key marker.
    token: Option<String>,
    version_marker: Option<String>,
    done: bool,
    /// A missing bucket lists as empty (a destination to be created).
    missing_is_empty: bool,
}

fn listed_class(c: Option<&str>) -> Option<String> {
    c.filter(|c| *c != "STANDARD").map(str::to_string)
}

impl Listing {
    async fn next(&mut self, limits: &Limits) -> Result<Option<Object>, AwsError> {
        loop {
            if let Some(o) = self.page.pop_front() {
                return Ok(Some(o));
            }
            if self.done {
                return Ok(None);
            }
            limits.take(&self.limiter).await;
            let read = match self.read {
                Read::Current => self.current_page().await,
                Read::Versions => self.versions_page().await,
            };
            if let Err(e) = read {
                if self.missing_is_empty && e.is_code(&["NoSuchBucket"]) {
                    self.done = true;
                    continue;
                }
                return Err(e);
            }
        }
    }

    async fn current_page(&mut self) -> Result<(), AwsError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .set_continuation_token(self.token.clone())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3", "ListObjectsV2", e))?;
        self.page.extend(out.contents().iter().map(|o| Object {
            key: o.key().unwrap_or_default().to_string(),
            size: o.size().unwrap_or(0),
            modified: o.last_modified().map(|t| t.secs()).unwrap_or(0),
            storage_class: listed_class(o.storage_class().map(|c| c.as_str())),
            version: None,
        }));
        self.token = out.next_continuation_token().map(str::to_string);
        self.done = !out.is_truncated().unwrap_or(false) || self.token.is_none();
        Ok(())
    }

    async fn versions_page(&mut self) -> Result<(), AwsError> {
        let from = crate::lookup::VersionsFrom {
            key: self.token.clone(),
            version: self.version_marker.clone(),
        };
        let (out, next) =
            crate::lookup::object_versions_page(&self.client, &self.bucket, &self.prefix, from)
                .await?;
        // A key whose current version is a delete marker has no current version here: it is
        // deleted, and S3 replication would not copy it either.
        self.page.extend(
            out.versions()
                .iter()
                .filter(|v| v.is_latest() == Some(true))
                .map(|v| Object {
                    key: v.key().unwrap_or_default().to_string(),
                    size: v.size().unwrap_or(0),
                    modified: v.last_modified().map(|t| t.secs()).unwrap_or(0),
                    storage_class: listed_class(v.storage_class().map(|c| c.as_str())),
                    version: v.version_id().filter(|v| *v != "null").map(str::to_string),
                }),
        );
        self.done = next.is_none();
        let next = next.unwrap_or_default();
        self.token = next.key;
        self.version_marker = next.version;
        Ok(())
    }
}

/// The source objects the destination lacks: a merge join of the two sorted listings,
/// streaming. A destination object written no earlier than the source's is kept: it is a copy
/// or a replica of it, or something newer that a backfill must not overwrite (S3 replication
/// does not either). An older one is stale and copied again.
struct Missing {
    source: Listing,
    destination: Listing,
    head: Option<Object>,
    started: bool,
    present: u64,
}

impl Missing {
    async fn next(&mut self, limits: &Limits) -> Result<Option<Object>, AwsError> {
        if !self.started {
            self.head = self.destination.next(limits).await?;
            self.started = true;
        }
        while let Some(s) = self.source.next(limits).await? {
            while self.head.as_ref().is_some_and(|d| d.key < s.key) {
                self.head = self.destination.next(limits).await?;
            }
            if self
                .head
                .as_ref()
                .is_some_and(|d| d.key == s.key && d.modified >= s.modified)
            {
                self.present += 1;
                continue;
            }
            return Ok(Some(s));
        }
        Ok(None)
    }
}

/// Copies in flight at once.
const COPY_CONCURRENCY: usize = 64;

/// `s3.backfill`: copy every source object the destination lacks with CopyObject, SSE-KMS
/// under the destination key, keeping key, metadata and content type. Resumable: objects
/// already in the destination (same key and size) are skipped, so a resumed run copies only
/// what is still missing.
pub struct Backfill {
    base: Base,
    spec: BackfillSpec,
    /// What the last observation found missing, for the apply that follows it: the run
    /// observes a step right before applying it (after the replication rule is in place), so
    /// the apply copies from that listing instead of listing both buckets again. At most
    /// `inline_max` objects; taken by the apply, so a retried apply lists afresh.
    listed: std::sync::Mutex<Option<Listed>>,
}

/// The objects an observation found missing, and how many were already there.
struct Listed {
    objects: std::vec::IntoIter<Object>,
    present: u64,
}

/// Where an apply takes the objects to copy from.
enum ToCopy {
    Listed(Listed),
    Streaming(Box<Missing>),
}

impl ToCopy {
    async fn next(&mut self, limits: &Limits) -> Result<Option<Object>, AwsError> {
        match self {
            ToCopy::Listed(l) => Ok(l.objects.next()),
            ToCopy::Streaming(m) => m.next(limits).await,
        }
    }

    fn present(&self) -> u64 {
        match self {
            ToCopy::Listed(l) => l.present,
            ToCopy::Streaming(m) => m.present,
        }
    }
}

impl Backfill {
    pub fn new(step: &PlannedStep, spec: BackfillSpec) -> Self {
        Backfill {
            base: Base::new(step, ""),
            spec,
            listed: Default::default(),
        }
    }
    fn src_account(&self) -> &str {
        self.spec.source_account.as_str()
    }
    fn src_bucket(&self) -> &str {
        self.spec.source_bucket.as_str()
    }
    fn src_region(&self) -> &str {
        self.spec
            .source_region
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("")
    }
    fn dst_bucket(&self) -> &str {
        self.spec.destination_bucket.as_str()
    }
    fn prefix(&self) -> &str {
        &self.spec.prefix
    }
    fn inline_max(&self) -> u64 {
        self.spec.inline_max
    }

    fn missing(&self, cx: &Cx) -> Missing {
        let src_region = self.src_region();
        let listing = |client, bucket: &str, account: &str, missing_is_empty| Listing {
            client,
            bucket: bucket.to_string(),
            prefix: self.prefix().to_string(),
            read: if missing_is_empty {
                Read::Current
            } else {
                Read::Versions
            },
            limiter: vec![BucketKey::new(
                &format!("{account}/{bucket}"),
                "s3:read-per-prefix",
            )],
            page: VecDeque::new(),
            token: None,
            version_marker: None,
            done: false,
            missing_is_empty,
        };
        Missing {
            source: listing(
                cx.aws.s3(self.src_account(), src_region),
                self.src_bucket(),
                self.src_account(),
                false,
            ),
            destination: listing(
                cx.aws.s3(&self.base.account, &self.base.region),
                self.dst_bucket(),
                &self.base.account,
                true,
            ),
            head: None,
            started: false,
            present: 0,
        }
    }

    fn cross_account(&self, cx: &Cx) -> bool {
        cx.account_id(&self.spec.source_account)
            != cx.account_id(&AccountName::new(self.base.account.as_str()))
    }
}

/// Percent-encodes an object key for `x-amz-copy-source` (slashes kept).
fn encode_key(key: &str) -> String {
    crate::aws::encoding::uri_encode(key, true)
}

/// The first path segment of a key: S3 scales request rates per prefix.
fn prefix_of(key: &str) -> &str {
    key.split_once('/').map(|(p, _)| p).unwrap_or("")
}

#[derive(Default)]
struct Tally {
    objects: AtomicU64,
    bytes: AtomicU64,
    /// Objects not copied for a reason of their own, which does not stop the others.
    skipped: std::sync::Mutex<Skipped>,
}

/// Why one object was not copied, when that must not stop the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    /// That version was deleted between the listing and the copy: nothing left to copy.
    Gone,
    /// In an archive storage class and not restored (S3 answers InvalidObjectState).
    Archived,
    /// Encrypted with a customer-provided key (SSE-C): a copy needs the key, ferry has none.
    CustomerKey,
}

impl Skip {
    /// The per-object errors that are the object's, not the run's.
    fn of(e: &StepError) -> Option<Skip> {
        match e.code.as_str() {
            "NoSuchKey" | "NoSuchVersion" => Some(Skip::Gone),
            // moto answers ObjectNotInActiveTierError where S3 answers InvalidObjectState.
            "InvalidObjectState" | "ObjectNotInActiveTierError" => Some(Skip::Archived),
            "InvalidRequest" if e.message.contains("Server Side Encryption") => {
                Some(Skip::CustomerKey)
            }
            _ => None,
        }
    }

    fn says(self) -> &'static str {
        match self {
            Skip::Gone => "deleted since they were listed (not copied, as replication would not)",
            Skip::Archived => "archived and not restored (restore them, then apply again)",
            Skip::CustomerKey => {
                "encrypted with a customer-provided key (SSE-C), which a copy needs: copy them yourself"
            }
        }
    }
}

/// How many objects were skipped for each reason, and the first few keys of each (in key
/// order, whatever order the copies ended in).
#[derive(Default)]
struct Skipped(std::collections::BTreeMap<Skip, (u64, Vec<String>)>);

/// Keys named per reason in a message.
const SKIPPED_SHOWN: usize = 5;

impl Skipped {
    fn add(&mut self, why: Skip, key: &str) {
        let (n, keys) = self.0.entry(why).or_default();
        *n += 1;
        let at = keys.partition_point(|k| k.as_str() < key);
        if at < SKIPPED_SHOWN {
            keys.insert(at, key.to_string());
            keys.truncate(SKIPPED_SHOWN);
        }
    }

    fn count(&self, why: Skip) -> u64 {
        self.0.get(&why).map(|(n, _)| *n).unwrap_or(0)
    }

    /// "3 objects archived and not restored (...): a, b, c"; one line per reason.
    fn lines(&self, keep: impl Fn(Skip) -> bool) -> Vec<String> {
        self.0
            .iter()
            .filter(|(why, _)| keep(**why))
            .map(|(why, (n, keys))| {
                let more = if *n as usize > keys.len() {
                    ", ..."
                } else {
                    ""
                };
                format!("{n} objects {}: {}{more}", why.says(), keys.join(", "))
            })
            .collect()
    }
}

/// Everything one copy needs, shared by the copy tasks.
struct Copier {
    /// The destination account's client in the destination region (the copies).
    client: aws_sdk_s3::Client,
    /// The destination account's client in the source region: reads of the source (S3 does
    /// not answer a bucket's requests from another region's endpoint).
    src_client: aws_sdk_s3::Client,
    limits: Arc<Limits>,
    src_bucket: String,
    dst_bucket: String,
    dst_account: String,
    src_account: String,
    src_region: String,
    dst_region: String,
    key: String,
    bucket_key: bool,
    /// Objects larger than this are copied in parts.
    multipart_threshold: u64,
    tally: Tally,
}

impl Copier {
    async fn copy(&self, o: Object) -> Result<(), StepError> {
        let copied = if o.size.max(0) as u64 > self.multipart_threshold {
            self.copy_in_parts(&o).await
        } else {
            self.copy_at_once(&o).await
        };
        match copied {
            Ok(()) => {
                self.tally.objects.fetch_add(1, Ordering::Relaxed);
                self.tally
                    .bytes
                    .fetch_add(o.size.max(0) as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => match Skip::of(&e) {
                Some(why) => {
                    self.tally.skipped.lock().expect("skipped").add(why, &o.key);
                    Ok(())
                }
                None => Err(StepError {
                    message: format!("copying {}: {}", o.key, e.message),
                    ..e
                }),
            },
        }
    }

    fn tokens(&self, o: &Object) -> Vec<BucketKey> {
        let p = prefix_of(&o.key);
        vec![
            BucketKey::new(
                &format!("{}/{}/{p}", self.dst_account, self.dst_bucket),
                "s3:write-per-prefix",
            ),
            BucketKey::new(
                &format!("{}/{}/{p}", self.src_account, self.src_bucket),
                "s3:read-per-prefix",
            ),
            bucket(&self.dst_account, &self.dst_region, "kms:cryptographic"),
            bucket(&self.src_account, &self.src_region, "kms:cryptographic"),
        ]
    }

    async fn copy_in_parts(&self, o: &Object) -> Result<(), StepError> {
        super::multipart::PartCopy {
            client: self.client.clone(),
            src_client: self.src_client.clone(),
            limits: self.limits.clone(),
            tokens: self.tokens(o),
            src_bucket: self.src_bucket.clone(),
            key: o.key.clone(),
            version: o.version.clone(),
            copy_source: copy_source(&self.src_bucket, o),
            size: o.size.max(0) as u64,
            dst_bucket: self.dst_bucket.clone(),
            kms_key: self.key.clone(),
            bucket_key: self.bucket_key,
            storage_class: o.storage_class.clone(),
        }
        .run()
        .await
    }

    async fn copy_at_once(&self, o: &Object) -> Result<(), StepError> {
        let tokens = self.tokens(o);
        // A copy into a versioned bucket is not idempotent (each makes a version), so it is
        // sent once; after a failure that may have done the work, the destination is looked at
        // before the copy is sent again.
        let ambiguous = std::sync::atomic::AtomicBool::new(false);
        with_retries(&RetryPolicies::within_a_step(), || async {
            self.limits.take(&tokens).await;
            if ambiguous.load(Ordering::Relaxed) && self.landed(o).await? {
                self.limits.succeeded(&tokens);
                return Ok(());
            }
            let out = self
                .client
                .copy_object()
                .bucket(&self.dst_bucket)
                .key(&o.key)
                .copy_source(copy_source(&self.src_bucket, o))
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(&self.key)
                .bucket_key_enabled(self.bucket_key)
                .set_storage_class(o.storage_class.as_deref().map(StorageClass::from))
                .customize()
                .config_override(super::sent_once_s3())
                .send()
                .await;
            match out {
                Ok(_) => {
                    self.limits.succeeded(&tokens);
                    Ok(())
                }
                Err(e) => {
                    let e = failed(s3_error("CopyObject")(e), &[]);
                    match e.class {
                        ErrorClass::Throttled => self.limits.throttled(&tokens),
                        ErrorClass::Transient => ambiguous.store(true, Ordering::Relaxed),
                        _ => {}
                    }
                    Err(e)
                }
            }
        })
        .await
    }
}

impl Copier {
    /// Whether a copy of `o` is in the destination already (an earlier attempt's answer was
    /// lost after it landed): an object there no older than the source's.
    async fn landed(&self, o: &Object) -> Result<bool, StepError> {
        match self
            .client
            .head_object()
            .bucket(&self.dst_bucket)
            .key(&o.key)
            .send()
            .await
        {
            Ok(h) => Ok(h.last_modified().is_some_and(|t| t.secs() >= o.modified)),
            Err(e) => {
                let e = s3_error("HeadObject")(e);
                if e.status == Some(404) || e.is_code(&["NotFound", "NoSuchKey"]) {
                    Ok(false)
                } else {
                    Err(failed(e, &[]))
                }
            }
        }
    }
}

/// `x-amz-copy-source`: the bucket, the encoded key and the listed version (`null` for an
/// object written before versioning: it has that version id, and naming it keeps a copy from
/// taking a newer version written meanwhile).
fn copy_source(bucket: &str, o: &Object) -> String {
    format!(
        "{bucket}/{}?versionId={}",
        encode_key(&o.key),
        encode_key(o.version.as_deref().unwrap_or("null"))
    )
}

#[async_trait]
impl Step<Cx> for Backfill {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let mut m = self.missing(cx.ctx());
        let (mut objects, mut bytes, mut in_parts) = (0u64, 0u64, 0u64);
        let mut found = Vec::new();
        *self.listed.lock().expect("listing") = None;
        while let Some(o) = m.next(cx.limits()).await.map_err(|e| failed(e, &[]))? {
            objects += 1;
            bytes += o.size.max(0) as u64;
            if o.size.max(0) as u64 > self.spec.multipart_threshold {
                in_parts += 1;
            }
            found.push(o);
            // More than a listing worth keeping (`backfill: inline` on a big bucket): the
            // apply streams both listings again instead.
            if objects > self.inline_max() {
                return Ok(Observation::Todo(change(
                    Action::Create,
                    vec![format!(
                        "+ copy more than {} objects from {} to {}, SSE-KMS with {} (listing stopped there; the copy streams the listings)",
                        self.inline_max(),
                        self.src_bucket(),
                        self.dst_bucket(),
                        self.spec.key.shown
                    )],
                    Todo::Backfill {
                        objects: 0,
                        bytes: 0,
                    },
                )));
            }
        }
        if objects == 0 {
            return Ok(Observation::Done(StepOutput::Backfill(BackfillOutput {
                present: m.present,
                ..Default::default()
            })));
        }
        *self.listed.lock().expect("listing") = Some(Listed {
            objects: found.into_iter(),
            present: m.present,
        });
        let mut diff = vec![format!(
            "+ copy {objects} objects ({bytes} bytes) from {} to {}, SSE-KMS with {} ({} already there)",
            self.src_bucket(),
            self.dst_bucket(),
            self.spec.key.shown,
            m.present
        )];
        if in_parts > 0 {
            diff.push(format!(
                "+ {in_parts} of them larger than {} bytes, copied in parts (UploadPartCopy)",
                self.spec.multipart_threshold
            ));
        }
        if self.cross_account(cx.ctx()) {
            diff.push(format!(
                "! the copies run as account `{}`: it must be allowed to read bucket {} and to decrypt with its key (ferry does not grant this)",
                self.base.account,
                self.src_bucket()
            ));
        }
        Ok(Observation::Todo(change(
            Action::Create,
            diff,
            Todo::Backfill { objects, bytes },
        )))
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let (total, total_bytes) = match change.todo {
            Todo::Backfill { objects, bytes } => (objects, bytes),
            _ => (0, 0),
        };
        let (account, region) = (&self.base.account, &self.base.region);
        let key = existing_key_arn(cx, &self.spec.key, account, region)
            .await?
            .to_string();
        let copier = Arc::new(Copier {
            client: cx.ctx().aws.s3(&self.base.account, &self.base.region),
            src_client: cx.ctx().aws.s3(&self.base.account, self.src_region()),
            limits: cx.limits().clone(),
            src_bucket: self.src_bucket().to_string(),
            dst_bucket: self.dst_bucket().to_string(),
            dst_account: self.base.account.clone(),
            src_account: self.src_account().to_string(),
            src_region: self.src_region().to_string(),
            dst_region: self.base.region.clone(),
            key,
            bucket_key: self.spec.bucket_key,
            multipart_threshold: self.spec.multipart_threshold,
            tally: Tally::default(),
        });
        let listed = self.listed.lock().expect("listing").take();
        let mut m = match listed {
            Some(l) => ToCopy::Listed(l),
            None => ToCopy::Streaming(Box::new(self.missing(cx.ctx()))),
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut first_error: Option<StepError> = None;
        let started = Instant::now();
        let mut last_report = Instant::now();
        // Progress in objects and bytes goes to the run's event stream (progress bars, logs).
        let report = |c: &Copier| {
            let n = c.tally.objects.load(Ordering::Relaxed);
            let b = c.tally.bytes.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let percent = if total == 0 {
                100.0
            } else {
                (n as f64 * 100.0 / total as f64) as f32
            };
            cx.progress(
                percent,
                format!(
                    "{n}/{total} objects, {b}/{total_bytes} bytes copied ({:.0} objects/s)",
                    n as f64 / secs
                ),
            );
        };
        loop {
            while tasks.len() >= COPY_CONCURRENCY {
                if let Some(Ok(Err(e))) = tasks.join_next().await {
                    first_error.get_or_insert(e);
                }
            }
            if first_error.is_some() {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                report(&copier);
                last_report = Instant::now();
            }
            let next = match m.next(cx.limits()).await {
                Ok(n) => n,
                Err(e) => {
                    first_error = Some(failed(e, &[]));
                    break;
                }
            };
            let Some(o) = next else { break };
            let c = copier.clone();
            tasks.spawn(async move { c.copy(o).await });
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                first_error.get_or_insert(e);
            }
        }
        report(&copier);
        if let Some(e) = first_error {
            return Err(e);
        }
        let skipped = copier.tally.skipped.lock().expect("skipped");
        // Objects ferry could not copy fail the step, after every other object was copied:
        // a backup that silently lacks them is worse than a failed run.
        let missed = skipped.lines(|why| why != Skip::Gone);
        if !missed.is_empty() {
            let gone = skipped.lines(|why| why == Skip::Gone);
            return Err(StepError::permanent(
                "ObjectsNotCopied",
                format!(
                    "{}; every other object was copied{}",
                    missed.join("; "),
                    gone.iter().map(|g| format!("; {g}")).collect::<String>()
                ),
            ));
        }
        Ok(Applied::Done(StepOutput::Backfill(BackfillOutput {
            copied: copier.tally.objects.load(Ordering::Relaxed),
            bytes: copier.tally.bytes.load(Ordering::Relaxed),
            present: m.present(),
            seconds: started.elapsed().as_secs_f64(),
            gone: skipped.count(Skip::Gone),
            gone_keys: skipped
                .0
                .get(&Skip::Gone)
                .map(|(_, k)| k.clone())
                .unwrap_or_default(),
        })))
    }
}

/// What `ferry verify` read of existing objects' replication status.
#[derive(Debug, Default)]
pub struct StatusSample {
    pub objects: u64,
    pub completed: u64,
    pub pending: u64,
    pub failed: u64,
    /// No status: written before the rule, or not covered by it (a backfill's work).
    pub none: u64,
    pub failed_keys: Vec<String>,
}

impl StatusSample {
    pub fn text(&self, migration: &str) -> String {
        let mut t = format!(
            "{} {migration}: sampled {} objects: {} COMPLETED, {} PENDING, {} FAILED, {} without a status",
            if self.failed > 0 { "FAILED" } else { "ok    " },
            self.objects,
            self.completed,
            self.pending,
            self.failed,
            self.none
        );
        if self.failed > 0 {
            t.push_str(&format!(
                "\n  FAILED: {}{}\n  fix the cause, then set `backfill: batch` and `redrive_failed: true` and `ferry apply`: an S3 Batch Replication job replicates them again",
                self.failed_keys.join(", "),
                if self.failed as usize > self.failed_keys.len() { ", ..." } else { "" }
            ));
        }
        t
    }
}

/// The replication status of up to `n` current objects of a migration's source bucket (under
/// its rule's prefix; ferry's canaries left out), one HeadObject each.
pub async fn sample_status(
    cx: &Cx,
    resolution: &crate::resolve::Resolution,
    m: &crate::plan::S3Replication,
    n: usize,
) -> Result<StatusSample, AwsError> {
    use futures::StreamExt;
    let account = m.source.account.value.as_str();
    let bucket = m.source.bucket.value.as_str();
    let region = resolution
        .bucket_region(account, bucket)
        .unwrap_or_else(|| "us-east-1".into());
    let prefix = m
        .rule
        .as_ref()
        .and_then(|r| r.value.prefix.as_ref())
        .map(|p| p.value.clone())
        .unwrap_or_default();
    let s3 = cx.aws.s3(account, &region);
    let mut keys = Vec::new();
    let mut from = Some(crate::lookup::VersionsFrom::default());
    while let Some(f) = from.take().filter(|_| keys.len() < n) {
        let (out, next) = crate::lookup::object_versions_page(&s3, bucket, &prefix, f).await?;
        from = next;
        for v in out.versions() {
            let key = v.key().unwrap_or_default();
            if v.is_latest() == Some(true) && !key.contains("ferry-canary/") && keys.len() < n {
                keys.push(key.to_string());
            }
        }
    }
    let statuses: Vec<Result<(String, Option<String>), AwsError>> = futures::stream::iter(keys)
        .map(|k| {
            let s3 = s3.clone();
            async move {
                let h = s3
                    .head_object()
                    .bucket(bucket)
                    .key(&k)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("s3", "HeadObject", e))?;
                Ok((k, h.replication_status().map(|s| s.as_str().to_string())))
            }
        })
        .buffered(16)
        .collect()
        .await;
    let mut sample = StatusSample::default();
    for r in statuses {
        let (key, status) = r?;
        sample.objects += 1;
        match status.as_deref() {
            Some("COMPLETED") | Some("COMPLETE") => sample.completed += 1,
            Some("PENDING") => sample.pending += 1,
            Some("FAILED") => {
                sample.failed += 1;
                if sample.failed_keys.len() < SKIPPED_SHOWN {
                    sample.failed_keys.push(key);
                }
            }
            _ => sample.none += 1,
        }
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, prefix: &str) -> ReplicationRule {
        ReplicationRule::builder()
            .id(id)
            .status(ReplicationRuleStatus::Enabled)
            .filter(ReplicationRuleFilter::builder().prefix(prefix).build())
            .destination(
                Destination::builder()
                    .bucket("arn:aws:s3:::d")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn merging_rules_replaces_only_ours_and_keeps_the_order() {
        let others = vec![rule("a", "x/"), rule("ferry", "old/"), rule("b", "y/")];
        let merged = merge_rules(others.clone(), rule("ferry", "new/"));
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0], others[0]);
        assert_eq!(merged[2], others[2]);
        assert_eq!(merged[1].filter().and_then(|f| f.prefix()), Some("new/"));
        let added = merge_rules(vec![rule("a", "x/")], rule("ferry", ""));
        assert_eq!(added.len(), 2);
        assert_eq!(added[1].id(), Some("ferry"));
    }

    #[test]
    fn a_rule_read_back_without_its_empty_prefix_or_delete_markers_is_the_same_rule() {
        let put = ReplicationRule::builder()
            .id("ferry")
            .status(ReplicationRuleStatus::Enabled)
            .filter(ReplicationRuleFilter::builder().prefix("").build())
            .delete_marker_replication(
                DeleteMarkerReplication::builder()
                    .status(DeleteMarkerReplicationStatus::Disabled)
                    .build(),
            )
            .destination(
                Destination::builder()
                    .bucket("arn:aws:s3:::d")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut back = put.clone();
        back.filter = Some(ReplicationRuleFilter::builder().build());
        back.delete_marker_replication = None;
        assert_eq!(rule_json(&put), rule_json(&back));
        let mut other = put.clone();
        other.filter = Some(ReplicationRuleFilter::builder().prefix("logs/").build());
        assert_ne!(rule_json(&put), rule_json(&other));
    }

    #[test]
    fn copy_source_keys_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_key("a/b c+d.txt"), "a/b%20c%2Bd.txt");
        assert_eq!(encode_key("é"), "%C3%A9");
        assert_eq!(prefix_of("app/2026/x"), "app");
        assert_eq!(prefix_of("flat"), "");
    }
}
