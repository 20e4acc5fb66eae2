//! Executor and journal tests, with fake steps only (no AWS).

#[path = "executor/crash.rs"]
mod crash;
#[path = "executor/fake.rs"]
mod fake;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::exec::*;
use ferry::journal::{self, JournalBackend, JournalError, LocalJournal, NewRun, StepState};
use ferry::report::{JsonEvents, Progress, ProgressMode};
use proptest::prelude::*;
use serde_json::{Value, json};

use fake::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Outcome {
    report: RunReport<Value>,
    events: Vec<Event>,
    limits: Arc<Limits>,
}

fn run_fake(fg: &FakeGraph, opts: RunOptions, cancel: Cancel) -> Outcome {
    let events = Arc::new(Mutex::new(Vec::new()));
    let limits = Arc::new(test_limits());
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), opts)
        .limits(limits.clone())
        .poller("fake.copy", fg.poller.clone())
        .subscribe(recorder(fg.mem.clone(), events.clone()));
    let report = runtime().block_on(exec.run(cancel)).unwrap();
    let events = events.lock().unwrap().clone();
    Outcome {
        report,
        events,
        limits,
    }
}

/// What the run must end with: failing behaviours fail unless a dependency failed first.
fn expected(specs: &[Spec], deps: &[Vec<usize>], max_retries: u8) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let st = if deps[i].iter().any(|&d| out[d] != "done") {
            "skipped"
        } else {
            match s.behavior {
                Behavior::FailApply | Behavior::FailObserve => "failed",
                Behavior::Errors(ErrorClass::QuotaExceeded, _) => "done",
                Behavior::Errors(_, n) if n > max_retries => "failed",
                _ => "done",
            }
        };
        out.push(st);
    }
    out
}

fn ancestors(deps: &[Vec<usize>], i: usize) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = deps[i].clone();
    while let Some(d) = stack.pop() {
        if seen.insert(d) {
            stack.extend(deps[d].iter().copied());
        }
    }
    seen
}

fn behavior() -> impl Strategy<Value = Behavior> {
    prop_oneof![
        6 => Just(Behavior::Ok),
        1 => Just(Behavior::FailApply),
        1 => Just(Behavior::FailObserve),
        2 => (0u8..4).prop_map(|n| Behavior::Errors(ErrorClass::Throttled, n)),
        1 => (0u8..7).prop_map(|n| Behavior::Errors(ErrorClass::Transient, n)),
        1 => (0u8..7).prop_map(|n| Behavior::Errors(ErrorClass::QuotaExceeded, n)),
        2 => (0u8..4).prop_map(Behavior::Async),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        behavior(),
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
        prop::option::of(0usize..2),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(behavior, slow_ms, bucket, gate)| Spec {
            behavior,
            slow_ms,
            bucket,
            gate,
            ..Spec::ok()
        })
}

