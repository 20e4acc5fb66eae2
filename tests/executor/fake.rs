//! In-memory fake steps that check the walker's promises as they run.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry::exec::*;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    Ok,
    /// Permanent error from apply.
    FailApply,
    /// Permanent error from observe.
    FailObserve,
    /// The first n applies fail with this class, without effect.
    Errors(ErrorClass, u8),
    /// apply submits; the poller says pending n times, then done.
    Async(u8),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub behavior: Behavior,
    pub slow_ms: u8,
    pub bucket: Option<usize>,
    pub gate: bool,
    /// Also the narrower gate `PAIR_GATE` (taken before `GATE`).
    pub pair_gate: bool,
    /// ... but only until a poll was answered (as a copy goes without the pair's slots once
    /// its pace shows it quick).
    pub pair_gate_until_polled: bool,
    pub priority: u64,
}

impl Spec {
    pub fn ok() -> Self {
        Spec {
            behavior: Behavior::Ok,
            slow_ms: 0,
            bucket: None,
            gate: false,
            pair_gate: false,
            pair_gate_until_polled: false,
            priority: 0,
        }
    }
    pub fn with(behavior: Behavior) -> Self {
        Spec {
            behavior,
            ..Spec::ok()
        }
    }
}

pub const BUCKETS: [&str; 2] = ["acct/r1/ec2:CopySnapshot", "acct/r1/kms:CreateGrant"];
pub const GATE: &str = "copies/acct/r1";
pub const PAIR_GATE: &str = "pair-copies/acct/r1/r0";
pub const POLL_KEY: &str = "fake.copy/acct/r1";

/// A token bucket named in full (`scope/quota`).
pub fn bucket_key(full: &str) -> BucketKey {
    let (scope, quota) = full.rsplit_once('/').expect("scope/quota");
    BucketKey::new(scope, quota)
}

impl Context for Mem {
    type Output = Value;
    type Change = Value;

    /// `PAIR_GATE`'s slots as learned: the first before any poll was answered, the second after.
    fn gate_slots(&self, gate: &GateKey) -> Option<usize> {
        let (before, after) = (*self.pair_slots.lock().unwrap())?;
        let polled = !self.poll_calls.lock().unwrap().is_empty();
        (gate.as_str() == PAIR_GATE).then_some(if polled { after } else { before })
    }
}

/// The fake world plus what the checks saw.
#[derive(Default)]
pub struct Mem {
    pub deps: HashMap<String, Vec<String>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub gate_in_use: AtomicUsize,
    pub max_gate_in_use: AtomicUsize,
    /// Fed by the event subscriber: done steps and journaled intents.
    pub done: Mutex<HashSet<String>>,
    pub intents: Mutex<HashSet<String>>,
    /// Created resources: step id -> polls left before complete.
    pub world: Mutex<HashMap<String, u8>>,
    pub errors_left: Mutex<HashMap<String, u8>>,
    pub observes: Mutex<HashMap<String, usize>>,
    pub applies: Mutex<HashMap<String, usize>>,
    pub order: Mutex<Vec<String>>,
    pub violations: Mutex<Vec<String>>,
    pub poll_calls: Mutex<Vec<usize>>,
    pub polls_in_flight: AtomicUsize,
    /// Slots of `PAIR_GATE` the context learned (before, after the first poll); `None`: the
    /// configured ones.
    pub pair_slots: Mutex<Option<(usize, usize)>>,
}

impl Mem {
    pub fn violation(&self, s: String) {
        self.violations.lock().unwrap().push(s);
    }
    fn enter(&self) {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    fn gate_enter(&self) {
        let n = self.gate_in_use.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_gate_in_use.fetch_max(n, Ordering::SeqCst);
    }
    pub fn count(map: &Mutex<HashMap<String, usize>>, id: &str) -> usize {
        map.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

/// Subscriber feeding `Mem` with what the walker announced.
pub fn recorder(mem: Arc<Mem>, events: Arc<Mutex<Vec<Event>>>) -> Box<dyn Subscriber> {
    Box::new(move |ev: &Event| -> Result<(), SubscriberError> {
        match ev {
            Event::StepDone { step, .. } => {
                mem.done.lock().unwrap().insert(step.clone());
            }
            Event::StepIntent { step, .. } => {
                mem.intents.lock().unwrap().insert(step.clone());
            }
            _ => {}
        }
        events.lock().unwrap().push(ev.clone());
        Ok(())
    })
}

pub struct FakeStep {
    pub id: String,
    pub spec: Spec,
    buckets: Vec<BucketKey>,
    gate: GateKey,
    pair_gate: GateKey,
}

impl FakeStep {
    pub fn new(id: impl Into<String>, spec: Spec) -> Self {
        let buckets = spec
            .bucket
            .map(|b| vec![bucket_key(BUCKETS[b])])
            .unwrap_or_default();
        let (limit, scope) = GATE.split_once('/').expect("limit/scope");
        let (pair_limit, pair_scope) = PAIR_GATE.split_once('/').expect("limit/scope");
        FakeStep {
            id: id.into(),
            spec,
            buckets,
            gate: GateKey::new(limit, scope),
            pair_gate: GateKey::new(pair_limit, pair_scope),
        }
    }

    fn outputs(&self, cx: &StepCx<'_, Mem>) -> Value {
        let mut inputs: Vec<String> = cx
            .inputs()
            .map(|(_, v)| v["id"].as_str().unwrap_or("?").to_string())
            .collect();
        inputs.sort();
        json!({ "id": self.id, "inputs": inputs })
    }

    async fn check_start(&self, cx: &StepCx<'_, Mem>) {
        let mem = cx.ctx();
        mem.order.lock().unwrap().push(self.id.clone());
        let deps = mem.deps.get(&self.id).cloned().unwrap_or_default();
        {
            let done = mem.done.lock().unwrap();
            for d in &deps {
                if !done.contains(d) {
                    mem.violation(format!(
                        "{} started before its dependency {d} was done",
                        self.id
                    ));
                }
                if cx.input(d).is_none() {
                    mem.violation(format!("{} has no input from {d}", self.id));
                }
            }
        }
        if self.spec.slow_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.spec.slow_ms as u64)).await;
        }
    }
}

