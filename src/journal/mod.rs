//! Run state: the append-only event log of each run, and its lock.
//!
//! Layout of the local backend (the embedded default, `.ferry/` beside the plan):
//!
//! ```text
//! <state>/lock                        pid, host, start time, run id of the holder (flock'ed)
//! <state>/runs/<run-id>/plan.yaml      the plan text the run started with
//! <state>/runs/<run-id>/plan.sha256    its hash
//! <state>/runs/<run-id>/graph.json     the resolved graph (opaque to the journal)
//! <state>/runs/<run-id>/steps.json     step ids in graph order
//! <state>/runs/<run-id>/events.jsonl   one event per line, fsync'ed per event
//! <state>/runs/<run-id>/audit.jsonl    every mutating AWS call of the run, one per line
//! ```
//!
//! The S3 backend (`s3://bucket/prefix`, in `s3.rs`: the only file here that knows AWS) keeps the
//! same things as objects, each event an object of its own; its lock is a lease.

mod fold;
mod lease;
mod local;
mod lock;
pub mod s3;

use std::path::PathBuf;

use serde_json::Value;

use crate::exec::{Event, Subscriber, SubscriberError};

pub use fold::{
    RunFold, RunStatus, RunSummary, StepState, fold, plan_diff, render_runs, render_status,
};
pub use lease::{Lease, LeaseLost};
pub use local::LocalJournal;
pub use lock::LockHolder;
pub use s3::S3Journal;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no ferry state at {0} (no run was started with this state directory; use --state to point at another)"
    )]
    NoState(PathBuf),
    #[error("run `{run}` not found in {state} (known runs: {known})")]
    RunNotFound {
        run: String,
        state: PathBuf,
        known: String,
    },
    #[error("no unfinished run to resume in {0}")]
    NothingToResume(PathBuf),
    #[error("{path}:{line}: corrupt journal line: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: unknown event type `{kind}` (written by a newer ferry?)")]
    UnknownEvent {
        path: PathBuf,
        line: usize,
        kind: String,
    },
    #[error("the state {path} is locked by {holder}; if that ferry is gone, run `ferry unlock`")]
    Locked { path: PathBuf, holder: String },
    #[error(
        "the plan changed since run `{run}` started; resume with --replan to accept it:\n{diff}"
    )]
    PlanChanged { run: String, diff: String },
    #[error("{0}")]
    Json(String),
    #[error("{location}: {message}")]
    Remote { location: String, message: String },
    /// The event log's writer failed earlier (or stopped): the run must not go on.
    #[error("writing the run's journal failed: {0}")]
    Writer(String),
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// What a new run records before its first event.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub run_id: &'a str,
    pub plan_name: &'a str,
    pub plan_text: &'a str,
    /// The resolved graph, opaque to the journal, stored so a resume works on the same resources.
    pub graph: &'a Value,
    pub step_ids: Vec<String>,
}

/// A run's event log, opened for appending.
pub trait EventLog: Send {
    /// Durable when it returns.
    fn append(&mut self, event: &Event) -> Result<()>;
}

/// The events of a run as read back.
#[derive(Debug, Clone)]
pub struct LogContents {
    pub events: Vec<Event>,
    /// The last line was cut short (a crash mid-write) and was ignored.
    pub torn_tail: bool,
}

/// A run's audit log (every mutating AWS call), opened for appending.
pub trait AuditLog: Send {
    /// Durable when it returns.
    fn append(&mut self, record: &Value) -> Result<()> {
        self.append_all(std::slice::from_ref(record))
    }
    /// Several records at once (one write and one sync, or one object): durable when it returns.
    fn append_all(&mut self, records: &[Value]) -> Result<()>;
}

