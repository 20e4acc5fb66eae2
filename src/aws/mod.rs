//! AWS plumbing: one SDK configuration per plan account (profile, assumed role, endpoint),
//! clients per (account, region) over one shared HTTP client, and error classification.
//! No AWS semantics live here: those are in `steps/` and `resolve/`.

pub mod audit;
pub mod encoding;
pub mod error;
pub mod presign;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::plan::Plan;

pub use audit::{AuditRecord, AuditSink, Hooks, MutationGate};
pub use error::{AwsError, CallSite, classify};

/// Where the calls of one plan account go and with which credentials.
#[derive(Clone)]
struct AccountConfig {
    sdk: SdkConfig,
    /// The AWS account id the plan declares (for the audit log), else empty.
    id: String,
    /// The plan's `profile` and `role_arn` of the account, for errors that name them.
    profile: Option<String>,
    role_arn: Option<String>,
}

/// Marks every answer a client gets with its account and region (and how ferry reaches the
/// account), so that an error from it can say which account was refused.
#[derive(Debug)]
struct CallSiteTag(CallSite);

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallSiteTag {
    fn name(&self) -> &'static str {
        "FerryCallSite"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        error::tag_response(context.response_mut().headers_mut(), &self.0);
        Ok(())
    }
}

/// Clients for every (account, region) a plan touches. Cheap to clone clients out of.
pub struct Aws {
    accounts: BTreeMap<String, AccountConfig>,
    endpoint: Option<String>,
    /// The plan file as the user named it (for hints in errors), when there is one.
    plan_file: Option<String>,
    ec2: Mutex<HashMap<(String, String), aws_sdk_ec2::Client>>,
    kms: Mutex<HashMap<(String, String), aws_sdk_kms::Client>>,
    s3: Mutex<HashMap<(String, String), aws_sdk_s3::Client>>,
    s3control: Mutex<HashMap<(String, String), aws_sdk_s3control::Client>>,
    rds: Mutex<HashMap<(String, String), aws_sdk_rds::Client>>,
    /// Each account's credentials, for the URLs ferry presigns itself (presign.rs).
    credentials: Mutex<HashMap<String, aws_credential_types::Credentials>>,
    /// The audit sink and the mutation gate every client's interceptor consults.
    hooks: Arc<Hooks>,
}

/// The one HTTP client: hyper 1 with rustls on ring (the SDK crates' default features, which
/// would add a second stack and aws-lc, are off). Every SDK configuration ferry makes uses it.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    static CLIENT: std::sync::OnceLock<aws_smithy_runtime_api::client::http::SharedHttpClient> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// An endpoint taken as given, whatever the request (S3 Control with `--endpoint-url`; the
/// tests' own S3 Control client too).
#[derive(Debug)]
pub struct FixedEndpoint(pub String);

impl aws_sdk_s3control::config::endpoint::ResolveEndpoint for FixedEndpoint {
    fn resolve_endpoint<'a>(
        &'a self,
        _params: &'a aws_sdk_s3control::config::endpoint::Params,
    ) -> aws_sdk_s3control::config::endpoint::EndpointFuture<'a> {
        aws_sdk_s3control::config::endpoint::EndpointFuture::ready(Ok(
            aws_sdk_s3control::config::endpoint::Endpoint::builder()
                .url(self.0.clone())
                .build(),
        ))
    }
}

/// Region for global services (IAM, STS) and for loading credentials when none is configured.
const HOME_REGION: &str = "us-east-1";

