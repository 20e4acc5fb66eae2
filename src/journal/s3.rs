//! The S3 backend: run state under `s3://bucket/prefix`, for a team (several machines, CI).
//!
//! ```text
//! <prefix>/lock.json                              the lock: holder id, pid, host, start, run, lease expiry
//! <prefix>/runs/<run-id>/run.json                 summary (plan name and hash, events, result), If-Match
//! <prefix>/runs/<run-id>/plan.yaml, plan.sha256, graph.json, steps.json   as in the local layout
//! <prefix>/runs/<run-id>/events/<seq:010>.json    one event per object, If-None-Match: *
//! <prefix>/runs/<run-id>/audit/<writer>-<seq:08>.json   one mutating AWS call per object
//! ```
//!
//! No write overwrites another's: events and audit records are new objects created with
//! `If-None-Match: *` (two writers on one run collide on a sequence number and the second is
//! refused), the summary and the lock are replaced with `If-Match: <etag>` (compare and swap).
//! The lock is a lease: created with `If-None-Match: *`, renewed with `If-Match` every third of
//! the lease; an expired lease is taken over with `If-Match` on the etag read, so of two takers
//! only one wins. The journal's API is synchronous (the walker's subscribers are), so the calls
//! run on a small runtime of their own and the caller waits for them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_types::error::display::DisplayErrorContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::lease::Lease;
use super::lock::{LockHolder, hostname};
use super::{
    AuditLog, EventLog, JournalBackend, JournalError, LogContents, NewRun, Result, StateLock,
    plan_hash,
};
use crate::exec::{Event, now_ms};

/// How long a lock lasts unless renewed. `FERRY_LOCK_LEASE_MS` shortens it (tests).
const DEFAULT_LEASE: Duration = Duration::from_secs(60);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-state")
            .enable_all()
            .build()
            .expect("a runtime for the run state")
    })
}

/// Run `f` on the state's runtime and wait for it (callable from inside another runtime).
fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match futures::executor::block_on(runtime().spawn(f)) {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// How a conditional put ended.
enum Put {
    Written(String),
    /// 412: the condition failed (the object exists, or its etag changed).
    Precondition,
    /// 409 ConditionalRequestConflict: a concurrent conditional write; try again.
    Conflict,
}

enum Cond {
    None,
    IfNoneMatch,
    IfMatch(String),
}

#[derive(Clone)]
struct Store {
    client: Client,
    bucket: String,
    prefix: String,
    kms_key: Option<String>,
}

impl Store {
    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }

    fn err(&self, rel: &str, e: impl std::error::Error) -> JournalError {
        JournalError::Remote {
            location: self.url(rel),
            message: DisplayErrorContext(e).to_string(),
        }
    }

    async fn put(&self, rel: &str, body: Vec<u8>, cond: Cond) -> Result<Put> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .body(ByteStream::from(body));
        if let Some(k) = &self.kms_key {
            req = req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(k);
        }
        let if_match = matches!(cond, Cond::IfMatch(_));
        req = match cond {
            Cond::None => req,
            Cond::IfNoneMatch => req.if_none_match("*"),
            Cond::IfMatch(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => Ok(Put::Written(out.e_tag().unwrap_or_default().to_string())),
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                Some(412) => Ok(Put::Precondition),
                // If-Match on an object that is gone: the condition failed as surely.
                Some(404) if if_match => Ok(Put::Precondition),
                Some(409) => Ok(Put::Conflict),
                _ => Err(self.err(rel, e)),
            },
        }
    }

    async fn put_new(&self, rel: &str, body: Vec<u8>) -> Result<()> {
        match self.put(rel, body, Cond::IfNoneMatch).await? {
            Put::Written(_) => Ok(()),
            Put::Precondition | Put::Conflict => Err(JournalError::Remote {
                location: self.url(rel),
                message: "already written by another ferry (two writers on one run?)".into(),
            }),
        }
    }

    /// The object and its etag; `None` if there is none.
    async fn get(&self, rel: &str) -> Result<Option<(Vec<u8>, String)>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .send()
            .await;
        match out {
            Ok(o) => {
                let etag = o.e_tag().unwrap_or_default().to_string();
                let bytes = o.body.collect().await.map_err(|e| self.err(rel, e))?;
                Ok(Some((bytes.into_bytes().to_vec(), etag)))
            }
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Keys (relative to the prefix) under `rel`, sorted; with `dirs`, the sub-"directories" only.
    async fn list(&self, rel: &str, dirs: bool) -> Result<Vec<String>> {
        let full = self.key(rel);
        let strip = self.key("");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full);
            if dirs {
                req = req.delimiter("/");
            }
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| self.err(rel, e))?;
            if dirs {
                out.extend(
                    page.common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix())
                        .map(|p| p.strip_prefix(&strip).unwrap_or(p).to_string()),
                );
            } else {
                out.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key())
                        .map(|k| k.strip_prefix(&strip).unwrap_or(k).to_string()),
                );
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn get_all(&self, keys: Vec<String>) -> Result<Vec<(String, Vec<u8>)>> {
        let results: Vec<_> = futures::stream::iter(keys)
            .map(|k| {
                let s = self.clone();
                async move {
                    let got = s.get(&k).await?;
                    Ok::<_, JournalError>(got.map(|(b, _)| (k, b)))
                }
            })
            .buffered(16)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in results {
            if let Some(x) = r? {
                out.push(x);
            }
        }
        Ok(out)
    }

    async fn delete(&self, rel: &str, if_match: Option<String>) -> Result<()> {
        let mut req = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(rel));
        if let Some(e) = if_match {
            req = req.if_match(e);
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }
}

