//! What one node of the graph does, as data: its id, where it runs, and its spec, the whole
//! desired state of one step kind with typed fields. Pure: nothing here talks to AWS.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

pub use crate::ids::DbKind;
use crate::ids::{
    AccountName, BucketName, ImageId, KeyArn, KeyName, MigrationId, Region, SnapshotId, StepId,
};
use crate::plan::KeyAccess;
use crate::resolve::BucketSample;

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
    #[serde(rename = "s3.batch-replication")]
    BatchReplication,
    #[serde(rename = "s3.verify-replication")]
    VerifyReplication,
    #[serde(rename = "iam.ensure-role")]
    EnsureRole,
    #[serde(rename = "ec2.prune-copies")]
    PruneCopies,
    #[serde(rename = "rds.prune-copies")]
    PruneDbCopies,
    #[serde(rename = "rds.find-snapshots")]
    FindDbSnapshots,
    #[serde(rename = "rds.copy-snapshot")]
    CopyDbSnapshot,
    #[serde(rename = "rds.share-snapshot")]
    ShareDbSnapshot,
    #[serde(rename = "rds.unshare-snapshot")]
    UnshareDbSnapshot,
    #[serde(rename = "rds.delete-snapshot")]
    DeleteDbSnapshot,
    // What `ferry destroy` runs: the inverses of the steps above.
    #[serde(rename = "kms.remove-statements")]
    RemoveKeyPolicyStatements,
    #[serde(rename = "kms.schedule-key-deletion")]
    ScheduleKeyDeletion,
    #[serde(rename = "ec2.delete-copies")]
    DeleteSnapshotCopies,
    #[serde(rename = "ec2.deregister-copies")]
    DeregisterImageCopies,
    #[serde(rename = "rds.delete-copies")]
    DeleteDbCopies,
    #[serde(rename = "s3.remove-replication")]
    RemoveReplication,
    #[serde(rename = "s3.remove-bucket-policy")]
    RemoveBucketPolicy,
    #[serde(rename = "s3.delete-bucket")]
    DeleteBucket,
    #[serde(rename = "iam.delete-role")]
    DeleteRole,
    #[serde(rename = "ec2.delete-intermediate")]
    DeleteIntermediate,
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
            StepKind::BatchReplication => "s3.batch-replication",
            StepKind::VerifyReplication => "s3.verify-replication",
            StepKind::EnsureRole => "iam.ensure-role",
            StepKind::PruneCopies => "ec2.prune-copies",
            StepKind::PruneDbCopies => "rds.prune-copies",
            StepKind::FindDbSnapshots => "rds.find-snapshots",
            StepKind::CopyDbSnapshot => "rds.copy-snapshot",
            StepKind::ShareDbSnapshot => "rds.share-snapshot",
            StepKind::UnshareDbSnapshot => "rds.unshare-snapshot",
            StepKind::DeleteDbSnapshot => "rds.delete-snapshot",
            StepKind::RemoveKeyPolicyStatements => "kms.remove-statements",
            StepKind::ScheduleKeyDeletion => "kms.schedule-key-deletion",
            StepKind::DeleteSnapshotCopies => "ec2.delete-copies",
            StepKind::DeregisterImageCopies => "ec2.deregister-copies",
            StepKind::DeleteDbCopies => "rds.delete-copies",
            StepKind::RemoveReplication => "s3.remove-replication",
            StepKind::RemoveBucketPolicy => "s3.remove-bucket-policy",
            StepKind::DeleteBucket => "s3.delete-bucket",
            StepKind::DeleteRole => "iam.delete-role",
            StepKind::DeleteIntermediate => "ec2.delete-intermediate",
        }
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
    pub account: AccountName,
    /// `None` until resolved (an S3 source bucket's region is looked up); IAM is `global`.
    pub region: Option<Region>,
}

