//! `ferry plan` (live), `ferry apply` and `ferry resume`: load, resolve against AWS, compile,
//! then observe (dry run) or execute, journaled.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::saved::SavedPlan;
use super::{Outcome, load, state, target};
use crate::aws::Aws;
use crate::cli::{Global, Output};
use crate::exec::{self, Cancel, Executor, RunOptions, RunResult};
use crate::graph::{self, StepKind};
use crate::ids::StepId;
use crate::journal::{self, JournalBackend, LocalJournal, NewRun};
use crate::plan::{Plan, PlanErrors};
use crate::report::{self, PlanDocument, Progress, ProgressMode, Style};
use crate::resolve::{self, Resolution, ResolveError};
use crate::steps::{self, Cx, KeptCopy, StepOutput};

/// Everything a run needs, from the plan file to executable steps.
struct Prepared {
    plan: Plan,
    plan_path: PathBuf,
    plan_text: String,
    resolution: Resolution,
    /// `ferry destroy`: the graph is the plan's destroy graph.
    destroy: Option<graph::DestroyOptions>,
    /// `--migration`: the ids named (empty: the whole plan).
    only: Vec<String>,
    specs: graph::PlanGraph,
    steps: Arc<exec::StepGraph<Cx>>,
    cx: Arc<Cx>,
    limits: Arc<exec::Limits>,
}

fn read_text(path: &Path) -> Result<String, Outcome> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        Outcome::BadInput
    })
}

/// Load, resolve (unless a stored resolution is given, on resume), compile, build.
async fn prepare(
    path: &Path,
    global: &Global,
    stored: Option<Resolution>,
    resumed: Option<&str>,
    destroy: Option<graph::DestroyOptions>,
    only: &[String],
) -> Result<Prepared, Outcome> {
    let plan = load(path).ok_or(Outcome::BadInput)?;
    let (plan, targets) = if only.is_empty() {
        (plan, None)
    } else {
        match target::targets(&plan, only) {
            Ok(t) => {
                if !global.quiet {
                    eprintln!("{}", target::warning(only, &t));
                }
                (target::narrowed(&plan, &t), Some(t))
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Err(Outcome::BadInput);
            }
        }
    };
    let plan_text = read_text(path)?;
    // A plan stored with a run keeps only the fingerprint of a secret.
    for a in &plan.accounts {
        if a.value
            .external_id
            .as_ref()
            .is_some_and(|e| e.value.is_fingerprint())
        {
            eprintln!(
                "error: account `{}`: the plan stored with the run keeps only a fingerprint of its external_id; \
                 resume where the plan file is (at its path), so that ferry can read the external id",
                a.name.value
            );
            return Err(Outcome::BadInput);
        }
    }
    let aws = Aws::connect(
        &plan,
        global.endpoint_url.clone(),
        Some(path.display().to_string()),
    )
    .await;
    let quotas: BTreeMap<String, _> = plan
        .settings
        .quotas
        .iter()
        .map(|(k, v)| (k.value.clone(), v.clone()))
        .collect();
    let limits = Arc::new(steps::limits(&quotas));
    let resolution = match stored {
        Some(r) => r,
        None => match resolve::resolve(&plan, &aws, &limits).await {
            Ok(mut r) => {
                r.copy_order = copy_order();
                if !global.quiet {
                    for n in &r.notes {
                        eprintln!("note: {n}");
                    }
                }
                r
            }
            Err(ResolveError::BadInput(diagnostics)) => {
                let errors = PlanErrors {
                    path: path.display().to_string(),
                    source: crate::plan::secret::mask(&plan_text),
                    diagnostics,
                };
                eprint!("{}", errors.render());
                eprintln!("nothing was changed");
                return Err(Outcome::BadInput);
            }
            Err(ResolveError::Aws(e)) => {
                // A sentence and its fix; the SDK's chain of causes only with -v.
                let mut msg = match e.fix(path) {
                    Some(fix) => format!("{e}\n  hint: {fix}"),
                    None => format!("could not read the live state: {e}"),
                };
                let detail = &e.context.detail;
                if global.verbose > 0 && !detail.is_empty() {
                    msg.push_str(&format!("\n  detail: {}", detail.replace('\n', "\n    ")));
                }
                msg.push_str("\nnothing was changed");
                return Err(Outcome::Failed(msg));
            }
        },
    };
    let specs = graph::compile_resolved(&plan, &resolution)
        .and_then(|g| match &targets {
            Some(t) => g.restricted(t),
            None => Ok(g),
        })
        .and_then(|g| match destroy {
            Some(opts) => graph::destroy(&g, opts),
            None => Ok(g),
        })
        .map_err(|e| Outcome::Failed(format!("internal error compiling the plan: {e}")))?;
    let built = steps::build(&specs)
        .map_err(|e| Outcome::Failed(format!("internal error building steps: {e}")))?;
    let earlier = earlier_additions(&plan, path, global, resumed).map_err(|e| {
        Outcome::Failed(format!(
            "cannot read what earlier runs in this state added (needed to take back only that): {e}"
        ))
    })?;
    let cx = Arc::new(
        Cx::new(aws, &plan.name.value, &resolution)
            .with_earlier(earlier.additions)
            .with_failed_copies(earlier.failed_copies)
            .with_unanswered(&earlier.unanswered)
            .with_changes(&earlier.intents, &earlier.first_intents, &earlier.done),
    );
    Ok(Prepared {
        plan,
        plan_path: path.to_path_buf(),
        plan_text,
        resolution,
        destroy,
        only: only.to_vec(),
        specs,
        steps: Arc::new(built),
        cx,
        limits,
    })
}

