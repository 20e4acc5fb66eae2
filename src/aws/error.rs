//! AWS errors, reduced to what ferry acts on: a code, a message, a request id, and the
//! executor's error class (retry, wait for a slot, or fail with a hint). Failures before AWS
//! answered (no credentials, an expired session, an endpoint that cannot be reached) are
//! classified from the SDK's chain of causes, never shown as its `Debug` dump: a sentence for
//! the user, the chain itself for `-v` (`detail`).

use std::error::Error as StdError;
use std::fmt;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::request_id::RequestId;

use crate::exec::{ErrorClass, StepError};

/// The SDK found no credentials anywhere in its chain.
pub const NO_CREDENTIALS: &str = "NoCredentials";
/// A credential provider said its token or session has expired (SSO).
pub const CREDENTIALS_EXPIRED: &str = "CredentialsExpired";
/// Credentials could not be loaded for another reason (a broken profile, a failed provider).
pub const CREDENTIALS_ERROR: &str = "CredentialsError";
/// The endpoint could not be reached (refused, DNS, TLS, reset).
pub const CONNECTION_FAILED: &str = "ConnectionFailed";

/// Codes AWS answers for a call the caller's policies do not allow.
const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
];

/// Codes for credentials whose session has ended.
const EXPIRED: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    CREDENTIALS_EXPIRED,
];

/// Where a failed call went and how ferry reaches its account, for sentences that name them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallSite {
    /// The plan's name of the account.
    pub account: String,
    pub region: String,
    /// The account's `profile` in the plan.
    pub profile: Option<String>,
    /// The account's `role_arn` in the plan.
    pub role_arn: Option<String>,
    /// Where the call was sent: `--endpoint-url`, else AWS's endpoint (when known).
    pub endpoint: Option<String>,
    /// AWS_ACCESS_KEY_ID is set: the SDK takes those keys before any profile.
    pub from_environment: bool,
    /// The plan file as the user named it, for the commands a hint names (`ferry iam-policy`).
    pub plan: Option<String>,
}

impl CallSite {
    /// "account `prod` (profile `prod`, role arn:…)".
    fn who(&self) -> String {
        let keys = if self.from_environment {
            Some("the keys in AWS_ACCESS_KEY_ID".to_string())
        } else {
            self.profile.as_ref().map(|p| format!("profile `{p}`"))
        };
        let via = match (&self.role_arn, keys) {
            (Some(r), Some(k)) => format!(" (role {r}, assumed with {k})"),
            (Some(r), None) => format!(" (role {r})"),
            (None, Some(k)) => format!(" ({k})"),
            (None, None) => String::new(),
        };
        format!("account `{}`{via}", self.account)
    }
}

const TAG_ACCOUNT: &str = "x-ferry-account";
const TAG_REGION: &str = "x-ferry-region";
const TAG_PROFILE: &str = "x-ferry-profile";
const TAG_ROLE: &str = "x-ferry-role-arn";
const TAG_ENV: &str = "x-ferry-env-keys";
const TAG_PLAN: &str = "x-ferry-plan";

/// Marks an answer with the site of the client that got it (the client's interceptor does, see
/// `aws::CallSiteTag`), so that an error from it can name the account.
pub(crate) fn tag_response(headers: &mut aws_smithy_runtime_api::http::Headers, site: &CallSite) {
    let tags = [
        (TAG_ACCOUNT, Some(&site.account)),
        (TAG_REGION, Some(&site.region)),
        (TAG_PROFILE, site.profile.as_ref()),
        (TAG_ROLE, site.role_arn.as_ref()),
        (TAG_ENV, site.from_environment.then_some(&site.account)),
        (TAG_PLAN, site.plan.as_ref()),
    ];
    for (name, value) in tags {
        if let Some(v) = value {
            // A value a header cannot hold is left out: the sentence is then less precise.
            let _ = headers.try_insert(name, v.clone());
        }
    }
}

fn site_of(headers: &aws_smithy_runtime_api::http::Headers) -> Option<CallSite> {
    let get = |name: &str| headers.get(name).map(str::to_string);
    Some(CallSite {
        account: get(TAG_ACCOUNT)?,
        region: get(TAG_REGION).unwrap_or_default(),
        profile: get(TAG_PROFILE),
        role_arn: get(TAG_ROLE),
        endpoint: None,
        from_environment: get(TAG_ENV).is_some(),
        plan: get(TAG_PLAN),
    })
}

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
    /// What ferry knows beyond the answer (boxed: an `AwsError` travels in many `Result`s).
    pub context: Box<ErrorContext>,
}

