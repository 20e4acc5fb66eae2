//! Read-only lookups that both the resolve stage and the steps make: a key's facts, snapshots
//! by id, a role's ARN. Below both, so neither imports the other.

use aws_sdk_ec2::types::Filter;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType};

use crate::aws::{Aws, AwsError};
use crate::exec::Limits;
use crate::ids::KeyArn;
use crate::quotas::bucket;

/// A key as ferry needs to know it.
#[derive(Debug, Clone)]
pub struct KeyFacts {
    pub key_id: String,
    pub arn: KeyArn,
    pub enabled: bool,
    pub state: String,
    pub customer_managed: bool,
    pub symmetric_encrypt_decrypt: bool,
    pub multi_region: bool,
}

/// DescribeKey by id, ARN or alias; `None` when it does not exist (or is pending deletion).
pub async fn describe_key(
    aws: &Aws,
    limits: &Limits,
    account: &str,
    region: &str,
    key: &str,
) -> Result<Option<KeyFacts>, AwsError> {
    limits
        .take(&[bucket(account, region, "kms:DescribeKey")])
        .await;
    let out = aws
        .kms(account, region)
        .describe_key()
        .key_id(key)
        .send()
        .await;
    let meta = match out {
        Ok(o) => o.key_metadata,
        Err(e) => {
            let e = AwsError::from_sdk("kms", "DescribeKey", e);
            return if e.is_not_found() { Ok(None) } else { Err(e) };
        }
    };
    let Some(m) = meta else { return Ok(None) };
    let state = m
        .key_state()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    if matches!(
        m.key_state(),
        Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)
    ) {
        return Ok(None);
    }
    Ok(Some(KeyFacts {
        key_id: m.key_id().to_string(),
        arn: KeyArn::new(m.arn().unwrap_or_default()),
        enabled: m.enabled() && m.key_state() != Some(&KeyState::Disabled),
        state,
        customer_managed: m.key_manager().is_none_or(|km| km.as_str() == "CUSTOMER"),
        symmetric_encrypt_decrypt: m.key_spec().is_none_or(|s| *s == KeySpec::SymmetricDefault)
            && m.key_usage()
                .is_none_or(|u| *u == KeyUsageType::EncryptDecrypt),
        multi_region: m.multi_region().unwrap_or(false),
    }))
}

/// EC2 filters take at most 200 values.
pub const FILTER_VALUES: usize = 200;

/// The page ferry asks DescribeSnapshots, DescribeImages and DescribeInstances for: AWS's
/// largest (1,000). Without a page size the SDK paginators send no MaxResults, and EC2 then
/// answers a listing in one response, which AWS warns is "susceptible to throttling and
/// timeouts" for an account with many snapshots. Lookups by id (at most `FILTER_VALUES` a
/// call) need no page: they are bounded, and `SnapshotIds` / `ImageIds` refuse MaxResults.
pub const PAGE_SIZE: i32 = 1000;

/// Snapshots by id, in batches of 200, through a filter rather than `SnapshotIds` so that a
/// missing id leaves it out of the answer instead of failing the whole call.
pub async fn snapshots_by_id(
    aws: &Aws,
    limits: &Limits,
    account: &str,
    region: &str,
    ids: &[String],
) -> Result<Vec<aws_sdk_ec2::types::Snapshot>, AwsError> {
    let client = aws.ec2(account, region);
    let mut all = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(FILTER_VALUES) {
        limits
            .take(&[bucket(account, region, "ec2:DescribeSnapshots")])
            .await;
        let out = client
            .describe_snapshots()
            .filters(
                Filter::builder()
                    .name("snapshot-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2", "DescribeSnapshots", e))?;
        all.extend(out.snapshots().iter().cloned());
    }
    Ok(all)
}

/// Images by id, in batches of `FILTER_VALUES`, through a filter for the same reason as
/// `snapshots_by_id`: an id that is gone is left out instead of failing the call.
pub async fn images_by_id(
    aws: &Aws,
    limits: &Limits,
    account: &str,
    region: &str,
    ids: &[String],
) -> Result<Vec<aws_sdk_ec2::types::Image>, AwsError> {
    let client = aws.ec2(account, region);
    let mut all = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(FILTER_VALUES) {
        limits
            .take(&[bucket(account, region, "ec2:DescribeImages")])
            .await;
        let out = client
            .describe_images()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2", "DescribeImages", e))?;
        all.extend(out.images().iter().cloned());
    }
    Ok(all)
}

/// The ARN of a role given by name (in `account_id`) or already as an ARN.
pub fn role_arn(account_id: &str, name_or_arn: &str) -> String {
    if name_or_arn.starts_with("arn:") {
        name_or_arn.to_string()
    } else {
        format!("arn:aws:iam::{account_id}:role/{name_or_arn}")
    }
}