/// What share and key-access steps of the runs in this state added (their outputs merged:
/// lists united, flags or-ed), so that a revoke takes back exactly what ferry added. A step's
/// intent counts as well: it was journaled before the call, so a share or statement whose
/// answer was lost is still ferry's. A state that cannot be read is an error, never "nothing
/// to take back".
fn earlier_additions(
    plan: &Plan,
    plan_path: &Path,
    global: &Global,
    resumed: Option<&str>,
) -> Result<Earlier, String> {
    use crate::exec::Event;
    use crate::steps::output::{KeyAccessOutput, ShareOutput};
    let mut merged: std::collections::HashMap<StepId, StepOutput> = Default::default();
    let mut failed_copies: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut unanswered: std::collections::HashMap<String, u64> = Default::default();
    let mut intents: std::collections::HashMap<String, u64> = Default::default();
    let mut first_intents: std::collections::HashMap<String, u64> = Default::default();
    let mut done: std::collections::HashMap<String, u64> = Default::default();
    let backend: Box<dyn JournalBackend> = match state_location(plan, plan_path, global) {
        State::Local(dir) => match LocalJournal::open(dir) {
            Ok(b) => Box::new(b),
            // No state yet: nothing was added.
            Err(journal::JournalError::NoState(_)) => return Ok(Earlier::default()),
            Err(e) => return Err(e.to_string()),
        },
        State::S3(url) => match state::connect_s3(&url, global, None).and_then(|b| b.open()) {
            Ok(b) => Box::new(b),
            Err(journal::JournalError::NoState(_)) => return Ok(Earlier::default()),
            Err(e) => return Err(e.to_string()),
        },
    };
    let add = |merged: &mut std::collections::HashMap<StepId, StepOutput>,
               id: StepId,
               out: StepOutput| match (merged.get_mut(&id), out) {
        (Some(StepOutput::Share(all)), StepOutput::Share(more)) => {
            for r in more.added_by_ferry {
                if !all.added_by_ferry.contains(&r) {
                    all.added_by_ferry.push(r);
                }
            }
        }
        (Some(StepOutput::KeyAccess(all)), StepOutput::KeyAccess(more)) => {
            all.access_added_by_ferry |= more.access_added_by_ferry;
        }
        (_, out) => {
            merged.insert(id, out);
        }
    };
    let kind_of = |id: &StepId| match id.action.as_str() {
        // An inline backfill done: a bucket that has grown past the inline limit since is not
        // copied again by a batch job (its objects' replication status is still NONE).
        "copy" if id.resource == "backfill" => Some(StepKind::Backfill),
        "share" => Some(StepKind::ShareSnapshot),
        "grant-access" => Some(StepKind::GrantKeyAccess),
        // What an earlier run proved need not be proven again while the rule is the same.
        "verify" => Some(StepKind::VerifyReplication),
        // A batch job S3 has forgotten (90 days after it ended) was still done.
        "batch-job" => Some(StepKind::BatchReplication),
        _ => None,
    };
    for run in backend.list_runs().map_err(|e| e.to_string())? {
        let log = backend.read_log(&run).map_err(|e| e.to_string())?;
        // The first intent of each step in the run this process continues (its attempts and
        // resumes); a new run starts afresh.
        let mut first_in_run: std::collections::HashMap<String, u64> = Default::default();
        for (step, out) in journal::fold(&log.events).resume().done {
            let Ok(id) = step.parse::<StepId>() else {
                continue;
            };
            let Some(out) = kind_of(&id).and_then(|k| StepOutput::from_journal(k, out)) else {
                continue;
            };
            add(&mut merged, id, out);
        }
        for ev in &log.events {
            // A step whose last word is its intent was killed with its call sent, or about to
            // be: the call may have taken effect, and what it made may not show yet.
            match ev {
                Event::StepIntent { step, ts, .. } => {
                    unanswered.insert(step.clone(), *ts);
                    intents.insert(step.clone(), *ts);
                    first_in_run.entry(step.clone()).or_insert(*ts);
                }
                Event::StepDone { step, ts, .. } => {
                    unanswered.remove(step);
                    done.insert(step.clone(), *ts);
                }
                Event::StepSubmitted { step, .. }
                | Event::StepFailed { step, .. }
                | Event::StepSkipped { step, .. } => {
                    unanswered.remove(step);
                }
                _ => {}
            }
            let Event::StepIntent { step, intent, .. } = ev else {
                continue;
            };
            // A copy's failed attempts, for its next client token.
            if let Some(ids) = intent["failed_before"].as_array() {
                let all = failed_copies.entry(step.clone()).or_default();
                for v in ids.iter().filter_map(|v| v.as_str()) {
                    if !all.iter().any(|x| x == v) {
                        all.push(v.to_string());
                    }
                }
            }
            let Ok(id) = step.parse::<StepId>() else {
                continue;
            };
            match kind_of(&id) {
                Some(StepKind::ShareSnapshot) => {
                    let adding: Vec<String> = intent["adding"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    add(
                        &mut merged,
                        id,
                        StepOutput::Share(ShareOutput {
                            added_by_ferry: adding,
                            taken_back: Vec::new(),
                        }),
                    );
                }
                Some(StepKind::GrantKeyAccess) if intent["adding"] == serde_json::json!(true) => {
                    let key = intent["key"].as_str().unwrap_or_default().to_string();
                    add(
                        &mut merged,
                        id,
                        StepOutput::KeyAccess(KeyAccessOutput {
                            access_added_by_ferry: true,
                            key,
                            grant_id: None,
                        }),
                    );
                }
                _ => {}
            }
        }
        // What an unshare of this run took back is no longer ferry's: shared again later (by
        // hand), it is not ferry's to take back.
        for ev in &log.events {
            let Event::StepDone { step, outputs, .. } = ev else {
                continue;
            };
            let Ok(id) = step.parse::<StepId>() else {
                continue;
            };
            if id.action != "unshare" {
                continue;
            }
            let Some(StepOutput::Share(undone)) =
                StepOutput::from_journal(StepKind::UnshareSnapshot, outputs.clone())
            else {
                continue;
            };
            if let Some(StepOutput::Share(all)) = merged.get_mut(&id.with_action("share")) {
                all.added_by_ferry
                    .retain(|r| !undone.taken_back.contains(r));
            }
        }
        if resumed == Some(run.as_str()) {
            first_intents = first_in_run;
        }
    }
    Ok(Earlier {
        additions: merged,
        failed_copies,
        unanswered,
        intents,
        first_intents,
        done,
    })
}

/// What earlier runs in the state did that this one needs to know.
#[derive(Default)]
struct Earlier {
    /// What their share and key-access steps added.
    additions: std::collections::HashMap<StepId, StepOutput>,
    /// Copy step -> the failed copies it made.
    failed_copies: std::collections::HashMap<String, Vec<String>>,
    /// Step -> when (ms since the epoch) it journaled an intent that never got an outcome.
    unanswered: std::collections::HashMap<String, u64>,
    /// Step -> when it last journaled an intent.
    intents: std::collections::HashMap<String, u64>,
    /// Step -> its first intent in the run this process resumes.
    first_intents: std::collections::HashMap<String, u64>,
    /// Step -> when it was last done.
    done: std::collections::HashMap<String, u64>,
}

fn state_setting(plan: &Plan, global: &Global) -> Option<String> {
    global
        .state
        .clone()
        .or_else(|| plan.settings.state.as_ref().map(|s| s.value.clone()))
}

/// Where a plan's runs are kept.
enum State {
    Local(PathBuf),
    S3(String),
}

fn state_location(plan: &Plan, plan_path: &Path, global: &Global) -> State {
    match state_setting(plan, global) {
        Some(s) if s.starts_with("s3://") => State::S3(s),
        // A relative `settings.state` is relative to the plan, like the default.
        Some(s) if global.state.is_none() => {
            State::Local(plan_path.parent().unwrap_or(Path::new(".")).join(s))
        }
        Some(s) => State::Local(PathBuf::from(s)),
        None => State::Local(LocalJournal::default_dir(plan_path)),
    }
}

fn state_key(plan: &Plan) -> Option<String> {
    plan.settings.state_key.as_ref().map(|k| k.value.clone())
}

/// The state a new run goes to, created if needed.
fn create_backend(p: &Prepared, global: &Global) -> Result<Box<dyn JournalBackend>, Outcome> {
    match state_location(&p.plan, &p.plan_path, global) {
        State::Local(dir) => match LocalJournal::create(&dir) {
            Ok(b) => Ok(Box::new(b)),
            Err(e) => Err(Outcome::Failed(format!(
                "cannot use the state {}: {e}",
                dir.display()
            ))),
        },
        State::S3(url) => match state::connect_s3(&url, global, state_key(&p.plan)) {
            Ok(b) => Ok(Box::new(b)),
            Err(e) => Err(Outcome::Failed(format!("cannot use the state {url}: {e}"))),
        },
    }
}

/// The dry run: every step observed, nothing changed.
async fn dry_run(p: &Prepared, concurrency: usize) -> Result<PlanDocument, Outcome> {
    let opts = RunOptions {
        concurrency,
        plan_name: p.plan.name.value.clone(),
        ..RunOptions::default()
    };
    let answers = Executor::new(p.steps.clone(), p.cx.clone(), opts)
        .limits(p.limits.clone())
        .observe_all(Cancel::new())
        .await
        .map_err(|e| Outcome::Failed(format!("the dry run stopped: {e}")))?;
    PlanDocument::live(&p.plan.name.value, &p.specs, answers)
        .map(|d| d.with_estimate(&p.specs, &p.resolution))
        .map_err(|errors| {
            for e in &errors {
                eprintln!("error: {e}");
            }
            Outcome::Failed(format!(
                "{} step(s) could not read their live state",
                errors.len()
            ))
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn concurrency_of(plan: &Plan, flag: Option<u32>) -> usize {
    flag.or(plan.settings.concurrency.as_ref().map(|c| c.value))
        .unwrap_or(16) as usize
}

/// `ferry plan PLAN` against live state; with `out`, also saved for `ferry apply FILE`.
pub fn plan_live(
    path: &Path,
    output: Output,
    out: Option<&Path>,
    only: &[String],
    global: &Global,
) -> Outcome {
    runtime().block_on(async {
        let p = match prepare(path, global, None, None, None, only).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let planned = match dry_run(&p, concurrency_of(&p.plan, None)).await {
            Ok(x) => x,
            Err(o) => return o,
        };
        match output {
            Output::Text => print!("{}", planned.text(Style::for_stdout())),
            Output::Json => println!("{}", planned.json()),
        }
        if let Some(out) = out {
            let saved = SavedPlan::new(
                &p.plan_path,
                &p.plan.name.value,
                &p.plan.redacted(&p.plan_text),
                &p.only,
                &p.resolution,
                &planned,
            );
            if let Err(e) = saved.write(out) {
                return Outcome::Failed(format!(
                    "cannot write the saved plan {}: {e}",
                    out.display()
                ));
            }
            if !global.quiet {
                eprintln!(
                    "\nSaved this plan to {0}. `ferry apply {0}` makes exactly these changes, \
                     or refuses if the plan file or the live state changed.",
                    out.display()
                );
            }
        }
        Outcome::Ok
    })
}

/// `ferry show FILE`: a saved plan as it was reviewed.
pub fn show(file: &Path, output: Output) -> Outcome {
    let saved = match SavedPlan::read(file) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "error: {} is not a saved plan (`ferry plan PLAN --out FILE` makes one)",
                file.display()
            );
            return Outcome::BadInput;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadInput;
        }
    };
    match output {
        Output::Text => {
            println!(
                "Saved plan {} of {} ({}), made {} by ferry {}{}.\n",
                saved.id,
                saved.plan_path.display(),
                saved.plan_name,
                saved.created,
                saved.ferry_version,
                if saved.migrations.is_empty() {
                    String::new()
                } else {
                    format!(", only migration(s) {}", saved.migrations.join(", "))
                }
            );
            print!("{}", saved.text);
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "id": saved.id,
                "created": saved.created,
                "ferry_version": saved.ferry_version,
                "plan_path": saved.plan_path,
                "plan_sha256": saved.plan_sha256,
                "migrations": saved.migrations,
                "steps": saved.steps,
                "document": saved.document,
            }))
            .expect("JSON")
        ),
    }
    Outcome::Ok
}

