//! KMS steps: create a key (the alias is the marker), rotation, multi-Region replicas, and key
//! policy statements merged by Sid.

use async_trait::async_trait;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, Tag};
use serde_json::{Value, json};

use super::output::{KeyOutput, KeyPolicyOutput, RotationOutput};
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, bucket, change, existing_key_arn, failed, key_arn,
    policy, policy_edit, sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{Applied, ErrorClass, GateKey, Observation, Step, StepCx, StepError};
use crate::graph::{
    CreateKeySpec, KeyDeletionSpec, KeyPolicySpec, KeyRotationSpec, PlannedStep, ReplicateKeySpec,
    RoleRef, Statements,
};
use crate::lookup::{KeyFacts, describe_key, role_arn};

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

fn kms_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("kms", op)
}

/// Codes that right after a create mean "not visible yet".
const FRESH: &[&str] = &["NotFoundException", "KMSInvalidStateException"];

fn key_output(k: &KeyFacts) -> StepOutput {
    StepOutput::Key(KeyOutput {
        key_id: k.key_id.clone(),
        arn: k.arn.clone(),
    })
}

async fn describe(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    key: &str,
) -> Result<Option<KeyFacts>, StepError> {
    describe_key(&cx.ctx().aws, cx.limits(), account, region, key)
        .await
        .map_err(|e| failed(e, FRESH))
}

fn missing_key(key: &str, account: &str, region: &str) -> StepError {
    StepError::new(
        ErrorClass::NotYetConsistent,
        "NotFoundException",
        format!("key {key} not found in {account}/{region}"),
    )
}

/// `kms.create-key`: a symmetric customer managed key and its alias.
pub struct CreateKey {
    base: Base,
    spec: CreateKeySpec,
}

impl CreateKey {
    pub fn new(step: &PlannedStep, spec: CreateKeySpec) -> Self {
        CreateKey {
            base: Base::new(step, "kms:CreateKey"),
            spec,
        }
    }

