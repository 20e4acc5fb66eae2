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

use super::ec2::each_page;
use super::kms::step_identity;
use super::{Base, Cx, ReadOnce, SdkError, ServiceError, bucket, failed, policy, todo};
use crate::aws::AwsError;
use crate::exec::{Applied, Observation, Scope, Step, StepCx, StepError};
use crate::graph::{StepKind, StepSpec};

fn ec2_error<E: ServiceError>(op: &'static str) -> impl Fn(SdkError<E>) -> AwsError {
    move |e| AwsError::from_sdk("ec2", op, e)
}

fn kms_error<E: ServiceError>(op: &'static str) -> impl Fn(SdkError<E>) -> AwsError {
    move |e| AwsError::from_sdk("kms", op, e)
}

/// The actions the receiving account needs on a source key (aws-facts.md, share-kms-key).
pub const KEY_ACTIONS: &[&str] = &[
    "kms:DescribeKey",
    "kms:CreateGrant",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
    "kms:Decrypt",
];

/// What a share step knows about the other account.
struct Sharing {
    with_account: String,
    destination_region: String,
    revoke_after: bool,
}

impl Sharing {
    fn of(base: &Base) -> Sharing {
        Sharing {
            with_account: base.param("with_account").unwrap_or_default().to_string(),
            destination_region: base
                .param("destination_region")
                .unwrap_or_default()
                .to_string(),
            revoke_after: base.params.get("revoke_after") == Some(&json!(true)),
        }
    }
}

/// The sources among `sources` that already have a finished copy made by this migration in the
/// other account. With `revoke_after`, a source whose copy exists needs no share any more: this
/// keeps a repeated apply from sharing again what the first one took back.
async fn copied_sources(
    cx: &StepCx<'_, Cx>,
    migration: &str,
    sharing: &Sharing,
    images: bool,
) -> Result<BTreeSet<String>, StepError> {
    let c = cx.ctx();
    let client = c
        .aws
        .ec2(&sharing.with_account, &sharing.destination_region);
    let filters = [
        Filter::builder()
            .name("tag:ferry:plan")
            .values(&c.plan)
            .build(),
        Filter::builder()
            .name("tag:ferry:migration")
            .values(migration)
            .build(),
    ];
    let mut found = BTreeSet::new();
    if images {
        cx.limits()
            .take(&[bucket(
                &sharing.with_account,
                &sharing.destination_region,
                "ec2:DescribeImages",
            )])
            .await;
        let out = client
            .describe_images()
            .owners("self")
            .set_filters(Some(filters.to_vec()))
            .send()
            .await
            .map_err(|e| failed(ec2_error("DescribeImages")(e), &[]))?;
        for i in out.images() {
            if i.state().map(|s| s.as_str()) == Some("available") {
                found.extend(source_tag(i.tags()));
            }
        }
    } else {
        cx.limits()
            .take(&[bucket(
                &sharing.with_account,
                &sharing.destination_region,
                "ec2:DescribeSnapshots",
            )])
            .await;
        let out = client
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters.to_vec()))
            .send()
            .await
            .map_err(|e| failed(ec2_error("DescribeSnapshots")(e), &[]))?;
        for s in out.snapshots() {
            if s.state().map(|s| s.as_str()) == Some("completed") {
                found.extend(source_tag(s.tags()));
            }
        }
    }
    Ok(found)
}

fn source_tag(tags: &[aws_sdk_ec2::types::Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some("ferry:source"))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// The resources a share step covers: the snapshots behind an AMI, or its one target.
fn resources(base: &Base) -> Vec<String> {
    match base.params.get("snapshots").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None => vec![base.target.clone()],
    }
}

/// The source (AMI or snapshot) whose copy makes this share unneeded.
fn copy_source(base: &Base) -> String {
    base.param("backing_snapshots_of")
        .unwrap_or(&base.target)
        .to_string()
}

/// What the share step added, in this run (its output, read by the unshare step) or in an
/// earlier run recorded in the same state.
fn added_by_ferry(cx: &StepCx<'_, Cx>, share_step: &str) -> Vec<String> {
    let earlier = cx.ctx().earlier_output(share_step);
    let mut added: Vec<String> = cx
        .inputs()
        .map(|(_, out)| out)
        .chain(earlier.as_ref())
        .filter_map(|out| out.get("added_by_ferry"))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    added.sort();
    added.dedup();
    added
}

