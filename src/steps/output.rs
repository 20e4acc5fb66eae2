//! What each kind of step hands on when it is done: typed here, JSON only in the journal and
//! the report. The JSON of each is what earlier versions of ferry journaled, so a resumed run
//! of an older version reads its outputs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::StepKind;
use crate::ids::KeyArn;

use super::KeptCopy;

/// A done step's output, by kind of step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StepOutput {
    /// create-key, replicate-key.
    Key(KeyOutput),
    /// enable-key-rotation.
    Rotation(RotationOutput),
    /// merge-key-policy.
    KeyPolicy(KeyPolicyOutput),
    /// grant-key-access, revoke-key-access.
    KeyAccess(KeyAccessOutput),
    /// share-*, unshare-*.
    Share(ShareOutput),
    SnapshotCopy(SnapshotCopyOutput),
    ImageCopy(ImageCopyOutput),
    /// create-bucket, enable-versioning, allow-replication-role, put-replication.
    Bucket(BucketOutput),
    Backfill(BackfillOutput),
    BatchJob(BatchJobOutput),
    Verified(VerifyOutput),
    Role(RoleOutput),
    /// rds.copy-snapshot.
    DbSnapshotCopy(DbSnapshotCopyOutput),
    /// rds.delete-snapshot.
    DbSnapshotDeleted(DbDeleteOutput),
    /// ec2.prune-copies.
    Pruned(PruneOutput),
    /// What `ferry destroy`'s steps removed, and what they kept (with why).
    Removed(RemovedOutput),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyOutput {
    pub key_id: String,
    pub arn: KeyArn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationOutput {
    pub key_id: String,
    pub rotation: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPolicyOutput {
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAccessOutput {
    /// Whether this step added the statement or grant (only then does its revoke take it back).
    pub access_added_by_ferry: bool,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareOutput {
    /// The resources this step shared (its unshare takes back exactly these).
    pub added_by_ferry: Vec<String>,
    /// An unshare: the resources it took back (no longer ferry's: shared again later, by
    /// someone else, they are theirs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken_back: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCopyOutput {
    pub snapshot_id: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Copies of the same source made earlier under other keys, kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptCopy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageCopyOutput {
    pub image_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptCopy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketOutput {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillOutput {
    pub copied: u64,
    #[serde(default)]
    pub bytes: u64,
    pub present: u64,
    #[serde(default)]
    pub seconds: f64,
    /// Objects deleted between the listing and their copy, and the first few keys.
    #[serde(default)]
    pub gone: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone_keys: Vec<String>,
}

/// An S3 Batch Replication job that ran to its end with every task succeeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchJobOutput {
    pub job_id: String,
    pub tasks: u64,
    pub succeeded: u64,
    #[serde(default)]
    pub failed: u64,
    /// Where its completion report is (`s3://bucket/prefix/job-<id>/`).
    #[serde(default)]
    pub report: String,
}

/// A canary object replicated under the replica key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyOutput {
    /// What was proven: the replication configuration's role and ferry's rule, hashed. A later
    /// run with the same fingerprint need not prove it again.
    pub fingerprint: String,
    pub canary: String,
    #[serde(default)]
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleOutput {
    pub arn: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbSnapshotCopyOutput {
    /// The copy's identifier and ARN.
    pub db_snapshot: String,
    pub arn: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// A manual copy made only to share an automated source (removed with `revoke_after`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intermediate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneOutput {
    /// The copies retention deleted.
    pub deleted: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemovedOutput {
    /// What the step deleted, took back or scheduled for deletion.
    pub removed: Vec<String>,
    /// What it left, each with the reason (a copy whose source is gone, a bucket not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbDeleteOutput {
    /// The snapshot ferry removed (or found gone).
    pub deleted: String,
}

impl StepOutput {
    /// Reads the journaled output of a step of `kind`; `None` if it is not of that kind's shape
    /// (then the step is observed again, which is always safe).
    pub fn from_journal(kind: StepKind, v: Value) -> Option<StepOutput> {
        use StepKind::*;
        let out = match kind {
            CreateKey | ReplicateKey => StepOutput::Key(serde_json::from_value(v).ok()?),
            EnableKeyRotation => StepOutput::Rotation(serde_json::from_value(v).ok()?),
            MergeKeyPolicy => StepOutput::KeyPolicy(serde_json::from_value(v).ok()?),
            GrantKeyAccess | RevokeKeyAccess => {
                StepOutput::KeyAccess(serde_json::from_value(v).ok()?)
            }
            ShareSnapshot | UnshareSnapshot | ShareImage | UnshareImage => {
                StepOutput::Share(serde_json::from_value(v).ok()?)
            }
            CopySnapshot => StepOutput::SnapshotCopy(serde_json::from_value(v).ok()?),
            CopyImage => StepOutput::ImageCopy(serde_json::from_value(v).ok()?),
            CreateBucket | EnableVersioning | AllowReplicationRole | PutReplication => {
                StepOutput::Bucket(serde_json::from_value(v).ok()?)
            }
            Backfill => StepOutput::Backfill(serde_json::from_value(v).ok()?),
            BatchReplication => StepOutput::BatchJob(serde_json::from_value(v).ok()?),
            VerifyReplication => StepOutput::Verified(serde_json::from_value(v).ok()?),
            EnsureRole => StepOutput::Role(serde_json::from_value(v).ok()?),
            CopyDbSnapshot => StepOutput::DbSnapshotCopy(serde_json::from_value(v).ok()?),
            ShareDbSnapshot | UnshareDbSnapshot => {
                StepOutput::Share(serde_json::from_value(v).ok()?)
            }
            DeleteDbSnapshot => StepOutput::DbSnapshotDeleted(serde_json::from_value(v).ok()?),
            PruneCopies | PruneDbCopies => StepOutput::Pruned(serde_json::from_value(v).ok()?),
            RemoveKeyPolicyStatements => StepOutput::KeyPolicy(serde_json::from_value(v).ok()?),
            ScheduleKeyDeletion
            | DeleteSnapshotCopies
            | DeregisterImageCopies
            | DeleteDbCopies
            | RemoveReplication
            | RemoveBucketPolicy
            | DeleteBucket
            | DeleteRole
            | DeleteIntermediate => StepOutput::Removed(serde_json::from_value(v).ok()?),
            FindSnapshots | FindImages | FindDbSnapshots => return None,
        };
        Some(out)
    }

    /// The key a key step made or found.
    pub fn key_arn(&self) -> Option<&KeyArn> {
        match self {
            StepOutput::Key(k) => Some(&k.arn),
            _ => None,
        }
    }

    /// What a run made, for its summary: a copy's id, a key's ARN, a role's ARN.
    pub fn made(&self) -> Option<String> {
        match self {
            // An intermediate copy that was not needed made nothing.
            StepOutput::SnapshotCopy(c) if c.snapshot_id.is_empty() => None,
            StepOutput::SnapshotCopy(c) => Some(c.snapshot_id.clone()),
            StepOutput::ImageCopy(c) if c.image_id.is_empty() => None,
            StepOutput::ImageCopy(c) => Some(c.image_id.clone()),
            StepOutput::Key(k) => Some(k.arn.to_string()),
            StepOutput::Role(r) => Some(r.arn.clone()),
            StepOutput::DbSnapshotCopy(c) if !c.intermediate => Some(c.arn.clone()),
            _ => None,
        }
    }

    /// Copies kept under other keys, for the run's summary.
    pub fn kept(&self) -> &[KeptCopy] {
        match self {
            StepOutput::SnapshotCopy(c) => &c.kept,
            StepOutput::ImageCopy(c) => &c.kept,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn journaled_outputs_read_back_by_kind() {
        let v = json!({ "snapshot_id": "snap-1", "source": "snap-0", "kms_key_id": "arn" });
        let out = StepOutput::from_journal(StepKind::CopySnapshot, v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&out).unwrap(), v);
        let v = json!({ "added_by_ferry": ["snap-1"] });
        let out = StepOutput::from_journal(StepKind::ShareSnapshot, v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&out).unwrap(), v);
        // Another kind's shape is not taken for this one's.
        assert!(StepOutput::from_journal(StepKind::CreateKey, v).is_none());
    }
}
