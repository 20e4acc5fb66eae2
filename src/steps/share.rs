//! Sharing with another account: createVolumePermission on snapshots, launch permission on AMIs,
//! and use of the source KMS keys (a key policy statement merged by Sid, or a named grant) —
//! and taking back exactly what ferry added, nothing that was there before.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, LaunchPermission, LaunchPermissionModifications, OperationType, SnapshotAttributeName,
};
use aws_sdk_kms::types::GrantOperation;
use serde_json::{Value, json};

use super::output::{KeyAccessOutput, ShareOutput};
use super::{
    Action, Base, Change, Cx, ReadOnce, StepOutput, Todo, bucket, change, each_page, failed,
    not_visible_yet, policy, policy_edit, sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{Applied, GateKey, Observation, Step, StepCx, StepError};
use crate::graph::{
    Copied, DestKey, KeyAccessSpec, PlannedStep, ShareSpec, Shared, Sharing, SourceKey,
};
use crate::ids::StepId;
use crate::plan::KeyAccess;

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

fn ec2_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("ec2", op)
}

fn kms_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("kms", op)
}

/// The actions the receiving account needs on a source key (aws-facts.md, share-kms-key).
pub const KEY_ACTIONS: &[&str] = &[
    "kms:DescribeKey",
    "kms:CreateGrant",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
    "kms:Decrypt",
];

/// KEY_ACTIONS as the grant operations that express them, so that `key_access: grant` gives
/// exactly what `key_access: policy` does. A grant names operations, not wildcards:
/// `kms:GenerateDataKey*` stands for the four GenerateDataKey operations (KMS developer guide,
/// key-policy-default) and `kms:ReEncrypt*` for ReEncryptFrom and ReEncryptTo (KMS developer
/// guide, grants.html#terms-grant-operations).
pub const GRANT_OPERATIONS: &[GrantOperation] = &[
    GrantOperation::DescribeKey,
    GrantOperation::CreateGrant,
    GrantOperation::GenerateDataKey,
    GrantOperation::GenerateDataKeyWithoutPlaintext,
    GrantOperation::GenerateDataKeyPair,
    GrantOperation::GenerateDataKeyPairWithoutPlaintext,
    GrantOperation::ReEncryptFrom,
    GrantOperation::ReEncryptTo,
    GrantOperation::Decrypt,
];

/// The sources that already have a finished copy made by this migration in the other account,
/// under the key the plan copies with. With `revoke_after`, a source whose copy exists needs
/// no share any more: this keeps a repeated apply from sharing again what the first one took
/// back. A copy under another key does not count: the plan's copy is still to be made.
async fn copied_sources(
    cx: &StepCx<'_, Cx>,
    sharing: &Sharing,
    images: bool,
) -> Result<BTreeSet<String>, StepError> {
    let c = cx.ctx();
    let (account, region) = (
        sharing.with_account.as_str(),
        sharing.destination_region.as_str(),
    );
    // A key that does not exist yet has no copies under it.
    let wanted = match sharing.copies_under.as_ref().map(|k| &k.key) {
        Some(DestKey::Existing(arn)) => Some(arn.to_string()),
        Some(DestKey::MadeBy(_)) => return Ok(BTreeSet::new()),
        Some(DestKey::Unresolved(_)) | None => None,
    };
    let client = c.aws.ec2(account, region);
    let filters = [
        Filter::builder()
            .name("tag:ferry:plan")
            .values(&c.plan)
            .build(),
        Filter::builder()
            .name("tag:ferry:migration")
            .values(sharing.migration.as_str())
            .build(),
    ];
    let mut found = BTreeSet::new();
    if images {
        let pages = client
            .describe_images()
            .owners("self")
            .set_filters(Some(filters.to_vec()))
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        each_page(cx.limits(), account, region, "DescribeImages", pages, |p| {
            for i in p.images() {
                // An image's key shows on its snapshots, tagged as its copies: judged by those.
                if i.state().map(|s| s.as_str()) == Some("available") {
                    found.extend(source_tag(i.tags()));
                }
            }
        })
        .await?;
    } else {
        let pages = client
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters.to_vec()))
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        each_page(
            cx.limits(),
            account,
            region,
            "DescribeSnapshots",
            pages,
            |p| {
                for s in p.snapshots() {
                    let under_wanted = wanted.as_deref().is_none_or(|w| s.kms_key_id() == Some(w));
                    if s.state().map(|s| s.as_str()) == Some("completed") && under_wanted {
                        found.extend(source_tag(s.tags()));
                    }
                }
            },
        )
        .await?;
    }
    Ok(found)
}

