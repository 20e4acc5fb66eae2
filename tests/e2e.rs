//! End to end: the real `ferry` binary against the emulator, through the real AWS SDK.
//! Each test starts its own emulator (its counters are the test's evidence).

#[path = "e2e/cli.rs"]
mod cli;
mod common;
#[path = "e2e/cross_account.rs"]
mod cross_account;
#[path = "e2e/destroy.rs"]
mod destroy;
#[path = "e2e/errors.rs"]
mod errors;
#[path = "e2e/iam_policy.rs"]
mod iam_policy;
#[path = "e2e/least_privilege.rs"]
mod least_privilege;
#[path = "e2e/paging.rs"]
mod paging;
#[path = "e2e/rds.rs"]
mod rds;
#[path = "e2e/state.rs"]
mod state;
#[path = "e2e/terminal.rs"]
mod terminal;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use common::emulator::{Emulator, access_key_for};
use serde_json::{Value, json};

const PROD: &str = "111111111111";
const SRC: &str = "us-east-1";
const DST: &str = "eu-west-2";

/// A test's world: an emulator, a working directory, and the ferry binary pointed at both.
struct World {
    emu: Emulator,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new(config: serde_json::Value) -> World {
        World {
            emu: Emulator::start_with(config),
            dir: tempfile::tempdir().expect("temp dir"),
            rt: tokio::runtime::Runtime::new().expect("runtime"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("--endpoint-url")
            .arg(self.emu.endpoint())
            .args(args)
            .current_dir(self.dir.path())
            .env("AWS_ACCESS_KEY_ID", access_key_for(PROD))
            .env("AWS_SECRET_ACCESS_KEY", "ferry-test")
            .env("AWS_REGION", SRC)
            .env("FERRY_POLL_INTERVAL_MS", "200")
            // Above the fault tests' 700 ms visibility delay with room for a loaded machine,
            // where a call can take most of a second to reach the emulator.
            .env("FERRY_VISIBILITY_WAIT_MS", "2500")
            .env("FERRY_VERIFY_POLL_MS", "100")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .stdin(Stdio::null());
        c
    }

    fn ferry(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("ferry runs");
        eprintln!(
            "$ ferry {}\n--- exit {:?}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn write_plan(&self, text: &str) -> String {
        std::fs::write(self.path("plan.yaml"), text).expect("plan written");
        "plan.yaml".into()
    }

    /// A customer managed key with an alias in `region`; returns its ARN.
    fn key(&self, region: &str, alias: &str) -> String {
        self.rt.block_on(async {
            let kms = self.emu.kms(PROD, region);
            let k = kms.create_key().send().await.expect("CreateKey");
            let meta = k.key_metadata().expect("metadata");
            kms.create_alias()
                .alias_name(alias)
                .target_key_id(meta.key_id())
                .send()
                .await
                .expect("CreateAlias");
            meta.arn().expect("arn").to_string()
        })
    }

    /// `n` encrypted snapshots in prod/us-east-1; those with `tagged` get Backup=nightly.
    fn snapshots(&self, key_arn: &str, n: usize, tagged: impl Fn(usize) -> bool) -> Vec<String> {
        self.rt.block_on(async {
            let ec2 = self.emu.ec2(PROD, SRC);
            let mut ids = Vec::new();
            for i in 0..n {
                let vol = ec2
                    .create_volume()
                    .availability_zone(format!("{SRC}a"))
                    .size(1 + (i % 4) as i32)
                    .encrypted(true)
                    .kms_key_id(key_arn)
                    .send()
                    .await
                    .expect("CreateVolume");
                let mut req = ec2.create_snapshot().volume_id(vol.volume_id().unwrap());
                if tagged(i) {
                    req = req.tag_specifications(
                        TagSpecification::builder()
                            .resource_type(ResourceType::Snapshot)
                            .tags(Tag::builder().key("Backup").value("nightly").build())
                            .build(),
                    );
                }
                let snap = req.send().await.expect("CreateSnapshot");
                ids.push(snap.snapshot_id().unwrap().to_string());
            }
            ids
        })
    }

    /// Every snapshot in prod/eu-west-2 that ferry made: (id, source, key, state).
    fn copies(&self) -> Vec<(String, String, String, String)> {
        self.rt.block_on(async {
            let out = self
                .emu
                .ec2(PROD, DST)
                .describe_snapshots()
                .owner_ids("self")
                .filters(
                    Filter::builder()
                        .name("tag:ferry:plan")
                        .values("e2e")
                        .build(),
                )
                .send()
                .await
                .expect("DescribeSnapshots");
            out.snapshots()
                .iter()
                .map(|s| {
                    let tag = |k: &str| {
                        s.tags()
                            .iter()
                            .find(|t| t.key() == Some(k))
                            .and_then(|t| t.value())
                            .unwrap_or_default()
                            .to_string()
                    };
                    assert_eq!(
                        tag("ferry:migration"),
                        "nightly",
                        "copies carry ferry:migration"
                    );
                    assert_eq!(tag("Purpose"), "dr", "copies carry the migration's tags");
                    assert_eq!(tag("MigratedBy"), "ferry", "copies carry settings.tags");
                    assert_eq!(s.encrypted(), Some(true));
                    (
                        s.snapshot_id().unwrap().to_string(),
                        tag("ferry:source"),
                        s.kms_key_id().unwrap_or_default().to_string(),
                        s.state()
                            .map(|x| x.as_str().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
    }

    fn key_arn(&self, region: &str, alias: &str) -> Option<String> {
        self.rt.block_on(async {
            self.emu
                .kms(PROD, region)
                .describe_key()
                .key_id(alias)
                .send()
                .await
                .ok()
                .and_then(|k| k.key_metadata().and_then(|m| m.arn().map(str::to_string)))
        })
    }
}

fn plan(explicit: &[String]) -> String {
    let ids = explicit.join(", ");
    format!(
        r#"version: 1
name: e2e
accounts:
  prod:
    id: "{PROD}"
keys:
  dr-ebs:
    account: prod
    region: {DST}
    alias: alias/dr-ebs
    create: true
    rotation: true
  app-mrk:
    account: prod
    region: {SRC}
    alias: alias/app-mrk
    create: true
    multi_region: true
    replicas: [eu-west-1, ap-southeast-2]
    policy_statements:
      - Sid: AuditorsMayDescribe
        Effect: Allow
        Principal: {{ AWS: "arn:aws:iam::{PROD}:role/auditor" }}
        Action: ["kms:DescribeKey"]
        Resource: "*"
migrations:
  - id: nightly
    type: snapshot-copy
    source:
      account: prod
      region: {SRC}
      snapshots: [{ids}]
      tags: {{ Backup: nightly }}
    destination:
      region: {DST}
      key: dr-ebs
    tags: {{ Purpose: dr }}
settings:
  tags: {{ MigratedBy: ferry }}
"#
    )
}

/// A re-apply of `plan_file` says "No changes" and makes no mutating call in `accounts`.
fn assert_reapply_changes_nothing(w: &World, plan_file: &str, accounts: &[&str]) {
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", plan_file]);
    assert_eq!(again.status.code(), Some(0));
    let out = text(&again.stdout);
    assert!(out.contains("No changes"), "{out}");
    let c = w.emu.counters();
    for a in accounts {
        assert_eq!(c.mutating(a), 0, "mutating calls in {a}: {:#?}", c.requests);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each source has exactly one completed copy, encrypted with `key`.
fn assert_one_copy_each(w: &World, sources: &[String], key: &str) {
    let copies = w.copies();
    assert_eq!(
        copies.len(),
        sources.len(),
        "one copy per snapshot: {copies:#?}"
    );
    for s in sources {
        let mine: Vec<_> = copies.iter().filter(|c| &c.1 == s).collect();
        assert_eq!(mine.len(), 1, "exactly one copy of {s}");
        assert_eq!(
            mine[0].2, key,
            "the copy of {s} is encrypted with the plan's key"
        );
        assert_eq!(mine[0].3, "completed");
    }
}

#[test]
fn apply_copies_every_snapshot_once_and_a_second_apply_changes_nothing() {
    let w = World::new(json!({ "copy_seconds": 1.0 }));
    let src_key = w.key(SRC, "alias/source");
    // 30 snapshots: 25 tagged, plus 5 untagged named explicitly; 2 tagged ones named too.
    let all = w.snapshots(&src_key, 30, |i| i < 25);
    let mut explicit: Vec<String> = all[25..].to_vec();
    explicit.extend_from_slice(&all[..2]);
    let plan_file = w.write_plan(&plan(&explicit));

    // The dry run before anything exists: it says what it would create, and changes nothing.
    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        text(&dry.stdout).contains("34 to create, 2 to update"),
        "30 copies, 2 keys, 2 replicas; rotation and a policy"
    );
    assert_eq!(
        w.emu.counters().mutating(PROD),
        0,
        "ferry plan makes no mutating call"
    );

    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    // What the dry run and the apply called is what `ferry iam-policy` allows.
    iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    let dr = w
        .key_arn(DST, "alias/dr-ebs")
        .expect("the destination key was created");
    assert_one_copy_each(&w, &all, &dr);
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        30,
        "30 CopySnapshot calls, no more"
    );

    // Rotation is on; the multi-Region key has its replicas, same key id, alias there too.
    w.rt.block_on(async {
        let kms = w.emu.kms(PROD, DST);
        let rot = kms
            .get_key_rotation_status()
            .key_id(&dr)
            .send()
            .await
            .unwrap();
        assert!(rot.key_rotation_enabled());
    });
    let primary = w.key_arn(SRC, "alias/app-mrk").expect("MRK created");
    // The policy gained the plan's statement and kept the default one.
    let policy: serde_json::Value = w.rt.block_on(async {
        let p = w
            .emu
            .kms(PROD, SRC)
            .get_key_policy()
            .key_id(&primary)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        serde_json::from_str(p.policy().unwrap()).unwrap()
    });
    let sids: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Sid"].as_str())
        .collect();
    assert!(sids.contains(&"AuditorsMayDescribe"), "{policy}");
    assert!(
        policy["Statement"].as_array().unwrap().len() >= 2,
        "the key's own statements stay: {policy}"
    );
    let key_id = primary.rsplit('/').next().unwrap().to_string();
    assert!(key_id.starts_with("mrk-"));
    for region in ["eu-west-1", "ap-southeast-2"] {
        let replica = w
            .key_arn(region, "alias/app-mrk")
            .expect("replica with its alias");
        assert!(
            replica.ends_with(&key_id),
            "{replica} is a replica of {key_id}"
        );
    }

    // Again: zero mutating calls, and it says so.
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stdout).contains("No changes"));
    let c = w.emu.counters();
    assert_eq!(
        c.mutating(PROD),
        0,
        "a repeated apply makes no mutating call: {:#?}",
        c.requests
    );
    let plan_after = w.ferry(&["plan", &plan_file]);
    assert!(text(&plan_after.stdout).contains("No changes"));
    assert_one_copy_each(&w, &all, &dr);

    // The journal tells the story.
    let runs = w.ferry(&["runs"]);
    assert!(text(&runs.stdout).contains("succeeded"));
    let status = w.ferry(&["status"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(text(&status.stdout).contains("nightly/"));
    // The local state keeps an audit log too: the first run's 30 copies, one line each.
    let runs_text = text(&runs.stdout);
    let first = runs_text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("the first run's id")
        .to_string();
    let audit = w.ferry(&["status", &first, "--audit"]);
    assert_eq!(audit.status.code(), Some(0));
    assert_eq!(
        text(&audit.stdout).matches("EC2:CopySnapshot").count(),
        30,
        "one audit line per CopySnapshot"
    );
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

#[test]
fn killed_while_copies_are_pending_then_resumed_copies_each_snapshot_once() {
    // Copies stay pending long enough to kill ferry in the middle.
    let w = World::new(json!({ "copy_seconds": 4.0, "max_pending_snapshot_copies": 6 }));
    let src_key = w.key(SRC, "alias/source");
    let all = w.snapshots(&src_key, 12, |_| true);
    let plan_file = w.write_plan(&plan(&[]));

    let mut child = w
        .command(&["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts");
    // Killed once the journal holds a copy AWS accepted and ferry has not seen end: resume
    // must follow it, not submit it again.
    let submitted = || {
        let status = w.ferry(&["status", "--output", "json"]);
        let st: Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        let n = st["steps"].as_array().map_or(0, |s| {
            s.iter().filter(|s| s["state"] == "submitted").count()
        });
        (n, st)
    };
    wait_for(
        "a copy journaled as submitted",
        Duration::from_secs(60),
        || submitted().0 >= 1,
    );
    kill(&mut child);
    let before = w.emu.counters().copy_totals.snapshots;
    assert!(before < 12, "killed before all copies started ({before})");
    let (pending, st) = submitted();
    assert_eq!(st["result"], "unfinished");
    assert!(
        pending >= 1,
        "no copy was pending when ferry was killed: {st}"
    );
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    let dr = w.key_arn(DST, "alias/dr-ebs").unwrap();
    assert_one_copy_each(&w, &all, &dr);
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        12,
        "the emulator's copy counter equals the number of snapshots"
    );
}

#[test]
fn throttled_kms_and_ec2_still_complete() {
    let w = World::new(json!({
        "copy_seconds": 0.5,
        "throttle": true,
        // Far below AWS's defaults, so that ferry's own limiter (set to AWS's) is throttled.
        "quotas": {
            "ec2:CopySnapshot": [2, 2],
            "ec2:DescribeSnapshots": [3, 3],
            "kms:DescribeKey": [3, 3],
            "kms:CreateKey": [1, 1],
        }
    }));
    let src_key = w.key(SRC, "alias/source");
    let all = w.snapshots(&src_key, 10, |_| true);
    let plan_file = w.write_plan(&plan(&[]));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no step failed under throttling"
    );
    let c = w.emu.counters();
    assert!(
        c.totals.throttled > 0,
        "the emulator did throttle: {:?}",
        c.totals
    );
    let dr = w.key_arn(DST, "alias/dr-ebs").unwrap();
    assert_one_copy_each(&w, &all, &dr);
}

fn bad_input(w: &World, plan_text: &str, expect: &[&str]) {
    let plan_file = w.write_plan(plan_text);
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(2), "bad input exits 2");
    let err = text(&out.stderr);
    for e in expect {
        assert!(err.contains(e), "stderr names {e}:\n{err}");
    }
    assert!(
        err.contains("plan.yaml:"),
        "points at the plan line:\n{err}"
    );
    assert_eq!(w.emu.counters().mutating(PROD), 0, "nothing changed");
    assert!(!w.path(".ferry").exists(), "no run was started");
}

#[test]
fn problems_only_aws_can_see_are_refused_before_any_change() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/source");
    let snaps = w.snapshots(&src_key, 1, |_| false);
    let with = |dest_key: &str, snaps: &str| {
        format!(
            r#"version: 1
name: e2e
accounts:
  prod: {{ id: "{PROD}" }}
keys:
  made:
    account: prod
    region: {DST}
    alias: alias/made-by-ferry
    create: true
migrations:
  - id: nightly
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, snapshots: [{snaps}] }}
    destination: {{ region: {DST}, key: {dest_key} }}
"#
        )
    };
    // An unknown snapshot.
    bad_input(
        &w,
        &with("made", "snap-0123456789abcdef0"),
        &["snap-0123456789abcdef0", "does not exist"],
    );
    // A key that exists only in another region.
    bad_input(
        &w,
        &with("alias/source", &snaps[0]),
        &["alias/source", "does not exist in prod/eu-west-2"],
    );
    // A disabled key.
    let disabled = w.key(DST, "alias/disabled");
    w.rt.block_on(async {
        w.emu
            .kms(PROD, DST)
            .disable_key()
            .key_id(disabled.rsplit('/').next().unwrap())
            .send()
            .await
            .unwrap();
    });
    bad_input(
        &w,
        &with("alias/disabled", &snaps[0]),
        &["alias/disabled", "disabled"],
    );
    // An AWS managed key where a customer managed key is needed.
    w.rt.block_on(async {
        // The default EBS key comes into being with the first encrypted volume without a key.
        w.emu
            .ec2(PROD, DST)
            .create_volume()
            .availability_zone(format!("{DST}a"))
            .size(1)
            .encrypted(true)
            .send()
            .await
            .unwrap();
    });
    bad_input(
        &w,
        &with("alias/aws/ebs", &snaps[0]),
        &["alias/aws/ebs", "AWS managed key"],
    );
    // Without --yes and without a terminal to ask on: refuse, say how.
    let plan_file = w.write_plan(&with("made", &snaps[0]));
    let out = w.ferry(&["apply", &plan_file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pass --yes"));
    assert!(!w.path(".ferry").exists());
    // A declared account id that the credentials do not belong to.
    let wrong = with("made", &snaps[0]).replace(PROD, "999999999999");
    bad_input(&w, &wrong, &["999999999999", "111111111111"]);
}

#[path = "e2e/s3.rs"]
mod s3;
#[path = "e2e/s3_scale.rs"]
mod s3_scale;

/// DescribeSnapshots calls while copies are pending, for `n` snapshots copied at once.
fn describe_calls_for(n: usize) -> u64 {
    let w = World::new(json!({ "copy_seconds": 2.0, "max_pending_snapshot_copies": 100 }));
    let src_key = w.key(SRC, "alias/source");
    w.snapshots(&src_key, n, |_| true);
    let plan_file = w.write_plan(&plan(&[]));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.emu.counters().copy_totals.snapshots, n as u64);
    w.emu.counters().requests(PROD, "ec2", "DescribeSnapshots")
}

#[test]
fn pending_copies_are_polled_in_batches_not_one_call_each() {
    // The same copy time for 8 and for 40 snapshots: with one batched call per region per
    // tick the calls follow the ticks (a few more, as 40 submissions spread the finishes);
    // one call per pending copy per tick would make them grow at least 5-fold.
    let few = describe_calls_for(8);
    let many = describe_calls_for(40);
    assert!(
        many < 3 * few.max(4),
        "DescribeSnapshots calls grew with the number of copies: {few} for 8, {many} for 40"
    );
    assert!(many < 40, "fewer calls than copies: {many}");
}

/// The plan of `changed_destination_key…`: three snapshots to eu-west-2 under `key`.
fn key_plan(sources: &[String], key: &str) -> String {
    format!(
        r#"version: 1
name: e2e
accounts:
  prod:
    id: "{PROD}"
migrations:
  - id: nightly
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, snapshots: [{ids}] }}
    destination: {{ region: {DST}, key: {key} }}
    tags: {{ Purpose: dr }}
settings:
  tags: {{ MigratedBy: ferry }}
"#,
        ids = sources.join(", ")
    )
}

#[test]
fn changed_destination_key_makes_a_new_copy_of_each_snapshot_and_keeps_the_old_ones() {
    let w = World::new(json!({ "copy_seconds": 0.5 }));
    let src_key = w.key(SRC, "alias/source");
    let dr1 = w.key(DST, "alias/dr-1");
    let dr2 = w.key(DST, "alias/dr-2");
    let sources = w.snapshots(&src_key, 3, |_| false);
    let plan_file = w.write_plan(&key_plan(&sources, "alias/dr-1"));
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    assert_one_copy_each(&w, &sources, &dr1);
    let first: Vec<String> = w.copies().into_iter().map(|c| c.0).collect();

    // The key changes: every copy is to be replaced, and the plan names both keys.
    w.write_plan(&key_plan(&sources, "alias/dr-2"));
    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    let out = text(&dry.stdout);
    assert_eq!(out.matches("-/+ nightly/").count(), 3, "{out}");
    assert_eq!(
        out.matches("~ key: alias/dr-1 -> alias/dr-2").count(),
        3,
        "{out}"
    );
    assert!(
        out.contains("0 to create, 0 to update, 3 to replace"),
        "{out}"
    );
    assert_eq!(
        w.emu.counters().mutating(PROD),
        0,
        "ferry plan changes nothing"
    );

    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(applied.status.code(), Some(0));
    let shown = text(&applied.stdout);
    for id in &first {
        assert!(
            shown.contains(&format!("{id} kept (made by ferry under alias/dr-1)")),
            "the old copy {id} is listed as kept: {shown}"
        );
    }
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        3,
        "one new copy each"
    );
    let copies = w.copies();
    assert_eq!(copies.len(), 6, "the old copies are kept: {copies:#?}");
    for s in &sources {
        let keys: Vec<&str> = copies
            .iter()
            .filter(|c| &c.1 == s && c.3 == "completed")
            .map(|c| c.2.as_str())
            .collect();
        assert!(
            keys.contains(&dr1.as_str()) && keys.contains(&dr2.as_str()),
            "{s}: {keys:?}"
        );
        assert_eq!(keys.len(), 2, "one copy of {s} under each key");
    }

    // Again: nothing to do.
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("No changes"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        w.emu.counters().mutating(PROD),
        0,
        "{:#?}",
        w.emu.counters().requests
    );
}

#[test]
fn rotation_switched_off_by_hand_is_shown_and_switched_on_again() {
    let w = World::new(json!({ "copy_seconds": 0.2 }));
    let src_key = w.key(SRC, "alias/source");
    let sources = w.snapshots(&src_key, 1, |_| false);
    let plan_text = key_plan(&sources, "dr").replace(
        "migrations:",
        &format!(
            "keys:\n  dr: {{ account: prod, region: {DST}, alias: alias/dr, create: true, rotation: true }}\nmigrations:"
        ),
    );
    let plan_file = w.write_plan(&plan_text);
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    let dr = w.key_arn(DST, "alias/dr").expect("key made");
    let rotation = || {
        w.rt.block_on(async {
            w.emu
                .kms(PROD, DST)
                .get_key_rotation_status()
                .key_id(&dr)
                .send()
                .await
                .unwrap()
                .key_rotation_enabled()
        })
    };
    assert!(rotation());
    w.rt.block_on(async {
        w.emu
            .kms(PROD, DST)
            .disable_key_rotation()
            .key_id(&dr)
            .send()
            .await
            .unwrap();
    });
    assert!(!rotation());

    let dry = w.ferry(&["plan", &plan_file]);
    let out = text(&dry.stdout);
    assert!(out.contains("~ key.dr/key/rotation"), "{out}");
    assert!(out.contains("~ rotation of alias/dr: off -> on"), "{out}");
    assert!(out.contains("0 to create, 1 to update"), "{out}");

    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    assert!(rotation(), "apply switched rotation on again");
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

/// The seeds a fault test runs with: `defaults` in CI; `FERRY_SOAK_SEEDS=N` (scripts/soak)
/// runs N seeds instead.
fn soak_seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var("FERRY_SOAK_SEEDS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        Some(n) => (1..=n).map(|i| 1000 + i).collect(),
        None => defaults.to_vec(),
    }
}

#[test]
fn lost_answers_never_make_a_second_copy() {
    for seed in soak_seeds(&[11]) {
        snapshot_copy_under(json!({ "lost_response_rate": 0.4, "seed": seed }), None);
    }
}

#[test]
fn lost_answers_and_copies_that_show_late_still_make_one_copy_each() {
    // A copy shows 0.7 s after it was made; ferry looks for up to 2.5 s (World's
    // FERRY_VISIBILITY_WAIT_MS) before it copies again.
    for seed in soak_seeds(&[17]) {
        snapshot_copy_under(
            json!({ "lost_response_rate": 0.4, "seed": seed, "visibility_delay_ms": 700 }),
            None,
        );
    }
}

/// Every fault the emulator has, at once: 30% of mutating calls lose their answer, new copies
/// show 0.7 s late, 10% of all calls fail before taking effect, and every API is throttled at
/// 5% of AWS's quotas.
fn every_fault(seed: u64) -> serde_json::Value {
    json!({
        "lost_response_rate": 0.3,
        "visibility_delay_ms": 700,
        "fault_rate": 0.1,
        "throttle": true,
        "throttle_scale": 0.05,
        "seed": seed,
    })
}

/// The faults off again, for the checks that follow.
fn no_faults() -> serde_json::Value {
    json!({ "lost_response_rate": 0.0, "visibility_delay_ms": 0, "fault_rate": 0.0, "throttle": false })
}

/// `ferry apply`, then `ferry resume` until it succeeds (at most `resumes` times); optionally
/// SIGKILLed once the emulator has counted `kill_at` mutating calls.
fn apply_until_done(w: &World, plan_file: &str, kill_at: Option<u64>, resumes: usize) -> Output {
    if let Some(n) = kill_at {
        let mut child = w
            .command(&["apply", "--yes", plan_file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ferry starts");
        let start = Instant::now();
        let mut ended_first = false;
        while w.emu.counters().totals.mutating < n && start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().ok().flatten().is_some() {
                ended_first = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(&mut child);
        // The kill landed mid-run, or this test would prove nothing about resuming.
        assert!(
            !ended_first,
            "the run ended before its {n}th mutating call: pick an earlier kill point"
        );
        let status = w.ferry(&["status", "--output", "json"]);
        let st: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
        assert_eq!(st["result"], "unfinished", "killed mid-run: {st}");
    }
    let mut out = if kill_at.is_some() {
        w.ferry(&["resume"])
    } else {
        w.ferry(&["apply", "--yes", plan_file])
    };
    for _ in 0..resumes {
        if out.status.code() == Some(0) {
            break;
        }
        out = w.ferry(&["resume"]);
    }
    out
}

#[test]
fn fault_matrix_snapshot_copy_in_one_account() {
    for seed in soak_seeds(&[3]) {
        snapshot_copy_under(every_fault(seed), None);
    }
}

#[test]
fn killed_at_random_points_under_faults_snapshot_copy_still_copies_once() {
    // One random kill point per seed (scripts/soak runs many): after the k-th mutating call.
    for seed in soak_seeds(&[21]) {
        snapshot_copy_under(every_fault(seed), Some(1 + seed % 12));
    }
}

/// Ten snapshots copied under `faults` (and a kill): exactly one copy each, none resent, and
/// a re-apply changes nothing.
fn snapshot_copy_under(faults: serde_json::Value, kill_at: Option<u64>) {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let src_key = w.key(SRC, "alias/source");
    let dr = w.key(DST, "alias/dr");
    let sources = w.snapshots(&src_key, 10, |_| false);
    let plan_file = w.write_plan(&key_plan(&sources, "alias/dr"));
    // From here on mutating calls take effect and lose their answer (and more).
    w.emu.reset_counters();
    w.emu.configure(faults.clone());
    let out = apply_until_done(&w, &plan_file, kill_at, 6);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{faults}, kill at {kill_at:?}: done, with resumes if need be"
    );
    let c = w.emu.counters();
    // With lost answers alone (10+ mutating calls at 40%) some surely are; under throttling
    // and faults too, few calls get that far, and none may be lost in a run.
    if faults["throttle"] != json!(true) {
        assert!(c.totals.lost > 0, "answers were lost: {:#?}", c.requests);
    }
    assert_eq!(
        c.copy_totals.snapshots,
        sources.len() as u64,
        "{faults}: one CopySnapshot that made a copy per source, none resent"
    );
    w.emu.configure(no_faults());
    assert_one_copy_each(&w, &sources, &dr);
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn an_extra_copy_made_by_ferry_is_shown_and_removed() {
    // The extra copy is made as an older ferry did, without a presigned URL.
    let w = World::new(json!({ "copy_seconds": 0.2, "require_presigned_url": false }));
    let src_key = w.key(SRC, "alias/source");
    let dr = w.key(DST, "alias/dr");
    let sources = w.snapshots(&src_key, 2, |_| false);
    let plan_file = w.write_plan(&key_plan(&sources, "alias/dr"));
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    // A second copy of the first source with ferry's tags, as an older ferry made when it
    // resent a copy whose answer was lost.
    let first = w.copies().into_iter().find(|c| c.1 == sources[0]).unwrap();
    let extra = w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, DST);
        let tags = ec2
            .describe_snapshots()
            .snapshot_ids(&first.0)
            .send()
            .await
            .unwrap()
            .snapshots()[0]
            .tags()
            .to_vec();
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Snapshot);
        for t in tags {
            spec = spec.tags(t);
        }
        ec2.copy_snapshot()
            .source_snapshot_id(&sources[0])
            .source_region(SRC)
            .encrypted(true)
            .kms_key_id(&dr)
            .tag_specifications(spec.build())
            .send()
            .await
            .unwrap()
            .snapshot_id()
            .unwrap()
            .to_string()
    });
    w.rt.block_on(async { tokio::time::sleep(Duration::from_millis(600)).await });
    let dry = w.ferry(&["plan", &plan_file]);
    let out = text(&dry.stdout);
    let (keep, gone) = if first.0 < extra {
        (&first.0, &extra)
    } else {
        (&extra, &first.0)
    };
    assert!(
        out.contains(&format!(
            "- {gone} (an extra copy made by ferry, removed; {keep} is kept)"
        )),
        "{out}"
    );
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    assert_one_copy_each(&w, &sources, &dr);
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn a_copy_aws_fails_is_reported_removed_and_made_once_more_then_fails_the_run() {
    let w = World::new(json!({ "copy_seconds": 0.3, "fail_next_copies": 1 }));
    let src_key = w.key(SRC, "alias/source");
    let dr = w.key(DST, "alias/dr");
    let sources = w.snapshots(&src_key, 3, |_| false);
    let plan_file = w.write_plan(&key_plan(&sources, "alias/dr"));
    // Every copy carries its presigned URL (the emulator checks it, as AWS does); the first
    // one fails anyway, asynchronously: it is shown, removed and made again.
    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    let all = format!("{}{}", text(&applied.stdout), text(&applied.stderr));
    assert_eq!(applied.status.code(), Some(0), "{all}");
    assert!(
        all.contains("(fail_next_copies); removing it and copying once more"),
        "the failure is reported with its StateMessage: {all}"
    );
    assert_one_copy_each(&w, &sources, &dr);
    assert_eq!(w.emu.counters().requests(PROD, "ec2", "CopySnapshot"), 4);
    assert_eq!(w.emu.counters().requests(PROD, "ec2", "DeleteSnapshot"), 1);

    // A copy that fails twice fails the run, with AWS's message; a resume makes it.
    let more = w.snapshots(&src_key, 1, |_| false);
    let mut all_sources = sources.clone();
    all_sources.extend(more);
    let plan_file = w.write_plan(&key_plan(&all_sources, "alias/dr"));
    w.emu.configure(json!({ "fail_next_copies": 2 }));
    let failed = w.ferry(&["apply", "--yes", &plan_file]);
    let err = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed: ferry emulator: this copy failed (fail_next_copies)"),
        "{err}"
    );
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    assert_one_copy_each(&w, &all_sources, &dr);
}

/// `rounds` nightly snapshots of each of `volumes` encrypted volumes in prod/us-east-1 (a
/// second apart, so their start times order them): ids by volume, oldest first.
fn nightly_rounds(
    w: &World,
    key: &str,
    volumes: usize,
    rounds: usize,
) -> Vec<(String, Vec<String>)> {
    let vols: Vec<String> = w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        let mut v = Vec::new();
        for _ in 0..volumes {
            let vol = ec2
                .create_volume()
                .availability_zone(format!("{SRC}a"))
                .size(1)
                .encrypted(true)
                .kms_key_id(key)
                .send()
                .await
                .expect("CreateVolume");
            v.push(vol.volume_id().unwrap().to_string());
        }
        v
    });
    let mut out: Vec<(String, Vec<String>)> =
        vols.iter().map(|v| (v.clone(), Vec::new())).collect();
    for _ in 0..rounds {
        nightly_round(w, &mut out);
    }
    out
}

