//! The IAM permissions each step kind needs, scoped to resources where AWS allows it
//! (`ferry iam-policy`). Kept beside the steps: the calls they make are listed here.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::graph::{PlanGraph, PlannedStep, StepKind, StepSpec, Target};
use crate::plan::KeyAccess;
use crate::plan::Plan;

/// One statement's worth: actions on resources, maybe under a condition.
struct Need {
    actions: &'static [&'static str],
    resources: Vec<String>,
    condition: Option<Value>,
}

fn need(actions: &'static [&'static str], resources: Vec<String>) -> Need {
    Need {
        actions,
        resources,
        condition: None,
    }
}

/// Deleting or deregistering is limited to what this plan made (its `ferry:plan` tag).
fn own(actions: &'static [&'static str], resources: Vec<String>, plan: &str) -> Need {
    Need {
        actions,
        resources,
        condition: Some(json!({ "StringEquals": { "aws:ResourceTag/ferry:plan": plan } })),
    }
}

/// KMS actions EBS uses on the caller's behalf to read a source and write an encrypted copy.
const EBS_KMS: &[&str] = &[
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
];

fn needs(
    step: &PlannedStep,
    account: &str,
    plan: &str,
    id_of: &dyn Fn(&str) -> String,
) -> Vec<Need> {
    let region = step
        .scope
        .region
        .as_ref()
        .map(|r| r.as_str())
        .unwrap_or("*");
    let keys = format!("arn:aws:kms:{region}:{account}:key/*");
    let one = match &step.target {
        Target::One(t) => Some(t.as_str()),
        _ => None,
    };
    let snapshots = |r: &str| match one.filter(|t| t.starts_with("snap-")) {
        Some(id) => format!("arn:aws:ec2:{r}::snapshot/{id}"),
        None => format!("arn:aws:ec2:{r}::snapshot/*"),
    };
    let images = |r: &str| match one.filter(|t| t.starts_with("ami-")) {
        Some(id) => format!("arn:aws:ec2:{r}::image/{id}"),
        None => format!("arn:aws:ec2:{r}::image/*"),
    };
    let any = || vec!["*".to_string()];
    // EBS uses the destination key and the source keys (in the source account and region).
    let copy_keys = || {
        let (src_account, src_region) = match &step.spec {
            StepSpec::CopySnapshot(c) => {
                (id_of(c.source_account.as_str()), c.source_region.as_str())
            }
            StepSpec::CopyImage(c) => (id_of(c.source_account.as_str()), c.source_region.as_str()),
            StepSpec::CopyDbSnapshot(c) => {
                (id_of(c.source.account.as_str()), c.source.region.as_str())
            }
            _ => ("*".to_string(), "*"),
        };
        let mut k = vec![
            keys.clone(),
            format!("arn:aws:kms:{src_region}:{src_account}:key/*"),
        ];
        k.dedup();
        k
    };
    // A copy is authorized on its source too (AWS Storage Blog, "Enhancing resource-level
    // permissions for copying Amazon EBS snapshots"; EC2 user guide, copy-ami-permissions:
    // CopyImage on the source AMI since October 2024): any snapshot or image of the source
    // region, as the source may be an intermediate copy. A copy within its region is covered
    // by the statement for the new resource.
    let copy_source = match &step.spec {
        StepSpec::CopySnapshot(c) if c.source_region.as_str() != region => Some(need(
            &["ec2:CopySnapshot"],
            vec![format!(
                "arn:aws:ec2:{}::snapshot/*",
                c.source_region.as_str()
            )],
        )),
        StepSpec::CopyImage(c) if c.source_region.as_str() != region => Some(need(
            &["ec2:CopyImage"],
            vec![format!("arn:aws:ec2:{}::image/*", c.source_region.as_str())],
        )),
        _ => None,
    };
    let mut out = match step.kind() {
        StepKind::CreateKey => vec![
            // CreateKey cannot be scoped to a resource: the key does not exist yet.
            need(&["kms:CreateKey", "kms:ListKeys", "kms:ListAliases"], any()),
            need(
                &[
                    "kms:DescribeKey",
                    "kms:TagResource",
                    "kms:ListResourceTags",
                    "kms:CreateAlias",
                ],
                vec![keys.clone()],
            ),
            need(
                &["kms:CreateAlias"],
                vec![format!(
                    "arn:aws:kms:{region}:{account}:{}",
                    one.unwrap_or("alias/*")
                )],
            ),
        ],
        StepKind::EnableKeyRotation => vec![need(
            &[
                "kms:DescribeKey",
                "kms:GetKeyRotationStatus",
                "kms:EnableKeyRotation",
            ],
            vec![keys],
        )],
        StepKind::ReplicateKey => {
            let primary = match &step.spec {
                StepSpec::ReplicateKey(r) => r.primary_region.as_str(),
                _ => "*",
            };
            vec![
                need(
                    &["kms:ReplicateKey", "kms:DescribeKey"],
                    vec![format!("arn:aws:kms:{primary}:{account}:key/*")],
                ),
                need(&["kms:CreateKey", "kms:ListAliases"], any()),
                need(
                    &["kms:DescribeKey", "kms:TagResource", "kms:CreateAlias"],
                    vec![keys],
                ),
                need(
                    &["kms:CreateAlias"],
                    vec![format!(
                        "arn:aws:kms:{region}:{account}:{}",
                        one.unwrap_or("alias/*")
                    )],
                ),
            ]
        }
        StepKind::MergeKeyPolicy => vec![need(
            &["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"],
            vec![keys],
        )],
        StepKind::GrantKeyAccess | StepKind::RevokeKeyAccess => {
            let key = one.map(str::to_string).unwrap_or(keys);
            let grant = matches!(
                &step.spec,
                StepSpec::GrantKeyAccess(a) | StepSpec::RevokeKeyAccess(a) if a.how == KeyAccess::Grant
            );
            if grant {
                vec![need(
                    &["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
                    vec![key],
                )]
            } else if step.kind() == StepKind::RevokeKeyAccess {
                // Taking access back also revokes the grants the other account's copies left
                // on the key (they are listed to find them).
                vec![need(
                    &[
                        "kms:GetKeyPolicy",
                        "kms:PutKeyPolicy",
                        "kms:ListGrants",
                        "kms:RevokeGrant",
                    ],
                    vec![key],
                )]
            } else {
                vec![need(&["kms:GetKeyPolicy", "kms:PutKeyPolicy"], vec![key])]
            }
        }
        StepKind::FindSnapshots => vec![need(&["ec2:DescribeSnapshots"], any())],
        StepKind::FindImages => vec![need(
            &["ec2:DescribeImages", "ec2:DescribeSnapshots"],
            any(),
        )],
        // What is already shared is listed with DescribeSnapshots / DescribeImages.
        StepKind::ShareSnapshot | StepKind::UnshareSnapshot => vec![
            need(&["ec2:ModifySnapshotAttribute"], vec![snapshots(region)]),
            need(&["ec2:DescribeSnapshots"], any()),
        ],
        StepKind::ShareImage | StepKind::UnshareImage => vec![
            need(&["ec2:ModifyImageAttribute"], vec![images(region)]),
            need(&["ec2:DescribeImages"], any()),
        ],
        StepKind::CopySnapshot => vec![
            need(
                &["ec2:CopySnapshot", "ec2:CreateTags"],
                vec![format!("arn:aws:ec2:{region}::snapshot/*")],
            ),
            need(&["ec2:DescribeSnapshots"], any()),
            // Only ferry's own failed copies are deleted.
            own(
                &["ec2:DeleteSnapshot"],
                vec![format!("arn:aws:ec2:{region}::snapshot/*")],
                plan,
            ),
            need(EBS_KMS, copy_keys()),
        ],
        StepKind::CopyImage => vec![
            need(
                &["ec2:CopyImage", "ec2:CreateTags"],
                vec![
                    format!("arn:aws:ec2:{region}::image/*"),
                    format!("arn:aws:ec2:{region}::snapshot/*"),
                ],
            ),
            need(&["ec2:DescribeImages", "ec2:DescribeSnapshots"], any()),
            own(
                &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
                vec![
                    format!("arn:aws:ec2:{region}::image/*"),
                    format!("arn:aws:ec2:{region}::snapshot/*"),
                ],
                plan,
            ),
            need(EBS_KMS, copy_keys()),
        ],
        StepKind::CreateBucket => vec![need(
            &[
                "s3:CreateBucket",
                "s3:PutEncryptionConfiguration",
                "s3:PutBucketTagging",
                "s3:GetBucketTagging",
                "s3:GetEncryptionConfiguration",
            ],
            vec![bucket_arn(step)],
        )],
        StepKind::EnableVersioning => vec![need(
            &["s3:GetBucketVersioning", "s3:PutBucketVersioning"],
            vec![bucket_arn(step)],
        )],
        StepKind::AllowReplicationRole => vec![need(
            &["s3:GetBucketPolicy", "s3:PutBucketPolicy"],
            vec![bucket_arn(step)],
        )],
        StepKind::PutReplication => vec![
            need(
                &[
                    "s3:GetReplicationConfiguration",
                    "s3:PutReplicationConfiguration",
                    "s3:GetBucketLocation",
                ],
                vec![bucket_arn(step)],
            ),
            need(
                &["iam:PassRole"],
                vec![format!("arn:aws:iam::{account}:role/*")],
            ),
        ],
        StepKind::Backfill => {
            let dst = match &step.spec {
                StepSpec::Backfill(b) => b.destination_bucket.as_str(),
                _ => "*",
            };
            let src = bucket_arn(step);
            vec![
                // The source is listed by version and copied by version id.
                need(&["s3:ListBucketVersions"], vec![src.clone()]),
                need(&["s3:ListBucket"], vec![format!("arn:aws:s3:::{dst}")]),
                need(
                    &[
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:GetObjectTagging",
                        "s3:GetObjectVersionTagging",
                    ],
                    vec![format!("{src}/*")],
                ),
                // GetObject on the destination: HeadObject, to see whether a copy whose answer
                // was lost landed.
                // Multipart copies of big objects: an interrupted one is aborted, never left to
                // bill.
                need(
                    &[
                        "s3:PutObject",
                        "s3:PutObjectTagging",
                        "s3:GetObject",
                        "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts",
                    ],
                    vec![format!("arn:aws:s3:::{dst}/*")],
                ),
                need(
                    &["s3:ListBucketMultipartUploads"],
                    vec![format!("arn:aws:s3:::{dst}")],
                ),
                need(
                    &["kms:Decrypt", "kms:GenerateDataKey"],
                    vec![format!("arn:aws:kms:*:{account}:key/*")],
                ),
            ]
        }
        StepKind::BatchReplication => {
            let (role, report) = match &step.spec {
                StepSpec::BatchReplication(b) => (
                    match &b.role {
                        crate::graph::RoleRef::Name(n) => {
                            format!("arn:aws:iam::{account}:role/{n}")
                        }
                        crate::graph::RoleRef::Arn(a) => a.clone(),
                    },
                    if b.report.prefix.is_empty() {
                        format!("arn:aws:s3:::{}/*", b.report.bucket)
                    } else {
                        format!("arn:aws:s3:::{}/{}/*", b.report.bucket, b.report.prefix)
                    },
                ),
                _ => ("*".into(), "*".into()),
            };
            vec![
                // CreateJob and ListJobs take no resource (Service Authorization Reference,
                // Amazon S3); DescribeJob takes the job.
                need(&["s3:CreateJob", "s3:ListJobs"], any()),
                need(
                    &["s3:DescribeJob"],
                    vec![format!("arn:aws:s3:{region}:{account}:job/*")],
                ),
                need(&["iam:PassRole"], vec![role]),
                // The completion report, read when the job ends.
                need(&["s3:GetObject"], vec![report]),
                // The resolve stage's sample of the source, for the estimate.
                need(&["s3:ListBucketVersions"], vec![bucket_arn(step)]),
            ]
        }
        StepKind::VerifyReplication => {
            let (dst, dst_account) = match &step.spec {
                StepSpec::VerifyReplication(v) => (
                    v.destination_bucket.as_str(),
                    v.destination_account.as_str(),
                ),
                _ => ("*", ""),
            };
            let src = bucket_arn(step);
            let mut needs = vec![
                need(&["s3:GetReplicationConfiguration"], vec![src.clone()]),
                // The canary: written, read for its status, deleted with its versions.
                need(
                    &[
                        "s3:PutObject",
                        "s3:PutObjectTagging",
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:DeleteObject",
                        "s3:DeleteObjectVersion",
                    ],
                    vec![format!("{src}/*")],
                ),
                need(&["s3:ListBucketVersions"], vec![src]),
                // The canary is written under the source bucket's default key.
                need(
                    &["kms:GenerateDataKey", "kms:Decrypt"],
                    vec![format!("arn:aws:kms:*:{account}:key/*")],
                ),
                // Explaining a failure: the role's policies and the replica key's.
                need(
                    &[
                        "iam:ListRolePolicies",
                        "iam:GetRolePolicy",
                        "iam:ListAttachedRolePolicies",
                        "iam:GetPolicy",
                        "iam:GetPolicyVersion",
                    ],
                    vec![
                        format!("arn:aws:iam::{account}:role/*"),
                        format!("arn:aws:iam::{account}:policy/*"),
                    ],
                ),
            ];
            let replica = need(
                &[
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                    "s3:ListBucketVersions",
                ],
                vec![
                    format!("arn:aws:s3:::{dst}/*"),
                    format!("arn:aws:s3:::{dst}"),
                ],
            );
            // The replica is read and deleted as the destination account; the same account
            // here.
            if dst_account == step.scope.account.as_str() {
                needs.push(replica);
                needs.push(need(
                    &["kms:GetKeyPolicy"],
                    vec![format!("arn:aws:kms:*:{account}:key/*")],
                ));
            }
            needs
        }
        StepKind::PruneCopies => vec![
            need(
                &[
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                ],
                any(),
            ),
            // Only this plan's copies are deleted (AMI copies: deregistered).
            own(
                &["ec2:DeleteSnapshot", "ec2:DeregisterImage"],
                vec![
                    format!("arn:aws:ec2:{region}::snapshot/*"),
                    format!("arn:aws:ec2:{region}::image/*"),
                ],
                plan,
            ),
        ],
        // Retention's and destroy's deletes of RDS copies.
        StepKind::PruneDbCopies | StepKind::DeleteDbCopies => {
            let kind = match &step.spec {
                StepSpec::PruneCopies(p) => match p.what {
                    crate::graph::Pruned::DbSnapshots(k) => k,
                    crate::graph::Pruned::Snapshots | crate::graph::Pruned::Images => {
                        crate::ids::DbKind::Instance
                    }
                },
                StepSpec::DeleteCopies(d) => match d.what {
                    crate::graph::Copied::DbSnapshots(k) => k,
                    _ => crate::ids::DbKind::Instance,
                },
                _ => crate::ids::DbKind::Instance,
            };
            let on = vec![format!(
                "arn:aws:rds:{region}:{account}:{}:*",
                kind.arn_type()
            )];
            let (describe, delete): (&'static [&'static str], &'static [&'static str]) = match kind
            {
                crate::ids::DbKind::Instance => {
                    (&["rds:DescribeDBSnapshots"], &["rds:DeleteDBSnapshot"])
                }
                crate::ids::DbKind::Cluster => (
                    &["rds:DescribeDBClusterSnapshots"],
                    &["rds:DeleteDBClusterSnapshot"],
                ),
            };
            // Only this plan's copies are deleted.
            vec![need(describe, any()), own(delete, on, plan)]
        }
        StepKind::FindDbSnapshots => vec![need(
            &["rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots"],
            any(),
        )],
        StepKind::CopyDbSnapshot => {
            let (kind, source, option_group) = match &step.spec {
                StepSpec::CopyDbSnapshot(c) => (
                    c.kind,
                    format!(
                        "arn:aws:rds:{}:{}:{}:*",
                        c.source.region,
                        id_of(c.source.account.as_str()),
                        c.kind.arn_type()
                    ),
                    c.option_group.clone(),
                ),
                _ => (crate::ids::DbKind::Instance, "*".into(), None),
            };
            let (copy, delete, describe): (&'static [&'static str], _, _) = match kind {
                crate::ids::DbKind::Instance => (
                    &["rds:CopyDBSnapshot", "rds:AddTagsToResource"],
                    &["rds:DeleteDBSnapshot"][..],
                    &["rds:DescribeDBSnapshots"][..],
                ),
                crate::ids::DbKind::Cluster => (
                    &["rds:CopyDBClusterSnapshot", "rds:AddTagsToResource"],
                    &["rds:DeleteDBClusterSnapshot"][..],
                    &["rds:DescribeDBClusterSnapshots"][..],
                ),
            };
            let target = format!("arn:aws:rds:{region}:{account}:{}:*", kind.arn_type());
            let mut on = vec![target.clone(), source];
            on.dedup();
            if let Some(og) = option_group {
                on.push(format!("arn:aws:rds:{region}:{account}:og:{og}"));
            }
            vec![
                need(copy, on),
                need(describe, any()),
                // Only ferry's own failed copies are deleted.
                own(delete, vec![target], plan),
                // RDS, like EBS, uses the keys through grants on the caller's behalf.
                need(EBS_KMS, copy_keys()),
            ]
        }
        StepKind::ShareDbSnapshot | StepKind::UnshareDbSnapshot => {
            let kind = match &step.spec {
                StepSpec::ShareDbSnapshot(s) | StepSpec::UnshareDbSnapshot(s) => s.kind,
                _ => crate::ids::DbKind::Instance,
            };
            let on = vec![format!(
                "arn:aws:rds:{region}:{account}:{}:*",
                kind.arn_type()
            )];
            let actions: &'static [&'static str] = match kind {
                crate::ids::DbKind::Instance => &[
                    "rds:ModifyDBSnapshotAttribute",
                    "rds:DescribeDBSnapshotAttributes",
                ],
                crate::ids::DbKind::Cluster => &[
                    "rds:ModifyDBClusterSnapshotAttribute",
                    "rds:DescribeDBClusterSnapshotAttributes",
                ],
            };
            vec![need(actions, on)]
        }
        StepKind::DeleteDbSnapshot => {
            let kind = match &step.spec {
                StepSpec::DeleteDbSnapshot(d) => d.kind,
                _ => crate::ids::DbKind::Instance,
            };
            let on = vec![format!(
                "arn:aws:rds:{region}:{account}:{}:*",
                kind.arn_type()
            )];
            let delete: &'static [&'static str] = match kind {
                crate::ids::DbKind::Instance => &["rds:DeleteDBSnapshot"],
                crate::ids::DbKind::Cluster => &["rds:DeleteDBClusterSnapshot"],
            };
            vec![own(delete, on, plan)]
        }
        StepKind::EnsureRole => vec![need(
            &[
                "iam:GetRole",
                "iam:CreateRole",
                "iam:TagRole",
                "iam:UpdateAssumeRolePolicy",
                "iam:GetRolePolicy",
                "iam:PutRolePolicy",
            ],
            vec![format!(
                "arn:aws:iam::{account}:role/{}",
                one.unwrap_or("*")
            )],
        )],
        // `ferry destroy`'s steps (`ferry iam-policy --destroy`).
        StepKind::RemoveKeyPolicyStatements => vec![need(
            &["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"],
            vec![keys],
        )],
        StepKind::ScheduleKeyDeletion => vec![
            need(
                &["kms:DescribeKey", "kms:ListResourceTags"],
                vec![format!("arn:aws:kms:*:{account}:key/*")],
            ),
            // Only the keys this plan created (their ferry:plan tag).
            own(&["kms:ScheduleKeyDeletion"], vec![keys], plan),
            need(
                &["kms:DeleteAlias"],
                vec![
                    format!(
                        "arn:aws:kms:{region}:{account}:{}",
                        one.unwrap_or("alias/*")
                    ),
                    format!("arn:aws:kms:{region}:{account}:key/*"),
                ],
            ),
            // What the key still encrypts.
            need(
                &[
                    "ec2:DescribeSnapshots",
                    "rds:DescribeDBSnapshots",
                    "rds:DescribeDBClusterSnapshots",
                    "s3:ListBucket",
                ],
                any(),
            ),
        ],
        StepKind::DeleteSnapshotCopies | StepKind::DeleteIntermediate => vec![
            need(&["ec2:DescribeSnapshots", "ec2:DescribeImages"], any()),
            own(
                &["ec2:DeleteSnapshot"],
                vec![format!("arn:aws:ec2:{region}::snapshot/*")],
                plan,
            ),
        ],
        StepKind::DeregisterImageCopies => vec![
            need(
                &[
                    "ec2:DescribeImages",
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeInstances",
                ],
                any(),
            ),
            own(
                &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
                vec![
                    format!("arn:aws:ec2:{region}::image/*"),
                    format!("arn:aws:ec2:{region}::snapshot/*"),
                ],
                plan,
            ),
        ],
        StepKind::RemoveReplication => vec![need(
            &[
                "s3:GetReplicationConfiguration",
                "s3:PutReplicationConfiguration",
            ],
            vec![bucket_arn(step)],
        )],
        StepKind::RemoveBucketPolicy => vec![need(
            &[
                "s3:GetBucketPolicy",
                "s3:PutBucketPolicy",
                "s3:DeleteBucketPolicy",
            ],
            vec![bucket_arn(step)],
        )],
        StepKind::DeleteBucket => vec![need(
            &[
                "s3:GetBucketTagging",
                "s3:ListBucketVersions",
                "s3:DeleteBucket",
            ],
            vec![bucket_arn(step)],
        )],
        StepKind::DeleteRole => vec![
            need(
                &[
                    "iam:GetRole",
                    "iam:GetRolePolicy",
                    "iam:ListRoleTags",
                    "iam:ListRolePolicies",
                    "iam:ListAttachedRolePolicies",
                    "iam:DeleteRolePolicy",
                    "iam:DeleteRole",
                ],
                vec![format!(
                    "arn:aws:iam::{account}:role/{}",
                    one.unwrap_or("*")
                )],
            ),
            need(&["s3:GetReplicationConfiguration"], any()),
        ],
    };
    out.extend(copy_source);
    out
}

