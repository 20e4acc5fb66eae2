//! SigV4 query presigning (a URL that carries its own signature), for the few EC2 calls whose
//! request must carry one made for another region: botocore signs these itself, and the Rust
//! SDK does not (smithy-rs #133).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use super::{Aws, AwsError};

/// How long a presigned URL is valid (botocore's default for these, one hour).
const EXPIRES: Duration = Duration::from_secs(3600);

/// A query component as SigV4's canonical query string encodes it.
fn encode(s: &str) -> String {
    super::encoding::uri_encode(s, false)
}

/// The service endpoint of `region`: the endpoint override when there is one (it serves every
/// region, as botocore uses it), else the public one.
fn endpoint(override_url: Option<&str>, service: &str, region: &str) -> String {
    match override_url {
        Some(e) => e.trim_end_matches('/').to_string(),
        None if region.starts_with("cn-") => format!("https://{service}.{region}.amazonaws.com.cn"),
        None => format!("https://{service}.{region}.amazonaws.com"),
    }
}

/// `GET <endpoint of region>/?<params>&X-Amz-...`, signed for `service` in `region` with
/// `creds`. The session token, if any, is a query parameter of the URL.
pub fn presigned_get(
    creds: Credentials,
    endpoint_override: Option<&str>,
    service: &'static str,
    region: &str,
    params: &[(&str, &str)],
    now: SystemTime,
) -> Result<String, AwsError> {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let base = format!(
        "{}/?{}",
        endpoint(endpoint_override, service, region),
        query.join("&")
    );
    let identity = creds.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(EXPIRES);
    let signing = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| AwsError::local(service, "Presign", e.to_string()))?
        .into();
    let request = SignableRequest::new("GET", &base, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| AwsError::local(service, "Presign", e.to_string()))?;
    let (instructions, _) = sign(request, &signing)
        .map_err(|e| AwsError::local(service, "Presign", e.to_string()))?
        .into_parts();
    let mut url = base;
    for (k, v) in instructions.params() {
        url.push_str(&format!("&{}={}", encode(k), encode(v)));
    }
    Ok(url)
}

impl Aws {
    /// A presigned GET of `params` against `service` in `region`, with the credentials of
    /// `account` (the caller of the request that carries it).
    pub async fn presigned_get(
        &self,
        account: &str,
        service: &'static str,
        region: &str,
        params: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        let creds = self.credentials(account).await?;
        presigned_get(
            creds,
            self.endpoint.as_deref(),
            service,
            region,
            params,
            SystemTime::now(),
        )
    }

    /// The account's current credentials, cached until five minutes before they expire (an
    /// assumed role's provider would otherwise call AssumeRole every time).
    async fn credentials(&self, account: &str) -> Result<Credentials, AwsError> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|t| t > SystemTime::now() + Duration::from_secs(300))
        };
        if let Some(c) = self.credentials.lock().expect("credentials").get(account)
            && fresh(c)
        {
            return Ok(c.clone());
        }
        let provider = self
            .sdk(account)
            .credentials_provider()
            .ok_or_else(|| AwsError::local("sts", "Credentials", "no credentials configured"))?;
        let c = provider
            .provide_credentials()
            .await
            .map_err(|e| AwsError::local("sts", "Credentials", e.to_string()))?;
        self.credentials
            .lock()
            .expect("credentials")
            .insert(account.to_string(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presigned_url_carries_the_params_and_a_signature_scoped_to_its_region() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("tok/en+".into()), None, "t");
        let url = presigned_get(
            creds,
            None,
            "ec2",
            "us-west-2",
            &[("Action", "CopySnapshot"), ("SourceSnapshotId", "snap-1")],
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://ec2.us-west-2.amazonaws.com/?Action=CopySnapshot&SourceSnapshotId=snap-1&"
            ),
            "{url}"
        );
        for p in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-west-2%2Fec2%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=3600",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=tok%2Fen%2B",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(p), "{p} in {url}");
        }
        let over = presigned_get(
            Credentials::new("A", "s", None, None, "t"),
            Some("http://127.0.0.1:4566/"),
            "ec2",
            "us-west-2",
            &[("Action", "CopySnapshot")],
            SystemTime::now(),
        )
        .unwrap();
        assert!(
            over.starts_with("http://127.0.0.1:4566/?Action=CopySnapshot&"),
            "{over}"
        );
    }
}
