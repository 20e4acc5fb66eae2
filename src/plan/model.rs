//! The plan file's types (plan-format.md). The JSON Schema printed by `ferry schema` is derived
//! from these same types, so the schema and the loader cannot drift apart.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::de::Spanned;
use super::secret::Secret;

/// A ferry plan: what must be true when the migration is done.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Format version; only `1` is accepted.
    pub version: Spanned<u32>,
    /// Names the runs and tags everything ferry creates (`ferry:plan`).
    pub name: Spanned<String>,
    /// Logical account name -> how to reach it. At least one.
    #[schemars(with = "BTreeMap<String, Account>")]
    pub accounts: Vec<Named<Account>>,
    /// KMS keys that migrations refer to by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Key>")]
    pub keys: Vec<Named<Key>>,
    /// What to migrate. At least one; each has a unique `id` and a `type`.
    pub migrations: Vec<Migration>,
    #[serde(default)]
    pub settings: Settings,
}

/// The top-level keys of a plan, in the order the format documents them.
pub const PLAN_KEYS: &[&str] = &[
    "version",
    "name",
    "accounts",
    "keys",
    "migrations",
    "settings",
];

/// An entry of a name -> value mapping (`accounts:`, `keys:`), keeping where the name was written.
#[derive(Debug, Clone, Serialize)]
pub struct Named<T> {
    pub name: Spanned<String>,
    pub value: T,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// 12-digit account id; when given, checked with sts:GetCallerIdentity before any change.
    pub id: Option<Spanned<String>>,
    /// A named profile from the shared AWS config files.
    pub profile: Option<Spanned<String>>,
    /// A role to assume through STS.
    pub role_arn: Option<Spanned<String>>,
    /// External id for the role (only with `role_arn`). Never printed or stored (a run keeps its SHA-256).
    pub external_id: Option<Spanned<Secret>>,
    /// Session name for the assumed role (default `ferry`).
    pub session_name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// The account (a name from `accounts:`) that owns the key.
    pub account: Spanned<String>,
    pub region: Spanned<String>,
    /// `alias/...`; one of `alias` / `arn` is required.
    pub alias: Option<Spanned<String>>,
    /// The ARN of an existing key; such a key is never created.
    pub arn: Option<Spanned<String>>,
    /// Create a symmetric customer managed key and its alias when the alias does not resolve.
    #[serde(default)]
    pub create: Option<Spanned<bool>>,
    /// Ensure yearly automatic rotation (customer managed keys only).
    #[serde(default)]
    pub rotation: Option<Spanned<bool>>,
    pub description: Option<Spanned<String>>,
    /// With `create`: a multi-Region primary key.
    #[serde(default)]
    pub multi_region: Option<Spanned<bool>>,
    /// Regions where replicas of the multi-Region key must exist.
    pub replicas: Option<Spanned<Vec<Spanned<String>>>>,
    /// Extra key policy statements, merged into the key policy by `Sid`.
    pub policy_statements: Option<Vec<Spanned<serde_json::Value>>>,
}

/// Whether a migration writes its sources' tags onto the copies (`copy_tags`).
pub fn copies_tags(flag: &Option<Spanned<bool>>, default: bool) -> bool {
    flag.as_ref().map_or(default, |f| f.value)
}

impl Key {
    pub fn creates(&self) -> bool {
        self.create.as_ref().is_some_and(|c| c.value)
    }
    pub fn is_multi_region(&self) -> bool {
        self.multi_region.as_ref().is_some_and(|c| c.value)
    }
    pub fn rotates(&self) -> bool {
        self.rotation.as_ref().is_some_and(|c| c.value)
    }
}

/// One migration; `type` selects what it moves.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)] // a plan holds a handful of these
pub enum Migration {
    /// Copy EBS snapshots to another region and/or account, re-encrypted with `destination.key`.
    SnapshotCopy(SnapshotCopy),
    /// Share AMIs with another account and/or copy them, re-encrypted with `destination.key`.
    AmiCopy(AmiCopy),
    /// Replicate an SSE-KMS bucket to another bucket.
    S3Replication(S3Replication),
    /// Copy RDS DB snapshots to another region and/or account, re-encrypted with
    /// `destination.key`.
    DbSnapshotCopy(DbSnapshotCopy),
    /// Copy Aurora DB cluster snapshots to another region and/or account.
    DbClusterSnapshotCopy(DbSnapshotCopy),
}

