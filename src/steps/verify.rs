//! `s3.verify-replication`: proof that the rule replicates, by a canary object (S3 user guide,
//! "Getting replication status information"). The most common failure of S3 replication is
//! silent: a role that may not use a key leaves every object FAILED, and nobody looks. ferry
//! writes one small object under the rule's prefix, waits for its replication status, checks
//! the replica's key, deletes both, and explains a failure from the policies it can read.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::types::ReplicationStatus;
use serde_json::{Value, json};

use super::output::VerifyOutput;
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, change, existing_key_arn, failed, key_arn, policy,
    sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{Applied, Observation, Step, StepCx, StepError};
use crate::graph::{PlannedStep, RoleRef, VerifySpec};
use crate::ids::{AccountName, StepId};
use crate::lookup::role_arn;

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

/// How long a canary may take to replicate: `FERRY_VERIFY_TIMEOUT_SECS`, default 15 minutes
/// (S3 Replication Time Control replicates 99.99% of objects within 15 minutes).
fn timeout() -> Duration {
    std::env::var("FERRY_VERIFY_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(15 * 60))
}

/// How often the canary's status is read.
fn interval() -> Duration {
    std::env::var("FERRY_VERIFY_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2))
}

fn s3_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("s3", op)
}

pub struct VerifyReplication {
    base: Base,
    spec: VerifySpec,
    step_id: Option<StepId>,
}

impl VerifyReplication {
    pub fn new(step: &PlannedStep, spec: VerifySpec) -> Self {
        VerifyReplication {
            base: Base::new(step, ""),
            step_id: Some(step.id.clone()),
            spec,
        }
    }

    fn destination_region(&self) -> &str {
        self.spec
            .destination_region
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("")
    }

    /// What a canary proves, hashed: the role, ferry's rule and its destination and replica
    /// key as the plan wants them (the rule step puts them so before this step runs; a rule
    /// changed by hand and put back is the same configuration).
    fn fingerprint(&self, cx: &Cx, replica_key: &str) -> String {
        use sha2::Digest;
        let material = json!({
            "role": self.role(cx),
            "rule": self.spec.rule_id,
            "prefix": self.spec.prefix,
            "destination": self.spec.destination_bucket,
            "destination_account": cx.account_id(&self.spec.destination_account),
            "replica_key": replica_key,
        });
        hex::encode(sha2::Sha256::digest(material.to_string().as_bytes()))
    }

    /// Whether ferry's rule is on the source bucket yet.
    async fn rule_in_place(&self, cx: &StepCx<'_, Cx>) -> Result<bool, StepError> {
        let config = super::s3::replication_configuration(
            cx,
            &self.base.account,
            &self.base.region,
            &self.spec.source_bucket,
        )
        .await?;
        Ok(config.is_some_and(|c| {
            c.rules()
                .iter()
                .any(|r| r.id() == Some(self.spec.rule_id.as_str()))
        }))
    }

    /// Where this migration's canaries are: `<rule prefix>ferry-canary/<plan>-<migration>-`.
    fn canary_prefix(&self, cx: &Cx) -> String {
        format!(
            "{}ferry-canary/{}-{}-",
            self.spec.prefix, cx.plan, self.spec.migration
        )
    }

    fn canary_key(&self, cx: &Cx) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}{}", self.canary_prefix(cx), now.as_nanos())
    }

    /// Canaries an earlier attempt left (killed, or its PutObject answer lost): every version
    /// under this migration's canary prefix, in the source and in the destination. Returns how
    /// many it deleted.
    async fn sweep(&self, cx: &StepCx<'_, Cx>) -> usize {
        let mut deleted = 0;
        let c = cx.ctx();
        let prefix = self.canary_prefix(c);
        let places = [
            (
                c.aws.s3(&self.base.account, &self.base.region),
                self.spec.source_bucket.as_str(),
            ),
            (
                c.aws.s3(
                    self.spec.destination_account.as_str(),
                    self.destination_region(),
                ),
                self.spec.destination_bucket.as_str(),
            ),
        ];
        for (s3, bucket) in places {
            let Ok(listed) = s3
                .list_object_versions()
                .bucket(bucket)
                .prefix(&prefix)
                .send()
                .await
            else {
                continue;
            };
            let versions = listed
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(
                    listed
                        .delete_markers()
                        .iter()
                        .map(|m| (m.key(), m.version_id())),
                );
            for (key, version) in versions {
                let Some(key) = key else { continue };
                deleted += 1;
                let _ = s3
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .set_version_id(version.map(str::to_string))
                    .send()
                    .await;
            }
        }
        deleted
    }

    fn role(&self, cx: &Cx) -> String {
        match &self.spec.role {
            RoleRef::Name(n) => role_arn(
                cx.account_id(&AccountName::new(self.base.account.as_str())),
                n,
            ),
            RoleRef::Arn(a) => a.clone(),
        }
    }

    /// Deletes the canary's versions (in the source, and its replica), whatever happened.
    async fn remove(
        &self,
        cx: &StepCx<'_, Cx>,
        key: &str,
        version: Option<&str>,
        replica: Option<&str>,
    ) {
        let c = cx.ctx();
        let src = c.aws.s3(&self.base.account, &self.base.region);
        let _ = src
            .delete_object()
            .bucket(self.spec.source_bucket.as_str())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await;
        if let Some(v) = replica {
            let _ = c
                .aws
                .s3(
                    self.spec.destination_account.as_str(),
                    self.destination_region(),
                )
                .delete_object()
                .bucket(self.spec.destination_bucket.as_str())
                .key(key)
                .version_id(v)
                .send()
                .await;
        }
    }

    /// Why the canary FAILED, from what ferry can read: the role's policies and the keys'.
    async fn explain(&self, cx: &StepCx<'_, Cx>, source_key: Option<&str>) -> String {
        let c = cx.ctx();
        let role = self.role(c);
        let src = &self.spec.source_bucket;
        let dst = &self.spec.destination_bucket;
        let replica_key = existing_key_arn(
            cx,
            &self.spec.key,
            self.spec.destination_account.as_str(),
            self.destination_region(),
        )
        .await
        .map(|k| k.to_string())
        .unwrap_or_else(|_| self.spec.key.shown.clone());
        let mut needs = vec![
            (
                "s3:GetObjectVersionForReplication".to_string(),
                format!("arn:aws:s3:::{src}/*"),
            ),
            (
                "s3:ReplicateObject".to_string(),
                format!("arn:aws:s3:::{dst}/*"),
            ),
            ("kms:Encrypt".to_string(), replica_key.clone()),
        ];
        for k in source_key
            .map(str::to_string)
            .into_iter()
            .chain(self.spec.source_keys.iter().map(|k| k.to_string()))
        {
            if !needs.iter().any(|(a, r)| a == "kms:Decrypt" && *r == k) {
                needs.push(("kms:Decrypt".to_string(), k));
            }
        }
        let Some(policies) = role_policies(cx, &self.base.account, &role).await else {
            return format!(
                "the replication role {role} could not be read; check that it exists, trusts s3.amazonaws.com, and may {}",
                needs
                    .iter()
                    .map(|(a, r)| format!("{a} on {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let role_account = role.split(':').nth(4).unwrap_or_default().to_string();
        for (action, resource) in &needs {
            let identity = policies
                .iter()
                .any(|p| policy::allows(p, action, resource, None));
            let lacks = || {
                format!(
                    "the replication role {role} lacks {action} on {resource} in its IAM policies: add it (docs/plan-format.md lists what a replication role needs)"
                )
            };
            if !action.starts_with("kms:") {
                if !identity {
                    return lacks();
                }
                continue;
            }
            // KMS: a key policy naming the role allows it in the key's own account; one that
            // trusts the account leaves it to the IAM policy; another account's key needs both
            // (KMS developer guide, "Key policies").
            let Some(doc) = self.key_policy(cx, resource).await else {
                if !identity {
                    return lacks();
                }
                continue;
            };
            let names_role =
                policy::allows(&doc, action, resource, Some(std::slice::from_ref(&role)));
            let trusts_account = policy::allows(
                &doc,
                action,
                resource,
                Some(std::slice::from_ref(&role_account)),
            );
            let same_account = resource.split(':').nth(4) == Some(role_account.as_str());
            let key_allows = names_role || trusts_account;
            let allowed = if same_account {
                names_role || (trusts_account && identity)
            } else {
                key_allows && identity
            };
            if allowed {
                continue;
            }
            return match (identity, key_allows) {
                (false, true) => lacks(),
                (false, false) => format!(
                    "the replication role {role} lacks {action} on {resource}: neither its IAM policies nor the key policy allow it"
                ),
                (true, _) => {
                    format!("the key policy of {resource} does not let {role} use {action}")
                }
            };
        }
        "the role's policies and the replica key policy allow it as far as ferry can read them: \
         check the destination bucket policy (cross-account: s3:ReplicateObject for the role), \
         the destination's object ownership, a source key policy, and any SCP or permissions boundary"
            .to_string()
    }
}

impl VerifyReplication {
    /// The policy of a key ferry may read (the replica key, or a source key), by its ARN.
    async fn key_policy(&self, cx: &StepCx<'_, Cx>, key: &str) -> Option<Value> {
        let c = cx.ctx();
        let parts: Vec<&str> = key.split(':').collect();
        let (region, account_id) = (*parts.get(3)?, *parts.get(4)?);
        let account = [
            self.spec.destination_account.as_str(),
            self.base.account.as_str(),
        ]
        .into_iter()
        .find(|a| c.account_id(&AccountName::new(*a)) == account_id)?;
        let p = c
            .aws
            .kms(account, region)
            .get_key_policy()
            .key_id(key)
            .policy_name("default")
            .send()
            .await
            .ok()?;
        policy::parse(p.policy(), "a key policy").ok()
    }
}

/// The role's inline policies and attached managed policies' default versions, or `None`
/// when the role cannot be read.
async fn role_policies(cx: &StepCx<'_, Cx>, account: &str, role: &str) -> Option<Vec<Value>> {
    let iam = cx.ctx().aws.iam(account);
    let name = role.rsplit('/').next()?.to_string();
    let mut docs = Vec::new();
    let inline = iam
        .list_role_policies()
        .role_name(&name)
        .send()
        .await
        .ok()?;
    for p in inline.policy_names() {
        let doc = iam
            .get_role_policy()
            .role_name(&name)
            .policy_name(p)
            .send()
            .await
            .ok()?;
        docs.push(super::iam::decode_document(doc.policy_document()).ok()?);
    }
    let attached = iam
        .list_attached_role_policies()
        .role_name(&name)
        .send()
        .await
        .ok()?;
    for p in attached.attached_policies() {
        let Some(arn) = p.policy_arn() else { continue };
        let Ok(meta) = iam.get_policy().policy_arn(arn).send().await else {
            continue;
        };
        let Some(version) = meta.policy().and_then(|p| p.default_version_id()) else {
            continue;
        };
        if let Ok(v) = iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            && let Some(d) = v.policy_version().and_then(|v| v.document())
            && let Ok(doc) = super::iam::decode_document(d)
        {
            docs.push(doc);
        }
    }
    Some(docs)
}

#[async_trait]
impl Step<Cx> for VerifyReplication {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let key = key_arn(
            cx,
            &self.spec.key,
            self.spec.destination_account.as_str(),
            self.destination_region(),
        )
        .await?;
        // Proven by an earlier run for this very role, rule and key: not again (a re-apply
        // changes nothing). `ferry verify` proves it on demand.
        if let (Some(k), Some(StepOutput::Verified(v))) = (
            &key,
            self.step_id
                .as_ref()
                .and_then(|id| cx.ctx().earlier_output(id)),
        ) && v.fingerprint == self.fingerprint(cx.ctx(), k.as_str())
        {
            return Ok(Observation::Done(StepOutput::Verified(v.clone())));
        }
        let shown = key
            .map(|k| k.to_string())
            .unwrap_or_else(|| self.spec.key.shown.clone());
        Ok(Observation::Todo(change(
            Action::Create,
            vec![format!(
                "+ canary object {}ferry-canary/...: must replicate to {} under {shown}, then both are deleted",
                self.spec.prefix, self.spec.destination_bucket
            )],
            Todo::Nothing,
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "canary_prefix": format!("{}ferry-canary/", self.spec.prefix) })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let c = cx.ctx();
        let started = Instant::now();
        if !self.rule_in_place(cx).await? {
            return Err(StepError::new(
                crate::exec::ErrorClass::NotYetConsistent,
                "NoReplicationRule",
                format!("the rule {} is not in place yet", self.spec.rule_id),
            ));
        }
        let replica_key = existing_key_arn(
            cx,
            &self.spec.key,
            self.spec.destination_account.as_str(),
            self.destination_region(),
        )
        .await?;
        let fingerprint = self.fingerprint(c, replica_key.as_str());
        let left_over = self.sweep(cx).await;
        let key = self.canary_key(c);
        let src = c.aws.s3(&self.base.account, &self.base.region);
        let put = src
            .put_object()
            .bucket(self.spec.source_bucket.as_str())
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(
                b"ferry replication canary: safe to delete\n",
            ))
            .tagging("ferry%3Acanary=true")
            // Under the source bucket's key, as the bucket's objects are: the KMS path is what
            // a replication role most often lacks, and a bucket policy may require the header.
            .set_server_side_encryption(
                self.spec
                    .source_keys
                    .first()
                    .map(|_| aws_sdk_s3::types::ServerSideEncryption::AwsKms),
            )
            .set_ssekms_key_id(self.spec.source_keys.first().map(|k| k.to_string()))
            // Sent once: a canary whose answer was lost is swept by the next attempt, which
            // writes a new one (the walker retries the step).
            .customize()
            .config_override(super::sent_once_s3())
            .send()
            .await
            .map_err(|e| failed(s3_error("PutObject")(e), &[]))?;
        let version = put.version_id().map(str::to_string);
        let deadline = started + timeout();
        let (status, source_key) = loop {
            let head = src
                .head_object()
                .bucket(self.spec.source_bucket.as_str())
                .key(&key)
                .set_version_id(version.clone())
                .send()
                .await
                .map_err(|e| failed(s3_error("HeadObject")(e), &["NotFound", "NoSuchKey"]))?;
            let status = head.replication_status().cloned();
            match status {
                Some(ReplicationStatus::Completed | ReplicationStatus::Complete) => {
                    break (status, head.ssekms_key_id().map(str::to_string));
                }
                Some(ReplicationStatus::Failed) => {
                    break (status, head.ssekms_key_id().map(str::to_string));
                }
                _ if Instant::now() >= deadline => {
                    self.remove(cx, &key, version.as_deref(), None).await;
                    return Err(StepError::permanent(
                        "ReplicationTimeout",
                        format!(
                            "the canary {key} was not replicated within {:.0} s (status {}): S3 leaves an object PENDING during an outage, and a rule that does not match it leaves it without a status",
                            timeout().as_secs_f64(),
                            status.as_ref().map(|s| s.as_str()).unwrap_or("none")
                        ),
                    ).with_hint("check the rule's prefix and status, then `ferry resume`; FERRY_VERIFY_TIMEOUT_SECS sets the wait"));
                }
                _ => tokio::time::sleep(interval()).await,
            }
        };
        if status == Some(ReplicationStatus::Failed) {
            let why = self.explain(cx, source_key.as_deref()).await;
            self.remove(cx, &key, version.as_deref(), None).await;
            return Err(StepError::permanent(
                "ReplicationFailed",
                format!(
                    "the canary {key} in {} did not replicate (status FAILED): {why}",
                    self.spec.source_bucket
                ),
            )
            .with_hint("fix it, then `ferry resume`: the canary is written again"));
        }
        // The replica: there, a replica, under the replica key.
        let dst = c.aws.s3(
            self.spec.destination_account.as_str(),
            self.destination_region(),
        );
        let replica = dst
            .head_object()
            .bucket(self.spec.destination_bucket.as_str())
            .key(&key)
            .send()
            .await;
        let (replica_version, replica_key_now) = match replica {
            Ok(h) => (
                h.version_id().map(str::to_string),
                h.ssekms_key_id().map(str::to_string),
            ),
            Err(e) => {
                self.remove(cx, &key, version.as_deref(), None).await;
                let e = s3_error("HeadObject")(e);
                return Err(StepError::permanent(
                    "ReplicaMissing",
                    format!(
                        "the canary {key} is COMPLETED in {}, but {} cannot read its replica in {} ({})",
                        self.spec.source_bucket,
                        self.spec.destination_account,
                        self.spec.destination_bucket,
                        e.code
                    ),
                ));
            }
        };
        let under_key = replica_key_now.as_deref().is_some_and(|k| {
            k == replica_key.as_str() || k.ends_with(&format!("/{}", replica_key.key_id()))
        });
        self.remove(cx, &key, version.as_deref(), replica_version.as_deref())
            .await;
        // An earlier attempt left canaries: their replicas may have landed since.
        if left_over > 0 {
            self.sweep(cx).await;
        }
        if !under_key {
            return Err(StepError::permanent(
                "ReplicaKeyMismatch",
                format!(
                    "the canary's replica in {} is encrypted with {}, not the replica key {replica_key}",
                    self.spec.destination_bucket,
                    replica_key_now.as_deref().unwrap_or("no KMS key")
                ),
            ));
        }
        Ok(Applied::Done(StepOutput::Verified(VerifyOutput {
            fingerprint,
            canary: key,
            seconds: started.elapsed().as_secs_f64(),
        })))
    }
}
