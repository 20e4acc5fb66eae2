//! The progress display: a subscriber. Bars on a terminal, plain lines otherwise, errors only
//! when quiet.
//!
//! On a terminal: a line for the run (steps done, time elapsed, the time left) and a line per
//! migration (its copies done of all, and their bytes). The time left comes from the long
//! operations' own reported progress (each one's pace since it was submitted) and the slots of
//! the gate they wait for (20 snapshot copies in flight per region: the copies waiting for a
//! slot take their turns); until there is such a basis it says `eta —`. The lines are cleared
//! when the run ends, however it ends, before the summary is written. What else is written
//! while they are drawn (a Ctrl-C's notice) goes above them through [`notice`], and the cursor
//! is kept at the end of the last line, so the terminal's own `^C` lands on a line that is
//! cleared.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};

use super::estimate;
use crate::exec::{Context, Event, Limits, RunResult, StepGraph, Subscriber, SubscriberError};
use crate::graph::{PlanGraph, StepSpec};
use crate::ids::Owner;
use crate::resolve::Resolution;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars if stderr is a terminal, plain lines otherwise.
    Auto,
    Bars,
    Plain,
    /// Nothing but failures.
    Quiet,
}

/// The bars being drawn, if any: the terminal is one, and so is this.
static DRAWN: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Writes a line on stderr that is no event (a Ctrl-C was seen, the lease was lost): above the
/// progress bars while they are drawn (a line written past them would leave them on screen).
pub fn notice(msg: &str) {
    let drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match drawn {
        Some(multi) => {
            let _ = multi.println(msg);
        }
        // On its own line, past the terminal's `^C`.
        None => eprintln!("\n{msg}"),
    }
}

/// stderr for indicatif, keeping the cursor at the end of the last line drawn. indicatif pads
/// every line to the terminal's width so that the next write starts a line; then the `^C` the
/// terminal echoes starts a line indicatif does not count, and its next redraw (or clear)
/// leaves the bars above it on screen. Here the padding becomes a newline written only when
/// another line follows.
#[derive(Debug)]
struct EndOfLine {
    term: console::Term,
    state: Mutex<Pad>,
}

#[derive(Debug, Default)]
struct Pad {
    /// indicatif writes each line and then its padding: the next `write_str` is padding.
    padding_next: bool,
    /// A line was written and padded: the next line starts with a newline.
    newline: bool,
}

impl EndOfLine {
    fn stderr() -> Self {
        EndOfLine {
            term: console::Term::buffered_stderr(),
            state: Mutex::new(Pad::default()),
        }
    }
    fn pad(&self) -> std::sync::MutexGuard<'_, Pad> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The cursor moves: it is at the end of the last line, where indicatif expects it.
    fn moved(&self) {
        *self.pad() = Pad::default();
    }
}

impl TermLike for EndOfLine {
    fn width(&self) -> u16 {
        self.term.size().1
    }
    fn height(&self) -> u16 {
        self.term.size().0
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.moved();
        self.term.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.moved();
        self.term.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.moved();
        self.term.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.moved();
        self.term.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let newline = std::mem::take(&mut *self.pad()).newline;
        if newline {
            self.term.write_str("\n")?;
        }
        self.term.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut pad = self.pad();
        if pad.padding_next {
            *pad = Pad {
                padding_next: false,
                newline: true,
            };
            return Ok(());
        }
        let newline = std::mem::take(&mut pad.newline);
        pad.padding_next = true;
        drop(pad);
        if newline {
            self.term.write_str("\n")?;
        }
        self.term.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.moved();
        self.term.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.term.flush()
    }
}

