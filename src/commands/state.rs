//! `ferry status`, `ferry runs`, `ferry unlock`: reading and releasing the run state.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::Outcome;
use crate::cli::{Global, Output};
use crate::journal::{self, JournalBackend, JournalError, LocalJournal, S3Journal};

/// Reach an S3 state with `--state-profile` (or the standard chain) and `--endpoint-url`.
pub(crate) fn connect_s3(
    url: &str,
    global: &Global,
    kms_key: Option<String>,
) -> Result<S3Journal, JournalError> {
    Ok(S3Journal::connect(
        url,
        global.endpoint_url.clone(),
        global.state_profile.clone(),
    )?
    .with_kms_key(kms_key))
}

/// An existing state: `--state` (a directory or s3://bucket/prefix), else `.ferry` here.
pub(crate) fn open_existing(
    global: &Global,
    kms_key: Option<String>,
) -> Result<Box<dyn JournalBackend>, JournalError> {
    let state = global.state.clone().unwrap_or_else(|| ".ferry".into());
    if state.starts_with("s3://") {
        return Ok(Box::new(connect_s3(&state, global, kms_key)?.open()?));
    }
    Ok(Box::new(LocalJournal::open(PathBuf::from(state))?))
}

fn backend(global: &Global) -> Result<Box<dyn JournalBackend>, Outcome> {
    open_existing(global, None).map_err(|e| {
        eprintln!("error: {e}");
        Outcome::BadInput
    })
}

pub fn status(run: Option<&str>, audit: bool, output: Output, global: &Global) -> Outcome {
    let b = match backend(global) {
        Ok(b) => b,
        Err(o) => return o,
    };
    let st = match journal::run_status(b.as_ref(), run) {
        Ok(st) => st,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadInput;
        }
    };
    if output == Output::Json {
        println!("{}", status_json(&st));
        return Outcome::Ok;
    }
    if !audit {
        print!("{}", journal::render_status(&st));
        return Outcome::Ok;
    }
    match b.read_audit(&st.summary.run_id) {
        Ok(records) => {
            print!("{}", journal::render_audit(&records));
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::BadInput
        }
    }
}

/// `ferry status --output json` (docs/events.md): the run and a state per step, each step's
/// journaled fields beside its `state`.
fn status_json(st: &journal::RunStatus) -> String {
    let steps: Vec<Value> = st
        .steps
        .iter()
        .map(|(id, state)| {
            let mut v = json!({ "step": id });
            if let Value::Object(fields) = json!(state) {
                v.as_object_mut().expect("an object").extend(fields);
            }
            if let Some(p) = st.progress.get(id) {
                v["progress"] = json!(p);
            }
            v
        })
        .collect();
    let doc = json!({
        "format_version": crate::report::json::EVENTS_VERSION,
        "run_id": st.summary.run_id,
        "plan": st.summary.plan,
        "started_ms": st.summary.started_ms,
        "attempts": st.summary.attempts,
        "result": st.summary.result.map(|r| r.to_string()).unwrap_or_else(|| "unfinished".into()),
        "torn_tail": st.torn_tail,
        "steps": steps,
    });
    serde_json::to_string_pretty(&doc).expect("JSON")
}

pub fn runs(global: &Global) -> Outcome {
    let b = match backend(global) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match journal::list_runs(b.as_ref()) {
        Ok(runs) => {
            print!("{}", journal::render_runs(&runs));
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::BadInput
        }
    }
}

pub fn unlock(force: bool, global: &Global) -> Outcome {
    let b = match backend(global) {
        Ok(b) => b,
        Err(o) => return o,
    };
    let released = if force {
        b.force_unlock()
    } else {
        // Taking the lock succeeds only when no live ferry holds it (no lease still running);
        // releasing it removes exactly the lock taken (S3: `If-Match` on its etag), so a ferry
        // that takes the state in between keeps its lock.
        b.lock("unlock").map(|lock| lock.took_over_from().cloned())
    };
    match released {
        Ok(Some(h)) => {
            println!("Released the lock of {h}.");
            Outcome::Ok
        }
        Ok(None) => {
            println!("The state {} was not locked.", b.location().display());
            Outcome::Ok
        }
        Err(e @ JournalError::Locked { .. }) => {
            eprintln!("error: {e}");
            let what = if force {
                "a ferry on this machine holds it and is running: stop it first"
            } else {
                "stop that ferry first, or pass --force if it is on another machine and gone"
            };
            eprintln!("{what}");
            Outcome::BadInput
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