/// What `lock.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    /// Unique per lock taken: tells a holder's own object from a taker's.
    holder_id: String,
    #[serde(flatten)]
    holder: LockHolder,
}

/// Run state in an S3 bucket.
pub struct S3Journal {
    store: Store,
    lease_duration: Duration,
    /// The lease of the lock this process holds: a run's writes stop once it is lost.
    lease: Mutex<Option<Arc<Lease>>>,
}

/// `s3://bucket/prefix` → (bucket, prefix without slashes at either end).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl S3Journal {
    /// Reach the state at `url` with the standard AWS credential chain (or `profile`).
    pub fn connect(url: &str, endpoint: Option<String>, profile: Option<String>) -> Result<Self> {
        let (bucket, prefix) = parse_url(url).ok_or_else(|| JournalError::Remote {
            location: url.to_string(),
            message: "not an S3 state URL (expected s3://bucket/prefix)".into(),
        })?;
        let client = block(async move {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .http_client(crate::aws::http_client());
            if let Some(e) = &endpoint {
                loader = loader.endpoint_url(e);
            }
            if let Some(p) = &profile {
                // The profile's own credentials, not the environment's (which the plan's accounts
                // may use): the state can live in an account of its own.
                let providers = aws_config::provider_config::ProviderConfig::default()
                    .with_http_client(crate::aws::http_client());
                let creds = aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .configure(&providers)
                    .profile_name(p)
                    .build();
                loader = loader.profile_name(p).credentials_provider(creds);
            }
            let mut sdk = loader.load().await;
            if sdk.region().is_none() {
                sdk = sdk.into_builder().region(Region::new("us-east-1")).build();
            }
            let conf = aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(endpoint.is_some())
                .build();
            Client::from_conf(conf)
        });
        let lease_duration = std::env::var("FERRY_LOCK_LEASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_LEASE);
        Ok(S3Journal {
            store: Store {
                client,
                bucket,
                prefix,
                kms_key: None,
            },
            lease_duration,
            lease: Mutex::new(None),
        })
    }

    /// Objects written from now on are encrypted with SSE-KMS under this key.
    pub fn with_kms_key(mut self, key: Option<String>) -> Self {
        self.store.kms_key = key;
        self
    }

    /// An existing state (for status, runs, resume, unlock): refused if it holds no run.
    pub fn open(self) -> Result<Self> {
        let store = self.store.clone();
        if block(async move { store.list("runs/", true).await })?.is_empty() {
            return Err(JournalError::NoState(self.location()));
        }
        Ok(self)
    }

    fn check_lease(&self) -> Result<()> {
        if let Some(l) = self.lease.lock().expect("lease").as_ref() {
            l.check()?;
        }
        Ok(())
    }

    fn run_rel(run_id: &str, name: &str) -> String {
        format!("runs/{run_id}/{name}")
    }

    fn not_found(&self, run_id: &str) -> JournalError {
        let known = self.list_runs().unwrap_or_default();
        JournalError::RunNotFound {
            run: run_id.to_string(),
            state: self.location(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        }
    }

    /// The keys of a run's event objects, in order.
    fn event_objects(&self, run_id: &str) -> Result<Vec<String>> {
        let store = self.store.clone();
        let dir = Self::run_rel(run_id, "events/");
        block(async move { store.list(&dir, false).await })
    }

    fn read_text(&self, run_id: &str, name: &str) -> Result<String> {
        if run_id.is_empty() || run_id.contains('/') {
            return Err(self.not_found(run_id));
        }
        let store = self.store.clone();
        let rel = Self::run_rel(run_id, name);
        match block(async move { store.get(&rel).await })? {
            Some((b, _)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            None => Err(self.not_found(run_id)),
        }
    }

    fn take_lock(&self, run_id: &str) -> Result<S3Lock> {
        let store = self.store.clone();
        let d = self.lease_duration;
        let run_id = run_id.to_string();
        let location = PathBuf::from(self.store.url("lock.json"));
        let (etag, sent, record, took_over) = block(async move {
            let record = |expires: u64| LockRecord {
                holder_id: format!("{:016x}", rand::random::<u64>()),
                holder: LockHolder {
                    pid: std::process::id(),
                    host: hostname(),
                    started_ms: now_ms(),
                    run_id: run_id.clone(),
                    lease_expires_ms: Some(expires),
                },
            };
            let body = |r: &LockRecord| serde_json::to_vec(r).expect("JSON");
            let mut last_holder = "another ferry".to_string();
            for _ in 0..20 {
                let sent = Instant::now();
                let me = record(now_ms() + d.as_millis() as u64);
                match store.put("lock.json", body(&me), Cond::IfNoneMatch).await? {
                    Put::Written(etag) => return Ok((etag, sent, me, None)),
                    Put::Conflict => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Put::Precondition => {}
                }
                let Some((bytes, etag)) = store.get("lock.json").await? else {
                    continue; // released in between: try again
                };
                let Ok(old) = serde_json::from_slice::<LockRecord>(&bytes) else {
                    return Err(JournalError::Locked {
                        path: location.clone(),
                        holder: "an unreadable lock object (remove it with `ferry unlock --force`)"
                            .into(),
                    });
                };
                last_holder = old.holder.to_string();
                if old.holder.lease_expires_ms.unwrap_or(u64::MAX) > now_ms() {
                    return Err(JournalError::Locked {
                        path: location.clone(),
                        holder: last_holder,
                    });
                }
                // The lease ran out: take it over, only if nobody else did first.
                let sent = Instant::now();
                let me = record(now_ms() + d.as_millis() as u64);
                if let Put::Written(etag) = store
                    .put("lock.json", body(&me), Cond::IfMatch(etag))
                    .await?
                {
                    return Ok((etag, sent, me, Some(old.holder)));
                }
            }
            Err(JournalError::Locked {
                path: location.clone(),
                holder: last_holder,
            })
        })?;
        let lease = Arc::new(Lease::new(d, sent));
        *self.lease.lock().expect("lease") = Some(lease.clone());
        let etag = Arc::new(Mutex::new(etag));
        let renewer = runtime().spawn(renew(
            self.store.clone(),
            record,
            etag.clone(),
            lease.clone(),
        ));
        Ok(S3Lock {
            store: self.store.clone(),
            lease,
            etag,
            took_over,
            renewer,
        })
    }
}

/// Keep the lease alive every third of its length; give it up for good at the first sign that
/// it is not ours any more, or once it ran out without a renewal.
async fn renew(store: Store, mut record: LockRecord, etag: Arc<Mutex<String>>, lease: Arc<Lease>) {
    let every = lease.duration() / 3;
    loop {
        tokio::time::sleep(every).await;
        // Never renew a lease that already ran out: a taker may own the lock by now.
        if lease.check().is_err() {
            return;
        }
        let sent = Instant::now();
        record.holder.lease_expires_ms = Some(now_ms() + lease.duration().as_millis() as u64);
        let current = etag.lock().expect("etag").clone();
        let body = serde_json::to_vec(&record).expect("JSON");
        match store.put("lock.json", body, Cond::IfMatch(current)).await {
            Ok(Put::Written(e)) => {
                *etag.lock().expect("etag") = e;
                lease.renewed(sent);
            }
            Ok(Put::Precondition) => {
                let by = match store.get("lock.json").await {
                    Ok(Some((b, _))) => serde_json::from_slice::<LockRecord>(&b)
                        .map(|r| format!("it is now held by {}", r.holder))
                        .unwrap_or_else(|_| "it was replaced".into()),
                    Ok(None) => "it was removed (ferry unlock --force?)".into(),
                    Err(_) => "it was replaced or removed".into(),
                };
                lease.lose(by);
                return;
            }
            // A conflict or an unreachable S3: try again; the lease check above ends it in time.
            Ok(Put::Conflict) | Err(_) => {}
        }
    }
}

/// The S3 lock of this process: renewed in the background, deleted on drop if still ours.
pub struct S3Lock {
    store: Store,
    lease: Arc<Lease>,
    etag: Arc<Mutex<String>>,
    took_over: Option<LockHolder>,
    renewer: tokio::task::JoinHandle<()>,
}

impl StateLock for S3Lock {
    fn took_over_from(&self) -> Option<&LockHolder> {
        self.took_over.as_ref()
    }
    fn lease(&self) -> Option<Arc<Lease>> {
        Some(self.lease.clone())
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.lease.check().is_ok() {
            let store = self.store.clone();
            let etag = self.etag.lock().expect("etag").clone();
            let _ = block(async move { store.delete("lock.json", Some(etag)).await });
        }
        self.lease.lose("released");
    }
}

/// The run's event log on S3, written by a thread of its own: an event a mutation depends on
/// (`step-intent`, and the run's start and end) is acknowledged only once it is in S3; the
/// others are batched, whatever queued up while the last object was written going into the next
/// one. A crash can lose only batched events, and those a resume finds again by observing.
struct S3Log {
    queue: Option<std::sync::mpsc::Sender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The first error the writer met: every later append reports it, so the run stops.
    failed: Arc<Mutex<Option<JournalError>>>,
    lease: Option<Arc<Lease>>,
}

enum Write {
    Event(Value),
    /// Answered once everything before it is written.
    Sync(std::sync::mpsc::Sender<()>),
}

/// What the writer thread keeps: where the next object goes and the run's summary.
struct S3LogWriter {
    store: Store,
    run_id: String,
    next: u64,
    summary: Value,
    summary_etag: Option<String>,
}

impl S3LogWriter {
    fn run(
        mut self,
        rx: std::sync::mpsc::Receiver<Write>,
        failed: Arc<Mutex<Option<JournalError>>>,
    ) {
        while let Ok(first) = rx.recv() {
            let mut events = Vec::new();
            let mut syncs = Vec::new();
            for w in std::iter::once(first).chain(rx.try_iter()) {
                match w {
                    Write::Event(e) => events.push(e),
                    Write::Sync(reply) => syncs.push(reply),
                }
            }
            if failed.lock().expect("journal").is_none()
                && let Err(e) = self.write(&events)
            {
                *failed.lock().expect("journal") = Some(e);
            }
            // A sync is answered either way; the append that waits reads `failed`.
            for reply in syncs {
                let _ = reply.send(());
            }
        }
    }

    /// One object for the batch, then the summary when the run started or ended in it.
    fn write(&mut self, events: &[Value]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for v in events {
            serde_json::to_writer(&mut body, v).map_err(|e| JournalError::Json(e.to_string()))?;
            body.push(b'\n');
        }
        let rel = S3Journal::run_rel(&self.run_id, &format!("events/{:010}.json", self.next));
        let store = self.store.clone();
        block(async move { store.put_new(&rel, body).await })?;
        self.next += 1;
        // The summary changes with the run's own life only (not per step), by compare and swap.
        for value in events {
            let kind = value["event"].as_str().unwrap_or_default().to_string();
            if kind != "run-started" && kind != "run-finished" {
                continue;
            }
            self.summary["events"] = json!(self.next);
            self.summary["updated_ms"] = json!(now_ms());
            self.summary["last_event"] = json!(kind);
            if let Some(r) = value.get("result") {
                self.summary["result"] = r.clone();
            }
            let store = self.store.clone();
            let rel = S3Journal::run_rel(&self.run_id, "run.json");
            let body = serde_json::to_vec(&self.summary).expect("JSON");
            let cond = match &self.summary_etag {
                Some(e) => Cond::IfMatch(e.clone()),
                None => Cond::IfNoneMatch,
            };
            match block(async move { store.put(&rel, body, cond).await })? {
                Put::Written(e) => self.summary_etag = Some(e),
                Put::Precondition | Put::Conflict => {
                    return Err(JournalError::Remote {
                        location: self
                            .store
                            .url(&S3Journal::run_rel(&self.run_id, "run.json")),
                        message: "the run's summary was changed by another ferry".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl S3Log {
    fn start(writer: S3LogWriter, lease: Option<Arc<Lease>>) -> S3Log {
        let (tx, rx) = std::sync::mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let shared = failed.clone();
        let handle = std::thread::Builder::new()
            .name("ferry-journal".into())
            .spawn(move || writer.run(rx, shared))
            .expect("a journal writer thread");
        S3Log {
            queue: Some(tx),
            writer: Some(handle),
            failed,
            lease,
        }
    }

    fn failure(&self) -> Result<()> {
        match self.failed.lock().expect("journal").as_ref() {
            // The error as the writer met it (it names the object).
            Some(e) => Err(JournalError::Writer(e.to_string())),
            None => Ok(()),
        }
    }
}

impl EventLog for S3Log {
    fn append(&mut self, event: &Event) -> Result<()> {
        if let Some(l) = &self.lease {
            l.check()?;
        }
        self.failure()?;
        let value = serde_json::to_value(event).map_err(|e| JournalError::Json(e.to_string()))?;
        let durable_now = matches!(
            event,
            Event::StepIntent { .. } | Event::RunStarted { .. } | Event::RunFinished { .. }
        );
        let closed = || JournalError::Writer("the writer stopped".into());
        let queue = self.queue.as_ref().ok_or_else(closed)?;
        queue.send(Write::Event(value)).map_err(|_| closed())?;
        if durable_now {
            let (tx, rx) = std::sync::mpsc::channel();
            queue.send(Write::Sync(tx)).map_err(|_| closed())?;
            rx.recv().map_err(|_| closed())?;
            self.failure()?;
        }
        Ok(())
    }
}

impl Drop for S3Log {
    /// Writes what is queued before the log goes.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

struct S3Audit {
    store: Store,
    run_id: String,
    writer: String,
    next: u64,
}

impl AuditLog for S3Audit {
    /// One object per batch, a record per line.
    fn append_all(&mut self, records: &[Value]) -> Result<()> {
        let rel = S3Journal::run_rel(
            &self.run_id,
            &format!("audit/{}-{:08}.json", self.writer, self.next),
        );
        let mut body = Vec::new();
        for record in records {
            serde_json::to_writer(&mut body, record)
                .map_err(|e| JournalError::Json(e.to_string()))?;
            body.push(b'\n');
        }
        let store = self.store.clone();
        block(async move { store.put_new(&rel, body).await })?;
        self.next += 1;
        Ok(())
    }
}

impl JournalBackend for S3Journal {
    fn location(&self) -> PathBuf {
        PathBuf::from(self.store.url("").trim_end_matches('/'))
    }

    fn create_run(&self, run: &NewRun<'_>) -> Result<()> {
        self.check_lease()?;
        let store = self.store.clone();
        let id = run.run_id.to_string();
        let files = vec![
            ("plan.yaml", run.plan_text.as_bytes().to_vec()),
            ("plan.sha256", plan_hash(run.plan_text).into_bytes()),
            (
                "graph.json",
                serde_json::to_vec(run.graph).map_err(|e| JournalError::Json(e.to_string()))?,
            ),
            (
                "steps.json",
                serde_json::to_vec(&run.step_ids).map_err(|e| JournalError::Json(e.to_string()))?,
            ),
        ];
        let summary = json!({
            "run_id": run.run_id, "plan_name": run.plan_name,
            "plan_hash": plan_hash(run.plan_text), "created_ms": now_ms(), "events": 0,
        });
        block(async move {
            for (name, body) in files {
                store.put_new(&S3Journal::run_rel(&id, name), body).await?;
            }
            store
                .put_new(
                    &S3Journal::run_rel(&id, "run.json"),
                    serde_json::to_vec(&summary).expect("JSON"),
                )
                .await
        })
    }

    fn open_log(&self, run_id: &str) -> Result<Box<dyn EventLog>> {
        self.check_lease()?;
        let next = self.event_objects(run_id)?.len() as u64;
        let store = self.store.clone();
        let rel = Self::run_rel(run_id, "run.json");
        let (summary, summary_etag) = match block(async move { store.get(&rel).await })? {
            Some((b, e)) => (serde_json::from_slice(&b).unwrap_or(json!({})), Some(e)),
            None => (json!({ "run_id": run_id }), None),
        };
        let writer = S3LogWriter {
            store: self.store.clone(),
            run_id: run_id.to_string(),
            next,
            summary,
            summary_etag,
        };
        Ok(Box::new(S3Log::start(
            writer,
            self.lease.lock().expect("lease").clone(),
        )))
    }

    fn read_log(&self, run_id: &str) -> Result<LogContents> {
        // Every run has its plan: that tells an unknown run from one without events yet.
        self.read_plan_hash(run_id)?;
        let keys = self.event_objects(run_id)?;
        let store = self.store.clone();
        let objects = block(async move { store.get_all(keys).await })?;
        let mut events = Vec::with_capacity(objects.len());
        for (n, (key, bytes)) in objects.into_iter().enumerate() {
            let path = PathBuf::from(self.store.url(&key));
            // Sequence numbers are dense: a gap would mean a lost event.
            let expect = format!("events/{n:010}.json");
            if !key.ends_with(&expect) {
                return Err(JournalError::Corrupt {
                    path,
                    line: n + 1,
                    message: format!("event {n} is missing"),
                });
            }
            // One event per object (earlier versions), or a batch of them, one per line.
            let parsed = super::local::parse_log(&path, &bytes)?;
            if parsed.torn_tail || parsed.events.is_empty() {
                return Err(JournalError::Corrupt {
                    path,
                    line: n + 1,
                    message: "no complete event".into(),
                });
            }
            events.extend(parsed.events);
        }
        Ok(LogContents {
            events,
            torn_tail: false,
        })
    }

    fn list_runs(&self) -> Result<Vec<String>> {
        let store = self.store.clone();
        let dirs = block(async move { store.list("runs/", true).await })?;
        Ok(dirs
            .iter()
            .filter_map(|d| d.strip_prefix("runs/"))
            .map(|d| d.trim_end_matches('/').to_string())
            .filter(|d| !d.is_empty())
            .collect())
    }

    fn read_plan(&self, run_id: &str) -> Result<String> {
        self.read_text(run_id, "plan.yaml")
    }

    fn read_plan_hash(&self, run_id: &str) -> Result<String> {
        Ok(self.read_text(run_id, "plan.sha256")?.trim().to_string())
    }

    fn replace_plan(&self, run_id: &str, plan_text: &str) -> Result<()> {
        self.check_lease()?;
        let old = self.read_plan(run_id)?;
        let store = self.store.clone();
        let id = run_id.to_string();
        let text = plan_text.to_string();
        block(async move {
            // Keep the previous plan beside it, under the first free number.
            let mut n = 1;
            loop {
                let rel = S3Journal::run_rel(&id, &format!("plan.{n}.yaml"));
                match store
                    .put(&rel, old.clone().into_bytes(), Cond::IfNoneMatch)
                    .await?
                {
                    Put::Written(_) => break,
                    _ => n += 1,
                }
            }
            store
                .put(
                    &S3Journal::run_rel(&id, "plan.yaml"),
                    text.clone().into_bytes(),
                    Cond::None,
                )
                .await?;
            store
                .put(
                    &S3Journal::run_rel(&id, "plan.sha256"),
                    plan_hash(&text).into_bytes(),
                    Cond::None,
                )
                .await?;
            Ok(())
        })
    }

    fn read_graph(&self, run_id: &str) -> Result<Value> {
        serde_json::from_str(&self.read_text(run_id, "graph.json")?)
            .map_err(|e| JournalError::Json(e.to_string()))
    }

    fn read_step_ids(&self, run_id: &str) -> Result<Vec<String>> {
        serde_json::from_str(&self.read_text(run_id, "steps.json")?)
            .map_err(|e| JournalError::Json(e.to_string()))
    }

    fn lock(&self, run_id: &str) -> Result<Box<dyn StateLock>> {
        Ok(Box::new(self.take_lock(run_id)?))
    }

    fn force_unlock(&self) -> Result<Option<LockHolder>> {
        let holder = self.lock_holder()?;
        let store = self.store.clone();
        block(async move { store.delete("lock.json", None).await })?;
        Ok(holder)
    }

    fn lock_holder(&self) -> Result<Option<LockHolder>> {
        let store = self.store.clone();
        Ok(block(async move { store.get("lock.json").await })?
            .and_then(|(b, _)| serde_json::from_slice::<LockRecord>(&b).ok())
            .map(|r| r.holder))
    }

    fn open_audit(&self, run_id: &str) -> Result<Box<dyn AuditLog>> {
        Ok(Box::new(S3Audit {
            store: self.store.clone(),
            run_id: run_id.to_string(),
            writer: format!("{:013}-{:04x}", now_ms(), rand::random::<u16>()),
            next: 0,
        }))
    }

    fn read_audit(&self, run_id: &str) -> Result<Vec<Value>> {
        self.read_plan_hash(run_id)?;
        let store = self.store.clone();
        let dir = Self::run_rel(run_id, "audit/");
        let objects = block(async move {
            let keys = store.list(&dir, false).await?;
            store.get_all(keys).await
        })?;
        // A record per line (a batch per object; older objects hold one record).
        Ok(objects
            .iter()
            .flat_map(|(_, b)| b.split(|&c| c == b'\n'))
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn state_urls() {
        assert_eq!(
            parse_url("s3://b/team/ferry/"),
            Some(("b".into(), "team/ferry".into()))
        );
        assert_eq!(parse_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(parse_url("s3:///x"), None);
        assert_eq!(parse_url("/tmp/x"), None);
    }
}