/// What `ferry apply` (and `ferry destroy`) was asked.
pub struct ApplyRequest<'a> {
    /// A plan file, or a saved plan (`ferry plan --out`).
    pub path: &'a Path,
    pub dry_run: bool,
    pub yes: bool,
    pub concurrency: Option<u32>,
    pub destroy: Option<graph::DestroyOptions>,
    pub only: &'a [String],
    pub output: Output,
}

/// `ferry apply PLAN`, and `ferry destroy PLAN` (with `destroy`): the same run of another
/// graph. `ferry apply FILE` with a saved plan: that plan, exactly, or nothing.
pub fn apply(req: ApplyRequest<'_>, global: &Global) -> Outcome {
    let saved = match SavedPlan::read(req.path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadInput;
        }
    };
    if saved.is_some() && (!req.only.is_empty() || req.destroy.is_some()) {
        eprintln!(
            "error: {} is a saved plan: it already says what to do (--migration is set when it is made)",
            req.path.display()
        );
        return Outcome::BadInput;
    }
    let json = req.output == Output::Json;
    if json && saved.is_none() && !req.yes && !req.dry_run {
        eprintln!(
            "error: --output json cannot ask for confirmation: pass --yes, or apply a saved plan"
        );
        return Outcome::BadInput;
    }
    runtime().block_on(async {
        let p = match &saved {
            Some(s) => {
                let text = match read_text(&s.plan_path) {
                    Ok(t) => t,
                    Err(o) => return o,
                };
                let redacted = match crate::plan::from_text(&s.plan_path.display().to_string(), &text) {
                    Ok(p) => p.redacted(&text),
                    Err(_) => text,
                };
                if let Some(why) = s.stale(&redacted) {
                    return Outcome::Failed(format!(
                        "refusing to apply the saved plan {}: {why}; make a new one with `ferry plan --out`",
                        req.path.display()
                    ));
                }
                match prepare(&s.plan_path, global, Some(s.resolution.clone()), None, None, &s.migrations).await {
                    Ok(p) => p,
                    Err(o) => return o,
                }
            }
            None => match prepare(req.path, global, None, None, req.destroy, req.only).await {
                Ok(p) => p,
                Err(o) => return o,
            },
        };
        let conc = concurrency_of(&p.plan, req.concurrency);
        let planned = match dry_run(&p, conc).await {
            Ok(x) => x,
            Err(o) => return o,
        };
        // The state is made (a `.ferry` directory, say) only for a run that goes ahead; a saved
        // plan's needs reading first, for the runs that may have applied it.
        let mut backend = None;
        if let Some(s) = &saved {
            let b = match create_backend(&p, global) {
                Ok(b) => backend.insert(b),
                Err(o) => return o,
            };
            if let Some(run) = applied_by(b.as_ref(), &s.id) {
                return Outcome::Failed(format!(
                    "refusing to apply the saved plan {}: run {run} applied it already; \
                     make a new one with `ferry plan --out`",
                    req.path.display()
                ));
            }
            let moved = s.moved(&planned);
            if !moved.is_empty() {
                for m in &moved {
                    eprintln!("  {m}");
                }
                return Outcome::Failed(format!(
                    "refusing to apply the saved plan {}: {} step(s) moved since it was saved (above); \
                     review a new plan: `ferry plan --out`",
                    req.path.display(),
                    moved.len()
                ));
            }
        }
        if json {
            let line = report::EventLine::Plan {
                format_version: report::json::EVENTS_VERSION,
                plan: p.plan.name.value.clone(),
                document: serde_json::from_str(&planned.json()).expect("JSON"),
            };
            println!("{}", line.to_line());
        } else if !global.quiet {
            print!("{}", planned.text(Style::for_stdout()));
        }
        if !planned.has_changes() || req.dry_run {
            if json && !planned.has_changes() {
                let line = report::EventLine::Summary {
                    run_id: None,
                    result: report::json::Outcome::NoChanges,
                    done: 0,
                    failed: 0,
                    skipped: 0,
                    not_started: 0,
                    resume: None,
                    ts: exec::now_ms(),
                };
                println!("{}", line.to_line());
            }
            return Outcome::Ok;
        }
        // A saved plan is the approval.
        if !req.yes && saved.is_none() {
            if !std::io::stdin().is_terminal() {
                eprintln!("error: refusing to ask for confirmation: standard input is not a terminal; pass --yes to apply");
                return Outcome::BadInput;
            }
            if req.destroy.is_some() {
                print!("\nDestroy what is marked `-` above? Only `yes` is accepted: ");
            } else {
                print!("\nApply these changes? Only `yes` is accepted: ");
            }
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            if answer.trim() != "yes" {
                eprintln!("Apply cancelled; nothing was changed.");
                return Outcome::Failed("cancelled".into());
            }
        }
        let backend = match backend {
            Some(b) => b,
            None => match create_backend(&p, global) {
                Ok(b) => b,
                Err(o) => return o,
            },
        };
        let run_id = journal::new_run_id();
        let graph = stored_graph(&p, saved.as_ref().map(|s| s.id.as_str()));
        let step_ids: Vec<String> = p.specs.in_order().map(|s| s.id.to_string()).collect();
        let prepared = match journal::start_run(
            backend.as_ref(),
            NewRun {
                run_id: &run_id,
                plan_name: &p.plan.name.value,
                // Stored without its secrets (their fingerprints instead).
                plan_text: &p.plan.redacted(&p.plan_text),
                graph: &graph,
                step_ids,
            },
        ) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let kept = planned.kept();
        execute(&p, backend.as_ref(), prepared, conc, global, &kept, req.output).await
    })
}