/// Where runs are kept: a local directory (`LocalJournal`) or S3 (`S3Journal`).
pub trait JournalBackend: Send + Sync {
    /// Where this state lives, for messages.
    fn location(&self) -> PathBuf;
    fn create_run(&self, run: &NewRun<'_>) -> Result<()>;
    /// Open a run's log for appending (a torn tail is cut off first).
    fn open_log(&self, run_id: &str) -> Result<Box<dyn EventLog>>;
    fn read_log(&self, run_id: &str) -> Result<LogContents>;
    /// Run ids, oldest first.
    fn list_runs(&self) -> Result<Vec<String>>;
    fn read_plan(&self, run_id: &str) -> Result<String>;
    fn read_plan_hash(&self, run_id: &str) -> Result<String>;
    /// Replace the stored plan (after `--replan`); the previous one is kept beside it.
    fn replace_plan(&self, run_id: &str, plan_text: &str) -> Result<()>;
    fn read_graph(&self, run_id: &str) -> Result<Value>;
    fn read_step_ids(&self, run_id: &str) -> Result<Vec<String>>;
    /// Take the state's lock for this run; refused while another ferry holds it.
    fn lock(&self, run_id: &str) -> Result<Box<dyn StateLock>>;
    /// Remove the lock whoever holds it (`ferry unlock`); returns who held it.
    fn force_unlock(&self) -> Result<Option<LockHolder>>;
    /// Who holds the lock now, if anyone.
    fn lock_holder(&self) -> Result<Option<LockHolder>>;
    fn open_audit(&self, run_id: &str) -> Result<Box<dyn AuditLog>>;
    /// The run's audit records, in the order they were written.
    fn read_audit(&self, run_id: &str) -> Result<Vec<Value>>;
}

/// Held while a run works on a state; released on drop.
pub trait StateLock: Send {
    /// The stale holder this lock was taken over from (its process had died, or its lease ran out).
    fn took_over_from(&self) -> Option<&LockHolder>;
    /// The lease, for a lock that lapses unless renewed (`None`: held until released).
    fn lease(&self) -> Option<std::sync::Arc<Lease>> {
        None
    }
}

/// `ferry status RUN --audit`: one line per mutating call.
pub fn render_audit(records: &[Value]) -> String {
    let mut out = String::new();
    for r in records {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let t = r
            .get("time_ms")
            .and_then(Value::as_u64)
            .map(|ms| {
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
                .to_string()
            })
            .unwrap_or_else(|| "-".into());
        let mut what = s("resource");
        if let Some(c) = r.get("created").and_then(Value::as_str) {
            what = format!("{what} -> {c}");
        }
        out.push_str(&format!(
            "{t}  {}  {}  {}:{}  {what}  {}  request {}\n",
            s("account"),
            s("region"),
            s("service"),
            s("operation"),
            s("outcome"),
            s("request_id"),
        ));
    }
    out.push_str(&format!("{} mutating call(s).\n", records.len()));
    out
}

/// The journal writer: a subscriber that appends every durable event, fsync'ed, in order,
/// and a step's progress (with what it says) at most every [`PROGRESS_EVERY`], so that `ferry
/// status` can tell how far a batch job or a backfill had come.
pub struct JournalWriter {
    log: Box<dyn EventLog>,
    progress_noted: std::collections::HashMap<String, std::time::Instant>,
}

/// How often a step's progress is journaled at most.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl JournalWriter {
    pub fn new(log: Box<dyn EventLog>) -> Self {
        JournalWriter {
            log,
            progress_noted: Default::default(),
        }
    }
}

impl Subscriber for JournalWriter {
    fn on_event(&mut self, event: &Event) -> Result<(), SubscriberError> {
        if event.is_durable() {
            self.log.append(event)?;
        } else if let Event::StepProgress {
            step,
            detail: Some(_),
            ..
        } = event
        {
            let now = std::time::Instant::now();
            let due = self
                .progress_noted
                .get(step)
                .is_none_or(|t| now.duration_since(*t) >= PROGRESS_EVERY);
            if due {
                self.progress_noted.insert(step.clone(), now);
                self.log.append(event)?;
            }
        }
        Ok(())
    }
}

/// sha256 of the plan text, hex.
pub fn plan_hash(plan_text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(plan_text.as_bytes()))
}

/// A new run id, sortable by time: `20261123T051500Z-1a2b`.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string(); // 2026-11-23T05:15:00Z
    let compact: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{:04x}", rand::random::<u16>())
}

