//! EC2 steps: snapshot copies (re-encrypting, tagged so a repeat finds them), and the batched
//! poller that follows every pending copy of one account and region with one call per tick.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};
use aws_smithy_async::future::pagination_stream::PaginationStream;
use serde_json::{Map, Value, json};

use super::kms::step_identity;
use super::{Base, Cx, ReadOnce, SdkError, ServiceError, bucket, failed, todo};
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

/// Reads every page of an EC2 listing, each after a token from `action`'s bucket, handing each
/// page to `each`.
pub(crate) async fn each_page<O, E: ServiceError>(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    action: &'static str,
    mut pages: PaginationStream<Result<O, SdkError<E>>>,
    mut each: impl FnMut(O),
) -> Result<(), StepError> {
    let tokens = [bucket(account, region, &format!("ec2:{action}"))];
    loop {
        cx.limits().take(&tokens).await;
        let Some(page) = pages.next().await else {
            return Ok(());
        };
        each(page.map_err(|e| failed(ec2_error(action)(e), &[]))?);
    }
}

fn ec2_error<E: ServiceError>(op: &'static str) -> impl Fn(SdkError<E>) -> AwsError {
    move |e| AwsError::from_sdk("ec2", op, e)
}

/// EC2 filters take at most 200 values.
const FILTER_VALUES: usize = 200;

/// Snapshots by id, in batches of 200, through a filter rather than `SnapshotIds` so that a
/// missing id leaves it out of the answer instead of failing the whole call.
pub async fn snapshots_by_id(
    cx: &Cx,
    limits: &Limits,
    account: &str,
    region: &str,
    ids: &[String],
) -> Result<Vec<aws_sdk_ec2::types::Snapshot>, AwsError> {
    let client = cx.aws.ec2(account, region);
    let mut all = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(FILTER_VALUES) {
        limits
            .take(&[bucket(account, region, "ec2:DescribeSnapshots")])
            .await;
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
            .map_err(ec2_error("DescribeSnapshots"))?;
        all.extend(out.snapshots().iter().cloned());
    }
    Ok(all)
}

/// `<kind>/<account>/<region>` -> (account, region).
fn poll_scope(poll_key: &str) -> (&str, &str) {
    let mut parts = poll_key.splitn(3, '/').skip(1);
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

/// The tags a copy carries: the migration's ferry and user tags, and `ferry:source`, by which a
/// repeated or resumed run finds it.
fn copy_tags(base: &Base) -> Map<String, Value> {
    let mut tags = match base.params.get("tags") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    tags.insert("ferry:source".into(), json!(base.target));
    tags
}

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
        copy_tags(&self.base)
    }

    /// Copies earlier runs made, found by their ferry tags (CopySnapshot has no client token).
    async fn earlier_copies(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<SnapshotCopy>, StepError> {
        let c = cx.ctx();
        // One listing of the plan's copies per (account, region) serves every step's first look;
        // after an apply attempt a step asks AWS directly, so it never misses its own copy.
        if !c.copy_index.attempted(&self.base.id) {
            let all = c
                .copy_index
                .snapshots(cx, &self.base.account, &self.base.region)
                .await?;
            return Ok(all
                .iter()
                .filter(|s| s.migration == self.base.owner && s.source == self.source())
                .cloned()
                .collect());
        }
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
        Ok(out.snapshots().iter().map(SnapshotCopy::of).collect())
    }
}

/// A snapshot copy ferry made, as found by its tags.
#[derive(Debug, Clone)]
pub struct SnapshotCopy {
    pub id: String,
    pub state: SnapshotState,
    pub key: Option<String>,
    pub migration: String,
    pub source: String,
}

impl SnapshotCopy {
    fn of(s: &aws_sdk_ec2::types::Snapshot) -> SnapshotCopy {
        let tag = |k: &str| {
            s.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_string()
        };
        SnapshotCopy {
            id: s.snapshot_id().unwrap_or_default().to_string(),
            state: s.state().cloned().unwrap_or(SnapshotState::Pending),
            key: s.kms_key_id().map(str::to_string),
            migration: tag("ferry:migration"),
            source: tag("ferry:source"),
        }
    }
}

/// An image copy ferry made, as found by its tags.
#[derive(Debug, Clone)]
pub struct ImageCopy {
    pub id: String,
    pub state: String,
    pub migration: String,
    pub source: String,
}