/// The bucket a step acts on (the source bucket of a backfill), as an ARN.
fn bucket_arn(step: &PlannedStep) -> String {
    let bucket = match &step.spec {
        StepSpec::CreateBucket(b) => b.bucket.as_str(),
        StepSpec::EnableVersioning(b) => b.bucket.as_str(),
        StepSpec::AllowReplicationRole(b) => b.bucket.as_str(),
        StepSpec::PutReplication(b) => b.bucket.as_str(),
        StepSpec::RemoveReplication(b) => b.bucket.as_str(),
        StepSpec::RemoveBucketPolicy(b) => b.bucket.as_str(),
        StepSpec::DeleteBucket(b) => b.bucket.as_str(),
        StepSpec::Backfill(b) => b.source_bucket.as_str(),
        StepSpec::BatchReplication(b) => b.source_bucket.as_str(),
        StepSpec::VerifyReplication(v) => v.source_bucket.as_str(),
        _ => "*",
    };
    format!("arn:aws:s3:::{bucket}")
}

/// Reading live state before any change (the resolve stage), in every account.
const RESOLVE: &[&str] = &[
    "kms:DescribeKey",
    "ec2:DescribeSnapshots",
    "ec2:DescribeImages",
    "s3:GetBucketLocation",
    "s3:GetEncryptionConfiguration",
];

