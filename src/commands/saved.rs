//! Saved plans, like Terraform's `plan -out`: `ferry plan PLAN --out FILE` writes the plan as
//! observed; `ferry apply FILE` runs exactly that or refuses; `ferry show FILE` prints it.
//!
//! A saved plan holds what a run needs to rebuild the same graph (the plan file's hash, the
//! resolved resources, the `--migration` targets) and, per step, the change that was shown
//! with a fingerprint of it. It holds no secret: the plan text is not in it, the resolution
//! is what runs store in their journal, and the steps' changes are what `ferry plan --output
//! json` prints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::report::PlanDocument;
use crate::resolve::Resolution;

/// The `format` of a saved plan file.
pub(crate) const FORMAT: &str = "ferry-saved-plan";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedPlan {
    pub format: String,
    pub format_version: u32,
    /// Unique; the run that applies the plan records it, so a plan is applied once.
    pub id: String,
    pub created: String,
    /// A plan saved by another version of ferry is refused: its steps may differ.
    pub ferry_version: String,
    pub plan_path: PathBuf,
    pub plan_name: String,
    /// sha256 of the plan file's text (secrets replaced by their fingerprints).
    pub plan_sha256: String,
    /// `--migration` targets (empty: the whole plan).
    pub migrations: Vec<String>,
    pub resolution: Resolution,
    /// Every step in execution order, with the change shown and its fingerprint.
    pub steps: Vec<SavedStep>,
    /// The plan as `ferry plan --output json` printed it.
    pub document: Value,
    /// The plan as `ferry plan` printed it (no colour).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedStep {
    pub id: String,
    /// `create`, `update`, `replace`, `delete`, `in-progress` or `no-change`.
    pub change: String,
    /// sha256 of the step's change and detail as shown and of what it saw of the live state
    /// (a key policy's document, say): any difference in what the step would do, or in the
    /// live state it acts on, changes it.
    pub fingerprint: String,
}

/// Each step of a live plan document, fingerprinted.
fn steps_of(doc: &PlanDocument) -> Vec<SavedStep> {
    doc.steps
        .iter()
        .map(|s| SavedStep {
            id: s.id.clone(),
            change: s
                .change
                .map(|c| c.as_str())
                .unwrap_or("unknown")
                .to_string(),
            fingerprint: crate::journal::plan_hash(
                &json!({ "change": s.change, "detail": s.detail, "seen": s.seen }).to_string(),
            ),
        })
        .collect()
}

impl SavedPlan {
    pub(crate) fn new(
        plan_path: &Path,
        plan_name: &str,
        redacted_text: &str,
        migrations: &[String],
        resolution: &Resolution,
        doc: &PlanDocument,
    ) -> SavedPlan {
        SavedPlan {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            id: crate::journal::new_run_id(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ferry_version: env!("CARGO_PKG_VERSION").into(),
            plan_path: std::fs::canonicalize(plan_path).unwrap_or(plan_path.to_path_buf()),
            plan_name: plan_name.into(),
            plan_sha256: crate::journal::plan_hash(redacted_text),
            migrations: migrations.to_vec(),
            resolution: resolution.clone(),
            steps: steps_of(doc),
            document: serde_json::from_str(&doc.json()).expect("the document is JSON"),
            text: doc.text(crate::report::Style::plain()),
        }
    }

    /// Written for its owner only (it names accounts and resources), whole or not at all.
    pub(crate) fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("ferry-tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self).expect("JSON").as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The saved plan in `path`, `Ok(None)` if the file is not one (a plan file, say).
    pub(crate) fn read(path: &Path) -> Result<Option<SavedPlan>, String> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Ok(None);
        };
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Ok(None);
        }
        if v.get("format_version").and_then(Value::as_u64) != Some(u64::from(FORMAT_VERSION)) {
            return Err(format!(
                "{}: a saved plan of another format version ({}); make a new one with `ferry plan PLAN --out FILE`",
                path.display(),
                v.get("format_version").unwrap_or(&Value::Null)
            ));
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("{}: not a readable saved plan: {e}", path.display()))
    }

    /// Why this plan cannot be applied as it is, before looking at live state: another
    /// version of ferry, or a plan file that changed (`redacted_text` is the file now).
    pub(crate) fn stale(&self, redacted_text: &str) -> Option<String> {
        if self.ferry_version != env!("CARGO_PKG_VERSION") {
            return Some(format!(
                "it was saved by ferry {}, this is ferry {}",
                self.ferry_version,
                env!("CARGO_PKG_VERSION")
            ));
        }
        if crate::journal::plan_hash(redacted_text) != self.plan_sha256 {
            return Some(format!(
                "the plan file {} changed since the plan was saved",
                self.plan_path.display()
            ));
        }
        None
    }

    /// The steps whose change or live state is not what was saved, one line each.
    pub(crate) fn moved(&self, now: &PlanDocument) -> Vec<String> {
        moved(&self.steps, &steps_of(now))
    }
}