impl Aws {
    /// Builds one SDK configuration per plan account. Nothing is called yet: credentials are
    /// resolved lazily by the SDK on the first request.
    pub async fn connect(
        plan: &Plan,
        endpoint: Option<String>,
        plan_file: Option<String>,
    ) -> Arc<Aws> {
        let mut base_loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(e) = &endpoint {
            base_loader = base_loader.endpoint_url(e);
        }
        let base = base_loader.load().await;
        // One HTTP client (one connection pool) for every account and region.
        let http = base.http_client();

        let mut accounts = BTreeMap::new();
        for named in &plan.accounts {
            let a = &named.value;
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .retry_config(RetryConfig::standard().with_max_attempts(3));
            if let Some(h) = &http {
                loader = loader.http_client(h.clone());
            }
            if let Some(e) = &endpoint {
                loader = loader.endpoint_url(e);
            }
            if let Some(p) = &a.profile {
                loader = loader.profile_name(&p.value);
            }
            let mut sdk = loader.load().await;
            if sdk.region().is_none() {
                sdk = sdk.into_builder().region(Region::new(HOME_REGION)).build();
            }
            if let Some(role) = &a.role_arn {
                let session = a
                    .session_name
                    .as_ref()
                    .map(|s| s.value.clone())
                    .unwrap_or_else(|| "ferry".to_string());
                let mut provider = AssumeRoleProvider::builder(&role.value)
                    .session_name(session)
                    .configure(&sdk);
                if let Some(ext) = &a.external_id {
                    provider = provider.external_id(ext.value.expose());
                }
                let provider = provider.build().await;
                sdk = sdk
                    .into_builder()
                    .credentials_provider(
                        aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                    )
                    .build();
            }
            let id = a.id.as_ref().map(|i| i.value.clone()).unwrap_or_default();
            accounts.insert(
                named.name.value.clone(),
                AccountConfig {
                    sdk,
                    id,
                    profile: a.profile.as_ref().map(|p| p.value.clone()),
                    role_arn: a.role_arn.as_ref().map(|r| r.value.clone()),
                },
            );
        }
        Arc::new(Aws {
            accounts,
            endpoint,
            plan_file,
            ec2: Mutex::default(),
            kms: Mutex::default(),
            s3: Mutex::default(),
            s3control: Mutex::default(),
            rds: Mutex::default(),
            credentials: Mutex::default(),
            hooks: Arc::default(),
        })
    }

