//! What a person (or a program) reads: the plan, offline and live, as text and JSON; progress
//! while a run goes; the summary when it ends. Everything here renders (or, for progress,
//! subscribes to the run's events); the commands decide where it goes and the exit code.

pub mod estimate;
pub mod graph;
pub mod json;
pub mod plan;
mod progress;
pub mod style;
pub mod summary;

pub use json::{EventLine, JsonEvents, events_schema};
pub use plan::PlanDocument;
pub use progress::{Progress, ProgressMode, ProgressPlan, notice};
pub use style::Style;
pub use summary::{RunSummary, summary};
