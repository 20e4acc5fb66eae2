//! Run state on S3 (issue 9): the lock as a lease, resume from another machine, the audit log.
//! The state bucket lives in an account of its own (reached with `--state-profile`), so the
//! emulator's counters of the plan's account are the migration's calls only.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;

use super::{PROD, SRC, World, assert_one_copy_each, kill, plan, text, wait_for};
use crate::common::emulator::access_key_for;

const STATE: &str = "333333333333";
const BUCKET: &str = "ferry-state";

/// A world whose state bucket exists in the state account, with a profile to reach it.
fn world(config: serde_json::Value) -> World {
    let w = World::new(config);
    w.rt.block_on(async {
        w.emu
            .s3(STATE, SRC)
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("CreateBucket");
    });
    std::fs::write(
        w.path("aws-config"),
        format!(
            "[profile state]\naws_access_key_id = {}\naws_secret_access_key = ferry-test\nregion = {SRC}\n",
            access_key_for(STATE)
        ),
    )
    .expect("config written");
    w
}

fn url(prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}")
}

/// `ferry ARGS` in `dir` (another "machine" when it is not the world's own directory).
fn ferry_in(w: &World, dir: &Path, lease_ms: u64, args: &[&str]) -> std::process::Command {
    let mut c = w.command(args);
    c.current_dir(dir)
        .env("AWS_CONFIG_FILE", w.path("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", w.path("no-credentials"))
        .env("FERRY_STATE_PROFILE", "state")
        .env("FERRY_LOCK_LEASE_MS", lease_ms.to_string());
    c
}

fn run_in(w: &World, dir: &Path, lease_ms: u64, args: &[&str]) -> std::process::Output {
    let out = ferry_in(w, dir, lease_ms, args)
        .output()
        .expect("ferry runs");
    eprintln!(
        "$ ferry {}\n--- exit {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn with_state(plan_text: &str, prefix: &str) -> String {
    format!("{plan_text}  state: {}\n", url(prefix))
}

/// `ferry resume` until the holder's lease has run out (refusals meanwhile name the holder).
fn resume_when_free(w: &World, dir: &Path, prefix: &str) -> std::process::Output {
    let state = url(prefix);
    let mut last = None;
    wait_for("the lease to run out", Duration::from_secs(60), || {
        // The holders in these tests hold 2 s leases, to be taken over soon; the taker's own
        // is longer, so that a loaded machine (the suite runs two tests at once) cannot make
        // it miss a renewal while it completes the run.
        let out = run_in(w, dir, 10_000, &["--state", &state, "resume"]);
        let locked = out.status.code() == Some(1) && text(&out.stderr).contains("is locked by");
        if locked {
            assert!(text(&out.stderr).contains("ferry pid"), "names the holder");
        }
        last = Some(out);
        !locked
    });
    last.expect("ran")
}

fn stop(child: &Child, sig: i32) {
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[test]
fn state_two_applies_at_once_exactly_one_runs_twenty_times() {
    let w = world(json!({ "copy_seconds": 2.0 }));
    let src_key = w.key(SRC, "alias/source");
    let snap = w.snapshots(&src_key, 1, |_| false).remove(0);
    for i in 0..20 {
        let plan_text = format!(
            r#"version: 1
name: race{i}
accounts:
  prod: {{ id: "{PROD}" }}
keys:
  dr:
    account: prod
    region: {}
    alias: alias/race-{i}
    create: true
migrations:
  - id: once
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, snapshots: [{snap}] }}
    destination: {{ region: {}, key: dr }}
settings:
  state: {}
"#,
            super::DST,
            super::DST,
            url("race")
        );
        let plan_file = w.write_plan(&plan_text);
        let spawn = || {
            ferry_in(&w, w.dir.path(), 60_000, &["apply", "--yes", &plan_file])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ferry starts")
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
        let winners = codes.iter().filter(|c| **c == Some(0)).count();
        let refused: Vec<_> = outs
            .iter()
            .filter(|o| o.status.code() == Some(1))
            .map(|o| text(&o.stderr))
            .collect();
        assert!(
            winners == 1 && refused.len() == 1,
            "round {i}: exactly one runs, the other is refused: {codes:?}\n{}\n{}",
            text(&outs[0].stderr),
            text(&outs[1].stderr)
        );
        assert!(
            refused[0].contains("is locked by ferry pid") && refused[0].contains("lease until"),
            "round {i}: the refusal names the holder: {}",
            refused[0]
        );
    }
    // Never both: one run per round in the shared state, each succeeded.
    let runs = run_in(&w, w.dir.path(), 60_000, &["--state", &url("race"), "runs"]);
    assert_eq!(runs.status.code(), Some(0));
    let listing = text(&runs.stdout);
    assert_eq!(listing.matches("succeeded").count(), 20, "{listing}");
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        20,
        "one copy per round"
    );
}

#[test]
fn state_run_killed_on_one_machine_is_resumed_from_another() {
    let w = world(json!({ "copy_seconds": 4.0, "max_pending_snapshot_copies": 6 }));
    let src_key = w.key(SRC, "alias/source");
    let all = w.snapshots(&src_key, 12, |_| true);
    let plan_file = w.write_plan(&with_state(&plan(&[]), "team"));

    // Machine A.
    let mut child = ferry_in(&w, w.dir.path(), 2_000, &["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts");
    wait_for("some copies in flight", Duration::from_secs(60), || {
        w.emu.counters().copy_totals.snapshots >= 3
    });
    kill(&mut child);
    assert!(w.emu.counters().copy_totals.snapshots < 12);
    // Machine B has neither A's working directory nor its plan file: only the S3 state.
    std::fs::remove_file(w.path(&plan_file)).unwrap();
    let b = tempfile::tempdir().unwrap();
    let state = url("team");
    let status = run_in(&w, b.path(), 2_000, &["--state", &state, "status"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(text(&status.stdout).contains("nightly/"));

    let resumed = resume_when_free(&w, b.path(), "team");
    assert_eq!(resumed.status.code(), Some(0));
    assert!(text(&resumed.stderr).contains("Took over the state lock of ferry pid"));
    assert!(text(&resumed.stdout).contains("using the plan stored with run"));
    let dr = w.key_arn(super::DST, "alias/dr-ebs").unwrap();
    assert_one_copy_each(&w, &all, &dr);
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        12,
        "no duplicate copy"
    );
    assert!(!w.path(".ferry").exists() && !b.path().join(".ferry").exists());

    let runs = run_in(&w, b.path(), 2_000, &["--state", &state, "runs"]);
    assert!(text(&runs.stdout).contains("succeeded"));
    // Nothing is left to resume, and the lock was released.
    let again = run_in(&w, b.path(), 2_000, &["--state", &state, "resume"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("no unfinished run"));
    let unlock = run_in(&w, b.path(), 2_000, &["--state", &state, "unlock"]);
    assert!(text(&unlock.stdout).contains("was not locked"));
}

/// Only snapshot copies, at most two in flight (ferry's own limit, so nothing is retried):
/// between its copies the holder only polls, and a pause there catches no call in flight.
fn copies_only(prefix: &str) -> String {
    format!(
        r#"version: 1
name: e2e
accounts:
  prod: {{ id: "{PROD}" }}
migrations:
  - id: nightly
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, tags: {{ Backup: nightly }} }}
    destination: {{ region: {}, key: alias/dr-ebs }}
    tags: {{ Purpose: dr }}
settings:
  tags: {{ MigratedBy: ferry }}
  quotas:
    "ec2:snapshot-copies-in-flight": {{ in_flight: 2 }}
  state: {}
"#,
        super::DST,
        url(prefix)
    )
}

#[test]
fn state_paused_holder_loses_its_lease_and_makes_no_further_change() {
    let w = world(json!({ "copy_seconds": 3.0 }));
    let src_key = w.key(SRC, "alias/source");
    let dr = w.key(super::DST, "alias/dr-ebs");
    let all = w.snapshots(&src_key, 8, |_| true);
    let plan_file = w.write_plan(&copies_only("paused"));
    let holder = ferry_in(&w, w.dir.path(), 2_000, &["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts");
    wait_for("the first two copies", Duration::from_secs(60), || {
        w.emu.counters().copy_totals.snapshots >= 2
    });
    // Let the answers of those calls arrive: the holder is then polling, with no call in flight.
    std::thread::sleep(Duration::from_millis(500));
    stop(&holder, libc::SIGSTOP);
    let paused_at = w.emu.counters().mutating(PROD);
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        2,
        "paused with copies still to make"
    );

    let b = tempfile::tempdir().unwrap();
    let taker = resume_when_free(&w, b.path(), "paused");
    assert_eq!(taker.status.code(), Some(0), "the taker completes the run");
    assert!(text(&taker.stderr).contains("Took over the state lock of ferry pid"));
    assert_one_copy_each(&w, &all, &dr);
    assert!(
        w.emu.counters().mutating(PROD) > paused_at,
        "the taker copied"
    );

    let before = w.emu.counters();
    stop(&holder, libc::SIGCONT);
    let out = holder.wait_with_output().unwrap();
    let err = text(&out.stderr);
    eprintln!("--- the paused holder, continued:\n{err}");
    assert_eq!(out.status.code(), Some(1), "it stops with an error");
    assert!(err.contains("lost the lock on the run state"), "{err}");
    let after = w.emu.counters();
    assert_eq!(
        after.mutating(PROD),
        before.mutating(PROD),
        "no mutating call once continued: {:#?}",
        after.requests
    );
    assert_eq!(after.copy_totals.snapshots, 8, "no duplicate copy");
    // The taker's run is the one the state tells of: succeeded, every copy done once.
    let status = run_in(&w, b.path(), 2_000, &["--state", &url("paused"), "status"]);
    assert!(
        text(&status.stdout).contains("succeeded"),
        "{}",
        text(&status.stdout)
    );
}

#[test]
fn state_unlock_refuses_a_live_lease_and_force_makes_its_holder_stop() {
    let w = world(json!({ "copy_seconds": 8.0 }));
    let src_key = w.key(SRC, "alias/source");
    w.key(super::DST, "alias/dr-ebs");
    w.snapshots(&src_key, 6, |_| true);
    let plan_file = w.write_plan(&copies_only("forced"));
    let state = url("forced");
    let holder = ferry_in(&w, w.dir.path(), 6_000, &["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts");
    wait_for("the first two copies", Duration::from_secs(60), || {
        w.emu.counters().copy_totals.snapshots >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    stop(&holder, libc::SIGSTOP);

    let b = tempfile::tempdir().unwrap();
    let refused = run_in(&w, b.path(), 6_000, &["--state", &state, "unlock"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("is locked by ferry pid"));
    let forced = run_in(
        &w,
        b.path(),
        6_000,
        &["--state", &state, "unlock", "--force"],
    );
    assert_eq!(forced.status.code(), Some(0));
    assert!(text(&forced.stdout).contains("Released the lock of ferry pid"));

    // The holder's next renewal (due at once: it renews every 2 s) finds its lock gone, well
    // before its copies complete: it stops, with no further mutating call.
    let before = w.emu.counters().mutating(PROD);
    stop(&holder, libc::SIGCONT);
    let out = holder.wait_with_output().unwrap();
    let err = text(&out.stderr);
    eprintln!("--- the holder whose lock was removed:\n{err}");
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("lost the lock on the run state"), "{err}");
    assert_eq!(w.emu.counters().mutating(PROD), before);
    // What it did not finish, a resume does.
    let resumed = run_in(&w, b.path(), 6_000, &["--state", &state, "resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        6,
        "no duplicate copy"
    );
}

/// (account, region, operation) → count.
type Calls = BTreeMap<(String, String, String), u64>;

#[test]
fn state_audit_log_lists_every_mutating_call_the_emulator_counted() {
    let w = world(json!({ "copy_seconds": 1.0 }));
    let src_key = w.key(SRC, "alias/source");
    let all = w.snapshots(&src_key, 6, |i| i < 4);
    // The state's objects are encrypted with a key of the state account.
    let state_key = w.rt.block_on(async {
        let k = w.emu.kms(STATE, SRC).create_key().send().await.unwrap();
        k.key_metadata().unwrap().arn().unwrap().to_string()
    });
    let plan_text = format!(
        "{}  state_key: {state_key}\n",
        with_state(&plan(&all[4..]), "audit")
    );
    let plan_file = w.write_plan(&plan_text);
    w.emu.reset_counters();
    let out = run_in(&w, w.dir.path(), 60_000, &["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let counted: Calls = w
        .emu
        .counters()
        .requests
        .iter()
        .filter(|r| r.mutating && r.account != STATE)
        .map(|r| {
            (
                (r.account.clone(), r.region.clone(), r.action.clone()),
                r.count,
            )
        })
        .collect();
    assert!(counted.len() > 3, "a full run: {counted:?}");

    // What the state cost: the state account's calls (not audited: the state is not the migration).
    let state_calls: Vec<_> = w
        .emu
        .counters()
        .requests
        .into_iter()
        .filter(|r| r.account == STATE)
        .map(|r| (r.action, r.count))
        .collect();
    eprintln!("state calls of the apply: {state_calls:?}");

    let state = url("audit");
    let audit = run_in(
        &w,
        w.dir.path(),
        60_000,
        &["--state", &state, "status", "--audit"],
    );
    assert_eq!(audit.status.code(), Some(0));
    let listing = text(&audit.stdout);
    let mut logged: Calls = BTreeMap::new();
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("  request "))
        .collect();
    for line in &lines {
        let f: Vec<&str> = line.split("  ").collect();
        let op = f[3].split_once(':').expect("service:operation").1;
        *logged
            .entry((f[1].to_string(), f[2].to_string(), op.to_string()))
            .or_default() += 1;
        let outcome = f[5];
        assert!(
            outcome == "ok" || outcome.starts_with("error 4"),
            "an outcome: {line}"
        );
        assert!(
            f[6].starts_with("request ") && f[6].len() > "request -".len(),
            "an AWS request id: {line}"
        );
    }
    assert_eq!(
        logged, counted,
        "one audit record per mutating call counted"
    );
    assert!(listing.contains(&format!("{} mutating call(s).", lines.len())));
    assert!(listing.contains("CopySnapshot") && listing.contains("snap-"));
    assert!(
        !listing.contains("ferry-test") && !listing.contains("AKIA"),
        "no secrets, no credentials"
    );

    // Objects of the state are SSE-KMS under the plan's state key.
    w.rt.block_on(async {
        let s3 = w.emu.s3(STATE, SRC);
        let list = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("audit/runs/")
            .send()
            .await
            .unwrap();
        let key = list
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .find(|k| k.contains("/events/"))
            .expect("event objects")
            .to_string();
        let head = s3
            .head_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms")
        );
        assert_eq!(head.ssekms_key_id(), Some(state_key.as_str()));

        // Events are batched: fewer objects than events, and every event is in them, in order.
        let objects: Vec<String> = list
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter(|k| k.contains("/events/"))
            .map(str::to_string)
            .collect();
        let mut events = Vec::new();
        for key in &objects {
            let body = s3
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .unwrap();
            let bytes = body.body.collect().await.unwrap().into_bytes();
            for line in String::from_utf8_lossy(&bytes).lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                events.push(v["event"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(events.first().map(String::as_str), Some("run-started"));
        assert_eq!(events.last().map(String::as_str), Some("run-finished"));
        let intents = events.iter().filter(|e| *e == "step-intent").count();
        assert!(intents >= 2, "{events:?}");
        assert!(
            objects.len() < events.len(),
            "{} objects for {} events: batched",
            objects.len(),
            events.len()
        );
    });
}
