//! IAM steps: the S3 replication role, its trust policy and ferry's inline policy on it.

use async_trait::async_trait;
use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};

use super::output::RoleOutput;
use super::{
    Action, Base, Change, Cx, StepOutput, Todo, change, existing_key_arn, failed, key_arn, policy,
    sdk_error, step_identity,
};
use crate::aws::AwsError;
use crate::exec::{Applied, Observation, Step, StepCx, StepError};
use crate::graph::{PlannedStep, RoleDeletionSpec, RolePurpose, RoleSpec};
use crate::ids::AccountName;
use crate::lookup::role_arn;

type Observed = Result<Observation<StepOutput, Change>, StepError>;
type Done = Result<Applied<StepOutput>, StepError>;

/// IAM returns policy documents URL-encoded (RFC 3986); one that reads as neither stops the
/// step (it is never taken for an empty document).
pub(crate) fn decode_document(doc: &str) -> Result<Value, StepError> {
    if let Ok(v) = serde_json::from_str(doc) {
        return Ok(v);
    }
    let text = crate::aws::encoding::form_decode(doc);
    policy::parse(Some(&text), "an IAM policy document")
}

/// The service that assumes a role, and the Sid of ferry's trust statement for it.
fn trusted(purpose: &RolePurpose) -> (&'static str, &'static str) {
    match purpose {
        RolePurpose::Replication => ("s3.amazonaws.com", "ferryS3Replication"),
        RolePurpose::BatchReplication { .. } => {
            ("batchoperations.s3.amazonaws.com", "ferryS3BatchOperations")
        }
    }
}

fn trust_statement(purpose: &RolePurpose) -> Value {
    let (service, sid) = trusted(purpose);
    json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": { "Service": service },
        "Action": "sts:AssumeRole",
    })
}

fn iam_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("iam", op)
}

/// `iam.ensure-role`: the replication role (trust `s3.amazonaws.com`), or the Batch
/// Operations role of a batch backfill (trust `batchoperations.s3.amazonaws.com`), with
/// ferry's inline least-privilege policy. Other policies on the role are left as they are.
pub struct EnsureRole {
    base: Base,
    spec: RoleSpec,
}

/// What the role has now.
struct Current {
    arn: String,
    trust: Value,
    inline: Option<Value>,
}

