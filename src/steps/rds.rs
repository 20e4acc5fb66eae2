//! RDS steps: DB snapshot and Aurora DB cluster snapshot copies, the `restore` share with
//! another account, the removal of the manual copies ferry makes of automated sources to share
//! them, and the batched poller of pending copies.
//!
//! RDS has no client token. The copy's identifier is deterministic (`ferry-<plan>-<source>`),
//! so the identifier is the idempotency key: a repeat, a resume or a call whose answer was lost
//! finds the copy by name, and a second CopyDBSnapshot is refused with AlreadyExists, never made
//! twice. A snapshot under that name that ferry did not make is never adopted.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::output::{DbDeleteOutput, DbSnapshotCopyOutput, ShareOutput};
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, bucket, change, existing_key_arn, failed, key_arn,
    names_key, sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{
    Applied, ErrorClass, GateKey, Limits, Observation, PollAnswer, PollKey, Poller, Step, StepCx,
    StepError, Submitted,
};
use crate::graph::{
    DbCopySpec, DbDeleteSpec, DbKind, DbShareSpec, DbSnapshotRef, DestKey, PlannedStep, Sharing,
    Tags,
};
use crate::ids::db_copy_identifier;
use crate::lookup::{self, DbQuery, DbSnapshotFacts};

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

/// Gate on DB snapshot copies in progress per destination (account, region) (AWS: 20).
pub const DB_SNAPSHOT_COPY_GATE: &str = "db-snapshot-copies";
/// Gate on Aurora DB cluster snapshot copies in progress per destination (AWS: 5).
pub const DB_CLUSTER_SNAPSHOT_COPY_GATE: &str = "db-cluster-snapshot-copies";
/// The pollers of DB snapshot and DB cluster snapshot copies.
pub const DB_SNAPSHOT_POLL: &str = "rds.snapshot";
pub const DB_CLUSTER_SNAPSHOT_POLL: &str = "rds.cluster-snapshot";

/// The codes RDS answers a copy to an identifier that exists with.
const ALREADY_EXISTS: &[&str] = &[
    "DBSnapshotAlreadyExists",
    "DBSnapshotAlreadyExistsFault",
    "DBClusterSnapshotAlreadyExistsFault",
    "DBClusterSnapshotAlreadyExists",
];

/// What RDS answers a copy of another account's snapshot that is not (yet) shared with the
/// copier, or whose key the copier may not (yet) use.
const NOT_SHARED_YET: &[&str] = &[
    "KMSKeyNotAccessibleFault",
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
    "DBClusterSnapshotNotFoundFault",
];

/// Statuses after which a snapshot never becomes available (the waiter's failure states).
fn failed_status(status: &str) -> bool {
    matches!(status, "failed" | "deleted" | "error") || status.starts_with("incompatible")
}

fn rds_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("rds", op)
}

fn poll_name(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Instance => DB_SNAPSHOT_POLL,
        DbKind::Cluster => DB_CLUSTER_SNAPSHOT_POLL,
    }
}

/// The ARN of a snapshot of a plan account, as another account or region names it.
fn arn_of(cx: &Cx, kind: DbKind, s: &DbSnapshotRef) -> String {
    format!(
        "arn:aws:rds:{}:{}:{}:{}",
        s.region,
        cx.account_id(&s.account),
        kind.arn_type(),
        s.id
    )
}

/// Whether `s` carries this plan's and this migration's ferry tags.
pub(crate) fn ferrys_for(cx: &Cx, migration: &str, s: &DbSnapshotFacts) -> bool {
    s.tags.get("ferry:plan") == Some(&cx.plan)
        && s.tags.get("ferry:migration").map(String::as_str) == Some(migration)
}

/// Whether `s` is ferry's copy of `origin` for this migration: only then is it adopted (or
/// deleted). A snapshot under the same name made for another source is not.
fn is_ferrys(cx: &Cx, migration: &str, origin: &str, s: &DbSnapshotFacts) -> bool {
    ferrys_for(cx, migration, s) && s.tags.get("ferry:source").map(String::as_str) == Some(origin)
}

