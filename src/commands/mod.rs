//! What each command does, on top of the library. `main` only maps the outcome to an exit code.

mod run;
mod saved;
mod state;
mod target;

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, Command, GraphFormat, Output, Shell};
use crate::graph;
use crate::plan::{self, Plan};
use crate::report::graph as render;

/// How a command ended; each has one exit status.
#[derive(Debug)]
pub enum Outcome {
    Ok,
    /// The run failed (exit 1).
    Failed(String),
    /// Bad input or usage (exit 2); the message was already shown.
    BadInput,
    /// Stopped by Ctrl-C (exit 130); resumable.
    Interrupted,
}

impl Outcome {
    pub fn code(&self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(_) => 1,
            Outcome::BadInput => 2,
            Outcome::Interrupted => 130,
        }
    }
}

pub fn run(cli: Cli) -> Outcome {
    let global = &cli.global;
    let outcome = match &cli.command {
        Command::Validate { plans } => validate(plans),
        Command::Plan {
            plan,
            offline: true,
            output,
            only,
            ..
        } => {
            if !only.migrations.is_empty() {
                eprintln!("error: --migration needs the live plan (without --offline)");
                return Outcome::BadInput;
            }
            plan_offline(plan, *output)
        }
        Command::Plan {
            plan,
            output,
            out,
            only,
            ..
        } => run::plan_live(plan, *output, out.as_deref(), &only.migrations, global),
        Command::Show { file, output } => run::show(file, *output),
        Command::Graph { plan, format } => graph_cmd(plan, *format),
        Command::IamPolicy { plan, destroy } => iam_policy(plan, *destroy),
        Command::Verify { plan, sample } => run::verify(plan, *sample, global),
        Command::Schema => {
            let schema = plan::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema).expect("JSON"));
            Outcome::Ok
        }
        Command::Completions { shell } => completions(*shell),
        Command::Man { command } => man_page(command.as_deref()),
        Command::Apply {
            plan,
            dry_run,
            yes,
            concurrency,
            output,
            only,
        } => run::apply(
            run::ApplyRequest {
                path: plan,
                dry_run: *dry_run,
                yes: *yes,
                concurrency: *concurrency,
                destroy: None,
                only: &only.migrations,
                output: *output,
            },
            global,
        ),
        Command::Destroy {
            plan,
            dry_run,
            yes,
            include_keys,
            include_orphans,
            concurrency,
        } => run::apply(
            run::ApplyRequest {
                path: plan,
                dry_run: *dry_run,
                yes: *yes,
                concurrency: *concurrency,
                destroy: Some(graph::DestroyOptions {
                    include_keys: *include_keys,
                    include_orphans: *include_orphans,
                }),
                only: &[],
                output: Output::Text,
            },
            global,
        ),
        Command::Resume { run, replan, .. } => run::resume(run.as_deref(), *replan, global),
        Command::Status { run, audit, output } => {
            state::status(run.as_deref(), *audit, *output, global)
        }
        Command::Runs => state::runs(global),
        Command::Unlock { force } => state::unlock(*force, global),
    };
    if let Outcome::Failed(msg) = &outcome {
        eprintln!("error: {msg}");
    }
    outcome
}

/// Loads and checks a plan, printing its problems; `None` means bad input.
pub(crate) fn load(path: &Path) -> Option<Plan> {
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

fn compile(path: &Path) -> Result<(Plan, graph::PlanGraph), Outcome> {
    compile_with(path, graph::compile)
}

fn compile_with(
    path: &Path,
    compile: fn(&Plan) -> Result<graph::PlanGraph, graph::CompileError>,
) -> Result<(Plan, graph::PlanGraph), Outcome> {
    let plan = load(path).ok_or(Outcome::BadInput)?;
    match compile(&plan) {
        Ok(g) => Ok((plan, g)),
        Err(e) => Err(Outcome::Failed(format!(
            "internal error compiling the plan: {e}"
        ))),
    }
}

fn plan_offline(path: &Path, output: Output) -> Outcome {
    let (plan, g) = match compile(path) {
        Ok(x) => x,
        Err(o) => return o,
    };
    match output {
        Output::Text => print!("{}", render::text(&plan.name.value, &g)),
        Output::Json => println!("{}", render::json(&plan.name.value, &g)),
    }
    Outcome::Ok
}

fn iam_policy(path: &Path, destroy: bool) -> Outcome {
    // Every path a run may take: a `backfill: true` is inline or a batch job by the bucket's
    // size, which only a run sees.
    let (plan, mut g) = match compile_with(path, graph::compile_every_path) {
        Ok(x) => x,
        Err(o) => return o,
    };
    if destroy {
        let every = graph::DestroyOptions {
            include_keys: true,
            include_orphans: true,
        };
        g = match graph::destroy(&g, every) {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(format!("internal error compiling the plan: {e}")),
        };
    }
    let policies = crate::steps::permissions::iam_policies(&plan, &g);
    println!("{}", serde_json::to_string_pretty(&policies).expect("JSON"));
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

/// `ferry completions SHELL`: the script clap_complete generates from the clap definitions.
fn completions(shell: Shell) -> Outcome {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut script);
    print_bytes(&script)
}

/// `ferry man [COMMAND]`: ferry(1), or ferry-COMMAND(1), generated from the clap definitions.
fn man_page(command: Option<&str>) -> Outcome {
    let mut cli = Cli::command();
    cli.build();
    let page = match command {
        None => cli,
        Some(name) => match cli.find_subcommand(name).filter(|c| !c.is_hide_set()) {
            Some(c) => c.clone(),
            None => {
                eprintln!("error: `{name}` is not a ferry command (see `ferry --help`)");
                return Outcome::BadInput;
            }
        },
    };
    let mut roff = Vec::new();
    let man = clap_mangen::Man::new(page).source(format!("ferry {}", env!("CARGO_PKG_VERSION")));
    if let Err(e) = man.render(&mut roff) {
        return Outcome::Failed(format!("cannot render the man page: {e}"));
    }
    print_bytes(&roff)
}

/// Writes to stdout; a reader that went away (`| head`) is no failure.
fn print_bytes(bytes: &[u8]) -> Outcome {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Outcome::Failed(format!("cannot write to stdout: {e}"))
        }
        _ => Outcome::Ok,
    }
}