/// The plan's copies per (account, region), listed once per process and shared by every copy
/// step's first observation (instead of one describe call per snapshot or image).
#[derive(Default)]
pub struct CopyIndex {
    snapshots: ReadOnce<(String, String), Vec<SnapshotCopy>>,
    images: ReadOnce<(String, String), Vec<ImageCopy>>,
    attempted: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl CopyIndex {
    /// Marks that `step` is about to mutate: from now on it looks for itself directly.
    pub fn attempt(&self, step: &str) {
        self.attempted
            .lock()
            .expect("index")
            .insert(step.to_string());
    }

    pub fn attempted(&self, step: &str) -> bool {
        self.attempted.lock().expect("index").contains(step)
    }

    async fn images(
        &self,
        cx: &StepCx<'_, Cx>,
        account: &str,
        region: &str,
    ) -> Result<Vec<ImageCopy>, StepError> {
        self.images
            .get((account.to_string(), region.to_string()), || async {
                cx.limits()
                    .take(&[bucket(account, region, "ec2:DescribeImages")])
                    .await;
                let out = cx
                    .ctx()
                    .aws
                    .ec2(account, region)
                    .describe_images()
                    .owners("self")
                    .filters(
                        Filter::builder()
                            .name("tag:ferry:plan")
                            .values(&cx.ctx().plan)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
                let tag = |i: &aws_sdk_ec2::types::Image, k: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_string()
                };
                Ok::<_, StepError>(
                    out.images()
                        .iter()
                        .map(|i| ImageCopy {
                            id: i.image_id().unwrap_or_default().to_string(),
                            state: i
                                .state()
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_default(),
                            migration: tag(i, "ferry:migration"),
                            source: tag(i, "ferry:source"),
                        })
                        .collect(),
                )
            })
            .await
    }

    async fn snapshots(
        &self,
        cx: &StepCx<'_, Cx>,
        account: &str,
        region: &str,
    ) -> Result<Vec<SnapshotCopy>, StepError> {
        self.snapshots
            .get((account.to_string(), region.to_string()), || async {
                let pages = cx
                    .ctx()
                    .aws
                    .ec2(account, region)
                    .describe_snapshots()
                    .owner_ids("self")
                    .filters(
                        Filter::builder()
                            .name("tag:ferry:plan")
                            .values(&cx.ctx().plan)
                            .build(),
                    )
                    .into_paginator()
                    .send();
                let mut all = Vec::new();
                each_page(cx, account, region, "DescribeSnapshots", pages, |page| {
                    all.extend(page.snapshots().iter().map(SnapshotCopy::of))
                })
                .await?;
                Ok::<_, StepError>(all)
            })
            .await
    }
}

#[async_trait]
impl Step<Cx> for CopySnapshot {
    step_identity!();

    fn gate(&self) -> Option<&str> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let copies = self.earlier_copies(cx).await?;
        let state = |wanted: SnapshotState| copies.iter().find(|c| c.state == wanted);
        if let Some(c) = state(SnapshotState::Completed) {
            return Ok(Observation::Done(
                json!({ "snapshot_id": c.id, "source": self.source(), "kms_key_id": c.key }),
            ));
        }
        if let Some(c) = state(SnapshotState::Pending) {
            return Ok(Observation::InProgress(Submitted {
                poll_key: self.poll_key.clone(),
                id: c.id.clone(),
            }));
        }
        // Failed copies are ferry's own: removed before copying again, so none is left behind.
        let failed_copies: Vec<&String> = copies.iter().map(|c| &c.id).collect();
        Ok(Observation::Todo(todo(
            "create",
            json!({ "copy_of": self.source(), "key": self.base.param("key"), "failed_copies": failed_copies }),
        )))
    }

