//! `ferry destroy`'s copy steps: deleting the copies a migration made, in one account and
//! region. Only a copy carrying this plan's and this migration's ferry tags is ever looked
//! at. A copy in use (a snapshot an AMI uses, an AMI an instance runs from) is kept, and so is
//! a copy whose source is gone unless `include_orphans`: it may be the only copy left.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, SnapshotState};
use serde_json::{Value, json};

use super::ec2::tag_of as tag;
use super::output::RemovedOutput;
use super::retention::{InUse, ami_users, delete_listed, launched_images};
use super::{Action, Base, Change, Cx, StepOutput, Todo, change, each_page, failed, step_identity};
use crate::exec::{Applied, Observation, Step, StepCx, StepError};
use crate::graph::{Copied, DeleteCopiesSpec, PlannedStep};
use crate::ids::DbKind;
use crate::lookup::{DbQuery, FILTER_VALUES};

type Observed = Result<Observation<StepOutput, Change>, StepError>;

/// One of the migration's copies here.
struct Found {
    id: String,
    /// `ferry:source`: the source it is a copy of.
    source: String,
    /// Its snapshots (an AMI's), deleted after it is deregistered.
    snapshots: Vec<String>,
    /// A manual RDS copy made only to share an automated source: always ferry's to delete.
    intermediate: bool,
    /// Still copying: deleted by a later destroy.
    pending: bool,
}

/// `ec2.delete-copies` / `ec2.deregister-copies` / `rds.delete-copies`.
pub struct DeleteCopies {
    base: Base,
    spec: DeleteCopiesSpec,
}

/// What observe found to delete (journaled as the intent).
fn removed(removed: Vec<String>, kept: Vec<String>) -> StepOutput {
    StepOutput::Removed(RemovedOutput { removed, kept })
}

impl DeleteCopies {
    pub fn new(step: &PlannedStep, spec: DeleteCopiesSpec) -> Self {
        let api = match spec.what {
            Copied::Snapshots => "ec2:DeleteSnapshot",
            Copied::Images => "ec2:DeregisterImage",
            Copied::DbSnapshots(DbKind::Instance) => "rds:DeleteDBSnapshot",
            Copied::DbSnapshots(DbKind::Cluster) => "rds:DeleteDBClusterSnapshot",
        };
        DeleteCopies {
            base: Base::new(step, api),
            spec,
        }
    }

    fn ferry_filters(&self, cx: &Cx) -> [Filter; 2] {
        [
            Filter::builder()
                .name("tag:ferry:plan")
                .values(&cx.plan)
                .build(),
            Filter::builder()
                .name("tag:ferry:migration")
                .values(self.spec.migration.as_str())
                .build(),
        ]
    }