fn dag() -> impl Strategy<Value = (Vec<Spec>, Vec<(usize, usize)>)> {
    (1usize..32).prop_flat_map(|n| {
        (
            prop::collection::vec(spec(), n),
            prop::collection::vec((0..n, 0..n), 0..n * 2),
        )
            .prop_map(|(specs, raw)| {
                let edges = raw.into_iter().filter(|(a, b)| a < b).collect();
                (specs, edges)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// No step before its dependencies; never more than `concurrency` calls in flight; gates and
    /// token buckets respected; every step done, failed or skipped with a failed ancestor as root.
    #[test]
    fn random_dags_keep_every_promise((specs, edges) in dag(), concurrency in 1usize..6) {
        let fg = fake_graph(&specs, &edges);
        let out = run_fake(&fg, fast_options(concurrency), Cancel::new());
        let mem = &fg.mem;
        let v = mem.violations.lock().unwrap().clone();
        prop_assert!(v.is_empty(), "violations: {v:?}");
        prop_assert!(mem.max_in_flight.load(Ordering::SeqCst) <= concurrency);
        prop_assert!(mem.max_gate_in_use.load(Ordering::SeqCst) <= 2, "gate exceeded");
        if let Err(e) = check_buckets(&out.limits) { prop_assert!(false, "{}", e); }

        let want = expected(&specs, &fg.deps, 4);
        let n = specs.len();
        let r = &out.report;
        prop_assert_eq!(r.done + r.failed.len() + r.skipped.len(), n);
        prop_assert_eq!(r.not_started, 0);
        let failed: HashMap<&str, &StepError> = r.failed.iter().map(|(id, e)| (id.as_str(), e)).collect();
        let skipped: HashMap<&str, &str> = r.skipped.iter().map(|(id, root)| (id.as_str(), root.as_str())).collect();
        for (i, want_i) in want.iter().enumerate() {
            let id = fg.ids[i].as_str();
            let got = if failed.contains_key(id) { "failed" } else if skipped.contains_key(id) { "skipped" } else { "done" };
            prop_assert_eq!(got, *want_i, "step {}", id);
            if let Some(root) = skipped.get(id) {
                let root_i = fg.ids.iter().position(|x| x == root).unwrap();
                prop_assert!(failed.contains_key(root), "root {} of {} did not fail", root, id);
                prop_assert!(ancestors(&fg.deps, i).contains(&root_i));
            }
            if got == "done" {
                prop_assert_eq!(&r.outputs[id], &fg.poller.outputs[id]);
            }
        }
        // Every mutating call had exactly one intent before it.
        let intents = out.events.iter().filter(|e| matches!(e, Event::StepIntent { .. })).count();
        let applies: usize = mem.applies.lock().unwrap().values().sum();
        prop_assert_eq!(intents, applies);
        // Async completions: batched (never more calls than ticks need) and one at a time per key.
        let result = if failed.is_empty() { RunResult::Succeeded } else { RunResult::Failed };
        prop_assert_eq!(r.result, result);
        let last = out.events.last().unwrap();
        prop_assert!(matches!(last, Event::RunFinished { .. }), "last event: {:?}", last);
    }
}

#[test]
fn failure_skips_only_dependents_and_names_the_root() {
    // 0 -> 1 -> 2, 3 independent, 4 depends on 1 and 3.
    let mut specs = vec![Spec::ok(); 5];
    specs[0] = Spec::with(Behavior::FailApply);
    let fg = fake_graph(&specs, &[(0, 1), (1, 2), (1, 4), (3, 4)]);
    let out = run_fake(&fg, fast_options(2), Cancel::new());
    let r = &out.report;
    assert_eq!(r.result, RunResult::Failed);
    assert_eq!(r.failed.len(), 1, "root causes only");
    let (root, err) = &r.failed[0];
    assert_eq!(root, "own/res0/act");
    assert_eq!(err.code, "AccessDenied");
    assert_eq!(err.request_id.as_deref(), Some("req-1"));
    assert!(err.hint.as_deref().unwrap().contains("kms:CreateGrant"));
    let mut skipped = r.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        vec![
            ("own/res1/act".to_string(), "own/res0/act".to_string()),
            ("own/res2/act".to_string(), "own/res0/act".to_string()),
            ("own/res4/act".to_string(), "own/res0/act".to_string()),
        ]
    );
    assert_eq!(r.done, 1);
    assert!(r.outputs.contains_key("own/res3/act"));
    // Skipped steps were never observed.
    assert_eq!(Mem::count(&fg.mem.observes, "own/res1/act"), 0);
}

#[test]
fn fail_fast_stops_starting_new_work() {
    let mut specs = vec![
        Spec {
            slow_ms: 2,
            ..Spec::ok()
        };
        10
    ];
    specs[0] = Spec::with(Behavior::FailObserve);
    let fg = fake_graph(&specs, &[]);
    let opts = RunOptions {
        fail_fast: true,
        ..fast_options(1)
    };
    let out = run_fake(&fg, opts, Cancel::new());
    let r = &out.report;
    assert_eq!(r.result, RunResult::Failed);
    assert_eq!(r.failed[0].0, "own/res0/act");
    // Concurrency 1: the failing step ran first, nothing started after it.
    assert_eq!(r.done, 0);
    assert_eq!(r.skipped.len(), 9);
    assert!(r.skipped.iter().all(|(_, root)| root == "own/res0/act"));
    assert_eq!(fg.mem.order.lock().unwrap().len(), 1);
}

#[test]
fn retries_per_class() {
    let specs = vec![
        Spec::with(Behavior::Errors(ErrorClass::Transient, 2)),
        Spec::with(Behavior::Errors(ErrorClass::Transient, 9)),
        Spec::with(Behavior::Errors(ErrorClass::QuotaExceeded, 9)),
        Spec {
            bucket: Some(0),
            ..Spec::with(Behavior::Errors(ErrorClass::Throttled, 3))
        },
        Spec::with(Behavior::Errors(ErrorClass::NotYetConsistent, 1)),
    ];
    let fg = fake_graph(&specs, &[]);
    let out = run_fake(&fg, fast_options(4), Cancel::new());
    let r = &out.report;
    assert_eq!(r.failed.len(), 1);
    let (id, e) = &r.failed[0];
    assert_eq!(id, "own/res1/act");
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(
        e.message.contains("gave up after 4 retries"),
        "{}",
        e.message
    );
    assert_eq!(Mem::count(&fg.mem.applies, "own/res0/act"), 3);
    assert_eq!(Mem::count(&fg.mem.applies, "own/res1/act"), 5);
    // Quota exceeded never fails, whatever the attempt bound.
    assert_eq!(Mem::count(&fg.mem.applies, "own/res2/act"), 10);
    // Each retry starts again from observe.
    assert_eq!(Mem::count(&fg.mem.observes, "own/res0/act"), 3);
    // Throttling slowed the bucket down (AIMD), successes only add back a little.
    let rate = out.limits.current_rate(&bucket_key(BUCKETS[0])).unwrap();
    assert!(rate < 400.0, "rate {rate}");
    let retries = out
        .events
        .iter()
        .filter(|e| matches!(e, Event::StepRetry { .. }))
        .count();
    assert_eq!(retries, 2 + 4 + 9 + 3 + 1);
}

#[test]
fn waiting_for_a_token_does_not_hold_a_concurrency_slot() {
    // Bucket 0: burst 2 at 400/s. Four steps drawing on it plus many free steps, concurrency 1.
    let limits = Arc::new(
        Limits::new(
            HashMap::from([("ec2:CopySnapshot".to_string(), BucketConfig::new(1.0, 20.0))]),
            HashMap::new(),
        )
        .with_audit(),
    );
    let mut specs = vec![
        Spec {
            bucket: Some(0),
            ..Spec::ok()
        };
        3
    ];
    specs.extend(vec![
        Spec {
            slow_ms: 1,
            ..Spec::ok()
        };
        20
    ]);
    let fg = fake_graph(&specs, &[]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(1))
        .limits(limits.clone())
        .subscribe(recorder(fg.mem.clone(), events.clone()));
    let r = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(r.done, 23);
    check_buckets(&limits).unwrap();
    // The free steps ran while the bucketed ones waited: some finished between two bucketed applies.
    let ev = events.lock().unwrap();
    let intents: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::StepIntent { step, .. } if ["own/res0/act", "own/res1/act", "own/res2/act"].contains(&step.as_str())))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(intents.len(), 3);
    let between = ev[intents[1]..intents[2]]
        .iter()
        .filter(|e| matches!(e, Event::StepDone { .. }))
        .count();
    assert!(
        between > 1,
        "free steps should run while waiting for a token"
    );
}

#[test]
fn gate_limits_copies_in_flight_and_polls_in_batches() {
    let specs = vec![
        Spec {
            gate: true,
            ..Spec::with(Behavior::Async(3))
        };
        9
    ];
    let fg = fake_graph(&specs, &[]);
    let out = run_fake(&fg, fast_options(8), Cancel::new());
    assert_eq!(out.report.done, 9);
    assert_eq!(fg.mem.max_gate_in_use.load(Ordering::SeqCst), 2);
    assert!(fg.mem.violations.lock().unwrap().is_empty());
    // Two copies at a time, polled together: batches of 2 seen.
    let calls = fg.mem.poll_calls.lock().unwrap().clone();
    assert!(calls.iter().any(|&n| n >= 2), "{calls:?}");
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::StepProgress { percent, .. } if *percent == 50.0))
    );
}