    fn intent(&self, _change: &Value) -> Value {
        json!({ "tags": self.tags() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Value) -> Result<Applied, StepError> {
        cx.ctx().copy_index.attempt(&self.base.id);
        let client = cx.ctx().aws.ec2(&self.base.account, &self.base.region);
        for id in change
            .get("failed_copies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            client
                .delete_snapshot()
                .snapshot_id(id)
                .send()
                .await
                .map_err(|e| failed(ec2_error("DeleteSnapshot")(e), &[]))?;
        }
        let key = key_arn(cx, &self.base).await?;
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

/// The destination key's ARN: from the step that made it, from the resolve stage, or
/// looked up.
async fn key_arn(cx: &StepCx<'_, Cx>, base: &Base) -> Result<String, StepError> {
    let key = base.param("key").unwrap_or_default();
    if let Some(name) = base.param("key_name") {
        let replica = format!("key.{name}/replica-{}/replicate", base.region);
        let created = format!("key.{name}/key/create");
        for dep in [replica, created] {
            if let Some(arn) = cx
                .input(&dep)
                .and_then(|o| o.get("arn"))
                .and_then(Value::as_str)
                && arn.split(':').nth(3) == Some(base.region.as_str())
            {
                return Ok(arn.to_string());
            }
        }
    }
    if let Some(arn) = cx.ctx().known_key(&base.account, &base.region, key) {
        return Ok(arn);
    }
    let k = super::kms::describe(cx.ctx(), cx.limits(), &base.account, &base.region, key)
        .await
        .map_err(|e| failed(e, &["NotFoundException"]))?
        .ok_or_else(|| {
            StepError::new(
                ErrorClass::NotYetConsistent,
                "NotFoundException",
                format!(
                    "destination key {key} not found in {}/{}",
                    base.account, base.region
                ),
            )
        })?;
    Ok(k.arn)
}

/// A copy that AWS reports as failed; a KMS message gets the fix in the hint.
fn copy_failed(id: &str, message: Option<&str>) -> StepError {
    let message = message.unwrap_or("no reason given");
    let e = StepError::permanent("CopyFailed", format!("the copy {id} failed: {message}"));
    if message.contains("KMS") || message.to_lowercase().contains("key") {
        e.with_hint(format!(
            "the destination account cannot use the source KMS key named in the message: it needs {} on it (key_access: policy or grant lets ferry add that); then `ferry resume` removes the failed copy and copies again",
            super::share::KEY_ACTIONS.join(", ")
        ))
    } else {
        e
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
        let (account, region) = poll_scope(poll_key);
        let found = snapshots_by_id(ctx, limits, account, region, ids)
            .await
            .map_err(|e| failed(e, &[]))?;
        let mut answers = Vec::with_capacity(ids.len());
        for s in &found {
            let id = s.snapshot_id().unwrap_or_default().to_string();
            let answer = match s.state() {
                Some(SnapshotState::Completed) => PollAnswer::Done(json!({
                    "snapshot_id": id,
                    "kms_key_id": s.kms_key_id(),
                    "source": s.tags().iter().find(|t| t.key() == Some("ferry:source")).and_then(|t| t.value()),
                })),
                Some(SnapshotState::Error) => {
                    PollAnswer::Failed(copy_failed(&id, s.state_message()))
                }
                _ => PollAnswer::Pending {
                    percent: s
                        .progress()
                        .and_then(|p| p.trim_end_matches('%').parse().ok()),
                },
            };
            answers.push((id, answer));
        }
        Ok(answers)
    }
}

/// Poll key prefix of image copies: `ec2.image/<account>/<region>`.
pub const IMAGE_POLL: &str = "ec2.image";

/// `ec2.copy-image`: CopyImage into this step's account and region, re-encrypting every volume
/// with the destination key, with a deterministic `ClientToken` so a repeat never copies twice.
pub struct CopyImage {
    base: Base,
    gate: String,
    poll_key: String,
}

impl CopyImage {
    pub fn new(spec: &StepSpec) -> Self {
        let base = Base::new(spec, "ec2:CopyImage");
        CopyImage {
            gate: format!("{IMAGE_COPY_GATE}/{}/{}", base.account, base.region),
            poll_key: format!("{IMAGE_POLL}/{}/{}", base.account, base.region),
            base,
        }
    }

    fn source(&self) -> &str {
        &self.base.target
    }

    fn tags(&self) -> Map<String, Value> {
        copy_tags(&self.base)
    }

    /// ≤ 64 ASCII characters, the same for the same (plan, migration, image, destination, key)
    /// and attempt; a failed earlier copy (`attempt`) gets a fresh token.
    fn client_token(&self, cx: &Cx, attempt: usize) -> String {
        use sha2::Digest;
        let material = format!(
            "{}|{}|{}|{}|{}|{}|{}",
            cx.plan,
            self.base.owner,
            self.source(),
            cx.account_id(&self.base.account),
            self.base.region,
            self.base.param("key").unwrap_or_default(),
            attempt
        );
        let digest = hex::encode(sha2::Sha256::digest(material.as_bytes()));
        format!("ferry-{}", &digest[..58])
    }

    /// Copies of this image this migration made earlier: (id, state).
    async fn earlier_copies(
        &self,
        cx: &StepCx<'_, Cx>,
    ) -> Result<Vec<(String, String)>, StepError> {
        let c = cx.ctx();
        if !c.copy_index.attempted(&self.base.id) {
            let all = c
                .copy_index
                .images(cx, &self.base.account, &self.base.region)
                .await?;
            return Ok(all
                .into_iter()
                .filter(|i| i.migration == self.base.owner && i.source == self.source())
                .map(|i| (i.id, i.state))
                .collect());
        }
        cx.limits()
            .take(&[bucket(
                &self.base.account,
                &self.base.region,
                "ec2:DescribeImages",
            )])
            .await;
        let tags = self.tags();
        let mut req = c
            .aws
            .ec2(&self.base.account, &self.base.region)
            .describe_images()
            .owners("self");
        for k in ["ferry:plan", "ferry:migration", "ferry:source"] {
            if let Some(v) = tags.get(k).and_then(Value::as_str) {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
        }
        let out = req
            .send()
            .await
            .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
        Ok(out
            .images()
            .iter()
            .map(|i| {
                (
                    i.image_id().unwrap_or_default().to_string(),
                    i.state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }
}

#[async_trait]
impl Step<Cx> for CopyImage {
    step_identity!();

    fn gate(&self) -> Option<&str> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let copies = self.earlier_copies(cx).await?;
        if let Some((id, _)) = copies.iter().find(|(_, s)| s == "available") {
            return Ok(Observation::Done(
                json!({ "image_id": id, "source": self.source() }),
            ));
        }
        if let Some((id, _)) = copies.iter().find(|(_, s)| s == "pending") {
            return Ok(Observation::InProgress(Submitted {
                poll_key: self.poll_key.clone(),
                id: id.clone(),
            }));
        }
        let failed_copies: Vec<&String> = copies.iter().map(|(id, _)| id).collect();
        Ok(Observation::Todo(todo(
            "create",
            json!({ "copy_of": self.source(), "key": self.base.param("key"), "failed_copies": failed_copies }),
        )))
    }

    fn intent(&self, change: &Value) -> Value {
        let attempt = change
            .get("failed_copies")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        json!({ "tags": self.tags(), "attempt": attempt })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Value) -> Result<Applied, StepError> {
        let c = cx.ctx();
        c.copy_index.attempt(&self.base.id);
        let client = c.aws.ec2(&self.base.account, &self.base.region);
        let failed_copies: Vec<String> = change
            .get("failed_copies")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        // A failed copy is ferry's own (tagged): clear it and its snapshots away, so nothing
        // half-done stays behind and the next copy can take the name.
        if !failed_copies.is_empty() {
            let out = client
                .describe_images()
                .set_image_ids(Some(failed_copies.clone()))
                .send()
                .await
                .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
            for image in out.images() {
                client
                    .deregister_image()
                    .image_id(image.image_id().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| failed(ec2_error("DeregisterImage")(e), &[]))?;
                for b in image.block_device_mappings() {
                    if let Some(snap) = b.ebs().and_then(|e| e.snapshot_id()) {
                        let r = client.delete_snapshot().snapshot_id(snap).send().await;
                        if let Err(e) = r.map_err(ec2_error("DeleteSnapshot"))
                            && !e.is_not_found()
                        {
                            return Err(failed(e, &[]));
                        }
                    }
                }
            }
        }
        let key = key_arn(cx, &self.base).await?;
        let source_region = self
            .base
            .param("source_region")
            .unwrap_or(&self.base.region);
        let mut image_tags = TagSpecification::builder().resource_type(ResourceType::Image);
        let mut snapshot_tags = TagSpecification::builder().resource_type(ResourceType::Snapshot);
        for (k, v) in self.tags() {
            let t = Tag::builder()
                .key(k)
                .value(v.as_str().unwrap_or_default())
                .build();
            image_tags = image_tags.tags(t.clone());
            snapshot_tags = snapshot_tags.tags(t);
        }
        let out = client
            .copy_image()
            .source_image_id(self.source())
            .source_region(source_region)
            .name(format!(
                "ferry-{}-{}-{}",
                c.plan,
                self.base.owner,
                self.source()
            ))
            .description(format!(
                "ferry: copy of {} ({}/{})",
                self.source(),
                c.plan,
                self.base.owner
            ))
            .encrypted(true)
            .kms_key_id(&key)
            .client_token(self.client_token(c, failed_copies.len()))
            .tag_specifications(image_tags.build())
            .tag_specifications(snapshot_tags.build())
            .send()
            .await
            .map_err(|e| failed(ec2_error("CopyImage")(e), &[]))?;
        let id = out.image_id().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(StepError::permanent(
                "NoImageId",
                "CopyImage returned no image id",
            ));
        }
        Ok(Applied::Submitted(Submitted {
            poll_key: self.poll_key.clone(),
            id,
        }))
    }
}

/// Follows pending image copies: one DescribeImages per (account, region) per tick.
pub struct ImagePoller;

#[async_trait]
impl Poller<Cx> for ImagePoller {
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
                .take(&[bucket(account, region, "ec2:DescribeImages")])
                .await;
            let out = client
                .describe_images()
                .filters(
                    Filter::builder()
                        .name("image-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
            for i in out.images() {
                let id = i.image_id().unwrap_or_default().to_string();
                let answer = match i.state().map(|s| s.as_str()) {
                    Some("available") => PollAnswer::Done(json!({
                        "image_id": id,
                        "snapshots": i.block_device_mappings().iter().filter_map(|b| b.ebs().and_then(|e| e.snapshot_id())).collect::<Vec<_>>(),
                    })),
                    Some("failed") | Some("error") | Some("invalid") | Some("deregistered") => {
                        PollAnswer::Failed(copy_failed(
                            &id,
                            i.state_reason().and_then(|r| r.message()),
                        ))
                    }
                    _ => PollAnswer::Pending { percent: None },
                };
                answers.push((id, answer));
            }
        }
        Ok(answers)
    }
}