/// Which resources a step acts on, as shown: one known id, or every resource a selector
/// resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A single resource (a snapshot id, an AMI id, a key, a bucket).
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

pub type Tags = BTreeMap<String, String>;

/// A key a step encrypts with or edits, as the resolve stage found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestKey {
    /// It exists: this ARN.
    Existing(KeyArn),
    /// It does not exist yet; this step of the plan makes it (its output has the ARN).
    MadeBy(StepId),
    /// Not resolved (an offline plan): found by this reference when needed.
    Unresolved(String),
}

/// A destination key: how the plan names it, and where its ARN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationKey {
    /// The alias or ARN as the plan gives it (what a person reads in `ferry plan`).
    pub shown: String,
    pub key: DestKey,
}

/// An IAM role given by name (ferry manages it) or by ARN (used untouched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRef {
    Name(String),
    Arn(String),
}

/// A node of the step graph.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub id: StepId,
    pub scope: Scope,
    /// What the step acts on, as shown.
    pub target: Target,
    pub spec: StepSpec,
}

impl PlannedStep {
    pub fn kind(&self) -> StepKind {
        self.spec.kind()
    }
}

/// The whole desired state of one step, by kind.
#[derive(Debug, Clone)]
pub enum StepSpec {
    CreateKey(CreateKeySpec),
    EnableKeyRotation(KeyRotationSpec),
    ReplicateKey(ReplicateKeySpec),
    MergeKeyPolicy(KeyPolicySpec),
    GrantKeyAccess(KeyAccessSpec),
    RevokeKeyAccess(KeyAccessSpec),
    FindSnapshots(FindSpec),
    FindImages(FindSpec),
    ShareSnapshot(ShareSpec),
    UnshareSnapshot(ShareSpec),
    ShareImage(ShareSpec),
    UnshareImage(ShareSpec),
    CopySnapshot(CopySnapshotSpec),
    CopyImage(CopyImageSpec),
    CreateBucket(CreateBucketSpec),
    EnableVersioning(VersioningSpec),
    AllowReplicationRole(BucketPolicySpec),
    PutReplication(ReplicationSpec),
    Backfill(BackfillSpec),
    BatchReplication(BatchReplicationSpec),
    VerifyReplication(VerifySpec),
    EnsureRole(RoleSpec),
    PruneCopies(PruneSpec),
    FindDbSnapshots(FindSpec),
    CopyDbSnapshot(DbCopySpec),
    ShareDbSnapshot(DbShareSpec),
    UnshareDbSnapshot(DbShareSpec),
    DeleteDbSnapshot(DbDeleteSpec),
    RemoveKeyPolicyStatements(KeyPolicySpec),
    ScheduleKeyDeletion(KeyDeletionSpec),
    DeleteCopies(DeleteCopiesSpec),
    RemoveReplication(ReplicationSpec),
    RemoveBucketPolicy(BucketPolicySpec),
    DeleteBucket(CreateBucketSpec),
    DeleteRole(RoleDeletionSpec),
    DeleteIntermediate(IntermediateSpec),
}