    /// The migration's snapshots here: its copies, or an AMI copy's snapshots.
    async fn snapshots(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Found>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let [a, b] = self.ferry_filters(cx.ctx());
        let pages = cx
            .ctx()
            .aws
            .ec2(account, region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(a)
            .filters(b)
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
                    out.push(Found {
                        id: s.snapshot_id().unwrap_or_default().to_string(),
                        source: tag(s.tags(), "ferry:source").unwrap_or_default(),
                        snapshots: Vec::new(),
                        // An intermediate copy (`reencrypt_managed_sources`) left by a run.
                        intermediate: tag(s.tags(), "ferry:intermediate").is_some(),
                        pending: s.state() == Some(&SnapshotState::Pending),
                    });
                }
            },
        )
        .await?;
        Ok(out)
    }

    async fn images(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Found>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let [a, b] = self.ferry_filters(cx.ctx());
        let pages = cx
            .ctx()
            .aws
            .ec2(account, region)
            .describe_images()
            .owners("self")
            .include_disabled(true)
            .filters(a)
            .filters(b)
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut out = Vec::new();
        each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
            for i in p.images() {
                out.push(Found {
                    id: i.image_id().unwrap_or_default().to_string(),
                    source: tag(i.tags(), "ferry:source").unwrap_or_default(),
                    snapshots: i
                        .block_device_mappings()
                        .iter()
                        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
                        .map(str::to_string)
                        .collect(),
                    intermediate: tag(i.tags(), "ferry:intermediate").is_some(),
                    pending: i.state().is_some_and(|s| s.as_str() == "pending"),
                });
            }
        })
        .await?;
        Ok(out)
    }

    /// The migration's RDS snapshots here under ferry's names: its copies, and the manual
    /// copies it made to share automated sources.
    async fn db_snapshots(
        &self,
        cx: &StepCx<'_, Cx>,
        kind: DbKind,
    ) -> Result<Vec<Found>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let c = cx.ctx();
        let found = crate::lookup::db_snapshots(
            &c.aws,
            cx.limits(),
            account,
            region,
            kind,
            DbQuery::Manual,
        )
        .await
        .map_err(|e| failed(e, &[]))?;
        let migration = self.spec.migration.as_str();
        Ok(found
            .into_iter()
            .filter(|s| super::rds::ferrys_for(c, migration, s))
            .filter_map(|s| {
                let source = s.tags.get("ferry:source")?.clone();
                let intermediate = s.tags.contains_key("ferry:intermediate");
                // A snapshot that only inherited ferry's tags (one of an instance restored
                // from a copy) is not ferry's: ferry's carry the name it gives them.
                let named = if intermediate {
                    crate::ids::db_copy_identifier(
                        &c.plan,
                        &format!("{migration}-{source}"),
                        Some("shared"),
                        kind.max_identifier(),
                    )
                } else {
                    crate::ids::db_copy_identifier(&c.plan, &source, None, kind.max_identifier())
                };
                (s.id == named).then(|| Found {
                    pending: !s.available() && s.status != "failed",
                    id: s.id,
                    source,
                    snapshots: Vec::new(),
                    intermediate,
                })
            })
            .collect())
    }

    /// Which of `sources` still exist in the source account and region.
    async fn existing_sources(
        &self,
        cx: &StepCx<'_, Cx>,
        sources: &[String],
    ) -> Result<BTreeSet<String>, StepError> {
        let (account, region) = (
            self.spec.source_account.as_str(),
            self.spec.source_region.as_str(),
        );
        let c = cx.ctx();
        let mut out = BTreeSet::new();
        if sources.is_empty() {
            return Ok(out);
        }
        match self.spec.what {
            Copied::Snapshots => {
                for s in
                    crate::lookup::snapshots_by_id(&c.aws, cx.limits(), account, region, sources)
                        .await
                        .map_err(|e| failed(e, &[]))?
                {
                    out.insert(s.snapshot_id().unwrap_or_default().to_string());
                }
            }
            Copied::Images => {
                for chunk in sources.chunks(FILTER_VALUES) {
                    let pages = c
                        .aws
                        .ec2(account, region)
                        .describe_images()
                        .include_disabled(true)
                        .filters(
                            Filter::builder()
                                .name("image-id")
                                .set_values(Some(chunk.to_vec()))
                                .build(),
                        )
                        .into_paginator()
                        .page_size(crate::lookup::PAGE_SIZE)
                        .send();
                    each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
                        for i in p.images() {
                            out.insert(i.image_id().unwrap_or_default().to_string());
                        }
                    })
                    .await?;
                }
            }
            Copied::DbSnapshots(kind) => {
                for s in crate::lookup::db_snapshots(
                    &c.aws,
                    cx.limits(),
                    account,
                    region,
                    kind,
                    DbQuery::Ids(sources),
                )
                .await
                .map_err(|e| failed(e, &[]))?
                {
                    out.insert(s.id);
                }
            }
        }
        Ok(out)
    }

    fn what(&self) -> &'static str {
        match self.spec.what {
            Copied::Snapshots => "snapshot",
            Copied::Images => "AMI",
            Copied::DbSnapshots(DbKind::Instance) => "DB snapshot",
            Copied::DbSnapshots(DbKind::Cluster) => "DB cluster snapshot",
        }
    }
}