fn source_tag(tags: &[aws_sdk_ec2::types::Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some("ferry:source"))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// One resource shared (or not) with one account: (owner account, region, resource, other
/// account).
pub type ShareFact = (String, String, String, String);

/// What each (account, region) already shares with another account: the AMIs it may launch
/// (`DescribeImages ExecutableUsers`) and the snapshots it may restore (`DescribeSnapshots
/// RestorableByUserIds`), listed once per process. AWS answers both with explicit permissions
/// for that account, which is what a share step adds and an unshare step takes back.
#[derive(Default)]
pub struct SharedIndex {
    lists: ReadOnce<SharedKey, Arc<HashSet<String>>>,
}

/// (owner account, region, the other account's id, images rather than snapshots).
type SharedKey = (String, String, String, bool);

impl SharedIndex {
    async fn list(
        &self,
        cx: &StepCx<'_, Cx>,
        account: &str,
        region: &str,
        with: &str,
        images: bool,
    ) -> Result<Arc<HashSet<String>>, StepError> {
        self.lists
            .get(
                (account.into(), region.into(), with.into(), images),
                || async {
                    let client = cx.ctx().aws.ec2(account, region);
                    let limits = cx.limits();
                    let mut ids = HashSet::new();
                    if images {
                        let pages = client
                            .describe_images()
                            .owners("self")
                            .executable_users(with)
                            .into_paginator()
                            .page_size(crate::lookup::PAGE_SIZE)
                            .send();
                        each_page(limits, account, region, "DescribeImages", pages, |page| {
                            ids.extend(
                                page.images()
                                    .iter()
                                    .filter_map(|i| i.image_id())
                                    .map(String::from),
                            )
                        })
                        .await?;
                    } else {
                        let pages = client
                            .describe_snapshots()
                            .owner_ids("self")
                            .restorable_by_user_ids(with)
                            .into_paginator()
                            .page_size(crate::lookup::PAGE_SIZE)
                            .send();
                        each_page(
                            limits,
                            account,
                            region,
                            "DescribeSnapshots",
                            pages,
                            |page| {
                                ids.extend(
                                    page.snapshots()
                                        .iter()
                                        .filter_map(|s| s.snapshot_id())
                                        .map(String::from),
                                )
                            },
                        )
                        .await?;
                    }
                    Ok::<_, StepError>(Arc::new(ids))
                },
            )
            .await
    }
}

/// `ec2.share-snapshot` / `ec2.unshare-snapshot` / `ec2.share-image` / `ec2.unshare-image`.
pub struct Permission {
    base: Base,
    spec: ShareSpec,
    add: bool,
}

impl Permission {
    pub fn new(step: &PlannedStep, spec: ShareSpec, add: bool) -> Self {
        let api = match spec.shared {
            Shared::Image(_) | Shared::ImageMadeBy { .. } => "ec2:ModifyImageAttribute",
            _ => "ec2:ModifySnapshotAttribute",
        };
        Permission {
            base: Base::new(step, api),
            spec,
            add,
        }
    }

    fn image(&self) -> bool {
        matches!(
            self.spec.shared,
            Shared::Image(_) | Shared::ImageMadeBy { .. }
        )
    }

    /// AMI shares (launch permission and the AMI's snapshots) are unneeded once the image is
    /// copied; a snapshot's once it is.
    fn for_images(&self) -> bool {
        !matches!(
            self.spec.shared,
            Shared::Snapshot(_) | Shared::CopyMadeBy { .. }
        )
    }

    /// The step making the intermediate copy this step shares, if it shares one.
    fn made_by(&self) -> Option<(&StepId, &str)> {
        match &self.spec.shared {
            Shared::CopyMadeBy { step, of } => Some((step, of.as_str())),
            Shared::ImageMadeBy { step, of } | Shared::SnapshotsOfCopy { step, of } => {
                Some((step, of.as_str()))
            }
            _ => None,
        }
    }

    fn fact(&self, cx: &Cx, resource: &str) -> ShareFact {
        (
            self.base.account.clone(),
            self.base.region.clone(),
            resource.to_string(),
            cx.account_id(&self.spec.sharing.with_account).to_string(),
        )
    }

    /// The resources this step covers: the snapshots behind an AMI, or its one resource.
    async fn resources(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<String>, StepError> {
        let made = self
            .made_by()
            .and_then(|(step, _)| cx.input(&step.to_string()));
        Ok(match &self.spec.shared {
            Shared::Snapshot(s) => vec![s.to_string()],
            Shared::Image(i) => vec![i.to_string()],
            Shared::SnapshotsOf { snapshots, .. } => {
                snapshots.iter().flatten().map(|s| s.to_string()).collect()
            }
            // None when the final copy existed already (no intermediate was needed).
            Shared::CopyMadeBy { .. } => match made {
                Some(StepOutput::SnapshotCopy(c)) if !c.snapshot_id.is_empty() => {
                    vec![c.snapshot_id.clone()]
                }
                _ => Vec::new(),
            },
            Shared::ImageMadeBy { .. } => match made {
                Some(StepOutput::ImageCopy(c)) if !c.image_id.is_empty() => {
                    vec![c.image_id.clone()]
                }
                _ => Vec::new(),
            },
            Shared::SnapshotsOfCopy { .. } => match made {
                Some(StepOutput::ImageCopy(c)) if !c.snapshots.is_empty() => c.snapshots.clone(),
                // An intermediate found done by a look (not a poll): its snapshots are read.
                Some(StepOutput::ImageCopy(c)) if !c.image_id.is_empty() => {
                    self.image_snapshots(cx, &c.image_id).await?
                }
                _ => Vec::new(),
            },
        })
    }

    /// The snapshots behind an AMI of this account and region.
    async fn image_snapshots(
        &self,
        cx: &StepCx<'_, Cx>,
        image: &str,
    ) -> Result<Vec<String>, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        cx.limits()
            .take(&[bucket(account, region, "ec2:DescribeImages")])
            .await;
        let out = cx
            .ctx()
            .aws
            .ec2(account, region)
            .describe_images()
            .image_ids(image)
            .send()
            .await
            .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
        Ok(out
            .images()
            .iter()
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect())
    }

    /// The source (AMI or snapshot) whose copy makes this share unneeded.
    fn copy_source(&self) -> String {
        match &self.spec.shared {
            Shared::Snapshot(s) | Shared::CopyMadeBy { of: s, .. } => s.to_string(),
            Shared::Image(i)
            | Shared::SnapshotsOf { image: i, .. }
            | Shared::ImageMadeBy { of: i, .. }
            | Shared::SnapshotsOfCopy { of: i, .. } => i.to_string(),
        }
    }

    /// Whether `resource` is shared with the other account now: one listing per account,
    /// region and kind of everything the other account may use (instead of one attribute read
    /// per resource); this process's own changes keep the answer current.
    async fn shared(&self, cx: &StepCx<'_, Cx>, resource: &str) -> Result<bool, StepError> {
        let fact = self.fact(cx.ctx(), resource);
        if let Some(v) = cx.ctx().shared_now.lock().expect("shares").get(&fact) {
            return Ok(*v);
        }
        let listed = cx
            .ctx()
            .shares
            .list(
                cx,
                &self.base.account,
                &self.base.region,
                &fact.3,
                self.image(),
            )
            .await?;
        Ok(listed.contains(resource))
    }

    async fn modify(&self, cx: &StepCx<'_, Cx>, resource: &str) -> Result<(), StepError> {
        let c = cx.ctx();
        let client = c.aws.ec2(&self.base.account, &self.base.region);
        let who = c.account_id(&self.spec.sharing.with_account).to_string();
        if self.image() {
            let p = LaunchPermission::builder().user_id(&who).build();
            let m = if self.add {
                LaunchPermissionModifications::builder().add(p).build()
            } else {
                LaunchPermissionModifications::builder().remove(p).build()
            };
            client
                .modify_image_attribute()
                .image_id(resource)
                .launch_permission(m)
                .send()
                .await
                .map_err(|e| failed(ec2_error("ModifyImageAttribute")(e), &[]))?;
        } else {
            // The Attribute/OperationType/UserIds form: accepted by every EC2 implementation.
            let op = if self.add {
                OperationType::Add
            } else {
                OperationType::Remove
            };
            client
                .modify_snapshot_attribute()
                .snapshot_id(resource)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .operation_type(op)
                .user_ids(&who)
                .send()
                .await
                .map_err(|e| failed(ec2_error("ModifySnapshotAttribute")(e), &[]))?;
        }
        Ok(())
    }

    /// The resources this step still has to change.
    async fn pending(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<String>, StepError> {
        let candidates = match &self.spec.undoes {
            // Only what ferry itself added is taken back.
            Some(share) if !self.add => super::added_by_ferry(cx, share),
            _ => {
                if self.spec.sharing.revoke_after {
                    // AMI shares (launch permission and the AMI's snapshots) are unneeded once
                    // the image is copied.
                    let copied = copied_sources(cx, &self.spec.sharing, self.for_images()).await?;
                    if copied.contains(&self.copy_source()) {
                        return Ok(Vec::new());
                    }
                }
                self.resources(cx).await?
            }
        };
        // An undo reads each share on its own (never from the listing this process made once,
        // which a failed removal would leave stale). Soon after ferry shared them, reads may
        // not show the shares yet: it looks again until they show or surely are not there.
        let settling = match (&self.spec.undoes, self.add) {
            (Some(share), false) => cx
                .ctx()
                .settling_after(&self.base.id_text, &share.to_string()),
            _ => None,
        };
        let mut todo = Vec::new();
        for r in candidates {
            let known = cx
                .ctx()
                .shared_now
                .lock()
                .expect("shares")
                .get(&self.fact(cx.ctx(), &r))
                .copied();
            let shared = match known {
                Some(v) => v,
                None if !self.add => {
                    let fresh = self.shared_fresh(cx, &r).await?;
                    if let (false, Some(left)) = (fresh, settling) {
                        return Err(not_visible_yet(
                            "ChangeNotVisibleYet",
                            format!("the share of {r} ferry made"),
                            left,
                        ));
                    }
                    fresh
                }
                None => self.shared(cx, &r).await?,
            };
            if shared != self.add {
                todo.push(r);
            }
        }
        Ok(todo)
    }

    /// Whether `resource` is shared with the other account, read for it alone (not from the
    /// listing this process made once).
    async fn shared_fresh(&self, cx: &StepCx<'_, Cx>, resource: &str) -> Result<bool, StepError> {
        let (account, region) = (&self.base.account, &self.base.region);
        let who = cx
            .ctx()
            .account_id(&self.spec.sharing.with_account)
            .to_string();
        let client = cx.ctx().aws.ec2(account, region);
        if self.image() {
            cx.limits()
                .take(&[bucket(account, region, "ec2:DescribeImages")])
                .await;
            let out = client
                .describe_images()
                .image_ids(resource)
                .executable_users(&who)
                .send()
                .await
                .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
            return Ok(!out.images().is_empty());
        }
        cx.limits()
            .take(&[bucket(account, region, "ec2:DescribeSnapshots")])
            .await;
        let out = client
            .describe_snapshots()
            .snapshot_ids(resource)
            .restorable_by_user_ids(&who)
            .send()
            .await
            .map_err(|e| failed(ec2_error("DescribeSnapshots")(e), &[]))?;
        Ok(!out.snapshots().is_empty())
    }
}

fn share_output(added: Vec<String>) -> StepOutput {
    StepOutput::Share(ShareOutput {
        added_by_ferry: added,
        taken_back: Vec::new(),
    })
}

#[async_trait]
impl Step<Cx> for Permission {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        // A dry run, before the intermediate copy exists: it will be shared.
        if let Some((step, of)) = self.made_by()
            && self.add
            && cx.input(&step.to_string()).is_none()
            // Once the final copy is done, no intermediate is made (nor shared).
            && !copied_sources(cx, &self.spec.sharing, self.for_images())
                .await?
                .contains(of)
        {
            return Ok(Observation::Todo(change(
                Action::Update,
                vec![format!(
                    "+ the intermediate copy of {of} ({step}): share with `{}`",
                    self.spec.sharing.with_account
                )],
                Todo::Resources(Vec::new()),
            )));
        }
        let pending = self.pending(cx).await?;
        if pending.is_empty() {
            // A share this process tried whose answer was lost is there, and is ferry's.
            let tried = if self.add {
                cx.ctx().shares_attempted(&self.base.id_text)
            } else {
                Vec::new()
            };
            return Ok(Observation::Done(share_output(tried)));
        }
        let who = &self.spec.sharing.with_account;
        let (mark, verb) = if self.add {
            ("+", "share with")
        } else {
            ("-", "stop sharing with")
        };
        let diff = pending
            .iter()
            .map(|r| format!("{mark} {r}: {verb} `{who}`"))
            .collect();
        Ok(Observation::Todo(change(
            Action::Update,
            diff,
            Todo::Resources(pending),
        )))
    }

    /// Journaled before the call: what this step is about to share is ferry's, even if the
    /// answer never comes.
    fn intent(&self, change: &Change) -> Value {
        let resources = match &change.todo {
            Todo::Resources(r) => r.clone(),
            _ => Vec::new(),
        };
        if self.add {
            json!({ "adding": resources })
        } else {
            json!({ "removing": resources })
        }
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let resources = match change.todo {
            Todo::Resources(r) => r,
            _ => Vec::new(),
        };
        cx.ctx().changing(&self.base.id_text);
        for r in &resources {
            if self.add {
                cx.ctx().attempt_share(&self.base.id_text, r);
            }
            self.modify(cx, r).await?;
            let fact = self.fact(cx.ctx(), r);
            cx.ctx()
                .shared_now
                .lock()
                .expect("shares")
                .insert(fact, self.add);
        }
        // Everything this step set out to share in this process, including what an earlier
        // attempt shared before its answer was lost.
        if self.add {
            return Ok(Applied::Done(share_output(
                cx.ctx().shares_attempted(&self.base.id_text),
            )));
        }
        Ok(Applied::Done(StepOutput::Share(ShareOutput {
            added_by_ferry: Vec::new(),
            taken_back: resources,
        })))
    }
}

/// Grants on one key that a key-access step cares about.
#[derive(Default)]
struct Grants {
    /// ferry's named grant for the other account.
    ours: Vec<String>,
    /// Grants the other account issued (only ever taken back where ferry gave it the access).
    theirs: Vec<String>,
}

/// `kms.grant-key-access` / `kms.revoke-key-access`: the other account's use of one source key.
pub struct SourceKeyAccess {
    base: Base,
    spec: KeyAccessSpec,
    key: String,
    add: bool,
    gate: GateKey,
}

impl SourceKeyAccess {
    pub fn new(step: &PlannedStep, spec: KeyAccessSpec, add: bool) -> Self {
        let grant = spec.how == KeyAccess::Grant;
        let api = match (grant, add) {
            (true, true) => "kms:CreateGrant",
            (true, false) => "kms:RevokeGrant",
            (false, _) => "kms:PutKeyPolicy",
        };
        let key = match &spec.key {
            SourceKey::Known(arn) => arn.to_string(),
            // Never built: offline steps do not run.
            SourceKey::Unresolved => String::new(),
        };
        SourceKeyAccess {
            gate: GateKey::new(super::KEY_POLICY_GATE, &key),
            base: Base::new(step, api),
            spec,
            key,
            add,
        }
    }

    fn grant(&self) -> bool {
        self.spec.how == KeyAccess::Grant
    }

    fn grantee(&self, cx: &Cx) -> String {
        format!(
            "arn:aws:iam::{}:root",
            cx.account_id(&self.spec.sharing.with_account)
        )
    }

    fn statement(&self, cx: &Cx) -> Value {
        json!({
            "Sid": self.spec.sid,
            "Effect": "Allow",
            "Principal": { "AWS": self.grantee(cx) },
            "Action": KEY_ACTIONS,
            "Resource": "*",
        })
    }

    async fn policy(&self, cx: &StepCx<'_, Cx>) -> Result<Value, StepError> {
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
            .key_id(&self.key)
            .policy_name("default")
            .send()
            .await
            .map_err(|e| failed(kms_error("GetKeyPolicy")(e), &[]))?;
        let read = policy::parse(out.policy(), &format!("the key policy of {}", self.key))?;
        Ok(cx.ctx().key_policy_read(&self.key, read))
    }

    async fn put_policy(
        &self,
        cx: &StepCx<'_, Cx>,
        before: &Value,
        policy: &Value,
    ) -> Result<(), StepError> {
        cx.ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .put_key_policy()
            .key_id(&self.key)
            .policy_name("default")
            .policy(policy.to_string())
            .send()
            .await
            .map_err(|e| {
                failed(
                    kms_error("PutKeyPolicy")(e),
                    &["MalformedPolicyDocumentException"],
                )
            })?;
        cx.ctx().wrote_key_policy(&self.key, before, policy);
        Ok(())
    }

    /// The grants on this key: ferry's named one for the other account, and those the other
    /// account issued itself (EBS makes them for its copies, through the kms:CreateGrant the
    /// access includes).
    async fn grants(&self, cx: &StepCx<'_, Cx>) -> Result<Grants, StepError> {
        cx.limits()
            .take(&[bucket(
                &self.base.account,
                &self.base.region,
                "kms:ListGrants",
            )])
            .await;
        let client = cx.ctx().aws.kms(&self.base.account, &self.base.region);
        let issuer = self.grantee(cx.ctx());
        // Only grants the other account issued after ferry set out to give it access (first,
        // in this run) are taken back with it: an older one was made through access it had.
        let since = self
            .spec
            .undoes
            .as_ref()
            .and_then(|s| cx.ctx().first_changed_at(&s.to_string()));
        let mut pages = client
            .list_grants()
            .key_id(&self.key)
            .into_paginator()
            .send();
        let mut found = Grants::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed(kms_error("ListGrants")(e), &[]))?;
            for g in page.grants() {
                let Some(id) = g.grant_id().map(str::to_string) else {
                    continue;
                };
                if g.name() == Some(self.spec.sid.as_str()) {
                    found.ours.push(id);
                } else if g.issuing_account() == Some(issuer.as_str())
                    && let (Some(since), Some(made)) = (since, g.creation_date())
                    && made.secs() * 1000 + i64::from(made.subsec_nanos() / 1_000_000)
                        >= since as i64
                {
                    found.theirs.push(id);
                }
            }
        }
        Ok(found)
    }

    /// Revokes grants on this key; one already gone is what was wanted.
    async fn revoke_grants(&self, cx: &StepCx<'_, Cx>, ids: &[String]) -> Result<(), StepError> {
        let client = cx.ctx().aws.kms(&self.base.account, &self.base.region);
        for id in ids {
            let revoked = client
                .revoke_grant()
                .key_id(&self.key)
                .grant_id(id)
                .send()
                .await;
            if let Err(e) = revoked.map_err(kms_error("RevokeGrant"))
                && !e.is_not_found()
            {
                return Err(failed(e, &[]));
            }
        }
        Ok(())
    }

    /// With `revoke_after`, access is not needed once every copy of the migration exists.
    async fn no_longer_needed(&self, cx: &StepCx<'_, Cx>) -> Result<bool, StepError> {
        if !self.add || !self.spec.sharing.revoke_after || self.spec.sources.is_empty() {
            return Ok(false);
        }
        let copied = match self.spec.sharing.copied {
            Copied::DbSnapshots(kind) => {
                super::rds::copied_sources(cx, &self.spec.sharing, kind, &self.spec.sources).await?
            }
            Copied::Images => copied_sources(cx, &self.spec.sharing, true).await?,
            Copied::Snapshots => copied_sources(cx, &self.spec.sharing, false).await?,
        };
        Ok(self.spec.sources.iter().all(|s| copied.contains(s)))
    }

    /// Whether ferry added this access (read from the grant step's output, in this run or an
    /// earlier one recorded in the same state).
    fn added_by_ferry(&self, cx: &StepCx<'_, Cx>) -> bool {
        let Some(grant_step) = &self.spec.undoes else {
            return false;
        };
        cx.input(&grant_step.to_string())
            .into_iter()
            .chain(cx.ctx().earlier_output(grant_step))
            .any(|out| matches!(out, StepOutput::KeyAccess(k) if k.access_added_by_ferry))
    }

    fn output(&self, added: bool, grant_id: Option<String>) -> StepOutput {
        StepOutput::KeyAccess(KeyAccessOutput {
            access_added_by_ferry: added,
            key: self.key.clone(),
            grant_id,
        })
    }
}