    /// The run's audit sink and mutation gate, for every client made before or after.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    fn interceptor(&self, account: &str, region: &str) -> audit::AuditInterceptor {
        audit::AuditInterceptor {
            hooks: self.hooks.clone(),
            account_name: account.to_string(),
            account: self
                .accounts
                .get(account)
                .map(|a| a.id.clone())
                .unwrap_or_default(),
            region: region.to_string(),
        }
    }

    /// Where a call of this client goes, for errors: the account, how ferry reaches it, the
    /// region, and the endpoint (`--endpoint-url`, else AWS's for `service`, if given).
    pub fn site(&self, account: &str, region: &str, service: Option<&str>) -> CallSite {
        let a = self.accounts.get(account);
        CallSite {
            account: account.to_string(),
            region: region.to_string(),
            profile: a.and_then(|a| a.profile.clone()),
            role_arn: a.and_then(|a| a.role_arn.clone()),
            endpoint: self
                .endpoint
                .clone()
                .or_else(|| service.map(|s| format!("https://{s}.{region}.amazonaws.com"))),
            from_environment: std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty()),
            plan: self.plan_file.clone(),
        }
    }

    fn tag(&self, account: &str, region: &str) -> CallSiteTag {
        CallSiteTag(self.site(account, region, None))
    }

    fn sdk(&self, account: &str) -> &SdkConfig {
        &self
            .accounts
            .get(account)
            .unwrap_or_else(|| panic!("account `{account}` was checked to exist in the plan"))
            .sdk
    }

    pub fn ec2(&self, account: &str, region: &str) -> aws_sdk_ec2::Client {
        let key = (account.to_string(), region.to_string());
        let mut cache = self.ec2.lock().expect("client cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let conf = aws_sdk_ec2::config::Builder::from(self.sdk(account))
                    .region(Region::new(region.to_string()))
                    .interceptor(self.interceptor(account, region))
                    .interceptor(self.tag(account, region))
                    .build();
                aws_sdk_ec2::Client::from_conf(conf)
            })
            .clone()
    }

    pub fn rds(&self, account: &str, region: &str) -> aws_sdk_rds::Client {
        let key = (account.to_string(), region.to_string());
        let mut cache = self.rds.lock().expect("client cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let conf = aws_sdk_rds::config::Builder::from(self.sdk(account))
                    .region(Region::new(region.to_string()))
                    .interceptor(self.interceptor(account, region))
                    .interceptor(self.tag(account, region))
                    .build();
                aws_sdk_rds::Client::from_conf(conf)
            })
            .clone()
    }

    pub fn kms(&self, account: &str, region: &str) -> aws_sdk_kms::Client {
        let key = (account.to_string(), region.to_string());
        let mut cache = self.kms.lock().expect("client cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let conf = aws_sdk_kms::config::Builder::from(self.sdk(account))
                    .region(Region::new(region.to_string()))
                    .interceptor(self.interceptor(account, region))
                    .interceptor(self.tag(account, region))
                    .build();
                aws_sdk_kms::Client::from_conf(conf)
            })
            .clone()
    }

    pub fn s3(&self, account: &str, region: &str) -> aws_sdk_s3::Client {
        let key = (account.to_string(), region.to_string());
        let mut cache = self.s3.lock().expect("client cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let conf = aws_sdk_s3::config::Builder::from(self.sdk(account))
                    .region(Region::new(region.to_string()))
                    // A single custom endpoint cannot serve virtual-hosted bucket names.
                    .force_path_style(self.endpoint.is_some())
                    .interceptor(self.interceptor(account, region))
                    .interceptor(self.tag(account, region))
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            })
            .clone()
    }

    /// S3 Control (Batch Operations jobs). Its endpoint names the account in the host
    /// (`<account id>.s3-control.<region>.amazonaws.com`); a custom endpoint is taken as it is,
    /// since one local endpoint cannot serve a host per account.
    pub fn s3control(&self, account: &str, region: &str) -> aws_sdk_s3control::Client {
        let key = (account.to_string(), region.to_string());
        let mut cache = self.s3control.lock().expect("client cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let mut conf = aws_sdk_s3control::config::Builder::from(self.sdk(account))
                    .region(Region::new(region.to_string()))
                    .interceptor(self.interceptor(account, region))
                    .interceptor(self.tag(account, region));
                if let Some(e) = &self.endpoint {
                    conf = conf.endpoint_resolver(FixedEndpoint(e.clone()));
                }
                aws_sdk_s3control::Client::from_conf(conf.build())
            })
            .clone()
    }

    pub fn iam(&self, account: &str) -> aws_sdk_iam::Client {
        let conf = aws_sdk_iam::config::Builder::from(self.sdk(account))
            .region(Region::new(HOME_REGION))
            .interceptor(self.interceptor(account, HOME_REGION))
            .interceptor(self.tag(account, HOME_REGION))
            .build();
        aws_sdk_iam::Client::from_conf(conf)
    }

    pub fn sts(&self, account: &str) -> aws_sdk_sts::Client {
        let sdk = self.sdk(account);
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| HOME_REGION.to_string());
        let conf = aws_sdk_sts::config::Builder::from(sdk)
            .interceptor(self.interceptor(account, &region))
            .interceptor(self.tag(account, &region))
            .build();
        aws_sdk_sts::Client::from_conf(conf)
    }

    /// The AWS account id each plan account's credentials belong to (sts:GetCallerIdentity).
    /// The first call for each account: its error names the account, its profile or role, the
    /// region and the endpoint.
    pub async fn caller_account(&self, account: &str) -> Result<String, AwsError> {
        let region = self
            .sdk(account)
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| HOME_REGION.to_string());
        let out = self
            .sts(account)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk("sts", "GetCallerIdentity", e).at(self.site(
                    account,
                    &region,
                    Some("sts"),
                ))
            })?;
        Ok(out.account().unwrap_or_default().to_string())
    }

    pub fn account_names(&self) -> impl Iterator<Item = &str> {
        self.accounts.keys().map(String::as_str)
    }
}
