//! The audit hook: an SDK interceptor on every client ferry builds, which
//! - refuses a mutating call before it is sent once the run's lock is lost (the gate), and
//! - records every mutating call that was sent (one record per HTTP attempt, as AWS counts them):
//!   time, account, region, service, operation, the resource the request names, the AWS request
//!   id and the outcome. Never a header, a credential, a body or object contents: only the named
//!   fields below are read from a request or response.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde::Serialize;

/// Operation name prefixes that change something. The emulator judges the same question on its
/// own (every operation of AWS's service models that neither reads nor only uses a key or a
/// session is mutating: tests/emulator/additions/operations.py), and its test holds this list to
/// that verdict for every operation of ec2, kms, s3, sts, iam and rds. Not here, so not audited:
/// KMS's cryptographic operations and STS's AssumeRole (they change no resource).
const MUTATING: &[&str] = &[
    "Abort",
    "Accept",
    "Acquire",
    "Add",
    "Advertise",
    "Allocate",
    "Apply",
    "Assign",
    "Associate",
    "Attach",
    "Authorize",
    "Backtrack",
    "Batch",
    "Bundle",
    "Cancel",
    "Change",
    "Complete",
    "Confirm",
    "Connect",
    "Copy",
    "Create",
    "Deactivate",
    "Delete",
    "Deprovision",
    "Deregister",
    "Detach",
    "Disable",
    "Disassociate",
    "Disconnect",
    "Dissociate",
    "Enable",
    "Export",
    "Failover",
    // IAM's reports; KMS's Generate* are cryptographic operations.
    "GenerateCredentialReport",
    "GenerateOrganizationsAccessReport",
    "GenerateServiceLastAccessedDetails",
    "Import",
    "Lock",
    "Modify",
    "Monitor",
    "Move",
    "Post",
    "Promote",
    "Provision",
    "Purchase",
    "Put",
    "Reboot",
    "Register",
    "Reject",
    "Release",
    "Remove",
    "Rename",
    "Replace",
    "Replicate",
    "Report",
    "Request",
    "Reset",
    "Restore",
    "Resync",
    "Retire",
    "Revoke",
    "Rotate",
    "Run",
    "Schedule",
    "Send",
    "Set",
    "Start",
    "Stop",
    "Submit",
    "Switchover",
    "Tag",
    "Terminate",
    "Unassign",
    "Unlock",
    "Unmonitor",
    "Untag",
    "Update",
    "Upload",
    "Withdraw",
    "Write",
];

/// In the error of a call the gate refused (so that it is not retried as a transport failure).
pub const REFUSED: &str = "not sent: the run lost its state lock";

pub fn is_mutating(operation: &str) -> bool {
    MUTATING.iter().any(|p| {
        operation.starts_with(p)
            && operation[p.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_uppercase())
    })
}

/// One mutating AWS call (one HTTP attempt).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub time_ms: u64,
    /// The plan account's name and its AWS account id (if the plan declares it).
    pub account_name: String,
    pub account: String,
    pub region: String,
    pub service: String,
    pub operation: String,
    pub resource: Option<String>,
    /// What the call made, where the response names it (a new snapshot, image or key).
    pub created: Option<String>,
    pub request_id: Option<String>,
    /// `ok`, or `error <HTTP status> <code>`, or `no response: <why>`.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub attempt_ms: u64,
}

/// Where the records go (the run's audit log).
pub trait AuditSink: Send + Sync {
    fn record(&self, record: AuditRecord);
}

/// Asked before every mutating call: `Err(why)` refuses it (the run's lock was lost).
pub trait MutationGate: Send + Sync {
    fn check(&self) -> Result<(), String>;
}

/// The run-wide hooks, set once the run holds its lock; shared by every client's interceptor.
#[derive(Default)]
pub struct Hooks {
    sink: RwLock<Option<Arc<dyn AuditSink>>>,
    gate: RwLock<Option<Arc<dyn MutationGate>>>,
}

