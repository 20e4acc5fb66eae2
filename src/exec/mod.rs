//! Run the step graph: walker, retries, rate limits, polling. Knows nothing of AWS.
//!
//! How the CLI puts a run together (`apply`; `resume` uses `journal::resume_run` instead):
//!
//! ```ignore
//! let backend = journal::LocalJournal::create(state_dir)?;
//! let run_id = journal::new_run_id();
//! let run = journal::start_run(&backend, journal::NewRun { run_id: &run_id, plan_name, plan_text,
//!     graph: &resolved_json, step_ids: graph.ids().map(String::from).collect() })?;
//! let limits = Arc::new(Limits::new(bucket_table, gate_table));   // quotas are data
//! let cancel = Cancel::new();                                     // Ctrl-C handler: cancel.signal()
//! let report = Executor::new(Arc::new(graph), Arc::new(aws_cx), run.run_options(plan_name, opts))
//!     .limits(limits)
//!     .poller("ec2.snapshot", Arc::new(SnapshotPoller))           // keys `ec2.snapshot/<acct>/<region>`
//!     .resume(run.resume)
//!     .subscribe(Box::new(run.writer))                            // the journal first
//!     .subscribe(Box::new(Progress::new(ProgressMode::Auto)))
//!     .run(cancel)
//!     .await?;                                                    // Err(Aborted) after a 2nd Ctrl-C
//! // report.result: Succeeded | Failed | Interrupted (exit 130)
//! ```

mod cancel;
mod event;
mod graph;
mod keys;
mod limits;
mod retry;
mod step;
mod walker;

pub use cancel::Cancel;
pub use event::{Event, RunResult, Subscriber, SubscriberError, now_ms};
pub use graph::{GraphError, StepGraph, StepGraphBuilder, StepIndex};
pub use keys::{BucketKey, GateKey, PollKey};
pub use limits::{Aimd, BucketConfig, Limits};
pub use retry::{RetryPolicies, RetryPolicy, with_retries};
pub use step::{
    Applied, Context, ErrorClass, Observation, PollAnswer, Poller, Step, StepCx, StepError,
    Submitted,
};
pub use walker::{ExecError, Executor, Observed, Resume, RunOptions, RunReport};
