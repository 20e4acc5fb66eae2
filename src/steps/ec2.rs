//! EC2 steps: snapshot copies (re-encrypting, tagged so a repeat finds them), and the batched
//! poller that follows every pending copy of one account and region with one call per tick.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};
use serde_json::{Map, Value, json};

use super::kms::step_identity;
use super::{Base, Cx, SdkError, ServiceError, bucket, failed, todo};
use crate::aws::AwsError;
use crate::exec::{
    Applied, ErrorClass, Limits, Observation, PollAnswer, Poller, Scope, Step, StepCx, StepError,
    Submitted,
};
use crate::graph::StepSpec;

/// Gate on snapshot copies in flight per destination (account, region) (AWS: 20).
pub const SNAPSHOT_COPY_GATE: &str = "snapshot-copies";
/// Gate on image copies in flight per destination (account, region) (AWS: 300).
pub const IMAGE_COPY_GATE: &str = "image-copies";
/// Poll key prefix of snapshot copies: `ec2.snapshot/<account>/<region>`.
pub const SNAPSHOT_POLL: &str = "ec2.snapshot";

fn ec2_error<E: ServiceError>(op: &'static str) -> impl Fn(SdkError<E>) -> AwsError {
    move |e| AwsError::from_sdk("ec2", op, e)
}

/// EC2 filters take at most 200 values.
const FILTER_VALUES: usize = 200;

/// `ec2.copy-snapshot`: CopySnapshot into this step's region with `Encrypted` and the
/// destination key, tagged `ferry:plan`, `ferry:migration`, `ferry:source`.
pub struct CopySnapshot {
    base: Base,
    gate: String,
    poll_key: String,
}

impl CopySnapshot {
    pub fn new(spec: &StepSpec) -> Self {
        let base = Base::new(spec, "ec2:CopySnapshot");
        CopySnapshot {
            gate: format!("{SNAPSHOT_COPY_GATE}/{}/{}", base.account, base.region),
            poll_key: format!("{SNAPSHOT_POLL}/{}/{}", base.account, base.region),
            base,
        }
    }

    fn source(&self) -> &str {
        &self.base.target
    }

    fn tags(&self) -> Map<String, Value> {
        let mut tags = match self.base.params.get("tags") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        tags.insert("ferry:source".into(), json!(self.source()));
        tags
    }

    /// The copy an earlier run made, found by its ferry tags (CopySnapshot has no client token).
    async fn earlier_copy(
        &self,
        cx: &StepCx<'_, Cx>,
    ) -> Result<Option<(String, SnapshotState, Option<String>)>, StepError> {
        let c = cx.ctx();
        cx.limits()
            .take(&[bucket(
                &self.base.account,
                &self.base.region,
                "ec2:DescribeSnapshots",
            )])
            .await;
        let tags = self.tags();
        let mut req = c
            .aws
            .ec2(&self.base.account, &self.base.region)
            .describe_snapshots()
            .owner_ids("self");
        for k in ["ferry:plan", "ferry:migration", "ferry:source"] {
            if let Some(v) = tags.get(k).and_then(Value::as_str) {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
        }
        let out = req
            .send()
            .await
            .map_err(|e| failed(ec2_error("DescribeSnapshots")(e), &[]))?;
        // A failed copy is no copy: it is made again.
        let mut found: Vec<_> = out
            .snapshots()
            .iter()
            .filter(|s| s.state() != Some(&SnapshotState::Error))
            .map(|s| {
                (
                    s.snapshot_id().unwrap_or_default().to_string(),
                    s.state().cloned().unwrap_or(SnapshotState::Pending),
                    s.kms_key_id().map(str::to_string),
                )
            })
            .collect();
        // Prefer a finished copy if (through someone's manual retry) there are several.
        found.sort_by_key(|(_, state, _)| *state != SnapshotState::Completed);
        Ok(found.into_iter().next())
    }

    /// The destination key's ARN: from the step that made it, from the resolve stage, or
    /// looked up.
    async fn key_arn(&self, cx: &StepCx<'_, Cx>) -> Result<String, StepError> {
        let key = self.base.param("key").unwrap_or_default();
        if let Some(name) = self.base.param("key_name") {
            let replica = format!("key.{name}/replica-{}/replicate", self.base.region);
            let created = format!("key.{name}/key/create");
            for dep in [replica, created] {
                if let Some(arn) = cx
                    .input(&dep)
                    .and_then(|o| o.get("arn"))
                    .and_then(Value::as_str)
                    && arn.split(':').nth(3) == Some(self.base.region.as_str())
                {
                    return Ok(arn.to_string());
                }
            }
        }
        if let Some(arn) = cx
            .ctx()
            .known_key(&self.base.account, &self.base.region, key)
        {
            return Ok(arn);
        }
        let k = super::kms::describe(
            cx.ctx(),
            cx.limits(),
            &self.base.account,
            &self.base.region,
            key,
        )
        .await
        .map_err(|e| failed(e, &["NotFoundException"]))?
        .ok_or_else(|| {
            StepError::new(
                ErrorClass::NotYetConsistent,
                "NotFoundException",
                format!(
                    "destination key {key} not found in {}/{}",
                    self.base.account, self.base.region
                ),
            )
        })?;
        Ok(k.arn)
    }
}

#[async_trait]
impl Step<Cx> for CopySnapshot {
    step_identity!();