impl StepSpec {
    pub fn kind(&self) -> StepKind {
        match self {
            StepSpec::CreateKey(_) => StepKind::CreateKey,
            StepSpec::EnableKeyRotation(_) => StepKind::EnableKeyRotation,
            StepSpec::ReplicateKey(_) => StepKind::ReplicateKey,
            StepSpec::MergeKeyPolicy(_) => StepKind::MergeKeyPolicy,
            StepSpec::GrantKeyAccess(_) => StepKind::GrantKeyAccess,
            StepSpec::RevokeKeyAccess(_) => StepKind::RevokeKeyAccess,
            StepSpec::FindSnapshots(_) => StepKind::FindSnapshots,
            StepSpec::FindImages(_) => StepKind::FindImages,
            StepSpec::ShareSnapshot(_) => StepKind::ShareSnapshot,
            StepSpec::UnshareSnapshot(_) => StepKind::UnshareSnapshot,
            StepSpec::ShareImage(_) => StepKind::ShareImage,
            StepSpec::UnshareImage(_) => StepKind::UnshareImage,
            StepSpec::CopySnapshot(_) => StepKind::CopySnapshot,
            StepSpec::CopyImage(_) => StepKind::CopyImage,
            StepSpec::CreateBucket(_) => StepKind::CreateBucket,
            StepSpec::EnableVersioning(_) => StepKind::EnableVersioning,
            StepSpec::AllowReplicationRole(_) => StepKind::AllowReplicationRole,
            StepSpec::PutReplication(_) => StepKind::PutReplication,
            StepSpec::Backfill(_) => StepKind::Backfill,
            StepSpec::BatchReplication(_) => StepKind::BatchReplication,
            StepSpec::VerifyReplication(_) => StepKind::VerifyReplication,
            StepSpec::EnsureRole(_) => StepKind::EnsureRole,
            StepSpec::PruneCopies(p) => match p.what {
                Pruned::Snapshots | Pruned::Images => StepKind::PruneCopies,
                Pruned::DbSnapshots(_) => StepKind::PruneDbCopies,
            },
            StepSpec::FindDbSnapshots(_) => StepKind::FindDbSnapshots,
            StepSpec::CopyDbSnapshot(_) => StepKind::CopyDbSnapshot,
            StepSpec::ShareDbSnapshot(_) => StepKind::ShareDbSnapshot,
            StepSpec::UnshareDbSnapshot(_) => StepKind::UnshareDbSnapshot,
            StepSpec::DeleteDbSnapshot(_) => StepKind::DeleteDbSnapshot,
            StepSpec::RemoveKeyPolicyStatements(_) => StepKind::RemoveKeyPolicyStatements,
            StepSpec::ScheduleKeyDeletion(_) => StepKind::ScheduleKeyDeletion,
            StepSpec::DeleteCopies(d) => match d.what {
                Copied::Snapshots => StepKind::DeleteSnapshotCopies,
                Copied::Images => StepKind::DeregisterImageCopies,
                Copied::DbSnapshots(_) => StepKind::DeleteDbCopies,
            },
            StepSpec::RemoveReplication(_) => StepKind::RemoveReplication,
            StepSpec::RemoveBucketPolicy(_) => StepKind::RemoveBucketPolicy,
            StepSpec::DeleteBucket(_) => StepKind::DeleteBucket,
            StepSpec::DeleteRole(_) => StepKind::DeleteRole,
            StepSpec::DeleteIntermediate(_) => StepKind::DeleteIntermediate,
        }
    }
}

/// `kms.create-key`: a symmetric customer managed key and its alias (the alias is the marker).
#[derive(Debug, Clone)]
pub struct CreateKeySpec {
    pub name: KeyName,
    pub alias: String,
    pub multi_region: bool,
    pub description: Option<String>,
    pub tags: Tags,
}

/// `kms.enable-key-rotation`: yearly automatic rotation of the key found by `key`.
#[derive(Debug, Clone)]
pub struct KeyRotationSpec {
    pub key: String,
}

/// `kms.replicate-key`: a replica (in the step's region) of the multi-Region key `key`.
#[derive(Debug, Clone)]
pub struct ReplicateKeySpec {
    /// The alias (made in the replica's region too) or ARN of the primary key.
    pub key: String,
    pub primary_region: Region,
}

/// `kms.merge-key-policy`: statements merged into a key policy by Sid.
#[derive(Debug, Clone)]
pub struct KeyPolicySpec {
    pub key: DestinationKey,
    pub statements: Statements,
}

#[derive(Debug, Clone)]
pub enum Statements {
    /// The plan's `policy_statements`.
    Given(Vec<Value>),
    /// s3-replication: the replication role may encrypt replicas with the key.
    ReplicationRole {
        role: RoleRef,
        role_account: AccountName,
        sid: String,
    },
}

