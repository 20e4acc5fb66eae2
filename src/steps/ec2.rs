//! EC2 steps: snapshot and image copies (re-encrypting, tagged so a repeat finds them), and the
//! batched pollers that follow every pending copy of one account and region with one call per
//! tick. A copy under another key than the plan's is drift: a new copy is made under the
//! plan's key and the old one is kept.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};
use serde_json::{Value, json};

use super::output::{ImageCopyOutput, SnapshotCopyOutput};
use super::pace::CopyBytes;
use super::{
    Action, Base, Change, Cx, KeptCopy, ReadOnce, StepOutput, Todo, bucket, change, each_page,
    existing_key_arn, failed, key_arn, not_visible_yet, sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{
    Applied, ErrorClass, GateKey, Limits, Observation, PollAnswer, PollKey, Poller, Step, StepCx,
    StepError, Submitted,
};
use crate::graph::{CopyImageSpec, CopySnapshotSpec, DestinationKey, PlannedStep, Tags};
use crate::ids::KeyArn;
use crate::lookup::{images_by_id, snapshots_by_id};

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

/// Gate on snapshot copies in flight per destination (account, region) (AWS: 20).
pub const SNAPSHOT_COPY_GATE: &str = "snapshot-copies";
/// Snapshot copies in flight from one source region into one destination (account, region).
pub const SNAPSHOT_PAIR_GATE: &str = "snapshot-copies-per-region-pair";
/// Gate on image copies in flight per destination (account, region) (AWS: 300).
pub const IMAGE_COPY_GATE: &str = "image-copies";
/// The poller of snapshot copies.
pub const SNAPSHOT_POLL: &str = "ec2.snapshot";
/// The poller of image copies.
pub const IMAGE_POLL: &str = "ec2.image";

fn ec2_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("ec2", op)
}

/// The tags a copy carries: the migration's ferry and user tags, `ferry:source`, by which a
/// repeated or resumed run finds it, and `ferry:key`, the key as the plan named it (how a
/// later plan shows a copy it keeps under another key).
fn copy_tags(source_tags: &Tags, tags: &Tags, source: &str, key: &DestinationKey) -> Tags {
    let mut tags_out = source_tags.clone();
    tags_out.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut tags = tags_out;
    tags.insert("ferry:source".into(), source.to_string());
    tags.insert("ferry:key".into(), key.shown.clone());
    tags
}

pub(crate) fn tag_of(tags: &[aws_sdk_ec2::types::Tag], k: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(k))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// A copy ferry made (snapshot or image), as found by its tags.
#[derive(Debug, Clone)]
pub struct Copy {
    pub id: String,
    pub state: CopyState,
    /// The ARN of the key it is encrypted with, when known.
    pub key: Option<String>,
    /// Its `ferry:key` tag: the key as the plan that made it named it.
    pub key_shown: Option<String>,
    pub migration: String,
    pub source: String,
    /// Every tag it carries.
    pub tags: Tags,
}

fn all_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// The source's tags (`copy_tags`) a finished copy lacks or carries with another value: drift,
/// mended with CreateTags. Tags the plan or ferry set win, so they are not compared here; a
/// tag removed from the source is left on the copy (ferry never removes a copy's tags).
fn tag_drift(copy: &Copy, source_tags: &Tags, ours: &Tags) -> (Tags, Vec<String>) {
    let mut add = Tags::new();
    let mut diff = Vec::new();
    for (k, v) in source_tags {
        if ours.contains_key(k) {
            continue;
        }
        match copy.tags.get(k) {
            Some(now) if now == v => {}
            Some(now) => {
                diff.push(format!(
                    "~ tag {k}: {now:?} -> {v:?} (changed on the source)"
                ));
                add.insert(k.clone(), v.clone());
            }
            None => {
                diff.push(format!("+ tag {k} = {v:?} (from the source)"));
                add.insert(k.clone(), v.clone());
            }
        }
    }
    (add, diff)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    Pending,
    Done,
    Failed,
}

impl Copy {
    fn of_snapshot(s: &aws_sdk_ec2::types::Snapshot) -> Copy {
        Copy {
            id: s.snapshot_id().unwrap_or_default().to_string(),
            state: match s.state() {
                Some(SnapshotState::Completed) => CopyState::Done,
                Some(SnapshotState::Error) => CopyState::Failed,
                _ => CopyState::Pending,
            },
            key: s.kms_key_id().map(str::to_string),
            key_shown: tag_of(s.tags(), "ferry:key"),
            migration: tag_of(s.tags(), "ferry:migration").unwrap_or_default(),
            source: tag_of(s.tags(), "ferry:source").unwrap_or_default(),
            tags: all_tags(s.tags()),
        }
    }