/// The id of the step that did what `step` undoes (`.../unshare` -> `.../share`).
fn undone_by(step: &str, undo: &str, done: &str) -> String {
    match step.strip_suffix(undo) {
        Some(prefix) => format!("{prefix}{done}"),
        None => step.to_string(),
    }
}

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
                    let mut ids = HashSet::new();
                    if images {
                        let pages = client
                            .describe_images()
                            .owners("self")
                            .executable_users(with)
                            .into_paginator()
                            .send();
                        each_page(cx, account, region, "DescribeImages", pages, |page| {
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
                            .send();
                        each_page(cx, account, region, "DescribeSnapshots", pages, |page| {
                            ids.extend(
                                page.snapshots()
                                    .iter()
                                    .filter_map(|s| s.snapshot_id())
                                    .map(String::from),
                            )
                        })
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
    sharing: Sharing,
    image: bool,
    add: bool,
}

impl Permission {
    pub fn new(spec: &StepSpec) -> Self {
        let image = matches!(spec.kind, StepKind::ShareImage | StepKind::UnshareImage);
        let add = matches!(spec.kind, StepKind::ShareImage | StepKind::ShareSnapshot);
        let api = if image {
            "ec2:ModifyImageAttribute"
        } else {
            "ec2:ModifySnapshotAttribute"
        };
        let base = Base::new(spec, api);
        Permission {
            sharing: Sharing::of(&base),
            base,
            image,
            add,
        }
    }

    fn migration(&self) -> &str {
        &self.base.owner
    }

    fn fact(&self, resource: &str) -> String {
        format!(
            "shared/{}/{resource}/{}",
            self.base.account, self.sharing.with_account
        )
    }

    /// Whether `resource` is shared with the other account now: one listing per account,
    /// region and kind of everything the other account may use (instead of one attribute read
    /// per resource); this step's own changes keep the answer current.
    async fn shared(&self, cx: &StepCx<'_, Cx>, resource: &str) -> Result<bool, StepError> {
        if let Some(v) = cx
            .ctx()
            .recall(&self.fact(resource))
            .and_then(|v| v.as_bool())
        {
            return Ok(v);
        }
        let who = cx.ctx().account_id(&self.sharing.with_account).to_string();
        let listed = cx
            .ctx()
            .shares
            .list(cx, &self.base.account, &self.base.region, &who, self.image)
            .await?;
        Ok(listed.contains(resource))
    }

    async fn modify(&self, cx: &StepCx<'_, Cx>, resource: &str) -> Result<(), StepError> {
        let c = cx.ctx();
        let client = c.aws.ec2(&self.base.account, &self.base.region);
        let who = c.account_id(&self.sharing.with_account).to_string();
        if self.image {
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
        let candidates = if self.add {
            if self.sharing.revoke_after {
                let copied =
                    copied_sources(cx, self.migration(), &self.sharing, self.image_copy()).await?;
                if copied.contains(&copy_source(&self.base)) {
                    return Ok(Vec::new());
                }
            }
            resources(&self.base)
        } else {
            // Only what ferry itself added is taken back.
            added_by_ferry(cx, &undone_by(&self.base.id, "/unshare", "/share"))
        };
        let mut todo = Vec::new();
        for r in candidates {
            if self.shared(cx, &r).await? != self.add {
                todo.push(r);
            }
        }
        Ok(todo)
    }

    /// Copies that make this share unneeded are images for AMI shares (launch permission and
    /// the AMI's snapshots alike), snapshots otherwise.
    fn image_copy(&self) -> bool {
        self.image || self.base.params.contains_key("backing_snapshots_of")
    }
}

#[async_trait]
impl Step<Cx> for Permission {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let pending = self.pending(cx).await?;
        if pending.is_empty() {
            return Ok(Observation::Done(json!({ "added_by_ferry": [] })));
        }
        let who = &self.sharing.with_account;
        let verb = if self.add {
            "share with"
        } else {
            "stop sharing with"
        };
        Ok(Observation::Todo(todo(
            "update",
            json!({ "resources": pending, "diff": pending.iter().map(|r| format!("{} {r}: {verb} `{who}`", if self.add { "+" } else { "-" })).collect::<Vec<_>>() }),
        )))
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Value) -> Result<Applied, StepError> {
        let resources: Vec<String> = change
            .get("resources")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for r in &resources {
            self.modify(cx, r).await?;
            cx.ctx().remember(&self.fact(r), json!(self.add));
        }
        let added: Vec<&String> = if self.add {
            resources.iter().collect()
        } else {
            Vec::new()
        };
        Ok(Applied::Done(json!({ "added_by_ferry": added })))
    }
}

/// `kms.grant-key-access` / `kms.revoke-key-access`: the other account's use of one source key.
pub struct KeyAccess {
    base: Base,
    sharing: Sharing,
    grant: bool,
    add: bool,
    gate: String,
}

impl KeyAccess {
    pub fn new(spec: &StepSpec) -> Self {
        let grant = spec.params.get("how") == Some(&json!("grant"));
        let add = spec.kind == StepKind::GrantKeyAccess;
        let api = match (grant, add) {
            (true, true) => "kms:CreateGrant",
            (true, false) => "kms:RevokeGrant",
            (false, _) => "kms:PutKeyPolicy",
        };
        let base = Base::new(spec, api);
        KeyAccess {
            gate: format!("{}/{}", super::KEY_POLICY_GATE, base.target),
            sharing: Sharing::of(&base),
            base,
            grant,
            add,
        }
    }

    fn key(&self) -> &str {
        &self.base.target
    }

    fn sid(&self) -> &str {
        self.base.param("sid").unwrap_or("ferry")
    }

    fn grantee(&self, cx: &Cx) -> String {
        format!(
            "arn:aws:iam::{}:root",
            cx.account_id(&self.sharing.with_account)
        )
    }

    fn statement(&self, cx: &Cx) -> Value {
        json!({
            "Sid": self.sid(),
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
            .key_id(self.key())
            .policy_name("default")
            .send()
            .await
            .map_err(|e| failed(kms_error("GetKeyPolicy")(e), &[]))?;
        Ok(serde_json::from_str(out.policy().unwrap_or("{}")).unwrap_or(json!({})))
    }

    async fn put_policy(&self, cx: &StepCx<'_, Cx>, policy: &Value) -> Result<(), StepError> {
        cx.ctx()
            .aws
            .kms(&self.base.account, &self.base.region)
            .put_key_policy()
            .key_id(self.key())
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
        Ok(())
    }

    /// The ids of ferry's named grants for the other account on this key.
    async fn grant_ids(&self, cx: &StepCx<'_, Cx>) -> Result<Vec<String>, StepError> {
        cx.limits()
            .take(&[bucket(
                &self.base.account,
                &self.base.region,
                "kms:ListGrants",
            )])
            .await;
        let client = cx.ctx().aws.kms(&self.base.account, &self.base.region);
        let mut pages = client
            .list_grants()
            .key_id(self.key())
            .into_paginator()
            .send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed(kms_error("ListGrants")(e), &[]))?;
            ids.extend(
                page.grants()
                    .iter()
                    .filter(|g| g.name() == Some(self.sid()))
                    .filter_map(|g| g.grant_id().map(str::to_string)),
            );
        }
        Ok(ids)
    }

    /// With `revoke_after`, access is not needed once every copy of the migration exists.
    async fn no_longer_needed(&self, cx: &StepCx<'_, Cx>) -> Result<bool, StepError> {
        if !self.add || !self.sharing.revoke_after {
            return Ok(false);
        }
        let sources: Vec<String> = self
            .base
            .params
            .get("sources")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if sources.is_empty() {
            return Ok(false);
        }
        let images = sources.iter().all(|s| s.starts_with("ami-"));
        let copied = copied_sources(cx, &self.base.owner, &self.sharing, images).await?;
        Ok(sources.iter().all(|s| copied.contains(s)))
    }

    /// Whether ferry added this access (read from the grant step's output, in this run or an
    /// earlier one recorded in the same state).
    fn added_by_ferry(&self, cx: &StepCx<'_, Cx>) -> bool {
        let grant_step = undone_by(&self.base.id, "/revoke-access", "/grant-access");
        let earlier = cx.ctx().earlier_output(&grant_step);
        cx.inputs()
            .map(|(_, out)| out)
            .chain(earlier.as_ref())
            .any(|out| out.get("access_added_by_ferry") == Some(&json!(true)))
    }
}

#[async_trait]
impl Step<Cx> for KeyAccess {
    step_identity!();

    /// Edits of one key's access are serialized: a second migration sharing the same key then
    /// sees the first one's statement or grant and leaves it to the first to take back.
    fn gate(&self) -> Option<&str> {
        Some(&self.gate)
    }

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Result<Observation, StepError> {
        let done = json!({ "access_added_by_ferry": false, "key": self.key() });
        if self.no_longer_needed(cx).await? || (!self.add && !self.added_by_ferry(cx)) {
            return Ok(Observation::Done(done));
        }
        if self.grant {
            let exists = self.grant_ids(cx).await?.into_iter().next();
            return Ok(match (exists, self.add) {
                (Some(_), true) | (None, false) => Observation::Done(done),
                (None, true) => Observation::Todo(todo(
                    "create",
                    json!({ "diff": [format!("+ grant `{}` on {} to {}", self.sid(), self.key(), self.grantee(cx.ctx()))] }),
                )),
                (Some(id), false) => Observation::Todo(todo(
                    "update",
                    json!({ "grant_id": id, "diff": [format!("- grant `{}` on {}", self.sid(), self.key())] }),
                )),
            });
        }
        let before = self.policy(cx).await?;
        let after = if self.add {
            policy::merge(&before, &[self.statement(cx.ctx())])
        } else {
            policy::remove(&before, self.sid())
        };
        if policy::same(&before, &after) {
            return Ok(Observation::Done(done));
        }
        Ok(Observation::Todo(todo(
            "update",
            json!({ "diff": policy::diff(&before, &after), "policy_before": before }),
        )))
    }

    fn intent(&self, change: &Value) -> Value {
        // The key policy as it was before ferry's edit, kept in the journal.
        json!({ "key": self.key(), "policy_before": change.get("policy_before") })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Value) -> Result<Applied, StepError> {
        let client = cx.ctx().aws.kms(&self.base.account, &self.base.region);
        let unchanged = json!({ "access_added_by_ferry": false, "key": self.key() });
        if self.grant {
            // Look again under the gate: another migration sharing this key may have just
            // made (or taken back) the same named grant.
            let existing = self.grant_ids(cx).await?;
            if self.add {
                if !existing.is_empty() {
                    return Ok(Applied::Done(unchanged));
                }
                let out = client
                    .create_grant()
                    .key_id(self.key())
                    .grantee_principal(self.grantee(cx.ctx()))
                    .name(self.sid())
                    .set_operations(Some(vec![
                        GrantOperation::Decrypt,
                        GrantOperation::DescribeKey,
                        GrantOperation::CreateGrant,
                        GrantOperation::GenerateDataKey,
                        GrantOperation::GenerateDataKeyWithoutPlaintext,
                        GrantOperation::ReEncryptFrom,
                        GrantOperation::ReEncryptTo,
                    ]))
                    .send()
                    .await
                    .map_err(|e| failed(kms_error("CreateGrant")(e), &[]))?;
                return Ok(Applied::Done(json!({
                    "access_added_by_ferry": true, "key": self.key(), "grant_id": out.grant_id(),
                })));
            }
            for id in existing {
                let revoked = client
                    .revoke_grant()
                    .key_id(self.key())
                    .grant_id(id)
                    .send()
                    .await;
                // Already gone is what was wanted.
                if let Err(e) = revoked.map_err(kms_error("RevokeGrant"))
                    && !e.is_not_found()
                {
                    return Err(failed(e, &[]));
                }
            }
            return Ok(Applied::Done(unchanged));
        }
        // Read again right before writing: the merge starts from the live document.
        let before = self.policy(cx).await?;
        let after = if self.add {
            policy::merge(&before, &[self.statement(cx.ctx())])
        } else {
            policy::remove(&before, self.sid())
        };
        if !policy::same(&before, &after) {
            self.put_policy(cx, &after).await?;
        }
        Ok(Applied::Done(
            json!({ "access_added_by_ferry": self.add, "key": self.key() }),
        ))
    }
}