/// Where a failed call went, and the causes below the SDK's error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorContext {
    /// Where the call went, when known: the credential check names every account's profile,
    /// role and endpoint; answers from AWS carry their client's account and region.
    pub site: Option<CallSite>,
    /// The credential sources the SDK tried, when it found none (`NoCredentials`).
    pub tried: Vec<String>,
    /// The technical chain (every cause, as it displays itself), for `-v`. Holds no secret: the
    /// SDK's errors never show credentials.
    pub detail: String,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self
            .context
            .site
            .as_ref()
            .map(CallSite::who)
            .unwrap_or_else(|| "this account".to_string());
        let code = self.code.as_str();
        match code {
            NO_CREDENTIALS => {
                write!(f, "no AWS credentials for {who}")?;
                if !self.context.tried.is_empty() {
                    let profile = self
                        .context
                        .site
                        .as_ref()
                        .and_then(|s| s.profile.as_deref());
                    let tried: Vec<String> = self
                        .context
                        .tried
                        .iter()
                        .map(|t| source_name(t, profile))
                        .collect();
                    write!(f, "; tried {}", tried.join(", "))?;
                }
                Ok(())
            }
            CREDENTIALS_ERROR => {
                write!(
                    f,
                    "could not load the AWS credentials of {who}: {}",
                    self.message
                )
            }
            CREDENTIALS_EXPIRED => {
                write!(f, "the AWS session of {who} has expired: {}", self.message)
            }
            _ if self.is_code(EXPIRED) => write!(
                f,
                "the AWS session of {who} has expired ({}:{} was refused: {})",
                self.service, self.operation, self.message
            ),
            CONNECTION_FAILED | "Timeout" if self.transport => {
                let site = self.context.site.as_ref();
                match site.and_then(|s| s.endpoint.as_deref()) {
                    Some(e) => write!(f, "could not connect to {e}")?,
                    None => write!(f, "could not connect to AWS")?,
                }
                let region = site.map(|s| s.region.as_str()).filter(|r| !r.is_empty());
                match region {
                    Some(r) => write!(f, " ({}, {r})", self.service)?,
                    None => write!(f, " ({}:{})", self.service, self.operation)?,
                }
                if let Some(s) = site {
                    write!(f, " for {}", s.who())?;
                }
                write!(f, ": {}", self.message)
            }
            // The role of the plan's `role_arn` could not be assumed: that is the whole story
            // (the hint says what to fix), not one call among many.
            _ if self.is_access_denied() && self.operation == "AssumeRole" => {
                let denial = Denial::of(self);
                let site = self.context.site.as_ref();
                let role = denial
                    .resource
                    .clone()
                    .or_else(|| site.and_then(|s| s.role_arn.clone()))
                    .unwrap_or_else(|| "the account's role_arn".into());
                write!(f, "ferry could not assume {role}")?;
                if let Some(s) = site {
                    write!(f, " for account `{}`", s.account)?;
                }
                if let Some(p) = &denial.principal {
                    write!(f, " as {p}")?;
                }
                write!(f, " ({code}")?;
                if let Some(id) = &self.request_id {
                    write!(f, ", request id {id}")?;
                }
                write!(f, ")")
            }
            _ if self.is_access_denied() => {
                let denial = Denial::of(self);
                match (&self.context.site, &denial.principal) {
                    (Some(s), Some(p)) => write!(f, "{}, as {p},", s.who())?,
                    (Some(s), None) => write!(f, "{}", s.who())?,
                    (None, Some(p)) => write!(f, "{p}")?,
                    (None, None) => write!(f, "the identity ferry runs as")?,
                }
                write!(f, " may not call {}", denial.action)?;
                if let Some(r) = &denial.resource {
                    write!(f, " on {r}")?;
                }
                if let Some(region) = self
                    .context
                    .site
                    .as_ref()
                    .map(|s| &s.region)
                    .filter(|r| !r.is_empty())
                {
                    write!(f, " in {region}")?;
                }
                if let Some(b) = &denial.because {
                    write!(f, ": {b}")?;
                }
                write!(f, " ({code}")?;
                if let Some(id) = &self.request_id {
                    write!(f, ", request id {id}")?;
                }
                write!(f, ")")
            }
            _ => {
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
    }
}