    fn of_image(i: &aws_sdk_ec2::types::Image) -> (Copy, Vec<String>) {
        let copy = Copy {
            id: i.image_id().unwrap_or_default().to_string(),
            state: match i.state().map(|s| s.as_str()) {
                Some("available") => CopyState::Done,
                Some("pending") | None => CopyState::Pending,
                _ => CopyState::Failed,
            },
            key: None,
            key_shown: tag_of(i.tags(), "ferry:key"),
            migration: tag_of(i.tags(), "ferry:migration").unwrap_or_default(),
            source: tag_of(i.tags(), "ferry:source").unwrap_or_default(),
            tags: all_tags(i.tags()),
        };
        let snapshots = i
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect();
        (copy, snapshots)
    }

    /// How a person names the key this copy is under.
    fn key_shown(&self) -> String {
        self.key_shown
            .clone()
            .or_else(|| self.key.clone())
            .unwrap_or_else(|| "an unknown key".into())
    }
}

/// The plan's copies per (account, region), listed once per process and shared by every copy
/// step's first observation (instead of one describe call per snapshot or image).
#[derive(Default)]
pub struct CopyIndex {
    snapshots: ReadOnce<(String, String), Arc<Vec<Copy>>>,
    images: ReadOnce<(String, String), Arc<Vec<Copy>>>,
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

    async fn snapshots(
        &self,
        cx: &StepCx<'_, Cx>,
        account: &str,
        region: &str,
    ) -> Result<Arc<Vec<Copy>>, StepError> {
        self.snapshots
            .get((account.to_string(), region.to_string()), || async {
                let pages = cx
                    .ctx()
                    .aws
                    .ec2(account, region)
                    .describe_snapshots()
                    .owner_ids("self")
                    .filters(ferry_plan_filter(cx.ctx()))
                    .into_paginator()
                    .page_size(crate::lookup::PAGE_SIZE)
                    .send();
                let mut all = Vec::new();
                each_page(
                    cx.limits(),
                    account,
                    region,
                    "DescribeSnapshots",
                    pages,
                    |p| all.extend(p.snapshots().iter().map(Copy::of_snapshot)),
                )
                .await?;
                Ok::<_, StepError>(Arc::new(all))
            })
            .await
    }

    /// The plan's image copies, each with the key of its volumes (from one batched describe
    /// of their snapshots).
    async fn images(
        &self,
        cx: &StepCx<'_, Cx>,
        account: &str,
        region: &str,
    ) -> Result<Arc<Vec<Copy>>, StepError> {
        self.images
            .get((account.to_string(), region.to_string()), || async {
                let pages = cx
                    .ctx()
                    .aws
                    .ec2(account, region)
                    .describe_images()
                    .owners("self")
                    .filters(ferry_plan_filter(cx.ctx()))
                    .into_paginator()
                    .page_size(crate::lookup::PAGE_SIZE)
                    .send();
                let mut found = Vec::new();
                each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
                    found.extend(p.images().iter().map(Copy::of_image))
                })
                .await?;
                Ok::<_, StepError>(Arc::new(
                    with_volume_keys(cx, account, region, found).await?,
                ))
            })
            .await
    }
}

fn ferry_plan_filter(cx: &Cx) -> Filter {
    Filter::builder()
        .name("tag:ferry:plan")
        .values(&cx.plan)
        .build()
}

/// Image copies with the key of their first volume's snapshot.
async fn with_volume_keys(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    images: Vec<(Copy, Vec<String>)>,
) -> Result<Vec<Copy>, StepError> {
    let wanted: Vec<String> = images.iter().flat_map(|(_, s)| s.clone()).collect();
    let keys: HashMap<String, String> = if wanted.is_empty() {
        HashMap::new()
    } else {
        snapshots_by_id(&cx.ctx().aws, cx.limits(), account, region, &wanted)
            .await
            .map_err(|e| failed(e, &[]))?
            .iter()
            .filter_map(|s| Some((s.snapshot_id()?.to_string(), s.kms_key_id()?.to_string())))
            .collect()
    };
    Ok(images
        .into_iter()
        .map(|(mut c, snaps)| {
            c.key = snaps.iter().find_map(|s| keys.get(s).cloned());
            c
        })
        .collect())
}

/// What the copies of one source say: done under the plan's key, pending under it, and the
/// rest (failed ones to remove, others under other keys to keep).
struct Found {
    done: Option<Copy>,
    pending: Option<Copy>,
    failed: Vec<String>,
    kept: Vec<KeptCopy>,
    /// More copies under the plan's key than the one kept as the copy: made by ferry twice
    /// (an earlier version resent a copy whose answer was lost, or two ferries raced).
    extra: Vec<String>,
}

