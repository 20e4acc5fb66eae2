//! Command-line definitions only: parsing has no side effects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Migrate KMS-encrypted AWS data (EBS snapshots, AMIs, S3 objects) between regions and accounts.
///
/// Exit status: 0 success, 1 the run failed, 2 bad input or usage, 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Send every AWS call to this endpoint (e.g. the local emulator); S3 then uses path-style.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Run state: a local directory or s3://bucket/prefix (default: `.ferry` beside the plan).
    #[arg(long, global = true, value_name = "DIR|S3-URL")]
    pub state: Option<String>,
    /// AWS profile for an S3 state (default: the standard credential chain).
    #[arg(
        long,
        global = true,
        env = "FERRY_STATE_PROFILE",
        value_name = "PROFILE"
    )]
    pub state_profile: Option<String>,
    /// Format of log lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log detail (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--migration ID`: only some migrations, like Terraform's `-target`.
#[derive(Debug, Clone, Default, Args)]
pub struct Only {
    /// Only this migration and what it depends on (migrations it names in `depends_on`, the
    /// keys it uses); repeatable. For exceptions, like Terraform's -target.
    #[arg(long = "migration", value_name = "ID")]
    pub migrations: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check plan files; no AWS calls.
    Validate {
        #[arg(required = true, value_name = "PLAN")]
        plans: Vec<PathBuf>,
    },
    /// Dry run: what would change, step by step, in execution order. Changes nothing.
    Plan {
        plan: PathBuf,
        /// Do not read live state; needs no credentials.
        #[arg(long)]
        offline: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Also save this plan, as observed, to FILE: `ferry apply FILE` then makes exactly
        /// these changes, or refuses if the plan file or the live state moved.
        #[arg(long, value_name = "FILE", conflicts_with = "offline")]
        out: Option<PathBuf>,
        #[command(flatten)]
        only: Only,
    },
    /// Print the step graph.
    Graph {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Make it so: run every step, journaled. Given a saved plan (`ferry plan --out`), run
    /// exactly that, without asking: the saved plan is the approval.
    Apply {
        #[arg(value_name = "PLAN|SAVED-PLAN")]
        plan: PathBuf,
        /// Show what would change and stop (same as `ferry plan`).
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Steps in flight at most (overrides settings.concurrency).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        concurrency: Option<u32>,
        /// `json`: one JSON event per line on stdout (the plan, each step, copy progress, the
        /// summary; shape in docs/events.md). Needs --yes or a saved plan.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        only: Only,
    },
    /// Print a saved plan (`ferry plan --out FILE`) as it was reviewed.
    Show {
        #[arg(value_name = "SAVED-PLAN")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Take back what the plan's runs made, like `terraform destroy`: copies, shares, key
    /// policy statements, grants, replication rules, roles, created buckets (only if empty).
    /// Journaled and resumable like apply.
    Destroy {
        plan: PathBuf,
        /// Show what would be removed and stop.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Also schedule the keys the plan created (and their replicas) for deletion, with
        /// the longest waiting period (30 days).
        #[arg(long)]
        include_keys: bool,
        /// Also delete copies whose source no longer exists (they may be the only copy).
        #[arg(long)]
        include_orphans: bool,
        /// Steps in flight at most (overrides settings.concurrency).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        concurrency: Option<u32>,
    },
    /// Continue a failed or interrupted run without redoing finished work.
    Resume {
        /// Run id (default: the latest unfinished run).
        run: Option<String>,
        /// Go on even though the plan file changed since the run started.
        #[arg(long)]
        replan: bool,
        #[arg(long)]
        yes: bool,
    },
    /// Show a run's steps and their states.
    Status {
        /// Run id (default: the latest run).
        run: Option<String>,
        /// Print the run's audit log: every mutating AWS call it made.
        #[arg(long)]
        audit: bool,
        /// `json`: the run's state as one JSON document (shape in docs/events.md).
        #[arg(long, value_enum, default_value_t = Output::Text, conflicts_with = "audit")]
        output: Output,
    },
    /// List runs with start time, plan and result.
    Runs,
    /// Release the state lock left by a ferry that can no longer release it.
    Unlock {
        /// Release even if the holder looks alive.
        #[arg(long)]
        force: bool,
    },
    /// Prove that each s3-replication rule replicates (a canary object), and sample the
    /// replication status of existing objects to find FAILED ones.
    Verify {
        plan: PathBuf,
        /// Existing objects per migration whose replication status is read.
        #[arg(long, value_name = "N", default_value_t = 100)]
        sample: usize,
    },
    /// Print, per account, the least-privilege IAM policy ferry needs to run this plan.
    IamPolicy {
        plan: PathBuf,
        /// The policy `ferry destroy` needs instead (with `--include-keys`).
        #[arg(long)]
        destroy: bool,
    },
    /// Print the JSON Schema of the plan format (for editor completion).
    Schema,
    /// Print the shell completion script (bash, zsh or fish).
    ///
    /// E.g. `ferry completions bash > ~/.local/share/bash-completion/completions/ferry`,
    /// `ferry completions zsh > ~/.zfunc/_ferry`, `ferry completions fish >
    /// ~/.config/fish/completions/ferry.fish`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff).
    ///
    /// `ferry man > ferry.1`; `ferry man apply > ferry-apply.1` for one command's page.
    Man {
        /// The page of one command instead (`ferry man apply`: ferry-apply(1)).
        command: Option<String>,
    },
}

/// The shells `ferry completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