#[test]
fn polls_are_batched_per_key() {
    let specs = vec![Spec::with(Behavior::Async(2)); 30];
    let fg = fake_graph(&specs, &[]);
    let opts = RunOptions {
        poll_interval: Duration::from_millis(20),
        ..fast_options(30)
    };
    let out = run_fake(&fg, opts, Cancel::new());
    assert_eq!(out.report.done, 30);
    let calls = fg.mem.poll_calls.lock().unwrap().clone();
    // 30 ids, two polls each: far fewer calls than ids.
    assert!(calls.len() <= 6, "{calls:?}");
    assert_eq!(calls.iter().sum::<usize>(), 60);
}

/// Answers with whole-percent progress that grows linearly over `duration` from the first poll.
struct LinearPoller {
    duration: Duration,
    seen: Mutex<HashMap<String, tokio::time::Instant>>,
    outputs: HashMap<String, serde_json::Value>,
    calls: Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait::async_trait]
impl Poller<Mem> for LinearPoller {
    async fn poll(
        &self,
        _mem: &Arc<Mem>,
        _limits: &Arc<Limits>,
        _key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<Value>)>, StepError> {
        let now = tokio::time::Instant::now();
        self.calls.lock().unwrap().push(now);
        let mut seen = self.seen.lock().unwrap();
        Ok(ids
            .iter()
            .map(|rid| {
                let since = *seen.entry(rid.clone()).or_insert(now);
                let done = now.duration_since(since).as_secs_f64() / self.duration.as_secs_f64();
                let id = rid.strip_prefix("r-").unwrap();
                let answer = if done >= 1.0 {
                    PollAnswer::Done(self.outputs[id].clone())
                } else {
                    PollAnswer::Pending {
                        percent: Some((done * 100.0).floor() as f32),
                        detail: None,
                        eta: None,
                    }
                };
                (rid.clone(), answer)
            })
            .collect())
    }
}

#[test]
fn a_long_copy_is_polled_a_few_times_not_once_per_interval() {
    // One copy with linear progress that takes 300 poll intervals (an hour at the default
    // 10 s). One poll per interval would be 300; a prediction trusted only four intervals
    // ahead, 75. Halving the wait to a far prediction needs about a dozen. (Counts, not times:
    // a slow machine only delays polls, which makes fewer of them.)
    let fg = fake_graph(&[Spec::with(Behavior::Async(1))], &[]);
    let poller = Arc::new(LinearPoller {
        duration: Duration::from_secs(3),
        seen: Mutex::new(HashMap::new()),
        outputs: fg.poller.outputs.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let opts = RunOptions {
        poll_interval: Duration::from_millis(10),
        poll_interval_busy: Duration::from_millis(3),
        ..fast_options(4)
    };
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), opts)
        .limits(Arc::new(test_limits()))
        .poller("fake.copy", poller.clone());
    let report = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(report.done, 1);
    let calls = poller.calls.lock().unwrap().len();
    assert!(calls <= 20, "{calls} polls for one copy");
}

#[test]
fn first_cancel_interrupts_then_resume_finishes() {
    let specs = vec![
        Spec {
            slow_ms: 3,
            ..Spec::ok()
        };
        40
    ];
    let edges: Vec<(usize, usize)> = (1..40).map(|i| (i - 1, i)).collect();
    let fg = fake_graph(&specs, &edges);
    let cancel = Cancel::new();
    let c2 = cancel.clone();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mem = fg.mem.clone();
    let ev2 = events.clone();
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(2))
        .poller("fake.copy", fg.poller.clone())
        .subscribe(recorder(fg.mem.clone(), events.clone()))
        .subscribe(Box::new(move |ev: &Event| -> Result<(), SubscriberError> {
            if matches!(ev, Event::StepDone { step, .. } if step == "own/res5/act") {
                c2.signal();
            }
            Ok(())
        }));
    let r = runtime().block_on(exec.run(cancel)).unwrap();
    assert_eq!(r.result, RunResult::Interrupted);
    assert!(r.done >= 6 && r.done < 40, "done {}", r.done);
    assert!(r.failed.is_empty() && r.skipped.is_empty());
    let ev = ev2.lock().unwrap().clone();
    assert!(matches!(
        ev.last(),
        Some(Event::RunFinished {
            result: RunResult::Interrupted,
            ..
        })
    ));
    // In-flight calls finished: every mutating call that started ended done; nothing started
    // after the signal (the chain has one step at a time).
    let intents = ev
        .iter()
        .filter(|e| matches!(e, Event::StepIntent { .. }))
        .count();
    assert_eq!(intents, r.done);
    let started = ev
        .iter()
        .filter(|e| matches!(e, Event::StepStarted { .. }))
        .count();
    assert_eq!(started, r.done);

    // Resume from the folded events: done steps are not observed again.
    let folded = journal::fold(&ev);
    let observed_before = mem.observes.lock().unwrap().clone();
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(2))
        .resume(folded.resume())
        .subscribe(recorder(fg.mem.clone(), events.clone()));
    let r2 = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(r2.result, RunResult::Succeeded);
    assert_eq!(r2.done, 40);
    for (id, n) in observed_before {
        assert_eq!(Mem::count(&mem.observes, &id), n, "{id} observed again");
    }
}

#[test]
fn second_cancel_aborts_at_once() {
    let specs = vec![
        Spec {
            slow_ms: 200,
            ..Spec::ok()
        };
        4
    ];
    let fg = fake_graph(&specs, &[]);
    let cancel = Cancel::new();
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(4));
    let rt = runtime();
    let c = cancel.clone();
    rt.spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.signal();
        c.signal();
    });
    let r = rt.block_on(exec.run(cancel));
    assert!(matches!(r, Err(ExecError::Aborted)));
}