/// One more nightly snapshot of each volume, a second after the last.
fn nightly_round(w: &World, volumes: &mut [(String, Vec<String>)]) {
    std::thread::sleep(Duration::from_millis(1100));
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        for (vol, snaps) in volumes.iter_mut() {
            snaps.push(nightly_snapshot(&ec2, vol).await);
        }
    });
}

/// The sources of ferry's copies, per volume, as sorted lists.
fn copied_per_volume(w: &World, volumes: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let copies = w.copies();
    volumes
        .iter()
        .map(|(_, snaps)| {
            let mut c: Vec<String> = copies
                .iter()
                .filter(|c| snaps.contains(&c.1))
                .map(|c| c.1.clone())
                .collect();
            c.sort();
            c
        })
        .collect()
}

fn newest(snaps: &[String], n: usize) -> Vec<String> {
    let mut v = snaps[snaps.len() - n..].to_vec();
    v.sort();
    v
}

#[test]
fn retention_keeps_the_newest_copies_of_each_volume_and_deletes_only_ferrys() {
    let w = World::new(json!({ "copy_seconds": 0.2 }));
    let src_key = w.key(SRC, "alias/source");
    let dr = w.key(DST, "alias/dr");
    let mut volumes = nightly_rounds(&w, &src_key, 4, 5);
    // A copy someone made by hand in the destination region, of a snapshot ferry would prune.
    let foreign = w.rt.block_on(async {
        w.emu
            .ec2(PROD, DST)
            .copy_snapshot()
            .source_snapshot_id(&volumes[0].1[0])
            .source_region(SRC)
            .encrypted(true)
            .kms_key_id(&dr)
            .send()
            .await
            .expect("CopySnapshot")
            .snapshot_id()
            .unwrap()
            .to_string()
    });
    let plan_file = w.write_plan(&format!(
        r#"version: 1
name: e2e
accounts:
  prod: {{ id: "{PROD}" }}
migrations:
  - id: nightly
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, tags: {{ Backup: nightly }} }}
    destination: {{ region: {DST}, key: alias/dr }}
    retention: {{ keep_last: 2 }}
    tags: {{ Purpose: dr }}
settings:
  tags: {{ MigratedBy: ferry }}
"#
    ));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let kept = copied_per_volume(&w, &volumes);
    for ((_, snaps), copies) in volumes.iter().zip(&kept) {
        assert_eq!(copies, &newest(snaps, 2), "the newest 2 of each volume");
    }
    assert_eq!(
        w.emu.counters().copy_totals.snapshots,
        1 + 8,
        "the hand-made copy, and only the 8 copies retention keeps"
    );
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);

    // A new night: one copy made and one deleted per volume.
    nightly_round(&w, &mut volumes);
    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert!(
        text(&dry.stdout).contains("beyond the retention, keep_last 2"),
        "the plan shows what retention deletes"
    );
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let c = w.emu.counters();
    assert_eq!(c.copy_totals.snapshots, 4, "one new copy per volume");
    let deleted: u64 = c
        .requests
        .iter()
        .filter(|r| r.action == "DeleteSnapshot")
        .map(|r| r.count)
        .sum();
    assert_eq!(deleted, 4, "one copy deleted per volume");
    let kept = copied_per_volume(&w, &volumes);
    for ((_, snaps), copies) in volumes.iter().zip(&kept) {
        assert_eq!(
            copies,
            &newest(snaps, 2),
            "still the newest 2 of each volume"
        );
    }
    let still = w.rt.block_on(async {
        w.emu
            .ec2(PROD, DST)
            .describe_snapshots()
            .snapshot_ids(&foreign)
            .send()
            .await
            .map(|o| o.snapshots().len())
            .unwrap_or(0)
    });
    assert_eq!(still, 1, "the copy made outside ferry is untouched");
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);

    // The newest snapshot of a volume deleted at the source: its copy still counts in its
    // lineage (by the copy's tags), so nothing older is copied again and nothing deleted.
    let newest_of_first = volumes[0].1.last().unwrap().clone();
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .delete_snapshot()
            .snapshot_id(&newest_of_first)
            .send()
            .await
            .expect("DeleteSnapshot");
    });
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
    let kept = copied_per_volume(&w, &volumes);
    assert_eq!(
        kept[0],
        newest(&volumes[0].1, 2),
        "its copies stay as they were"
    );
}

