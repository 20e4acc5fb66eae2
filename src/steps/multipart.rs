//! One object copied in parts (CreateMultipartUpload, UploadPartCopy, CompleteMultipartUpload):
//! for objects above `settings.multipart_threshold`, and always above 5 GiB, the most one
//! CopyObject copies (S3 user guide, "Copying an object using multipart upload").
//!
//! A multipart copy keeps less by itself than CopyObject does: the create call has no metadata
//! directive, so the source's metadata, content headers, tags, storage class and checksum
//! algorithm are read (HeadObject, GetObjectTagging) and set on the create. SSE-KMS goes on the
//! create only. An upload that fails is aborted; one left by a killed run (for the same key)
//! is aborted before the copy starts, so none is left to bill.

use std::sync::Arc;

use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
    StorageClass,
};

use super::{failed, sdk_error};
use crate::aws::AwsError;
use crate::exec::{BucketKey, ErrorClass, Limits, RetryPolicies, StepError, with_retries};

/// S3's limits: at most 10,000 parts, each (but the last) at least 5 MiB, at most 5 GiB.
const MAX_PARTS: u64 = 10_000;
const PART_MIN: u64 = 5 << 20;
const PART_MAX: u64 = 5 << 30;
/// The part size ferry prefers (the aws CLI's default `multipart_chunksize`).
const PART_DEFAULT: u64 = 8 << 20;
/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 8;

/// The part size for an object of `size` bytes: 8 MiB, or larger to stay within 10,000 parts
/// (rounded up to a MiB).
pub fn part_size(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    let mib = 1 << 20;
    needed
        .div_ceil(mib)
        .saturating_mul(mib)
        .clamp(PART_DEFAULT.max(PART_MIN), PART_MAX)
}

/// The inclusive byte ranges of the parts, 1-based part numbers.
pub fn ranges(size: u64) -> Vec<(i32, u64, u64)> {
    let part = part_size(size);
    let mut out = Vec::new();
    let mut first = 0;
    let mut n = 1;
    while first < size {
        let last = (first + part).min(size) - 1;
        out.push((n, first, last));
        first = last + 1;
        n += 1;
    }
    out
}

fn s3_error<E: super::ServiceError>(op: &'static str) -> impl Fn(super::SdkError<E>) -> AwsError {
    sdk_error("s3", op)
}

/// What one multipart copy needs.
pub struct PartCopy {
    /// The destination's client (the upload).
    pub client: aws_sdk_s3::Client,
    /// The same account's client in the source region (the source's metadata and tags).
    pub src_client: aws_sdk_s3::Client,
    pub limits: Arc<Limits>,
    /// The token buckets each call draws on (per prefix, KMS in both regions).
    pub tokens: Vec<BucketKey>,
    pub src_bucket: String,
    pub key: String,
    pub version: Option<String>,
    /// `x-amz-copy-source`, encoded, with the version.
    pub copy_source: String,
    pub size: u64,
    pub dst_bucket: String,
    pub kms_key: String,
    pub bucket_key: bool,
    pub storage_class: Option<String>,
}

/// The checksum algorithm an object was written with, as HeadObject (ChecksumMode ENABLED)
/// shows it.
fn algorithm_of(
    h: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
) -> Option<ChecksumAlgorithm> {
    if h.checksum_sha256().is_some() {
        Some(ChecksumAlgorithm::Sha256)
    } else if h.checksum_sha1().is_some() {
        Some(ChecksumAlgorithm::Sha1)
    } else if h.checksum_crc32_c().is_some() {
        Some(ChecksumAlgorithm::Crc32C)
    } else if h.checksum_crc32().is_some() {
        Some(ChecksumAlgorithm::Crc32)
    } else if h.checksum_crc64_nvme().is_some() {
        Some(ChecksumAlgorithm::Crc64Nvme)
    } else {
        None
    }
}

/// Tags as the `x-amz-tagging` header takes them (URL query encoding).
fn tagging_header(tags: &[aws_sdk_s3::types::Tag]) -> String {
    let enc = |s: &str| crate::aws::encoding::uri_encode(s, false);
    tags.iter()
        .map(|t| format!("{}={}", enc(t.key()), enc(t.value())))
        .collect::<Vec<_>>()
        .join("&")
}