pub const MIGRATION_TYPES: &[&str] = &[
    "snapshot-copy",
    "ami-copy",
    "s3-replication",
    "db-snapshot-copy",
    "db-cluster-snapshot-copy",
];

impl Migration {
    pub fn id(&self) -> &Spanned<String> {
        match self {
            Migration::SnapshotCopy(m) => &m.id,
            Migration::AmiCopy(m) => &m.id,
            Migration::S3Replication(m) => &m.id,
            Migration::DbSnapshotCopy(m) | Migration::DbClusterSnapshotCopy(m) => &m.id,
        }
    }
    pub fn depends_on(&self) -> &[Spanned<String>] {
        match self {
            Migration::SnapshotCopy(m) => &m.depends_on,
            Migration::AmiCopy(m) => &m.depends_on,
            Migration::S3Replication(m) => &m.depends_on,
            Migration::DbSnapshotCopy(m) | Migration::DbClusterSnapshotCopy(m) => &m.depends_on,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            Migration::SnapshotCopy(_) => "snapshot-copy",
            Migration::AmiCopy(_) => "ami-copy",
            Migration::S3Replication(_) => "s3-replication",
            Migration::DbSnapshotCopy(_) => "db-snapshot-copy",
            Migration::DbClusterSnapshotCopy(_) => "db-cluster-snapshot-copy",
        }
    }
}

/// How the destination account is allowed to use the source KMS keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAccess {
    /// Merge a statement into the source key policy.
    #[default]
    Policy,
    /// Create a named KMS grant.
    Grant,
    /// Leave key access to the user (their own policy or infrastructure code); ferry checks
    /// nothing and changes nothing on the source keys.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCopy {
    pub id: Spanned<String>,
    /// Ids of migrations that must finish first.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub source: SnapshotSource,
    pub destination: Destination,
    /// Cross-account only: `policy` (default) or `grant`.
    pub key_access: Option<Spanned<KeyAccess>>,
    /// Cross-account only: remove the share and the key access once every copy completed.
    pub revoke_after: Option<Spanned<bool>>,
    /// Added to every copy.
    #[serde(default)]
    pub tags: Spanned<BTreeMap<String, String>>,
    /// Write each source's own tags onto its copy (without `aws:` keys; ferry's and the
    /// migration's tags win). A tag changed on the source later is drift. Default false.
    pub copy_tags: Option<Spanned<bool>>,
    /// Which of this migration's copies to keep, per source volume; the others are deleted.
    pub retention: Option<Spanned<Retention>>,
    /// Cross-account only: a source encrypted with the AWS managed key `aws/ebs` (which cannot
    /// be shared) is first copied in the source account and region under `intermediate_key`;
    /// that copy is shared and copied by the destination, then deleted. Default false: such a
    /// source is refused.
    pub reencrypt_managed_sources: Option<Spanned<bool>>,
    /// The customer managed key (in the source account and region) of those intermediate
    /// copies: a key of the plan, an alias or an ARN. It must exist when the plan runs.
    pub intermediate_key: Option<Spanned<String>>,
}

/// How many of a migration's copies to keep per lineage (source volume): a copy is deleted
/// only if it is not the newest of its lineage and is beyond `keep_last` or older than
/// `max_age` (by its source's start time).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The newest N copies of each lineage are kept (at least 1).
    pub keep_last: Option<Spanned<u32>>,
    /// Copies whose source started longer ago than this (`30d`, `12h`, `2w`) are deleted.
    pub max_age: Option<Spanned<Age>>,
}

/// A length of time, written like `30d`, `12h`, `2w`, `90m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Age(pub u64);

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(|d| Age(d.as_secs()))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a length of time: write e.g. `30d`, `12h`, `2w`"
                ))
            })
    }
}

