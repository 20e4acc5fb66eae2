//! The local AWS emulator (tests/emulator/) as seen from Rust tests.
//!
//! `Emulator::start()` runs `tests/emulator/start` (installing the emulator into `.venv` first if
//! needed) on a free loopback port; dropping the `Emulator` stops its whole process group. The
//! server also exits by itself when the test process goes away (it watches its parent pid), so a
//! shared emulator kept in a `static` (`Emulator::shared()`) does not outlive the test binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_types::sdk_config::SharedCredentialsProvider;
use serde::Deserialize;
use serde_json::Value;

/// Secret key of every static test credential (the emulator does not check signatures).
pub const TEST_SECRET_KEY: &str = "ferry-emulator-test-secret";

/// The static access key id that the emulator maps to `account_id` (12 digits).
pub fn access_key_for(account_id: &str) -> String {
    assert!(
        account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit()),
        "an AWS account id has 12 digits, got {account_id:?}"
    );
    format!("AKIA{account_id}TEST")
}

/// A trust policy that lets every principal of `trusted_account` assume the role, with
/// `external_id` (an `sts:ExternalId` StringEquals condition) when one is given.
pub fn trust_policy(trusted_account: &str, external_id: Option<&str>) -> Value {
    let mut statement = serde_json::json!({
        "Effect": "Allow",
        "Principal": { "AWS": format!("arn:aws:iam::{trusted_account}:root") },
        "Action": "sts:AssumeRole"
    });
    if let Some(id) = external_id {
        statement["Condition"] = serde_json::json!({ "StringEquals": { "sts:ExternalId": id } });
    }
    serde_json::json!({ "Version": "2012-10-17", "Statement": [statement] })
}

/// A running emulator process.
pub struct Emulator {
    child: Child,
    endpoint: String,
    addr: String,
    stderr_path: PathBuf,
    _stderr: tempfile::NamedTempFile,
}

impl Emulator {
    /// Starts an emulator with its default configuration.
    pub fn start() -> Emulator {
        Self::start_with(Value::Object(Default::default()))
    }