/// Where a listing of object versions goes on: S3's key and version-id markers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionsFrom {
    pub key: Option<String>,
    pub version: Option<String>,
}

/// One page of `bucket`'s object versions under `prefix`, starting `from` (the default: the
/// first page), and where the next page starts (`None` after the last).
pub async fn object_versions_page(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    from: VersionsFrom,
) -> Result<
    (
        aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput,
        Option<VersionsFrom>,
    ),
    AwsError,
> {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .set_key_marker(from.key)
        .set_version_id_marker(from.version)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("s3", "ListObjectVersions", e))?;
    let next =
        (out.is_truncated().unwrap_or(false) && out.next_key_marker().is_some()).then(|| {
            VersionsFrom {
                key: out.next_key_marker().map(str::to_string),
                version: out.next_version_id_marker().map(str::to_string),
            }
        });
    Ok((out, next))
}

/// An RDS DB snapshot or Aurora DB cluster snapshot, as ferry reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DbSnapshotFacts {
    pub id: String,
    pub arn: String,
    /// `available`, `creating`, `copying`, `failed`, …
    pub status: String,
    pub percent: Option<i32>,
    /// `manual`, `automated`, `shared`, …
    pub snapshot_type: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub engine: String,
    /// The instance or cluster it is a snapshot of.
    pub of: String,
    pub created_ms: Option<i64>,
    pub size_gib: i32,
    pub option_group: Option<String>,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl DbSnapshotFacts {
    pub fn automated(&self) -> bool {
        self.snapshot_type == "automated"
    }
    pub fn available(&self) -> bool {
        self.status == "available"
    }

    fn of_db(s: &aws_sdk_rds::types::DbSnapshot) -> Self {
        DbSnapshotFacts {
            id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
            arn: s.db_snapshot_arn().unwrap_or_default().to_string(),
            status: s.status().unwrap_or_default().to_string(),
            percent: s.percent_progress(),
            snapshot_type: s.snapshot_type().unwrap_or_default().to_string(),
            encrypted: s.encrypted().unwrap_or(false),
            kms_key_id: s.kms_key_id().map(str::to_string),
            engine: s.engine().unwrap_or_default().to_string(),
            of: s.db_instance_identifier().unwrap_or_default().to_string(),
            created_ms: s.snapshot_create_time().and_then(|t| t.to_millis().ok()),
            size_gib: s.allocated_storage().unwrap_or(0),
            option_group: s.option_group_name().map(str::to_string),
            tags: rds_tags(s.tag_list()),
        }
    }

    fn of_cluster(s: &aws_sdk_rds::types::DbClusterSnapshot) -> Self {
        DbSnapshotFacts {
            id: s
                .db_cluster_snapshot_identifier()
                .unwrap_or_default()
                .to_string(),
            arn: s.db_cluster_snapshot_arn().unwrap_or_default().to_string(),
            status: s.status().unwrap_or_default().to_string(),
            percent: s.percent_progress(),
            snapshot_type: s.snapshot_type().unwrap_or_default().to_string(),
            encrypted: s.storage_encrypted().unwrap_or(false),
            kms_key_id: s.kms_key_id().map(str::to_string),
            engine: s.engine().unwrap_or_default().to_string(),
            of: s.db_cluster_identifier().unwrap_or_default().to_string(),
            created_ms: s.snapshot_create_time().and_then(|t| t.to_millis().ok()),
            size_gib: s.allocated_storage().unwrap_or(0),
            option_group: None,
            tags: rds_tags(s.tag_list()),
        }
    }
}