    /// A key this plan created earlier whose alias was never made (ferry was stopped between
    /// CreateKey and CreateAlias): found by its ferry tags, adopted instead of creating another.
    async fn orphan(&self, cx: &Cx) -> Result<Option<String>, AwsError> {
        let client = cx.aws.kms(&self.base.account, &self.base.region);
        let mut pages = client.list_keys().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(kms_error("ListKeys"))?;
            for k in page.keys() {
                let Some(id) = k.key_id() else { continue };
                let tags = match client.list_resource_tags().key_id(id).send().await {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                let has = |k: &str, v: &str| {
                    tags.tags()
                        .iter()
                        .any(|t| t.tag_key() == k && t.tag_value() == v)
                };
                if has("ferry:plan", &cx.plan) && has("ferry:key", self.spec.name.as_str()) {
                    return Ok(Some(id.to_string()));
                }
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Step<Cx> for CreateKey {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let c = cx.ctx();
        let alias = &self.spec.alias;
        if let Some(k) = describe(cx, &self.base.account, &self.base.region, alias).await? {
            c.remember_key(&self.base.account, &self.base.region, alias, &k.arn);
            return Ok(Observation::Done(key_output(&k)));
        }
        let orphan = self.orphan(c).await.map_err(|e| failed(e, &[]))?;
        let mut diff = vec![format!(
            "+ symmetric customer managed key{} with alias {alias}",
            if self.spec.multi_region {
                " (multi-Region primary)"
            } else {
                ""
            }
        )];
        if let Some(id) = &orphan {
            diff.push(format!(
                "~ adopt key {id}, made by an earlier run of this plan without its alias"
            ));
        }
        Ok(Observation::Todo(change(
            Action::Create,
            diff,
            Todo::AdoptKey(orphan),
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "alias": self.spec.alias, "tags": self.spec.tags })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let c = cx.ctx();
        let client = c.aws.kms(&self.base.account, &self.base.region);
        let adopt = match change.todo {
            Todo::AdoptKey(id) => id,
            _ => None,
        };
        let key_id = match adopt {
            Some(id) => id,
            None => {
                let mut req = client
                    .create_key()
                    .key_spec(KeySpec::SymmetricDefault)
                    .key_usage(KeyUsageType::EncryptDecrypt)
                    .multi_region(self.spec.multi_region);
                if let Some(d) = &self.spec.description {
                    req = req.description(d);
                }
                for (k, v) in &self.spec.tags {
                    req = req.tags(
                        Tag::builder()
                            .tag_key(k)
                            .tag_value(v)
                            .build()
                            .expect("key and value set"),
                    );
                }
                // No client token: sent once. After a lost answer the next look finds the key by
                // its ferry tags (an orphan without its alias) and adopts it.
                let out = req
                    .customize()
                    .config_override(
                        aws_sdk_kms::config::Builder::new()
                            .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled()),
                    )
                    .send()
                    .await
                    .map_err(|e| failed(kms_error("CreateKey")(e), &[]))?;
                out.key_metadata()
                    .map(|m| m.key_id().to_string())
                    .ok_or_else(|| StepError::permanent("NoKeyId", "CreateKey returned no key"))?
            }
        };
        let alias = &self.spec.alias;
        let made = client
            .create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await;
        if let Err(e) = made {
            let e = kms_error("CreateAlias")(e);
            // Someone (or an earlier attempt) made the alias: describe says which key it names.
            if !e.is_code(&["AlreadyExistsException"]) {
                return Err(failed(e, FRESH));
            }
        }
        let k = describe(cx, &self.base.account, &self.base.region, alias)
            .await?
            .ok_or_else(|| {
                StepError::new(
                    ErrorClass::NotYetConsistent,
                    "NotFoundException",
                    format!("alias {alias} not visible yet"),
                )
            })?;
        c.remember_key(&self.base.account, &self.base.region, alias, &k.arn);
        Ok(Applied::Done(key_output(&k)))
    }
}

/// `kms.enable-key-rotation`: yearly automatic rotation.
pub struct EnableRotation {
    base: Base,
    spec: KeyRotationSpec,
}

impl EnableRotation {
    pub fn new(step: &PlannedStep, spec: KeyRotationSpec) -> Self {
        EnableRotation {
            base: Base::new(step, "kms:EnableKeyRotation"),
            spec,
        }
    }
}

fn rotation_on(key_id: &str) -> StepOutput {
    StepOutput::Rotation(RotationOutput {
        key_id: key_id.to_string(),
        rotation: true,
    })
}

#[async_trait]
impl Step<Cx> for EnableRotation {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let todo = || {
            Ok(Observation::Todo(change(
                Action::Update,
                vec![format!("~ rotation of {}: off -> on", self.spec.key)],
                Todo::Nothing,
            )))
        };
        let Some(k) = describe(cx, &self.base.account, &self.base.region, &self.spec.key).await?
        else {
            return todo();
        };
        let on = cx
            .ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .get_key_rotation_status()
            .key_id(&k.key_id)
            .send()
            .await
            .map_err(|e| failed(kms_error("GetKeyRotationStatus")(e), FRESH))?
            .key_rotation_enabled();
        if on {
            Ok(Observation::Done(rotation_on(&k.key_id)))
        } else {
            todo()
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let (account, region) = (&self.base.account, &self.base.region);
        let k = describe(cx, account, region, &self.spec.key)
            .await?
            .ok_or_else(|| missing_key(&self.spec.key, account, region))?;
        cx.ctx()
            .aws
            .kms(account, region)
            .enable_key_rotation()
            .key_id(&k.key_id)
            .send()
            .await
            .map_err(|e| failed(kms_error("EnableKeyRotation")(e), FRESH))?;
        Ok(Applied::Done(rotation_on(&k.key_id)))
    }
}

/// `kms.replicate-key`: a replica of a multi-Region key in this step's region, with the same
/// alias there (aliases are regional).
pub struct ReplicateKey {
    base: Base,
    spec: ReplicateKeySpec,
}

impl ReplicateKey {
    pub fn new(step: &PlannedStep, spec: ReplicateKeySpec) -> Self {
        let mut base = Base::new(step, "kms:ReplicateKey");
        // ReplicateKey is called in the primary region and drawn from its quota.
        base.buckets = vec![bucket(
            &base.account,
            spec.primary_region.as_str(),
            "kms:ReplicateKey",
        )];
        ReplicateKey { base, spec }
    }

    fn alias(&self) -> Option<&str> {
        Some(self.spec.key.as_str()).filter(|k| k.starts_with("alias/"))
    }

    async fn alias_names(&self, cx: &StepCx<'_, Cx>, key_id: &str) -> Result<bool, StepError> {
        let out = cx
            .ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .list_aliases()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| failed(kms_error("ListAliases")(e), FRESH))?;
        Ok(out
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some(self.spec.key.as_str())))
    }
}

#[async_trait]
impl Step<Cx> for ReplicateKey {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let (account, region) = (&self.base.account, &self.base.region);
        let create = |diff: String| {
            Ok(Observation::Todo(change(
                Action::Create,
                vec![diff],
                Todo::Nothing,
            )))
        };
        let primary = self.spec.primary_region.as_str();
        let Some(p) = describe(cx, account, primary, &self.spec.key).await? else {
            return create(format!("+ replica of {} in {region}", self.spec.key));
        };
        match describe(cx, account, region, &p.key_id).await? {
            Some(r) if self.alias().is_none() || self.alias_names(cx, &r.key_id).await? => {
                cx.ctx()
                    .remember_key(account, region, &self.spec.key, &r.arn);
                Ok(Observation::Done(key_output(&r)))
            }
            Some(r) => Ok(Observation::Todo(change(
                Action::Update,
                vec![format!(
                    "+ alias {} for replica {} in {region}",
                    self.spec.key, r.key_id
                )],
                Todo::Nothing,
            ))),
            None => create(format!(
                "+ replica of {} ({}) in {region}",
                self.spec.key, p.key_id
            )),
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let c = cx.ctx();
        let (account, region) = (&self.base.account, &self.base.region);
        let primary_region = self.spec.primary_region.as_str();
        let primary = describe(cx, account, primary_region, &self.spec.key)
            .await?
            .ok_or_else(|| missing_key(&self.spec.key, account, primary_region))?;
        if describe(cx, account, region, &primary.key_id)
            .await?
            .is_none()
        {
            let r = c
                .aws
                .kms(account, primary_region)
                .replicate_key()
                .key_id(&primary.key_id)
                .replica_region(region)
                .send()
                .await;
            if let Err(e) = r {
                let e = kms_error("ReplicateKey")(e);
                if !e.is_code(&["AlreadyExistsException"]) {
                    return Err(failed(e, FRESH));
                }
            }
        }
        if let Some(alias) = self.alias() {
            let a = c
                .aws
                .kms(account, region)
                .create_alias()
                .alias_name(alias)
                .target_key_id(&primary.key_id)
                .send()
                .await;
            if let Err(e) = a {
                let e = kms_error("CreateAlias")(e);
                if !e.is_code(&["AlreadyExistsException"]) {
                    return Err(failed(e, FRESH));
                }
            }
        }
        let r = describe(cx, account, region, &primary.key_id)
            .await?
            .ok_or_else(|| missing_key(&self.spec.key, account, region))?;
        c.remember_key(account, region, &self.spec.key, &r.arn);
        Ok(Applied::Done(key_output(&r)))
    }
}

/// `kms.merge-key-policy`: statements merged into the key policy by Sid; the rest untouched.
pub struct MergeKeyPolicy {
    base: Base,
    spec: KeyPolicySpec,
    gate: GateKey,
    /// `false`: `kms.remove-statements` (destroy), the statements with ferry's Sids removed.
    add: bool,
}

impl MergeKeyPolicy {
    pub fn new(step: &PlannedStep, spec: KeyPolicySpec, add: bool) -> Self {
        let base = Base::new(step, "kms:PutKeyPolicy");
        // One gate per key for every writer of its policy (statements, key access, replication
        // roles): by its ARN, as key-access steps name it, once the key exists.
        let gate = match &spec.key.key {
            crate::graph::DestKey::Existing(arn) => {
                GateKey::new(super::KEY_POLICY_GATE, arn.as_str())
            }
            _ => GateKey::new(
                super::KEY_POLICY_GATE,
                &format!("{}/{}/{}", base.account, base.region, spec.key.shown),
            ),
        };
        MergeKeyPolicy {
            base,
            spec,
            gate,
            add,
        }
    }