/// What the progress display knows of a run's steps before it starts, from the compiled graph:
/// each step's migration, and for each long operation (a copy, a backfill, a batch job) what it
/// moves, the gate whose slots it waits for, and the long operations it waits for.
#[derive(Debug, Clone, Default)]
pub struct ProgressPlan {
    steps: HashMap<String, StepFacts>,
    /// Long operations, dependencies first.
    long: Vec<String>,
    /// Migration ids in the graph's order.
    migrations: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct StepFacts {
    migration: Option<String>,
    long: Option<LongOp>,
    /// Done by an earlier attempt of the run (resume): no event says so.
    done_before: bool,
}

#[derive(Debug, Clone)]
struct LongOp {
    /// A copy the migration makes (not an intermediate copy, a backfill or a batch job).
    copy: bool,
    /// What it is expected to move (0: not known).
    bytes: u64,
    /// Operations of one group share their pace and slots: the gate's key, else the step kind.
    group: String,
    /// The gate's slots (`None`: no limit).
    slots: Option<usize>,
    /// How long it takes, when the step says so (a time-based copy).
    expected: Option<Duration>,
    /// The long operations it depends on (the copy before it in its chain).
    after: Vec<String>,
}

impl ProgressPlan {
    /// From the compiled graph, the executor's steps (their gates), the limits (the gates'
    /// slots), the resolution (the sizes of AMIs, DB snapshots and buckets) and the steps done
    /// by an earlier attempt.
    pub fn new<C: Context>(
        graph: &PlanGraph,
        steps: &StepGraph<C>,
        limits: &Limits,
        resolution: &Resolution,
        done: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        let mut plan = ProgressPlan::default();
        let mut seen = HashSet::new();
        for step in graph.in_order() {
            let id = step.id.to_string();
            let migration = match &step.id.owner {
                Owner::Migration(m) => Some(m.to_string()),
                Owner::Key(_) => None,
            };
            if let Some(m) = &migration
                && seen.insert(m.clone())
            {
                plan.migrations.push(m.clone());
            }
            let long = moves(&step.spec, migration.as_deref(), resolution).map(|(copy, bytes)| {
                let exec = steps.index_of(&id).map(|i| steps.step(i));
                let gate = exec.and_then(|s| s.gate().cloned());
                LongOp {
                    copy,
                    bytes,
                    slots: gate.as_ref().and_then(|g| limits.gate_slots(g)),
                    group: gate.map_or_else(|| step.kind().as_str().to_string(), |g| g.to_string()),
                    expected: exec.and_then(|s| s.expected_duration()),
                    after: graph
                        .dependencies(&step.id)
                        .into_iter()
                        .map(|d| d.to_string())
                        .filter(|d| plan.steps.get(d).is_some_and(|f| f.long.is_some()))
                        .collect(),
                }
            });
            if long.is_some() {
                plan.long.push(id.clone());
            }
            plan.steps.insert(
                id,
                StepFacts {
                    migration,
                    long,
                    done_before: false,
                },
            );
        }
        for id in done {
            if let Some(f) = plan.steps.get_mut(id.as_ref()) {
                f.done_before = true;
            }
        }
        plan
    }
}

/// Whether a step is a long operation: then whether it is one of its migration's copies, and
/// the bytes it is expected to move.
fn moves(spec: &StepSpec, migration: Option<&str>, r: &Resolution) -> Option<(bool, u64)> {
    let gib = |g: i32| u64::try_from(g).unwrap_or(0) << 30;
    let bucket = || {
        migration
            .and_then(|m| r.inventory.bucket_samples.get(m))
            .map_or(0, |s| s.bytes)
    };
    Some(match spec {
        StepSpec::CopySnapshot(c) => (c.serves.is_none(), c.transfer.bytes),
        StepSpec::CopyImage(c) => {
            let snapshots = r.inventory.image_snapshots.get(c.source.as_str());
            let bytes = snapshots
                .into_iter()
                .flatten()
                .map(|s| gib(r.inventory.sizes.get(s).copied().unwrap_or(0)))
                .sum();
            (c.serves.is_none(), bytes)
        }
        StepSpec::CopyDbSnapshot(c) => {
            let source = r.inventory.db_snapshots.values().flatten();
            let bytes = source
                .filter(|s| s.id == c.origin)
                .map(|s| gib(s.size_gib))
                .next()
                .unwrap_or(0);
            (c.serves.is_none(), bytes)
        }
        StepSpec::Backfill(_) | StepSpec::BatchReplication(_) => (false, bucket()),
        _ => return None,
    })
}

/// One reading of a long operation's progress.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    percent: f32,
}

/// Where a long operation is, as the events tell.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Waiting,
    Running {
        since: Instant,
        /// The reading its pace is measured from: 0 % at submission, else the first one seen
        /// (an operation an earlier attempt submitted).
        first: Sample,
        last: Sample,
    },
    /// `took`: from submission to done, when this run saw both.
    Done {
        took: Option<Duration>,
    },
    /// Failed or skipped.
    Ended,
}