#[test]
fn resume_polls_submitted_and_reobserves_intents() {
    let specs = vec![
        Spec::with(Behavior::Async(1)),
        Spec::ok(),
        Spec::ok(),
        Spec::ok(),
    ];
    let fg = fake_graph(&specs, &[(0, 3)]);
    // An earlier attempt: 0 submitted, 1 done, 2 intent without outcome (it did create it).
    fg.mem
        .world
        .lock()
        .unwrap()
        .insert("own/res0/act".into(), 1);
    fg.mem
        .world
        .lock()
        .unwrap()
        .insert("own/res2/act".into(), 0);
    let events = vec![
        Event::RunStarted {
            run_id: "r".into(),
            plan: "p".into(),
            plan_hash: "h".into(),
            steps: 4,
            already_done: 0,
            resumed: false,
            ts: 1,
        },
        Event::StepSubmitted {
            step: "own/res0/act".into(),
            poll_key: POLL_KEY.parse().unwrap(),
            id: "r-own/res0/act".into(),
            ts: 2,
        },
        Event::StepDone {
            step: "own/res1/act".into(),
            outputs: json!({"id": "own/res1/act", "inputs": []}),
            ts: 3,
        },
        Event::StepIntent {
            step: "own/res2/act".into(),
            intent: json!({}),
            ts: 4,
        },
    ];
    let folded = journal::fold(&events);
    let out_events = Arc::new(Mutex::new(Vec::new()));
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(2))
        .poller("fake.copy", fg.poller.clone())
        .resume(folded.resume())
        .subscribe(recorder(fg.mem.clone(), out_events.clone()));
    let r = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(r.result, RunResult::Succeeded);
    let m = &fg.mem;
    assert_eq!(
        Mem::count(&m.observes, "own/res0/act"),
        0,
        "submitted: straight back to polling"
    );
    assert_eq!(
        Mem::count(&m.observes, "own/res1/act"),
        0,
        "done: not observed"
    );
    assert_eq!(
        Mem::count(&m.observes, "own/res2/act"),
        1,
        "intent: re-observed"
    );
    assert_eq!(
        Mem::count(&m.applies, "own/res2/act"),
        0,
        "found by observe, not applied again"
    );
    assert_eq!(Mem::count(&m.applies, "own/res3/act"), 1);
    assert_eq!(
        r.outputs["own/res3/act"],
        json!({"id": "own/res3/act", "inputs": ["own/res0/act"]})
    );
    assert!(matches!(
        out_events.lock().unwrap()[0],
        Event::RunStarted {
            already_done: 1,
            resumed: true,
            ..
        }
    ));
}

#[test]
fn cycles_and_duplicates_are_refused() {
    let mut b = StepGraphBuilder::<Mem>::new();
    let a = b
        .add_step(Arc::new(FakeStep::new("a", Spec::ok())))
        .unwrap();
    let c = b
        .add_step(Arc::new(FakeStep::new("c", Spec::ok())))
        .unwrap();
    assert_eq!(
        b.add_step(Arc::new(FakeStep::new("a", Spec::ok()))).err(),
        Some(GraphError::DuplicateId("a".into()))
    );
    b.add_dependency(a, c).unwrap();
    b.add_dependency(c, a).unwrap();
    assert!(matches!(b.seal().err(), Some(GraphError::Cycle(_))));
}

#[test]
fn progress_plain_lines_and_quiet() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut specs = vec![Spec::ok(); 3];
    specs[0] = Spec::with(Behavior::FailApply);
    let fg = fake_graph(&specs, &[(0, 1)]);
    let (plain, quiet) = (Buf::default(), Buf::default());
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(1))
        .subscribe(recorder(fg.mem.clone(), Arc::new(Mutex::new(Vec::new()))))
        .subscribe(Box::new(Progress::with_writer(
            ProgressMode::Plain,
            Box::new(plain.clone()),
        )))
        .subscribe(Box::new(Progress::with_writer(
            ProgressMode::Quiet,
            Box::new(quiet.clone()),
        )));
    runtime().block_on(exec.run(Cancel::new())).unwrap();
    let plain = String::from_utf8(plain.0.lock().unwrap().clone()).unwrap();
    let quiet = String::from_utf8(quiet.0.lock().unwrap().clone()).unwrap();
    assert!(plain.contains("starting run test-run: 3 steps"), "{plain}");
    assert!(
        plain.contains(
            "failed own/res0/act: AccessDenied: not allowed (request id req-1)\n  hint: role x"
        ),
        "{plain}"
    );
    assert!(
        plain.contains("skipped own/res1/act: own/res0/act failed"),
        "{plain}"
    );
    assert!(plain.contains("[3/3] done own/res2/act"), "{plain}");
    assert!(
        plain.contains("run failed: 1 done, 1 failed, 1 skipped, 0 not started"),
        "{plain}"
    );
    assert!(!quiet.contains("done own"), "{quiet}");
    assert!(quiet.contains("failed own/res0/act"), "{quiet}");
}

// ---------- journal ----------

fn new_run(j: &LocalJournal, run_id: &str, plan: &str) -> journal::PreparedRun {
    journal::start_run(
        j,
        NewRun {
            run_id,
            plan_name: "demo",
            plan_text: plan,
            graph: &json!({"nodes": 2}),
            step_ids: vec!["a/x/copy".into(), "a/y/copy".into()],
        },
    )
    .unwrap()
}

fn ev_done(step: &str) -> Event {
    Event::StepDone {
        step: step.into(),
        outputs: json!({"snapshot": "snap-1"}),
        ts: 5,
    }
}