/// The run of this state that applied the saved plan `id`, if one did.
fn applied_by(backend: &dyn JournalBackend, id: &str) -> Option<String> {
    backend.list_runs().ok()?.into_iter().find(|run| {
        backend
            .read_graph(run)
            .is_ok_and(|g| g.get("saved_plan").and_then(Value::as_str) == Some(id))
    })
}

/// What a resume needs to rebuild exactly the same graph: where the plan is, what resolve
/// found, the `--migration` targets; and the saved plan the run applies, if any.
fn stored_graph(p: &Prepared, saved_plan: Option<&str>) -> Value {
    let mut g = json!({
        "plan_path": std::fs::canonicalize(&p.plan_path).unwrap_or(p.plan_path.clone()),
        "resolution": p.resolution,
    });
    if !p.only.is_empty() {
        g["migrations"] = json!(p.only);
    }
    if let Some(id) = saved_plan {
        g["saved_plan"] = json!(id);
    }
    if let Some(d) = p.destroy {
        g["destroy"] = json!({
            "include_keys": d.include_keys,
            "include_orphans": d.include_orphans,
        });
    }
    g
}

/// The run's audit log as the AWS clients' sink: a record per mutating call, handed to a
/// writer thread that appends whatever has queued up in one batch (one write and one fsync
/// locally, one object on S3). A call never waits for the disk or S3, and many calls in flight
/// share a sync; a record is durable about one sync after its call returned.
struct RunAudit {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<serde_json::Value>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RunAudit {
    fn start(mut log: Box<dyn journal::AuditLog>) -> Arc<RunAudit> {
        let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
        let writer = std::thread::spawn(move || {
            let mut warned = false;
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                if let Err(e) = log.append_all(&batch)
                    && !std::mem::replace(&mut warned, true)
                {
                    eprintln!("warning: cannot write the audit log: {e}");
                }
            }
        });
        Arc::new(RunAudit {
            queue: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Writes what is queued and stops the writer; later records are dropped.
    fn finish(&self) {
        self.queue.lock().expect("audit queue").take();
        if let Some(w) = self.writer.lock().expect("audit writer").take() {
            let _ = w.join();
        }
    }
}

impl crate::aws::AuditSink for RunAudit {
    fn record(&self, record: crate::aws::AuditRecord) {
        let value = serde_json::to_value(&record).expect("JSON");
        if let Some(q) = self.queue.lock().expect("audit queue").as_ref() {
            let _ = q.send(value);
        }
    }
}

/// Flushes the audit log however `execute` returns.
struct AuditFlush(Option<Arc<RunAudit>>);

impl Drop for AuditFlush {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            a.finish();
        }
    }
}

/// Refuses mutating calls once the state's lease is lost.
struct LeaseGate(Arc<journal::Lease>);

impl crate::aws::MutationGate for LeaseGate {
    fn check(&self) -> Result<(), String> {
        self.0.check().map_err(|e| e.to_string())
    }
}

async fn execute(
    p: &Prepared,
    backend: &dyn JournalBackend,
    prepared: journal::PreparedRun,
    concurrency: usize,
    global: &Global,
    kept: &[(String, KeptCopy)],
    output: Output,
) -> Outcome {
    let _ = p.cx.run_id.set(prepared.run_id.clone());
    let opts = RunOptions {
        concurrency,
        run_id: prepared.run_id.clone(),
        plan_name: p.plan.name.value.clone(),
        plan_hash: prepared.plan_hash.clone(),
        poll_interval: poll_interval(),
        poll_interval_busy: shortest_poll(&p.plan),
        ..RunOptions::default()
    };
    let json = output == Output::Json;
    let mode = if global.quiet || json {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    };
    let cancel = Cancel::new();
    let signals = cancel.clone();
    let watcher = tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            signals.signal();
            if signals.level() == 1 {
                report::notice(
                    "Interrupted: finishing the calls in flight, starting nothing new (Ctrl-C again to stop at once)",
                );
            }
        }
    });
    let run_id = prepared.run_id.clone();
    let _lock = prepared.lock;
    let _audit = AuditFlush(match backend.open_audit(&run_id) {
        Ok(log) => {
            let audit = RunAudit::start(log);
            p.cx.aws.hooks().set_sink(audit.clone());
            Some(audit)
        }
        Err(e) => {
            eprintln!("warning: cannot open the audit log: {e}");
            None
        }
    });
    // A lock that is a lease (S3) can be lost: then no mutating call leaves this process (the
    // gate, checked by every AWS client before sending), no event is journaled (the log checks
    // too, and the walker stops when it cannot journal an intent), and nothing new starts.
    if let Some(h) = _lock.took_over_from() {
        eprintln!("Took over the state lock of {h}: it was no longer held.");
    }
    let lease = _lock.lease();
    let lease_watch = lease.clone().map(|lease| {
        p.cx.aws
            .hooks()
            .set_gate(Arc::new(LeaseGate(lease.clone())));
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if let Err(e) = lease.check() {
                    report::notice(&format!("error: {e}; stopping before any further change"));
                    cancel.signal();
                    return;
                }
            }
        })
    });
    let shape = report::ProgressPlan::new(
        &p.specs,
        &p.steps,
        &p.limits,
        &p.resolution,
        prepared.resume.done.keys(),
    );
    let executor = Executor::new(p.steps.clone(), p.cx.clone(), opts)
        .limits(p.limits.clone())
        .poller(
            steps::ec2::SNAPSHOT_POLL,
            Arc::new(steps::ec2::SnapshotPoller),
        )
        .poller(steps::ec2::IMAGE_POLL, Arc::new(steps::ec2::ImagePoller))
        .poller(steps::batch::JOB_POLL, Arc::new(steps::batch::JobPoller))
        .poller(
            steps::rds::DB_SNAPSHOT_POLL,
            Arc::new(steps::rds::DbSnapshotPoller(crate::ids::DbKind::Instance)),
        )
        .poller(
            steps::rds::DB_CLUSTER_SNAPSHOT_POLL,
            Arc::new(steps::rds::DbSnapshotPoller(crate::ids::DbKind::Cluster)),
        )
        .resume(typed_resume(p, prepared.resume))
        .subscribe(Box::new(prepared.writer))
        .subscribe(Box::new(Progress::new(mode, shape)));
    let executor = if json {
        executor.subscribe(Box::new(report::JsonEvents::new(Box::new(
            std::io::stdout(),
        ))))
    } else {
        executor
    };
    let report = executor.run(cancel.clone()).await;
    watcher.abort();
    if let Some(w) = lease_watch {
        w.abort();
    }
    if let Some(Err(e)) = lease.as_ref().map(|l| l.check()) {
        return Outcome::Failed(format!(
            "{e}; stopped before any further change (another ferry may be running this state: `ferry runs`)"
        ));
    }
    let report = match report {
        Ok(r) => r,
        Err(exec::ExecError::Aborted) => {
            eprintln!("Stopped. Resume with `ferry resume {run_id}`.");
            return Outcome::Interrupted;
        }
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    summarize(&report, &run_id, global.quiet || json, kept);
    match report.result {
        RunResult::Succeeded => Outcome::Ok,
        RunResult::Interrupted => {
            eprintln!("Interrupted. Resume with `ferry resume {run_id}`.");
            Outcome::Interrupted
        }
        RunResult::Failed => Outcome::Failed(format!(
            "{} step(s) failed; fix the cause, then `ferry resume {run_id}`",
            report.failed.len()
        )),
    }
}

