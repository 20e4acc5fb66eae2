//! `retention`: deleting the snapshot copies a migration no longer keeps. Only copies that carry
//! this plan's and this migration's ferry tags are ever looked at; the newest copy of each
//! lineage (source volume) is always kept, and so is a copy that backs a registered AMI.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, SnapshotState};
use serde_json::{Value, json};

use super::output::PruneOutput;
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, change, each_page, failed, sdk_error, step_identity,
};
use crate::exec::{Applied, Observation, Step, StepCx, StepError};
use crate::graph::{PlannedStep, PruneSpec, Pruned};
use crate::ids::DbKind;
use crate::lookup::{DbQuery, FILTER_VALUES, snapshots_by_id};

type Observed = Result<Observation<StepOutput, Change>, StepError>;

/// One of the migration's finished copies, with what retention judges it by.
struct Kept {
    id: String,
    source: String,
    lineage: Option<String>,
    source_ms: Option<i64>,
}

fn tag(tags: &[aws_sdk_ec2::types::Tag], k: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(k))
        .and_then(|t| t.value())
        .map(str::to_string)
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
            .filter(|s| tag(s, "ferry:plan").as_deref() == Some(cx.ctx().plan.as_str()))
            .filter(|s| tag(s, "ferry:migration").as_deref() == Some(self.spec.migration.as_str()))
            .filter(|s| tag(s, "ferry:intermediate").is_none())
            .map(|s| Kept {
                id: s.id.clone(),
                source: tag(s, "ferry:source").unwrap_or_default(),
                lineage: tag(s, "ferry:lineage"),
                source_ms: tag(s, "ferry:source-time").and_then(|t| t.parse().ok()),
            })
            .collect())
    }

    /// The migration's finished snapshot copies in this account and region.
    async fn copies(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<Kept>, StepError> {
        if let Pruned::DbSnapshots(kind) = self.spec.what {
            return self.db_copies(cx, kind).await;
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
                        source_ms: tag(s.tags(), "ferry:source-time").and_then(|t| t.parse().ok()),
                    });
                }
            },
        )
        .await?;
        Ok(out)
    }

    /// Copies made before ferry tagged their lineage: their sources are read (with the source
    /// account). A copy whose source is gone is a lineage of its own, so it is kept.
    async fn fill_lineages(
        &self,
        cx: &StepCx<'_, Cx>,
        copies: &mut [Kept],
    ) -> Result<(), StepError> {
        // RDS copies are all made with their lineage tags.
        if self.spec.what != Pruned::Snapshots {
            return Ok(());
        }
        let wanted: Vec<String> = copies
            .iter()
            .filter(|c| c.lineage.is_none() && !c.source.is_empty())
            .map(|c| c.source.clone())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found = snapshots_by_id(
            &cx.ctx().aws,
            cx.limits(),
            self.spec.source_account.as_str(),
            self.spec.source_region.as_str(),
            &wanted,
        )
        .await
        .map_err(|e| failed(e, &[]))?;
        let by_id: BTreeMap<String, (Option<String>, Option<i64>)> = found
            .iter()
            .map(|s| {
                (
                    s.snapshot_id().unwrap_or_default().to_string(),
                    (
                        s.volume_id().map(str::to_string),
                        s.start_time().and_then(|t| t.to_millis().ok()),
                    ),
                )
            })
            .collect();
        for c in copies.iter_mut().filter(|c| c.lineage.is_none()) {
            if let Some((volume, start)) = by_id.get(&c.source) {
                c.lineage = volume.clone();
                c.source_ms = c.source_ms.or(*start);
            }
        }
        Ok(())
    }

    /// Snapshots among `ids` that a registered AMI of this account uses: never deleted.
    async fn in_use(
        &self,
        cx: &StepCx<'_, Cx>,
        ids: &[String],
    ) -> Result<HashSet<String>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let mut used = HashSet::new();
        for chunk in ids.chunks(FILTER_VALUES) {
            let pages = cx
                .ctx()
                .aws
                .ec2(account, region)
                .describe_images()
                .owners("self")
                .filters(
                    Filter::builder()
                        .name("block-device-mapping.snapshot-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .into_paginator()
                .send();
            each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
                for i in p.images() {
                    for b in i.block_device_mappings() {
                        if let Some(s) = b.ebs().and_then(|e| e.snapshot_id()) {
                            used.insert(s.to_string());
                        }
                    }
                }
            })
            .await?;
        }
        Ok(used)
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
        let mut copies = self.copies(cx).await?;
        self.fill_lineages(cx, &mut copies).await?;
        let mut judged: Vec<(String, Option<String>, Option<i64>)> = copies
            .iter()
            .map(|c| (c.id.clone(), c.lineage.clone(), c.source_ms))
            .collect();
        // The copies this run makes count as made (a dry run shows what the run deletes);
        // they are the newest of their lineages, so never among those deleted.
        let copied: HashSet<&str> = copies.iter().map(|c| c.source.as_str()).collect();
        for (source, volume, start) in &self.spec.planned {
            if !copied.contains(source.as_str()) {
                judged.push((format!("(to be copied) {source}"), volume.clone(), *start));
            }
        }
        let beyond = crate::resolve::beyond_retention(
            &judged,
            self.spec.keep_last,
            self.spec.max_age_secs,
            crate::exec::now_ms() as i64,
        );
        let used = if beyond.is_empty() || self.spec.what != Pruned::Snapshots {
            HashSet::new()
        } else {
            self.in_use(cx, &beyond).await?
        };
        let gone: Vec<&Kept> = copies
            .iter()
            .filter(|c| beyond.contains(&c.id) && !used.contains(&c.id))
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
        Ok(Observation::Todo(change(
            Action::Update,
            diff,
            Todo::Resources(gone.iter().map(|c| c.id.clone()).collect()),
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
        let (account, region) = (&self.base.account, &self.base.region);
        for id in &ids {
            let r = match self.spec.what {
                Pruned::Snapshots => cx
                    .ctx()
                    .aws
                    .ec2(account, region)
                    .delete_snapshot()
                    .snapshot_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(sdk_error("ec2", "DeleteSnapshot")),
                Pruned::DbSnapshots(DbKind::Instance) => cx
                    .ctx()
                    .aws
                    .rds(account, region)
                    .delete_db_snapshot()
                    .db_snapshot_identifier(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(sdk_error("rds", "DeleteDBSnapshot")),
                Pruned::DbSnapshots(DbKind::Cluster) => cx
                    .ctx()
                    .aws
                    .rds(account, region)
                    .delete_db_cluster_snapshot()
                    .db_cluster_snapshot_identifier(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(sdk_error("rds", "DeleteDBClusterSnapshot")),
            };
            if let Err(e) = r
                && !e.is_not_found()
            {
                return Err(failed(e, &[]));
            }
        }
        Ok(Applied::Done(StepOutput::Pruned(PruneOutput {
            deleted: ids,
        })))
    }
}
