//! AWS errors, reduced to what ferry acts on: a code, a message, a request id, and the
//! executor's error class (retry, wait for a slot, or fail with a hint).

use std::fmt;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::request_id::RequestId;

use crate::exec::{ErrorClass, StepError};

/// One failed AWS call. Never carries credentials: only what the service answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    pub status: Option<u16>,
    /// The error never reached the service (timeout, connection refused, DNS).
    pub transport: bool,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} failed: {}: {}",
            self.service, self.operation, self.code, self.message
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    /// A failure on this side, before any request (signing, loading credentials).
    pub fn local(
        service: &'static str,
        operation: &'static str,
        message: impl Into<String>,
    ) -> Self {
        AwsError {
            service,
            operation,
            code: "ClientError".into(),
            message: message.into(),
            request_id: None,
            status: None,
            transport: false,
        }
    }

    pub fn from_sdk<E>(
        service: &'static str,
        operation: &'static str,
        err: aws_smithy_runtime_api::client::result::SdkError<
            E,
            aws_smithy_runtime_api::http::Response,
        >,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + RequestId + std::error::Error + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        let status = err.raw_response().map(|r| r.status().as_u16());
        let request_id = err
            .as_service_error()
            .and_then(|e| e.request_id())
            .or_else(|| {
                let headers = err.raw_response()?.headers();
                headers
                    .get("x-amzn-requestid")
                    .or_else(|| headers.get("x-amz-request-id"))
            })
            .map(str::to_string);
        let mut transport = matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        );
        // The interceptor's error shows in the Debug form only (a dispatch failure's source).
        let full = format!("{err:?}");
        let (code, message) = match &err {
            // Refused by the lease gate before sending: not a transport failure, never retried.
            _ if full.contains(super::audit::REFUSED) => {
                transport = false;
                let why = full
                    .find(super::audit::REFUSED)
                    .map(|i| full[i..].split('"').next().unwrap_or_default().to_string())
                    .unwrap_or_default();
                ("StateLockLost".into(), format!("{operation} {why}"))
            }
            SdkError::ServiceError(se) => (
                se.err().code().unwrap_or("Unknown").to_string(),
                se.err().message().unwrap_or_default().to_string(),
            ),
            SdkError::TimeoutError(_) => ("Timeout".into(), "the request timed out".into()),
            SdkError::DispatchFailure(d) => (
                "DispatchFailure".into(),
                format!("could not reach AWS: {:?}", d),
            ),
            other => (
                err_code(other).unwrap_or("Unknown").to_string(),
                aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
            ),
        };
        AwsError {
            service,
            operation,
            code,
            message,
            request_id,
            status,
            transport,
        }
    }

    pub fn is_code(&self, codes: &[&str]) -> bool {
        codes.contains(&self.code.as_str())
    }

    /// `*.NotFound`, `NotFoundException`, `NoSuchBucket`...
    pub fn is_not_found(&self) -> bool {
        self.code.ends_with("NotFound")
            || self.code.ends_with("NotFoundException")
            || self.code.starts_with("NoSuch")
            || self.status == Some(404)
    }

    /// As a step error, classified; `not_yet_consistent` lists codes that, for this call, mean
    /// "AWS has not caught up yet" (e.g. a role just created, used in a key policy).
    pub fn into_step_error(self, not_yet_consistent: &[&str]) -> StepError {
        let class = classify(&self, not_yet_consistent);
        let hint = hint(&self);
        let mut e = StepError::new(class, self.code.clone(), self.to_string());
        if let Some(id) = self.request_id {
            e = e.with_request_id(id);
        }
        if let Some(h) = hint {
            e = e.with_hint(h);
        }
        e
    }
}

fn err_code<E: ProvideErrorMetadata, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "RequestTimeout",
    "RequestTimeoutException",
    "Timeout",
    "DispatchFailure",
    "Unavailable",
    "OperationAborted",
    // IAM: another change to the same entity is in progress; it goes through once that ends.
    "ConcurrentModification",
    "ConcurrentModificationException",
    // An assumed-role session ended between the SDK's look at its credentials and the call:
    // the next attempt assumes the role again. (Expired static or SSO credentials fail after
    // the retries, with the hint to refresh them.)
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
];

/// Quotas on things in flight: wait for a slot, never fail.
const QUOTA: &[&str] = &["ResourceLimitExceeded", "SnapshotCopyLimitExceeded"];

