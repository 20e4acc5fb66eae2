//! KMS steps: create a key (the alias is the marker), rotation, multi-Region replicas, and key
//! policy statements merged by Sid.

use async_trait::async_trait;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, Tag};
use serde_json::{Value, json};

use super::{Base, Cx, bucket, failed, policy, todo};
use crate::aws::AwsError;
use crate::exec::{Applied, Observation, Scope, Step, StepCx, StepError};
use crate::graph::StepSpec;

/// A key as ferry needs to know it.
#[derive(Debug, Clone)]
pub struct KeyFacts {
    pub key_id: String,
    pub arn: String,
    pub enabled: bool,
    pub state: String,
    pub customer_managed: bool,
    pub symmetric_encrypt_decrypt: bool,
    pub multi_region: bool,
}

impl KeyFacts {
    pub fn outputs(&self) -> Value {
        json!({ "key_id": self.key_id, "arn": self.arn })
    }
}

/// DescribeKey by id, ARN or alias; `None` when it does not exist (or is pending deletion).
pub async fn describe(
    cx: &Cx,
    limits: &crate::exec::Limits,
    account: &str,
    region: &str,
    key: &str,
) -> Result<Option<KeyFacts>, AwsError> {
    limits
        .take(&[bucket(account, region, "kms:DescribeKey")])
        .await;
    let out = cx
        .aws
        .kms(account, region)
        .describe_key()
        .key_id(key)
        .send()
        .await;
    let meta = match out {
        Ok(o) => o.key_metadata,
        Err(e) => {
            let e = AwsError::from_sdk("kms", "DescribeKey", e);
            return if e.is_not_found() { Ok(None) } else { Err(e) };
        }
    };
    let Some(m) = meta else { return Ok(None) };
    let state = m
        .key_state()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    if matches!(
        m.key_state(),
        Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)
    ) {
        return Ok(None);
    }
    Ok(Some(KeyFacts {
        key_id: m.key_id().to_string(),
        arn: m.arn().unwrap_or_default().to_string(),
        enabled: m.enabled() && m.key_state() != Some(&KeyState::Disabled),
        state,
        customer_managed: m.key_manager().is_none_or(|km| km.as_str() == "CUSTOMER"),
        symmetric_encrypt_decrypt: m.key_spec().is_none_or(|s| *s == KeySpec::SymmetricDefault)
            && m.key_usage()
                .is_none_or(|u| *u == KeyUsageType::EncryptDecrypt),
        multi_region: m.multi_region().unwrap_or(false),
    }))
}

fn kms_error<E>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError
where
    E: super::ServiceError,
{
    move |e| AwsError::from_sdk("kms", op, e)
}

/// Codes that right after a create mean "not visible yet".
const FRESH: &[&str] = &["NotFoundException", "KMSInvalidStateException"];

macro_rules! step_identity {
    () => {
        fn id(&self) -> &str {
            &self.base.id
        }
        fn kind(&self) -> &str {
            &self.base.kind
        }
        fn scope(&self) -> &Scope {
            &self.base.scope
        }
        fn buckets(&self) -> &[String] {
            &self.base.buckets
        }
    };
}
pub(crate) use step_identity;

/// `kms.create-key`: a symmetric customer managed key and its alias.
pub struct CreateKey {
    base: Base,
}

impl CreateKey {
    pub fn new(spec: &StepSpec) -> Self {
        CreateKey {
            base: Base::new(spec, "kms:CreateKey"),
        }
    }
    fn alias(&self) -> &str {
        self.base.param("alias").unwrap_or(&self.base.target)
    }