impl Phase {
    /// When a running operation ends at the pace of its readings so far.
    fn projected_end(&self) -> Option<Instant> {
        let Phase::Running { first, last, .. } = self else {
            return None;
        };
        let dp = f64::from(last.percent - first.percent);
        let dt = last.at.saturating_duration_since(first.at).as_secs_f64();
        if dp <= 0.0 || dt <= 0.0 {
            return None;
        }
        let left = f64::from(100.0 - last.percent.min(100.0)) * dt / dp;
        Some(last.at + Duration::from_secs_f64(left))
    }
}

/// What the display says of the time left.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Eta {
    /// No long operation is left: nothing to say.
    Nothing,
    /// Some are left, with no basis for a time yet (or every projection has passed).
    Unknown,
    /// Left from `at`.
    Left { at: Instant, left: Duration },
}

impl Eta {
    fn render(&self, now: Instant) -> String {
        match self {
            Eta::Nothing => String::new(),
            Eta::Unknown => "eta —".into(),
            Eta::Left { at, left } => {
                let left = (*at + *left).saturating_duration_since(now);
                // Overdue: the projection no longer says anything.
                if left < Duration::from_millis(500) {
                    "eta —".into()
                } else {
                    format!("eta {}", short_duration(left))
                }
            }
        }
    }
}

/// `42s`, `3m 05s`, `2h 10m`: never `0s` (rounded up).
fn short_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The long operations' state, and what it predicts.
#[derive(Debug, Default)]
struct Pace {
    ops: HashMap<String, Phase>,
}

impl Pace {
    fn phase(&self, id: &str) -> Phase {
        self.ops.get(id).copied().unwrap_or(Phase::Waiting)
    }

    fn running(&mut self, id: &str, now: Instant, percent: f32) {
        let s = Sample { at: now, percent };
        self.ops.insert(
            id.to_string(),
            Phase::Running {
                since: now,
                first: s,
                last: s,
            },
        );
    }

    fn progress(&mut self, id: &str, now: Instant, percent: f32) {
        match self.ops.get_mut(id) {
            Some(Phase::Running { last, .. }) => {
                if percent >= last.percent {
                    *last = Sample { at: now, percent };
                }
            }
            // Submitted by an earlier attempt: its pace is measured from here.
            None | Some(Phase::Waiting) => self.running(id, now, percent),
            Some(_) => {}
        }
    }

    fn done(&mut self, id: &str, now: Instant) {
        let took = match self.phase(id) {
            Phase::Running { since, first, .. } if first.percent == 0.0 => {
                Some(now.saturating_duration_since(since))
            }
            _ => None,
        };
        self.ops.insert(id.to_string(), Phase::Done { took });
    }