impl std::error::Error for AwsError {}

/// A credential source of the SDK's default chain, as a person calls it.
fn source_name(name: &str, profile: Option<&str>) -> String {
    match name {
        "Environment" => "the environment (AWS_ACCESS_KEY_ID)".into(),
        "Profile" => match profile {
            Some(p) => format!("profile `{p}`"),
            None => "the profile (AWS_PROFILE, else `default`)".into(),
        },
        "WebIdentityToken" => "a web identity token".into(),
        "EcsContainer" => "ECS".into(),
        "Ec2InstanceMetadata" => "instance metadata".into(),
        other => other.to_string(),
    }
}

/// What an access denied answer says: who, which action, on what, and why.
struct Denial {
    principal: Option<String>,
    action: String,
    resource: Option<String>,
    because: Option<String>,
}

impl Denial {
    fn of(e: &AwsError) -> Denial {
        // IAM's wording: "User: ARN is not authorized to perform: ACTION on resource: ARN
        // because REASON. Encoded authorization failure message: ..."
        let m = e.message.as_str();
        let word_after = |marker: &str| {
            m.find(marker).map(|i| {
                m[i + marker.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(['.', ',', ';'])
                    .to_string()
            })
        };
        let because = m.find(" because ").map(|i| {
            let rest = &m[i + " because ".len()..];
            let end = rest
                .find(". ")
                .or_else(|| rest.find(" Encoded authorization"))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('.').to_string()
        });
        Denial {
            principal: word_after("User: ").filter(|p| p.starts_with("arn:")),
            action: word_after("perform: ")
                .filter(|a| a.contains(':'))
                .unwrap_or_else(|| format!("{}:{}", e.service, e.operation)),
            resource: word_after("on resource: ").filter(|r| !r.is_empty()),
            because,
        }
    }
}

/// The causes below an error, outermost first.
fn causes<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(err.source(), |e: &&'a (dyn StdError + 'static)| {
        (*e).source()
    })
}

/// What a failure before any answer from AWS was: (code, message, credential sources tried,
/// whether it is worth trying again). `None`: nothing ferry can name.
fn local_failure(err: &(dyn StdError + 'static)) -> Option<(String, String, Vec<String>, bool)> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    let all: Vec<&(dyn StdError + 'static)> = causes(err).collect();
    let innermost = all.last().map(|e| e.to_string()).unwrap_or_default();
    let connector = all.iter().find_map(|e| e.downcast_ref::<ConnectorError>());
    // Below a credential provider that failed, a connector error means its network call failed.
    let network = all
        .iter()
        .skip_while(|e| !e.is::<CredentialsError>())
        .filter_map(|e| e.downcast_ref::<ConnectorError>())
        .any(|c| c.is_io() || c.is_timeout());
    if let Some(chain) = all
        .iter()
        .find_map(|e| e.downcast_ref::<aws_config::meta::ProviderChainError<CredentialsError>>())
    {
        let tried = chain
            .attempts()
            .iter()
            .map(|a| a.name().to_string())
            .collect();
        return Some((
            NO_CREDENTIALS.into(),
            "no credentials found".into(),
            tried,
            false,
        ));
    }
    if let Some(cred) = all
        .iter()
        .find_map(|e| e.downcast_ref::<CredentialsError>())
    {
        let expired = all
            .iter()
            .any(|e| e.to_string().to_ascii_lowercase().contains("expired"));
        if expired {
            return Some((CREDENTIALS_EXPIRED.into(), innermost, Vec::new(), false));
        }
        let timed_out = matches!(cred, CredentialsError::ProviderTimedOut(_));
        let reason = if innermost.is_empty() {
            cred.to_string()
        } else {
            innermost
        };
        return Some((
            CREDENTIALS_ERROR.into(),
            reason,
            Vec::new(),
            timed_out || network,
        ));
    }
    let connector = connector?;
    let reason = all
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(|io| match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::TimedOut => "timed out".to_string(),
            _ => io.to_string(),
        })
        .unwrap_or(innermost);
    let code = if connector.is_timeout() {
        "Timeout"
    } else {
        CONNECTION_FAILED
    };
    Some((code.into(), reason, Vec::new(), true))
}