#[async_trait]
impl Step<Cx> for DeleteCopies {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let (account, region) = (&self.base.account, &self.base.region);
        let mut found = match self.spec.what {
            Copied::Snapshots => self.snapshots(cx).await?,
            Copied::Images => self.images(cx).await?,
            Copied::DbSnapshots(kind) => self.db_snapshots(cx, kind).await?,
        };
        found.sort_by(|a, b| a.id.cmp(&b.id));
        let mut kept = Vec::new();
        let what = self.what();
        // In use: a snapshot an AMI uses; an AMI an instance runs from.
        let used: HashMap<String, Vec<String>> = match self.spec.what {
            Copied::Snapshots => {
                let ids: Vec<String> = found.iter().map(|f| f.id.clone()).collect();
                ami_users(cx, account, region, &ids).await?
            }
            Copied::Images => {
                let ids: Vec<String> = found.iter().map(|f| f.id.clone()).collect();
                launched_images(cx, account, region, &ids)
                    .await?
                    .into_iter()
                    .map(|i| (i, vec!["an instance".to_string()]))
                    .collect()
            }
            Copied::DbSnapshots(_) => HashMap::new(),
        };
        let sources: Vec<String> = found
            .iter()
            .filter(|f| !f.intermediate && !f.source.is_empty())
            .map(|f| f.source.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let existing = if self.spec.include_orphans {
            BTreeSet::new()
        } else {
            self.existing_sources(cx, &sources).await?
        };
        let mut gone = Vec::new();
        for f in found {
            if f.pending {
                kept.push(format!(
                    "{what} {}: kept, still being copied (destroy again once it is done)",
                    f.id
                ));
            } else if let Some(users) = used.get(&f.id) {
                kept.push(format!(
                    "{what} {}: kept, in use by {}",
                    f.id,
                    users.join(", ")
                ));
            } else if !self.spec.include_orphans && !f.intermediate && !existing.contains(&f.source)
            {
                kept.push(format!(
                    "{what} {}: kept, its source {} is gone and it may be the only copy (--include-orphans deletes it)",
                    f.id, f.source
                ));
            } else {
                gone.push(f);
            }
        }
        // An AMI copy's snapshots: those of the AMIs deleted now, and any left by an earlier
        // destroy stopped between deregistering an AMI and deleting its snapshots.
        let mut snapshots: Vec<String> = gone.iter().flat_map(|f| f.snapshots.clone()).collect();
        if self.spec.what == Copied::Images {
            let deleted: BTreeSet<&str> = gone.iter().map(|f| f.id.as_str()).collect();
            let tagged = self.snapshots(cx).await?;
            let ids: Vec<String> = tagged.iter().map(|s| s.id.clone()).collect();
            let users = ami_users(cx, account, region, &ids).await?;
            for s in tagged {
                let free = users
                    .get(&s.id)
                    .is_none_or(|u| u.iter().all(|i| deleted.contains(i.as_str())));
                if free && !s.pending && !snapshots.contains(&s.id) {
                    snapshots.push(s.id);
                }
            }
            snapshots.retain(|s| {
                users
                    .get(s)
                    .is_none_or(|u| u.iter().all(|i| deleted.contains(i.as_str())))
            });
        }
        if gone.is_empty() && snapshots.is_empty() {
            return Ok(Observation::Done(removed(Vec::new(), kept)));
        }
        let mut diff: Vec<String> = gone
            .iter()
            .map(|f| {
                if f.intermediate {
                    format!(
                        "- {what} {} (ferry's intermediate copy of {}, made to share it)",
                        f.id, f.source
                    )
                } else {
                    format!("- {what} {} (copy of {})", f.id, f.source)
                }
            })
            .collect();
        if self.spec.what == Copied::Images {
            diff.extend(
                snapshots
                    .iter()
                    .map(|s| format!("- snapshot {s} (of an AMI copy)")),
            );
        }
        diff.extend(kept.iter().map(|k| format!("  {k}")));
        let mut ids: Vec<String> = gone.into_iter().map(|f| f.id).collect();
        // Snapshots after the AMIs they back (the apply deletes in this order).
        ids.extend(snapshots.into_iter().map(|s| format!("snapshot:{s}")));
        Ok(Observation::Todo(change(
            Action::Delete,
            diff,
            Todo::Resources(ids),
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
        cx.ctx().changing(&self.base.id_text);
        delete_listed(cx, &self.base, self.spec.what, &ids, InUse::Wait).await?;
        let done = ids
            .iter()
            .map(|id| id.strip_prefix("snapshot:").unwrap_or(id).to_string())
            .collect();
        Ok(Applied::Done(removed(done, Vec::new())))
    }
}

/// `ec2.delete-intermediate`: the intermediate copies of one source (`ferry:intermediate`,
/// this plan's, migration's and source's tags) in the source account and region, deleted
/// once the final copy is done; also those a run stopped before deleting left behind.
pub struct DeleteIntermediate {
    base: Base,
    spec: crate::graph::IntermediateSpec,
}

impl DeleteIntermediate {
    pub fn new(step: &PlannedStep, spec: crate::graph::IntermediateSpec) -> Self {
        DeleteIntermediate {
            base: Base::new(step, "ec2:DeleteSnapshot"),
            spec,
        }
    }

    fn filters(&self, cx: &Cx) -> Vec<Filter> {
        [
            ("ferry:plan", cx.plan.as_str()),
            ("ferry:migration", self.spec.migration.as_str()),
            ("ferry:source", self.spec.source.as_str()),
            ("ferry:intermediate", "true"),
        ]
        .into_iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect()
    }

    /// The intermediate AMIs (as `image:<id>`, first) and snapshots of this source here.
    async fn found(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<String>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let ec2 = cx.ctx().aws.ec2(account, region);
        let mut out = Vec::new();
        if self.spec.what == Copied::Images {
            let pages = ec2
                .describe_images()
                .owners("self")
                .include_disabled(true)
                .set_filters(Some(self.filters(cx.ctx())))
                .into_paginator()
                .page_size(crate::lookup::PAGE_SIZE)
                .send();
            each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
                out.extend(
                    p.images()
                        .iter()
                        .filter_map(|i| i.image_id().map(|id| format!("image:{id}"))),
                )
            })
            .await?;
        }
        let pages = ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(self.filters(cx.ctx())))
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut snapshots = Vec::new();
        each_page(
            cx.limits(),
            account,
            region,
            "DescribeSnapshots",
            pages,
            |p| {
                snapshots.extend(
                    p.snapshots()
                        .iter()
                        .filter_map(|s| s.snapshot_id().map(str::to_string)),
                )
            },
        )
        .await?;
        out.sort();
        snapshots.sort();
        out.extend(snapshots);
        Ok(out)
    }
}

#[async_trait]
impl Step<Cx> for DeleteIntermediate {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let found = self.found(cx).await?;
        if found.is_empty() {
            return Ok(Observation::Done(removed(Vec::new(), Vec::new())));
        }
        let diff = found
            .iter()
            .map(|id| {
                let what = match id.strip_prefix("image:") {
                    Some(image) => format!("AMI {image}"),
                    None => format!("snapshot {id}"),
                };
                format!(
                    "- {what} (intermediate copy of {}, once its copy is done)",
                    self.spec.source
                )
            })
            .collect();
        Ok(Observation::Todo(change(
            Action::Delete,
            diff,
            Todo::Resources(found),
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
        cx.ctx().changing(&self.base.id_text);
        // AMIs first: their snapshots are free once they are deregistered.
        delete_listed(cx, &self.base, Copied::Snapshots, &ids, InUse::Wait).await?;
        Ok(Applied::Done(removed(ids, Vec::new())))
    }
}