#[test]
fn journal_round_trip_status_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path().join(".ferry")).unwrap();
    let id = journal::new_run_id();
    assert_eq!(id.len(), "20261123T051500Z-1a2b".len(), "{id}");
    let mut run = new_run(&j, &id, "plan: 1\n");
    for ev in [
        Event::RunStarted {
            run_id: id.clone(),
            plan: "demo".into(),
            plan_hash: run.plan_hash.clone(),
            steps: 2,
            already_done: 0,
            resumed: false,
            ts: 1_795_000_000_000,
        },
        Event::StepStarted {
            step: "a/x/copy".into(),
            kind: "ec2.copy-snapshot".into(),
            ts: 2,
        },
        Event::StepIntent {
            step: "a/x/copy".into(),
            intent: json!({"tag": "ferry:x"}),
            ts: 3,
        },
        Event::StepProgress {
            step: "a/x/copy".into(),
            percent: 3.0,
            detail: None,
        },
        ev_done("a/x/copy"),
        Event::StepFailed {
            step: "a/y/copy".into(),
            error: StepError::permanent("AccessDenied", "no").with_request_id("rq"),
            ts: 6,
        },
        Event::RunFinished {
            result: RunResult::Failed,
            done: 1,
            failed: 1,
            skipped: 0,
            not_started: 0,
            ts: 7,
        },
    ] {
        run.writer.on_event(&ev).unwrap();
    }
    drop(run);
    let contents = j.read_log(&id).unwrap();
    assert_eq!(contents.events.len(), 6, "progress is not journaled");
    assert!(!contents.torn_tail);
    let st = journal::run_status(&j, None).unwrap();
    assert_eq!(
        st.steps[0],
        (
            "a/x/copy".to_string(),
            StepState::Done {
                outputs: json!({"snapshot": "snap-1"})
            }
        )
    );
    let text = journal::render_status(&st);
    assert!(text.contains("result failed"), "{text}");
    assert!(
        text.contains("failed      a/y/copy  AccessDenied: no (request id rq)"),
        "{text}"
    );
    assert!(text.contains("1 done, 1 failed"), "{text}");
    let runs = journal::list_runs(&j).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].plan, "demo");
    assert_eq!(runs[0].result, Some(RunResult::Failed));
    let table = journal::render_runs(&runs);
    assert!(
        table.contains(&id) && table.contains("2026-11-18T") && table.contains("failed"),
        "{table}"
    );
    assert_eq!(j.read_graph(&id).unwrap(), json!({"nodes": 2}));
    // Failed runs are what `resume` picks by default.
    assert_eq!(journal::latest_unfinished(&j).unwrap(), id);
}

#[test]
fn journal_torn_last_line_is_ignored_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    let mut run = new_run(&j, "r1", "p");
    run.writer.on_event(&ev_done("a/x/copy")).unwrap();
    drop(run);
    let log = j.run_dir("r1").join("events.jsonl");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(br#"{"event":"step-done","step":"a/y/co"#);
    std::fs::write(&log, &bytes).unwrap();
    let c = j.read_log("r1").unwrap();
    assert!(c.torn_tail);
    assert_eq!(c.events, vec![ev_done("a/x/copy")]);
    let st = journal::run_status(&j, Some("r1")).unwrap();
    assert!(journal::render_status(&st).contains("cut short by a crash"));
    // Appending after a torn tail starts on a clean line.
    let mut log_w = j.open_log("r1").unwrap();
    log_w.append(&ev_done("a/y/copy")).unwrap();
    let c = j.read_log("r1").unwrap();
    assert!(!c.torn_tail);
    assert_eq!(c.events, vec![ev_done("a/x/copy"), ev_done("a/y/copy")]);
}

#[test]
fn journal_unknown_event_corrupt_line_and_missing_dir_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    drop(new_run(&j, "r1", "p"));
    let log = j.run_dir("r1").join("events.jsonl");
    std::fs::write(&log, "{\"event\":\"step-done\",\"step\":\"s\",\"outputs\":null,\"ts\":1}\n{\"event\":\"step-exploded\",\"step\":\"s\"}\n").unwrap();
    let e = j.read_log("r1").unwrap_err();
    assert!(matches!(e, JournalError::UnknownEvent { line: 2, .. }));
    assert!(
        e.to_string().ends_with(
            "events.jsonl:2: unknown event type `step-exploded` (written by a newer ferry?)"
        ),
        "{e}"
    );

    std::fs::write(
        &log,
        "garbage\n{\"event\":\"step-done\",\"step\":\"s\",\"outputs\":null,\"ts\":1}\n",
    )
    .unwrap();
    let e = j.read_log("r1").unwrap_err();
    assert!(
        e.to_string()
            .contains("events.jsonl:1: corrupt journal line"),
        "{e}"
    );

    std::fs::write(&log, "{\"event\":\"step-done\",\"ts\":1}\n").unwrap();
    let e = j.read_log("r1").unwrap_err();
    assert!(e.to_string().contains("missing field `step`"), "{e}");

    let e = LocalJournal::open(dir.path().join("nope")).unwrap_err();
    assert!(e.to_string().starts_with("no ferry state at "), "{e}");
    let e = j.read_log("r9").unwrap_err();
    assert!(
        e.to_string().contains("run `r9` not found") && e.to_string().contains("known runs: r1"),
        "{e}"
    );
    std::fs::remove_dir_all(j.run_dir("r1")).unwrap();
    assert!(journal::run_status(&j, Some("r1")).is_err());
}

#[test]
fn second_ferry_on_the_same_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    let held = j.lock("run-1").unwrap();
    assert!(held.took_over_from().is_none());
    let e = j.lock("run-2").err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("ferry pid {} on ", std::process::id())),
        "{msg}"
    );
    assert!(
        msg.contains("(run run-1)") && msg.contains("ferry unlock"),
        "{msg}"
    );
    // Starting a run takes the lock too.
    let r = journal::start_run(
        &j,
        NewRun {
            run_id: "run-3",
            plan_name: "p",
            plan_text: "",
            graph: &json!(null),
            step_ids: vec![],
        },
    );
    assert!(matches!(r.err(), Some(JournalError::Locked { .. })));
    drop(held);
    let again = j.lock("run-2").unwrap();
    drop(again);
    assert!(!j.lock_path().exists(), "released on drop");
}