    /// The time left: each running operation at its own pace; each waiting one at its group's
    /// typical duration, started when a slot of its gate is free and what it depends on is
    /// done.
    fn eta(&self, plan: &ProgressPlan, now: Instant) -> Eta {
        let facts = |id: &str| plan.steps.get(id).and_then(|f| f.long.as_ref());
        let pending = |id: &&String| {
            !plan.steps[id.as_str()].done_before
                && matches!(self.phase(id), Phase::Waiting | Phase::Running { .. })
        };
        if !plan.long.iter().any(|id| pending(&id)) {
            return Eta::Nothing;
        }
        // Each group's typical duration: what its operations took, or are taking.
        let mut sums: HashMap<&str, (f64, u32)> = HashMap::new();
        for id in &plan.long {
            let Some(op) = facts(id) else { continue };
            let phase = self.phase(id);
            let took = match phase {
                Phase::Done { took } => took,
                Phase::Running { since, .. } => phase
                    .projected_end()
                    .map(|end| end.saturating_duration_since(since)),
                _ => None,
            };
            if let Some(t) = took {
                let e = sums.entry(op.group.as_str()).or_default();
                e.0 += t.as_secs_f64();
                e.1 += 1;
            }
        }
        let typical = |op: &LongOp| {
            op.expected.map(|d| d.as_secs_f64()).or_else(|| {
                sums.get(op.group.as_str())
                    .map(|(sum, n)| sum / f64::from(*n))
            })
        };
        // Seconds from now at which each one ends; the slots of each gate as they free up.
        let mut ends: HashMap<&str, f64> = HashMap::new();
        let mut slots: HashMap<&str, (BinaryHeap<Reverse<u64>>, usize)> = HashMap::new();
        let mut longest = 0f64;
        for id in plan.long.iter().filter(|id| pending(id)) {
            let (Some(op), Phase::Running { since, .. }) = (facts(id), self.phase(id)) else {
                continue;
            };
            let end = match self.phase(id).projected_end() {
                Some(end) => end,
                None => match typical(op) {
                    Some(t) => since + Duration::from_secs_f64(t),
                    None => return Eta::Unknown,
                },
            };
            let left = end.saturating_duration_since(now).as_secs_f64();
            ends.insert(id, left);
            longest = longest.max(left);
            let (heap, n) = slots.entry(op.group.as_str()).or_default();
            heap.push(Reverse((left * 1000.0) as u64));
            *n += 1;
        }
        for id in plan.long.iter().filter(|id| pending(id)) {
            let (Some(op), Phase::Waiting) = (facts(id), self.phase(id)) else {
                continue;
            };
            let Some(t) = typical(op) else {
                return Eta::Unknown;
            };
            let ready = op
                .after
                .iter()
                .filter_map(|d| ends.get(d.as_str()))
                .fold(0f64, |a, b| a.max(*b));
            let start = match op.slots {
                None => ready,
                Some(n) => {
                    let (heap, running) = slots.entry(op.group.as_str()).or_default();
                    // The slots no running operation holds are free now.
                    while *running < n.max(1) {
                        heap.push(Reverse(0));
                        *running += 1;
                    }
                    let free = heap.pop().map_or(0.0, |Reverse(ms)| ms as f64 / 1000.0);
                    ready.max(free)
                }
            };
            let end = start + t;
            if op.slots.is_some()
                && let Some((heap, _)) = slots.get_mut(op.group.as_str())
            {
                heap.push(Reverse((end * 1000.0) as u64));
            }
            ends.insert(id, end);
            longest = longest.max(end);
        }
        if longest < 0.5 {
            return Eta::Unknown;
        }
        Eta::Left {
            at: now,
            left: Duration::from_secs_f64(longest),
        }
    }
}

/// A migration's line: its steps and copies so far.
#[derive(Debug, Default)]
struct MigrationTally {
    steps: usize,
    steps_done: usize,
    copies: usize,
    copies_done: usize,
    bytes: u64,
    /// Of the copies done.
    bytes_done: u64,
    /// What its latest long operation said of itself (objects and bytes of a backfill).
    detail: Option<String>,
}

/// More migrations than this share the last line.
const MIGRATION_LINES: usize = 8;

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    /// One per migration shown.
    rows: Vec<ProgressBar>,
    eta: Arc<Mutex<Eta>>,
}