    /// Starts an emulator whose start-up configuration is `config` (keys: see the README).
    pub fn start_with(config: Value) -> Emulator {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/emulator/start");
        // no stamp: this start (or a concurrent one) installs moto from PyPI first
        let first_install = !root.join(".venv/.ferry-emulator-requirements").exists();
        let stderr = tempfile::NamedTempFile::new().expect("temp file for the emulator's stderr");
        let stderr_path = stderr.path().to_path_buf();
        let mut child = Command::new("bash")
            .arg(&script)
            .arg("--port")
            .arg("0")
            .env("FERRY_EMULATOR_PARENT_PID", std::process::id().to_string())
            .env("FERRY_EMULATOR_CONFIG_JSON", config.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen stderr file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(endpoint) = line.strip_prefix("FERRY_EMULATOR_ENDPOINT=") {
                    let _ = tx.send(endpoint.trim().to_string());
                    break;
                }
            }
            // keep draining so the server never blocks on a full pipe
            for _ in lines {}
        });

        let timeout = Duration::from_secs(if first_install { 600 } else { 60 });
        let deadline = Instant::now() + timeout;
        let endpoint = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(endpoint) => break endpoint,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "the emulator exited ({status}) before it was ready; its stderr:\n{}",
                            std::fs::read_to_string(&stderr_path).unwrap_or_default()
                        );
                    }
                }
                Err(_) => {
                    kill_group(&mut child);
                    panic!(
                        "the emulator printed no endpoint within {timeout:?}; its stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        };
        let addr = endpoint
            .strip_prefix("http://")
            .expect("endpoint is http://host:port")
            .to_string();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "emulator must listen on loopback only: {addr}"
        );
        Emulator {
            child,
            endpoint,
            addr,
            stderr_path,
            _stderr: stderr,
        }
    }

    /// One emulator for the whole test binary, started on first use. Tests sharing it must use
    /// their own account ids and must not change its configuration.
    pub fn shared() -> &'static Emulator {
        SHARED.get_or_init(|| {
            let emulator = Emulator::start();
            // SAFETY: registers a plain extern "C" function, run once when the process exits.
            unsafe { libc::atexit(stop_shared) };
            emulator
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What the server wrote to stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SDK configuration for `account_id` in `region`: static credentials that the emulator maps
    /// to that account, and every service sent to the emulator.
    pub fn sdk_config(&self, account_id: &str, region: &str) -> SdkConfig {
        let credentials = aws_sdk_sts::config::Credentials::new(
            access_key_for(account_id),
            TEST_SECRET_KEY,
            None,
            None,
            "ferry-emulator",
        );
        self.sdk_config_with(SharedCredentialsProvider::new(credentials), region)
    }

    /// SDK configuration with other credentials (e.g. from STS AssumeRole), sent to the emulator.
    pub fn sdk_config_with(
        &self,
        credentials: SharedCredentialsProvider,
        region: &str,
    ) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            .endpoint_url(&self.endpoint)
            .http_client(ferry::aws::http_client())
            .build()
    }

    /// Environment for a child process (e.g. the ferry CLI) acting as `account_id` in `region`
    /// against this emulator: static credentials, region and `AWS_ENDPOINT_URL`. S3 clients must
    /// still use path-style addressing.
    pub fn env(&self, account_id: &str, region: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", access_key_for(account_id)),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY.to_string()),
            ("AWS_REGION", region.to_string()),
            ("AWS_DEFAULT_REGION", region.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    pub fn ec2(&self, account_id: &str, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config(account_id, region))
    }

    pub fn rds(&self, account_id: &str, region: &str) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.sdk_config(account_id, region))
    }

    pub fn kms(&self, account_id: &str, region: &str) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config(account_id, region))
    }

    pub fn sts(&self, account_id: &str, region: &str) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk_config(account_id, region))
    }

    pub fn iam(&self, account_id: &str) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk_config(account_id, "us-east-1"))
    }

    /// Creates the IAM role `name` in `account_id` whose trust policy lets principals of
    /// `trusted_account` assume it, only with `external_id` when one is given (the role a plan's
    /// `role_arn` names: the emulator refuses AssumeRole otherwise, as AWS does); its ARN.
    pub async fn create_assumable_role(
        &self,
        account_id: &str,
        name: &str,
        trusted_account: &str,
        external_id: Option<&str>,
    ) -> String {
        self.iam(account_id)
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust_policy(trusted_account, external_id).to_string())
            .send()
            .await
            .expect("CreateRole")
            .role()
            .expect("role")
            .arn()
            .to_string()
    }

    /// Creates the IAM user `name` in `account_id` with `policy` as its one inline policy, and an
    /// access key for it: (access key id, secret). With `iam_enforce` on, the emulator judges
    /// that key's calls against the policy.
    pub async fn create_user_with_policy(
        &self,
        account_id: &str,
        name: &str,
        policy: &Value,
    ) -> (String, String) {
        let iam = self.iam(account_id);
        iam.create_user()
            .user_name(name)
            .send()
            .await
            .expect("CreateUser");
        iam.put_user_policy()
            .user_name(name)
            .policy_name("ferry")
            .policy_document(policy.to_string())
            .send()
            .await
            .expect("PutUserPolicy");
        let key = iam
            .create_access_key()
            .user_name(name)
            .send()
            .await
            .expect("CreateAccessKey");
        let key = key.access_key().expect("access key");
        (
            key.access_key_id().to_string(),
            key.secret_access_key().to_string(),
        )
    }

    /// SDK configuration signing with the access key `id`/`secret` (an IAM user's).
    pub fn sdk_config_for_key(&self, id: &str, secret: &str, region: &str) -> SdkConfig {
        let credentials =
            aws_sdk_sts::config::Credentials::new(id, secret, None, None, "ferry-emulator-iam");
        self.sdk_config_with(SharedCredentialsProvider::new(credentials), region)
    }

    /// An S3 client with path-style addressing (the emulator has no per-bucket host names).
    pub fn s3(&self, account_id: &str, region: &str) -> aws_sdk_s3::Client {
        s3_client(&self.sdk_config(account_id, region))
    }

    /// An S3 Control client sent to the emulator's own host: the SDK's endpoint rules would put
    /// the account id before it (`{AccountId}.host`), so the endpoint is taken as given.
    pub fn s3control(&self, account_id: &str, region: &str) -> aws_sdk_s3control::Client {
        let conf = aws_sdk_s3control::config::Builder::from(&self.sdk_config(account_id, region))
            .endpoint_resolver(ferry::aws::FixedEndpoint(self.endpoint.clone()))
            .build();
        aws_sdk_s3control::Client::from_conf(conf)
    }

    /// Merges `update` into the running configuration; returns the whole configuration.
    pub fn configure(&self, update: Value) -> Value {
        let (status, body) = self.control("POST", "/_ferry/config", Some(&update.to_string()));
        assert_eq!(status, 200, "configure({update}) failed: {body}");
        serde_json::from_str(&body).expect("configuration is JSON")
    }

    /// The current configuration.
    pub fn config(&self) -> Value {
        self.control_json("GET", "/_ferry/config")
    }

    /// Request and copy counters (see the README for the JSON shape).
    pub fn counters(&self) -> Counters {
        serde_json::from_value(self.counters_json()).expect("counters have the documented shape")
    }

    pub fn counters_json(&self) -> Value {
        self.control_json("GET", "/_ferry/counters")
    }

    /// Zeroes the request and copy counters only.
    pub fn reset_counters(&self) {
        self.control_json("POST", "/_ferry/counters/reset");
    }

    /// Forgets everything: moto's state, counters, copy tokens, buckets; configuration back to
    /// the start-up one.
    pub fn reset(&self) {
        self.control_json("POST", "/_ferry/reset");
    }

    /// Finishes every pending copy now; returns how many were pending.
    pub fn complete_copies(&self) -> u64 {
        self.control_json("POST", "/_ferry/copies/complete")["completed"]
            .as_u64()
            .expect("completed count")
    }

    fn control_json(&self, method: &str, path: &str) -> Value {
        let (status, body) = self.control(method, path, None);
        assert_eq!(status, 200, "{method} {path} failed: {body}");
        serde_json::from_str(&body).expect("control endpoint answers JSON")
    }

    /// A minimal HTTP/1.1 request to the emulator (control endpoints and moto-api).
    pub fn control(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the emulator");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

static SHARED: OnceLock<Emulator> = OnceLock::new();

/// Statics are never dropped: stop the shared emulator when the test binary exits normally (the
/// server's parent watch covers a test binary that is killed).
extern "C" fn stop_shared() {
    let Some(emulator) = SHARED.get() else { return };
    let pid = emulator.child.id() as libc::pid_t;
    // SAFETY: signals and reaps only the process group and child this module spawned.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
            if Instant::now() > deadline {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// SIGTERM to the process group, then SIGKILL if it has not exited within 5 s.
fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals the process group we created (process_group(0)).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if exited(pgid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stragglers in the group, if any. Sent before the leader is reaped: once it is, its id
    // is free and may name another process group (pid_max can be as low as 32768).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

/// Whether the child `pid` has exited, without reaping it.
fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter; WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc != 0 || info.si_pid() != 0
    }
}

/// An S3 client for `config` with path-style addressing, as ferry uses with an endpoint override.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// `GET /_ferry/counters`.
#[derive(Debug, Clone, Deserialize)]
pub struct Counters {
    pub requests: Vec<RequestCount>,
    pub totals: Totals,
    pub copies: Vec<CopyCount>,
    pub copy_totals: CopyTotals,
    /// S3 Batch Operations jobs (additions/s3_jobs.py), all accounts.
    #[serde(default)]
    pub batch_jobs: BatchJobCounts,
    /// Object versions replicated, live or by batch tasks (additions/s3_live_replication.py).
    #[serde(default)]
    pub replication: ReplicationCounts,
    /// One entry per CopySnapshot that made a copy (not the failed or denied ones), in
    /// submission order, with the emulator's full/incremental judgment.
    #[serde(default)]
    pub snapshot_copies: Vec<SnapshotCopy>,
    /// One entry per DescribeSnapshots / DescribeImages request, in arrival order
    /// (additions/paging.py): each is one page of an answer.
    #[serde(default)]
    pub describes: Vec<DescribeRequest>,
}

/// A DescribeSnapshots or DescribeImages request as the emulator answered it.
#[derive(Debug, Clone, Deserialize)]
pub struct DescribeRequest {
    pub account: String,
    pub region: String,
    /// `DescribeSnapshots` or `DescribeImages`.
    pub action: String,
    /// The page size asked for; None: an unpaginated request (answered whole).
    pub max_results: Option<u64>,
    /// Whether it continued an earlier page.
    pub next_token: bool,
    /// Snapshots or images in the answer.
    pub items: u64,
    /// Ids named in `SnapshotIds` / `ImageIds`.
    pub ids: u64,
    /// The most values in one of its filters.
    pub filter_values: u64,
    /// Each filter's name and number of values.
    #[serde(default)]
    pub filters: std::collections::BTreeMap<String, u64>,
    /// The error code it was refused with (FilterLimitExceeded, InvalidParameterValue, …).
    pub error: Option<String>,
}

/// A CopySnapshot as the emulator judged it (additions/ec2_copies.py).
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotCopy {
    /// Destination account and region.
    pub account: String,
    pub region: String,
    /// The new copy's id.
    #[serde(default)]
    pub snapshot: String,
    /// The snapshot named in the call (it may be a copy itself).
    pub source: String,
    pub source_region: String,
    /// The volume the copied data was taken of (a copy of a copy keeps the original's).
    #[serde(default)]
    pub volume: Option<String>,
    /// The copy's KMS key ARN (None: unencrypted).
    #[serde(default)]
    pub key: Option<String>,
    pub incremental: bool,
    /// Bytes the copy transfers: the volume's size (full) or the changes since its base.
    pub bytes: u64,
    /// The original snapshot the base copy holds (incremental copies only).
    #[serde(default)]
    pub base: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestCount {
    pub account: String,
    pub region: String,
    pub service: String,
    pub action: String,
    pub mutating: bool,
    pub count: u64,
    pub throttled: u64,
    pub faults: u64,
    /// Mutating requests that took effect and whose answer was lost.
    #[serde(default)]
    pub lost: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub throttled: u64,
    pub faults: u64,
    #[serde(default)]
    pub lost: u64,
    pub mutating: u64,
}

/// The copies made into one (account, region); its counts read as fields (`c.snapshots`).
#[derive(Debug, Clone, Deserialize)]
pub struct CopyCount {
    pub account: String,
    pub region: String,
    #[serde(flatten)]
    pub counts: CopyTotals,
}

impl std::ops::Deref for CopyCount {
    type Target = CopyTotals;
    fn deref(&self) -> &CopyTotals {
        &self.counts
    }
}

/// Copy counts, for one (account, region) or all of them.
#[derive(Debug, Clone, Deserialize)]
pub struct CopyTotals {
    pub snapshots: u64,
    pub images: u64,
    pub image_snapshots: u64,
    /// RDS CopyDBSnapshot / CopyDBClusterSnapshot calls that made a copy.
    #[serde(default)]
    pub db_snapshots: u64,
    #[serde(default)]
    pub db_cluster_snapshots: u64,
    /// CopySnapshot calls with CompletionDurationMinutes (time-based copies).
    #[serde(default)]
    pub time_based_snapshots: u64,
    /// CopySnapshot copies judged full / incremental (failed or denied ones are neither).
    #[serde(default)]
    pub full_snapshots: u64,
    #[serde(default)]
    pub incremental_snapshots: u64,
    /// Bytes those copies transfer.
    #[serde(default)]
    pub bytes_full: u64,
    #[serde(default)]
    pub bytes_incremental: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchJobCounts {
    /// Jobs really created (a repeated ClientRequestToken creates none).
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub tasks_succeeded: u64,
    #[serde(default)]
    pub tasks_failed: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReplicationCounts {
    /// Versions whose replica was written (status COMPLETED).
    #[serde(default)]
    pub completed: u64,
    /// Versions that could not be replicated (status FAILED).
    #[serde(default)]
    pub failed: u64,
}

impl Counters {
    /// Requests received for (service, action) from `account`, in any region.
    pub fn requests(&self, account: &str, service: &str, action: &str) -> u64 {
        self.rows(account)
            .filter(|r| r.service == service && r.action == action)
            .map(|r| r.count)
            .sum()
    }

    /// Throttled requests for (service, action) from `account`, in any region.
    pub fn throttled(&self, account: &str, service: &str, action: &str) -> u64 {
        self.rows(account)
            .filter(|r| r.service == service && r.action == action)
            .map(|r| r.throttled)
            .sum()
    }

    /// Mutating requests `account` made (any region, any service).
    pub fn mutating(&self, account: &str) -> u64 {
        self.rows(account)
            .filter(|r| r.mutating)
            .map(|r| r.count)
            .sum()
    }

    /// Copies created into (account, region): (snapshots by CopySnapshot, images by CopyImage,
    /// snapshots made by those image copies).
    pub fn copies_into(&self, account: &str, region: &str) -> (u64, u64, u64) {
        self.copies
            .iter()
            .find(|c| c.account == account && c.region == region)
            .map(|c| (c.snapshots, c.images, c.image_snapshots))
            .unwrap_or((0, 0, 0))
    }

    /// The DescribeSnapshots / DescribeImages requests (`action`) from `account` in `region`.
    pub fn describes<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
        action: &'a str,
    ) -> impl Iterator<Item = &'a DescribeRequest> + 'a {
        self.describes
            .iter()
            .filter(move |d| d.account == account && d.region == region && d.action == action)
    }

    fn rows<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a RequestCount> + 'a {
        self.requests.iter().filter(move |r| r.account == account)
    }
}