#[test]
fn stale_lock_is_taken_over_and_only_one_taker_wins() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    let stale = r#"{"pid":999999,"host":"h","started_ms":1,"run_id":"dead"}"#;
    for _ in 0..20 {
        std::fs::write(j.lock_path(), stale).unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        // The winner holds the lock until every taker has tried, so exactly one can win.
        let tried = Arc::new(AtomicUsize::new(0));
        let winners: Vec<_> = (0..4)
            .map(|i| {
                let j = j.clone();
                let b = barrier.clone();
                let tried = tried.clone();
                std::thread::spawn(move || {
                    b.wait();
                    let taken = j.lock(&format!("taker-{i}"));
                    tried.fetch_add(1, Ordering::SeqCst);
                    taken.ok().map(|l| {
                        let from = l.took_over_from().map(|h| h.run_id.clone());
                        while tried.load(Ordering::SeqCst) < 4 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        drop(l);
                        from
                    })
                })
            })
            .collect();
        let won: Vec<Option<String>> = winners
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            won,
            vec![Some("dead".to_string())],
            "exactly one taker wins, and it took over from the dead holder"
        );
    }
    // A forced release never takes a lock a live process holds: that would make two holders
    // (the next taker would lock a new file beside the held one).
    let held = j.lock("held").unwrap();
    assert!(matches!(j.force_unlock(), Err(JournalError::Locked { .. })));
    assert!(j.lock("second").is_err(), "still one holder");
    drop(held);
    // A lock file left by a holder that is gone: released, naming it.
    std::fs::write(j.lock_path(), stale).unwrap();
    let holder = j.force_unlock().unwrap().unwrap();
    assert_eq!(holder.run_id, "dead");
    assert_eq!(j.force_unlock().unwrap(), None);
}

#[test]
fn lock_holders_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (j, inside) = (j.clone(), inside.clone());
            std::thread::spawn(move || {
                let mut wins = 0;
                for k in 0..200 {
                    if let Ok(l) = j.lock(&format!("t{i}-{k}")) {
                        assert_eq!(
                            inside.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two holders at once"
                        );
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(l);
                        wins += 1;
                    }
                }
                wins
            })
        })
        .collect();
    let wins: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(wins > 0);
}

#[test]
fn resume_refuses_a_changed_plan_unless_replan() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    let mut run = new_run(&j, "r1", "name: demo\ncopies: 3\n");
    run.writer.on_event(&ev_done("a/x/copy")).unwrap();
    drop(run);
    let e = journal::resume_run(&j, None, "name: demo\ncopies: 4\n", false)
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(msg.contains("--replan"), "{msg}");
    assert!(
        msg.contains("line    2 - copies: 3") && msg.contains("line    2 + copies: 4"),
        "{msg}"
    );
    let same = journal::resume_run(&j, Some("r1"), "name: demo\ncopies: 3\n", false).unwrap();
    assert_eq!(same.resume.done.len(), 1);
    assert_eq!(same.graph, json!({"nodes": 2}));
    drop(same);
    let re = journal::resume_run(&j, None, "name: demo\ncopies: 4\n", true).unwrap();
    assert_eq!(re.plan_hash, journal::plan_hash("name: demo\ncopies: 4\n"));
    drop(re);
    assert_eq!(j.read_plan("r1").unwrap(), "name: demo\ncopies: 4\n");
    assert!(j.run_dir("r1").join("plan.1.yaml").exists());
}

#[test]
fn journal_writer_with_the_walker() {
    let dir = tempfile::tempdir().unwrap();
    let j = LocalJournal::create(dir.path()).unwrap();
    let mut specs = vec![Spec::ok(); 6];
    specs[2] = Spec::with(Behavior::Async(1));
    specs[4] = Spec::with(Behavior::FailApply);
    let fg = fake_graph(&specs, &[(0, 1), (4, 5)]);
    let run = journal::start_run(
        &j,
        NewRun {
            run_id: "r1",
            plan_name: "demo",
            plan_text: "x",
            graph: &json!(null),
            step_ids: fg.ids.clone(),
        },
    )
    .unwrap();
    let opts = RunOptions {
        run_id: run.run_id.clone(),
        plan_hash: run.plan_hash.clone(),
        ..fast_options(3)
    };
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), opts)
        .poller("fake.copy", fg.poller.clone())
        .subscribe(Box::new(run.writer))
        .subscribe(recorder(fg.mem.clone(), Arc::new(Mutex::new(Vec::new()))));
    let r = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(r.result, RunResult::Failed);
    let st = journal::run_status(&j, Some("r1")).unwrap();
    let states: Vec<&str> = st.steps.iter().map(|(_, s)| s.label()).collect();
    assert_eq!(
        states,
        vec!["done", "done", "done", "done", "failed", "skipped"]
    );
    let events = j.read_log("r1").unwrap().events;
    // Intent precedes submission for the async step.
    let pos = |f: &dyn Fn(&Event) -> bool| events.iter().position(f).unwrap();
    let intent = pos(&|e| matches!(e, Event::StepIntent { step, .. } if step == "own/res2/act"));
    let sub = pos(&|e| matches!(e, Event::StepSubmitted { step, .. } if step == "own/res2/act"));
    let done = pos(&|e| matches!(e, Event::StepDone { step, .. } if step == "own/res2/act"));
    assert!(intent < sub && sub < done);
}

#[test]
fn crash_child() {
    crash::child_main();
}

#[test]
fn sigkill_at_random_points_then_resume_a() {
    crash::kill_and_resume(0xfe11, 30);
}

#[test]
fn sigkill_at_random_points_then_resume_b() {
    crash::kill_and_resume(0xbeef, 30);
}