/// Reading RDS snapshots and the manual snapshot quota, for plans with RDS migrations.
const RESOLVE_RDS: &[&str] = &[
    "rds:DescribeDBSnapshots",
    "rds:DescribeDBClusterSnapshots",
    "rds:DescribeAccountAttributes",
    "rds:DescribeOptionGroups",
];

/// Per plan account: the least-privilege policy for the identity ferry runs as there.
pub fn iam_policies(plan: &Plan, graph: &PlanGraph) -> Value {
    type Grouped = BTreeMap<(Vec<String>, String), Vec<&'static str>>;
    let mut per_account: BTreeMap<String, Grouped> = BTreeMap::new();
    let account_id = |name: &str| {
        plan.accounts
            .iter()
            .find(|a| a.name.value == name)
            .and_then(|a| a.value.id.as_ref())
            .map(|i| i.value.clone())
            .unwrap_or_else(|| "*".into())
    };
    let rds = plan.migrations.iter().any(|m| {
        matches!(
            m,
            crate::plan::Migration::DbSnapshotCopy(_)
                | crate::plan::Migration::DbClusterSnapshotCopy(_)
        )
    });
    for a in &plan.accounts {
        let reads = per_account
            .entry(a.name.value.clone())
            .or_default()
            .entry((vec!["*".into()], String::new()))
            .or_default();
        reads.extend(RESOLVE);
        if rds {
            reads.extend(RESOLVE_RDS);
        }
    }
    for step in graph.in_order() {
        let id = account_id(step.scope.account.as_str());
        for n in needs(step, &id, &plan.name.value, &account_id) {
            let condition = n.condition.map(|c| c.to_string()).unwrap_or_default();
            let actions = per_account
                .entry(step.scope.account.to_string())
                .or_default()
                .entry((n.resources, condition))
                .or_default();
            for a in n.actions {
                if !actions.contains(a) {
                    actions.push(a);
                }
            }
        }
    }
    // A canary's replica in another account is read and deleted as that account, and the
    // replica key's policy read there when the canary fails.
    for step in graph.in_order() {
        let StepSpec::VerifyReplication(v) = &step.spec else {
            continue;
        };
        let dst = v.destination_account.as_str();
        if dst == step.scope.account.as_str() {
            continue;
        }
        let id = account_id(dst);
        let grouped = per_account.entry(dst.to_string()).or_default();
        for (actions, resources) in [
            (
                &[
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                    "s3:ListBucketVersions",
                ][..],
                vec![
                    format!("arn:aws:s3:::{}/*", v.destination_bucket),
                    format!("arn:aws:s3:::{}", v.destination_bucket),
                ],
            ),
            (
                &["kms:GetKeyPolicy"][..],
                vec![format!("arn:aws:kms:*:{id}:key/*")],
            ),
        ] {
            let list = grouped.entry((resources, String::new())).or_default();
            for a in actions {
                if !list.contains(a) {
                    list.push(a);
                }
            }
        }
    }
    // The roles ferry makes and keeps up to date (a replication role, a Batch Operations
    // role): their trust and their inline policy, for review before a run.
    let mut roles: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for step in graph.in_order() {
        let StepSpec::EnsureRole(r) = &step.spec else {
            continue;
        };
        // Two plan accounts are two AWS accounts (the checks refuse a shared id).
        let cross = r.destination_account.as_str() != step.scope.account.as_str();
        let key = format!("<the ARN of {}>", r.key.shown);
        roles
            .entry(step.scope.account.to_string())
            .or_default()
            .insert(
                r.name.clone(),
                json!({
                    "trust": crate::steps::iam::trust_policy(&r.purpose),
                    "inline_policy": {
                        "name": format!("ferry-{}", r.migration),
                        "document": crate::steps::iam::role_policy(r, cross, &key),
                    },
                }),
            );
    }
    let mut out = serde_json::Map::new();
    for (account, by_resource) in per_account {
        let statements: Vec<Value> = by_resource
            .into_iter()
            .enumerate()
            .map(|(i, ((resources, condition), mut actions))| {
                actions.sort();
                actions.dedup();
                let mut st = json!({ "Sid": format!("Ferry{i}"), "Effect": "Allow", "Action": actions, "Resource": resources });
                if let Ok(c) = serde_json::from_str::<Value>(&condition) {
                    st["Condition"] = c;
                }
                st
            })
            .collect();
        let mut entry = json!({
            "account_id": account_id(&account),
            "policy": { "Version": "2012-10-17", "Statement": statements },
        });
        if let Some(r) = roles.remove(&account) {
            entry["roles_ferry_makes"] = Value::Object(r);
        }
        if let Some(role) = plan
            .accounts
            .iter()
            .find(|a| a.name.value == account)
            .and_then(|a| a.value.role_arn.as_ref())
        {
            entry["assumed_role"] = json!(role.value);
            entry["caller_needs"] =
                json!({ "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role.value });
        }
        out.insert(account, entry);
    }
    Value::Object(out)
}