pub fn rds_tags(tags: &[aws_sdk_rds::types::Tag]) -> std::collections::BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Which RDS snapshots to read.
#[derive(Debug, Clone, Copy)]
pub enum DbQuery<'a> {
    /// One, by identifier or ARN (another account's shared snapshot by its ARN).
    One(&'a str),
    /// Several of the account's own, by identifier (one filtered call per 100).
    Ids(&'a [String]),
    /// Every snapshot of this instance (or cluster), manual and automated.
    Of(&'a str),
    /// Every manual snapshot of the account and region.
    Manual,
}

/// An automated snapshot's identifier (or ARN): RDS finds one by identifier only when asked
/// for `SnapshotType=automated` (API reference, DescribeDBSnapshots).
fn automated(id: &str) -> bool {
    id.starts_with("rds:") || id.contains(":snapshot:rds:") || id.contains(":cluster-snapshot:rds:")
}

/// Values per RDS `Filters` entry ferry sends at once.
pub const RDS_FILTER_VALUES: usize = 100;

/// Reads RDS snapshots, every page, each after a token of the describe call's bucket. A `One`
/// that does not exist is an empty answer, not an error.
pub async fn db_snapshots(
    aws: &Aws,
    limits: &Limits,
    account: &str,
    region: &str,
    kind: crate::ids::DbKind,
    query: DbQuery<'_>,
) -> Result<Vec<DbSnapshotFacts>, AwsError> {
    use crate::ids::DbKind;
    let client = aws.rds(account, region);
    let chunks: Vec<Vec<String>> = match query {
        DbQuery::Ids(ids) => ids.chunks(RDS_FILTER_VALUES).map(|c| c.to_vec()).collect(),
        _ => vec![Vec::new()],
    };
    let mut all = Vec::new();
    for chunk in chunks {
        if matches!(query, DbQuery::Ids(_)) && chunk.is_empty() {
            continue;
        }
        let mut marker: Option<String> = None;
        loop {
            let (op, api) = match kind {
                DbKind::Instance => ("DescribeDBSnapshots", "rds:DescribeDBSnapshots"),
                DbKind::Cluster => (
                    "DescribeDBClusterSnapshots",
                    "rds:DescribeDBClusterSnapshots",
                ),
            };
            limits.take(&[bucket(account, region, api)]).await;
            let read: Result<(Vec<DbSnapshotFacts>, Option<String>), AwsError> = match kind {
                DbKind::Instance => {
                    let mut req = client.describe_db_snapshots().set_marker(marker.clone());
                    req = match query {
                        DbQuery::One(id) => req
                            .db_snapshot_identifier(id)
                            .include_shared(id.starts_with("arn:"))
                            .set_snapshot_type(automated(id).then(|| "automated".to_string())),
                        DbQuery::Ids(_) => req.filters(
                            aws_sdk_rds::types::Filter::builder()
                                .name("db-snapshot-id")
                                .set_values(Some(chunk.clone()))
                                .build(),
                        ),
                        DbQuery::Of(i) => req.db_instance_identifier(i),
                        DbQuery::Manual => req.snapshot_type("manual"),
                    };
                    req.send()
                        .await
                        .map(|out| {
                            let page = out
                                .db_snapshots()
                                .iter()
                                .map(DbSnapshotFacts::of_db)
                                .collect();
                            (page, out.marker().map(str::to_string))
                        })
                        .map_err(|e| AwsError::from_sdk("rds", op, e))
                }
                DbKind::Cluster => {
                    let mut req = client
                        .describe_db_cluster_snapshots()
                        .set_marker(marker.clone());
                    req = match query {
                        DbQuery::One(id) => req
                            .db_cluster_snapshot_identifier(id)
                            .include_shared(id.starts_with("arn:"))
                            .set_snapshot_type(automated(id).then(|| "automated".to_string())),
                        DbQuery::Ids(_) => req.filters(
                            aws_sdk_rds::types::Filter::builder()
                                .name("db-cluster-snapshot-id")
                                .set_values(Some(chunk.clone()))
                                .build(),
                        ),
                        DbQuery::Of(c) => req.db_cluster_identifier(c),
                        DbQuery::Manual => req.snapshot_type("manual"),
                    };
                    req.send()
                        .await
                        .map(|out| {
                            let page = out
                                .db_cluster_snapshots()
                                .iter()
                                .map(DbSnapshotFacts::of_cluster)
                                .collect();
                            (page, out.marker().map(str::to_string))
                        })
                        .map_err(|e| AwsError::from_sdk("rds", op, e))
                }
            };
            let (page, next) = match read {
                Ok(r) => r,
                Err(e) if matches!(query, DbQuery::One(_)) && e.is_not_found() => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            };
            all.extend(page);
            match next.filter(|m| !m.is_empty()) {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
    }
    Ok(all)
}

/// The account's quota of manual snapshots of `kind` in the region, and how many it has, as
/// RDS reports them (DescribeAccountAttributes: `ManualSnapshots`, `ManualClusterSnapshots`).
pub async fn manual_snapshot_quota(
    aws: &Aws,
    limits: &Limits,
    account: &str,
    region: &str,
    kind: crate::ids::DbKind,
) -> Result<Option<(i64, i64)>, AwsError> {
    let name = match kind {
        crate::ids::DbKind::Instance => "ManualSnapshots",
        crate::ids::DbKind::Cluster => "ManualClusterSnapshots",
    };
    limits
        .take(&[bucket(account, region, "rds:DescribeAccountAttributes")])
        .await;
    let out = aws
        .rds(account, region)
        .describe_account_attributes()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("rds", "DescribeAccountAttributes", e))?;
    Ok(out
        .account_quotas()
        .iter()
        .find(|q| q.account_quota_name() == Some(name))
        .and_then(|q| Some((q.used()?, q.max()?))))
}
