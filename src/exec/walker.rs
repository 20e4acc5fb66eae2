//! The walker: one coordinator owns all run state; step calls run as tasks and answer by message.
//!
//! Per step: ready (deps done) -> observe [permit] -> gate slot -> tokens -> apply [permit]
//! -> (submitted: batched polling, gate held) -> done. Waiting for a gate slot or a token never
//! holds one of the `concurrency` permits. Every event goes through the subscribers (journal
//! first) before the coordinator acts on it, so the journal is never behind the world.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cancel::Cancel;
use super::event::{Event, RunResult, Subscriber, SubscriberError, now_ms};
use super::graph::StepGraph;
use super::keys::{GateKey, PollKey};
use super::limits::Limits;
use super::retry::{RetryPolicies, RetryState};
use super::step::{
    Applied, Context, ErrorClass, Observation, PollAnswer, Poller, StepCx, StepError, Submitted,
};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Step calls (observe/apply) in flight at most.
    pub concurrency: usize,
    /// On the first failure stop starting new work (running work and polls finish).
    pub fail_fast: bool,
    pub retry: RetryPolicies,
    /// The longest wait between polls of a submitted operation that reports no progress.
    pub poll_interval: Duration,
    /// The shortest wait between two polls of one key (the caller sizes it to a small share
    /// of the poll call's quota).
    pub poll_interval_busy: Duration,
    /// A submitted operation not finished after this long fails the step.
    pub poll_deadline: Duration,
    pub run_id: String,
    pub plan_name: String,
    pub plan_hash: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 32,
            fail_fast: false,
            retry: RetryPolicies::default(),
            poll_interval: Duration::from_secs(10),
            poll_interval_busy: Duration::from_millis(500),
            poll_deadline: Duration::from_secs(48 * 3600),
            run_id: String::new(),
            plan_name: String::new(),
            plan_hash: String::new(),
        }
    }
}

/// What an earlier attempt of this run achieved (folded from its journal).
#[derive(Debug, Clone)]
pub struct Resume<O> {
    /// Done steps and their outputs: not observed again.
    pub done: HashMap<String, O>,
    /// Submitted operations: polled again straight away.
    pub submitted: HashMap<String, Submitted>,
    /// This continues an earlier attempt of the run (said so in `run-started`).
    pub resumed: bool,
}

impl<O> Default for Resume<O> {
    fn default() -> Self {
        Resume {
            done: HashMap::new(),
            submitted: HashMap::new(),
            resumed: false,
        }
    }
}

impl<O> Resume<O> {
    /// The same resume with outputs of another type; an output `f` cannot read leaves its step
    /// to be observed again (which is always safe).
    pub fn map_outputs<P>(self, mut f: impl FnMut(&str, O) -> Option<P>) -> Resume<P> {
        Resume {
            done: self
                .done
                .into_iter()
                .filter_map(|(id, o)| f(&id, o).map(|p| (id, p)))
                .collect(),
            submitted: self.submitted,
            resumed: self.resumed,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport<O> {
    pub result: RunResult,
    pub done: usize,
    /// Root causes only.
    pub failed: Vec<(String, StepError)>,
    /// (step, root step it was skipped for).
    pub skipped: Vec<(String, String)>,
    pub not_started: usize,
    /// Outputs of every done step.
    pub outputs: HashMap<String, O>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("a subscriber failed, the run was stopped: {0}")]
    Subscriber(SubscriberError),
    #[error("aborted")]
    Aborted,
    #[error("the walker stalled with {0} steps unfinished (a gate with no slots?)")]
    Stalled(usize),
}

/// Runs a sealed graph. Build it, set it up, then `run` it once.
pub struct Executor<C: Context> {
    graph: Arc<StepGraph<C>>,
    ctx: Arc<C>,
    limits: Arc<Limits>,
    pollers: HashMap<String, Arc<dyn Poller<C>>>,
    resume: Resume<C::Output>,
    opts: RunOptions,
    subscribers: Vec<Box<dyn Subscriber>>,
}

impl<C: Context> Executor<C> {
    pub fn new(graph: Arc<StepGraph<C>>, ctx: Arc<C>, opts: RunOptions) -> Self {
        Executor {
            graph,
            ctx,
            limits: Arc::new(Limits::default()),
            pollers: HashMap::new(),
            resume: Resume::default(),
            opts,
            subscribers: Vec::new(),
        }
    }
    pub fn limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }
    /// Register the poller for the poll keys that name it.
    pub fn poller(mut self, name: impl Into<String>, poller: Arc<dyn Poller<C>>) -> Self {
        self.pollers.insert(name.into(), poller);
        self
    }
    pub fn resume(mut self, resume: Resume<C::Output>) -> Self {
        self.resume = resume;
        self
    }
    /// Subscribers get every event in the order added (put the journal first).
    pub fn subscribe(mut self, s: Box<dyn Subscriber>) -> Self {
        self.subscribers.push(s);
        self
    }

    pub async fn run(self, cancel: Cancel) -> Result<RunReport<C::Output>, ExecError> {
        let mut w = Walker::new(self, false);
        let r = w.run(cancel).await;
        w.tasks.abort_all();
        r
    }

    /// The dry run: every step observed (read-only), all at once within the concurrency,
    /// token and retry limits of a run, nothing applied. Steps see no dependency outputs: each
    /// judges from live state alone. Answers come in the graph's step order.
    pub async fn observe_all(mut self, cancel: Cancel) -> Result<Vec<Observed<C>>, ExecError> {
        self.opts.retry = RetryPolicies::dry_run();
        self.resume = Resume::default();
        let mut w = Walker::new(self, true);
        let r = w.run(cancel).await;
        w.tasks.abort_all();
        r?;
        Ok(w.observed
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StepError::permanent("Interrupted", "not observed"))))
            .collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Queued,
    Running,
    WaitingGate,
    Polling,
    Delayed,
    Done,
    Failed,
    Skipped,
}