impl EnsureRole {
    pub fn new(step: &PlannedStep, spec: RoleSpec) -> Self {
        EnsureRole {
            base: Base::new(step, "iam:PutRolePolicy"),
            spec,
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn policy_name(&self) -> String {
        format!("ferry-{}", self.spec.migration)
    }

    fn destination_region(&self) -> &str {
        self.spec
            .destination_region
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("")
    }

    /// ferry's inline policy for the role's purpose.
    fn inline_policy(&self, cx: &Cx, destination_key: &str) -> Value {
        let cross = cx.account_id(&AccountName::new(self.base.account.as_str()))
            != cx.account_id(&self.spec.destination_account);
        role_policy(&self.spec, cross, destination_key)
    }

    async fn current(&self, cx: &StepCx<'_, Cx>) -> Result<Option<Current>, StepError> {
        let iam = cx.ctx().aws.iam(&self.base.account);
        let role = match iam.get_role().role_name(self.name()).send().await {
            Ok(o) => o.role,
            Err(e) => {
                let e = iam_error("GetRole")(e);
                if e.is_not_found() {
                    return Ok(None);
                }
                return Err(failed(e, &[]));
            }
        };
        let Some(role) = role else { return Ok(None) };
        let inline = match iam
            .get_role_policy()
            .role_name(self.name())
            .policy_name(self.policy_name())
            .send()
            .await
        {
            Ok(o) => Some(decode_document(o.policy_document())?),
            Err(e) => {
                let e = iam_error("GetRolePolicy")(e);
                if !e.is_not_found() {
                    return Err(failed(e, &[]));
                }
                None
            }
        };
        Ok(Some(Current {
            arn: role.arn().to_string(),
            trust: match role.assume_role_policy_document() {
                Some(d) => decode_document(d)?,
                None => json!({}),
            },
            inline,
        }))
    }
}

/// ferry's inline policy on a role of `spec`'s purpose (`cross_account`: the destination is
/// another account's).
pub fn role_policy(spec: &RoleSpec, cross_account: bool, destination_key: &str) -> Value {
    match &spec.purpose {
        RolePurpose::Replication => replication_policy(spec, cross_account, destination_key),
        RolePurpose::BatchReplication { report } => {
            let src = &spec.source_bucket;
            let reports = if report.prefix.is_empty() {
                format!("arn:aws:s3:::{}/*", report.bucket)
            } else {
                format!("arn:aws:s3:::{}/{}/*", report.bucket, report.prefix)
            };
            // S3 user guide, "Configuring an IAM role for S3 Batch Replication" (generated
            // manifest): the objects' access is the replication role's, not this one's.
            json!({ "Version": "2012-10-17", "Statement": [
                {
                    "Sid": "InitiateReplication",
                    "Effect": "Allow",
                    "Action": "s3:InitiateReplication",
                    "Resource": format!("arn:aws:s3:::{src}/*"),
                },
                {
                    "Sid": "GenerateManifest",
                    "Effect": "Allow",
                    "Action": ["s3:GetReplicationConfiguration", "s3:PutInventoryConfiguration"],
                    "Resource": format!("arn:aws:s3:::{src}"),
                },
                {
                    "Sid": "ManifestAndReport",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion"],
                    "Resource": reports,
                },
            ]})
        }
    }
}

/// The replication role's policy: replication reads on the source, replicate writes on
/// the destination, Decrypt on the source keys and Encrypt on the destination key, each
/// only through S3 in its region.
fn replication_policy(spec: &RoleSpec, cross: bool, destination_key: &str) -> Value {
    let src = &spec.source_bucket;
    let dst = &spec.destination_bucket;
    let mut writes = vec![
        "s3:ReplicateObject",
        "s3:ReplicateDelete",
        "s3:ReplicateTags",
    ];
    if cross {
        writes.push("s3:ObjectOwnerOverrideToBucketOwner");
    }
    let mut statements = vec![
        json!({
            "Sid": "SourceBucket",
            "Effect": "Allow",
            "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
            "Resource": format!("arn:aws:s3:::{src}"),
        }),
        json!({
            "Sid": "SourceObjects",
            "Effect": "Allow",
            "Action": [
                "s3:GetObjectVersionForReplication",
                "s3:GetObjectVersionAcl",
                "s3:GetObjectVersionTagging"
            ],
            "Resource": format!("arn:aws:s3:::{src}/*"),
        }),
        json!({
            "Sid": "DestinationObjects",
            "Effect": "Allow",
            "Action": writes,
            "Resource": format!("arn:aws:s3:::{dst}/*"),
        }),
    ];
    let source_keys: Vec<String> = spec.source_keys.iter().map(|k| k.to_string()).collect();
    if !source_keys.is_empty() {
        statements.push(json!({
            "Sid": "DecryptSource",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": source_keys,
            "Condition": { "StringEquals": {
                "kms:ViaService": format!("s3.{}.amazonaws.com", region_of(&spec.source_region))
            } },
        }));
    }
    statements.push(json!({
        "Sid": "EncryptDestination",
        "Effect": "Allow",
        "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
        "Resource": destination_key,
        "Condition": { "StringEquals": {
            "kms:ViaService": format!("s3.{}.amazonaws.com", region_of(&spec.destination_region))
        } },
    }));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

fn region_of(r: &Option<crate::ids::Region>) -> &str {
    r.as_ref().map(|r| r.as_str()).unwrap_or("")
}

/// The trust policy ferry gives a new role of this purpose.
pub fn trust_policy(purpose: &RolePurpose) -> Value {
    policy::merge(&json!({}), &[trust_statement(purpose)])
}

#[async_trait]
impl Step<Cx> for EnsureRole {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let account = self.spec.destination_account.as_str();
        let key = key_arn(cx, &self.spec.key, account, self.destination_region()).await?;
        let wanted = self.inline_policy(
            cx.ctx(),
            key.as_ref()
                .map(|k| k.as_str())
                .unwrap_or("(the destination key, once it exists)"),
        );
        let Some(now) = self.current(cx).await? else {
            let trust = trust_policy(&self.spec.purpose);
            let mut diff = vec![format!(
                "+ role {} trusting {}",
                self.name(),
                trusted(&self.spec.purpose).0
            )];
            diff.extend(policy::diff(&json!({}), &trust));
            diff.push(format!("+ inline policy {}:", self.policy_name()));
            diff.extend(policy::diff(&json!({}), &wanted));
            return Ok(Observation::Todo(change(
                Action::Create,
                diff,
                Todo::Nothing,
            )));
        };
        let trust = policy::merge(&now.trust, &[trust_statement(&self.spec.purpose)]);
        let service = trusted(&self.spec.purpose).0;
        let trust_ok = policy::same(&trust, &now.trust)
            || now.trust["Statement"].as_array().is_some_and(|l| {
                l.iter().any(|s| {
                    s["Effect"] == "Allow"
                        && s["Principal"]["Service"] == service
                        && s["Action"] == "sts:AssumeRole"
                })
            });
        let inline_ok = key.is_some()
            && now
                .inline
                .as_ref()
                .is_some_and(|p| policy::same(p, &wanted));
        if trust_ok && inline_ok {
            return Ok(Observation::Done(StepOutput::Role(RoleOutput {
                arn: now.arn,
            })));
        }
        let mut diff = Vec::new();
        if !trust_ok {
            diff.push("~ trust policy:".to_string());
            diff.extend(policy::diff(&now.trust, &trust));
        }
        if !inline_ok {
            diff.push(format!("~ inline policy {}:", self.policy_name()));
            diff.extend(policy::diff(
                now.inline.as_ref().unwrap_or(&json!({})),
                &wanted,
            ));
        }
        Ok(Observation::Todo(change(
            Action::Update,
            diff,
            Todo::Nothing,
        )))
    }

    fn intent(&self, _change: &Change) -> Value {
        json!({ "role": self.name(), "tags": self.spec.tags })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, _change: Change) -> Done {
        let account = self.spec.destination_account.as_str();
        let key = existing_key_arn(cx, &self.spec.key, account, self.destination_region()).await?;
        let iam = cx.ctx().aws.iam(&self.base.account);
        let arn = match self.current(cx).await? {
            None => {
                let trust = trust_policy(&self.spec.purpose);
                let mut req = iam
                    .create_role()
                    .role_name(self.name())
                    .assume_role_policy_document(trust.to_string())
                    .description(match self.spec.purpose {
                        RolePurpose::Replication => "S3 replication role made by ferry",
                        RolePurpose::BatchReplication { .. } => {
                            "S3 Batch Replication role made by ferry"
                        }
                    });
                for (k, v) in &self.spec.tags {
                    req = req.tags(
                        Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .expect("key and value set"),
                    );
                }
                // Sent once: a role made by a call whose answer was lost is found by name.
                let once = aws_sdk_iam::config::Builder::new()
                    .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled());
                match req.customize().config_override(once).send().await {
                    Ok(o) => o.role.map(|r| r.arn).ok_or_else(|| {
                        StepError::permanent("NoRole", "CreateRole returned no role")
                    })?,
                    Err(e) => {
                        let e = iam_error("CreateRole")(e);
                        if !e.is_code(&["EntityAlreadyExists"]) {
                            return Err(failed(e, &[]));
                        }
                        let me = AccountName::new(self.base.account.as_str());
                        role_arn(cx.ctx().account_id(&me), self.name())
                    }
                }
            }
            Some(now) => {
                let trust = policy::merge(&now.trust, &[trust_statement(&self.spec.purpose)]);
                if !policy::same(&trust, &now.trust) {
                    iam.update_assume_role_policy()
                        .role_name(self.name())
                        .policy_document(trust.to_string())
                        .send()
                        .await
                        .map_err(|e| failed(iam_error("UpdateAssumeRolePolicy")(e), &[]))?;
                }
                now.arn
            }
        };
        iam.put_role_policy()
            .role_name(self.name())
            .policy_name(self.policy_name())
            .policy_document(self.inline_policy(cx.ctx(), key.as_str()).to_string())
            .send()
            .await
            .map_err(|e| failed(iam_error("PutRolePolicy")(e), &["NoSuchEntity"]))?;
        Ok(Applied::Done(StepOutput::Role(RoleOutput { arn })))
    }
}

/// `iam.delete-role` (`ferry destroy`): ferry's inline policy taken off the role, and the role
/// deleted when ferry made it (its ferry tags) and nothing else is on it. A role that a
/// replication configuration still names (rules ferry did not add) is left as it is.
pub struct DeleteRole {
    base: Base,
    spec: RoleSpec,
    ferrys_rules: Vec<String>,
    ensure: EnsureRole,
}

/// What `iam.delete-role` found on the role.
struct OnRole {
    arn: String,
    ours: bool,
    inline: Vec<String>,
    attached: usize,
}

impl DeleteRole {
    pub fn new(step: &PlannedStep, spec: RoleDeletionSpec) -> Self {
        DeleteRole {
            base: Base::new(step, "iam:DeleteRole"),
            ensure: EnsureRole::new(step, spec.role.clone()),
            spec: spec.role,
            ferrys_rules: spec.ferrys_rules,
        }
    }

