//! `retention`: deleting the copies of the sources the resolve stage judged beyond a
//! migration's retention. Only copies that carry this plan's and this migration's ferry tags
//! are ever looked at; the newest source of each lineage is never beyond it, and a snapshot
//! that backs a registered AMI is kept.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, SnapshotState};
use serde_json::{Value, json};

use super::ec2::tag_of as tag;
use super::output::PruneOutput;
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, change, each_page, failed, sdk_error, step_identity,
};
use crate::exec::{Applied, Observation, Step, StepCx, StepError};
use crate::graph::{Copied, PlannedStep, PruneSpec, Pruned};
use crate::ids::DbKind;
use crate::lookup::{DbQuery, FILTER_VALUES};

type Observed = Result<Observation<StepOutput, Change>, StepError>;

/// One of the migration's finished copies, with what retention judges it by.
struct Kept {
    id: String,
    source: String,
    lineage: Option<String>,
    /// An AMI copy's snapshots (deleted after it is deregistered).
    snapshots: Vec<String>,
}

/// `ec2.prune-copies`.
pub struct PruneCopies {
    base: Base,
    spec: PruneSpec,
}

impl PruneCopies {
    pub fn new(step: &PlannedStep, spec: PruneSpec) -> Self {
        let api = match spec.what {
            Pruned::Snapshots => "ec2:DeleteSnapshot",
            Pruned::Images => "ec2:DeregisterImage",
            Pruned::DbSnapshots(DbKind::Instance) => "rds:DeleteDBSnapshot",
            Pruned::DbSnapshots(DbKind::Cluster) => "rds:DeleteDBClusterSnapshot",
        };
        PruneCopies {
            base: Base::new(step, api),
            spec,
        }
    }

    /// The migration's finished RDS copies here (not the manual copies made to share).
    async fn db_copies(&self, cx: &StepCx<'_, Cx>, kind: DbKind) -> Result<Vec<Kept>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let found = crate::lookup::db_snapshots(
            &cx.ctx().aws,
            cx.limits(),
            account,
            region,
            kind,
            DbQuery::Manual,
        )
        .await
        .map_err(|e| failed(e, &[]))?;
        let tag = |s: &crate::lookup::DbSnapshotFacts, k: &str| s.tags.get(k).cloned();
        Ok(found
            .iter()
            .filter(|s| s.available())
            .filter(|s| super::rds::ferrys_for(cx.ctx(), self.spec.migration.as_str(), s))
            .filter(|s| tag(s, "ferry:intermediate").is_none())
            .map(|s| Kept {
                id: s.id.clone(),
                source: tag(s, "ferry:source").unwrap_or_default(),
                lineage: tag(s, "ferry:lineage"),
                snapshots: Vec::new(),
            })
            .collect())
    }

    /// The migration's available AMI copies here (not the intermediate ones).
    async fn image_copies(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Kept>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let tagged =
            |k: &str, v: &str| Filter::builder().name(format!("tag:{k}")).values(v).build();
        let pages = cx
            .ctx()
            .aws
            .ec2(account, region)
            .describe_images()
            .owners("self")
            .filters(tagged("ferry:plan", &cx.ctx().plan))
            .filters(tagged("ferry:migration", self.spec.migration.as_str()))
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut out = Vec::new();
        each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
            for i in p.images() {
                if i.state().map(|s| s.as_str()) != Some("available")
                    || tag(i.tags(), "ferry:intermediate").is_some()
                {
                    continue;
                }
                out.push(Kept {
                    id: i.image_id().unwrap_or_default().to_string(),
                    source: tag(i.tags(), "ferry:source").unwrap_or_default(),
                    lineage: tag(i.tags(), "ferry:lineage"),
                    snapshots: i
                        .block_device_mappings()
                        .iter()
                        .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()))
                        .map(str::to_string)
                        .collect(),
                });
            }
        })
        .await?;
        Ok(out)
    }

    /// The migration's finished snapshot copies in this account and region.
    async fn copies(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Kept>, StepError> {
        match self.spec.what {
            Pruned::DbSnapshots(kind) => return self.db_copies(cx, kind).await,
            Pruned::Images => return self.image_copies(cx).await,
            Pruned::Snapshots => {}
        }
        let (account, region) = (&self.base.account, &self.base.region);
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
            .filters(
                Filter::builder()
                    .name("tag:ferry:migration")
                    .values(self.spec.migration.as_str())
                    .build(),
            )
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut out = Vec::new();
        each_page(
            cx.limits(),
            account,
            region,
            "DescribeSnapshots",
            pages,
            |p| {
                for s in p.snapshots() {
                    if s.state() != Some(&SnapshotState::Completed) {
                        continue;
                    }
                    out.push(Kept {
                        id: s.snapshot_id().unwrap_or_default().to_string(),
                        source: tag(s.tags(), "ferry:source").unwrap_or_default(),
                        lineage: tag(s.tags(), "ferry:lineage"),
                        snapshots: Vec::new(),
                    });
                }
            },
        )
        .await?;
        Ok(out)
    }

    fn why(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = self.spec.keep_last {
            parts.push(format!("keep_last {k}"));
        }
        if let Some(a) = self.spec.max_age_secs {
            parts.push(format!(
                "max_age {}",
                humantime::format_duration(std::time::Duration::from_secs(a))
            ));
        }
        parts.join(", ")
    }
}