/// A snapshot of `volume` tagged Backup=nightly; its id.
async fn nightly_snapshot(ec2: &aws_sdk_ec2::Client, volume: &str) -> String {
    ec2.create_snapshot()
        .volume_id(volume)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(Tag::builder().key("Backup").value("nightly").build())
                .build(),
        )
        .send()
        .await
        .expect("CreateSnapshot")
        .snapshot_id()
        .unwrap()
        .to_string()
}

/// Volumes with several snapshots each, made a round at a time a second apart (moto keeps
/// start times to the second): `counts[v]` snapshots of volume v, tagged Backup=nightly.
/// Returns each volume's id and its snapshots, oldest first.
fn volume_histories(w: &World, key_arn: &str, counts: &[usize]) -> Vec<(String, Vec<String>)> {
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        let mut out = Vec::new();
        for (v, _) in counts.iter().enumerate() {
            let vol = ec2
                .create_volume()
                .availability_zone(format!("{SRC}a"))
                .size(1 + v as i32)
                .encrypted(true)
                .kms_key_id(key_arn)
                .send()
                .await
                .expect("CreateVolume");
            out.push((vol.volume_id().unwrap().to_string(), Vec::new()));
        }
        for round in 0..counts.iter().copied().max().unwrap_or(0) {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            for (v, n) in counts.iter().enumerate() {
                if round >= *n {
                    continue;
                }
                let snap = nightly_snapshot(&ec2, &out[v].0).await;
                out[v].1.push(snap);
            }
        }
        out
    })
}