/// Which source key a key-access step acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKey {
    Known(KeyArn),
    /// Offline: every key behind the migration's resources, found by the resolve stage.
    Unresolved,
}

/// `kms.grant-key-access` / `kms.revoke-key-access`: the destination account's use of a source key.
#[derive(Debug, Clone)]
pub struct KeyAccessSpec {
    pub key: SourceKey,
    pub how: KeyAccess,
    /// The statement's Sid, or the grant's name.
    pub sid: String,
    pub sharing: Sharing,
    /// The migration's source resources, when known (their copies make access unneeded).
    pub sources: Vec<String>,
    /// For a revoke: the grant step whose addition it takes back.
    pub undoes: Option<StepId>,
}

/// What the other account makes of what is shared: the copies whose existence makes a share
/// (or key access) unneeded once `revoke_after` took it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    Snapshots,
    Images,
    DbSnapshots(DbKind),
}

/// What a share (or key access) step knows about the other account.
#[derive(Debug, Clone)]
pub struct Sharing {
    pub migration: MigrationId,
    pub with_account: AccountName,
    pub destination_region: Region,
    /// The share is taken back after the copies: a finished copy makes sharing unneeded.
    pub revoke_after: bool,
    /// The key copies are made under: only a copy under it makes the share unneeded.
    pub copies_under: Option<DestinationKey>,
    pub copied: Copied,
}

/// `ec2.find-snapshots` / `ec2.find-images`: a tag selector, expanded by the resolve stage
/// (offline plans only).
#[derive(Debug, Clone)]
pub struct FindSpec {
    pub tags: Tags,
}

/// What a share step shares.
#[derive(Debug, Clone)]
pub enum Shared {
    Snapshot(SnapshotId),
    Image(ImageId),
    /// The snapshots behind an AMI's block devices (`None` until resolved).
    SnapshotsOf {
        image: ImageId,
        snapshots: Option<Vec<SnapshotId>>,
    },
    /// The intermediate copy `step` makes of the source `of` (`reencrypt_managed_sources`):
    /// its id is known once that step is done.
    CopyMadeBy {
        step: StepId,
        of: SnapshotId,
    },
    /// The intermediate AMI copy `step` makes of the AMI `of`.
    ImageMadeBy {
        step: StepId,
        of: ImageId,
    },
    /// The snapshots behind the intermediate AMI copy `step` makes of the AMI `of`.
    SnapshotsOfCopy {
        step: StepId,
        of: ImageId,
    },
}

/// `ec2.share-*` / `ec2.unshare-*`: createVolumePermission or launch permission for the other
/// account.
#[derive(Debug, Clone)]
pub struct ShareSpec {
    pub shared: Shared,
    pub sharing: Sharing,
    /// For an unshare: the share step whose additions it takes back.
    pub undoes: Option<StepId>,
}

/// `ec2.copy-snapshot`: a copy of `source` in the step's account and region under `key`.
#[derive(Debug, Clone)]
pub struct CopySnapshotSpec {
    pub migration: MigrationId,
    pub source: SnapshotId,
    pub source_account: AccountName,
    pub source_region: Region,
    pub key: DestinationKey,
    /// ferry's tags and the migration's; `ferry:source` and `ferry:key` are added per copy.
    pub tags: Tags,
    /// The source's own tags (`copy_tags`), written under ferry's (which win on a clash).
    pub source_tags: Tags,
    /// The source's volume and start time (ms), written as `ferry:lineage` and
    /// `ferry:source-time`: what `retention` judges the copy by.
    pub lineage: Option<(String, i64)>,
    /// Copy from the intermediate copy this step made (its output), not from `source`, which
    /// stays the copy's identity (`ferry:source`).
    pub via: Option<StepId>,
    /// A time-based copy (`destination.completion_duration`): CompletionDurationMinutes.
    pub completion_minutes: Option<i32>,
    /// An intermediate copy (`reencrypt_managed_sources`): not needed once the final copy of
    /// `source` exists there.
    pub serves: Option<FinalCopy>,
    /// What the copy is expected to move, and its chain from it on.
    pub transfer: Transfer,
}