    /// The policy as this step leaves it: ferry's statements merged in, or removed by Sid.
    fn edited(&self, cx: &Cx, before: &Value) -> Value {
        let statements = self.statements(cx);
        if self.add {
            return policy::merge(before, &statements);
        }
        statements
            .iter()
            .filter_map(|s| s.get("Sid").and_then(Value::as_str))
            .fold(before.clone(), |p, sid| policy::remove(&p, sid))
    }

    fn statements(&self, cx: &Cx) -> Vec<Value> {
        match &self.spec.statements {
            Statements::Given(list) => list.clone(),
            Statements::ReplicationRole {
                role,
                role_account,
                sid,
            } => {
                let arn = match role {
                    RoleRef::Name(n) => role_arn(cx.account_id(role_account), n),
                    RoleRef::Arn(a) => a.clone(),
                };
                vec![json!({
                    "Sid": sid,
                    "Effect": "Allow",
                    "Principal": { "AWS": arn },
                    "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                    "Resource": "*",
                })]
            }
        }
    }

    async fn current(&self, cx: &StepCx<'_, Cx>, key: &str) -> Result<Value, StepError> {
        cx.limits()
            .take(&[bucket(
                &self.base.account,
                &self.base.region,
                "kms:GetKeyPolicy",
            )])
            .await;
        let out = cx
            .ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .get_key_policy()
            .key_id(key)
            .policy_name("default")
            .send()
            .await
            .map_err(|e| failed(kms_error("GetKeyPolicy")(e), FRESH))?;
        let read = policy::parse(out.policy(), &format!("the key policy of {key}"))?;
        Ok(cx.ctx().key_policy_read(key, read))
    }