#[async_trait]
impl Step<Cx> for PruneCopies {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let copies = self.copies(cx).await?;
        // Exactly the copies of the sources the resolve stage judged beyond the retention (one
        // judgment, shared with the copy steps, which skip those sources). An RDS copy must
        // also carry the name ferry gives its copy of that source: a snapshot that only
        // inherited ferry's tags (one of an instance restored from a copy) is not ferry's.
        let beyond: HashSet<&str> = self.spec.beyond.iter().map(String::as_str).collect();
        let candidates: Vec<&Kept> = copies
            .iter()
            .filter(|c| beyond.contains(c.source.as_str()))
            .filter(|c| match self.spec.what {
                Pruned::Snapshots | Pruned::Images => true,
                Pruned::DbSnapshots(kind) => {
                    c.id == crate::ids::db_copy_identifier(
                        &cx.ctx().plan,
                        &c.source,
                        None,
                        kind.max_identifier(),
                    )
                }
            })
            .collect();
        let ids: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
        let (account, region) = (&self.base.account, &self.base.region);
        // In use: a snapshot an AMI uses; an AMI an instance was launched from.
        let used: HashSet<String> = match self.spec.what {
            _ if candidates.is_empty() => HashSet::new(),
            Pruned::Snapshots => ami_users(cx, account, region, &ids)
                .await?
                .into_keys()
                .collect(),
            Pruned::Images => launched_images(cx, account, region, &ids)
                .await?
                .into_iter()
                .collect(),
            Pruned::DbSnapshots(_) => HashSet::new(),
        };
        let gone: Vec<&Kept> = candidates
            .into_iter()
            .filter(|c| !used.contains(&c.id))
            .collect();
        if gone.is_empty() {
            return Ok(Observation::Done(StepOutput::Pruned(PruneOutput {
                deleted: Vec::new(),
            })));
        }
        let why = self.why();
        let diff = gone
            .iter()
            .map(|c| {
                format!(
                    "- {} (copy of {} of {}: beyond the retention, {why})",
                    c.id,
                    c.source,
                    c.lineage.as_deref().unwrap_or("its own lineage")
                )
            })
            .collect();
        // An AMI copy is deregistered first, then its snapshots deleted.
        let mut todo: Vec<String> = gone.iter().map(|c| c.id.clone()).collect();
        todo.extend(
            gone.iter()
                .flat_map(|c| c.snapshots.iter().map(|s| format!("snapshot:{s}"))),
        );
        Ok(Observation::Todo(change(
            Action::Update,
            diff,
            Todo::Resources(todo),
        )))
    }

    fn intent(&self, change: &Change) -> Value {
        match &change.todo {
            Todo::Resources(r) => json!({ "deleting": r }),
            _ => Value::Null,
        }
    }

    async fn apply(
        &self,
        cx: &StepCx<'_, Cx>,
        change: Change,
    ) -> Result<Applied<StepOutput>, StepError> {
        let ids = match change.todo {
            Todo::Resources(r) => r,
            _ => Vec::new(),
        };
        let what = match self.spec.what {
            Pruned::Snapshots => Copied::Snapshots,
            Pruned::Images => Copied::Images,
            Pruned::DbSnapshots(k) => Copied::DbSnapshots(k),
        };
        // Taken into use since the look (an AMI registered from it): not ours to delete now.
        delete_listed(cx, &self.base, what, &ids, InUse::Skip).await?;
        Ok(Applied::Done(StepOutput::Pruned(PruneOutput {
            deleted: ids,
        })))
    }
}