/// What a dry run found for one step.
pub type Observed<C> =
    Result<Observation<<C as Context>::Output, <C as Context>::Change>, StepError>;

/// A poller's answers for the ids it was sent.
type PollAnswers<O> = Result<Vec<(String, PollAnswer<O>)>, StepError>;

enum Msg<C: Context> {
    Observed(u32, Result<Observation<C::Output, C::Change>, StepError>),
    Applied(u32, Result<Applied<C::Output>, StepError>),
    Polled(PollKey, Vec<String>, PollAnswers<C::Output>),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry(u32),
    Unblock(u32),
}

struct Group {
    buckets: Vec<super::keys::BucketKey>,
    queue: VecDeque<u32>,
    blocked: bool,
    listed: bool,
}

struct Gate {
    slots: usize,
    used: usize,
    /// (priority, arrival, step): the highest priority first, then the earliest.
    waiters: BinaryHeap<(u64, Reverse<u64>, u32)>,
}

#[derive(Default)]
struct PollBatch {
    ids: HashMap<String, u32>,
    in_flight: bool,
    /// When this key is polled next (each key keeps its own time: copies in one region do
    /// not make another region's copies be polled).
    due: Option<Instant>,
}

struct Walker<C: Context> {
    g: Arc<StepGraph<C>>,
    ctx: Arc<C>,
    limits: Arc<Limits>,
    pollers: HashMap<String, Arc<dyn Poller<C>>>,
    resume: Resume<C::Output>,
    opts: RunOptions,
    subs: Vec<Box<dyn Subscriber>>,

    phase: Vec<Phase>,
    remaining: Vec<u32>,
    outputs: Vec<Option<Arc<C::Output>>>,
    changes: HashMap<u32, C::Change>,
    retry: HashMap<u32, Box<RetryState>>,
    /// The gate slots each step holds.
    gate_held: HashMap<u32, Vec<GateKey>>,
    poll_since: HashMap<u32, (PollKey, String, Instant)>,
    /// When each polled operation should be done, extrapolated from its reported progress.
    predicted: HashMap<u32, Instant>,

    ready: VecDeque<u32>,
    groups: Vec<Group>,
    group_index: HashMap<Vec<super::keys::BucketKey>, u32>,
    runnable: VecDeque<u32>,
    gates: HashMap<GateKey, Gate>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    batches: HashMap<PollKey, PollBatch>,
    pending_polls: usize,
    /// Arrivals at gates so far (orders waiters of equal priority).
    arrivals: u64,

    tasks: JoinSet<Msg<C>>,
    /// Progress that running steps report, emitted as events by the coordinator.
    notes_tx: super::step::Notes,
    notes_rx: tokio::sync::mpsc::UnboundedReceiver<(u32, f32, String)>,
    in_flight: usize,
    /// Step calls still allowed to run inline this turn (the coordinator must get back to its
    /// loop to see Ctrl-C and timers).
    inline_budget: u32,
    finished: usize,
    stopping: bool,
    cancelled: bool,
    report: RunReport<C::Output>,
    /// A dry run: observe every step, apply none.
    dry: bool,
    observed: Vec<Option<Observed<C>>>,
}

const INLINE_BUDGET: u32 = 256;

/// [`Walker::look_again`]'s rule, in durations since the operation was submitted: the wait
/// before the next poll, `elapsed` into it, with its end predicted at `predicted` (if known).
fn next_wait(elapsed: Duration, predicted: Option<Duration>, opts: &RunOptions) -> Duration {
    let shortest = opts.poll_interval_busy.min(opts.poll_interval);
    let wait = match predicted {
        Some(at) => {
            let margin = at.mul_f64(0.05).max(shortest);
            let left = at.saturating_sub(elapsed);
            if left.is_zero() {
                margin
            } else if left <= margin {
                left
            } else {
                // Halfway there, but never more than four intervals or two margins: progress
                // that stalls moves the prediction out with every poll, and must not stretch
                // the waits with it.
                (left / 2)
                    .max(margin)
                    .min((opts.poll_interval * 4).max(margin * 2))
            }
        }
        None => elapsed.mul_f64(0.1).min(opts.poll_interval),
    };
    wait.max(shortest)
}

fn panic_error() -> StepError {
    StepError::permanent("Panic", "the step panicked (a bug in ferry)")
}