#[async_trait]
impl Step<Cx> for SourceKeyAccess {
    step_identity!();

    /// Edits of one key's access are serialized: a second migration sharing the same key then
    /// sees the first one's statement or grant and leaves it to the first to take back.
    fn gate(&self) -> Option<&GateKey> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        // Access this process tried to add (its answer maybe lost) is ferry's.
        let tried = self.add
            && cx
                .ctx()
                .shares_attempted(&self.base.id_text)
                .contains(&self.key);
        let done = || Ok(Observation::Done(self.output(tried, None)));
        if self.no_longer_needed(cx).await? || (!self.add && !self.added_by_ferry(cx)) {
            return done();
        }
        // Grants the other account made through the access ferry gave it go with it. Its copies
        // issue them when they start; soon after, a listing may not show them yet.
        // Until the last copy started longer ago than that, one may be missing from a listing
        // that shows others. One listing serves both kinds of grant.
        let listed = if self.grant() || !self.add {
            Some(self.grants(cx).await?)
        } else {
            None
        };
        let theirs = if self.add {
            Vec::new()
        } else {
            if let Some(left) = cx
                .ctx()
                .settling_after_any(&self.base.id_text, |s| s.ends_with("/copy"))
            {
                return Err(not_visible_yet(
                    "ChangeNotVisibleYet",
                    format!(
                        "grants the copies in `{}` made on {}",
                        self.spec.sharing.with_account, self.key
                    ),
                    left,
                ));
            }
            listed
                .as_ref()
                .map(|g| g.theirs.clone())
                .unwrap_or_default()
        };
        let their_lines = || {
            theirs
                .iter()
                .map(|id| {
                    format!(
                        "- grant {id} on {} (made by `{}` through the access ferry gave it)",
                        self.key, self.spec.sharing.with_account
                    )
                })
                .collect::<Vec<_>>()
        };
        // Soon after ferry added the access, reads may not show it yet: an undo that finds
        // nothing looks again before it believes it.
        let settling = match (&self.spec.undoes, self.add) {
            (Some(step), false) => cx
                .ctx()
                .settling_after(&self.base.id_text, &step.to_string()),
            _ => None,
        };
        if self.grant() {
            let exists = listed.and_then(|g| g.ours.into_iter().next());
            let sid = &self.spec.sid;
            return match (exists, self.add) {
                (None, false) if settling.is_some() => Err(not_visible_yet(
                    "ChangeNotVisibleYet",
                    format!("the grant `{sid}` on {} ferry made", self.key),
                    settling.unwrap_or_default(),
                )),
                (None, false) if !theirs.is_empty() => Ok(Observation::Todo(change(
                    Action::Update,
                    their_lines(),
                    Todo::Grant { id: None },
                ))),
                (Some(_), true) | (None, false) => done(),
                (None, true) => Ok(Observation::Todo(change(
                    Action::Create,
                    vec![format!(
                        "+ grant `{sid}` on {} to {}",
                        self.key,
                        self.grantee(cx.ctx())
                    )],
                    Todo::Grant { id: None },
                ))),
                (Some(id), false) => {
                    let mut diff = vec![format!("- grant `{sid}` on {}", self.key)];
                    diff.extend(their_lines());
                    Ok(Observation::Todo(change(
                        Action::Update,
                        diff,
                        Todo::Grant { id: Some(id) },
                    )))
                }
            };
        }
        let before = self.policy(cx).await?;
        let after = if self.add {
            policy::merge(&before, &[self.statement(cx.ctx())])
        } else {
            policy::remove(&before, &self.spec.sid)
        };
        match policy_edit(before, &after) {
            Some(mut c) => {
                c.diff.extend(their_lines());
                Ok(Observation::Todo(c))
            }
            None if settling.is_none() && !theirs.is_empty() => Ok(Observation::Todo(change(
                Action::Update,
                their_lines(),
                Todo::Nothing,
            ))),
            None => match settling {
                Some(left) => Err(not_visible_yet(
                    "ChangeNotVisibleYet",
                    format!(
                        "the statement `{}` ferry added to {}",
                        self.spec.sid, self.key
                    ),
                    left,
                )),
                None => done(),
            },
        }
    }

    fn intent(&self, change: &Change) -> Value {
        // The key policy as it was before ferry's edit, kept in the journal.
        json!({ "key": self.key, "policy_before": change.policy_before(), "adding": self.add })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let client = cx.ctx().aws.kms(&self.base.account, &self.base.region);
        cx.ctx().changing(&self.base.id_text);
        if self.add {
            cx.ctx().attempt_share(&self.base.id_text, &self.key);
        }
        // Listed again under the gate: another migration sharing this key may have just made
        // (or taken back) the same named grant.
        let grants = if self.grant() || !self.add {
            self.grants(cx).await?
        } else {
            Grants::default()
        };
        if !self.add {
            self.revoke_grants(cx, &grants.theirs).await?;
        }
        if self.grant() {
            let existing = grants.ours;
            if self.add {
                if !existing.is_empty() {
                    return Ok(Applied::Done(self.output(false, None)));
                }
                let out = client
                    .create_grant()
                    .key_id(&self.key)
                    .grantee_principal(self.grantee(cx.ctx()))
                    .name(&self.spec.sid)
                    .set_operations(Some(GRANT_OPERATIONS.to_vec()))
                    .send()
                    .await
                    .map_err(|e| failed(kms_error("CreateGrant")(e), &[]))?;
                let id = out.grant_id().map(str::to_string);
                return Ok(Applied::Done(self.output(true, id)));
            }
            self.revoke_grants(cx, &existing).await?;
            return Ok(Applied::Done(self.output(false, None)));
        }
        // Read again right before writing: the merge starts from the live document.
        let before = self.policy(cx).await?;
        let after = if self.add {
            policy::merge(&before, &[self.statement(cx.ctx())])
        } else {
            policy::remove(&before, &self.spec.sid)
        };
        if !policy::same(&before, &after) {
            self.put_policy(cx, &before, &after).await?;
        }
        Ok(Applied::Done(self.output(self.add, None)))
    }
}