impl PartCopy {
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StepError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StepError>>,
    {
        with_retries(&RetryPolicies::within_a_step(), || async {
            self.limits.take(&self.tokens).await;
            match f().await {
                Ok(v) => {
                    self.limits.succeeded(&self.tokens);
                    Ok(v)
                }
                Err(e) => {
                    if e.class == ErrorClass::Throttled {
                        self.limits.throttled(&self.tokens);
                    }
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| StepError {
            message: format!("{what} of {}: {}", self.key, e.message),
            ..e
        })
    }

    /// Copies the object; `landed` tells, after an unanswered completion, whether it did.
    pub async fn run(&self) -> Result<(), StepError> {
        let head = self
            .call("HeadObject", || async {
                self.src_client
                    .head_object()
                    .bucket(&self.src_bucket)
                    .key(&self.key)
                    .set_version_id(self.version.clone())
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| failed(s3_error("HeadObject")(e), &[]))
            })
            .await
            // A version deleted since the listing answers 404 to HeadObject.
            .map_err(|e| match e.code.as_str() {
                "NotFound" | "404" => StepError {
                    code: "NoSuchKey".into(),
                    ..e
                },
                _ => e,
            })?;
        let tags = self
            .call("GetObjectTagging", || async {
                self.src_client
                    .get_object_tagging()
                    .bucket(&self.src_bucket)
                    .key(&self.key)
                    .set_version_id(self.version.clone())
                    .send()
                    .await
                    .map_err(|e| failed(s3_error("GetObjectTagging")(e), &[]))
            })
            .await?;
        self.abort_left_over(None).await?;
        // The parts cover the object HeadObject saw, and each must still be that object (an
        // overwrite meanwhile fails the copy instead of mixing two objects).
        let size = head
            .content_length()
            .map(|n| n.max(0) as u64)
            .unwrap_or(self.size);
        let etag = head.e_tag().map(str::to_string);
        let algorithm = algorithm_of(&head);
        let tagging = tagging_header(tags.tag_set());
        let created = self
            .call("CreateMultipartUpload", || async {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.dst_bucket)
                    .key(&self.key)
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(&self.kms_key)
                    .bucket_key_enabled(self.bucket_key)
                    .set_metadata(head.metadata().cloned())
                    .set_content_type(head.content_type().map(str::to_string))
                    .set_cache_control(head.cache_control().map(str::to_string))
                    .set_content_disposition(head.content_disposition().map(str::to_string))
                    .set_content_encoding(head.content_encoding().map(str::to_string))
                    .set_content_language(head.content_language().map(str::to_string))
                    .set_expires(head.expires_string().and_then(|e| {
                        aws_smithy_types::DateTime::from_str(
                            e,
                            aws_smithy_types::date_time::Format::HttpDate,
                        )
                        .ok()
                    }))
                    .set_storage_class(self.storage_class.as_deref().map(StorageClass::from))
                    .set_tagging((!tagging.is_empty()).then(|| tagging.clone()))
                    .set_checksum_algorithm(algorithm.clone())
                    .send()
                    .await
                    .map_err(|e| failed(s3_error("CreateMultipartUpload")(e), &[]))
            })
            .await?;
        let Some(upload) = created.upload_id().map(str::to_string) else {
            return Err(StepError::permanent(
                "NoUpload",
                "CreateMultipartUpload returned no upload id",
            ));
        };
        let done = self
            .parts_and_complete(&upload, algorithm.as_ref(), size, etag.as_deref())
            .await;
        if done.is_err() {
            // Never left to bill.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.dst_bucket)
                .key(&self.key)
                .upload_id(&upload)
                .send()
                .await;
        }
        // An upload a lost CreateMultipartUpload answer made, which no one else knows of.
        let _ = self.abort_left_over(Some(&upload)).await;
        done
    }

    async fn parts_and_complete(
        &self,
        upload: &str,
        algorithm: Option<&ChecksumAlgorithm>,
        size: u64,
        etag: Option<&str>,
    ) -> Result<(), StepError> {
        use futures::StreamExt;
        let parts: Vec<Result<CompletedPart, StepError>> = futures::stream::iter(ranges(size))
            .map(|(n, first, last)| async move {
                let out = self
                    .call("UploadPartCopy", || async {
                        self.client
                            .upload_part_copy()
                            .bucket(&self.dst_bucket)
                            .key(&self.key)
                            .upload_id(upload)
                            .part_number(n)
                            .copy_source(&self.copy_source)
                            .copy_source_range(format!("bytes={first}-{last}"))
                            .set_copy_source_if_match(etag.map(str::to_string))
                            .send()
                            .await
                            .map_err(|e| failed(s3_error("UploadPartCopy")(e), &[]))
                    })
                    .await?;
                let r = out.copy_part_result();
                let mut part = CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(r.and_then(|r| r.e_tag()).map(str::to_string));
                part = match algorithm {
                    Some(ChecksumAlgorithm::Sha256) => part.set_checksum_sha256(
                        r.and_then(|r| r.checksum_sha256()).map(str::to_string),
                    ),
                    Some(ChecksumAlgorithm::Sha1) => part
                        .set_checksum_sha1(r.and_then(|r| r.checksum_sha1()).map(str::to_string)),
                    Some(ChecksumAlgorithm::Crc32C) => part.set_checksum_crc32_c(
                        r.and_then(|r| r.checksum_crc32_c()).map(str::to_string),
                    ),
                    Some(ChecksumAlgorithm::Crc32) => part
                        .set_checksum_crc32(r.and_then(|r| r.checksum_crc32()).map(str::to_string)),
                    Some(ChecksumAlgorithm::Crc64Nvme) => part.set_checksum_crc64_nvme(
                        r.and_then(|r| r.checksum_crc64_nvme()).map(str::to_string),
                    ),
                    _ => part,
                };
                Ok(part.build())
            })
            .buffered(PARTS_IN_FLIGHT)
            .collect()
            .await;
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Sent once: after an unanswered completion the object is looked at before the upload
        // would be completed again (S3 may answer NoSuchUpload for a completed one).
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.dst_bucket)
            .key(&self.key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(super::sent_once_s3())
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = failed(s3_error("CompleteMultipartUpload")(e), &[]);
                if matches!(e.class, ErrorClass::Transient) && self.completed(upload, size).await {
                    return Ok(());
                }
                Err(e)
            }
        }
    }

    /// Whether an unanswered completion took effect: the upload is gone from the bucket's
    /// uploads and an object of the full size is there.
    async fn completed(&self, upload: &str, size: u64) -> bool {
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.dst_bucket)
            .prefix(&self.key)
            .send()
            .await;
        let still_open = listed
            .map(|l| l.uploads().iter().any(|u| u.upload_id() == Some(upload)))
            .unwrap_or(true);
        if still_open {
            return false;
        }
        self.client
            .head_object()
            .bucket(&self.dst_bucket)
            .key(&self.key)
            .send()
            .await
            .is_ok_and(|h| h.content_length().unwrap_or(-1) as u64 == size)
    }

    /// Uploads to this very key other than `ours`, which an earlier, killed attempt (or a
    /// CreateMultipartUpload whose answer was lost) left open: aborted (the copy replaces that
    /// key anyway).
    async fn abort_left_over(&self, ours: Option<&str>) -> Result<(), StepError> {
        let listed = self
            .call("ListMultipartUploads", || async {
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.dst_bucket)
                    .prefix(&self.key)
                    .send()
                    .await
                    .map_err(|e| failed(s3_error("ListMultipartUploads")(e), &[]))
            })
            .await?;
        for u in listed.uploads() {
            if u.key() != Some(self.key.as_str()) {
                continue;
            }
            let Some(id) = u.upload_id() else { continue };
            if Some(id) == ours {
                continue;
            }
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.dst_bucket)
                .key(&self.key)
                .upload_id(id)
                .send()
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_ten_thousand_and_cover_every_byte() {
        assert_eq!(part_size(40 << 20), 8 << 20);
        let r = ranges(40 << 20);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0], (1, 0, (8 << 20) - 1));
        assert_eq!(r[4].2, (40 << 20) - 1);
        // 5 TiB, S3's largest object: 10,000 parts at most.
        let big = 5u64 << 40;
        assert!(big.div_ceil(part_size(big)) <= MAX_PARTS);
        let odd = ranges((8 << 20) + 1);
        assert_eq!(odd.len(), 2);
        assert_eq!(odd[1], (2, 8 << 20, 8 << 20));
        assert_eq!(
            tagging_header(&[aws_sdk_s3::types::Tag::builder()
                .key("a b")
                .value("c&d")
                .build()
                .unwrap()]),
            "a%20b=c%26d"
        );
    }
}
