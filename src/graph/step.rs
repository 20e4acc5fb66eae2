//! What one node of the graph does, as data: the step id, its kind, where it runs and the inputs
//! the AWS implementation needs. Pure: nothing here talks to AWS.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// One step kind per AWS operation family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum StepKind {
    #[serde(rename = "kms.create-key")]
    CreateKey,
    #[serde(rename = "kms.enable-key-rotation")]
    EnableKeyRotation,
    #[serde(rename = "kms.replicate-key")]
    ReplicateKey,
    #[serde(rename = "kms.merge-key-policy")]
    MergeKeyPolicy,
    #[serde(rename = "kms.grant-key-access")]
    GrantKeyAccess,
    #[serde(rename = "kms.revoke-key-access")]
    RevokeKeyAccess,
    #[serde(rename = "ec2.find-snapshots")]
    FindSnapshots,
    #[serde(rename = "ec2.find-images")]
    FindImages,
    #[serde(rename = "ec2.share-snapshot")]
    ShareSnapshot,
    #[serde(rename = "ec2.unshare-snapshot")]
    UnshareSnapshot,
    #[serde(rename = "ec2.share-image")]
    ShareImage,
    #[serde(rename = "ec2.unshare-image")]
    UnshareImage,
    #[serde(rename = "ec2.copy-snapshot")]
    CopySnapshot,
    #[serde(rename = "ec2.copy-image")]
    CopyImage,
    #[serde(rename = "s3.create-bucket")]
    CreateBucket,
    #[serde(rename = "s3.enable-versioning")]
    EnableVersioning,
    #[serde(rename = "s3.allow-replication-role")]
    AllowReplicationRole,
    #[serde(rename = "s3.put-replication")]
    PutReplication,
    #[serde(rename = "s3.backfill")]
    Backfill,
    #[serde(rename = "iam.ensure-role")]
    EnsureRole,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::CreateKey => "kms.create-key",
            StepKind::EnableKeyRotation => "kms.enable-key-rotation",
            StepKind::ReplicateKey => "kms.replicate-key",
            StepKind::MergeKeyPolicy => "kms.merge-key-policy",
            StepKind::GrantKeyAccess => "kms.grant-key-access",
            StepKind::RevokeKeyAccess => "kms.revoke-key-access",
            StepKind::FindSnapshots => "ec2.find-snapshots",
            StepKind::FindImages => "ec2.find-images",
            StepKind::ShareSnapshot => "ec2.share-snapshot",
            StepKind::UnshareSnapshot => "ec2.unshare-snapshot",
            StepKind::ShareImage => "ec2.share-image",
            StepKind::UnshareImage => "ec2.unshare-image",
            StepKind::CopySnapshot => "ec2.copy-snapshot",
            StepKind::CopyImage => "ec2.copy-image",
            StepKind::CreateBucket => "s3.create-bucket",
            StepKind::EnableVersioning => "s3.enable-versioning",
            StepKind::AllowReplicationRole => "s3.allow-replication-role",
            StepKind::PutReplication => "s3.put-replication",
            StepKind::Backfill => "s3.backfill",
            StepKind::EnsureRole => "iam.ensure-role",
        }
    }

    /// The AWS service a step of this kind talks to.
    pub fn service(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or("")
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step's API calls go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Scope {
    /// The plan's account name.
    pub account: String,
    /// `None` until resolved (an S3 source bucket's region is looked up); IAM is `global`.
    pub region: Option<String>,
}

/// Which resources a step acts on: one known id, or every resource a selector resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A single resource (a snapshot id, an AMI id, a key name, a bucket).
    One(String),
    /// Every resource of the migration's tag selector, expanded by the resolve stage.
    Tagged(BTreeMap<String, String>),
    /// Every source KMS key behind the migration's resources, found by the resolve stage.
    SourceKeys,
}

impl Target {
    pub fn is_expanded_later(&self) -> bool {
        !matches!(self, Target::One(_))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::One(id) => f.write_str(id),
            Target::Tagged(tags) => {
                let t: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "resources tagged {}", t.join(","))
            }
            Target::SourceKeys => f.write_str("the source KMS keys"),
        }
    }
}

/// A node of the step graph.
#[derive(Debug, Clone, Serialize)]
pub struct StepSpec {
    /// Stable across runs: `<owner>/<resource>/<action>`.
    pub id: String,
    pub kind: StepKind,
    pub scope: Scope,
    /// The plan element the step belongs to: `key.<name>` or a migration id.
    pub owner: String,
    pub target: Target,
    /// Inputs the AWS implementation needs beyond the target (destination key, tags, ...).
    pub params: BTreeMap<String, serde_json::Value>,
}