#[async_trait]
impl Step<Mem> for FakeStep {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        "fake.step"
    }
    fn buckets(&self) -> &[BucketKey] {
        &self.buckets
    }
    fn gate(&self) -> Option<&GateKey> {
        self.spec.gate.then_some(&self.gate)
    }
    fn inner_gate(&self, mem: &Mem) -> Option<&GateKey> {
        let polled = !mem.poll_calls.lock().unwrap().is_empty();
        (self.spec.pair_gate && !(self.spec.pair_gate_until_polled && polled))
            .then_some(&self.pair_gate)
    }
    fn priority(&self) -> u64 {
        self.spec.priority
    }
    fn intent(&self, _change: &Value) -> Value {
        json!({ "tag": format!("ferry:{}", self.id) })
    }

    async fn observe(&self, cx: &StepCx<'_, Mem>) -> Result<Observation<Value, Value>, StepError> {
        let mem = cx.ctx().clone();
        mem.enter();
        *mem.observes
            .lock()
            .unwrap()
            .entry(self.id.clone())
            .or_default() += 1;
        self.check_start(cx).await;
        let r = if self.spec.behavior == Behavior::FailObserve {
            Err(StepError::permanent("ValidationError", "observe refused").with_request_id("req-o"))
        } else {
            match mem.world.lock().unwrap().get(&self.id) {
                Some(0) => Ok(Observation::Done(self.outputs(cx))),
                Some(_) => Ok(Observation::InProgress(Submitted {
                    poll_key: POLL_KEY.parse().unwrap(),
                    id: format!("r-{}", self.id),
                })),
                None => Ok(Observation::Todo(json!({ "create": self.id }))),
            }
        };
        mem.leave();
        r
    }

    async fn apply(
        &self,
        cx: &StepCx<'_, Mem>,
        change: Value,
    ) -> Result<Applied<Value>, StepError> {
        let mem = cx.ctx().clone();
        mem.enter();
        *mem.applies
            .lock()
            .unwrap()
            .entry(self.id.clone())
            .or_default() += 1;
        if !mem.intents.lock().unwrap().contains(&self.id) {
            mem.violation(format!(
                "{} applied before its intent was journaled",
                self.id
            ));
        }
        if change != json!({ "create": self.id }) {
            mem.violation(format!("{} got a different change", self.id));
        }
        if self.spec.gate {
            mem.gate_enter();
        }
        self.check_start(cx).await;
        let r = match self.spec.behavior {
            Behavior::FailApply => Err(StepError::permanent("AccessDenied", "not allowed")
                .with_request_id("req-1")
                .with_hint("role x lacks kms:CreateGrant on key y")),
            Behavior::Errors(class, n) => {
                let mut left = mem.errors_left.lock().unwrap();
                let l = left.entry(self.id.clone()).or_insert(n);
                if *l > 0 {
                    *l -= 1;
                    Err(StepError::new(class, format!("{class}"), "try later"))
                } else {
                    mem.world.lock().unwrap().insert(self.id.clone(), 0);
                    Ok(Applied::Done(self.outputs(cx)))
                }
            }
            Behavior::Async(n) => {
                mem.world.lock().unwrap().insert(self.id.clone(), n);
                Ok(Applied::Submitted(Submitted {
                    poll_key: POLL_KEY.parse().unwrap(),
                    id: format!("r-{}", self.id),
                }))
            }
            Behavior::Ok | Behavior::FailObserve => {
                mem.world.lock().unwrap().insert(self.id.clone(), 0);
                Ok(Applied::Done(self.outputs(cx)))
            }
        };
        if self.spec.gate && !matches!(r, Ok(Applied::Submitted(_))) {
            mem.gate_in_use.fetch_sub(1, Ordering::SeqCst);
        }
        mem.leave();
        r
    }
}

/// Completes `Async` steps: all pending ids of the key in one call.
pub struct MemPoller {
    pub outputs: HashMap<String, Value>,
    pub gated: HashSet<String>,
}