/// Per volume: (full copies, incremental copies, incremental bytes) into prod/eu-west-2
/// under `key`, as the emulator judged them.
fn judged(w: &World, key: &str, volumes: &[(String, Vec<String>)]) -> Vec<(u64, u64, u64)> {
    let copies = w.emu.counters().snapshot_copies;
    volumes
        .iter()
        .map(|(vol, _)| {
            let mine = copies.iter().filter(|c| {
                c.account == PROD
                    && c.region == DST
                    && c.volume.as_deref() == Some(vol)
                    && c.key.as_deref() == Some(key)
            });
            mine.fold((0, 0, 0), |(f, i, b), c| {
                if c.incremental {
                    (f, i + 1, b + c.bytes)
                } else {
                    (f + 1, i, b)
                }
            })
        })
        .collect()
}

#[test]
fn each_volumes_snapshots_are_copied_oldest_first_so_every_copy_after_the_first_is_incremental() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let src_key = w.key(SRC, "alias/source");
    let counts = [4, 3, 1];
    let volumes = volume_histories(&w, &src_key, &counts);
    // What each later snapshot changed: distinct, so the bytes say which base was used.
    let mut changes = serde_json::Map::new();
    let mut expected_changed = Vec::new();
    for (v, (_, snaps)) in volumes.iter().enumerate() {
        let mut sum = 0;
        for (k, s) in snaps.iter().enumerate().skip(1) {
            let bytes = 1_000_000 * (10 * v as u64 + k as u64);
            changes.insert(s.clone(), json!(bytes));
            sum += bytes;
        }
        expected_changed.push(sum);
    }
    let (code, body) = w.emu.control(
        "POST",
        "/_ferry/snapshots/changed",
        Some(&json!({ "account": PROD, "region": SRC, "changes": changes }).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let plan_file = w.write_plan(&plan(&[]));

    // The plan expects one full copy per volume and increments for the rest.
    let out = w.ferry(&["plan", "--output", "json", &plan_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let m = doc["migrations"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == "nightly"))
        .unwrap_or_else(|| panic!("no estimate for nightly: {doc}"));
    let e = &m["estimate"];
    assert_eq!(e["copies_full"], 3, "{e}");
    assert_eq!(e["copies_incremental"], 5, "{e}");
    // Full copies move their volumes: 1, 2 and 3 GiB.
    assert_eq!(e["bytes_full"], 6u64 << 30, "{e}");
    assert!(e["bytes_incremental"].as_u64().unwrap() > 0, "{e}");
    assert!(e["usd"]["transfer"].as_f64().unwrap() > 0.0, "{e}");

    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dr = w.key_arn(DST, "alias/dr-ebs").unwrap();
    let all: Vec<String> = volumes.iter().flat_map(|(_, s)| s.clone()).collect();
    assert_one_copy_each(&w, &all, &dr);
    let got = judged(&w, &dr, &volumes);
    let want: Vec<(u64, u64, u64)> = counts
        .iter()
        .zip(&expected_changed)
        .map(|(n, b)| (1, *n as u64 - 1, *b))
        .collect();
    assert_eq!(
        got, want,
        "per volume: one full copy, then each snapshot's changes only"
    );

    // Another destination key: the first copy of each volume under it is full again, the
    // rest are incremental on it.
    let rekeyed = plan(&[]).replace(
        "    alias: alias/dr-ebs
",
        "    alias: alias/dr-ebs-2
",
    );
    assert_ne!(rekeyed, plan(&[]));
    let plan_file = w.write_plan(&rekeyed);
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dr2 = w.key_arn(DST, "alias/dr-ebs-2").unwrap();
    let got = judged(&w, &dr2, &volumes);
    assert_eq!(
        got, want,
        "under the new key: one full copy per volume again, then increments"
    );
}

#[test]
fn completion_duration_makes_time_based_copies_and_a_bad_one_is_refused_at_its_line() {
    let w = World::new(json!({ "copy_seconds": 0.2 }));
    let src_key = w.key(SRC, "alias/source");
    let all = w.snapshots(&src_key, 3, |_| true);
    let timed = plan(&[]).replace(
        "      key: dr-ebs\n",
        "      key: dr-ebs\n      completion_duration: 2h\n",
    );
    assert!(timed.contains("completion_duration"));
    let plan_file = w.write_plan(&timed);
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let dr = w.key_arn(DST, "alias/dr-ebs").unwrap();
    assert_one_copy_each(&w, &all, &dr);
    let (account, region) = (PROD, DST);
    let counted = w
        .emu
        .counters()
        .copies
        .iter()
        .find(|c| c.account == account && c.region == region)
        .map(|c| (c.snapshots, c.time_based_snapshots))
        .unwrap_or_default();
    assert_eq!(counted, (3, 3), "every CopySnapshot was time-based");

    // 20 minutes is not a step of 15: refused before any call, pointing at the value.
    let bad = w.write_plan(&plan(&[]).replace(
        "      key: dr-ebs\n",
        "      key: dr-ebs\n      completion_duration: 20m\n",
    ));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("steps of 15 minutes"), "{err}");
    assert!(err.contains("plan.yaml:"), "points at the line: {err}");
    assert_eq!(w.emu.counters().totals.requests, 0, "no AWS call");
}