fn sort_copies(copies: &[Copy], wanted: Option<&KeyArn>) -> Found {
    let under_wanted = |c: &Copy| match (wanted, &c.key) {
        (Some(w), Some(k)) => w.as_str() == k,
        // A key that does not exist yet cannot have copies under it.
        (None, _) => false,
        // Unknown key of a copy (an image whose volumes could not be read): trust it.
        (Some(_), None) => true,
    };
    let mut f = Found {
        done: None,
        pending: None,
        failed: Vec::new(),
        kept: Vec::new(),
        extra: Vec::new(),
    };
    // In id order, so that every look keeps the same copy of several.
    let mut copies: Vec<&Copy> = copies.iter().collect();
    copies.sort_by(|a, b| a.id.cmp(&b.id));
    let mut pending = Vec::new();
    for c in copies {
        match c.state {
            // Failed copies are ferry's own: removed before copying again.
            CopyState::Failed => f.failed.push(c.id.clone()),
            CopyState::Done if under_wanted(c) => match f.done {
                None => f.done = Some(c.clone()),
                Some(_) => f.extra.push(c.id.clone()),
            },
            CopyState::Pending if under_wanted(c) => pending.push(c.clone()),
            _ => f.kept.push(KeptCopy {
                id: c.id.clone(),
                key: c.key_shown(),
            }),
        }
    }
    // A finished copy is the copy; pending ones beside it (or beyond the first) are extra.
    let mut pending = pending.into_iter();
    if f.done.is_none() {
        f.pending = pending.next();
    }
    f.extra.extend(pending.map(|c| c.id));
    f
}

/// A finished copy: done, or (with `copy_tags`) the source's tags to write onto it first.
fn tags_or_done(
    copy: &Copy,
    source_tags: &Tags,
    ours: &Tags,
    done: StepOutput,
) -> Observation<StepOutput, Change> {
    let (add, diff) = tag_drift(copy, source_tags, ours);
    if add.is_empty() {
        return Observation::Done(done);
    }
    Observation::Todo(change(
        Action::Update,
        diff,
        Todo::Tags {
            resource: copy.id.clone(),
            tags: add,
            done: Box::new(done),
        },
    ))
}

/// Writes `tags` onto a copy (snapshot or image) this step made: the `Todo::Tags` of
/// [`tags_or_done`].
async fn write_tags(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    resource: &str,
    tags: &Tags,
) -> Result<(), StepError> {
    cx.limits()
        .take(&[bucket(account, region, "ec2:CreateTags")])
        .await;
    let mut req = cx
        .ctx()
        .aws
        .ec2(account, region)
        .create_tags()
        .resources(resource);
    for (k, v) in tags {
        req = req.tags(Tag::builder().key(k).value(v).build());
    }
    req.send()
        .await
        .map_err(|e| failed(ec2_error("CreateTags")(e), &[]))?;
    Ok(())
}

/// The plan's lines for extra copies: removed, the one kept named.
fn extras_change(keep: &Copy, found: &Found) -> Change {
    let mut diff: Vec<String> = found
        .extra
        .iter()
        .map(|id| {
            format!(
                "- {id} (an extra copy made by ferry, removed; {} is kept)",
                keep.id
            )
        })
        .collect();
    diff.extend(
        found
            .failed
            .iter()
            .map(|id| format!("- {id} (a failed copy made by ferry, removed)")),
    );
    let mut gone = found.extra.clone();
    gone.extend(found.failed.iter().cloned());
    change(
        Action::Update,
        diff,
        Todo::Extras {
            keep: keep.id.clone(),
            done: keep.state == CopyState::Done,
            extra: gone,
            kept: found.kept.clone(),
        },
    )
}

/// The plan's lines for a copy to make: `+` a new one, or `-/+` one beside copies under
/// other keys, naming both keys.
fn copy_change(
    what: &str,
    source: &str,
    key: &DestinationKey,
    found: Found,
    failed_before: Vec<String>,
) -> Change {
    let mut diff = Vec::new();
    let action = if found.kept.is_empty() {
        diff.push(format!("+ {what} of {source} under {}", key.shown));
        Action::Create
    } else {
        for k in &found.kept {
            diff.push(format!(
                "~ key: {} -> {} (a new copy; {} is kept: made by ferry under {})",
                k.key, key.shown, k.id, k.key
            ));
        }
        diff.push(format!("+ {what} of {source} under {}", key.shown));
        Action::Replace
    };
    for id in &found.failed {
        diff.push(format!("- {id} (a failed copy made by ferry, removed)"));
    }
    change(
        action,
        diff,
        Todo::Copy {
            failed: found.failed,
            kept: found.kept,
            failed_before,
        },
    )
}

/// `ec2.copy-snapshot`: CopySnapshot into this step's region with `Encrypted` and the
/// destination key, tagged `ferry:plan`, `ferry:migration`, `ferry:source`, `ferry:key`.
pub struct CopySnapshot {
    base: Base,
    spec: CopySnapshotSpec,
    gate: GateKey,
    pair_gate: GateKey,
    /// `account/destination/source`: the region pair.
    pair: String,
    poll_key: PollKey,
}