#[async_trait]
impl Poller<Mem> for MemPoller {
    async fn poll(
        &self,
        mem: &Arc<Mem>,
        _limits: &Arc<Limits>,
        key: &PollKey,
        ids: &[String],
    ) -> Result<Vec<(String, PollAnswer<Value>)>, StepError> {
        if mem.polls_in_flight.fetch_add(1, Ordering::SeqCst) != 0 {
            mem.violation(format!("two polls of {key} at once"));
        }
        mem.poll_calls.lock().unwrap().push(ids.len());
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut out = Vec::new();
        for rid in ids {
            let id = rid.strip_prefix("r-").unwrap().to_string();
            let mut world = mem.world.lock().unwrap();
            let left = world.get_mut(&id).unwrap();
            if *left > 0 {
                *left -= 1;
            }
            if *left == 0 {
                if self.gated.contains(&id) {
                    mem.gate_in_use.fetch_sub(1, Ordering::SeqCst);
                }
                out.push((rid.clone(), PollAnswer::Done(self.outputs[&id].clone())));
            } else {
                out.push((
                    rid.clone(),
                    PollAnswer::Pending {
                        percent: Some(50.0),
                        detail: None,
                        eta: None,
                    },
                ));
            }
        }
        mem.polls_in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(out)
    }
}

/// A graph of fake steps over `Mem`: `edges` are (dependency, dependent) index pairs.
pub struct FakeGraph {
    pub graph: Arc<StepGraph<Mem>>,
    pub mem: Arc<Mem>,
    pub poller: Arc<MemPoller>,
    pub ids: Vec<String>,
    pub deps: Vec<Vec<usize>>,
}

pub fn fake_graph(specs: &[Spec], edges: &[(usize, usize)]) -> FakeGraph {
    let ids: Vec<String> = (0..specs.len())
        .map(|i| format!("own/res{i}/act"))
        .collect();
    let mut b = StepGraphBuilder::new();
    let idx: Vec<StepIndex> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            b.add_step(Arc::new(FakeStep::new(&ids[i], s.clone())))
                .unwrap()
        })
        .collect();
    let mut deps = vec![Vec::new(); specs.len()];
    let mut mem = Mem::default();
    for &(a, c) in edges {
        b.add_dependency(idx[c], idx[a]).unwrap();
        if !deps[c].contains(&a) {
            deps[c].push(a);
            mem.deps
                .entry(ids[c].clone())
                .or_default()
                .push(ids[a].clone());
        }
    }
    let mut outputs = HashMap::new();
    let mut gated = HashSet::new();
    for (i, s) in specs.iter().enumerate() {
        let mut inputs: Vec<String> = deps[i].iter().map(|&d| ids[d].clone()).collect();
        inputs.sort();
        outputs.insert(ids[i].clone(), json!({ "id": ids[i], "inputs": inputs }));
        if s.gate {
            gated.insert(ids[i].clone());
        }
    }
    FakeGraph {
        graph: Arc::new(b.seal().unwrap()),
        mem: Arc::new(mem),
        poller: Arc::new(MemPoller { outputs, gated }),
        ids,
        deps,
    }
}

pub fn fast_options(concurrency: usize) -> RunOptions {
    RunOptions {
        concurrency,
        retry: RetryPolicies::fast(Duration::from_millis(1), 4),
        poll_interval: Duration::from_millis(3),
        poll_interval_busy: Duration::from_millis(1),
        poll_deadline: Duration::from_secs(30),
        run_id: "test-run".into(),
        plan_name: "test".into(),
        plan_hash: "h".into(),
        ..RunOptions::default()
    }
}

pub fn test_limits() -> Limits {
    Limits::new(
        HashMap::from([
            (
                "ec2:CopySnapshot".to_string(),
                BucketConfig::new(2.0, 400.0),
            ),
            (BUCKETS[1].to_string(), BucketConfig::new(3.0, 1000.0)),
        ]),
        HashMap::from([("copies".to_string(), 2), ("pair-copies".to_string(), 1)]),
    )
    .with_audit()
}

/// No window of grants exceeds what the bucket allows at its configured (highest) rate.
pub fn check_buckets(limits: &Limits) -> Result<(), String> {
    let mut by_key: HashMap<String, Vec<tokio::time::Instant>> = HashMap::new();
    for (k, t) in limits.grants() {
        by_key.entry(k).or_default().push(t);
    }
    for (k, mut ts) in by_key {
        let cfg = limits.bucket_config(&bucket_key(&k)).unwrap();
        ts.sort();
        for i in 0..ts.len() {
            for j in i..ts.len() {
                let allowed =
                    cfg.burst + cfg.per_second * ts[j].duration_since(ts[i]).as_secs_f64() + 1e-6;
                if (j - i + 1) as f64 > allowed {
                    return Err(format!(
                        "bucket {k}: {} grants within {:?}, allowed {allowed}",
                        j - i + 1,
                        ts[j] - ts[i]
                    ));
                }
            }
        }
    }
    Ok(())
}