impl Hooks {
    pub fn set_sink(&self, sink: Arc<dyn AuditSink>) {
        *self.sink.write().expect("hooks") = Some(sink);
    }
    pub fn set_gate(&self, gate: Arc<dyn MutationGate>) {
        *self.gate.write().expect("hooks") = Some(gate);
    }
}

#[derive(Debug, Clone)]
struct PendingCall {
    resource: Option<String>,
    sent_ms: u64,
}

impl Storable for PendingCall {
    type Storer = StoreReplace<Self>;
}

/// The interceptor of one client: it knows the account and region the client works in.
#[derive(Clone)]
pub struct AuditInterceptor {
    pub hooks: Arc<Hooks>,
    pub account_name: String,
    pub account: String,
    pub region: String,
}

impl Debug for AuditInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditInterceptor({}/{})", self.account_name, self.region)
    }
}

fn operation(cfg: &ConfigBag) -> Option<(String, String)> {
    let m = cfg.load::<Metadata>()?;
    Some((m.service().to_string(), m.name().to_string()))
}

impl Intercept for AuditInterceptor {
    fn name(&self) -> &'static str {
        "FerryAudit"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some((_, op)) = operation(cfg) else {
            return Ok(());
        };
        if !is_mutating(&op) {
            return Ok(());
        }
        if let Some(g) = self.hooks.gate.read().expect("hooks").as_ref() {
            g.check().map_err(|why| format!("{op} {REFUSED} ({why})"))?;
        }
        let req = context.request();
        let resource = resource_of(req.uri(), req.body().bytes());
        cfg.interceptor_state().store_put(PendingCall {
            resource,
            sent_ms: crate::exec::now_ms(),
        });
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(pending) = cfg.load::<PendingCall>().cloned() else {
            return Ok(()); // not mutating, or never sent
        };
        cfg.interceptor_state().unset::<PendingCall>();
        let Some((service, op)) = operation(cfg) else {
            return Ok(());
        };
        let now = crate::exec::now_ms();
        let mut rec = AuditRecord {
            time_ms: pending.sent_ms,
            account_name: self.account_name.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            service,
            operation: op,
            resource: pending.resource,
            created: None,
            request_id: None,
            outcome: "no response".into(),
            http_status: None,
            attempt_ms: now.saturating_sub(pending.sent_ms),
        };
        if let Some(resp) = context.response() {
            let status = resp.status().as_u16();
            let body = resp.body().bytes().unwrap_or_default();
            rec.http_status = Some(status);
            rec.request_id = ["x-amzn-requestid", "x-amz-request-id"]
                .iter()
                .find_map(|h| resp.headers().get(*h).map(str::to_string))
                .or_else(|| xml_field(body, "requestid"));
            if (200..300).contains(&status) {
                rec.outcome = "ok".into();
                rec.created = created_by(body);
            } else {
                rec.outcome = format!(
                    "error {status} {}",
                    error_code(body).unwrap_or_else(|| "-".into())
                );
            }
        } else if let Some(Err(e)) = context.output_or_error() {
            rec.outcome = format!("no response: {e}");
        }
        if let Some(sink) = self.hooks.sink.read().expect("hooks").as_ref() {
            sink.record(rec);
        }
        Ok(())
    }
}

fn percent_decode(s: &str) -> String {
    super::encoding::form_decode(s)
}

/// Request parameters that name what a call acts on, most specific first.
const QUERY_RESOURCE: &[&str] = &[
    "SourceSnapshotId",
    "SnapshotId",
    "SourceImageId",
    "ImageId",
    "ResourceId.1",
    "VolumeId",
    "RoleName",
    "PolicyArn",
    "UserName",
    // RDS: a copy writes its target; the other calls name the snapshot they act on.
    "TargetDBSnapshotIdentifier",
    "TargetDBClusterSnapshotIdentifier",
    "DBSnapshotIdentifier",
    "DBClusterSnapshotIdentifier",
];
const JSON_RESOURCE: &[&str] = &["KeyId", "TargetKeyId", "AliasName", "GrantId"];

