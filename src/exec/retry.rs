//! Step-level retries: exponential backoff with full jitter, bounded per error class.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::RngExt;
use tokio::time::Instant;

use super::step::ErrorClass;

/// Retry bounds for one error class.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Retries after the first failure of this class; `None` = unbounded.
    pub max_attempts: Option<usize>,
    /// Give up once this long has passed since the first failure of this class; `None` = never.
    pub deadline: Option<Duration>,
}

impl RetryPolicy {
    pub const fn new(
        base: Duration,
        cap: Duration,
        max_attempts: Option<usize>,
        deadline: Option<Duration>,
    ) -> Self {
        RetryPolicy {
            base,
            cap,
            max_attempts,
            deadline,
        }
    }
}

/// One policy per retryable class. `Permanent` is never retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicies {
    pub throttled: RetryPolicy,
    pub transient: RetryPolicy,
    pub not_yet_consistent: RetryPolicy,
    /// Quota-exceeded never fails: attempts and deadline are ignored.
    pub quota_exceeded: RetryPolicy,
}

impl Default for RetryPolicies {
    fn default() -> Self {
        let s = Duration::from_secs;
        RetryPolicies {
            throttled: RetryPolicy::new(s(1), s(30), Some(10), Some(s(600))),
            transient: RetryPolicy::new(s(1), s(20), Some(5), Some(s(300))),
            not_yet_consistent: RetryPolicy::new(s(2), s(30), Some(30), Some(s(600))),
            quota_exceeded: RetryPolicy::new(s(5), s(60), None, None),
        }
    }
}

impl RetryPolicies {
    /// The same small delays for every class: for tests and benchmarks.
    pub fn fast(base: Duration, max_attempts: usize) -> Self {
        let p = RetryPolicy::new(base, base * 8, Some(max_attempts), None);
        RetryPolicies {
            throttled: p,
            transient: p,
            not_yet_consistent: p,
            quota_exceeded: p,
        }
    }
    /// For a dry run: a throttled or transient read is tried a few more times, quickly; a
    /// not-yet-consistent one (a change an earlier run made moments ago, not showing yet) is
    /// looked at again as an apply would: the step says how long that may take.
    pub fn dry_run() -> Self {
        let quick = RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_millis(1600),
            Some(4),
            None,
        );
        RetryPolicies {
            throttled: quick,
            transient: quick,
            not_yet_consistent: RetryPolicies::default().not_yet_consistent,
            quota_exceeded: quick,
        }
    }
    /// For the many calls one step makes itself (a backfill's copies): short waits, since
    /// other calls of the same step go on meanwhile.
    pub fn within_a_step() -> Self {
        let ms = Duration::from_millis;
        RetryPolicies {
            throttled: RetryPolicy::new(ms(100), ms(6400), Some(10), None),
            transient: RetryPolicy::new(ms(100), ms(6400), Some(6), None),
            not_yet_consistent: RetryPolicy::new(ms(500), ms(8000), Some(10), None),
            quota_exceeded: RetryPolicy::new(ms(500), ms(8000), Some(10), None),
        }
    }
    pub fn for_class(&self, class: ErrorClass) -> Option<&RetryPolicy> {
        match class {
            ErrorClass::Throttled => Some(&self.throttled),
            ErrorClass::Transient => Some(&self.transient),
            ErrorClass::NotYetConsistent => Some(&self.not_yet_consistent),
            ErrorClass::QuotaExceeded => Some(&self.quota_exceeded),
            ErrorClass::Permanent => None,
        }
    }
}

/// Runs `call` until it succeeds or its error's class has no retries left under `policies`
/// (backoff with full jitter, as the walker retries steps).
pub async fn with_retries<T, Fut>(
    policies: &RetryPolicies,
    mut call: impl FnMut() -> Fut,
) -> Result<T, super::step::StepError>
where
    Fut: std::future::Future<Output = Result<T, super::step::StepError>>,
{
    let mut state: Option<Box<RetryState>> = None;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                // Quota-exceeded waits without bound between steps, not inside one.
                let bounded = e.class != ErrorClass::QuotaExceeded
                    || state.as_deref().is_none_or(|s| s.attempts < 10);
                match RetryState::next_delay(&mut state, e.class, policies) {
                    Some(d) if bounded => tokio::time::sleep(d).await,
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Retry state of one step for the class of its latest error (reset when the class changes).
#[derive(Debug)]
pub(crate) struct RetryState {
    class: ErrorClass,
    attempts: usize,
    since: Instant,
    backoff: ExponentialBackoff,
}

impl RetryState {
    pub(crate) fn attempts(&self) -> usize {
        self.attempts
    }

    /// Next delay, or `None` when the policy says give up.
    pub(crate) fn next_delay(
        state: &mut Option<Box<RetryState>>,
        class: ErrorClass,
        policies: &RetryPolicies,
    ) -> Option<Duration> {
        let policy = policies.for_class(class)?;
        let now = Instant::now();
        if state.as_ref().is_none_or(|s| s.class != class) {
            let backoff = ExponentialBuilder::default()
                .with_min_delay(policy.base)
                .with_max_delay(policy.cap)
                .with_factor(2.0)
                .without_max_times()
                .build();
            *state = Some(Box::new(RetryState {
                class,
                attempts: 0,
                since: now,
                backoff,
            }));
        }
        let s = state.as_mut().unwrap();
        s.attempts += 1;
        let unbounded = class == ErrorClass::QuotaExceeded;
        if !unbounded {
            if policy.max_attempts.is_some_and(|m| s.attempts > m) {
                return None;
            }
            if policy
                .deadline
                .is_some_and(|d| now.duration_since(s.since) >= d)
            {
                return None;
            }
        }
        let ceiling = s.backoff.next().unwrap_or(policy.cap);
        // Full jitter: uniform in [0, ceiling].
        Some(ceiling.mul_f64(rand::rng().random_range(0.0..=1.0)))
    }
}