    /// A key this plan created earlier whose alias was never made (ferry was stopped between
    /// CreateKey and CreateAlias): found by its ferry tags, adopted instead of creating another.
    async fn orphan(&self, cx: &Cx) -> Result<Option<String>, AwsError> {
        let key_name = self.base.owner.trim_start_matches("key.");
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
                if has("ferry:plan", &cx.plan) && has("ferry:key", key_name) {
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

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let c = cx.ctx();
        let found = describe(
            c,
            cx.limits(),
            &self.base.account,
            &self.base.region,
            self.alias(),
        )
        .await
        .map_err(|e| failed(e, &[]))?;
        if let Some(k) = found {
            c.remember_key(&self.base.account, &self.base.region, self.alias(), &k.arn);
            return Ok(Observation::Done(k.outputs()));
        }
        let orphan = self.orphan(c).await.map_err(|e| failed(e, &[]))?;
        Ok(Observation::Todo(todo(
            "create",
            json!({ "alias": self.alias(), "adopt": orphan }),
        )))
    }

    fn intent(&self, _change: &Value) -> Value {
        json!({ "alias": self.alias(), "tags": self.base.params.get("tags") })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Value) -> Result<Applied, StepError> {
        let c = cx.ctx();
        let client = c.aws.kms(&self.base.account, &self.base.region);
        let key_id = match change.get("adopt").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let mut req = client
                    .create_key()
                    .key_spec(KeySpec::SymmetricDefault)
                    .key_usage(KeyUsageType::EncryptDecrypt)
                    .multi_region(self.base.params.get("multi_region") == Some(&json!(true)));
                if let Some(d) = self.base.param("description") {
                    req = req.description(d);
                }
                if let Some(Value::Object(tags)) = self.base.params.get("tags") {
                    for (k, v) in tags {
                        req = req.tags(
                            Tag::builder()
                                .tag_key(k)
                                .tag_value(v.as_str().unwrap_or_default())
                                .build()
                                .expect("key and value set"),
                        );
                    }
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| failed(kms_error("CreateKey")(e), &[]))?;
                out.key_metadata()
                    .map(|m| m.key_id().to_string())
                    .unwrap_or_default()
            }
        };
        let alias = client
            .create_alias()
            .alias_name(self.alias())
            .target_key_id(&key_id)
            .send()
            .await;
        if let Err(e) = alias {
            let e = kms_error("CreateAlias")(e);
            // Someone (or an earlier attempt) made the alias: describe says which key it names.
            if !e.is_code(&["AlreadyExistsException"]) {
                return Err(failed(e, FRESH));
            }
        }
        let k = describe(
            c,
            cx.limits(),
            &self.base.account,
            &self.base.region,
            self.alias(),
        )
        .await
        .map_err(|e| failed(e, FRESH))?
        .ok_or_else(|| {
            StepError::new(
                crate::exec::ErrorClass::NotYetConsistent,
                "NotFoundException",
                format!("alias {} not visible yet", self.alias()),
            )
        })?;
        c.remember_key(&self.base.account, &self.base.region, self.alias(), &k.arn);
        Ok(Applied::Done(k.outputs()))
    }
}

/// The key a step acts on, by the reference the plan gives (alias or ARN).
async fn existing_key(
    cx: &StepCx<'_, Cx>,
    base: &Base,
    region: &str,
) -> Result<Option<KeyFacts>, StepError> {
    describe(cx.ctx(), cx.limits(), &base.account, region, &base.target)
        .await
        .map_err(|e| failed(e, FRESH))
}

fn missing_key(base: &Base, region: &str) -> StepError {
    StepError::new(
        crate::exec::ErrorClass::NotYetConsistent,
        "NotFoundException",
        format!(
            "key {} not found in {}/{}",
            base.target, base.account, region
        ),
    )
}

/// `kms.enable-key-rotation`: yearly automatic rotation.
pub struct EnableRotation {
    base: Base,
}

impl EnableRotation {
    pub fn new(spec: &StepSpec) -> Self {
        EnableRotation {
            base: Base::new(spec, "kms:EnableKeyRotation"),
        }
    }
}

#[async_trait]
impl Step<Cx> for EnableRotation {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let Some(k) = existing_key(cx, &self.base, &self.base.region).await? else {
            return Ok(Observation::Todo(todo(
                "update",
                json!({ "rotation": "off -> on" }),
            )));
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
            Ok(Observation::Done(
                json!({ "key_id": k.key_id, "rotation": true }),
            ))
        } else {
            Ok(Observation::Todo(todo(
                "update",
                json!({ "key_id": k.key_id, "rotation": "off -> on" }),
            )))
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Value) -> Result<Applied, StepError> {
        let k = existing_key(cx, &self.base, &self.base.region)
            .await?
            .ok_or_else(|| missing_key(&self.base, &self.base.region))?;
        cx.ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .enable_key_rotation()
            .key_id(&k.key_id)
            .send()
            .await
            .map_err(|e| failed(kms_error("EnableKeyRotation")(e), FRESH))?;
        Ok(Applied::Done(
            json!({ "key_id": k.key_id, "rotation": true }),
        ))
    }
}

/// `kms.replicate-key`: a replica of a multi-Region key in this step's region, with the same
/// alias there (aliases are regional).
pub struct ReplicateKey {
    base: Base,
    primary_region: String,
}

impl ReplicateKey {
    pub fn new(spec: &StepSpec) -> Self {
        let mut base = Base::new(spec, "kms:ReplicateKey");
        let primary_region = base.param("primary_region").unwrap_or_default().to_string();
        // ReplicateKey is called in the primary region and drawn from its quota.
        base.buckets = vec![bucket(&base.account, &primary_region, "kms:ReplicateKey")];
        ReplicateKey {
            base,
            primary_region,
        }
    }

    async fn replica(
        &self,
        cx: &StepCx<'_, Cx>,
        key_id: &str,
    ) -> Result<Option<KeyFacts>, StepError> {
        describe(
            cx.ctx(),
            cx.limits(),
            &self.base.account,
            &self.base.region,
            key_id,
        )
        .await
        .map_err(|e| failed(e, FRESH))
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
            .any(|a| a.alias_name() == Some(self.base.target.as_str())))
    }
}