impl<C: Context> Walker<C> {
    fn new(e: Executor<C>, dry: bool) -> Self {
        let n = e.graph.len();
        let (notes_tx, notes_rx) = tokio::sync::mpsc::unbounded_channel();
        Walker {
            notes_tx,
            notes_rx,
            g: e.graph,
            ctx: e.ctx,
            limits: e.limits,
            pollers: e.pollers,
            resume: e.resume,
            opts: e.opts,
            subs: e.subscribers,
            phase: vec![Phase::Waiting; n],
            remaining: vec![0; n],
            outputs: vec![None; n],
            changes: HashMap::new(),
            retry: HashMap::new(),
            gate_held: HashMap::new(),
            poll_since: HashMap::new(),
            predicted: HashMap::new(),
            ready: VecDeque::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            runnable: VecDeque::new(),
            gates: HashMap::new(),
            timers: BinaryHeap::new(),
            batches: HashMap::new(),
            pending_polls: 0,
            arrivals: 0,
            tasks: JoinSet::new(),
            in_flight: 0,
            inline_budget: INLINE_BUDGET,
            finished: 0,
            stopping: false,
            cancelled: false,
            report: RunReport {
                result: RunResult::Succeeded,
                done: 0,
                failed: Vec::new(),
                skipped: Vec::new(),
                not_started: 0,
                outputs: HashMap::new(),
            },
            dry,
            observed: if dry {
                (0..n).map(|_| None).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// A dry run's answer for step `i`: kept, and the step counts as finished.
    fn observed(&mut self, i: u32, r: Observed<C>) {
        self.retry.remove(&i);
        self.phase[i as usize] = Phase::Done;
        self.finished += 1;
        self.observed[i as usize] = Some(r);
    }

    fn emit(&mut self, ev: Event) -> Result<(), ExecError> {
        for s in &mut self.subs {
            s.on_event(&ev).map_err(ExecError::Subscriber)?;
        }
        Ok(())
    }

    fn id(&self, i: u32) -> String {
        self.g.ids[i as usize].to_string()
    }

    async fn run(&mut self, cancel: Cancel) -> Result<RunReport<C::Output>, ExecError> {
        let n = self.g.len();
        // Steps done in an earlier attempt cost nothing: mark them before anything starts.
        let mut already = 0;
        if !self.resume.done.is_empty() {
            for i in 0..n {
                if let Some(v) = self.resume.done.remove(&*self.g.ids[i]) {
                    self.phase[i] = Phase::Done;
                    self.outputs[i] = Some(Arc::new(v));
                    already += 1;
                }
            }
        }
        self.finished = already;
        self.report.done = already;
        self.emit(Event::RunStarted {
            run_id: self.opts.run_id.clone(),
            plan: self.opts.plan_name.clone(),
            plan_hash: self.opts.plan_hash.clone(),
            steps: n,
            already_done: already,
            resumed: self.resume.resumed || already > 0 || !self.resume.submitted.is_empty(),
            ts: now_ms(),
        })?;
        for i in 0..n as u32 {
            if self.phase[i as usize] == Phase::Done {
                continue;
            }
            // A dry run observes every step at once: nothing it waits for will change.
            let r = if self.dry {
                0
            } else {
                self.g
                    .deps_of(i)
                    .iter()
                    .filter(|&&d| self.phase[d as usize] != Phase::Done)
                    .count()
            };
            self.remaining[i as usize] = r as u32;
            if r == 0 {
                if let Some(sub) = self.resume.submitted.remove(&*self.g.ids[i as usize]) {
                    // Already running in the world: it holds its gate slots, over the limit if need be.
                    self.hold_over_limit(i);
                    // Submitted before: looked at straight away.
                    self.start_polling(i, sub, Some(Instant::now()));
                } else {
                    self.phase[i as usize] = Phase::Queued;
                    self.ready.push_back(i);
                }
            }
        }

        let mut cancel_rx = cancel.subscribe();
        let mut level = *cancel_rx.borrow_and_update();
        if level >= 1 {
            self.stop(true);
        }
        if level >= 2 {
            return Err(ExecError::Aborted);
        }
        loop {
            // A signal raised while events were handled counts before anything new starts.
            if cancel_rx.has_changed().unwrap_or(false) {
                level = *cancel_rx.borrow_and_update();
                if level >= 2 {
                    return Err(ExecError::Aborted);
                }
                if level >= 1 {
                    self.stop(true);
                }
            }
            self.inline_budget = INLINE_BUDGET;
            self.launch()?;
            if self.finished == n && self.tasks.is_empty() {
                break;
            }
            let idle = self.tasks.is_empty();
            if self.stopping && idle && (self.cancelled || self.pending_polls == 0) {
                break;
            }
            if idle && self.timers.is_empty() && self.pending_polls == 0 && !self.stopping {
                return Err(ExecError::Stalled(n - self.finished));
            }
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let timers_on = next_timer.is_some() && !self.stopping;
            let next_poll = self.next_poll();
            let polls_on = next_poll.is_some() && !self.cancelled;
            let next_poll = next_poll.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                changed = cancel_rx.changed() => {
                    if changed.is_err() { continue; }
                    level = *cancel_rx.borrow_and_update();
                    if level >= 2 {
                        return Err(ExecError::Aborted);
                    }
                    self.stop(true);
                }
                Some(res) = self.tasks.join_next(), if !idle => {
                    self.on_task(res)?;
                    while let Some(res) = self.tasks.try_join_next() {
                        self.on_task(res)?;
                    }
                }
                _ = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)), if timers_on => {
                    self.fire_timers();
                }
                _ = tokio::time::sleep_until(next_poll), if polls_on => {
                    self.poll_tick()?;
                }
                Some((i, percent, detail)) = self.notes_rx.recv() => {
                    self.emit(Event::StepProgress { step: self.id(i), percent, detail: Some(detail) })?;
                }
            }
        }
        self.finish()
    }

    fn stop(&mut self, cancelled: bool) {
        self.stopping = true;
        self.cancelled |= cancelled;
    }