/// A run ready to go: its id, hash, what earlier attempts did, and the writer to subscribe.
pub struct PreparedRun {
    pub run_id: String,
    pub plan_hash: String,
    /// The stored resolved graph (for resume; the one given for a new run).
    pub graph: Value,
    pub resume: crate::exec::Resume<serde_json::Value>,
    pub writer: JournalWriter,
    pub lock: Box<dyn StateLock>,
}

impl PreparedRun {
    /// `base` with this run's id, plan name and hash filled in.
    pub fn run_options(
        &self,
        plan_name: &str,
        base: crate::exec::RunOptions,
    ) -> crate::exec::RunOptions {
        crate::exec::RunOptions {
            run_id: self.run_id.clone(),
            plan_name: plan_name.to_string(),
            plan_hash: self.plan_hash.clone(),
            ..base
        }
    }
}

/// Start a new run: lock the state, record plan, graph and step ids, open its log.
pub fn start_run(backend: &dyn JournalBackend, run: NewRun<'_>) -> Result<PreparedRun> {
    let lock = backend.lock(run.run_id)?;
    backend.create_run(&run)?;
    let log = backend.open_log(run.run_id)?;
    Ok(PreparedRun {
        run_id: run.run_id.to_string(),
        plan_hash: plan_hash(run.plan_text),
        graph: run.graph.clone(),
        resume: Default::default(),
        writer: JournalWriter::new(log),
        lock,
    })
}

/// The run `resume` continues by default: the latest one that did not succeed.
pub fn latest_unfinished(backend: &dyn JournalBackend) -> Result<String> {
    for run in backend.list_runs()?.into_iter().rev() {
        let f = fold(&backend.read_log(&run)?.events);
        if f.result() != Some(crate::exec::RunResult::Succeeded) {
            return Ok(run);
        }
    }
    Err(JournalError::NothingToResume(backend.location()))
}

/// Resume a run (`None`: the latest unfinished): lock, check the plan, fold the log.
/// A changed plan is refused unless `replan`, with a short diff of what changed.
pub fn resume_run(
    backend: &dyn JournalBackend,
    run_id: Option<&str>,
    plan_text: &str,
    replan: bool,
) -> Result<PreparedRun> {
    let run_id = match run_id {
        Some(r) => r.to_string(),
        None => latest_unfinished(backend)?,
    };
    let lock = backend.lock(&run_id)?;
    let stored_hash = backend.read_plan_hash(&run_id)?;
    let hash = plan_hash(plan_text);
    if stored_hash != hash {
        if !replan {
            let old = backend.read_plan(&run_id)?;
            return Err(JournalError::PlanChanged {
                run: run_id,
                diff: plan_diff(&old, plan_text),
            });
        }
        backend.replace_plan(&run_id, plan_text)?;
    }
    let contents = backend.read_log(&run_id)?;
    let folded = fold(&contents.events);
    let graph = backend.read_graph(&run_id)?;
    let log = backend.open_log(&run_id)?;
    Ok(PreparedRun {
        run_id,
        plan_hash: hash,
        graph,
        resume: folded.resume(),
        writer: JournalWriter::new(log),
        lock,
    })
}

/// `ferry runs`: every run, oldest first.
pub fn list_runs(backend: &dyn JournalBackend) -> Result<Vec<RunSummary>> {
    let mut out = Vec::new();
    for run in backend.list_runs()? {
        let f = fold(&backend.read_log(&run)?.events);
        out.push(f.summary(&run));
    }
    Ok(out)
}

/// `ferry status [RUN]` (`None`: the latest run).
pub fn run_status(backend: &dyn JournalBackend, run_id: Option<&str>) -> Result<RunStatus> {
    let run_id = match run_id {
        Some(r) => r.to_string(),
        None => backend
            .list_runs()?
            .pop()
            .ok_or_else(|| JournalError::RunNotFound {
                run: "(latest)".into(),
                state: backend.location(),
                known: "none".into(),
            })?,
    };
    let contents = backend.read_log(&run_id)?;
    let ids = backend.read_step_ids(&run_id)?;
    let f = fold(&contents.events);
    Ok(f.status(&run_id, &ids, contents.torn_tail))
}
