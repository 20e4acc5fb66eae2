//! Walker benchmark: 100,000 no-op steps in a wide and in a deep graph, without and with the
//! journal (fsync per event). Each scenario runs in its own process so its peak memory (VmHWM)
//! is its own. Run with `cargo bench --bench walker`.
//!
//! "inline": the no-op observe finishes on its first poll, so the walker runs it in place.
//! "tasks": the observe yields once, so every call is a spawned task (as real AWS calls are).

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ferry::exec::*;
use ferry::journal::{self, LocalJournal, NewRun};
use serde_json::Value;

/// The bench's context: nothing.
struct Bench;

impl Context for Bench {
    type Output = Value;
    type Change = Value;
}

struct Noop {
    id: String,
    /// Wait once inside observe, so the call goes through a spawned task (like a real call).
    yields: bool,
}

#[async_trait]
impl Step<Bench> for Noop {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        "bench.noop"
    }
    async fn observe(
        &self,
        _cx: &StepCx<'_, Bench>,
    ) -> Result<Observation<Value, Value>, StepError> {
        if self.yields {
            tokio::task::yield_now().await;
        }
        Ok(Observation::Done(Value::Null))
    }
    async fn apply(
        &self,
        _cx: &StepCx<'_, Bench>,
        _change: Value,
    ) -> Result<Applied<Value>, StepError> {
        Ok(Applied::Done(Value::Null))
    }
}

fn peak_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn scenario(shape: &str, n: usize, with_journal: bool, yields: bool) {
    let t0 = Instant::now();
    let mut b = StepGraphBuilder::new();
    let mut prev = None;
    for i in 0..n {
        let s = b
            .add_step(Arc::new(Noop {
                id: format!("bench/res{i}/noop"),
                yields,
            }))
            .unwrap();
        if shape == "deep"
            && let Some(p) = prev
        {
            b.add_dependency(s, p).unwrap();
        }
        prev = Some(s);
    }
    let graph = Arc::new(b.seal().unwrap());
    let build = t0.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let mut exec = Executor::new(
        graph.clone(),
        Arc::new(Bench),
        RunOptions {
            concurrency: 64,
            ..RunOptions::default()
        },
    );
    let mut _lock = None;
    if with_journal {
        let j = LocalJournal::create(dir.path()).unwrap();
        let run_id = journal::new_run_id();
        let run = journal::start_run(
            &j,
            NewRun {
                run_id: &run_id,
                plan_name: "bench",
                plan_text: "bench",
                graph: &Value::Null,
                step_ids: graph.ids().map(String::from).collect(),
            },
        )
        .unwrap();
        exec = exec.subscribe(Box::new(run.writer));
        _lock = Some(run.lock);
    }
    let current = std::env::var("FERRY_BENCH_RUNTIME").is_ok_and(|v| v == "current");
    let rt = if current {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let t1 = Instant::now();
    let report = rt.block_on(exec.run(Cancel::new())).unwrap();
    let run = t1.elapsed();
    assert_eq!(report.done, n);
    let journal = match (with_journal, yields) {
        (true, _) => "journal (fsync/event)",
        (false, false) => "no journal, inline",
        (false, true) => "no journal, tasks",
    };
    let runtime = if current {
        "current-thread"
    } else {
        "multi-thread"
    };
    println!(
        "{shape:>4} {n:>7} steps, {journal:<22}, {runtime:<14}: {:>9.0} steps/s  (run {:>7.1} ms, build {:>6.1} ms)  peak {:>6.1} MB",
        n as f64 / run.as_secs_f64(),
        run.as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3,
        peak_mb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--scenario") {
        let shape = &args[pos + 1];
        let n: usize = args[pos + 2].parse().unwrap();
        scenario(
            shape,
            n,
            args[pos + 3] == "journal",
            args[pos + 3] == "yield",
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let journal_n: usize = std::env::var("FERRY_BENCH_JOURNAL_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    for (shape, n, mode, runtime) in [
        ("wide", 100_000, "none", "multi"),
        ("deep", 100_000, "none", "multi"),
        ("wide", 100_000, "yield", "multi"),
        ("deep", 100_000, "yield", "multi"),
        ("wide", 100_000, "yield", "current"),
        ("deep", 100_000, "yield", "current"),
        ("wide", journal_n, "journal", "multi"),
        ("deep", journal_n, "journal", "multi"),
    ] {
        let st = Command::new(&exe)
            .args(["--scenario", shape, &n.to_string(), mode])
            .env("FERRY_BENCH_RUNTIME", runtime)
            .status()
            .unwrap();
        assert!(st.success());
    }
}