    fn finish(&mut self) -> Result<RunReport<C::Output>, ExecError> {
        let n = self.g.len();
        let root = self.report.failed.first().map(|(id, _)| id.clone());
        if !self.cancelled
            && let Some(root) = root
        {
            // fail-fast: what was never started is skipped because of the first failure.
            for i in 0..n as u32 {
                if matches!(
                    self.phase[i as usize],
                    Phase::Waiting | Phase::Queued | Phase::WaitingGate | Phase::Delayed
                ) {
                    self.skip_one(i, &root)?;
                }
            }
        }
        let not_started = n - self.finished;
        self.report.not_started = not_started;
        self.report.result = if self.cancelled && not_started > 0 {
            RunResult::Interrupted
        } else if !self.report.failed.is_empty() {
            RunResult::Failed
        } else if not_started > 0 {
            RunResult::Interrupted
        } else {
            RunResult::Succeeded
        };
        for i in 0..n {
            if let Some(v) = &self.outputs[i] {
                self.report
                    .outputs
                    .insert(self.g.ids[i].to_string(), (**v).clone());
            }
        }
        self.emit(Event::RunFinished {
            result: self.report.result,
            done: self.report.done,
            failed: self.report.failed.len(),
            skipped: self.report.skipped.len(),
            not_started,
            ts: now_ms(),
        })?;
        Ok(std::mem::replace(
            &mut self.report,
            RunReport {
                result: RunResult::Succeeded,
                done: 0,
                failed: Vec::new(),
                skipped: Vec::new(),
                not_started: 0,
                outputs: HashMap::new(),
            },
        ))
    }

    fn inputs(&self, i: u32) -> Vec<(Arc<str>, Arc<C::Output>)> {
        self.g
            .deps_of(i)
            .iter()
            .filter_map(|&d| {
                let out = self.outputs[d as usize].clone()?;
                Some((self.g.ids[d as usize].clone(), out))
            })
            .collect()
    }

    /// Start what can start: applies first (their work is already observed), then observes.
    fn launch(&mut self) -> Result<(), ExecError> {
        if self.stopping {
            return Ok(());
        }
        while !self.stopping && self.in_flight < self.opts.concurrency.max(1) {
            if let Some(&gi) = self.runnable.front() {
                let group = &mut self.groups[gi as usize];
                let Some(&i) = group.queue.front() else {
                    group.listed = false;
                    self.runnable.pop_front();
                    continue;
                };
                match self.limits.try_take(&group.buckets) {
                    Ok(()) => {
                        group.queue.pop_front();
                        self.runnable.pop_front();
                        if group.queue.is_empty() {
                            group.listed = false;
                        } else {
                            self.runnable.push_back(gi);
                        }
                        self.start_apply(i)?;
                    }
                    Err(wait) => {
                        group.blocked = true;
                        group.listed = false;
                        self.runnable.pop_front();
                        self.timers
                            .push(Reverse((Instant::now() + wait, Timer::Unblock(gi))));
                    }
                }
                continue;
            }
            let Some(i) = self.ready.pop_front() else {
                break;
            };
            self.start_observe(i)?;
        }
        Ok(())
    }