/// The call's own error below the SDK's wrapping: AssumeRole's answer, when the credential
/// provider of an account with `role_arn` was refused.
fn assume_role_answer(err: &(dyn StdError + 'static)) -> Option<(String, String, Option<String>)> {
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    causes(err).find_map(|e| {
        let a = e.downcast_ref::<AssumeRoleError>()?;
        Some((
            a.code().unwrap_or("Unknown").to_string(),
            a.message().unwrap_or_default().to_string(),
            a.request_id().map(str::to_string),
        ))
    })
}

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
            context: Box::default(),
        }
    }

    /// The same error, for a call made for this site (fills in what the SDK did not say).
    pub fn at(mut self, site: CallSite) -> Self {
        let mut site = site;
        if let Some(old) = self.context.site.take()
            && site.region.is_empty()
        {
            site.region = old.region;
        }
        self.context.site = Some(site);
        self
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
        let (mut service, mut operation) = (service, operation);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let site = err.raw_response().and_then(|r| site_of(r.headers()));
        let mut request_id = err
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
        let mut tried = Vec::new();
        let detail = match err.as_service_error() {
            // The service's own words (the SDK's display of them is its metadata struct).
            Some(se) => format!(
                "{service}:{operation} answered HTTP {}: {}: {}{}",
                status.unwrap_or_default(),
                se.code().unwrap_or("Unknown"),
                se.message().unwrap_or_default(),
                request_id
                    .as_ref()
                    .map(|id| format!(" (request id {id})"))
                    .unwrap_or_default()
            ),
            None => std::iter::once(err.to_string())
                .chain(causes(&err).map(|e| e.to_string()))
                .collect::<Vec<_>>()
                .join(": "),
        };
        // The interceptor's error shows in the Debug form only (a dispatch failure's source);
        // it is looked for there and never shown.
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
            _ => {
                if let Some((code, message, id)) = assume_role_answer(&err) {
                    // The role could not be assumed: that call is what failed.
                    (service, operation) = ("sts", "AssumeRole");
                    transport = false;
                    request_id = id;
                    (code, message)
                } else if let Some((code, message, sources, again)) = local_failure(&err) {
                    transport = again;
                    tried = sources;
                    (code, message)
                } else {
                    (
                        err_code(&err).unwrap_or("Unknown").to_string(),
                        aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
                    )
                }
            }
        };
        AwsError {
            service,
            operation,
            code,
            message,
            request_id,
            status,
            transport,
            context: Box::new(ErrorContext {
                site,
                tried,
                detail,
            }),
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
        // The request id is in the message (`Display`), once: every view of a step error shows
        // the message on one line, and a separate request id only made it two.
        let mut e = StepError::new(class, self.code.clone(), self.to_string());
        // The plan's path where the call's site knows it, so the hint is a command to paste.
        let plan = self
            .context
            .site
            .as_ref()
            .and_then(|s| s.plan.clone())
            .unwrap_or_else(|| "PLAN".into());
        if let Some(h) = hint(&self, &plan) {
            e = e.with_hint(h);
        }
        e
    }

    /// What the user can do about it, if ferry knows; `plan` is the plan file, for the commands
    /// the hint names (`ferry iam-policy PLAN`).
    pub fn fix(&self, plan: &std::path::Path) -> Option<String> {
        hint(self, &plan.display().to_string())
    }

    /// AWS refused the call for lack of permission (IAM, a key or bucket policy, an SCP).
    pub fn is_access_denied(&self) -> bool {
        self.is_code(ACCESS_DENIED) || self.code.contains("AccessDenied")
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
    CONNECTION_FAILED,
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

/// How to get credentials for the account of `site`.
fn sign_in(site: Option<&CallSite>) -> String {
    let role = site
        .and_then(|s| s.role_arn.as_deref())
        .map(|r| format!(" (ferry assumes {r} with them)"))
        .unwrap_or_default();
    match site.and_then(|s| s.profile.as_deref()) {
        Some(p) => format!(
            "sign in with `aws sso login --profile {p}` (set the profile up first with `aws configure sso --profile {p}` if ~/.aws/config lacks it){role}"
        ),
        None => format!(
            "set AWS_PROFILE to a profile that reaches it and sign in (`aws sso login`), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the account a `profile:` in the plan{role}"
        ),
    }
}

/// What the user can do about the common permanent errors; `plan` is the plan's path as the
/// user would type it (`PLAN` when not known).
fn hint(e: &AwsError, plan: &str) -> Option<String> {
    let code = e.code.as_str();
    let site = e.context.site.as_ref();
    let who = site
        .map(CallSite::who)
        .unwrap_or_else(|| "this account".to_string());
    if e.is_access_denied() && e.operation == "AssumeRole" {
        let who = Denial::of(e)
            .principal
            .unwrap_or_else(|| "the identity ferry starts from".into());
        Some(format!(
            "its trust policy must allow {who} to assume it, with the plan's external_id if the trust policy asks for one, and {who} needs sts:AssumeRole on it; `ferry iam-policy {plan}` prints what each account needs"
        ))
    } else if e.is_access_denied() || code == "AuthFailure" {
        let action = Denial::of(e).action;
        let account = site
            .map(|s| format!("account `{}`", s.account))
            .unwrap_or_else(|| "this account".into());
        Some(format!(
            "allow {action} to the identity ferry runs as in {account}; `ferry iam-policy {plan}` prints the policy each account needs"
        ))
    } else if code == NO_CREDENTIALS || code == CREDENTIALS_ERROR {
        Some(sign_in(site))
    } else if e.is_code(EXPIRED) {
        let profile = site.and_then(|s| s.profile.as_deref());
        let again = match profile {
            _ if site.is_some_and(|s| s.from_environment) => format!(
                "export new AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or unset them to use {})",
                match profile {
                    Some(p) => format!("profile `{p}`: `aws sso login --profile {p}`"),
                    None => "a profile: AWS_PROFILE and `aws sso login`".into(),
                }
            ),
            Some(p) => format!("sign in again with `aws sso login --profile {p}`"),
            None => "get new credentials (`aws sso login`, or export a new AWS_SESSION_TOKEN with its keys)".into(),
        };
        Some(format!(
            "{again}, then run ferry again (`ferry resume` goes on with a run that stopped)"
        ))
    } else if e.transport && (code == CONNECTION_FAILED || code == "Timeout") {
        let endpoint = site.and_then(|s| s.endpoint.as_deref());
        Some(match endpoint {
            Some(e) if !e.contains(".amazonaws.com") => format!(
                "is the service at {e} running? It comes from --endpoint-url or AWS_ENDPOINT_URL: check them, then run ferry again"
            ),
            _ => "check the network, any proxy (HTTPS_PROXY) and the region, then run ferry again"
                .into(),
        })
    } else if code == "InvalidClientTokenId" || code == "SignatureDoesNotMatch" {
        Some(format!(
            "AWS refused the credentials ferry found for {who}: {}",
            sign_in(site)
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
            context: Box::default(),
        }
    }

    #[test]
    fn kms_resource_quotas_fail_and_say_which_quota() {
        let e = error("kms", "LimitExceededException", 400);
        assert_eq!(classify(&e, &[]), ErrorClass::Permanent);
        assert!(hint(&e, "PLAN").is_some_and(|h| h.contains("Service Quotas")));
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
        assert!(hint(&e, "PLAN").is_some_and(|h| h.contains("Service Quotas")));
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

    type CallerError = aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;

    fn dispatch(source: aws_smithy_runtime_api::client::result::ConnectorError) -> AwsError {
        let err = aws_smithy_runtime_api::client::result::SdkError::<
            CallerError,
            aws_smithy_runtime_api::http::Response,
        >::dispatch_failure(source);
        AwsError::from_sdk("sts", "GetCallerIdentity", err)
    }

    fn prod() -> CallSite {
        CallSite {
            account: "prod".into(),
            region: "us-east-1".into(),
            profile: Some("prod".into()),
            endpoint: Some("https://sts.us-east-1.amazonaws.com".into()),
            ..CallSite::default()
        }
    }

    fn no_dump(s: &str) {
        for dump in ["{ ", " }", "Some(", "ConnectorError", "DispatchFailure"] {
            assert!(!s.contains(dump), "`{dump}` in: {s}");
        }
    }

    #[test]
    fn a_refused_connection_names_the_endpoint_and_is_tried_again() {
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = dispatch(ConnectorError::io(Box::new(io))).at(prod());
        assert_eq!(e.code, CONNECTION_FAILED);
        assert_eq!(classify(&e, &[]), ErrorClass::Transient);
        let s = e.to_string();
        assert_eq!(
            s,
            "could not connect to https://sts.us-east-1.amazonaws.com (sts, us-east-1) for account `prod` (profile `prod`): connection refused"
        );
        no_dump(&s);
        assert!(hint(&e, "p.yaml").is_some_and(|h| h.contains("HTTPS_PROXY")));
        assert!(
            e.context.detail.contains("io error"),
            "{}",
            e.context.detail
        );
    }

    #[test]
    fn an_expired_sso_token_says_to_sign_in_again_and_is_not_retried() {
        use aws_credential_types::provider::error::CredentialsError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let cred =
            CredentialsError::provider_error("the SSO token has expired and cannot be refreshed");
        let e = dispatch(ConnectorError::other(Box::new(cred), None)).at(prod());
        assert_eq!(e.code, CREDENTIALS_EXPIRED);
        assert_eq!(classify(&e, &[]), ErrorClass::Permanent);
        let s = e.to_string();
        assert!(
            s.starts_with("the AWS session of account `prod` (profile `prod`) has expired"),
            "{s}"
        );
        no_dump(&s);
        assert!(hint(&e, "p.yaml").is_some_and(|h| h.contains("aws sso login --profile prod")));
    }

    #[test]
    fn access_denied_names_the_action_the_resource_and_iam_policy() {
        let mut e = error("kms", "AccessDeniedException", 400);
        e.operation = "CreateGrant";
        e.message = "User: arn:aws:iam::222222222222:root is not authorized to perform: kms:CreateGrant on resource: arn:aws:kms:us-east-1:111111111111:key/k because no resource-based policy allows the kms:CreateGrant action".into();
        e.request_id = Some("r-1".into());
        assert_eq!(
            e.to_string(),
            "arn:aws:iam::222222222222:root may not call kms:CreateGrant on arn:aws:kms:us-east-1:111111111111:key/k: no resource-based policy allows the kms:CreateGrant action (AccessDeniedException, request id r-1)"
        );
        let e = e.at(CallSite {
            account: "backup".into(),
            region: "us-east-1".into(),
            ..CallSite::default()
        });
        assert!(e.to_string().starts_with(
            "account `backup`, as arn:aws:iam::222222222222:root, may not call kms:CreateGrant"
        ));
        let h = hint(&e, "plans/x.yaml").expect("a hint");
        assert!(h.contains("`ferry iam-policy plans/x.yaml`"), "{h}");
        assert!(h.contains("kms:CreateGrant"), "{h}");
    }

    #[test]
    fn a_step_error_hint_names_the_plan_file_its_site_knows() {
        let mut e = error("ec2", "UnauthorizedOperation", 403);
        e.message = "User: arn:aws:iam::111111111111:user/u is not authorized to perform: ec2:DescribeSnapshots on resource: *".into();
        let site = CallSite {
            account: "prod".into(),
            plan: Some("plans/demo.yaml".into()),
            ..CallSite::default()
        };
        let step = e.clone().at(site).into_step_error(&[]);
        let h = step.hint.expect("a hint");
        assert!(h.contains("`ferry iam-policy plans/demo.yaml`"), "{h}");
        // Without a known plan file, the placeholder.
        let h = e.into_step_error(&[]).hint.expect("a hint");
        assert!(h.contains("`ferry iam-policy PLAN`"), "{h}");
    }

    #[test]
    fn a_role_that_cannot_be_assumed_is_one_sentence_and_the_hint_is_its_trust_policy() {
        let mut e = error("sts", "AccessDenied", 403);
        e.operation = "AssumeRole";
        e.message = "User: arn:aws:iam::111111111111:root is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::222222222222:role/ferry-migrator".into();
        e.request_id = Some("r-2".into());
        let e = e.at(CallSite {
            account: "backup".into(),
            region: "us-east-1".into(),
            role_arn: Some("arn:aws:iam::222222222222:role/ferry-migrator".into()),
            ..CallSite::default()
        });
        assert_eq!(
            e.to_string(),
            "ferry could not assume arn:aws:iam::222222222222:role/ferry-migrator for account `backup` as arn:aws:iam::111111111111:root (AccessDenied, request id r-2)"
        );
        let h = hint(&e, "p.yaml").expect("a hint");
        assert!(
            h.starts_with(
                "its trust policy must allow arn:aws:iam::111111111111:root to assume it, with the plan's external_id"
            ),
            "{h}"
        );
    }
}