async fn describe(
    cx: &Cx,
    limits: &Limits,
    kind: DbKind,
    account: &str,
    region: &str,
    id: &str,
) -> Result<Option<DbSnapshotFacts>, StepError> {
    Ok(
        lookup::db_snapshots(&cx.aws, limits, account, region, kind, DbQuery::One(id))
            .await
            .map_err(|e| failed(e, &[]))?
            .into_iter()
            .next(),
    )
}

/// The final copy `copy` exists, made by ferry for this migration, and is available: a share,
/// key access or manual copy it needed is not needed any more.
async fn final_copy_done(
    cx: &StepCx<'_, Cx>,
    kind: DbKind,
    migration: &str,
    origin: &str,
    copy: &DbSnapshotRef,
) -> Result<bool, StepError> {
    let found = describe(
        cx.ctx(),
        cx.limits(),
        kind,
        copy.account.as_str(),
        copy.region.as_str(),
        &copy.id,
    )
    .await?;
    Ok(found.is_some_and(|s| s.available() && is_ferrys(cx.ctx(), migration, origin, &s)))
}

/// The sources of `sharing`'s migration whose final copy exists, under the key the plan copies
/// with (for key access: with `revoke_after`, a source whose copy exists needs no access).
pub(crate) async fn copied_sources(
    cx: &StepCx<'_, Cx>,
    sharing: &Sharing,
    kind: DbKind,
    sources: &[String],
) -> Result<BTreeSet<String>, StepError> {
    let (account, region) = (
        sharing.with_account.as_str(),
        sharing.destination_region.as_str(),
    );
    let wanted = match sharing.copies_under.as_ref().map(|k| &k.key) {
        Some(DestKey::Existing(arn)) => Some(arn.to_string()),
        Some(DestKey::MadeBy(_)) => return Ok(BTreeSet::new()),
        Some(DestKey::Unresolved(_)) | None => None,
    };
    let ids: Vec<String> = sources
        .iter()
        .map(|s| db_copy_identifier(&cx.ctx().plan, s, None, kind.max_identifier()))
        .collect();
    let found = lookup::db_snapshots(
        &cx.ctx().aws,
        cx.limits(),
        account,
        region,
        kind,
        DbQuery::Ids(&ids),
    )
    .await
    .map_err(|e| failed(e, &[]))?;
    let mut out = BTreeSet::new();
    for s in found {
        let under = wanted
            .as_deref()
            .is_none_or(|w| s.kms_key_id.as_deref() == Some(w));
        if s.available()
            && under
            && ferrys_for(cx.ctx(), sharing.migration.as_str(), &s)
            && let Some(src) = s.tags.get("ferry:source")
        {
            out.insert(src.clone());
        }
    }
    Ok(out)
}

/// `rds.copy-snapshot`: CopyDBSnapshot / CopyDBClusterSnapshot into this step's account and
/// region as the deterministic identifier, under the destination key, with the source's tags
/// (`CopyTags`) and ferry's (`ferry:source`, `ferry:key`, the plan's and migration's).
pub struct CopyDbSnapshot {
    base: Base,
    spec: DbCopySpec,
    gate: GateKey,
    poll_key: PollKey,
}

impl CopyDbSnapshot {
    pub fn new(step: &PlannedStep, spec: DbCopySpec) -> Self {
        let (api, gate) = match spec.kind {
            DbKind::Instance => ("rds:CopyDBSnapshot", DB_SNAPSHOT_COPY_GATE),
            DbKind::Cluster => ("rds:CopyDBClusterSnapshot", DB_CLUSTER_SNAPSHOT_COPY_GATE),
        };
        let base = Base::new(step, api);
        CopyDbSnapshot {
            gate: base.gate(gate),
            poll_key: PollKey::new(poll_name(spec.kind), &base.account, &base.region),
            base,
            spec,
        }
    }