/// The bytes a copy is expected to move (estimated where AWS cannot tell beforehand).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub bytes: u64,
    /// Only the blocks changed since the copy before it in its chain (AWS copies a later
    /// snapshot of a volume incrementally when the earlier one's copy is there, under the
    /// same key).
    pub incremental: bool,
    /// The bytes of this copy and the copies after it in its chain: its scheduling priority.
    pub chain_bytes: u64,
}

/// Where the final copy of a source an intermediate copy is made for goes.
#[derive(Debug, Clone)]
pub struct FinalCopy {
    pub account: AccountName,
    pub region: Region,
    pub key: DestinationKey,
}

/// `ec2.delete-intermediate`: the intermediate copies of `source` this migration made in
/// the step's account and region (`ferry:intermediate`), deleted once the final copy exists.
#[derive(Debug, Clone)]
pub struct IntermediateSpec {
    pub migration: MigrationId,
    /// The source snapshot or AMI.
    pub source: String,
    /// `Images`: intermediate AMIs, deregistered, then their snapshots deleted.
    pub what: Copied,
}

/// What a prune step deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pruned {
    /// EBS snapshot copies (lineage: the source's volume).
    Snapshots,
    /// AMI copies, deregistered with their snapshots (lineage: the source's `Name` tag).
    Images,
    /// RDS DB (or cluster) snapshot copies (lineage: the source's instance or cluster).
    DbSnapshots(DbKind),
}

/// `ec2.prune-copies` / `rds.prune-copies`: deletes the migration's copies `retention` no
/// longer keeps.
#[derive(Debug, Clone)]
pub struct PruneSpec {
    pub what: Pruned,
    pub migration: MigrationId,
    pub source_account: AccountName,
    pub source_region: Region,
    pub keep_last: Option<u32>,
    pub max_age_secs: Option<u64>,
    /// The sources the resolve stage judged beyond the retention (their copies are deleted):
    /// the one judgment the copy steps (which skip them) and this step share.
    pub beyond: Vec<String>,
}

/// `ec2.copy-image`: a copy of `source` in the step's account and region, every volume under
/// `key`.
#[derive(Debug, Clone)]
pub struct CopyImageSpec {
    pub migration: MigrationId,
    pub source: ImageId,
    pub source_account: AccountName,
    pub source_region: Region,
    pub key: DestinationKey,
    pub tags: Tags,
    /// The source AMI's own tags (`copy_tags`), written under ferry's.
    pub source_tags: Tags,
    /// The source's lineage (its `Name` tag, else its name) and creation time (ms), written
    /// as `ferry:lineage` and `ferry:source-time`: what `retention` judges the copy by.
    pub lineage: Option<(String, i64)>,
    /// Copy from the intermediate AMI copy this step made, not from `source` (which stays
    /// the copy's identity).
    pub via: Option<StepId>,
    /// An intermediate AMI copy: not needed once the final copy of `source` exists there.
    pub serves: Option<FinalCopy>,
}

/// `s3.create-bucket`: the destination bucket, with default SSE-KMS under `key`.
#[derive(Debug, Clone)]
pub struct CreateBucketSpec {
    pub migration: MigrationId,
    pub bucket: BucketName,
    pub key: DestinationKey,
    pub bucket_key: bool,
    pub tags: Tags,
}

/// `s3.enable-versioning`.
#[derive(Debug, Clone)]
pub struct VersioningSpec {
    pub bucket: BucketName,
}

/// `s3.allow-replication-role`: the destination bucket policy lets another account's
/// replication role replicate into it.
#[derive(Debug, Clone)]
pub struct BucketPolicySpec {
    pub bucket: BucketName,
    pub role: RoleRef,
    pub role_account: AccountName,
    /// Prefix of the statements' Sids.
    pub sid: String,
}