    fn done(arn: &crate::ids::KeyArn) -> StepOutput {
        StepOutput::KeyPolicy(KeyPolicyOutput {
            key_id: Some(arn.key_id().to_string()),
        })
    }
}

#[async_trait]
impl Step<Cx> for MergeKeyPolicy {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let statements = self.statements(cx.ctx());
        let (account, region) = (&self.base.account, &self.base.region);
        let found = match key_arn(cx, &self.spec.key, account, region).await {
            // A key already deleted holds no statements.
            Err(e) if !self.add && e.code == "NotFoundException" => None,
            other => other?,
        };
        if !self.add {
            let Some(arn) = found else {
                return Ok(Observation::Done(StepOutput::KeyPolicy(KeyPolicyOutput {
                    key_id: None,
                })));
            };
            let before = self.current(cx, arn.as_str()).await?;
            let after = self.edited(cx.ctx(), &before);
            return Ok(match policy_edit(before, &after) {
                Some(c) => Observation::Todo(c),
                None => Observation::Done(Self::done(&arn)),
            });
        }
        let Some(arn) = found else {
            let mut diff = vec![format!(
                "~ policy of {} (made by this plan) gains:",
                self.spec.key.shown
            )];
            diff.extend(policy::diff(
                &json!({}),
                &policy::merge(&json!({}), &statements),
            ));
            return Ok(Observation::Todo(change(
                Action::Update,
                diff,
                Todo::Nothing,
            )));
        };
        let before = self.current(cx, arn.as_str()).await?;
        let after = policy::merge(&before, &statements);
        Ok(match policy_edit(before, &after) {
            Some(c) => Observation::Todo(c),
            None => Observation::Done(Self::done(&arn)),
        })
    }

