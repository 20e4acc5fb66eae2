//! Run the step graph: walker, retries, rate limits, polling. Knows nothing of AWS.

mod cancel;
mod event;
mod graph;
mod limits;
pub mod progress;
mod report;
mod retry;
mod step;
mod walker;

pub use cancel::Cancel;
pub use event::{Event, RunResult, Subscriber, SubscriberError, now_ms};
pub use graph::{GraphError, StepGraph, StepGraphBuilder, StepIndex};
pub use limits::{Aimd, BucketConfig, Limits};
pub use progress::{Progress, ProgressMode};
pub use report::JsonReport;
pub use retry::{RetryPolicies, RetryPolicy};
pub use step::{
    Applied, ErrorClass, Observation, PollAnswer, Poller, Scope, Step, StepCx, StepError, Submitted,
};
pub use walker::{ExecError, Executor, Resume, RunOptions, RunReport};