/// The replication rule ferry owns in the source bucket's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub id: String,
    pub prefix: String,
    pub priority: u32,
    pub delete_markers: bool,
}

/// `s3.put-replication`: ferry's rule in the source bucket's replication configuration.
#[derive(Debug, Clone)]
pub struct ReplicationSpec {
    pub bucket: BucketName,
    pub destination_bucket: BucketName,
    pub destination_account: AccountName,
    pub destination_region: Option<Region>,
    pub role: RoleRef,
    pub key: DestinationKey,
    pub rule: RuleSpec,
    pub bucket_key: bool,
}

/// `s3.backfill`: objects that existed before the rule, copied under `key`.
#[derive(Debug, Clone)]
pub struct BackfillSpec {
    pub source_bucket: BucketName,
    pub source_account: AccountName,
    pub source_region: Option<Region>,
    pub destination_bucket: BucketName,
    pub prefix: String,
    pub key: DestinationKey,
    pub bucket_key: bool,
    pub inline_max: u64,
    /// Objects larger than this are copied in parts.
    pub multipart_threshold: u64,
}

/// Where a batch job writes its completion report (and its generated manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLocation {
    pub bucket: BucketName,
    /// Without slashes at either end; may be empty.
    pub prefix: String,
}

/// `s3.batch-replication`: an S3 Batch Replication job over the source bucket's objects that
/// the rule has not replicated (status NONE, and FAILED with `redrive_failed`).
#[derive(Debug, Clone)]
pub struct BatchReplicationSpec {
    pub migration: MigrationId,
    pub source_bucket: BucketName,
    pub destination_bucket: BucketName,
    pub destination_account: AccountName,
    pub prefix: String,
    /// The rule the job replicates by, to name in what is shown.
    pub rule_id: String,
    /// The replica key, as the plan names it (shown only: the rule carries the key).
    pub key: DestinationKey,
    /// The Batch Operations role (trust `batchoperations.s3.amazonaws.com`).
    pub role: RoleRef,
    pub report: ReportLocation,
    pub redrive_failed: bool,
    pub sample: BucketSample,
}

/// `s3.verify-replication`: a canary object under the rule's prefix must replicate, encrypted
/// under the replica key, within `timeout_secs`.
#[derive(Debug, Clone)]
pub struct VerifySpec {
    pub migration: MigrationId,
    pub source_bucket: BucketName,
    pub destination_bucket: BucketName,
    pub destination_account: AccountName,
    pub destination_region: Option<Region>,
    pub prefix: String,
    pub rule_id: String,
    pub key: DestinationKey,
    /// The replication role, whose permissions a failure is explained by.
    pub role: RoleRef,
    pub source_keys: Vec<KeyArn>,
}

/// What a role made by ferry is for: its trust and its inline policy follow.
#[derive(Debug, Clone)]
pub enum RolePurpose {
    /// S3 live replication (trust `s3.amazonaws.com`).
    Replication,
    /// S3 Batch Replication jobs (trust `batchoperations.s3.amazonaws.com`).
    BatchReplication { report: ReportLocation },
}

/// `iam.ensure-role`: the replication role with its trust policy and ferry's inline policy.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub migration: MigrationId,
    pub name: String,
    pub source_bucket: BucketName,
    pub source_region: Option<Region>,
    pub destination_bucket: BucketName,
    pub destination_account: AccountName,
    pub destination_region: Option<Region>,
    pub source_keys: Vec<KeyArn>,
    pub key: DestinationKey,
    pub tags: Tags,
    pub purpose: RolePurpose,
}

/// An RDS snapshot by identifier in a plan account and region (its ARN needs the account's
/// id, known once the accounts are resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshotRef {
    pub account: AccountName,
    pub region: Region,
    pub id: String,
}