/// The registered AMIs of this account (disabled ones too) that use each of the snapshots
/// `ids`: a snapshot with a user is never deleted.
pub(crate) async fn ami_users(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    ids: &[String],
) -> Result<HashMap<String, Vec<String>>, StepError> {
    let mut used: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(FILTER_VALUES) {
        let pages = cx
            .ctx()
            .aws
            .ec2(account, region)
            .describe_images()
            .owners("self")
            // A disabled AMI still uses its snapshots.
            .include_disabled(true)
            .filters(
                Filter::builder()
                    .name("block-device-mapping.snapshot-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
            for i in p.images() {
                for b in i.block_device_mappings() {
                    if let Some(s) = b.ebs().and_then(|e| e.snapshot_id())
                        && chunk.iter().any(|c| c == s)
                    {
                        used.entry(s.to_string())
                            .or_default()
                            .push(i.image_id().unwrap_or_default().to_string());
                    }
                }
            }
        })
        .await?;
    }
    Ok(used)
}

/// Deletes one copy (an AMI: deregisters it), in `account`/`region`; the AWS error as it came.
pub(crate) async fn delete_copy(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    what: Copied,
    id: &str,
) -> Result<(), crate::aws::AwsError> {
    let aws = &cx.ctx().aws;
    match what {
        Copied::Snapshots => aws
            .ec2(account, region)
            .delete_snapshot()
            .snapshot_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error("ec2", "DeleteSnapshot")),
        Copied::Images => aws
            .ec2(account, region)
            .deregister_image()
            .image_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error("ec2", "DeregisterImage")),
        Copied::DbSnapshots(DbKind::Instance) => aws
            .rds(account, region)
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error("rds", "DeleteDBSnapshot")),
        Copied::DbSnapshots(DbKind::Cluster) => aws
            .rds(account, region)
            .delete_db_cluster_snapshot()
            .db_cluster_snapshot_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error("rds", "DeleteDBClusterSnapshot")),
    }
}

/// AMIs among `images` that an instance (pending, running or stopped) was launched from: in
/// use, never deregistered.
pub(crate) async fn launched_images(
    cx: &StepCx<'_, Cx>,
    account: &str,
    region: &str,
    images: &[String],
) -> Result<std::collections::BTreeSet<String>, StepError> {
    let mut out = std::collections::BTreeSet::new();
    for chunk in images.chunks(FILTER_VALUES) {
        let pages = cx
            .ctx()
            .aws
            .ec2(account, region)
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(
                        ["pending", "running", "stopping", "stopped"]
                            .map(String::from)
                            .to_vec(),
                    ))
                    .build(),
            )
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        each_page(
            cx.limits(),
            account,
            region,
            "DescribeInstances",
            pages,
            |p| {
                for r in p.reservations() {
                    for i in r.instances() {
                        if let Some(id) = i.image_id() {
                            out.insert(id.to_string());
                        }
                    }
                }
            },
        )
        .await?;
    }
    Ok(out)
}

/// What a deletion does when AWS answers that the resource is in use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum InUse {
    /// Leave it: it was taken into use since the look.
    Skip,
    /// Look again later (a snapshot of an AMI just deregistered counts as in use a while).
    Wait,
}

/// Deletes `ids` in order in the step's account and region: each a copy of kind `what`, or,
/// marked `image:` / `snapshot:`, an AMI (deregistered) or a snapshot (an AMI copy's, listed
/// after it). One already gone is done; each call after the first (whose token the walker
/// took) draws a token of its own.
pub(crate) async fn delete_listed(
    cx: &StepCx<'_, Cx>,
    base: &Base,
    what: Copied,
    ids: &[String],
    in_use: InUse,
) -> Result<(), StepError> {
    let (account, region) = (base.account.as_str(), base.region.as_str());
    for (i, entry) in ids.iter().enumerate() {
        let (kind, id) = match (
            entry.strip_prefix("image:"),
            entry.strip_prefix("snapshot:"),
        ) {
            (Some(image), _) => (Copied::Images, image),
            (_, Some(snapshot)) => (Copied::Snapshots, snapshot),
            _ => (what, entry.as_str()),
        };
        if i > 0 {
            let api = match kind {
                Copied::Snapshots => "ec2:DeleteSnapshot",
                Copied::Images => "ec2:DeregisterImage",
                Copied::DbSnapshots(DbKind::Instance) => "rds:DeleteDBSnapshot",
                Copied::DbSnapshots(DbKind::Cluster) => "rds:DeleteDBClusterSnapshot",
            };
            cx.limits()
                .take(&[super::bucket(account, region, api)])
                .await;
        }
        match delete_copy(cx, account, region, kind, id).await {
            Err(e) if e.is_not_found() => {}
            Err(e) if e.code.contains("InUse") && in_use == InUse::Skip => {}
            Err(e) if e.code.contains("InUse") => {
                return Err(StepError::new(
                    crate::exec::ErrorClass::NotYetConsistent,
                    e.code.clone(),
                    format!("{id} is still in use: {}", e.message),
                ));
            }
            Err(e) => return Err(failed(e, &[])),
            Ok(()) => {}
        }
    }
    Ok(())
}