impl Bars {
    /// Nothing is left on screen.
    fn clear(self) {
        *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for row in &self.rows {
            row.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// Progress subscriber.
pub struct Progress {
    mode: ProgressMode,
    out: Box<dyn Write + Send>,
    plan: ProgressPlan,
    total: usize,
    finished: usize,
    pace: Pace,
    tallies: HashMap<String, MigrationTally>,
    /// Long operations running now, by migration.
    running: HashMap<String, HashSet<String>>,
    bars: Option<Bars>,
    /// Long operations not done, failed or skipped yet.
    long_left: usize,
    last_eta: Option<Instant>,
    last_rows: Option<Instant>,
}

impl Progress {
    /// Writes to stderr; `plan` tells the steps' migrations and copies.
    pub fn new(mode: ProgressMode, plan: ProgressPlan) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let mut p = Self::with_writer(mode, Box::new(std::io::stderr()));
        p.plan = plan;
        p
    }

    /// Plain or quiet output into any writer (bars always draw on stderr), knowing nothing of
    /// the steps but their events.
    pub fn with_writer(mode: ProgressMode, out: Box<dyn Write + Send>) -> Self {
        Progress {
            mode,
            out,
            plan: ProgressPlan::default(),
            total: 0,
            finished: 0,
            pace: Pace::default(),
            tallies: HashMap::new(),
            running: HashMap::new(),
            bars: None,
            long_left: 0,
            last_eta: None,
            last_rows: None,
        }
    }

    fn line(&mut self, s: &str) -> std::io::Result<()> {
        if let Some(b) = &self.bars {
            b.multi.println(s)
        } else {
            writeln!(self.out, "{s}")
        }
    }

    fn tallies_from_plan(&mut self) {
        for m in &self.plan.migrations {
            self.tallies.insert(m.clone(), MigrationTally::default());
        }
        self.long_left = (self.plan.steps.values())
            .filter(|f| f.long.is_some() && !f.done_before)
            .count();
        for f in self.plan.steps.values() {
            let Some(t) = f.migration.as_ref().and_then(|m| self.tallies.get_mut(m)) else {
                continue;
            };
            t.steps += 1;
            t.steps_done += usize::from(f.done_before);
            if let Some(op) = f.long.as_ref().filter(|op| op.copy) {
                t.copies += 1;
                t.bytes += op.bytes;
                if f.done_before {
                    t.copies_done += 1;
                    t.bytes_done += op.bytes;
                }
            }
        }
    }

    fn start_bars(&mut self, steps: usize, already_done: usize) {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::term_like_with_hz(Box::new(EndOfLine::stderr()), 20)
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(multi.clone());
        let eta = Arc::new(Mutex::new(Eta::Nothing));
        let shown = eta.clone();
        let overall = multi.add(ProgressBar::new(steps as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} {bar:30} {pos}/{len} steps  {elapsed}  {ferry_eta}  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█░")
            .with_key(
                "ferry_eta",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let eta = *shown.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = w.write_str(&eta.render(Instant::now()));
                },
            ),
        );
        overall.set_position(already_done as u64);
        overall.enable_steady_tick(Duration::from_millis(200));
        let row_style = ProgressStyle::with_template("  {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let rows = (0..self.plan.migrations.len().min(MIGRATION_LINES))
            .map(|_| {
                let row = multi.add(ProgressBar::new_spinner());
                row.set_style(row_style.clone());
                row
            })
            .collect();
        self.bars = Some(Bars {
            multi,
            overall,
            rows,
            eta,
        });
    }

    /// The text of a migration's line.
    fn migration_text(&self, id: &str, width: usize) -> String {
        let Some(t) = self.tallies.get(id) else {
            return id.to_string();
        };
        let mut s = format!("{id:<width$}  ");
        let running = self.running.get(id);
        if t.copies > 0 {
            let in_flight = running.map_or(0, |r| {
                r.iter()
                    .filter(|s| self.long(s).is_some_and(|op| op.copy))
                    .count()
            });
            s.push_str(&format!("{}/{} copies", t.copies_done, t.copies));
            if in_flight > 0 {
                s.push_str(&format!(" ({in_flight} in flight)"));
            }
            if t.bytes > 0 {
                let moving: u64 = running.into_iter().flatten().map(|s| self.moved(s)).sum();
                s.push_str(&format!(
                    ", {} of {}",
                    estimate::bytes((t.bytes_done + moving).min(t.bytes)),
                    estimate::bytes(t.bytes)
                ));
            }
        } else {
            s.push_str(&format!("{}/{} steps", t.steps_done, t.steps));
        }
        if let Some(d) = &t.detail {
            s.push_str(&format!("; {d}"));
        }
        s
    }

    fn long(&self, step: &str) -> Option<&LongOp> {
        self.plan.steps.get(step).and_then(|f| f.long.as_ref())
    }

    /// The bytes a running copy has moved, by its percentage.
    fn moved(&self, step: &str) -> u64 {
        match (self.long(step), self.pace.phase(step)) {
            (Some(op), Phase::Running { last, .. }) if op.copy => {
                (op.bytes as f64 * f64::from(last.percent.clamp(0.0, 100.0)) / 100.0) as u64
            }
            _ => 0,
        }
    }

    /// Redraws what changed, at most a few times a second (a poll reports many copies at once).
    fn refresh(&mut self, force: bool) {
        if self.bars.is_none() {
            return;
        }
        let now = Instant::now();
        let due_eta =
            |last: Option<Instant>| last.is_none_or(|t| now - t >= Duration::from_millis(250));
        let due_rows = |last: Option<Instant>| {
            force || last.is_none_or(|t| now - t >= Duration::from_millis(100))
        };
        // The ETA is a walk over every long operation: a few times a second at most, except
        // when the last one ends.
        if self.long_left == 0 || due_eta(self.last_eta) {
            self.last_eta = Some(now);
            let eta = if self.long_left == 0 {
                Eta::Nothing
            } else {
                self.pace.eta(&self.plan, now)
            };
            if let Some(b) = &self.bars {
                *b.eta.lock().unwrap_or_else(|e| e.into_inner()) = eta;
            }
        }
        if due_rows(self.last_rows) {
            self.last_rows = Some(now);
            let Some(b) = &self.bars else { return };
            let n: usize = self.running.values().map(HashSet::len).sum();
            b.overall.set_message(if n == 0 {
                String::new()
            } else {
                format!("{n} in flight")
            });
            // Migrations with work left first, in plan order; the rest share the last line.
            let active = |m: &&String| {
                self.tallies
                    .get(m.as_str())
                    .is_some_and(|t| t.steps_done < t.steps)
            };
            let mut order: Vec<&String> = self.plan.migrations.iter().filter(active).collect();
            order.extend(self.plan.migrations.iter().filter(|m| !active(m)));
            let rows = b.rows.len();
            let shown = if order.len() > rows {
                rows.saturating_sub(1)
            } else {
                rows
            };
            let width = order[..shown].iter().map(|m| m.len()).max().unwrap_or(0);
            for (row, m) in b.rows.iter().zip(&order[..shown]) {
                row.set_message(self.migration_text(m, width));
            }
            if shown < rows {
                let rest = &order[shown..];
                let (mut done, mut all) = (0, 0);
                for m in rest {
                    if let Some(t) = self.tallies.get(m.as_str()) {
                        done += t.copies_done;
                        all += t.copies;
                    }
                }
                b.rows[rows - 1].set_message(format!(
                    "{} more migrations: {done}/{all} copies",
                    rest.len()
                ));
            }
        }
    }

    fn finished_step(&mut self, step: &str, done: bool) {
        self.finished += 1;
        let now = Instant::now();
        let migration = self.plan.steps.get(step).and_then(|f| f.migration.clone());
        if let Some(m) = &migration
            && let Some(r) = self.running.get_mut(m)
        {
            r.remove(step);
        }
        if self.long(step).is_some() {
            self.long_left = self.long_left.saturating_sub(1);
            if done {
                self.pace.done(step, now);
            } else {
                self.pace.ops.insert(step.to_string(), Phase::Ended);
            }
        }
        let copy_bytes = self.long(step).filter(|op| op.copy).map(|op| op.bytes);
        if let Some(t) = migration.and_then(|m| self.tallies.get_mut(&m)) {
            t.steps_done += 1;
            if done && let Some(b) = copy_bytes {
                t.copies_done += 1;
                t.bytes_done += b;
            }
        }
        if let Some(b) = &self.bars {
            b.overall.inc(1);
        }
        self.refresh(true);
    }

    fn started_running(&mut self, step: &str) {
        let Some(m) = self.plan.steps.get(step).and_then(|f| f.migration.clone()) else {
            return;
        };
        self.running.entry(m).or_default().insert(step.to_string());
    }

    /// A copy's migration, as plain lines say it: `nightly: 3/12 copies, 1.0 GiB of 4.0 GiB`.
    fn copy_suffix(&self, step: &str) -> Option<String> {
        self.long(step).filter(|op| op.copy)?;
        let m = self.plan.steps.get(step)?.migration.as_deref()?;
        let t = self.tallies.get(m)?;
        let mut s = format!(" ({m}: {}/{} copies", t.copies_done, t.copies);
        if t.bytes > 0 {
            s.push_str(&format!(
                ", {} of {}",
                estimate::bytes(t.bytes_done),
                estimate::bytes(t.bytes)
            ));
        }
        s.push(')');
        Some(s)
    }
}

impl Drop for Progress {
    /// A run that stops without `run-finished` (a second Ctrl-C) leaves nothing on screen.
    fn drop(&mut self) {
        if let Some(b) = self.bars.take() {
            b.clear();
        }
    }
}

impl Subscriber for Progress {
    fn on_event(&mut self, ev: &Event) -> Result<(), SubscriberError> {
        let quiet = self.mode == ProgressMode::Quiet;
        let now = Instant::now();
        match ev {
            Event::RunStarted {
                run_id,
                steps,
                already_done,
                resumed,
                ..
            } => {
                self.total = *steps;
                self.finished = *already_done;
                self.tallies_from_plan();
                if self.mode == ProgressMode::Bars {
                    self.start_bars(*steps, *already_done);
                    self.refresh(true);
                } else if !quiet {
                    let verb = if *resumed { "resuming" } else { "starting" };
                    self.line(&format!(
                        "{verb} run {run_id}: {steps} steps, {already_done} already done"
                    ))?;
                }
            }
            Event::StepStarted { step, .. } => {
                // An operation no gate holds back runs from its start (an inline backfill).
                if self.long(step).is_some_and(|op| op.slots.is_none())
                    && matches!(self.pace.phase(step), Phase::Waiting)
                {
                    self.pace.running(step, now, 0.0);
                    self.started_running(step);
                    self.refresh(false);
                }
            }
            Event::StepSubmitted { step, id, .. } => {
                if self.long(step).is_some() {
                    self.pace.running(step, now, 0.0);
                    self.started_running(step);
                }
                self.refresh(true);
                if self.mode == ProgressMode::Plain {
                    self.line(&format!("submitted {step} ({id})"))?;
                }
            }
            Event::StepProgress {
                step,
                percent,
                detail,
            } => {
                if self.long(step).is_some() {
                    self.pace.progress(step, now, *percent);
                    self.started_running(step);
                }
                if let Some(d) = detail {
                    if self.bars.is_some() {
                        let m = self.plan.steps.get(step).and_then(|f| f.migration.as_ref());
                        if let Some(t) = m.and_then(|m| self.tallies.get_mut(m)) {
                            t.detail = Some(d.clone());
                        }
                    } else if self.mode == ProgressMode::Plain {
                        self.line(&format!("{step}: {d}"))?;
                    }
                }
                self.refresh(false);
            }
            Event::StepDone { step, .. } => {
                self.finished_step(step, true);
                if self.mode == ProgressMode::Plain {
                    let (n, t) = (self.finished, self.total);
                    let suffix = self.copy_suffix(step).unwrap_or_default();
                    self.line(&format!("[{n}/{t}] done {step}{suffix}"))?;
                }
            }
            Event::StepFailed { step, error, .. } => {
                self.finished_step(step, false);
                let mut s = format!("failed {step}: {}: {}", error.code, error.message);
                if let Some(r) = &error.request_id {
                    s.push_str(&format!(" (request id {r})"));
                }
                if let Some(h) = &error.hint {
                    s.push_str(&format!("\n  hint: {h}"));
                }
                self.line(&s)?;
            }
            Event::StepSkipped { step, root, .. } => {
                self.finished_step(step, false);
                if self.mode == ProgressMode::Plain {
                    self.line(&format!("skipped {step}: {root} failed"))?;
                }
            }
            Event::StepRetry {
                step,
                class,
                code,
                message,
                attempt,
                delay_ms,
            } => {
                if self.mode == ProgressMode::Plain {
                    self.line(&format!(
                        "retrying {step} in {delay_ms} ms ({class}: {code}, attempt {attempt}): {message}"
                    ))?;
                }
            }
            Event::RunFinished {
                result,
                done,
                failed,
                skipped,
                not_started,
                ..
            } => {
                // The lines go before the summary is written: nothing of them stays.
                if let Some(b) = self.bars.take() {
                    b.clear();
                }
                let summary = format!(
                    "run {result}: {done} done, {failed} failed, {skipped} skipped, {not_started} not started"
                );
                if !quiet || *result != RunResult::Succeeded {
                    self.line(&summary)?;
                }
                if *result == RunResult::Interrupted && !quiet {
                    self.line("interrupted: `ferry resume` goes on from here")?;
                }
            }
            Event::StepIntent { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(group: &str, slots: Option<usize>, after: &[&str]) -> LongOp {
        LongOp {
            copy: true,
            bytes: 1 << 30,
            group: group.into(),
            slots,
            expected: None,
            after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn plan(ops: Vec<(&str, LongOp)>) -> ProgressPlan {
        let mut p = ProgressPlan {
            migrations: vec!["m".into()],
            ..ProgressPlan::default()
        };
        for (id, op) in ops {
            p.long.push(id.into());
            p.steps.insert(
                id.into(),
                StepFacts {
                    migration: Some("m".into()),
                    long: Some(op),
                    done_before: false,
                },
            );
        }
        p
    }

    fn secs(e: Eta) -> Option<f64> {
        match e {
            Eta::Left { left, .. } => Some(left.as_secs_f64()),
            _ => None,
        }
    }

    #[test]
    fn no_basis_no_eta_then_the_copies_own_pace() {
        let p = plan(vec![
            ("a", op("g", Some(20), &[])),
            ("b", op("g", Some(20), &[])),
        ]);
        let mut pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(pace.eta(&p, t0), Eta::Unknown, "nothing submitted yet");
        pace.running("a", t0, 0.0);
        pace.running("b", t0, 0.0);
        let t1 = t0 + Duration::from_secs(10);
        pace.progress("a", t1, 0.0);
        pace.progress("b", t1, 0.0);
        assert_eq!(pace.eta(&p, t1), Eta::Unknown, "copies at 0 %: no basis");
        pace.progress("a", t1, 50.0);
        pace.progress("b", t1, 25.0);
        // b: 25 % in 10 s, 30 s left.
        assert_eq!(secs(pace.eta(&p, t1)), Some(30.0));
        assert_eq!(pace.eta(&p, t1).render(t1), "eta 30s");
        assert_eq!(
            pace.eta(&p, t1).render(t1 + Duration::from_secs(29)),
            "eta 1s"
        );
        assert_eq!(
            pace.eta(&p, t1).render(t1 + Duration::from_secs(31)),
            "eta —",
            "overdue says nothing, never 0s"
        );
        pace.done("a", t1);
        pace.done("b", t1);
        assert_eq!(pace.eta(&p, t1), Eta::Nothing);
        assert_eq!(Eta::Nothing.render(t1), "");
    }

    #[test]
    fn waiting_copies_take_their_turns_at_the_gate() {
        // 2 slots, 5 copies of 10 s each: 2 running (5 s in), 3 waiting.
        let ids = ["a", "b", "c", "d", "e"];
        let p = plan(ids.iter().map(|i| (*i, op("g", Some(2), &[]))).collect());
        let mut pace = Pace::default();
        let t0 = Instant::now();
        pace.running("a", t0, 0.0);
        pace.running("b", t0, 0.0);
        let t = t0 + Duration::from_secs(5);
        pace.progress("a", t, 50.0);
        pace.progress("b", t, 50.0);
        // a, b end in 5 s; c, d then take 10 s; e the 10 s after: 25 s.
        assert_eq!(secs(pace.eta(&p, t)), Some(25.0));
        // Without a limit they would all start now.
        let free = plan(ids.iter().map(|i| (*i, op("g", None, &[]))).collect());
        assert_eq!(secs(pace.eta(&free, t)), Some(10.0));
        // A chain: e after d after c, one at a time.
        let chain = plan(vec![
            ("a", op("g", None, &[])),
            ("b", op("g", None, &[])),
            ("c", op("g", None, &[])),
            ("d", op("g", None, &["c"])),
            ("e", op("g", None, &["d"])),
        ]);
        assert_eq!(secs(pace.eta(&chain, t)), Some(30.0));
    }

    #[test]
    fn a_copy_found_running_is_paced_from_its_first_reading() {
        let p = plan(vec![("a", op("g", Some(20), &[]))]);
        let mut pace = Pace::default();
        let t0 = Instant::now();
        // Submitted by an earlier attempt: first seen at 60 %.
        pace.progress("a", t0, 60.0);
        assert_eq!(pace.eta(&p, t0), Eta::Unknown);
        pace.progress("a", t0 + Duration::from_secs(4), 80.0);
        assert_eq!(secs(pace.eta(&p, t0 + Duration::from_secs(4))), Some(4.0));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(short_duration(Duration::from_millis(300)), "1s");
        assert_eq!(short_duration(Duration::from_secs(59)), "59s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(short_duration(Duration::from_secs(7800)), "2h 10m");
    }
}