    /// Poll a step call once right here; only if it has to wait does it become a task. Calls that
    /// finish at once (no-op steps, answers from memory) then cost no task and no wake-up.
    fn run_or_spawn(
        &mut self,
        fut: impl Future<Output = Msg<C>> + Send + 'static,
    ) -> Result<(), ExecError> {
        let mut fut = Box::pin(fut);
        if self.inline_budget == 0 {
            self.tasks.spawn(fut);
            return Ok(());
        }
        self.inline_budget -= 1;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(msg) => self.on_task(Ok(msg)),
            std::task::Poll::Pending => {
                self.tasks.spawn(fut);
                Ok(())
            }
        }
    }

    fn start_observe(&mut self, i: u32) -> Result<(), ExecError> {
        let step = self.g.steps[i as usize].clone();
        self.emit(Event::StepStarted {
            step: self.id(i),
            kind: step.kind().to_string(),
            ts: now_ms(),
        })?;
        self.phase[i as usize] = Phase::Running;
        self.in_flight += 1;
        let ctx = self.ctx.clone();
        let limits = self.limits.clone();
        let inputs = self.inputs(i);
        let notes = self.notes_tx.clone();
        self.run_or_spawn(async move {
            let cx = StepCx {
                ctx: &ctx,
                limits: &limits,
                inputs: &inputs,
                notes: Some(&notes),
                step: Some(i),
            };
            let r = AssertUnwindSafe(step.observe(&cx))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(panic_error()));
            Msg::Observed(i, r)
        })
    }

    fn start_apply(&mut self, i: u32) -> Result<(), ExecError> {
        let step = self.g.steps[i as usize].clone();
        let Some(change) = self.changes.remove(&i) else {
            // Only an observed step is queued for apply: a missing change is a walker bug.
            return self.fail(
                i,
                StepError::permanent(
                    "NoChange",
                    "apply without an observed change (a bug in ferry)",
                ),
            );
        };
        // The intent is durable before the mutating call is made.
        self.emit(Event::StepIntent {
            step: self.id(i),
            intent: step.intent(&change),
            ts: now_ms(),
        })?;
        self.phase[i as usize] = Phase::Running;
        self.in_flight += 1;
        let ctx = self.ctx.clone();
        let limits = self.limits.clone();
        let inputs = self.inputs(i);
        let notes = self.notes_tx.clone();
        self.run_or_spawn(async move {
            let cx = StepCx {
                ctx: &ctx,
                limits: &limits,
                inputs: &inputs,
                notes: Some(&notes),
                step: Some(i),
            };
            let r = AssertUnwindSafe(step.apply(&cx, change))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(panic_error()));
            Msg::Applied(i, r)
        })
    }

    fn on_task(&mut self, res: Result<Msg<C>, tokio::task::JoinError>) -> Result<(), ExecError> {
        let Ok(msg) = res else {
            // Tasks catch their panics; a join error means the task was aborted at shutdown.
            return Ok(());
        };
        match msg {
            Msg::Observed(i, r) => {
                self.in_flight -= 1;
                if self.dry {
                    return match r {
                        Err(e) => self.step_error(i, e),
                        Ok(o) => {
                            self.observed(i, Ok(o));
                            Ok(())
                        }
                    };
                }
                match r {
                    Ok(Observation::Done(out)) => {
                        // Slots passed on to it that it turned out not to need.
                        self.release_gate(i);
                        self.step_done(i, out)
                    }
                    Ok(Observation::Todo(change)) => {
                        self.changes.insert(i, change);
                        self.want_apply(i);
                        Ok(())
                    }
                    Ok(Observation::InProgress(sub)) => {
                        self.hold_over_limit(i);
                        self.emit(Event::StepSubmitted {
                            step: self.id(i),
                            poll_key: sub.poll_key.clone(),
                            id: sub.id.clone(),
                            ts: now_ms(),
                        })?;
                        self.start_polling(i, sub, None);
                        Ok(())
                    }
                    Err(e) => self.step_error(i, e),
                }
            }
            Msg::Applied(i, r) => {
                self.in_flight -= 1;
                let step = self.g.steps[i as usize].clone();
                match r {
                    Ok(Applied::Done(out)) => {
                        self.limits.succeeded(step.buckets());
                        self.release_gate(i);
                        self.step_done(i, out)
                    }
                    Ok(Applied::Submitted(sub)) => {
                        self.limits.succeeded(step.buckets());
                        self.emit(Event::StepSubmitted {
                            step: self.id(i),
                            poll_key: sub.poll_key.clone(),
                            id: sub.id.clone(),
                            ts: now_ms(),
                        })?;
                        self.start_polling(i, sub, None);
                        Ok(())
                    }
                    Err(e) => {
                        if e.class == ErrorClass::Throttled {
                            self.limits.throttled(step.buckets());
                        }
                        self.release_gate(i);
                        self.step_error(i, e)
                    }
                }
            }
            Msg::Polled(key, sent, r) => {
                let out = self.on_polled(key, sent, r);
                // What a poll taught (a pace) may let waiting steps go without a gate, or
                // give a gate more slots.
                self.recheck_waiters();
                let waited: Vec<GateKey> = self
                    .gates
                    .iter()
                    .filter(|(_, g)| !g.waiters.is_empty())
                    .map(|(k, _)| k.clone())
                    .collect();
                for gk in waited {
                    self.release_more(&gk);
                }
                out
            }
        }
    }

    /// A gate's configured slots, or fewer where the context learned fewer
    /// (`Context::gate_slots`).
    fn slots_now(&self, key: &GateKey, gate: &Gate) -> usize {
        self.ctx
            .gate_slots(key)
            .map_or(gate.slots, |l| l.clamp(1, gate.slots))
    }

    /// Whether every slot of gate `key` is taken (a gate not met yet has all of them free).
    fn gate_full(&self, key: &GateKey) -> bool {
        self.gates
            .get(key)
            .is_some_and(|g| g.used >= self.slots_now(key, g))
    }

    fn gate_entry(&mut self, key: &GateKey) -> &mut Gate {
        if !self.gates.contains_key(key) {
            let slots = self.limits.gate_slots(key).unwrap_or(usize::MAX).max(1);
            self.gates.insert(
                key.clone(),
                Gate {
                    slots,
                    used: 0,
                    waiters: BinaryHeap::new(),
                },
            );
        }
        self.gates.get_mut(key).unwrap()
    }

    /// The gates of step `i` in the order they are taken: the narrower one first, so that a
    /// step waiting for the wider one holds no slot another step of its kind could use
    /// elsewhere (and every step takes them in one order: no deadlock).
    fn gates_of(&self, i: u32) -> Vec<GateKey> {
        let step = &self.g.steps[i as usize];
        step.inner_gate(&self.ctx)
            .into_iter()
            .chain(step.gate())
            .cloned()
            .collect()
    }

    /// A step whose operation already runs holds its gates' slots, over the limit if need be.
    fn hold_over_limit(&mut self, i: u32) {
        for gk in self.gates_of(i) {
            if self.gate_held.get(&i).is_some_and(|h| h.contains(&gk)) {
                continue;
            }
            self.gate_entry(&gk).used += 1;
            self.gate_held.entry(i).or_default().push(gk);
        }
    }

    /// Observed as todo: get a slot of each gate the step has, then queue for tokens + permit.
    fn want_apply(&mut self, i: u32) {
        for gk in self.gates_of(i) {
            if self.gate_held.get(&i).is_some_and(|h| h.contains(&gk)) {
                continue;
            }
            let priority = self.g.steps[i as usize].priority();
            self.arrivals += 1;
            let arrival = Reverse(self.arrivals);
            let full = self.gate_full(&gk);
            let gate = self.gate_entry(&gk);
            if full {
                gate.waiters.push((priority, arrival, i));
                self.phase[i as usize] = Phase::WaitingGate;
                return;
            }
            gate.used += 1;
            self.gate_held.entry(i).or_default().push(gk);
        }
        self.queue_apply(i);
    }

    fn queue_apply(&mut self, i: u32) {
        self.phase[i as usize] = Phase::Queued;
        let buckets = self.g.steps[i as usize].buckets();
        let gi = match self.group_index.get(buckets) {
            Some(&gi) => gi,
            None => {
                let gi = self.groups.len() as u32;
                self.groups.push(Group {
                    buckets: buckets.to_vec(),
                    queue: VecDeque::new(),
                    blocked: false,
                    listed: false,
                });
                self.group_index.insert(buckets.to_vec(), gi);
                gi
            }
        };
        let group = &mut self.groups[gi as usize];
        group.queue.push_back(i);
        if !group.blocked && !group.listed {
            group.listed = true;
            self.runnable.push_back(gi);
        }
    }

    fn release_gate(&mut self, i: u32) {
        let Some(held) = self.gate_held.remove(&i) else {
            return;
        };
        for gk in held {
            self.gates.get_mut(&gk).unwrap().used -= 1;
            self.release_more(&gk);
        }
    }

    fn release_more(&mut self, gk: &GateKey) {
        loop {
            if self.gate_full(gk) {
                return;
            }
            let gate = self.gates.get_mut(gk).unwrap();
            let Some((_, _, w)) = gate.waiters.pop() else {
                return;
            };
            gate.used += 1;
            self.gate_held.entry(w).or_default().push(gk.clone());
            // On to its next gate, or to its tokens.
            self.want_apply(w);
        }
    }

    /// Steps waiting for a gate they no longer need (`Step::inner_gate` is asked again) go on
    /// to their next gate or their tokens.
    fn recheck_waiters(&mut self) {
        let mut freed: Vec<(GateKey, u32)> = Vec::new();
        for (gk, gate) in &self.gates {
            for &(_, _, w) in gate.waiters.iter() {
                if !self.gates_of(w).contains(gk) {
                    freed.push((gk.clone(), w));
                }
            }
        }
        for (gk, w) in freed {
            if let Some(gate) = self.gates.get_mut(&gk) {
                gate.waiters.retain(|&(_, _, x)| x != w);
            }
            self.want_apply(w);
        }
    }

    fn start_polling(&mut self, i: u32, sub: Submitted, first_look: Option<Instant>) {
        self.phase[i as usize] = Phase::Polling;
        let now = Instant::now();
        self.poll_since
            .insert(i, (sub.poll_key.clone(), sub.id.clone(), now));
        self.pending_polls += 1;
        let look = first_look.unwrap_or_else(|| self.look_again(i, now));
        let b = self.batches.entry(sub.poll_key).or_default();
        // A batch being polled reschedules itself from all its members when the answer comes.
        if !b.in_flight {
            b.due = Some(match b.due {
                Some(due) if !b.ids.is_empty() => due.min(look),
                _ => look,
            });
        }
        b.ids.insert(sub.id, i);
    }

    /// When to look at pending operation `i` again, so that its end is seen within
    /// max(shortest wait, 5 % of its duration) with few polls:
    /// - with a finish predicted from its progress: at
    ///   that finish once it is within that margin, else halfway there, at most four
    ///   intervals or two margins ahead (a prediction that was
    ///   too early or too late, progress not being linear, is corrected before it is due);
    ///   past it, every margin;
    /// - without one: every tenth of the time it has been pending, between the shortest wait
    ///   and the regular interval (a short operation is seen at once; a long one is polled at
    ///   the interval, as before, until its progress tells when it ends);
    /// - and at the latest when the step expects it to end (a time-based copy).
    fn look_again(&self, i: u32, now: Instant) -> Instant {
        let since = self.poll_since.get(&i).map_or(now, |(_, _, t)| *t);
        let predicted = self
            .predicted
            .get(&i)
            .map(|at| at.saturating_duration_since(since));
        let elapsed = now.saturating_duration_since(since);
        let wait = next_wait(elapsed, predicted, &self.opts);
        // An operation asked to end within a duration is looked at then, at the latest.
        let by = self.g.steps[i as usize]
            .expected_duration()
            .map(|d| (since + d).saturating_duration_since(now))
            .filter(|left| !left.is_zero());
        now + by.map_or(wait, |left| wait.min(left))
    }

    /// The earliest time a poll key is due, if any can be polled.
    fn next_poll(&self) -> Option<Instant> {
        self.batches
            .values()
            .filter(|b| !b.in_flight && !b.ids.is_empty())
            .filter_map(|b| b.due)
            .min()
    }

    fn stop_polling(&mut self, i: u32) {
        self.predicted.remove(&i);
        if let Some((key, id, _)) = self.poll_since.remove(&i) {
            if let Some(b) = self.batches.get_mut(&key) {
                b.ids.remove(&id);
            }
            self.pending_polls -= 1;
        }
    }

    fn poller_for(&self, key: &PollKey) -> Option<Arc<dyn Poller<C>>> {
        self.pollers.get(&key.poller).cloned()
    }

    /// One batched call per poll key; deadlines checked here.
    fn poll_tick(&mut self) -> Result<(), ExecError> {
        let now = Instant::now();
        let late: Vec<u32> = self
            .poll_since
            .iter()
            .filter(|(_, (_, _, since))| now.duration_since(*since) >= self.opts.poll_deadline)
            .map(|(&i, _)| i)
            .collect();
        for i in late {
            self.stop_polling(i);
            self.release_gate(i);
            let e = StepError::new(
                ErrorClass::Transient,
                "PollDeadlineExceeded",
                format!(
                    "the operation did not finish within {}",
                    humantime::format_duration(self.opts.poll_deadline)
                ),
            );
            self.fail(i, e)?;
        }
        // Keys due within a millisecond go together: one wake-up, not two.
        let soon = now + Duration::from_millis(1);
        let keys: Vec<PollKey> = self
            .batches
            .iter()
            .filter(|(_, b)| !b.in_flight && !b.ids.is_empty())
            .filter(|(_, b)| b.due.is_some_and(|due| due <= soon))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(poller) = self.poller_for(&key) else {
                let ids: Vec<u32> = self.batches[&key].ids.values().copied().collect();
                for i in ids {
                    self.stop_polling(i);
                    self.release_gate(i);
                    self.fail(
                        i,
                        StepError::permanent(
                            "NoPoller",
                            format!("no poller is registered for `{key}`"),
                        ),
                    )?;
                }
                continue;
            };
            let b = self.batches.get_mut(&key).unwrap();
            b.in_flight = true;
            b.due = None;
            let ids: Vec<String> = b.ids.keys().cloned().collect();
            let ctx = self.ctx.clone();
            let limits = self.limits.clone();
            self.tasks.spawn(async move {
                let r = AssertUnwindSafe(poller.poll(&ctx, &limits, &key, &ids))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(panic_error()));
                Msg::Polled(key, ids, r)
            });
        }
        Ok(())
    }

    fn on_polled(
        &mut self,
        key: PollKey,
        sent: Vec<String>,
        r: PollAnswers<C::Output>,
    ) -> Result<(), ExecError> {
        if let Some(b) = self.batches.get_mut(&key) {
            b.in_flight = false;
        }
        match r {
            Ok(answers) => {
                for (id, answer) in answers {
                    let Some(&i) = self.batches.get(&key).and_then(|b| b.ids.get(&id)) else {
                        continue;
                    };
                    match answer {
                        PollAnswer::Pending {
                            percent,
                            detail,
                            eta,
                        } => {
                            if let Some(eta) = eta {
                                self.predicted.insert(i, Instant::now() + eta);
                            } else if let (Some(p), Some((_, _, since))) =
                                (percent.filter(|p| *p > 0.0), self.poll_since.get(&i))
                            {
                                // Linear progress: done at since + elapsed * 100 / p.
                                let elapsed = since.elapsed().as_secs_f64();
                                let total = elapsed * 100.0 / f64::from(p).min(100.0);
                                self.predicted
                                    .insert(i, *since + Duration::from_secs_f64(total));
                            }
                            if percent.is_some() || detail.is_some() {
                                self.emit(Event::StepProgress {
                                    step: self.id(i),
                                    percent: percent.unwrap_or(0.0),
                                    detail,
                                })?;
                            }
                        }
                        PollAnswer::Done(out) => {
                            self.stop_polling(i);
                            self.done_passing_gates(i, out)?;
                        }
                        PollAnswer::Failed(e) => {
                            self.stop_polling(i);
                            self.release_gate(i);
                            self.step_error(i, e)?;
                        }
                    }
                }
            }
            Err(e) if e.class == ErrorClass::Permanent => {
                for id in sent {
                    let Some(&i) = self.batches.get(&key).and_then(|b| b.ids.get(&id)) else {
                        continue;
                    };
                    self.stop_polling(i);
                    self.release_gate(i);
                    self.fail(i, e.clone())?;
                }
            }
            // Other poll errors: the ids stay pending and are polled again next tick.
            Err(_) => {}
        }
        // The answers may have moved the predicted finishes: schedule this key's next poll
        // from its members.
        let now = Instant::now();
        let due = self
            .batches
            .get(&key)
            .into_iter()
            .flat_map(|b| b.ids.values())
            .map(|&i| self.look_again(i, now))
            .min();
        if let Some(b) = self.batches.get_mut(&key) {
            b.due = due;
        }
        Ok(())
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Retry(i) => {
                    if self.phase[i as usize] == Phase::Delayed {
                        self.phase[i as usize] = Phase::Queued;
                        self.ready.push_back(i);
                    }
                }
                Timer::Unblock(gi) => {
                    let group = &mut self.groups[gi as usize];
                    group.blocked = false;
                    if !group.listed && !group.queue.is_empty() {
                        group.listed = true;
                        // Front: the blocked group has waited longest.
                        self.runnable.push_front(gi);
                    }
                }
            }
        }
    }

    /// A submitted operation ended: its gate slots pass to a dependent that takes the same
    /// gates and is ready now (a chain's next copy), so the chain keeps its place instead of
    /// queueing behind others at every link; else they go back to the waiters.
    fn done_passing_gates(&mut self, i: u32, out: C::Output) -> Result<(), ExecError> {
        let held = self.gate_held.remove(&i);
        self.step_done(i, out)?;
        let Some(held) = held else {
            return Ok(());
        };
        let g = self.g.clone();
        // Not over the slots as things stand: a gate that has fewer now gives its slot back.
        let within = held.iter().all(|gk| {
            self.gates
                .get(gk)
                .is_some_and(|g| g.used <= self.slots_now(gk, g))
        });
        let heir = g.dependents_of(i).iter().copied().find(|&d| {
            within
                && self.phase[d as usize] == Phase::Queued
                && !self.gate_held.contains_key(&d)
                && self.gates_of(d) == held
        });
        match heir {
            Some(d) => {
                self.gate_held.insert(d, held);
            }
            None => {
                self.gate_held.insert(i, held);
                self.release_gate(i);
            }
        }
        Ok(())
    }

    fn step_done(&mut self, i: u32, out: C::Output) -> Result<(), ExecError> {
        // JSON from here on: the journal's and the report's form.
        let outputs = serde_json::to_value(&out).unwrap_or(serde_json::Value::Null);
        self.emit(Event::StepDone {
            step: self.id(i),
            outputs,
            ts: now_ms(),
        })?;
        self.retry.remove(&i);
        self.phase[i as usize] = Phase::Done;
        self.outputs[i as usize] = Some(Arc::new(out));
        self.finished += 1;
        self.report.done += 1;
        let g = self.g.clone();
        for &d in g.dependents_of(i) {
            let r = &mut self.remaining[d as usize];
            *r -= 1;
            if *r == 0 && self.phase[d as usize] == Phase::Waiting {
                self.phase[d as usize] = Phase::Queued;
                self.ready.push_back(d);
            }
        }
        Ok(())
    }

    fn step_error(&mut self, i: u32, e: StepError) -> Result<(), ExecError> {
        // A step waiting for a retry holds no slot (one passed on to it goes back).
        self.release_gate(i);
        let mut state = self.retry.remove(&i);
        let delay = RetryState::next_delay(&mut state, e.class, &self.opts.retry);
        match delay {
            Some(d) if !self.cancelled => {
                let attempt = state.as_ref().map(|s| s.attempts()).unwrap_or(1);
                if let Some(s) = state {
                    self.retry.insert(i, s);
                }
                self.emit(Event::StepRetry {
                    step: self.id(i),
                    class: e.class,
                    code: e.code.clone(),
                    message: e.message.clone(),
                    attempt,
                    delay_ms: d.as_millis() as u64,
                })?;
                // A retry starts from observe: the failed call may have half-happened.
                self.phase[i as usize] = Phase::Delayed;
                self.timers
                    .push(Reverse((Instant::now() + d, Timer::Retry(i))));
                Ok(())
            }
            Some(_) => {
                // Interrupted: leave it for resume, unfinished.
                self.phase[i as usize] = Phase::Delayed;
                Ok(())
            }
            None => {
                let mut e = e;
                if let Some(s) = &state
                    && e.class != ErrorClass::Permanent
                {
                    e.message =
                        format!("{} (gave up after {} retries)", e.message, s.attempts() - 1);
                }
                self.fail(i, e)
            }
        }
    }

    fn fail(&mut self, i: u32, e: StepError) -> Result<(), ExecError> {
        if self.dry {
            self.observed(i, Err(e));
            return Ok(());
        }
        self.release_gate(i);
        let id = self.id(i);
        self.emit(Event::StepFailed {
            step: id.clone(),
            error: e.clone(),
            ts: now_ms(),
        })?;
        self.retry.remove(&i);
        self.phase[i as usize] = Phase::Failed;
        self.finished += 1;
        self.report.failed.push((id.clone(), e));
        if self.opts.fail_fast {
            self.stop(false);
        }
        // Skip everything below, once each: amortized O(1) per step.
        let g = self.g.clone();
        let mut stack: Vec<u32> = g.dependents_of(i).to_vec();
        while let Some(d) = stack.pop() {
            if self.phase[d as usize] != Phase::Waiting {
                continue;
            }
            self.skip_one(d, &id)?;
            stack.extend_from_slice(g.dependents_of(d));
        }
        Ok(())
    }

    fn skip_one(&mut self, i: u32, root: &str) -> Result<(), ExecError> {
        let id = self.id(i);
        self.emit(Event::StepSkipped {
            step: id.clone(),
            root: root.to_string(),
            ts: now_ms(),
        })?;
        self.phase[i as usize] = Phase::Skipped;
        self.finished += 1;
        self.report.skipped.push((id, root.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls of one operation of `duration` whose progress grows linearly and is reported in
    /// whole percents, as the walker predicts from it (computed, not slept): (polls, how long
    /// after its end it was seen).
    fn polls(duration: Duration, opts: &RunOptions) -> (usize, Duration) {
        let mut t = next_wait(Duration::ZERO, None, opts);
        let mut predicted = None;
        let mut n = 0;
        loop {
            n += 1;
            if t >= duration {
                return (n, t - duration);
            }
            let percent = (t.as_secs_f64() / duration.as_secs_f64() * 100.0).floor();
            if percent > 0.0 {
                predicted = Some(t.mul_f64(100.0 / percent));
            }
            t += next_wait(t, predicted, opts);
        }
    }

    #[test]
    fn an_end_is_seen_within_5_percent_of_the_duration_with_few_polls() {
        let opts = RunOptions::default();
        // (duration, polls at most): until its first percent a copy is polled every tenth of
        // its age (at most the interval), then toward the predicted end, halving the wait.
        for (secs, most) in [(2u64, 4), (4, 5), (10, 7), (40, 6), (400, 19), (4000, 43)] {
            let d = Duration::from_secs(secs);
            let (n, late) = polls(d, &opts);
            let allowed = Duration::from_secs(1).max(d.mul_f64(0.05));
            assert!(
                late <= allowed,
                "{secs} s: seen {late:?} late (allowed {allowed:?})"
            );
            assert!(n <= most, "{secs} s: {n} polls");
        }
        // Eleven hours: at the interval until 1 % (40 polls, as with a fixed interval), then
        // a few more.
        let (n, late) = polls(Duration::from_secs(40_000), &opts);
        assert!(
            late <= Duration::from_secs(2000) && n <= 85,
            "{n} polls, {late:?} late"
        );
    }

    #[test]
    fn progress_that_stalls_does_not_stretch_the_waits() {
        // Stuck at 50 %: every poll predicts the end at twice the time pending.
        let opts = RunOptions::default();
        let mut t = Duration::ZERO;
        for _ in 0..40 {
            let w = next_wait(t, Some(t * 2), &opts);
            let most = (opts.poll_interval * 4).max(t / 5) + Duration::from_millis(1);
            assert!(w <= most, "{w:?} at {t:?}");
            t += w;
        }
        // A fifth of its age at most: 40 polls in its first 4.6 hours.
        assert!(t < Duration::from_secs(5 * 3600), "40 polls took {t:?}");
    }

    #[test]
    fn without_progress_the_wait_grows_with_the_time_pending_up_to_the_interval() {
        let opts = RunOptions::default();
        let w = |s: u64| next_wait(Duration::from_secs(s), None, &opts);
        assert_eq!(w(0), opts.poll_interval_busy);
        assert_eq!(w(60), Duration::from_secs(6));
        assert_eq!(w(3600), opts.poll_interval);
    }
}