    fn intent(&self, change: &Change) -> Value {
        // The policy as it was before ferry's edit, kept in the journal for rollback.
        json!({ "policy_before": change.policy_before() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let (account, region) = (&self.base.account, &self.base.region);
        let arn = existing_key_arn(cx, &self.spec.key, account, region).await?;
        // Read again right before writing: the merge must start from the live document.
        let before = self.current(cx, arn.as_str()).await?;
        let after = self.edited(cx.ctx(), &before);
        cx.ctx().changing(&self.base.id_text);
        cx.ctx()
            .aws
            .kms(account, region)
            .put_key_policy()
            .key_id(arn.as_str())
            .policy_name("default")
            .policy(after.to_string())
            .send()
            .await
            .map_err(|e| {
                failed(
                    kms_error("PutKeyPolicy")(e),
                    &["MalformedPolicyDocumentException"],
                )
            })?;
        cx.ctx().wrote_key_policy(arn.as_str(), &before, &after);
        Ok(Applied::Done(Self::done(&arn)))
    }
}

/// The longest waiting period KMS allows before it deletes a key.
const DELETION_WINDOW_DAYS: i32 = 30;

/// `kms.schedule-key-deletion` (`ferry destroy --include-keys`): the plan's key (or replica)
/// behind its alias is scheduled for deletion in 30 days, then the alias is deleted. A key
/// without this plan's ferry tags is never touched. What the key still encrypts is listed.
pub struct ScheduleKeyDeletion {
    base: Base,
    spec: KeyDeletionSpec,
}

/// The key behind an alias, pending deletion or not.
struct AliasedKey {
    key_id: String,
    arn: String,
    pending: bool,
}

impl ScheduleKeyDeletion {
    pub fn new(step: &PlannedStep, spec: KeyDeletionSpec) -> Self {
        ScheduleKeyDeletion {
            base: Base::new(step, "kms:ScheduleKeyDeletion"),
            spec,
        }
    }

    async fn aliased(&self, cx: &StepCx<'_, Cx>) -> Result<Option<AliasedKey>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        cx.limits()
            .take(&[bucket(account, region, "kms:DescribeKey")])
            .await;
        let out = cx
            .ctx()
            .aws
            .kms(account, region)
            .describe_key()
            .key_id(&self.spec.alias)
            .send()
            .await;
        let m = match out {
            Ok(o) => o.key_metadata,
            Err(e) => {
                let e = kms_error("DescribeKey")(e);
                return if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(failed(e, &[]))
                };
            }
        };
        Ok(m.map(|m| AliasedKey {
            key_id: m.key_id().to_string(),
            arn: m.arn().unwrap_or_default().to_string(),
            pending: matches!(
                m.key_state(),
                Some(
                    aws_sdk_kms::types::KeyState::PendingDeletion
                        | aws_sdk_kms::types::KeyState::PendingReplicaDeletion
                )
            ),
        }))
    }

    /// Whether the key carries this plan's ferry tags (a replica's are its primary's).
    async fn ferrys(&self, cx: &StepCx<'_, Cx>, key_id: &str) -> Result<bool, StepError> {
        let (account, region) = (&self.base.account, self.spec.tags_region.as_str());
        cx.limits()
            .take(&[bucket(account, region, "kms:ListResourceTags")])
            .await;
        let tags = cx
            .ctx()
            .aws
            .kms(account, region)
            .list_resource_tags()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| failed(kms_error("ListResourceTags")(e), &[]))?;
        let has = |k: &str, v: &str| {
            tags.tags()
                .iter()
                .any(|t| t.tag_key() == k && t.tag_value() == v)
        };
        Ok(has("ferry:plan", &cx.ctx().plan) && has("ferry:key", self.spec.name.as_str()))
    }

