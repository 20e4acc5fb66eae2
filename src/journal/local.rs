//! The local backend: a directory of runs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::lock::{self, LockHolder};
use super::{
    AuditLog, EventLog, JournalBackend, JournalError, LogContents, NewRun, Result, StateLock,
    plan_hash,
};
use crate::exec::Event;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn json_err(e: serde_json::Error) -> JournalError {
    JournalError::Json(e.to_string())
}

/// Write a file and make it durable (small metadata files).
fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

/// Runs kept under a local state directory.
#[derive(Debug, Clone)]
pub struct LocalJournal {
    root: PathBuf,
}

impl LocalJournal {
    /// Open an existing state directory (for status, runs, resume, unlock).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join("runs").is_dir() {
            return Err(JournalError::NoState(root));
        }
        Ok(LocalJournal { root })
    }

    /// Open a state directory, creating it if needed (for a new run).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let runs = root.join("runs");
        std::fs::create_dir_all(&runs).map_err(io(&runs))?;
        Ok(LocalJournal { root })
    }

    /// The default state directory: `.ferry/` beside the plan file.
    pub fn default_dir(plan_path: &Path) -> PathBuf {
        plan_path.parent().unwrap_or(Path::new(".")).join(".ferry")
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    fn existing_run_dir(&self, run_id: &str) -> Result<PathBuf> {
        let dir = self.run_dir(run_id);
        if run_id.is_empty() || run_id.contains('/') || !dir.is_dir() {
            let known = self.list_runs().unwrap_or_default();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(JournalError::RunNotFound {
                run: run_id.to_string(),
                state: self.root.clone(),
                known,
            });
        }
        Ok(dir)
    }

    fn read_text(&self, run_id: &str, name: &str) -> Result<String> {
        let p = self.existing_run_dir(run_id)?.join(name);
        std::fs::read_to_string(&p).map_err(io(&p))
    }
}

/// Split the log into complete events; a torn last line is reported, not fatal.
pub(crate) fn parse_log(path: &Path, bytes: &[u8]) -> Result<LogContents> {
    let mut events = Vec::new();
    let mut torn_tail = false;
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    let mut n = 0;
    while let Some(line) = lines.next() {
        n += 1;
        let last = lines.peek().is_none();
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(_) if last => {
                torn_tail = true;
                break;
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: n,
                    message: e.to_string(),
                });
            }
        };
        let kind = value
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !Event::DURABLE_TYPES.contains(&kind.as_str()) {
            let kind = if kind.is_empty() {
                "(none)".to_string()
            } else {
                kind
            };
            return Err(JournalError::UnknownEvent {
                path: path.to_path_buf(),
                line: n,
                kind,
            });
        }
        let ev: Event = serde_json::from_value(value).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: n,
            message: e.to_string(),
        })?;
        events.push(ev);
    }
    Ok(LogContents { events, torn_tail })
}

struct LocalLog {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl EventLog for LocalLog {
    fn append(&mut self, event: &Event) -> Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, event).map_err(json_err)?;
        self.buf.push(b'\n');
        // One write per event, then fdatasync: the event is durable before the walker goes on.
        self.file.write_all(&self.buf).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }
}

impl JournalBackend for LocalJournal {
    fn location(&self) -> PathBuf {
        self.root.clone()
    }