impl JsonSchema for Age {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Age".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a length of time: a number with s, m, h, d or w (`30d`)",
            "type": "string"
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSource {
    pub account: Spanned<String>,
    pub region: Spanned<String>,
    /// Explicit snapshot ids.
    #[serde(default)]
    pub snapshots: Vec<Spanned<String>>,
    /// Every completed snapshot owned by the account with all these tags.
    pub tags: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Default: the source account.
    pub account: Option<Spanned<String>>,
    /// Default: the source region.
    pub region: Option<Spanned<String>>,
    /// A name from `keys:`, or a literal alias / key ARN valid in the destination.
    pub key: Spanned<String>,
    /// A time-based copy: EBS completes each copy within this time (`CompletionDurationMinutes`,
    /// 15 minutes to 48 hours in steps of 15 minutes), at a throughput it reserves for it.
    pub completion_duration: Option<Spanned<Age>>,
}

/// `db-snapshot-copy` / `db-cluster-snapshot-copy`: RDS DB snapshots or Aurora DB cluster
/// snapshots, copied to another region and/or account.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbSnapshotCopy {
    pub id: Spanned<String>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub source: DbSnapshotSource,
    pub destination: DbDestination,
    /// Cross-account only: `policy` (default), `grant` or `none`.
    pub key_access: Option<Spanned<KeyAccess>>,
    /// Cross-account only: once every copy completed, stop sharing, take back the key access,
    /// and remove the manual copies ferry made of automated sources to share them.
    pub revoke_after: Option<Spanned<bool>>,
    /// Added to every copy, beside the source's own tags and ferry's.
    #[serde(default)]
    pub tags: Spanned<BTreeMap<String, String>>,
    /// Write each source's own tags onto its copy (as RDS's `CopyTags`). Default true.
    pub copy_tags: Option<Spanned<bool>>,
    /// Which of this migration's copies to keep, per DB instance (or cluster).
    pub retention: Option<Spanned<Retention>>,
    /// To another account: a source under the AWS managed key `aws/rds` (which cannot be
    /// shared) is copied in the source account under `intermediate_key` first; that manual
    /// copy is shared and copied, then deleted. Default false: such a source is refused.
    pub reencrypt_managed_sources: Option<Spanned<bool>>,
    /// The customer managed key (source account and region) of those intermediate copies.
    pub intermediate_key: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbSnapshotSource {
    pub account: Spanned<String>,
    pub region: Spanned<String>,
    /// Snapshot identifiers or ARNs (manual or automated).
    #[serde(default)]
    pub snapshots: Vec<Spanned<String>>,
    /// Every available manual snapshot of the account and region with all these tags.
    pub tags: Option<Spanned<BTreeMap<String, String>>>,
    /// DB instance (or cluster) identifiers: the newest available snapshot of each, manual or
    /// automated.
    #[serde(default)]
    pub latest_of: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbDestination {
    /// Default: the source account.
    pub account: Option<Spanned<String>>,
    /// Default: the source region.
    pub region: Option<Spanned<String>>,
    /// Required for encrypted sources: a name from `keys:`, or an alias / key ARN of the
    /// destination account and region.
    pub key: Option<Spanned<String>>,
    /// The option group the copy gets in the destination region (Oracle and SQL Server need
    /// one across regions; DB snapshots only).
    pub option_group: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmiCopy {
    pub id: Spanned<String>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub source: ImageSource,
    pub destination: ImageDestination,
    pub key_access: Option<Spanned<KeyAccess>>,
    pub revoke_after: Option<Spanned<bool>>,
    #[serde(default)]
    pub tags: Spanned<BTreeMap<String, String>>,
    /// Write each source AMI's own tags onto its copy (as for `snapshot-copy`). Default false.
    pub copy_tags: Option<Spanned<bool>>,
    /// Cross-account copies only: an AMI with a volume under the AWS managed key `aws/ebs` is
    /// first copied in the source account and region with every volume under
    /// `intermediate_key`; that copy is shared and copied, then deregistered and its snapshots
    /// deleted. Default false: such an AMI is refused.
    pub reencrypt_managed_sources: Option<Spanned<bool>>,
    /// The customer managed key (source account and region) of the intermediate AMI copies.
    pub intermediate_key: Option<Spanned<String>>,
    /// Which of this migration's AMI copies to keep, per lineage: the source AMI's `Name` tag
    /// (else its name); the others are deregistered with their snapshots.
    pub retention: Option<Spanned<Retention>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    pub account: Spanned<String>,
    pub region: Spanned<String>,
    #[serde(default)]
    pub images: Vec<Spanned<String>>,
    pub tags: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageDestination {
    pub account: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    /// Required with `copy: true`.
    pub key: Option<Spanned<String>>,
    /// `false`: share only (launch permission, snapshots, key access), no copy. Default `true`.
    pub copy: Option<Spanned<bool>>,
}

impl ImageDestination {
    pub fn copies(&self) -> bool {
        self.copy.as_ref().is_none_or(|c| c.value)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Replication {
    pub id: Spanned<String>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub source: BucketSource,
    pub destination: BucketDestination,
    pub role: Role,
    pub rule: Option<Spanned<Rule>>,
    /// S3 Bucket Keys on the replicas (default true).
    pub bucket_key: Option<Spanned<bool>>,
    /// Also replicate objects that existed before the rule: `true` (inline copies or an S3
    /// Batch Replication job, by the bucket's size), `inline`, `batch` or `false`.
    pub backfill: Option<Spanned<BackfillMode>>,
    /// A batch backfill also replicates objects whose replication FAILED before.
    pub redrive_failed: Option<Spanned<bool>>,
    /// Where a batch job writes its completion report: `s3://bucket/prefix` (default: the
    /// state bucket when the state is on S3).
    pub backfill_report: Option<Spanned<String>>,
    /// The S3 Batch Operations role: `name` (created or brought up to date; default
    /// `<role.name>-batch`) or `arn` (used untouched).
    pub backfill_role: Option<Role>,
    /// Prove the rule replicates with a canary object (default true).
    pub verify: Option<Spanned<bool>>,
}

impl S3Replication {
    /// Where a batch backfill's report goes, as (bucket, prefix without slashes at either
    /// end): `backfill_report`, else `batch-reports` under the state when it is on S3.
    pub fn report_location(&self, settings: &Settings) -> Option<(String, String)> {
        let url = match (&self.backfill_report, &settings.state) {
            (Some(r), _) => r.value.clone(),
            (None, Some(s)) if s.value.starts_with("s3://") => {
                format!("{}/batch-reports", s.value.trim_end_matches('/'))
            }
            _ => return None,
        };
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

/// How an `s3-replication` backfill copies the objects that existed before the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackfillMode {
    /// No backfill (`false`).
    Off,
    /// By size (`true`): inline up to `settings.backfill_inline_max` objects, else a batch job.
    Auto,
    /// Always CopyObject / UploadPartCopy from the machine that runs ferry.
    Inline,
    /// Always an S3 Batch Replication job.
    Batch,
}

impl BackfillMode {
    pub fn is_on(self) -> bool {
        self != BackfillMode::Off
    }
}

impl<'de> Deserialize<'de> for BackfillMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = BackfillMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, `inline` or `batch`")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<BackfillMode, E> {
                Ok(if b {
                    BackfillMode::Auto
                } else {
                    BackfillMode::Off
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BackfillMode, E> {
                match s {
                    "inline" => Ok(BackfillMode::Inline),
                    "batch" => Ok(BackfillMode::Batch),
                    _ => Err(E::unknown_variant(s, &["true", "false", "inline", "batch"])),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for BackfillMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BackfillMode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "true (by size), false, `inline` or `batch`",
            "oneOf": [ { "type": "boolean" }, { "type": "string", "enum": ["inline", "batch"] } ]
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketSource {
    pub account: Spanned<String>,
    /// Its region is looked up.
    pub bucket: Spanned<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketDestination {
    pub account: Option<Spanned<String>>,
    pub bucket: Spanned<String>,
    /// Required with `create: true`.
    pub region: Option<Spanned<String>>,
    /// Create the destination bucket when missing.
    pub create: Option<Spanned<bool>>,
    /// Key in the destination region for the replicas (ReplicaKmsKeyID).
    pub key: Spanned<String>,
}

/// The replication role: `name` (created or brought up to date) or `arn` (used untouched).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: Option<Spanned<String>>,
    pub arn: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub priority: Option<Spanned<u32>>,
    pub delete_markers: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Steps in flight at most (default 16).
    pub concurrency: Option<Spanned<u32>>,
    /// Local directory (default `.ferry` next to the plan) or `s3://bucket/prefix`.
    pub state: Option<Spanned<String>>,
    /// KMS key (id, ARN or alias) the S3 state's objects are encrypted with (SSE-KMS).
    pub state_key: Option<Spanned<String>>,
    /// Added to everything ferry creates.
    #[serde(default)]
    pub tags: Spanned<BTreeMap<String, String>>,
    /// Overrides of the default AWS quota table, by name (e.g. `ec2:CopySnapshot`).
    #[serde(default)]
    pub quotas: BTreeMap<Spanned<String>, QuotaOverride>,
    /// Accept region names ferry does not know (new regions).
    pub allow_unknown_regions: Option<Spanned<bool>>,
    /// s3-replication backfill: buckets with more objects than this (default 100,000) get an
    /// S3 Batch Replication job instead of an inline copy.
    pub backfill_inline_max: Option<Spanned<u64>>,
    /// Inline backfill: objects larger than this are copied in parts (UploadPartCopy).
    /// Default 5 GiB, the most one CopyObject takes.
    pub multipart_threshold: Option<Spanned<ByteSize>>,
}

/// A size in bytes, written as a number or with a unit (`8MiB`, `5 GiB`, `100MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `8MiB`, `5 GiB`, `100MB`, `1024`: binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB,
    /// TB) units, as the aws CLI's S3 settings take them.
    pub fn parse(text: &str) -> Option<ByteSize> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB or TB")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).ok_or_else(|| {
                    E::custom(format!(
                        "`{s}` is not a size: write bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB or TB"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB or TB",
            "oneOf": [ { "type": "integer", "minimum": 0 }, { "type": "string" } ]
        })
    }
}

/// Default of `settings.multipart_threshold`: the most one CopyObject copies.
pub const MULTIPART_THRESHOLD: u64 = 5 << 30;

/// S3's smallest part (all but the last): 5 MiB.
pub const PART_MIN: u64 = 5 << 20;

/// Default of `settings.backfill_inline_max`.
pub const BACKFILL_INLINE_MAX: u64 = 100_000;

impl Settings {
    /// `backfill_inline_max`, or its default.
    pub fn inline_max(&self) -> u64 {
        self.backfill_inline_max
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(BACKFILL_INLINE_MAX)
    }

    /// `multipart_threshold` in bytes, or its default.
    pub fn part_threshold(&self) -> u64 {
        self.multipart_threshold
            .as_ref()
            .map(|t| t.value.0)
            .unwrap_or(MULTIPART_THRESHOLD)
    }
}

/// A change to one entry of the quota table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    /// Token bucket size (calls that may go at once).
    pub burst: Option<u32>,
    /// Refill rate, calls per second.
    pub per_second: Option<f64>,
    /// For concurrency limits: operations in flight at most.
    pub in_flight: Option<u32>,
}

impl Plan {
    /// The plan's text with every secret replaced by its fingerprint: what a run stores.
    pub fn redacted(&self, text: &str) -> String {
        let secrets: Vec<(usize, usize, &Secret)> = self
            .accounts
            .iter()
            .filter_map(|a| a.value.external_id.as_ref())
            .map(|s| (s.span.offset, s.span.len, &s.value))
            .collect();
        super::secret::redact(text, &secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_read_with_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("8MiB"), Some(ByteSize(8 << 20)));
        assert_eq!(ByteSize::parse("5 GiB"), Some(ByteSize(5 << 30)));
        assert_eq!(ByteSize::parse("100MB"), Some(ByteSize(100_000_000)));
        assert_eq!(ByteSize::parse("1024"), Some(ByteSize(1024)));
        assert_eq!(ByteSize::parse("12 parsecs"), None);
        assert_eq!(ByteSize::parse("MiB"), None);
        assert_eq!(
            ByteSize::parse("99999999999TiB"),
            None,
            "overflow is refused"
        );
    }
}