    async fn on_role(&self, cx: &StepCx<'_, Cx>) -> Result<Option<OnRole>, StepError> {
        let iam = cx.ctx().aws.iam(&self.base.account);
        let name = self.spec.name.as_str();
        let Some(current) = self.ensure.current(cx).await? else {
            return Ok(None);
        };
        let tags = iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .map_err(|e| failed(iam_error("ListRoleTags")(e), &[]))?;
        let has = |k: &str, v: &str| tags.tags().iter().any(|t| t.key() == k && t.value() == v);
        let ours = has("ferry:plan", &cx.ctx().plan)
            && has("ferry:migration", self.spec.migration.as_str());
        let inline = iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(|e| failed(iam_error("ListRolePolicies")(e), &[]))?
            .policy_names()
            .to_vec();
        let attached = iam
            .list_attached_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(|e| failed(iam_error("ListAttachedRolePolicies")(e), &[]))?
            .attached_policies()
            .len();
        Ok(Some(OnRole {
            arn: current.arn,
            ours,
            inline,
            attached,
        }))
    }

    /// Rules (not ferry's) of the source bucket's replication configuration that still use
    /// the role: then it stays.
    async fn still_used(&self, cx: &StepCx<'_, Cx>, arn: &str) -> Result<Vec<String>, StepError> {
        if !matches!(self.spec.purpose, RolePurpose::Replication) {
            return Ok(Vec::new());
        }
        let region = self
            .spec
            .source_region
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("");
        Ok(super::destroy_s3::replication_role(
            cx,
            &self.base.account,
            region,
            &self.spec.source_bucket,
        )
        .await?
        .filter(|(role, _)| role == arn)
        .map(|(_, rules)| rules)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !self.ferrys_rules.contains(r))
        .collect())
    }
}

