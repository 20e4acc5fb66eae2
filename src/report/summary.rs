//! What a run says when it ends: the root causes of failures, what it made, and its outcome.

use crate::exec::RunReport;
use crate::steps::{KeptCopy, StepOutput};

/// The end of a run, for a person: `errors` go to standard error, `text` to standard output.
pub struct RunSummary {
    pub errors: String,
    pub text: String,
}

/// `kept`: copies the run's new copies joined (from its plan), by step.
pub fn summary(
    report: &RunReport<StepOutput>,
    run_id: &str,
    kept: &[(String, KeptCopy)],
) -> RunSummary {
    let mut errors = String::new();
    for (step, e) in &report.failed {
        errors.push_str(&format!("error: {step}: {e}\n"));
        if let Some(id) = &e.request_id {
            errors.push_str(&format!("  request id: {id}\n"));
        }
        if let Some(h) = &e.hint {
            errors.push_str(&format!("  hint: {h}\n"));
        }
    }
    for (step, root) in &report.skipped {
        errors.push_str(&format!("skipped: {step}: {root} failed\n"));
    }
    let mut made: Vec<(&String, String)> = Vec::new();
    for (id, out) in &report.outputs {
        if let Some(r) = out.made() {
            made.push((id, r));
        }
        if let StepOutput::Backfill(b) = out {
            let gone = match b.gone {
                0 => String::new(),
                n => format!(
                    "; {n} were deleted in the source after they were listed: {}{}",
                    b.gone_keys.join(", "),
                    if n as usize > b.gone_keys.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ),
            };
            made.push((
                id,
                format!(
                    "copied {} objects ({} bytes); {} were there already{gone}",
                    b.copied, b.bytes, b.present
                ),
            ));
        }
        if let StepOutput::BatchJob(j) = out {
            made.push((
                id,
                if j.job_id.is_empty() {
                    "no batch job: backfilled inline by an earlier run".to_string()
                } else {
                    format!(
                        "batch job {}: {} of {} objects replicated; report {}",
                        j.job_id, j.succeeded, j.tasks, j.report
                    )
                },
            ));
        }
        if let StepOutput::Verified(v) = out {
            made.push((
                id,
                format!(
                    "canary {} replicated under the replica key in {:.1} s (then deleted)",
                    v.canary, v.seconds
                ),
            ));
        }
        let planned = kept.iter().filter(|(s, _)| s == id).map(|(_, k)| k);
        let mut all: Vec<&KeptCopy> = out.kept().iter().chain(planned).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.dedup();
        for k in all {
            made.push((id, format!("{} kept (made by ferry under {})", k.id, k.key)));
        }
    }
    made.sort();
    let mut text = String::new();
    if !made.is_empty() {
        text.push_str("\nResources:\n");
        for (step, r) in made {
            text.push_str(&format!("  {step}: {r}\n"));
        }
    }
    text.push_str(&format!(
        "\nRun {run_id}: {} ({} done, {} failed, {} skipped).\n",
        report.result,
        report.done,
        report.failed.len(),
        report.skipped.len()
    ));
    RunSummary { errors, text }
}
