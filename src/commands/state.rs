//! `ferry status`, `ferry runs`, `ferry unlock`: reading and releasing the run state.

use std::path::PathBuf;

use super::Outcome;
use crate::cli::Global;
use crate::journal::{self, JournalBackend, LocalJournal};

/// The state directory these commands read: `--state`, else `.ferry` here.
fn backend(global: &Global) -> Result<LocalJournal, Outcome> {
    let dir = global
        .state
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".ferry"));
    if dir.to_string_lossy().starts_with("s3://") {
        eprintln!("error: run state on S3 is not implemented yet");
        return Err(Outcome::BadInput);
    }
    LocalJournal::open(&dir).map_err(|e| {
        eprintln!("error: {e}");
        Outcome::BadInput
    })
}

pub fn status(run: Option<&str>, global: &Global) -> Outcome {
    let b = match backend(global) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match journal::run_status(&b, run) {
        Ok(st) => {
            print!("{}", journal::render_status(&st));
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::BadInput
        }
    }
}

pub fn runs(global: &Global) -> Outcome {
    let b = match backend(global) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match journal::list_runs(&b) {
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
    if !force {
        // Taking the lock succeeds only when no live ferry holds it.
        match b.lock("unlock") {
            Ok(lock) => drop(lock),
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!(
                    "stop that ferry first, or pass --force if it is on another machine and gone"
                );
                return Outcome::BadInput;
            }
        }
    }
    match b.force_unlock() {
        Ok(Some(h)) => {
            println!("Released the lock of {h}.");
            Outcome::Ok
        }
        Ok(None) => {
            println!("The state {} was not locked.", b.location().display());
            Outcome::Ok
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
