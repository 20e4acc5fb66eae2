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