    fn create_run(&self, run: &NewRun<'_>) -> Result<()> {
        let dir = self.run_dir(run.run_id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_durable(&dir.join("plan.yaml"), run.plan_text.as_bytes())?;
        write_durable(
            &dir.join("plan.sha256"),
            plan_hash(run.plan_text).as_bytes(),
        )?;
        write_durable(
            &dir.join("graph.json"),
            &serde_json::to_vec(run.graph).map_err(json_err)?,
        )?;
        write_durable(
            &dir.join("steps.json"),
            &serde_json::to_vec(&run.step_ids).map_err(json_err)?,
        )?;
        write_durable(&dir.join("events.jsonl"), b"")?;
        sync_dir(&dir);
        sync_dir(&self.root.join("runs"));
        Ok(())
    }

    fn open_log(&self, run_id: &str) -> Result<Box<dyn EventLog>> {
        let path = self.existing_run_dir(run_id)?.join("events.jsonl");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let contents = parse_log(&path, &bytes)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            if contents.torn_tail {
                // Cut the torn line off so the next event starts on a line of its own.
                let keep = bytes
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|p| p + 1)
                    .unwrap_or(0);
                file.set_len(keep as u64).map_err(io(&path))?;
            } else {
                (&file).write_all(b"\n").map_err(io(&path))?;
            }
            file.sync_data().map_err(io(&path))?;
        }
        Ok(Box::new(LocalLog {
            path,
            file,
            buf: Vec::with_capacity(256),
        }))
    }

    fn read_log(&self, run_id: &str) -> Result<LogContents> {
        let path = self.existing_run_dir(run_id)?.join("events.jsonl");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        parse_log(&path, &bytes)
    }

    fn list_runs(&self) -> Result<Vec<String>> {
        let runs = self.root.join("runs");
        let rd = std::fs::read_dir(&runs).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => JournalError::NoState(self.root.clone()),
            _ => JournalError::Io {
                path: runs.clone(),
                source: e,
            },
        })?;
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("events.jsonl").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    fn read_plan(&self, run_id: &str) -> Result<String> {
        self.read_text(run_id, "plan.yaml")
    }

    fn read_plan_hash(&self, run_id: &str) -> Result<String> {
        Ok(self.read_text(run_id, "plan.sha256")?.trim().to_string())
    }

    fn replace_plan(&self, run_id: &str, plan_text: &str) -> Result<()> {
        let dir = self.existing_run_dir(run_id)?;
        let mut n = 1;
        while dir.join(format!("plan.{n}.yaml")).exists() {
            n += 1;
        }
        let old = dir.join("plan.yaml");
        let kept = dir.join(format!("plan.{n}.yaml"));
        std::fs::rename(&old, &kept).map_err(io(&old))?;
        write_durable(&old, plan_text.as_bytes())?;
        write_durable(&dir.join("plan.sha256"), plan_hash(plan_text).as_bytes())?;
        sync_dir(&dir);
        Ok(())
    }

    fn read_graph(&self, run_id: &str) -> Result<Value> {
        serde_json::from_str(&self.read_text(run_id, "graph.json")?).map_err(json_err)
    }

    fn read_step_ids(&self, run_id: &str) -> Result<Vec<String>> {
        serde_json::from_str(&self.read_text(run_id, "steps.json")?).map_err(json_err)
    }

    fn lock(&self, run_id: &str) -> Result<Box<dyn StateLock>> {
        Ok(Box::new(lock::take(&self.lock_path(), run_id)?))
    }

    fn force_unlock(&self) -> Result<Option<LockHolder>> {
        lock::force_release(&self.lock_path())
    }

    fn lock_holder(&self) -> Result<Option<LockHolder>> {
        Ok(lock::read_holder(&self.lock_path()))
    }

    fn open_audit(&self, run_id: &str) -> Result<Box<dyn AuditLog>> {
        let path = self.existing_run_dir(run_id)?.join("audit.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Box::new(LocalLog {
            path,
            file,
            buf: Vec::with_capacity(256),
        }))
    }

    fn read_audit(&self, run_id: &str) -> Result<Vec<Value>> {
        let path = self.existing_run_dir(run_id)?.join("audit.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(JournalError::Io { path, source: e }),
        };
        // A torn last line (a crash mid-write) is skipped, like the event log's.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

impl AuditLog for LocalLog {
    fn append_all(&mut self, records: &[Value]) -> Result<()> {
        self.buf.clear();
        for record in records {
            serde_json::to_writer(&mut self.buf, record).map_err(json_err)?;
            self.buf.push(b'\n');
        }
        self.file.write_all(&self.buf).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }
}