#[test]
fn json_events_are_one_line_each_and_end_with_the_summary() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut specs = vec![Spec::ok(); 3];
    specs[0] = Spec::with(Behavior::FailApply);
    let fg = fake_graph(&specs, &[(0, 1)]);
    let buf = Buf::default();
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(2))
        .subscribe(recorder(fg.mem.clone(), Arc::new(Mutex::new(Vec::new()))))
        .subscribe(Box::new(JsonEvents::new(Box::new(buf.clone()))));
    runtime().block_on(exec.run(Cancel::new())).unwrap();
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines[0]["type"], "run-started");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["result"], "failed");
    assert_eq!(
        (&summary["done"], &summary["failed"], &summary["skipped"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert_eq!(
        summary["resume"],
        format!("ferry resume {}", lines[0]["run_id"].as_str().unwrap())
    );
    assert!(lines.contains(
        &json!({"type": "step-skipped", "step": "own/res1/act", "because_of": "own/res0/act", "ts": lines.iter().find(|l| l["type"] == "step-skipped").unwrap()["ts"]})
    ));
    let failed = lines.iter().find(|s| s["type"] == "step-failed").unwrap();
    assert_eq!(failed["code"], "AccessDenied");
    let e = StepError::access_denied(
        "arn:aws:iam::1:role/ferry",
        "kms:CreateGrant",
        "key/abc",
        "denied",
    );
    assert!(
        e.hint
            .unwrap()
            .starts_with("arn:aws:iam::1:role/ferry is not allowed to kms:CreateGrant on key/abc")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Resuming from any prefix of a journal (with the world as the full run left it) ends in the
    /// same outputs, never observes a step already done, and never applies anything again.
    #[test]
    fn resume_from_any_journal_prefix((specs, edges) in dag(), cut in 0.0f64..1.0) {
        let specs: Vec<Spec> = specs
            .into_iter()
            .map(|s| match s.behavior {
                Behavior::Async(n) => Spec::with(Behavior::Async(n)),
                _ => Spec::ok(),
            })
            .collect();
        let first = fake_graph(&specs, &edges);
        let out = run_fake(&first, fast_options(3), Cancel::new());
        prop_assert_eq!(out.report.result, RunResult::Succeeded);
        let durable: Vec<Event> = out.events.iter().filter(|e| e.is_durable()).cloned().collect();
        let k = ((durable.len() as f64) * cut) as usize;
        let folded = journal::fold(&durable[..k]);

        let again = fake_graph(&specs, &edges);
        *again.mem.world.lock().unwrap() = first.mem.world.lock().unwrap().clone();
        let resumed = run_fake_resumed(&again, folded.resume());
        prop_assert_eq!(resumed.result, RunResult::Succeeded);
        prop_assert_eq!(&resumed.outputs, &out.report.outputs);
        prop_assert_eq!(again.mem.applies.lock().unwrap().values().sum::<usize>(), 0);
        for (id, state) in &folded.steps {
            if matches!(state, StepState::Done { .. } | StepState::Submitted { .. }) {
                prop_assert_eq!(Mem::count(&again.mem.observes, id), 0, "{} observed again", id);
            }
        }
    }
}

fn run_fake_resumed(fg: &FakeGraph, resume: Resume<Value>) -> RunReport<Value> {
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(3))
        .limits(Arc::new(test_limits()))
        .poller("fake.copy", fg.poller.clone())
        .resume(resume)
        .subscribe(recorder(fg.mem.clone(), Arc::new(Mutex::new(Vec::new()))));
    runtime().block_on(exec.run(Cancel::new())).unwrap()
}

/// Step ids in the order the walker announced they were submitted.
fn submitted_order(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepSubmitted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn waiters_for_a_gate_slot_go_highest_priority_first() {
    // A gate of 2: the first two take the free slots as they come; the other six wait, and
    // get the slots by priority (a copy's bytes left in its chain), not by arrival.
    let specs: Vec<Spec> = [1u64, 2, 3, 8, 4, 7, 5, 6]
        .into_iter()
        .enumerate()
        .map(|(i, priority)| Spec {
            gate: true,
            priority,
            // The first two stay pending long enough for all the others to line up.
            ..Spec::with(Behavior::Async(if i < 2 { 30 } else { 2 }))
        })
        .collect();
    let fg = fake_graph(&specs, &[]);
    let out = run_fake(&fg, fast_options(1), Cancel::new());
    assert_eq!(out.report.done, 8, "{:?}", out.report.failed);
    let order = submitted_order(&out.events);
    let priority_of = |id: &String| {
        let n: usize = id
            .trim_start_matches("own/res")
            .trim_end_matches("/act")
            .parse()
            .unwrap();
        specs[n].priority
    };
    let waited: Vec<u64> = order.iter().skip(2).map(priority_of).collect();
    assert_eq!(waited, vec![8, 7, 6, 5, 4, 3], "submitted: {order:?}");
}

#[test]
fn a_chains_next_step_takes_the_slot_its_predecessor_frees() {
    // Gate of 2. Steps 0 -> 1 -> 2 form a chain; 3..8 wait for slots with a higher priority.
    // When a chain step ends, its slot passes to the next one, not to a waiter.
    let specs: Vec<Spec> = (0..9)
        .map(|i| Spec {
            gate: true,
            priority: if i < 3 { 1 } else { 10 },
            ..Spec::with(Behavior::Async(3))
        })
        .collect();
    let fg = fake_graph(&specs, &[(0, 1), (1, 2)]);
    let out = run_fake(&fg, fast_options(2), Cancel::new());
    assert_eq!(out.report.done, 9);
    assert!(fg.mem.violations.lock().unwrap().is_empty());
    assert_eq!(fg.mem.max_gate_in_use.load(Ordering::SeqCst), 2);
    // Taken by priority alone, the chain's later steps would wait for all six others.
    let order = submitted_order(&out.events);
    let at = |id: &str| order.iter().position(|s| s == id).unwrap();
    assert!(
        at("own/res2/act") < at("own/res8/act"),
        "the chain waited behind the others: {order:?}"
    );
}

#[test]
fn a_step_waiting_for_a_gate_it_no_longer_needs_goes_on_without_it() {
    // `pair-copies` of 1: step 0 holds it for five polls. Step 1 needs it only until a poll
    // was answered; then it goes, beside step 0, not after it.
    let specs = vec![
        Spec {
            gate: true,
            pair_gate: true,
            priority: 10,
            ..Spec::with(Behavior::Async(5))
        },
        Spec {
            gate: true,
            pair_gate: true,
            pair_gate_until_polled: true,
            priority: 1,
            ..Spec::with(Behavior::Async(1))
        },
    ];
    let fg = fake_graph(&specs, &[]);
    let out = run_fake(&fg, fast_options(8), Cancel::new());
    assert_eq!(out.report.done, 2);
    let at = |want: &dyn Fn(&Event) -> bool| out.events.iter().position(want).unwrap();
    let second_submitted =
        at(&|e| matches!(e, Event::StepSubmitted { step, .. } if step == "own/res1/act"));
    let first_done = at(&|e| matches!(e, Event::StepDone { step, .. } if step == "own/res0/act"));
    assert!(
        second_submitted < first_done,
        "the second went while the first held the pair: {:?}",
        out.events
    );
}

#[test]
fn a_narrower_gate_is_held_within_the_wider_one() {
    // Gate `copies` of 2, and `pair-copies` of 1 for the first four steps: never two of those
    // at once, while the other steps use the second slot of `copies`.
    let specs: Vec<Spec> = (0..8)
        .map(|i| Spec {
            gate: true,
            pair_gate: i < 4,
            ..Spec::with(Behavior::Async(2))
        })
        .collect();
    let fg = fake_graph(&specs, &[]);
    let out = run_fake(&fg, fast_options(8), Cancel::new());
    assert_eq!(out.report.done, 8);
    assert!(fg.mem.violations.lock().unwrap().is_empty());
    let paired = |s: &str| {
        [
            "own/res0/act",
            "own/res1/act",
            "own/res2/act",
            "own/res3/act",
        ]
        .contains(&s)
    };
    let (mut now, mut most) = (0i32, 0i32);
    for e in &out.events {
        match e {
            Event::StepSubmitted { step, .. } if paired(step) => now += 1,
            Event::StepDone { step, .. } if paired(step) => now -= 1,
            _ => {}
        }
        most = most.max(now);
    }
    assert_eq!(most, 1, "steps of one pair at once");
    assert_eq!(
        fg.mem.max_gate_in_use.load(Ordering::SeqCst),
        2,
        "the wider gate filled"
    );
}

#[test]
fn a_gate_has_the_slots_its_context_learned_within_the_configured_ones() {
    // `pair-copies` configured at 10; the context knows 2 until a poll was answered, then 5
    // (as a region pair's copies show how many keep it busy): never more than that at once.
    let specs: Vec<Spec> = (0..12)
        .map(|_| Spec {
            gate: true,
            pair_gate: true,
            ..Spec::with(Behavior::Async(3))
        })
        .collect();
    let fg = fake_graph(&specs, &[]);
    *fg.mem.pair_slots.lock().unwrap() = Some((2, 5));
    let limits = Limits::new(
        HashMap::from([(
            "ec2:CopySnapshot".to_string(),
            BucketConfig::new(100.0, 1000.0),
        )]),
        HashMap::from([("copies".to_string(), 20), ("pair-copies".to_string(), 10)]),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), fast_options(12))
        .limits(Arc::new(limits))
        .poller("fake.copy", fg.poller.clone())
        .subscribe(recorder(fg.mem.clone(), events.clone()));
    let report = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(report.done, 12);
    let (mut now, mut most, mut before_a_poll) = (0i32, 0i32, None);
    for e in events.lock().unwrap().iter() {
        match e {
            Event::StepSubmitted { .. } => now += 1,
            Event::StepDone { .. } => now -= 1,
            // the first poll answer: a copy's progress
            Event::StepProgress { .. } => {
                before_a_poll.get_or_insert(most);
            }
            _ => {}
        }
        most = most.max(now);
    }
    assert_eq!(
        before_a_poll,
        Some(2),
        "the first slots until a poll was answered"
    );
    assert_eq!(
        most, 5,
        "the learned slots, not the configured 10 nor the first 2"
    );
}

#[test]
fn poll_deadline_and_missing_poller_fail_the_step_and_free_the_gate() {
    // Gate of 2: the two never-finishing copies time out, then the third gets a slot.
    let mut specs = vec![
        Spec {
            gate: true,
            ..Spec::with(Behavior::Async(250))
        };
        2
    ];
    specs.push(Spec {
        gate: true,
        ..Spec::with(Behavior::Async(1))
    });
    let fg = fake_graph(&specs, &[]);
    let opts = RunOptions {
        poll_deadline: Duration::from_millis(30),
        ..fast_options(4)
    };
    let out = run_fake(&fg, opts.clone(), Cancel::new());
    let codes: Vec<&str> = out
        .report
        .failed
        .iter()
        .map(|(_, e)| e.code.as_str())
        .collect();
    assert_eq!(codes, vec!["PollDeadlineExceeded", "PollDeadlineExceeded"]);
    assert_eq!(
        out.report.done, 1,
        "the third copy got a slot once the others timed out"
    );

    let fg = fake_graph(&[Spec::with(Behavior::Async(1)), Spec::ok()], &[]);
    let exec = Executor::new(fg.graph.clone(), fg.mem.clone(), opts)
        .subscribe(recorder(fg.mem.clone(), Arc::new(Mutex::new(Vec::new()))));
    let r = runtime().block_on(exec.run(Cancel::new())).unwrap();
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].1.code, "NoPoller");
    assert!(r.failed[0].1.message.contains("fake.copy/acct/r1"));
    assert_eq!(r.done, 1);
}

#[test]
fn resume_retries_failed_steps_and_runs_what_was_skipped() {
    // 0 fails after 4 retries in the first attempt (9 errors in store); 1 depends on it.
    let specs = vec![
        Spec::with(Behavior::Errors(ErrorClass::Transient, 9)),
        Spec::ok(),
        Spec::ok(),
    ];
    let fg = fake_graph(&specs, &[(0, 1)]);
    let first = run_fake(&fg, fast_options(2), Cancel::new());
    assert_eq!(first.report.result, RunResult::Failed);
    assert_eq!(
        first.report.skipped,
        vec![("own/res1/act".to_string(), "own/res0/act".to_string())]
    );
    let folded = journal::fold(&first.events);
    assert!(matches!(
        folded.steps["own/res0/act"],
        StepState::Failed { .. }
    ));
    let second = run_fake_resumed(&fg, folded.resume());
    assert_eq!(second.result, RunResult::Succeeded);
    assert_eq!(Mem::count(&fg.mem.applies, "own/res0/act"), 10);
    assert_eq!(Mem::count(&fg.mem.applies, "own/res1/act"), 1);
    assert_eq!(
        Mem::count(&fg.mem.applies, "own/res2/act"),
        1,
        "done in the first attempt, not again"
    );
}