impl CopySnapshot {
    pub fn new(step: &PlannedStep, spec: CopySnapshotSpec) -> Self {
        let base = Base::new(step, "ec2:CopySnapshot");
        let pair = format!("{}/{}/{}", base.account, base.region, spec.source_region);
        CopySnapshot {
            gate: base.gate(SNAPSHOT_COPY_GATE),
            pair_gate: GateKey::new(SNAPSHOT_PAIR_GATE, &pair),
            pair,
            poll_key: PollKey::new(SNAPSHOT_POLL, &base.account, &base.region),
            base,
            spec,
        }
    }

    fn tags(&self) -> Tags {
        let mut tags = copy_tags(
            &self.spec.source_tags,
            &self.spec.tags,
            self.spec.source.as_str(),
            &self.spec.key,
        );
        // What retention judges the copy by, also once the source is gone.
        if let Some((volume, start)) = &self.spec.lineage {
            tags.insert("ferry:lineage".into(), volume.clone());
            tags.insert("ferry:source-time".into(), start.to_string());
        }
        tags
    }

    /// Whether the final copy of this source (that an intermediate copy is made for) is done.
    async fn final_copy_done(
        &self,
        cx: &StepCx<'_, Cx>,
        f: &crate::graph::FinalCopy,
    ) -> Result<bool, StepError> {
        let (account, region) = (f.account.as_str(), f.region.as_str());
        let all = cx.ctx().copy_index.snapshots(cx, account, region).await?;
        let mine: Vec<Copy> = all
            .iter()
            .filter(|s| {
                s.migration == self.spec.migration.as_str()
                    && s.source == self.spec.source.as_str()
                    && !s.tags.contains_key("ferry:intermediate")
            })
            .cloned()
            .collect();
        let wanted = key_arn(cx, &f.key, account, region).await?;
        Ok(sort_copies(&mine, wanted.as_ref()).done.is_some())
    }

    /// The snapshot CopySnapshot reads: the source, or the intermediate copy made of it.
    fn copy_from(&self, cx: &StepCx<'_, Cx>) -> Result<String, StepError> {
        let Some(step) = &self.spec.via else {
            return Ok(self.spec.source.to_string());
        };
        match cx.input(&step.to_string()) {
            Some(StepOutput::SnapshotCopy(c)) if !c.snapshot_id.is_empty() => {
                Ok(c.snapshot_id.clone())
            }
            _ => Err(StepError::permanent(
                "IntermediateMissing",
                format!(
                    "no intermediate copy of {} to copy from (its step found the final copy done earlier); run again",
                    self.spec.source
                ),
            )),
        }
    }