    fn tags(&self) -> Tags {
        let mut tags = self.spec.source_tags.clone();
        tags.extend(self.spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        tags.insert("ferry:source".into(), self.spec.origin.clone());
        if let Some(k) = &self.spec.key {
            tags.insert("ferry:key".into(), k.shown.clone());
        }
        // What retention judges the copy by, also once the source is gone.
        if let Some((of, created)) = &self.spec.lineage {
            tags.insert("ferry:lineage".into(), of.clone());
            tags.insert("ferry:source-time".into(), created.to_string());
        }
        tags
    }

    fn output(&self, cx: &Cx, s: &DbSnapshotFacts) -> StepOutput {
        let arn = if s.arn.is_empty() {
            arn_of(
                cx,
                self.spec.kind,
                &DbSnapshotRef {
                    account: crate::ids::AccountName::new(&self.base.account),
                    region: crate::ids::Region::new(&self.base.region),
                    id: self.spec.target.clone(),
                },
            )
        } else {
            s.arn.clone()
        };
        StepOutput::DbSnapshotCopy(DbSnapshotCopyOutput {
            db_snapshot: self.spec.target.clone(),
            arn,
            source: self.spec.origin.clone(),
            kms_key_id: s.kms_key_id.clone(),
            intermediate: self.spec.serves.is_some(),
        })
    }

    /// What the copy found under the target identifier means.
    async fn judge(&self, cx: &StepCx<'_, Cx>, s: &DbSnapshotFacts) -> Observed {
        let (account, region) = (&self.base.account, &self.base.region);
        let noun = self.spec.kind.noun();
        if !is_ferrys(cx.ctx(), self.spec.migration.as_str(), &self.spec.origin, s) {
            let message = format!(
                "a {noun} named {} exists in {account}/{region} that ferry did not make for migration `{}`: ferry never adopts it",
                self.spec.target, self.spec.migration
            );
            return Ok(Observation::Todo(change(
                Action::Create,
                vec![format!("! {message}")],
                Todo::Failed {
                    code: "DBSnapshotAlreadyExists".into(),
                    message: format!("{message}; rename or delete it, then apply again"),
                },
            )));
        }
        if failed_status(&s.status) {
            return Ok(Observation::Todo(change(
                Action::Replace,
                vec![
                    format!("- {} (a failed copy made by ferry, removed)", s.id),
                    format!("+ copy of {} as {}", self.spec.origin, self.spec.target),
                ],
                Todo::Copy {
                    failed: vec![s.id.clone()],
                    kept: Vec::new(),
                    failed_before: Vec::new(),
                },
            )));
        }
        if s.status == "deleting" {
            return Err(StepError::new(
                ErrorClass::NotYetConsistent,
                "CopyBeingDeleted",
                format!(
                    "ferry's copy {} is being deleted; copying again once it is gone",
                    s.id
                ),
            ));
        }
        if let Some(key) = &self.spec.key
            && let Some(wanted) = key_arn(cx, key, account, region).await?
        {
            let under = s.kms_key_id.clone().unwrap_or_default();
            let same = !under.is_empty() && names_key(cx, account, region, &under, &wanted).await?;
            if !same {
                let shown = s.tags.get("ferry:key").cloned().unwrap_or(under.clone());
                let message = format!(
                    "ferry's copy {} is under {}, but the plan says {}: RDS names are unique, so ferry does not make a second copy beside it",
                    s.id,
                    if shown.is_empty() { "no key" } else { &shown },
                    key.shown
                );
                return Ok(Observation::Todo(change(
                    Action::Replace,
                    vec![format!(
                        "~ key: {} -> {} ({})",
                        if shown.is_empty() { "none" } else { &shown },
                        key.shown,
                        s.id
                    )],
                    Todo::Failed {
                        code: "CopyUnderAnotherKey".into(),
                        message: format!(
                            "{message}; delete or rename {} (it is kept until you do), then apply again",
                            s.id
                        ),
                    },
                )));
            }
        }
        if s.available() {
            let done = self.output(cx.ctx(), s);
            // The source's tags the copy lacks, or carries with another value (changed on the
            // source since): written onto it. ferry's and the plan's tags are not compared.
            let mut add = Tags::new();
            let mut diff = Vec::new();
            for (k, v) in &self.spec.source_tags {
                if self.spec.tags.contains_key(k) {
                    continue;
                }
                match s.tags.get(k) {
                    Some(now) if now == v => {}
                    Some(now) => diff.push(format!(
                        "~ tag {k}: {now:?} -> {v:?} (changed on the source)"
                    )),
                    None => diff.push(format!("+ tag {k} = {v:?} (from the source)")),
                }
                if s.tags.get(k) != Some(v) {
                    add.insert(k.clone(), v.clone());
                }
            }
            if !add.is_empty() {
                let resource = match &done {
                    StepOutput::DbSnapshotCopy(o) => o.arn.clone(),
                    _ => s.arn.clone(),
                };
                return Ok(Observation::Todo(change(
                    Action::Update,
                    diff,
                    Todo::Tags {
                        resource,
                        tags: add,
                        done: Box::new(done),
                    },
                )));
            }
            return Ok(Observation::Done(done));
        }
        Ok(Observation::InProgress(Submitted {
            poll_key: self.poll_key.clone(),
            id: self.spec.target.clone(),
        }))
    }

    async fn send_copy(&self, cx: &StepCx<'_, Cx>) -> Result<(), AwsError> {
        let c = cx.ctx();
        let (account, region) = (&self.base.account, &self.base.region);
        let src = &self.spec.source;
        let source = if src.account.as_str() == account && src.region.as_str() == region {
            src.id.clone()
        } else {
            arn_of(c, self.spec.kind, src)
        };
        let key = match &self.spec.key {
            Some(k) => Some(
                existing_key_arn(cx, k, account, region)
                    .await
                    .map_err(|e| AwsError::local("rds", "CopyDBSnapshot", e.message))?
                    .to_string(),
            ),
            None => None,
        };
        let tags: Vec<aws_sdk_rds::types::Tag> = self
            .tags()
            .into_iter()
            .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
            .collect();
        let client = c.aws.rds(account, region);
        // No PreSignedUrl: outside GovCloud RDS ignores it, and the Rust SDK never makes one
        // (aws-facts-next.md §1).
        match self.spec.kind {
            DbKind::Instance => client
                .copy_db_snapshot()
                .source_db_snapshot_identifier(source)
                .target_db_snapshot_identifier(&self.spec.target)
                .set_kms_key_id(key)
                .set_option_group_name(self.spec.option_group.clone())
                .copy_tags(true)
                .set_tags(Some(tags))
                .send()
                .await
                .map(|_| ())
                .map_err(rds_error("CopyDBSnapshot")),
            DbKind::Cluster => client
                .copy_db_cluster_snapshot()
                .source_db_cluster_snapshot_identifier(source)
                .target_db_cluster_snapshot_identifier(&self.spec.target)
                .set_kms_key_id(key)
                .copy_tags(true)
                .set_tags(Some(tags))
                .send()
                .await
                .map(|_| ())
                .map_err(rds_error("CopyDBClusterSnapshot")),
        }
    }

    /// AddTagsToResource on the copy (its ARN).
    async fn write_tags(
        &self,
        cx: &StepCx<'_, Cx>,
        arn: &str,
        tags: &Tags,
    ) -> Result<(), StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let mut req = cx
            .ctx()
            .aws
            .rds(account, region)
            .add_tags_to_resource()
            .resource_name(arn);
        for (k, v) in tags {
            req = req.tags(aws_sdk_rds::types::Tag::builder().key(k).value(v).build());
        }
        req.send()
            .await
            .map_err(|e| failed(rds_error("AddTagsToResource")(e), &[]))?;
        Ok(())
    }