fn moved(saved: &[SavedStep], now: &[SavedStep]) -> Vec<String> {
    let mut out = Vec::new();
    for s in saved {
        match now.iter().find(|n| n.id == s.id) {
            None => out.push(format!("{}: no longer in the plan", s.id)),
            Some(n) if n.change != s.change => out.push(format!(
                "{}: saved as `{}`, now `{}`",
                s.id, s.change, n.change
            )),
            Some(n) if n.fingerprint != s.fingerprint => out.push(format!(
                "{}: still `{}`, but its live state or change differs from the saved plan",
                s.id, s.change
            )),
            Some(_) => {}
        }
    }
    for n in now.iter().filter(|n| !saved.iter().any(|s| s.id == n.id)) {
        out.push(format!(
            "{}: new since the plan was saved ({})",
            n.id, n.change
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(steps: &[(&str, &str, &str)]) -> SavedPlan {
        SavedPlan {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            id: "x".into(),
            created: String::new(),
            ferry_version: env!("CARGO_PKG_VERSION").into(),
            plan_path: PathBuf::from("p.yaml"),
            plan_name: "p".into(),
            plan_sha256: crate::journal::plan_hash("text"),
            migrations: Vec::new(),
            resolution: Resolution::default(),
            steps: steps
                .iter()
                .map(|(id, change, fp)| SavedStep {
                    id: id.to_string(),
                    change: change.to_string(),
                    fingerprint: fp.to_string(),
                })
                .collect(),
            document: Value::Null,
            text: String::new(),
        }
    }

    #[test]
    fn a_changed_plan_file_or_version_is_stale() {
        let s = saved(&[]);
        assert_eq!(s.stale("text"), None);
        assert!(s.stale("text ").unwrap().contains("changed since"));
        let mut old = saved(&[]);
        old.ferry_version = "0.0.0".into();
        assert!(old.stale("text").unwrap().contains("saved by ferry 0.0.0"));
    }

    #[test]
    fn moved_names_each_step_that_differs() {
        let s = saved(&[
            ("a/b/c", "create", "1"),
            ("a/b/d", "update", "2"),
            ("a/b/f", "create", "5"),
        ]);
        let now = saved(&[
            ("a/b/c", "no-change", "9"),
            ("a/b/d", "update", "3"),
            ("a/b/f", "create", "5"),
            ("a/b/e", "create", "4"),
        ]);
        assert_eq!(
            moved(&s.steps, &now.steps),
            vec![
                "a/b/c: saved as `create`, now `no-change`".to_string(),
                "a/b/d: still `update`, but its live state or change differs from the saved plan"
                    .into(),
                "a/b/e: new since the plan was saved (create)".into(),
            ]
        );
        assert!(moved(&s.steps, &s.steps).is_empty());
    }
}
