//! `ferry destroy`'s S3 steps: ferry's replication rule taken out of the source bucket's
//! configuration (every other rule kept), ferry's statements out of the destination bucket
//! policy (by Sid), and the destination bucket ferry created deleted, only while it is empty.

use async_trait::async_trait;
use aws_sdk_s3::types::ReplicationConfiguration;
use serde_json::{Value, json};

use super::output::RemovedOutput;
use super::s3::{AllowReplicationRole, made_by_ferry, s3_error};
use super::{Action, Base, Change, Cx, StepOutput, Todo, change, failed, policy, step_identity};
use crate::exec::{Applied, GateKey, Observation, Step, StepCx, StepError};
use crate::graph::{BucketPolicySpec, CreateBucketSpec, PlannedStep, ReplicationSpec};

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

fn removed(removed: Vec<String>, kept: Vec<String>) -> StepOutput {
    StepOutput::Removed(RemovedOutput { removed, kept })
}

/// `s3.remove-replication`: ferry's rule out of the source bucket's replication
/// configuration; the configuration is deleted only when ferry's rule was its last.
pub struct RemoveReplication {
    base: Base,
    spec: ReplicationSpec,
    gate: GateKey,
}

impl RemoveReplication {
    pub fn new(step: &PlannedStep, spec: ReplicationSpec) -> Self {
        let base = Base::new(step, "s3:PutBucketReplication");
        RemoveReplication {
            gate: GateKey::new(
                super::REPLICATION_GATE,
                &format!("{}/{}", base.account, spec.bucket),
            ),
            base,
            spec,
        }
    }

    async fn current(
        &self,
        cx: &StepCx<'_, Cx>,
    ) -> Result<Option<ReplicationConfiguration>, StepError> {
        super::s3::replication_configuration(
            cx,
            &self.base.account,
            &self.base.region,
            &self.spec.bucket,
        )
        .await
    }
}

#[async_trait]
impl Step<Cx> for RemoveReplication {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let id = self.spec.rule.id.as_str();
        let Some(config) = self.current(cx).await? else {
            return Ok(Observation::Done(removed(Vec::new(), Vec::new())));
        };
        if !config.rules().iter().any(|r| r.id() == Some(id)) {
            return Ok(Observation::Done(removed(Vec::new(), Vec::new())));
        }
        let mut diff = vec![format!(
            "- rule {id} of bucket {} (replicating to {})",
            self.spec.bucket, self.spec.destination_bucket
        )];
        let others: Vec<&str> = config
            .rules()
            .iter()
            .filter(|r| r.id() != Some(id))
            .map(|r| r.id().unwrap_or("(no id)"))
            .collect();
        if others.is_empty() {
            diff.push("- the replication configuration (ferry's rule was its only rule)".into());
        }
        diff.extend(others.iter().map(|o| format!("= rule {o} (kept)")));
        Ok(Observation::Todo(change(
            Action::Delete,
            diff,
            Todo::Nothing,
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "removing_rule": self.spec.rule.id })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let id = self.spec.rule.id.as_str();
        let s3 = cx.ctx().aws.s3(&self.base.account, &self.base.region);
        let bucket = self.spec.bucket.as_str();
        // From the live configuration, read right before writing.
        let Some(config) = self.current(cx).await? else {
            return Ok(Applied::Done(removed(Vec::new(), Vec::new())));
        };
        let rest: Vec<_> = config
            .rules()
            .iter()
            .filter(|r| r.id() != Some(id))
            .cloned()
            .collect();
        cx.ctx().changing(&self.base.id_text);
        if rest.is_empty() {
            s3.delete_bucket_replication()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| failed(s3_error("DeleteBucketReplication")(e), &[]))?;
        } else {
            let kept = ReplicationConfiguration::builder()
                .role(config.role())
                .set_rules(Some(rest))
                .build()
                .expect("role and rules set");
            s3.put_bucket_replication()
                .bucket(bucket)
                .replication_configuration(kept)
                .send()
                .await
                .map_err(|e| failed(s3_error("PutBucketReplication")(e), &[]))?;
        }
        Ok(Applied::Done(removed(
            vec![format!("rule {id}")],
            Vec::new(),
        )))
    }
}

/// `s3.remove-bucket-policy`: the statements `s3.allow-replication-role` merged into the
/// destination bucket policy, removed by Sid; the policy is deleted only when none is left.
pub struct RemoveBucketPolicy {
    base: Base,
    undone: AllowReplicationRole,
    spec: BucketPolicySpec,
    gate: GateKey,
}

impl RemoveBucketPolicy {
    pub fn new(step: &PlannedStep, spec: BucketPolicySpec) -> Self {
        let base = Base::new(step, "s3:PutBucketPolicy");
        RemoveBucketPolicy {
            gate: GateKey::new(
                super::BUCKET_POLICY_GATE,
                &format!("{}/{}", base.account, spec.bucket),
            ),
            undone: AllowReplicationRole::new(step, spec.clone()),
            base,
            spec,
        }
    }

