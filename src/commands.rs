//! What each command does, on top of the library. `main` only maps the outcome to an exit code.

use std::io::Write;
use std::path::Path;

use crate::cli::{Cli, Command, GraphFormat, Output};
use crate::graph::{self, render};
use crate::plan::{self, Plan};

/// How a command ended; each has one exit status.
#[derive(Debug)]
pub enum Outcome {
    Ok,
    /// The run failed (exit 1).
    Failed(String),
    /// Bad input or usage (exit 2); the message was already shown.
    BadInput,
}

impl Outcome {
    pub fn code(&self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(_) => 1,
            Outcome::BadInput => 2,
        }
    }
}

pub fn run(cli: Cli) -> Outcome {
    let outcome = match cli.command {
        Command::Validate { plans } => validate(&plans),
        Command::Plan {
            plan,
            offline,
            output,
        } => plan_cmd(&plan, offline, output),
        Command::Graph { plan, format } => graph_cmd(&plan, format),
        Command::Schema => {
            let schema = plan::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema).expect("JSON"));
            Outcome::Ok
        }
        Command::Apply { .. } => not_yet("apply"),
        Command::Resume { .. } => not_yet("resume"),
        Command::Status { .. } => not_yet("status"),
        Command::Runs => not_yet("runs"),
        Command::Unlock { .. } => not_yet("unlock"),
    };
    if let Outcome::Failed(msg) = &outcome {
        eprintln!("error: {msg}");
    }
    outcome
}

fn not_yet(what: &str) -> Outcome {
    Outcome::Failed(format!(
        "`ferry {what}` is not implemented yet in this version; `ferry validate` and `ferry plan --offline` work"
    ))
}

/// Loads and checks a plan, printing its problems; `None` means bad input.
fn load(path: &Path) -> Option<Plan> {
    match plan::load(path) {
        Ok(p) => Some(p),
        Err(errors) => {
            let _ = std::io::stderr().write_all(errors.render().as_bytes());
            None
        }
    }
}

fn validate(paths: &[std::path::PathBuf]) -> Outcome {
    let mut ok = true;
    for path in paths {
        match load(path) {
            Some(p) => println!("{}: ok ({} migrations)", path.display(), p.migrations.len()),
            None => ok = false,
        }
    }
    if ok { Outcome::Ok } else { Outcome::BadInput }
}

fn compile(path: &Path) -> Result<(Plan, graph::StepGraph), Outcome> {
    let plan = load(path).ok_or(Outcome::BadInput)?;
    match graph::compile(&plan) {
        Ok(g) => Ok((plan, g)),
        Err(e) => Err(Outcome::Failed(format!(
            "internal error compiling the plan: {e}"
        ))),
    }
}

fn plan_cmd(path: &Path, offline: bool, output: Output) -> Outcome {
    if !offline {
        return Outcome::Failed(
            "`ferry plan` against live state is not implemented yet; use `ferry plan --offline`"
                .into(),
        );
    }
    let (plan, g) = match compile(path) {
        Ok(x) => x,
        Err(o) => return o,
    };
    match output {
        Output::Text => print!("{}", render::text(&plan.name.value, &g)),
        Output::Json => println!("{}", render::json(&plan.name.value, &g, true)),
    }
    Outcome::Ok
}

fn graph_cmd(path: &Path, format: GraphFormat) -> Outcome {
    let (_, g) = match compile(path) {
        Ok(x) => x,
        Err(o) => return o,
    };
    match format {
        GraphFormat::Dot => print!("{}", render::dot(&g)),
        GraphFormat::Mermaid => print!("{}", render::mermaid(&g)),
    }
    Outcome::Ok
}