#[async_trait]
impl Step<Cx> for ReplicateKey {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let Some(primary) = existing_key(cx, &self.base, &self.primary_region).await? else {
            return Ok(Observation::Todo(todo(
                "create",
                json!({ "replica_of": self.base.target }),
            )));
        };
        match self.replica(cx, &primary.key_id).await? {
            Some(r)
                if !self.base.target.starts_with("alias/")
                    || self.alias_names(cx, &r.key_id).await? =>
            {
                cx.ctx().remember_key(
                    &self.base.account,
                    &self.base.region,
                    &self.base.target,
                    &r.arn,
                );
                Ok(Observation::Done(r.outputs()))
            }
            Some(r) => Ok(Observation::Todo(todo(
                "update",
                json!({ "key_id": r.key_id, "alias": self.base.target, "replica_exists": true }),
            ))),
            None => Ok(Observation::Todo(todo(
                "create",
                json!({ "key_id": primary.key_id, "replica_of": self.base.target }),
            ))),
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Value) -> Result<Applied, StepError> {
        let c = cx.ctx();
        let primary = existing_key(cx, &self.base, &self.primary_region)
            .await?
            .ok_or_else(|| missing_key(&self.base, &self.primary_region))?;
        if self.replica(cx, &primary.key_id).await?.is_none() {
            let r = c
                .aws
                .kms(&self.base.account, &self.primary_region)
                .replicate_key()
                .key_id(&primary.key_id)
                .replica_region(&self.base.region)
                .send()
                .await;
            if let Err(e) = r {
                let e = kms_error("ReplicateKey")(e);
                if !e.is_code(&["AlreadyExistsException"]) {
                    return Err(failed(e, FRESH));
                }
            }
        }
        if self.base.target.starts_with("alias/") {
            let a = c
                .aws
                .kms(&self.base.account, &self.base.region)
                .create_alias()
                .alias_name(&self.base.target)
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
        let r = self
            .replica(cx, &primary.key_id)
            .await?
            .ok_or_else(|| missing_key(&self.base, &self.base.region))?;
        c.remember_key(
            &self.base.account,
            &self.base.region,
            &self.base.target,
            &r.arn,
        );
        Ok(Applied::Done(r.outputs()))
    }
}

/// `kms.merge-key-policy`: statements merged into the key policy by Sid; the rest untouched.
pub struct MergeKeyPolicy {
    base: Base,
    gate: String,
}

impl MergeKeyPolicy {
    pub fn new(spec: &StepSpec) -> Self {
        let mut base = Base::new(spec, "kms:PutKeyPolicy");
        // A migration's step names the key by the reference the plan resolves it to.
        if let Some(k) = base.param("key") {
            base.target = k.to_string();
        }
        MergeKeyPolicy {
            gate: format!(
                "{}/{}/{}/{}",
                super::KEY_POLICY_GATE,
                base.account,
                base.region,
                base.target
            ),
            base,
        }
    }

    fn statements(&self, cx: &Cx) -> Vec<Value> {
        if let (Some(role), Some(sid)) = (self.base.param("role"), self.base.param("sid")) {
            // s3-replication: the replication role may encrypt replicas with this key.
            let account = self.base.param("role_account").unwrap_or_default();
            let arn = super::iam::role_arn(cx.account_id(account), role);
            return vec![json!({
                "Sid": sid,
                "Effect": "Allow",
                "Principal": { "AWS": arn },
                "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                "Resource": "*",
            })];
        }
        self.base
            .params
            .get("statements")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    async fn current(&self, cx: &StepCx<'_, Cx>, key_id: &str) -> Result<Value, StepError> {
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
            .key_id(key_id)
            .policy_name("default")
            .send()
            .await
            .map_err(|e| failed(kms_error("GetKeyPolicy")(e), FRESH))?;
        Ok(serde_json::from_str(out.policy().unwrap_or("{}")).unwrap_or(json!({})))
    }
}

#[async_trait]
impl Step<Cx> for MergeKeyPolicy {
    step_identity!();

    fn gate(&self) -> Option<&str> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let statements = self.statements(cx.ctx());
        let Some(k) = existing_key(cx, &self.base, &self.base.region).await? else {
            let lines: Vec<String> = statements
                .iter()
                .map(|s| format!("+ {}", serde_json::to_string(s).unwrap_or_default()))
                .collect();
            return Ok(Observation::Todo(todo("update", json!({ "diff": lines }))));
        };
        let before = self.current(cx, &k.key_id).await?;
        let after = policy::merge(&before, &statements);
        if policy::same(&before, &after) {
            return Ok(Observation::Done(json!({ "key_id": k.key_id })));
        }
        Ok(Observation::Todo(todo(
            "update",
            json!({ "key_id": k.key_id, "diff": policy::diff(&before, &after), "policy_before": before }),
        )))
    }

    fn intent(&self, change: &Value) -> Value {
        // The policy as it was before ferry's first edit, kept in the journal for rollback.
        json!({ "policy_before": change.get("policy_before") })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Value) -> Result<Applied, StepError> {
        let k = existing_key(cx, &self.base, &self.base.region)
            .await?
            .ok_or_else(|| missing_key(&self.base, &self.base.region))?;
        // Read again right before writing: the merge must start from the live document.
        let before = self.current(cx, &k.key_id).await?;
        let after = policy::merge(&before, &self.statements(cx.ctx()));
        cx.ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .put_key_policy()
            .key_id(&k.key_id)
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
        Ok(Applied::Done(json!({ "key_id": k.key_id })))
    }
}