pub fn classify(e: &AwsError, not_yet_consistent: &[&str]) -> ErrorClass {
    // KMS says LimitExceededException for its resource quotas (keys, aliases, grants per key):
    // waiting does not help, raising the quota does. Elsewhere the code means a request rate.
    if e.service.eq_ignore_ascii_case("kms") && e.code == "LimitExceededException" {
        return ErrorClass::Permanent;
    }
    // RDS answers SnapshotQuotaExceeded both for copies in flight ("Cannot copy more than 20
    // snapshots ...": a slot frees when one ends) and for the manual snapshot quota ("Cannot
    // create more than 100 manual snapshots": only deleting snapshots or a raised quota helps).
    if e.service == "rds" && e.code == "SnapshotQuotaExceeded" {
        return if e.message.contains("Cannot copy more than") {
            ErrorClass::QuotaExceeded
        } else {
            ErrorClass::Permanent
        };
    }
    if e.is_code(QUOTA) {
        ErrorClass::QuotaExceeded
    } else if e.is_code(THROTTLING) || (e.status == Some(503) && e.service == "s3") {
        // S3 reports KMS throttling during SSE-KMS as 503 too.
        ErrorClass::Throttled
    } else if e.is_code(not_yet_consistent) {
        ErrorClass::NotYetConsistent
    } else if e.transport || e.is_code(TRANSIENT) || e.status.is_some_and(|s| s >= 500) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// What the user can do about the common permanent errors.
fn hint(e: &AwsError) -> Option<String> {
    let code = e.code.as_str();
    if code.contains("AccessDenied") || code == "UnauthorizedOperation" || code == "AuthFailure" {
        Some(format!(
            "the identity ferry runs as in this account lacks permission for {}:{} on the resource named in the message; `ferry iam-policy` prints what each account needs",
            e.service, e.operation
        ))
    } else if code == "KMSInvalidStateException" || code == "DisabledException" {
        Some("the KMS key is disabled or pending deletion: enable it or choose another key".into())
    } else if code == "InvalidClientTokenId"
        || code == "ExpiredToken"
        || code == "SignatureDoesNotMatch"
    {
        Some("the credentials for this account are invalid or expired: refresh them (e.g. `aws sso login`)".into())
    } else if code == "LimitExceededException" && e.service.eq_ignore_ascii_case("kms") {
        Some(format!(
            "a KMS quota of this account and region is used up ({}:{} was refused: keys, aliases or grants per key, see the message); raise it in Service Quotas (\"AWS Key Management Service\") or remove what is no longer used, then `ferry resume`",
            e.service, e.operation
        ))
    } else if code == "SnapshotQuotaExceeded" {
        Some("the account's quota of manual RDS snapshots in this region is used up: delete snapshots no longer needed or raise \"Manual DB snapshots\" / \"Manual DB cluster snapshots\" in Service Quotas (\"Amazon RDS\"), then `ferry resume`".into())
    } else if code == "KMSKeyNotAccessibleFault" {
        Some("RDS cannot use a KMS key named in the message: the destination key must be enabled in the destination account and region, and a shared source's key must let the destination account use it (kms:DescribeKey, kms:CreateGrant, kms:GenerateDataKey*, kms:ReEncrypt*, kms:Decrypt; `key_access: policy` or `grant` lets ferry add that)".into())
    } else if code == "IdempotentParameterMismatch" {
        Some("a copy with the same client token but other parameters exists: the plan changed under a running migration; use `ferry resume --replan`".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(service: &'static str, code: &str, status: u16) -> AwsError {
        AwsError {
            service,
            operation: "Op",
            code: code.into(),
            message: String::new(),
            request_id: None,
            status: Some(status),
            transport: false,
        }
    }

    #[test]
    fn kms_resource_quotas_fail_and_say_which_quota() {
        let e = error("kms", "LimitExceededException", 400);
        assert_eq!(classify(&e, &[]), ErrorClass::Permanent);
        assert!(hint(&e).is_some_and(|h| h.contains("Service Quotas")));
        // Elsewhere the same code is a request rate: retried.
        let e = error("ec2", "LimitExceededException", 400);
        assert_eq!(classify(&e, &[]), ErrorClass::Throttled);
    }

    #[test]
    fn rds_copies_in_flight_wait_and_the_manual_snapshot_quota_fails() {
        let mut e = error("rds", "SnapshotQuotaExceeded", 400);
        e.message = "Cannot copy more than 20 snapshots at a time to this region".into();
        assert_eq!(classify(&e, &[]), ErrorClass::QuotaExceeded);
        e.message = "Cannot create more than 100 manual snapshots".into();
        assert_eq!(classify(&e, &[]), ErrorClass::Permanent);
        assert!(hint(&e).is_some_and(|h| h.contains("Service Quotas")));
        assert_eq!(
            classify(&error("rds", "Throttling", 400), &[]),
            ErrorClass::Throttled
        );
    }

    #[test]
    fn an_iam_concurrent_modification_is_tried_again() {
        let e = error("iam", "ConcurrentModification", 409);
        assert_eq!(classify(&e, &[]), ErrorClass::Transient);
    }
}