    /// Copies this migration made of this source, found by their ferry tags (CopySnapshot has
    /// no client token).
    async fn earlier_copies(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Copy>, StepError> {
        let c = cx.ctx();
        let (account, region) = (&self.base.account, &self.base.region);
        let mine = |s: &Copy| {
            s.migration == self.spec.migration.as_str() && s.source == self.spec.source.as_str()
        };
        // One listing of the plan's copies per (account, region) serves every step's first look;
        // after an apply attempt a step asks AWS directly, so it never misses its own copy.
        if !c.copy_index.attempted(&self.base.id_text) {
            let all = c.copy_index.snapshots(cx, account, region).await?;
            return Ok(all.iter().filter(|s| mine(s)).cloned().collect());
        }
        let tags = self.tags();
        let mut req = c
            .aws
            .ec2(account, region)
            .describe_snapshots()
            .owner_ids("self");
        for k in ["ferry:plan", "ferry:migration", "ferry:source"] {
            if let Some(v) = tags.get(k) {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
        }
        let pages = req
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut found = Vec::new();
        each_page(
            cx.limits(),
            account,
            region,
            "DescribeSnapshots",
            pages,
            |p| found.extend(p.snapshots().iter().map(Copy::of_snapshot)),
        )
        .await?;
        Ok(found)
    }
}

#[async_trait]
impl Step<Cx> for CopySnapshot {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    /// The copies of one region pair share its throughput: beyond pair ÷ copy throughput
    /// more copies at once only slow each other down (`ec2:snapshot-copies-per-region-pair`).
    /// A quick copy moves few bytes and goes without (`pace`). How many slots the pair has is
    /// learned from its copies' pace (`Cx::gate_slots`).
    fn inner_gate(&self, ctx: &Cx) -> Option<&GateKey> {
        (!ctx.copy_pace.quick(&self.pair, self.spec.transfer.bytes)).then_some(&self.pair_gate)
    }

    /// The bytes left in its chain: the longest chain gets the copy slots first.
    fn priority(&self) -> u64 {
        self.spec.transfer.chain_bytes
    }

    /// A time-based copy takes the duration it was asked to complete within.
    fn expected_duration(&self) -> Option<std::time::Duration> {
        self.spec
            .completion_minutes
            .map(|m| std::time::Duration::from_secs(u64::try_from(m).unwrap_or(0) * 60))
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        // An intermediate copy is not needed once the final copy is done.
        if let Some(f) = &self.spec.serves
            && self.final_copy_done(cx, f).await?
        {
            return Ok(Observation::Done(StepOutput::SnapshotCopy(
                SnapshotCopyOutput {
                    snapshot_id: String::new(),
                    source: Some(self.spec.source.to_string()),
                    kms_key_id: None,
                    kept: Vec::new(),
                },
            )));
        }
        let copies = self.earlier_copies(cx).await?;
        let (account, region) = (&self.base.account, &self.base.region);
        let wanted = key_arn(cx, &self.spec.key, account, region).await?;
        let found = sort_copies(&copies, wanted.as_ref());
        if let Some(keep) = found.done.as_ref().or(found.pending.as_ref())
            && !found.extra.is_empty()
        {
            return Ok(Observation::Todo(extras_change(keep, &found)));
        }
        if let Some(c) = &found.done {
            let done = StepOutput::SnapshotCopy(SnapshotCopyOutput {
                snapshot_id: c.id.clone(),
                source: Some(self.spec.source.to_string()),
                kms_key_id: c.key.clone(),
                kept: found.kept,
            });
            let ours = copy_tags(
                &Tags::new(),
                &self.spec.tags,
                self.spec.source.as_str(),
                &self.spec.key,
            );
            return Ok(tags_or_done(c, &self.spec.source_tags, &ours, done));
        }
        if let Some(c) = &found.pending {
            return Ok(Observation::InProgress(Submitted {
                poll_key: self.poll_key.clone(),
                id: c.id.clone(),
            }));
        }
        // The last CopySnapshot got no answer: its copy may exist and not show yet. Copying
        // again now could make a second one; look again until it shows or surely never will.
        if let Some(left) = cx.ctx().still_settling(&self.base.id_text) {
            return Err(not_visible_yet(
                "CopyNotVisibleYet",
                format!(
                    "the last CopySnapshot of {} got no answer; the copy it may have made",
                    self.spec.source
                ),
                left,
            ));
        }
        Ok(Observation::Todo(copy_change(
            "copy",
            self.spec.source.as_str(),
            &self.spec.key,
            found,
            Vec::new(),
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "tags": self.tags() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let (account, region) = (&self.base.account, &self.base.region);
        if let Todo::Tags {
            resource,
            tags,
            done,
        } = &change.todo
        {
            write_tags(cx, account, region, resource, tags).await?;
            return Ok(Applied::Done((**done).clone()));
        }
        cx.ctx().copy_index.attempt(&self.base.id_text);
        // A copy of another account's data issues grants on its key (revokes wait for them).
        cx.ctx().changing(&self.base.id_text);
        let client = cx.ctx().aws.ec2(account, region);
        if let Todo::Extras {
            keep,
            done,
            extra,
            kept,
        } = &change.todo
        {
            for id in extra {
                let r = client.delete_snapshot().snapshot_id(id).send().await;
                if let Err(e) = r.map_err(ec2_error("DeleteSnapshot"))
                    && !e.is_not_found()
                {
                    return Err(failed(e, &[]));
                }
            }
            if !done {
                return Ok(Applied::Submitted(Submitted {
                    poll_key: self.poll_key.clone(),
                    id: keep.clone(),
                }));
            }
            return Ok(Applied::Done(StepOutput::SnapshotCopy(
                SnapshotCopyOutput {
                    snapshot_id: keep.clone(),
                    source: Some(self.spec.source.to_string()),
                    kms_key_id: Some(
                        existing_key_arn(cx, &self.spec.key, account, region)
                            .await?
                            .to_string(),
                    ),
                    kept: kept.clone(),
                },
            )));
        }
        if let Todo::Copy { failed: gone, .. } = &change.todo {
            for id in gone {
                client
                    .delete_snapshot()
                    .snapshot_id(id)
                    .send()
                    .await
                    .map_err(|e| failed(ec2_error("DeleteSnapshot")(e), &[]))?;
            }
        }
        let key = existing_key_arn(cx, &self.spec.key, account, region).await?;
        let mut tags = TagSpecification::builder().resource_type(ResourceType::Snapshot);
        for (k, v) in self.tags() {
            tags = tags.tags(Tag::builder().key(k).value(v).build());
        }
        let source_region = self.spec.source_region.as_str();
        let from = self.copy_from(cx)?;
        // An encrypted copy from another region carries a CopySnapshot presigned for the
        // source region (EC2 API reference, CopySnapshot `PresignedUrl`), as botocore sends it.
        let presigned = if source_region != region.as_str() {
            let params = [
                ("Action", "CopySnapshot"),
                ("Version", "2016-11-15"),
                ("SourceRegion", source_region),
                ("SourceSnapshotId", from.as_str()),
                ("DestinationRegion", region.as_str()),
            ];
            let url = cx
                .ctx()
                .aws
                .presigned_get(account, "ec2", source_region, &params)
                .await
                .map_err(|e| failed(e, &[]))?;
            Some(url)
        } else {
            None
        };
        let out = client
            .copy_snapshot()
            .source_snapshot_id(from.as_str())
            .source_region(source_region)
            .set_presigned_url(presigned)
            .set_destination_region((source_region != region.as_str()).then(|| region.to_string()))
            .encrypted(true)
            .kms_key_id(key.as_str())
            .set_completion_duration_minutes(self.spec.completion_minutes)
            .description(format!(
                "ferry: copy of {} ({}/{})",
                self.spec.source,
                cx.ctx().plan,
                self.spec.migration
            ))
            .tag_specifications(tags.build())
            // No client token: sent once. A lost answer is resolved by looking (observe).
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::new().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| {
                let e = failed(ec2_error("CopySnapshot")(e), &[]);
                if e.class == ErrorClass::Transient {
                    cx.ctx().ambiguous_attempt(&self.base.id_text);
                }
                e
            })?;
        let id = out.snapshot_id().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(StepError::permanent(
                "NoSnapshotId",
                "CopySnapshot returned no snapshot id",
            ));
        }
        // Every copy counts on its pair; a full copy's bytes are known (its volume), so its
        // progress shows the pair's pace; an increment's estimate tells about when it ended.
        let bytes = CopyBytes {
            bytes: self.spec.transfer.bytes,
            exact: !self.spec.transfer.incremental,
        };
        cx.ctx().copy_pace.submitted(&id, &self.pair, bytes);
        Ok(Applied::Submitted(Submitted {
            poll_key: self.poll_key.clone(),
            id,
        }))
    }
}

/// A copy that AWS reports as failed. One that failed for want of key access is final, with
/// the fix in the hint; any other is removed and made once more (the retry re-observes, which
/// finds the failed copy), and only a second failure is final. Either way the message is
/// AWS's `StateMessage`, so no failure passes silently.
fn copy_failed(
    ctx: &Cx,
    tags: &[aws_sdk_ec2::types::Tag],
    id: &str,
    message: Option<&str>,
) -> StepError {
    let message = message.unwrap_or("no reason given");
    let key_problem = message.contains("KMS") || message.to_lowercase().contains("key");
    let what = format!(
        "{}/{}",
        tag_of(tags, "ferry:migration").unwrap_or_default(),
        tag_of(tags, "ferry:source").unwrap_or_else(|| id.to_string())
    );
    if !key_problem && ctx.retry_failed_copy(&what) {
        return StepError::new(
            ErrorClass::Transient,
            "CopyFailed",
            format!("the copy {id} failed: {message}; removing it and copying once more"),
        );
    }
    let e = StepError::permanent("CopyFailed", format!("the copy {id} failed: {message}"));
    if key_problem {
        e.with_hint(format!(
            "the destination account cannot use the source KMS key named in the message: it needs {} on it (key_access: policy or grant lets ferry add that); then `ferry resume` removes the failed copy and copies again",
            super::share::KEY_ACTIONS.join(", ")
        ))
    } else {
        e.with_hint("`ferry resume` removes the failed copy and copies again")
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
        key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<StepOutput>)>, StepError> {
        let found = snapshots_by_id(&ctx.aws, limits, &key.account, &key.region, ids)
            .await
            .map_err(|e| failed(e, &[]))?;
        let mut answers = Vec::with_capacity(ids.len());
        let mut progress = Vec::with_capacity(found.len());
        for s in &found {
            let id = s.snapshot_id().unwrap_or_default().to_string();
            let percent: Option<f32> = s
                .progress()
                .and_then(|p| p.trim_end_matches('%').parse().ok());
            let answer = match s.state() {
                Some(SnapshotState::Completed) => {
                    progress.push((id.clone(), 100.0));
                    PollAnswer::Done(StepOutput::SnapshotCopy(SnapshotCopyOutput {
                        snapshot_id: id.clone(),
                        kms_key_id: s.kms_key_id().map(str::to_string),
                        source: tag_of(s.tags(), "ferry:source"),
                        kept: Vec::new(),
                    }))
                }
                Some(SnapshotState::Error) => {
                    PollAnswer::Failed(copy_failed(ctx, s.tags(), &id, s.state_message()))
                }
                _ => {
                    if let Some(p) = percent {
                        progress.push((id.clone(), p));
                    }
                    PollAnswer::Pending {
                        percent,
                        detail: None,
                        eta: None,
                    }
                }
            };
            answers.push((id, answer));
        }
        ctx.copy_pace.polled(&progress);
        let gone = super::unlisted(ctx, ids, &answers);
        answers.extend(gone);
        for (id, a) in &answers {
            if matches!(a, PollAnswer::Failed(_)) {
                ctx.copy_pace.ended(id);
            }
        }
        Ok(answers)
    }
}

/// `ec2.copy-image`: CopyImage into this step's account and region, re-encrypting every volume
/// with the destination key, with a deterministic `ClientToken` so a repeat never copies twice.
pub struct CopyImage {
    base: Base,
    spec: CopyImageSpec,
    gate: GateKey,
    poll_key: PollKey,
}

impl CopyImage {
    pub fn new(step: &PlannedStep, spec: CopyImageSpec) -> Self {
        let base = Base::new(step, "ec2:CopyImage");
        CopyImage {
            gate: base.gate(IMAGE_COPY_GATE),
            poll_key: PollKey::new(IMAGE_POLL, &base.account, &base.region),
            base,
            spec,
        }
    }

    fn tags(&self) -> Tags {
        let mut tags = copy_tags(
            &self.spec.source_tags,
            &self.spec.tags,
            self.spec.source.as_str(),
            &self.spec.key,
        );
        // What retention judges the copy by, also once the source is gone.
        if let Some((name, created)) = &self.spec.lineage {
            tags.insert("ferry:lineage".into(), name.clone());
            tags.insert("ferry:source-time".into(), created.to_string());
        }
        tags
    }

    /// ≤ 64 ASCII characters, the same for the same (plan, migration, image, destination, key)
    /// and attempt; a failed earlier copy (`attempt`) gets a fresh token.
    fn client_token(&self, cx: &Cx, attempt: usize) -> String {
        use sha2::Digest;
        let material = format!(
            "{}|{}|{}|{}|{}|{}|{}",
            cx.plan,
            self.spec.migration,
            self.spec.source,
            cx.account_id(&crate::ids::AccountName::new(self.base.account.as_str())),
            self.base.region,
            self.spec.key.shown,
            attempt
        );
        let digest = hex::encode(sha2::Sha256::digest(material.as_bytes()));
        format!("ferry-{}", &digest[..58])
    }

    /// Whether the final copy of this AMI (that an intermediate copy is made for) is done.
    async fn final_copy_done(
        &self,
        cx: &StepCx<'_, Cx>,
        f: &crate::graph::FinalCopy,
    ) -> Result<bool, StepError> {
        let (account, region) = (f.account.as_str(), f.region.as_str());
        let all = cx.ctx().copy_index.images(cx, account, region).await?;
        let mine: Vec<Copy> = all
            .iter()
            .filter(|i| {
                i.migration == self.spec.migration.as_str()
                    && i.source == self.spec.source.as_str()
                    && !i.tags.contains_key("ferry:intermediate")
            })
            .cloned()
            .collect();
        let wanted = key_arn(cx, &f.key, account, region).await?;
        Ok(sort_copies(&mine, wanted.as_ref()).done.is_some())
    }

    /// The AMI CopyImage reads: the source, or the intermediate copy made of it.
    fn copy_from(&self, cx: &StepCx<'_, Cx>) -> Result<String, StepError> {
        let Some(step) = &self.spec.via else {
            return Ok(self.spec.source.to_string());
        };
        match cx.input(&step.to_string()) {
            Some(StepOutput::ImageCopy(c)) if !c.image_id.is_empty() => Ok(c.image_id.clone()),
            _ => Err(StepError::permanent(
                "IntermediateMissing",
                format!(
                    "no intermediate copy of {} to copy from (its step found the final copy done earlier); run again",
                    self.spec.source
                ),
            )),
        }
    }

    /// Copies of this image this migration made earlier.
    async fn earlier_copies(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Copy>, StepError> {
        let c = cx.ctx();
        let (account, region) = (&self.base.account, &self.base.region);
        let mine = |i: &Copy| {
            i.migration == self.spec.migration.as_str() && i.source == self.spec.source.as_str()
        };
        if !c.copy_index.attempted(&self.base.id_text) {
            let all = c.copy_index.images(cx, account, region).await?;
            return Ok(all.iter().filter(|i| mine(i)).cloned().collect());
        }
        let tags = self.tags();
        let mut req = c.aws.ec2(account, region).describe_images().owners("self");
        for k in ["ferry:plan", "ferry:migration", "ferry:source"] {
            if let Some(v) = tags.get(k) {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
        }
        let pages = req
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut found = Vec::new();
        each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
            found.extend(p.images().iter().map(Copy::of_image))
        })
        .await?;
        with_volume_keys(cx, account, region, found).await
    }
}

#[async_trait]
impl Step<Cx> for CopyImage {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        // An intermediate AMI copy is not needed once the final copy is done.
        if let Some(f) = &self.spec.serves
            && self.final_copy_done(cx, f).await?
        {
            return Ok(Observation::Done(StepOutput::ImageCopy(ImageCopyOutput {
                image_id: String::new(),
                source: Some(self.spec.source.to_string()),
                snapshots: Vec::new(),
                kept: Vec::new(),
            })));
        }
        let copies = self.earlier_copies(cx).await?;
        let (account, region) = (&self.base.account, &self.base.region);
        let wanted = key_arn(cx, &self.spec.key, account, region).await?;
        let found = sort_copies(&copies, wanted.as_ref());
        if let Some(c) = &found.done {
            let done = StepOutput::ImageCopy(ImageCopyOutput {
                image_id: c.id.clone(),
                source: Some(self.spec.source.to_string()),
                snapshots: Vec::new(),
                kept: found.kept,
            });
            let ours = copy_tags(
                &Tags::new(),
                &self.spec.tags,
                self.spec.source.as_str(),
                &self.spec.key,
            );
            return Ok(tags_or_done(c, &self.spec.source_tags, &ours, done));
        }
        if let Some(c) = &found.pending {
            return Ok(Observation::InProgress(Submitted {
                poll_key: self.poll_key.clone(),
                id: c.id.clone(),
            }));
        }
        // Every failed copy this step ever removed counts toward its attempt (journaled: the
        // ones removed are not visible any more), so no attempt reuses a client token.
        let mut failed_before = cx.ctx().failed_copies(&self.base.id_text);
        for id in &found.failed {
            if !failed_before.contains(id) {
                failed_before.push(id.clone());
            }
        }
        Ok(Observation::Todo(copy_change(
            "image copy",
            self.spec.source.as_str(),
            &self.spec.key,
            found,
            failed_before,
        )))
    }

    fn intent(&self, change: &Change) -> Value {
        let failed_before = match &change.todo {
            Todo::Copy { failed_before, .. } => failed_before.clone(),
            _ => Vec::new(),
        };
        json!({ "tags": self.tags(), "attempt": attempt(change), "failed_before": failed_before })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let c = cx.ctx();
        let (account, region) = (&self.base.account, &self.base.region);
        if let Todo::Tags {
            resource,
            tags,
            done,
        } = &change.todo
        {
            write_tags(cx, account, region, resource, tags).await?;
            return Ok(Applied::Done((**done).clone()));
        }
        c.copy_index.attempt(&self.base.id_text);
        c.changing(&self.base.id_text);
        let client = c.aws.ec2(account, region);
        let gone: Vec<String> = match &change.todo {
            Todo::Copy { failed, .. } => failed.clone(),
            _ => Vec::new(),
        };
        // A failed copy is ferry's own (tagged): clear it and its snapshots away, so nothing
        // half-done stays behind and the next copy can take the name.
        if !gone.is_empty() {
            let out = client
                .describe_images()
                .set_image_ids(Some(gone.clone()))
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
        let key = existing_key_arn(cx, &self.spec.key, account, region).await?;
        let mut image_tags = TagSpecification::builder().resource_type(ResourceType::Image);
        let mut snapshot_tags = TagSpecification::builder().resource_type(ResourceType::Snapshot);
        for (k, v) in self.tags() {
            let t = Tag::builder().key(k).value(v).build();
            image_tags = image_tags.tags(t.clone());
            snapshot_tags = snapshot_tags.tags(t);
        }
        // Copies under other keys keep their names: a new name per key.
        let name = match &change.todo {
            Todo::Copy { kept, .. } if !kept.is_empty() => format!(
                "ferry-{}-{}-{}-{}",
                c.plan,
                self.spec.migration,
                self.spec.source,
                key.key_id()
            ),
            _ => format!(
                "ferry-{}-{}-{}",
                c.plan, self.spec.migration, self.spec.source
            ),
        };
        let from = self.copy_from(cx)?;
        let out = client
            .copy_image()
            .source_image_id(from.as_str())
            .source_region(self.spec.source_region.as_str())
            .name(name)
            .description(format!(
                "ferry: copy of {} ({}/{})",
                self.spec.source, c.plan, self.spec.migration
            ))
            .encrypted(true)
            .kms_key_id(key.as_str())
            .client_token(self.client_token(c, attempt(&change)))
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

/// Which attempt a copy is: the failed copies before it give it a fresh client token.
fn attempt(change: &Change) -> usize {
    match &change.todo {
        Todo::Copy {
            failed,
            failed_before,
            ..
        } => failed.len().max(failed_before.len()),
        _ => 0,
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
        key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<StepOutput>)>, StepError> {
        let found = images_by_id(&ctx.aws, limits, &key.account, &key.region, ids)
            .await
            .map_err(|e| failed(e, &[]))?;
        let mut answers = Vec::with_capacity(ids.len());
        for i in &found {
            let id = i.image_id().unwrap_or_default().to_string();
            let answer = match i.state().map(|s| s.as_str()) {
                Some("available") => PollAnswer::Done(StepOutput::ImageCopy(ImageCopyOutput {
                    image_id: id.clone(),
                    source: tag_of(i.tags(), "ferry:source"),
                    snapshots: Copy::of_image(i).1,
                    kept: Vec::new(),
                })),
                Some("failed") | Some("error") | Some("invalid") | Some("deregistered") => {
                    PollAnswer::Failed(copy_failed(
                        ctx,
                        i.tags(),
                        &id,
                        i.state_reason().and_then(|r| r.message()),
                    ))
                }
                _ => PollAnswer::Pending {
                    percent: None,
                    detail: None,
                    eta: None,
                },
            };
            answers.push((id, answer));
        }
        let gone = super::unlisted(ctx, ids, &answers);
        answers.extend(gone);
        Ok(answers)
    }
}