#[async_trait]
impl Step<Cx> for DeleteRole {
    step_identity!();

    async fn observe(&self, cx: &StepCx<'_, Cx>) -> Observed {
        let name = self.spec.name.as_str();
        let done = |kept: Vec<String>| {
            Ok(Observation::Done(StepOutput::Removed(
                super::output::RemovedOutput {
                    removed: Vec::new(),
                    kept,
                },
            )))
        };
        let Some(on) = self.on_role(cx).await? else {
            return done(Vec::new());
        };
        let used = self.still_used(cx, &on.arn).await?;
        if !used.is_empty() {
            return done(vec![format!(
                "role {name}: kept, the replication rules {} of bucket {} still use it",
                used.join(", "),
                self.spec.source_bucket
            )]);
        }
        let policy = self.ensure.policy_name();
        let has_ours = on.inline.contains(&policy);
        let others = on.inline.iter().filter(|p| **p != policy).count() + on.attached;
        let mut diff = Vec::new();
        if has_ours {
            diff.push(format!("- inline policy {policy} of role {name}"));
        }
        let delete_role = on.ours && others == 0;
        if delete_role {
            diff.push(format!("- role {name} (made by ferry)"));
        }
        let kept = if !on.ours {
            vec![format!("role {name}: kept, ferry did not create it")]
        } else if others > 0 {
            vec![format!(
                "role {name}: kept, {others} policies ferry did not add are on it"
            )]
        } else {
            Vec::new()
        };
        if diff.is_empty() {
            return done(kept);
        }
        diff.extend(kept.iter().map(|k| format!("  {k}")));
        Ok(Observation::Todo(change(
            Action::Delete,
            diff,
            Todo::Resources(if delete_role {
                vec![name.to_string()]
            } else {
                Vec::new()
            }),
        )))
    }

    fn intent(&self, change: &Change) -> Value {
        json!({ "role": self.spec.name, "deleting_role": matches!(&change.todo, Todo::Resources(r) if !r.is_empty()) })
    }

    async fn apply(&self, cx: &StepCx<'_, Cx>, change: Change) -> Done {
        let iam = cx.ctx().aws.iam(&self.base.account);
        let name = self.spec.name.as_str();
        let policy = self.ensure.policy_name();
        cx.ctx().changing(&self.base.id_text);
        let mut removed = Vec::new();
        match iam
            .delete_role_policy()
            .role_name(name)
            .policy_name(&policy)
            .send()
            .await
            .map_err(iam_error("DeleteRolePolicy"))
        {
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(failed(e, &[])),
            Ok(_) => removed.push(format!("inline policy {policy}")),
        }
        if matches!(&change.todo, Todo::Resources(r) if !r.is_empty()) {
            match iam
                .delete_role()
                .role_name(name)
                .send()
                .await
                .map_err(iam_error("DeleteRole"))
            {
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(failed(e, &[])),
                Ok(_) => removed.push(format!("role {name}")),
            }
        }
        Ok(Applied::Done(StepOutput::Removed(
            super::output::RemovedOutput {
                removed,
                kept: Vec::new(),
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_decode_url_encoded_or_plain() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        assert_eq!(decode_document(plain).unwrap()["Version"], "2012-10-17");
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(decode_document(encoded).unwrap()["Version"], "2012-10-17");
        assert!(decode_document("%7Bnot").is_err());
    }

    #[test]
    fn role_arn_from_name_or_arn() {
        use crate::lookup::role_arn;
        assert_eq!(
            role_arn("111111111111", "r"),
            "arn:aws:iam::111111111111:role/r"
        );
        assert_eq!(
            role_arn("1", "arn:aws:iam::2:role/x/y"),
            "arn:aws:iam::2:role/x/y"
        );
    }
}