    async fn delete(&self, cx: &StepCx<'_, Cx>, id: &str) -> Result<(), StepError> {
        delete_snapshot(
            cx.ctx(),
            self.spec.kind,
            &self.base.account,
            &self.base.region,
            id,
        )
        .await
    }
}

async fn delete_snapshot(
    cx: &Cx,
    kind: DbKind,
    account: &str,
    region: &str,
    id: &str,
) -> Result<(), StepError> {
    let client = cx.aws.rds(account, region);
    let r = match kind {
        DbKind::Instance => client
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(rds_error("DeleteDBSnapshot")),
        DbKind::Cluster => client
            .delete_db_cluster_snapshot()
            .db_cluster_snapshot_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(rds_error("DeleteDBClusterSnapshot")),
    };
    match r {
        Err(e) if !e.is_not_found() => Err(failed(e, &[])),
        _ => Ok(()),
    }
}

#[async_trait]
impl Step<Cx> for CopyDbSnapshot {
    step_identity!();

    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        // A manual copy made only to share an automated source is not needed once the final
        // copy exists: a re-apply after `revoke_after` removed it makes none.
        if let Some(final_copy) = &self.spec.serves
            && final_copy_done(
                cx,
                self.spec.kind,
                self.spec.migration.as_str(),
                &self.spec.origin,
                final_copy,
            )
            .await?
        {
            return Ok(Observation::Done(StepOutput::DbSnapshotCopy(
                DbSnapshotCopyOutput {
                    db_snapshot: self.spec.target.clone(),
                    arn: String::new(),
                    source: self.spec.origin.clone(),
                    kms_key_id: None,
                    intermediate: true,
                },
            )));
        }
        let found = describe(
            cx.ctx(),
            cx.limits(),
            self.spec.kind,
            &self.base.account,
            &self.base.region,
            &self.spec.target,
        )
        .await?;
        if let Some(s) = found {
            return self.judge(cx, &s).await;
        }
        let under = self
            .spec
            .key
            .as_ref()
            .map(|k| format!(" under {}", k.shown))
            .unwrap_or_else(|| " under the source's key".into());
        let from = if self.spec.serves.is_some() {
            format!(
                "manual copy of automated {} (to share it){under}",
                self.spec.origin
            )
        } else {
            format!("copy of {}{under}", self.spec.origin)
        };
        Ok(Observation::Todo(change(
            Action::Create,
            vec![format!("+ {} {from}", self.spec.target)],
            Todo::Copy {
                failed: Vec::new(),
                kept: Vec::new(),
                failed_before: Vec::new(),
            },
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "identifier": self.spec.target, "tags": self.tags() })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        match change.todo {
            Todo::Failed { code, message } => return Err(StepError::permanent(code, message)),
            Todo::Tags {
                resource,
                tags,
                done,
            } => {
                self.write_tags(cx, &resource, &tags).await?;
                return Ok(Applied::Done(*done));
            }
            Todo::Copy { failed: gone, .. } if !gone.is_empty() => {
                for id in &gone {
                    self.delete(cx, id).await?;
                }
                // The identifier is free only once the failed copy is gone: observe again.
                return Err(StepError::new(
                    ErrorClass::NotYetConsistent,
                    "CopyBeingDeleted",
                    format!(
                        "removed the failed copy {}; copying again once it is gone",
                        gone.join(", ")
                    ),
                ));
            }
            _ => {}
        }
        // A copy of another account's data issues grants on its key (revokes wait for them).
        cx.ctx().changing(&self.base.id_text);
        match self.send_copy(cx).await {
            Ok(()) => {}
            // A repeat of a call whose answer was lost (by the SDK's retry or a resumed run):
            // the name is taken, by ferry's copy or by someone else's snapshot.
            Err(e) if e.is_code(ALREADY_EXISTS) => {
                let found = describe(
                    cx.ctx(),
                    cx.limits(),
                    self.spec.kind,
                    &self.base.account,
                    &self.base.region,
                    &self.spec.target,
                )
                .await?;
                return match found {
                    Some(s) => match self.judge(cx, &s).await? {
                        Observation::Done(o) => Ok(Applied::Done(o)),
                        Observation::InProgress(sub) => Ok(Applied::Submitted(sub)),
                        Observation::Todo(ch) => match ch.todo {
                            Todo::Failed { code, message } => {
                                Err(StepError::permanent(code, message))
                            }
                            Todo::Tags {
                                resource,
                                tags,
                                done,
                            } => {
                                self.write_tags(cx, &resource, &tags).await?;
                                Ok(Applied::Done(*done))
                            }
                            _ => Err(failed(e, &[])),
                        },
                    },
                    // Taken, and nothing shows under the name yet (a snapshot being deleted,
                    // or one that does not show at once): looked for again, for as long as new
                    // resources may take to show, before the step fails.
                    None => {
                        let id = &self.base.id_text;
                        let first = !cx
                            .ctx()
                            .ambiguous
                            .lock()
                            .expect("ambiguous")
                            .contains_key(id);
                        if first {
                            cx.ctx().ambiguous_attempt(id);
                        }
                        match cx.ctx().still_settling(id) {
                            Some(left) => Err(super::not_visible_yet(
                                "CopyNameTaken",
                                format!("the snapshot holding the name {}", self.spec.target),
                                left,
                            )),
                            None => Err(failed(e, &[])),
                        }
                    }
                };
            }
            // Another account's snapshot seconds after it was shared with this one, or after
            // its key's access was given: RDS judges access at once, and those changes take a
            // while to apply. Looked at again until they surely have.
            Err(e)
                if self.spec.source.account.as_str() != self.base.account
                    && e.is_code(NOT_SHARED_YET) =>
            {
                let prefix = format!("{}/", self.spec.migration);
                let left = cx.ctx().settling_after_any(&self.base.id_text, |s| {
                    s.starts_with(&prefix)
                        && (s.ends_with("/share") || s.ends_with("/grant-access"))
                });
                return Err(match left {
                    Some(left) => super::not_visible_yet(
                        "AccessNotVisibleYet",
                        format!("the share of {} and its key access", self.spec.source.id),
                        left,
                    ),
                    None => failed(e, &[]),
                });
            }
            Err(e) => return Err(failed(e, &[])),
        }
        Ok(Applied::Submitted(Submitted {
            poll_key: self.poll_key.clone(),
            id: self.spec.target.clone(),
        }))
    }
}