    fn gate(&self) -> Option<&str> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        match self.earlier_copy(cx).await? {
            Some((id, SnapshotState::Completed, key)) => Ok(Observation::Done(
                json!({ "snapshot_id": id, "source": self.source(), "kms_key_id": key }),
            )),
            Some((id, _, _)) => Ok(Observation::InProgress(Submitted {
                poll_key: self.poll_key.clone(),
                id,
            })),
            None => Ok(Observation::Todo(todo(
                "create",
                json!({ "copy_of": self.source(), "key": self.base.param("key") }),
            ))),
        }
    }

    fn intent(&self, _change: &Value) -> Value {
        json!({ "tags": self.tags() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Value) -> Result<Applied, StepError> {
        let key = self.key_arn(cx).await?;
        let source_region = self
            .base
            .param("source_region")
            .unwrap_or(&self.base.region);
        let mut tags = TagSpecification::builder().resource_type(ResourceType::Snapshot);
        for (k, v) in self.tags() {
            tags = tags.tags(
                Tag::builder()
                    .key(k)
                    .value(v.as_str().unwrap_or_default())
                    .build(),
            );
        }
        let out = cx
            .ctx()
            .aws
            .ec2(&self.base.account, &self.base.region)
            .copy_snapshot()
            .source_snapshot_id(self.source())
            .source_region(source_region)
            .encrypted(true)
            .kms_key_id(&key)
            .description(format!(
                "ferry: copy of {} ({}/{})",
                self.source(),
                cx.ctx().plan,
                self.base.owner
            ))
            .tag_specifications(tags.build())
            .send()
            .await
            .map_err(|e| failed(ec2_error("CopySnapshot")(e), &[]))?;
        let id = out.snapshot_id().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(StepError::permanent(
                "NoSnapshotId",
                "CopySnapshot returned no snapshot id",
            ));
        }
        Ok(Applied::Submitted(Submitted {
            poll_key: self.poll_key.clone(),
            id,
        }))
    }
}

/// Follows pending snapshot copies: one DescribeSnapshots per (account, region) per tick.
pub struct SnapshotPoller;

#[async_trait]
impl Poller<Cx> for SnapshotPoller {
    async fn poll(
        &self,
        ctx: &Arc<Cx>,
        limits: &Arc<Limits>,
        poll_key: &str,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer)>, StepError> {
        let mut parts = poll_key.splitn(3, '/');
        let (_, account, region) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let client = ctx.aws.ec2(account, region);
        let mut answers = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FILTER_VALUES) {
            limits
                .take(&[bucket(account, region, "ec2:DescribeSnapshots")])
                .await;
            // A filter, not SnapshotIds: a missing id must not fail the whole batch.
            let out = client
                .describe_snapshots()
                .filters(
                    Filter::builder()
                        .name("snapshot-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| failed(ec2_error("DescribeSnapshots")(e), &[]))?;
            for s in out.snapshots() {
                let id = s.snapshot_id().unwrap_or_default().to_string();
                let answer = match s.state() {
                    Some(SnapshotState::Completed) => PollAnswer::Done(json!({
                        "snapshot_id": id,
                        "kms_key_id": s.kms_key_id(),
                        "source": s.tags().iter().find(|t| t.key() == Some("ferry:source")).and_then(|t| t.value()),
                    })),
                    Some(SnapshotState::Error) => PollAnswer::Failed(StepError::permanent(
                        "SnapshotCopyFailed",
                        format!(
                            "the copy {id} failed: {}",
                            s.state_message().unwrap_or("no reason given")
                        ),
                    )),
                    _ => PollAnswer::Pending {
                        percent: s
                            .progress()
                            .and_then(|p| p.trim_end_matches('%').parse().ok()),
                    },
                };
                answers.push((id, answer));
            }
        }
        Ok(answers)
    }
}