/// The resource a request names: S3 bucket/key from the path; a query (EC2, IAM) or JSON (KMS)
/// parameter by name. Nothing else of the body is kept.
fn resource_of(uri: &str, body: Option<&[u8]>) -> Option<String> {
    let body = body.unwrap_or_default();
    // A JSON API names the resource in its body; a REST API (S3) in its path, and its body may
    // be JSON too (a bucket policy): a JSON body without a resource field says nothing.
    if body.first() == Some(&b'{')
        && let Some(r) = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                JSON_RESOURCE
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
            })
    {
        return Some(r);
    }
    let text = std::str::from_utf8(body).unwrap_or_default();
    if text.contains("Action=") {
        let params: Vec<(&str, &str)> = text
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        return QUERY_RESOURCE.iter().find_map(|k| {
            params
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| percent_decode(v))
        });
    }
    // REST (S3): the path names bucket and key (path style), the host the bucket otherwise.
    let after_scheme = uri.split_once("://").map(|x| x.1).unwrap_or(uri);
    let (host, path) = after_scheme.split_once('/').unwrap_or((after_scheme, ""));
    let path = path.split('?').next().unwrap_or_default();
    let path = percent_decode(path);
    match host.split_once(".s3") {
        Some((bucket, _)) if !bucket.is_empty() => Some(format!("{bucket}/{path}")),
        _ if !path.is_empty() => Some(path),
        _ => None,
    }
}

/// The text of the first `<name>` element (case-insensitive name).
fn xml_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let lower = text.to_ascii_lowercase();
    let open = format!("<{name}>");
    let start = lower.find(&open)? + open.len();
    let end = start + lower[start..].find('<')?;
    Some(text[start..end].trim().to_string()).filter(|s| !s.is_empty())
}

fn error_code(body: &[u8]) -> Option<String> {
    if body.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let t = v.get("__type")?.as_str()?;
        return Some(t.rsplit('#').next().unwrap_or(t).to_string());
    }
    xml_field(body, "code")
}