/// `rds.copy-snapshot`: CopyDBSnapshot / CopyDBClusterSnapshot of `source` into the step's
/// account and region as `target`, the deterministic identifier that makes a repeat find it.
#[derive(Debug, Clone)]
pub struct DbCopySpec {
    pub migration: MigrationId,
    pub kind: DbKind,
    pub source: DbSnapshotRef,
    /// The plan's source snapshot this copy stands for (`ferry:source`).
    pub origin: String,
    pub target: String,
    /// `None`: the source's key (a copy within the account and region).
    pub key: Option<DestinationKey>,
    pub option_group: Option<String>,
    /// ferry's tags and the migration's; `ferry:source` and `ferry:key` are added per copy.
    pub tags: Tags,
    /// The source's own tags, written under ferry's (which win on a clash).
    pub source_tags: Tags,
    /// The source's instance (or cluster) and creation time (ms), written as `ferry:lineage`
    /// and `ferry:source-time`: what `retention` judges the copy by.
    pub lineage: Option<(String, i64)>,
    /// A manual copy of an automated source made to share it: not needed once this final copy
    /// exists (a re-apply after `revoke_after` removed it makes none).
    pub serves: Option<DbSnapshotRef>,
}

/// `rds.share-snapshot` / `rds.unshare-snapshot`: the `restore` attribute for the other account.
#[derive(Debug, Clone)]
pub struct DbShareSpec {
    pub kind: DbKind,
    /// The plan's source snapshot (`ferry:source` of the copy).
    pub origin: String,
    /// In the step's account and region.
    pub snapshot: String,
    pub sharing: Sharing,
    /// The final copy in the other account: once it exists, sharing is not needed.
    pub copy: DbSnapshotRef,
    /// For an unshare: the share step whose addition it takes back.
    pub undoes: Option<StepId>,
}

/// `rds.delete-snapshot`: removes the manual copy ferry made of an automated source to share
/// it, once the final copy exists (`revoke_after`). Only a snapshot carrying this migration's
/// ferry tags is ever deleted.
#[derive(Debug, Clone)]
pub struct DbDeleteSpec {
    pub migration: MigrationId,
    pub kind: DbKind,
    /// The plan's source snapshot (`ferry:source` of both copies).
    pub origin: String,
    pub snapshot: String,
    pub copy: DbSnapshotRef,
}

/// `kms.schedule-key-deletion` (`ferry destroy --include-keys`): the key this plan created (or
/// its replica in the step's region), found by its alias, scheduled for deletion with the
/// longest waiting period, its alias deleted. Only a key carrying this plan's ferry tags.
#[derive(Debug, Clone)]
pub struct KeyDeletionSpec {
    pub name: KeyName,
    pub alias: String,
    /// Where the key's tags are read: its own region, or the primary's for a replica.
    pub tags_region: Region,
    /// The buckets whose replicas this plan encrypts under the key (in the step's account and
    /// region): shown as what the key still encrypts.
    pub buckets: Vec<BucketName>,
}

/// `ec2.delete-copies` / `ec2.deregister-copies` / `rds.delete-copies` (`ferry destroy`):
/// every copy in the step's account and region carrying this plan's and this migration's
/// ferry tags, except those in use and (without `include_orphans`) those whose source is gone.
#[derive(Debug, Clone)]
pub struct DeleteCopiesSpec {
    pub what: Copied,
    pub migration: MigrationId,
    pub source_account: AccountName,
    pub source_region: Region,
    pub include_orphans: bool,
}

/// `iam.delete-role` (`ferry destroy`): the role `iam.ensure-role` made or added to.
#[derive(Debug, Clone)]
pub struct RoleDeletionSpec {
    pub role: RoleSpec,
    /// The replication rules of this plan that name the role (removed before it): only
    /// another rule naming it keeps the role.
    pub ferrys_rules: Vec<String>,
}