/// Follows pending copies: one DescribeDBSnapshots (or DescribeDBClusterSnapshots) per
/// (account, region) per tick, filtered by the copies' identifiers.
pub struct DbSnapshotPoller(pub DbKind);

#[async_trait]
impl Poller<Cx> for DbSnapshotPoller {
    async fn poll(
        &self,
        ctx: &Arc<Cx>,
        limits: &Arc<Limits>,
        key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<StepOutput>)>, StepError> {
        let kind = self.0;
        let found = lookup::db_snapshots(
            &ctx.aws,
            limits,
            &key.account,
            &key.region,
            kind,
            DbQuery::Ids(ids),
        )
        .await
        .map_err(|e| failed(e, &[]))?;
        let mut answers = Vec::with_capacity(ids.len());
        for s in &found {
            let answer = if s.available() {
                PollAnswer::Done(StepOutput::DbSnapshotCopy(DbSnapshotCopyOutput {
                    db_snapshot: s.id.clone(),
                    arn: s.arn.clone(),
                    source: s.tags.get("ferry:source").cloned().unwrap_or_default(),
                    kms_key_id: s.kms_key_id.clone(),
                    intermediate: s.tags.get("ferry:intermediate").map(String::as_str)
                        == Some("true"),
                }))
            } else if failed_status(&s.status) {
                let what = format!(
                    "{}/{}",
                    s.tags.get("ferry:migration").cloned().unwrap_or_default(),
                    s.id
                );
                let e = if ctx.retry_failed_copy(&what) {
                    StepError::new(
                        ErrorClass::Transient,
                        "CopyFailed",
                        format!(
                            "the copy {} is {}; removing it and copying once more",
                            s.id, s.status
                        ),
                    )
                } else {
                    StepError::permanent("CopyFailed", format!("the copy {} is {}", s.id, s.status))
                        .with_hint("`ferry resume` removes the failed copy and copies again")
                };
                PollAnswer::Failed(e)
            } else {
                PollAnswer::Pending {
                    percent: s.percent.map(|p| p as f32),
                    detail: None,
                    eta: None,
                }
            };
            answers.push((s.id.clone(), answer));
        }
        let gone = super::unlisted(ctx, ids, &answers);
        answers.extend(gone);
        Ok(answers)
    }
}

