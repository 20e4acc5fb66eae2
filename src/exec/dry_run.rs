//! The dry run: ask every step what it would do (`observe` only), nothing is changed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::graph::StepGraph;
use super::limits::Limits;
use super::step::{ErrorClass, Observation, StepCx, StepError};

/// Observes every step, at most `concurrency` at once; answers in the graph's step order.
/// Steps see no dependency outputs: each must judge from live state alone. Throttled and
/// transient errors are retried a few times with jittered backoff.
pub async fn observe_all<C: Send + Sync + 'static>(
    graph: &StepGraph<C>,
    ctx: Arc<C>,
    limits: Arc<Limits>,
    concurrency: usize,
) -> Vec<Result<Observation, StepError>> {
    let ctx = &ctx;
    let limits = &limits;
    futures::stream::iter(graph.steps.iter())
        .map(|step| async move {
            let cx = StepCx {
                ctx,
                limits,
                inputs: &[],
            };
            let mut attempt = 0u32;
            loop {
                match step.observe(&cx).await {
                    Err(e)
                        if attempt < 4
                            && matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient) =>
                    {
                        if e.class == ErrorClass::Throttled {
                            limits.throttled(step.buckets());
                        }
                        attempt += 1;
                        let cap = 100u64 << attempt;
                        tokio::time::sleep(Duration::from_millis(rand::random_range(0..cap))).await;
                    }
                    other => return other,
                }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}