fn created_by(body: &[u8]) -> Option<String> {
    if body.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        return ["KeyMetadata", "ReplicaKeyMetadata"]
            .iter()
            .find_map(|k| v.get(*k)?.get("Arn")?.as_str().map(str::to_string));
    }
    xml_field(body, "snapshotid").or_else(|| xml_field(body, "imageid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_operations_by_name() {
        for op in [
            "CopySnapshot",
            "PutKeyPolicy",
            "CreateGrant",
            "ReplicateKey",
            "TagResource",
        ] {
            assert!(is_mutating(op), "{op}");
        }
        for op in [
            "DescribeSnapshots",
            "GetKeyPolicy",
            "ListGrants",
            "Settle",
            "Runtime",
        ] {
            assert!(!is_mutating(op), "{op}");
        }
    }

    #[test]
    fn resources_named_by_requests() {
        assert_eq!(
            resource_of(
                "http://127.0.0.1:1/",
                Some(b"Action=CopySnapshot&Version=2016-11-15&SourceSnapshotId=snap-1&Encrypted=true")
            ),
            Some("snap-1".into())
        );
        assert_eq!(
            resource_of(
                "https://kms.x/",
                Some(br#"{"KeyId":"arn:k","Policy":"{}"}"#)
            ),
            Some("arn:k".into())
        );
        assert_eq!(
            resource_of(
                "http://127.0.0.1:1/bucket/a%20b?x-id=PutObject",
                Some(b"data")
            ),
            Some("bucket/a b".into())
        );
        assert_eq!(
            resource_of("https://logs.s3.eu-west-2.amazonaws.com/k", None),
            Some("logs/k".into())
        );
        // A bucket policy is a JSON body, and its bucket is in the path.
        assert_eq!(
            resource_of(
                "http://127.0.0.1:1/logs?policy",
                Some(br#"{"Version":"2012-10-17","Statement":[]}"#)
            ),
            Some("logs".into())
        );
    }

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_types::body::SdkBody;

    /// An HTTP client that counts what reaches it and answers KMS with an empty success.
    #[derive(Debug, Clone, Default)]
    struct FakeKms(Arc<Mutex<Vec<String>>>);

    impl HttpConnector for FakeKms {
        fn call(&self, request: aws_smithy_runtime_api::http::Request) -> HttpConnectorFuture {
            let target = request
                .headers()
                .get("x-amz-target")
                .unwrap_or_default()
                .to_string();
            self.0.lock().unwrap().push(target);
            let mut resp = aws_smithy_runtime_api::http::Response::new(
                200.try_into().unwrap(),
                SdkBody::from(
                    r#"{"KeyMetadata":{"KeyId":"k-1","Arn":"arn:aws:kms:us-east-1:1:key/k-1"}}"#,
                ),
            );
            resp.headers_mut().insert("x-amzn-requestid", "req-1");
            HttpConnectorFuture::ready(Ok(resp))
        }
    }

    impl HttpClient for FakeKms {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<AuditRecord>>);
    impl AuditSink for Sink {
        fn record(&self, r: AuditRecord) {
            self.0.lock().unwrap().push(r);
        }
    }

    struct Gate(AtomicBool);
    impl MutationGate for Gate {
        fn check(&self) -> Result<(), String> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("its lease ran out".into())
            }
        }
    }

    #[tokio::test]
    async fn the_gate_stops_mutating_calls_before_they_are_sent_and_the_sink_records_the_rest() {
        let http = FakeKms::default();
        let hooks = Arc::new(Hooks::default());
        let sink = Arc::new(Sink::default());
        let gate = Arc::new(Gate(AtomicBool::new(true)));
        hooks.set_sink(sink.clone());
        hooks.set_gate(gate.clone());
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "AKIDTEST",
                "secret-test",
                None,
                None,
                "test",
            ))
            .http_client(http.clone())
            .interceptor(AuditInterceptor {
                hooks: hooks.clone(),
                account_name: "prod".into(),
                account: "111111111111".into(),
                region: "us-east-1".into(),
            })
            .build();
        let kms = aws_sdk_kms::Client::from_conf(conf);

        kms.create_alias()
            .alias_name("alias/a")
            .target_key_id("k-1")
            .send()
            .await
            .unwrap();
        kms.describe_key().key_id("k-1").send().await.unwrap();
        {
            let recs = sink.0.lock().unwrap();
            assert_eq!(recs.len(), 1, "only the mutating call is recorded");
            let r = &recs[0];
            assert_eq!(
                (
                    r.operation.as_str(),
                    r.resource.as_deref(),
                    r.request_id.as_deref()
                ),
                ("CreateAlias", Some("k-1"), Some("req-1"))
            );
            assert_eq!(
                (r.outcome.as_str(), r.account.as_str()),
                ("ok", "111111111111")
            );
            let text = serde_json::to_string(r).unwrap();
            assert!(!text.contains("secret-test") && !text.contains("AKIDTEST"));
        }

        gate.0.store(false, Ordering::SeqCst);
        let err = kms
            .create_grant()
            .key_id("k-1")
            .grantee_principal("p")
            .send()
            .await
            .unwrap_err();
        let e = crate::aws::AwsError::from_sdk("kms", "CreateGrant", err);
        assert_eq!(e.code, "StateLockLost");
        assert_eq!(
            crate::aws::classify(&e, &[]),
            crate::exec::ErrorClass::Permanent,
            "never retried"
        );
        // Reads go on (the run winds down); the refused call never reached the wire.
        kms.describe_key().key_id("k-1").send().await.unwrap();
        let sent = http.0.lock().unwrap().clone();
        assert_eq!(
            sent,
            [
                "TrentService.CreateAlias",
                "TrentService.DescribeKey",
                "TrentService.DescribeKey"
            ]
        );
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn request_ids_and_codes() {
        let ok = b"<CopySnapshotResponse><requestId>r-1</requestId><snapshotId>snap-9</snapshotId></CopySnapshotResponse>";
        assert_eq!(xml_field(ok, "requestid"), Some("r-1".into()));
        assert_eq!(created_by(ok), Some("snap-9".into()));
        let err = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors><RequestID>r-2</RequestID></Response>";
        assert_eq!(error_code(err), Some("RequestLimitExceeded".into()));
        assert_eq!(xml_field(err, "requestid"), Some("r-2".into()));
    }
}