    /// What the key still encrypts here that this plan did not make (snapshots, RDS
    /// snapshots), and the plan's replica buckets that hold objects.
    async fn still_encrypts(
        &self,
        cx: &StepCx<'_, Cx>,
        arn: &str,
    ) -> Result<Vec<String>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let c = cx.ctx();
        let mut out = Vec::new();
        let pages = c
            .aws
            .ec2(account, region)
            .describe_snapshots()
            .owner_ids("self")
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        super::each_page(
            cx.limits(),
            account,
            region,
            "DescribeSnapshots",
            pages,
            |p| {
                for s in p.snapshots() {
                    // This plan's copies are deleted or listed as kept by their own steps.
                    let ours = s
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some("ferry:plan") && t.value() == Some(&c.plan));
                    if s.kms_key_id() == Some(arn) && !ours {
                        out.push(format!("snapshot {}", s.snapshot_id().unwrap_or_default()));
                    }
                }
            },
        )
        .await?;
        for kind in [crate::ids::DbKind::Instance, crate::ids::DbKind::Cluster] {
            let found = crate::lookup::db_snapshots(
                &c.aws,
                cx.limits(),
                account,
                region,
                kind,
                crate::lookup::DbQuery::Manual,
            )
            .await
            .map_err(|e| failed(e, &[]))?;
            for s in found.iter().filter(|s| {
                s.kms_key_id.as_deref() == Some(arn) && s.tags.get("ferry:plan") != Some(&c.plan)
            }) {
                out.push(format!("DB snapshot {}", s.id));
            }
        }
        for b in &self.spec.buckets {
            let listed = c
                .aws
                .s3(account, region)
                .list_objects_v2()
                .bucket(b.as_str())
                .max_keys(1)
                .send()
                .await;
            if listed.is_ok_and(|l| l.key_count().unwrap_or(0) > 0) {
                out.push(format!("the objects of bucket {b}"));
            }
        }
        Ok(out)
    }

    async fn delete_alias(&self, cx: &StepCx<'_, Cx>) -> Result<(), StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        match cx
            .ctx()
            .aws
            .kms(account, region)
            .delete_alias()
            .alias_name(&self.spec.alias)
            .send()
            .await
            .map_err(kms_error("DeleteAlias"))
        {
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(failed(e, &[])),
            Ok(_) => Ok(()),
        }
    }
}

fn removed(removed: Vec<String>, kept: Vec<String>) -> StepOutput {
    StepOutput::Removed(super::output::RemovedOutput { removed, kept })
}

#[async_trait]
impl Step<Cx> for ScheduleKeyDeletion {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let alias = &self.spec.alias;
        let Some(key) = self.aliased(cx).await? else {
            return Ok(Observation::Done(removed(Vec::new(), Vec::new())));
        };
        if !self.ferrys(cx, &key.key_id).await? {
            return Ok(Observation::Done(removed(
                Vec::new(),
                vec![format!(
                    "{alias} (key {}): kept, it does not carry this plan's ferry tags",
                    key.key_id
                )],
            )));
        }
        let mut diff = if key.pending {
            vec![format!(
                "- {alias}: delete the alias (key {} is already pending deletion)",
                key.key_id
            )]
        } else {
            vec![format!(
                "- {alias} (key {}): schedule deletion in {DELETION_WINDOW_DAYS} days, and delete the alias",
                key.key_id
            )]
        };
        let still = self.still_encrypts(cx, &key.arn).await?;
        if !still.is_empty() {
            diff.push(format!(
                "  it still encrypts {} (and whatever this destroy keeps): once the key is deleted, they cannot be read (`aws kms cancel-key-deletion` stops it)",
                still.join(", ")
            ));
        }
        Ok(Observation::Todo(change(
            Action::Delete,
            diff,
            Todo::Resources(vec![key.key_id]),
        )))
    }

    fn intent(&self, change: &Change) -> Value {
        match &change.todo {
            Todo::Resources(r) => json!({ "scheduling_deletion": r, "alias": self.spec.alias }),
            _ => Value::Null,
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let (account, region) = (&self.base.account, &self.base.region);
        let ids = match change.todo {
            Todo::Resources(r) => r,
            _ => Vec::new(),
        };
        cx.ctx().changing(&self.base.id_text);
        // The key first, then its alias: the alias is how a resume finds the key.
        for id in &ids {
            let r = cx
                .ctx()
                .aws
                .kms(account, region)
                .schedule_key_deletion()
                .key_id(id)
                .pending_window_in_days(DELETION_WINDOW_DAYS)
                .send()
                .await
                .map_err(kms_error("ScheduleKeyDeletion"));
            match r {
                // Already pending deletion (an earlier attempt whose answer was lost).
                Err(e) if e.code == "KMSInvalidStateException" || e.is_not_found() => {}
                Err(e) => return Err(failed(e, &[])),
                Ok(_) => {}
            }
        }
        self.delete_alias(cx).await?;
        Ok(Applied::Done(removed(ids, Vec::new())))
    }
}