/// `FERRY_COPY_ORDER=largest-first` brings back the order ferry had before chains of
/// incremental copies (the benchmark measures the two side by side).
fn copy_order() -> resolve::CopyOrder {
    match std::env::var("FERRY_COPY_ORDER").as_deref() {
        Ok("largest-first") => resolve::CopyOrder::LargestFirst,
        _ => resolve::CopyOrder::Chains,
    }
}

/// The longest wait between polls of an operation that reports no progress. Shorter in tests
/// against the emulator (`FERRY_POLL_INTERVAL_MS`).
fn poll_interval() -> std::time::Duration {
    poll_interval_set().unwrap_or(std::time::Duration::from_secs(10))
}

fn poll_interval_set() -> Option<std::time::Duration> {
    std::env::var("FERRY_POLL_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
}

/// The shortest wait between two polls of one account and region: a tenth of the poll call's
/// quota (DescribeSnapshots, 20/s: 0.5 s), so polling never crowds out the run's own reads;
/// a third of `FERRY_POLL_INTERVAL_MS` when that is set.
fn shortest_poll(plan: &Plan) -> std::time::Duration {
    if let Some(set) = poll_interval_set() {
        return set / 3;
    }
    let name = "ec2:DescribeSnapshots";
    let rate = plan
        .settings
        .quotas
        .iter()
        .find(|(k, _)| k.value == name)
        .and_then(|(_, q)| q.per_second)
        .or(match crate::quotas::default_for(name) {
            Some(crate::quotas::Quota::Rate { per_second, .. }) => Some(per_second),
            _ => None,
        })
        .filter(|r| *r > 0.0)
        .unwrap_or(20.0);
    std::time::Duration::from_secs_f64(10.0 / rate)
}

/// The journal's outputs of done steps, read by each step's kind; an output that does not
/// read (another version's) leaves its step to be observed again.
fn typed_resume(p: &Prepared, resume: exec::Resume<Value>) -> exec::Resume<StepOutput> {
    let kinds: std::collections::HashMap<String, StepKind> = p
        .specs
        .in_order()
        .map(|s| (s.id.to_string(), s.kind()))
        .collect();
    resume.map_outputs(|id, v| StepOutput::from_journal(*kinds.get(id)?, v))
}

fn summarize(
    report: &exec::RunReport<StepOutput>,
    run_id: &str,
    quiet: bool,
    kept: &[(String, KeptCopy)],
) {
    let s = report::summary(report, run_id, kept);
    eprint!("{}", s.errors);
    if !quiet {
        print!("{}", s.text);
    }
}

/// `ferry resume [RUN]`: from `--state` (a directory or s3://bucket/prefix), else `.ferry` here.
pub fn resume(run: Option<&str>, replan: bool, global: &Global) -> Outcome {
    let backend = match state::open_existing(global, None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadInput;
        }
    };
    let run_id = match run {
        Some(r) => r.to_string(),
        None => match journal::latest_unfinished(backend.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::BadInput;
            }
        },
    };
    let stored = match backend.read_graph(&run_id) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadInput;
        }
    };
    let mut plan_path = PathBuf::from(stored["plan_path"].as_str().unwrap_or_default());
    let resolution: Resolution = match serde_json::from_value(stored["resolution"].clone()) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("the run's stored graph is unreadable: {e}")),
    };
    // A destroy run resumes as a destroy run.
    let destroy = stored
        .get("destroy")
        .filter(|d| d.is_object())
        .map(|d| graph::DestroyOptions {
            include_keys: d["include_keys"].as_bool().unwrap_or(false),
            include_orphans: d["include_orphans"].as_bool().unwrap_or(false),
        });
    // A targeted run (`--migration`) resumes with the same targets.
    let only: Vec<String> = stored
        .get("migrations")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    // The stored plan's copy, if the run needs it: removed when the resume is over.
    let mut _plan_copy: Option<PrivateDir> = None;
    let plan_text = match std::fs::read_to_string(&plan_path) {
        Ok(t) => t,
        // Another machine (a shared state): the plan the run started with is in the state.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !replan => {
            match stored_plan_copy(backend.as_ref(), &run_id, &plan_path) {
                Ok((path, text, guard)) => {
                    _plan_copy = Some(guard);
                    if !global.quiet {
                        println!(
                            "The plan file {} is not here; using the plan stored with run {run_id}.",
                            plan_path.display()
                        );
                    }
                    plan_path = path;
                    text
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return Outcome::BadInput;
                }
            }
        }
        Err(e) => {
            eprintln!(
                "error: the plan of run {run_id} was {}: {e}",
                plan_path.display()
            );
            return Outcome::BadInput;
        }
    };
    // The plan may name a key for the state's objects: write with it from here on.
    let backend = match load(&plan_path).and_then(|p| state_key(&p)) {
        Some(key) => match state::open_existing(global, Some(key)) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        },
        None => backend,
    };
    // Runs store their plan without secrets: compare like with like.
    let plan_text = match crate::plan::from_text(&plan_path.display().to_string(), &plan_text) {
        Ok(p) => p.redacted(&plan_text),
        Err(_) => plan_text,
    };
    let mut prepared_run =
        match journal::resume_run(backend.as_ref(), Some(&run_id), &plan_text, replan) {
            Ok(r) => r,
            Err(e @ journal::JournalError::PlanChanged { .. }) => {
                eprintln!("error: {e}");
                return Outcome::BadInput;
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
    if replan {
        // A replanned run trusts nothing it did before: every step, done ones too, looks at the
        // live state again against the plan as it is now (submitted copies are still followed).
        prepared_run.resume.done.clear();
    }
    runtime().block_on(async {
        // A replanned run resolves again; otherwise it works on exactly the stored resources.
        let stored = if replan { None } else { Some(resolution) };
        let p = match prepare(&plan_path, global, stored, Some(&run_id), destroy, &only).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let conc = concurrency_of(&p.plan, None);
        if !global.quiet {
            println!("Resuming run {run_id} of plan `{}`.", p.plan.name.value);
        }
        execute(
            &p,
            backend.as_ref(),
            prepared_run,
            conc,
            global,
            &[],
            Output::Text,
        )
        .await
    })
}

/// The run's stored plan, written to a private temporary directory under its original name.
fn stored_plan_copy(
    backend: &dyn JournalBackend,
    run_id: &str,
    original: &Path,
) -> Result<(PathBuf, String, PrivateDir), String> {
    let text = backend.read_plan(run_id).map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("ferry-{}-{run_id}", std::process::id()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let guard = PrivateDir(dir.clone());
    let name = original
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "plan.yaml".into());
    let path = dir.join(name);
    std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, text, guard))
}