fn share_output(added: Vec<String>) -> StepOutput {
    StepOutput::Share(ShareOutput {
        added_by_ferry: added,
        taken_back: Vec::new(),
    })
}

/// `rds.share-snapshot` / `rds.unshare-snapshot`: ModifyDBSnapshotAttribute (cluster:
/// ModifyDBClusterSnapshotAttribute) `restore` with the other account's id. An unshare takes
/// back only what its share step added: an account that could restore the snapshot before
/// ferry came keeps that.
pub struct ShareDbSnapshot {
    base: Base,
    spec: DbShareSpec,
    add: bool,
}

impl ShareDbSnapshot {
    pub fn new(step: &PlannedStep, spec: DbShareSpec, add: bool) -> Self {
        let api = match spec.kind {
            DbKind::Instance => "rds:ModifyDBSnapshotAttribute",
            DbKind::Cluster => "rds:ModifyDBClusterSnapshotAttribute",
        };
        ShareDbSnapshot {
            base: Base::new(step, api),
            spec,
            add,
        }
    }

    /// The accounts that may restore the snapshot now; `None`: it does not exist.
    async fn restorers(&self, cx: &StepCx<'_, Cx>) -> Result<Option<Vec<String>>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let client = cx.ctx().aws.rds(account, region);
        let r = match self.spec.kind {
            DbKind::Instance => {
                cx.limits()
                    .take(&[bucket(account, region, "rds:DescribeDBSnapshotAttributes")])
                    .await;
                client
                    .describe_db_snapshot_attributes()
                    .db_snapshot_identifier(&self.spec.snapshot)
                    .send()
                    .await
                    .map(|o| {
                        o.db_snapshot_attributes_result()
                            .map(|r| {
                                r.db_snapshot_attributes()
                                    .iter()
                                    .filter(|a| a.attribute_name() == Some("restore"))
                                    .flat_map(|a| a.attribute_values().to_vec())
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .map_err(rds_error("DescribeDBSnapshotAttributes"))
            }
            DbKind::Cluster => {
                cx.limits()
                    .take(&[bucket(
                        account,
                        region,
                        "rds:DescribeDBClusterSnapshotAttributes",
                    )])
                    .await;
                client
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(&self.spec.snapshot)
                    .send()
                    .await
                    .map(|o| {
                        o.db_cluster_snapshot_attributes_result()
                            .map(|r| {
                                r.db_cluster_snapshot_attributes()
                                    .iter()
                                    .filter(|a| a.attribute_name() == Some("restore"))
                                    .flat_map(|a| a.attribute_values().to_vec())
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .map_err(rds_error("DescribeDBClusterSnapshotAttributes"))
            }
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(failed(e, &[])),
        }
    }

    async fn modify(&self, cx: &StepCx<'_, Cx>, who: &str) -> Result<(), StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let client = cx.ctx().aws.rds(account, region);
        let (add, remove) = if self.add {
            (Some(vec![who.to_string()]), None)
        } else {
            (None, Some(vec![who.to_string()]))
        };
        let r = match self.spec.kind {
            DbKind::Instance => client
                .modify_db_snapshot_attribute()
                .db_snapshot_identifier(&self.spec.snapshot)
                .attribute_name("restore")
                .set_values_to_add(add)
                .set_values_to_remove(remove)
                .send()
                .await
                .map(|_| ())
                .map_err(rds_error("ModifyDBSnapshotAttribute")),
            DbKind::Cluster => client
                .modify_db_cluster_snapshot_attribute()
                .db_cluster_snapshot_identifier(&self.spec.snapshot)
                .attribute_name("restore")
                .set_values_to_add(add)
                .set_values_to_remove(remove)
                .send()
                .await
                .map(|_| ())
                .map_err(rds_error("ModifyDBClusterSnapshotAttribute")),
        };
        match r {
            // Taking back a share of a snapshot that is gone: nothing is shared any more.
            Err(e) if !self.add && e.is_not_found() => Ok(()),
            other => other.map_err(|e| failed(e, &[])),
        }
    }
}

#[async_trait]
impl Step<Cx> for ShareDbSnapshot {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let c = cx.ctx();
        let who = c.account_id(&self.spec.sharing.with_account).to_string();
        let snapshot = &self.spec.snapshot;
        let done = || {
            final_copy_done(
                cx,
                self.spec.kind,
                self.spec.sharing.migration.as_str(),
                &self.spec.origin,
                &self.spec.copy,
            )
        };
        let pending = if self.add {
            if self.spec.sharing.revoke_after && done().await? {
                false
            } else {
                match self.restorers(cx).await? {
                    Some(r) => !r.contains(&who),
                    // Not made yet (the manual copy of an automated source, in a dry run), or
                    // removed after the copy it was made for: nothing to share then.
                    None => !done().await?,
                }
            }
        } else {
            let added = self
                .spec
                .undoes
                .as_ref()
                .map(|s| super::added_by_ferry(cx, s))
                .unwrap_or_default();
            added.contains(snapshot) && self.restorers(cx).await?.is_some_and(|r| r.contains(&who))
        };
        if !pending {
            let tried = if self.add {
                c.shares_attempted(&self.base.id_text)
            } else {
                Vec::new()
            };
            return Ok(Observation::Done(share_output(tried)));
        }
        let with = &self.spec.sharing.with_account;
        let line = if self.add {
            format!("+ {snapshot}: restorable by `{with}`")
        } else {
            format!("- {snapshot}: no longer restorable by `{with}`")
        };
        Ok(Observation::Todo(change(
            Action::Update,
            vec![line],
            Todo::Resources(vec![snapshot.clone()]),
        )))
    }

    /// Journaled before the call: what this step is about to share is ferry's, even if the
    /// answer never comes.
    fn intent(&self, _change: &Change) -> Value {
        if self.add {
            json!({ "adding": [self.spec.snapshot] })
        } else {
            json!({ "removing": [self.spec.snapshot] })
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let c = cx.ctx();
        let who = c.account_id(&self.spec.sharing.with_account).to_string();
        c.changing(&self.base.id_text);
        if self.add {
            c.attempt_share(&self.base.id_text, &self.spec.snapshot);
        }
        self.modify(cx, &who).await?;
        if !self.add {
            return Ok(Applied::Done(StepOutput::Share(ShareOutput {
                added_by_ferry: Vec::new(),
                taken_back: vec![self.spec.snapshot.clone()],
            })));
        }
        Ok(Applied::Done(share_output(
            c.shares_attempted(&self.base.id_text),
        )))
    }
}

/// `rds.delete-snapshot`: removes ferry's manual copy of an automated source once the final
/// copy exists. Only a snapshot with this migration's ferry tags and `ferry:intermediate` is
/// ever deleted; anything else under that name is left alone.
pub struct DeleteDbSnapshot {
    base: Base,
    spec: DbDeleteSpec,
}

impl DeleteDbSnapshot {
    pub fn new(step: &PlannedStep, spec: DbDeleteSpec) -> Self {
        let api = match spec.kind {
            DbKind::Instance => "rds:DeleteDBSnapshot",
            DbKind::Cluster => "rds:DeleteDBClusterSnapshot",
        };
        DeleteDbSnapshot {
            base: Base::new(step, api),
            spec,
        }
    }

    fn done(&self) -> StepOutput {
        StepOutput::DbSnapshotDeleted(DbDeleteOutput {
            deleted: self.spec.snapshot.clone(),
        })
    }
}

#[async_trait]
impl Step<Cx> for DeleteDbSnapshot {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let found = describe(
            cx.ctx(),
            cx.limits(),
            self.spec.kind,
            &self.base.account,
            &self.base.region,
            &self.spec.snapshot,
        )
        .await?;
        let ours = found.as_ref().is_some_and(|s| {
            is_ferrys(cx.ctx(), self.spec.migration.as_str(), &self.spec.origin, s)
                && s.tags.get("ferry:intermediate").map(String::as_str) == Some("true")
                && s.status != "deleting"
        });
        if !ours {
            return Ok(Observation::Done(self.done()));
        }
        Ok(Observation::Todo(change(
            Action::Update,
            vec![format!(
                "- {} (ferry's manual copy, made to share an automated snapshot; {} is copied)",
                self.spec.snapshot, self.spec.copy.id
            )],
            Todo::Resources(vec![self.spec.snapshot.clone()]),
        )))
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        delete_snapshot(
            cx.ctx(),
            self.spec.kind,
            &self.base.account,
            &self.base.region,
            &self.spec.snapshot,
        )
        .await?;
        Ok(Applied::Done(self.done()))
    }
}