    fn without_ferrys(&self, cx: &Cx, before: &Value) -> Value {
        self.undone
            .statements(cx)
            .iter()
            .filter_map(|s| s.get("Sid").and_then(Value::as_str))
            .fold(before.clone(), |p, sid| policy::remove(&p, sid))
    }
}

fn no_statements(p: &Value) -> bool {
    p["Statement"].as_array().is_none_or(|a| a.is_empty())
}

#[async_trait]
impl Step<Cx> for RemoveBucketPolicy {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let before = self.undone.current(cx).await?;
        let after = self.without_ferrys(cx.ctx(), &before);
        Ok(match super::policy_edit(before, &after) {
            Some(c) => Observation::Todo(c),
            None => Observation::Done(removed(Vec::new(), Vec::new())),
        })
    }

    fn intent(&self, change: &Change) -> Value {
        json!({ "policy_before": change.policy_before() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let before = self.undone.current(cx).await?;
        let after = self.without_ferrys(cx.ctx(), &before);
        let s3 = cx.ctx().aws.s3(&self.base.account, &self.base.region);
        let bucket = self.spec.bucket.as_str();
        cx.ctx().changing(&self.base.id_text);
        // S3 refuses a policy without statements: none left means no policy.
        if no_statements(&after) {
            s3.delete_bucket_policy()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| failed(s3_error("DeleteBucketPolicy")(e), &[]))?;
        } else {
            s3.put_bucket_policy()
                .bucket(bucket)
                .policy(after.to_string())
                .send()
                .await
                .map_err(|e| failed(s3_error("PutBucketPolicy")(e), &[]))?;
        }
        Ok(Applied::Done(removed(
            vec![format!("ferry's statements in the policy of {bucket}")],
            Vec::new(),
        )))
    }
}

/// `s3.delete-bucket`: the destination bucket this migration created (its ferry tags say so),
/// only while it holds no object version: a bucket with objects is kept, and shown.
pub struct DeleteBucket {
    base: Base,
    spec: CreateBucketSpec,
}

impl DeleteBucket {
    pub fn new(step: &PlannedStep, spec: CreateBucketSpec) -> Self {
        DeleteBucket {
            base: Base::new(step, "s3:DeleteBucket"),
            spec,
        }
    }

    async fn holds_objects(&self, cx: &StepCx<'_, Cx>) -> Result<bool, StepError> {
        let out = cx
            .ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .list_object_versions()
            .bucket(self.spec.bucket.as_str())
            .max_keys(1)
            .send()
            .await
            .map_err(|e| failed(s3_error("ListObjectVersions")(e), &[]))?;
        Ok(!out.versions().is_empty() || !out.delete_markers().is_empty())
    }
}

#[async_trait]
impl Step<Cx> for DeleteBucket {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let (account, region) = (&self.base.account, &self.base.region);
        let b = &self.spec.bucket;
        let kept = |why: &str| {
            Ok(Observation::Done(removed(
                Vec::new(),
                vec![format!("bucket {b}: kept, {why}")],
            )))
        };
        match made_by_ferry(cx, account, region, b, &self.spec.migration).await? {
            None => Ok(Observation::Done(removed(Vec::new(), Vec::new()))),
            Some(false) => kept("ferry did not create it"),
            Some(true) if self.holds_objects(cx).await? => {
                kept("it holds objects (empty it, then destroy again)")
            }
            Some(true) => Ok(Observation::Todo(change(
                Action::Delete,
                vec![format!("- bucket {b} (empty, created by ferry)")],
                Todo::Nothing,
            ))),
        }
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "deleting_bucket": self.spec.bucket })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let b = self.spec.bucket.as_str();
        cx.ctx().changing(&self.base.id_text);
        match cx
            .ctx()
            .aws
            .s3(&self.base.account, &self.base.region)
            .delete_bucket()
            .bucket(b)
            .send()
            .await
            .map_err(s3_error("DeleteBucket"))
        {
            Err(e) if e.is_code(&["NoSuchBucket"]) => {}
            Err(e) => return Err(failed(e, &[])),
            Ok(_) => {}
        }
        Ok(Applied::Done(removed(
            vec![format!("bucket {b}")],
            Vec::new(),
        )))
    }
}

/// The replication role of `bucket`'s configuration, and its rules' ids: a role still named
/// there is not ferry's to delete.
pub(super) async fn replication_role(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    bucket: &crate::ids::BucketName,
) -> Result<Option<(String, Vec<String>)>, StepError> {
    Ok(
        super::s3::replication_configuration(cx, account, region, bucket)
            .await?
            .map(|c| {
                (
                    c.role().to_string(),
                    c.rules()
                        .iter()
                        .map(|r| r.id().unwrap_or("(no id)").to_string())
                        .collect(),
                )
            }),
    )
}