/// A directory only its owner may read, removed when the run that needed it is over.
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ferry verify PLAN`: prove, now, that each `s3-replication` rule replicates (a canary, as
/// `apply` does, whatever an earlier run proved), and read the replication status of up to
/// `sample` existing objects per migration, so that FAILED ones are found. Exit 1 when a
/// canary fails or a FAILED object is found.
pub fn verify(path: &Path, sample: usize, global: &Global) -> Outcome {
    runtime().block_on(async {
        let p = match prepare(path, global, None, None, None, &[]).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        // A context without earlier runs' proofs: every canary is written again.
        let cx = Arc::new(Cx::new(p.cx.aws.clone(), &p.plan.name.value, &p.resolution));
        let checks = match steps::build_only(&p.specs, |s| s.kind() == StepKind::VerifyReplication)
        {
            Ok(g) => Arc::new(g),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let opts = RunOptions {
            concurrency: concurrency_of(&p.plan, None),
            plan_name: p.plan.name.value.clone(),
            ..RunOptions::default()
        };
        let report = match Executor::new(checks, cx.clone(), opts)
            .limits(p.limits.clone())
            .run(Cancel::new())
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let mut bad = report.failed.len();
        for (step, e) in &report.failed {
            println!("FAILED {step}: {}", e.message);
            if let Some(h) = &e.hint {
                println!("  hint: {h}");
            }
        }
        for (step, out) in &report.outputs {
            if let StepOutput::Verified(v) = out {
                println!(
                    "ok     {step}: canary replicated under the replica key in {:.1} s",
                    v.seconds
                );
            }
        }
        for m in p.plan.migrations.iter().filter_map(|m| match m {
            crate::plan::Migration::S3Replication(r) => Some(r),
            _ => None,
        }) {
            match steps::s3::sample_status(&cx, &p.resolution, m, sample).await {
                Ok(s) => {
                    println!("{}", s.text(&m.id.value));
                    if s.failed > 0 {
                        bad += 1;
                    }
                }
                Err(e) => {
                    println!("FAILED {}: sampling: {e}", m.id.value);
                    bad += 1;
                }
            }
        }
        if bad > 0 {
            Outcome::Failed(format!("{bad} check(s) failed"))
        } else {
            Outcome::Ok
        }
    })
}
