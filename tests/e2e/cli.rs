//! The command line at Terraform's level (issue 19): saved plans (`plan --out`, `apply FILE`,
//! `show FILE`), targeting (`--migration`), and the JSON event stream of `apply --output json`.

use serde_json::{Value, json};

use super::{DST, PROD, SRC, World, assert_one_copy_each, plan, text};

fn requests(w: &World, action: &str) -> u64 {
    let (service, action) = action.split_once(':').expect("service:Action");
    w.emu.counters().requests(PROD, service, action)
}

/// The key `alias` in prod/us-east-1's policy, with `edit` applied to it by hand (as a person
/// in the console would).
fn edit_key_policy(w: &World, alias: &str, edit: impl FnOnce(&mut Value)) {
    w.rt.block_on(async {
        let kms = w.emu.kms(PROD, SRC);
        let key = kms
            .describe_key()
            .key_id(alias)
            .send()
            .await
            .expect("DescribeKey")
            .key_metadata()
            .expect("metadata")
            .key_id()
            .to_string();
        let policy = kms
            .get_key_policy()
            .key_id(&key)
            .policy_name("default")
            .send()
            .await
            .expect("GetKeyPolicy");
        let mut p: Value = serde_json::from_str(policy.policy().expect("a policy")).unwrap();
        edit(&mut p);
        kms.put_key_policy()
            .key_id(&key)
            .policy_name("default")
            .policy(p.to_string())
            .send()
            .await
            .expect("PutKeyPolicy");
    });
}

#[test]
fn a_saved_plan_makes_exactly_its_changes_once_and_is_refused_once_anything_moved() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let src_key = w.key(SRC, "alias/source");
    let planned = w.snapshots(&src_key, 3, |_| true);
    let plan_file = w.write_plan(&plan(&[]));

    // The reviewed plan: saved, and shown again as it was reviewed.
    let saved = w.ferry(&["plan", &plan_file, "--out", "reviewed.json"]);
    assert_eq!(saved.status.code(), Some(0));
    let reviewed = text(&saved.stdout);
    assert!(reviewed.contains("7 to create, 2 to update"), "{reviewed}");
    let shown = w.ferry(&["show", "reviewed.json"]);
    assert_eq!(shown.status.code(), Some(0));
    assert!(
        text(&shown.stdout).contains(&reviewed),
        "show prints the plan as reviewed"
    );
    let shown = w.ferry(&["show", "reviewed.json", "--output", "json"]);
    let doc: Value = serde_json::from_slice(&shown.stdout).expect("show --output json");
    assert_eq!(doc["steps"].as_array().map(Vec::len), Some(9), "{doc:#}");
    let file = std::fs::read_to_string(w.path("reviewed.json")).unwrap();
    assert!(
        !file.contains("ferry-test") && !file.contains("AKIA"),
        "no credential in a saved plan"
    );

    // A snapshot tagged after the review is not part of it.
    let late = w.snapshots(&src_key, 1, |_| true);

    // The saved plan is the approval: no --yes, no prompt (stdin is not a terminal).
    w.emu.reset_counters();
    let applied = w.ferry(&["apply", "reviewed.json"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));
    let dr_key = w.key_arn(DST, "alias/dr-ebs").expect("the plan's key");
    assert_one_copy_each(&w, &planned, &dr_key);
    assert_eq!(
        requests(&w, "ec2:CopySnapshot"),
        3,
        "the planned copies only"
    );
    assert_eq!(requests(&w, "kms:CreateKey"), 2);
    assert_eq!(requests(&w, "kms:ReplicateKey"), 2);

    // The plan file still wants the late snapshot: only a new review copies it.
    let live = w.ferry(&["plan", &plan_file]);
    assert!(
        text(&live.stdout).contains("1 to create, 0 to update"),
        "the late snapshot {late:?} is still to copy"
    );

    // A spent plan is refused, and changes nothing.
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "reviewed.json"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("applied it already"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(w.emu.counters().mutating(PROD), 0);

    // A key policy edited by hand after the review: ferry would now put its statement back,
    // which nobody reviewed. Refused, naming the step.
    let second = w.ferry(&["plan", &plan_file, "--out", "second.json"]);
    assert_eq!(second.status.code(), Some(0));
    edit_key_policy(&w, "alias/app-mrk", |p| {
        for s in p["Statement"].as_array_mut().unwrap() {
            if s["Sid"] == "AuditorsMayDescribe" {
                s["Action"] = json!(["kms:DescribeKey", "kms:GetKeyPolicy"]);
            }
        }
    });
    w.emu.reset_counters();
    let refused = w.ferry(&["apply", "second.json"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.contains("key.app-mrk/policy/merge: saved as `no-change`, now `update`"),
        "{err}"
    );
    assert!(err.contains("1 step(s) moved"), "{err}");
    assert_eq!(w.emu.counters().mutating(PROD), 0, "nothing changed");

    // Reviewed now, the policy step is an update (ferry's statement back as it was). A
    // statement added by hand after that review leaves ferry's statement as it is, yet the
    // policy that update would write is not the one reviewed: refused too.
    let third = w.ferry(&["plan", &plan_file, "--out", "third.json"]);
    assert_eq!(third.status.code(), Some(0));
    edit_key_policy(&w, "alias/app-mrk", |p| {
        p["Statement"].as_array_mut().unwrap().push(json!({
            "Sid": "HandAdded", "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{PROD}:role/reader") },
            "Action": "kms:DescribeKey", "Resource": "*"
        }));
    });
    w.emu.reset_counters();
    let refused = w.ferry(&["apply", "third.json"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.contains("key.app-mrk/policy/merge: still `update`, but its live state"),
        "{err}"
    );
    assert_eq!(w.emu.counters().mutating(PROD), 0, "nothing changed");

    // The plan file edited after the review: refused before any AWS call that changes things.
    let fourth = w.ferry(&["plan", &plan_file, "--out", "fourth.json"]);
    assert_eq!(fourth.status.code(), Some(0));
    let mut changed = std::fs::read_to_string(w.path(&plan_file)).unwrap();
    changed.push_str("# reviewed by nobody\n");
    std::fs::write(w.path(&plan_file), changed).unwrap();
    w.emu.reset_counters();
    let stale = w.ferry(&["apply", "fourth.json"]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(
        text(&stale.stderr).contains("changed since the plan was saved"),
        "{}",
        text(&stale.stderr)
    );
    assert_eq!(w.emu.counters().mutating(PROD), 0);
    assert_eq!(
        w.copies().len(),
        3,
        "the late snapshot was never copied without a review"
    );
}

/// Mutating calls `account` made, as `service:Action` (sorted, once each).
fn mutating_actions(w: &World, account: &str) -> Vec<String> {
    let mut v: Vec<String> = w
        .emu
        .counters()
        .requests
        .iter()
        .filter(|r| r.account == account && r.mutating && r.count > 0)
        .map(|r| format!("{}:{}", r.service, r.action))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn one_migration_of_the_demo_is_applied_with_the_keys_it_uses_and_nothing_else() {
    let w = World::new(json!({}));
    super::destroy::seed(&w);
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/plans/demo.yaml"),
        w.path("demo.yaml"),
    )
    .expect("the demo plan");
    const BACKUP: &str = "222222222222";

    // An id that is not in the plan is bad input, with the one it is close to.
    let typo = w.ferry(&["plan", "demo.yaml", "--migration", "nightly-snapshot"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(text(&typo.stderr).contains("did you mean `nightly-snapshots`?"));

    w.emu.reset_counters();
    let out = w.ferry(&[
        "apply",
        "--yes",
        "--migration",
        "nightly-snapshots",
        "demo.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Like Terraform's -target, this is for exceptions"),
        "the warning"
    );
    assert_eq!(
        requests(&w, "ec2:CopySnapshot"),
        5,
        "the 5 nightly snapshots"
    );
    assert_eq!(requests(&w, "kms:CreateKey"), 1, "demo-dr only");
    // The key demo-dr (created, rotation on) and the copies; no AMI, bucket, role or RDS
    // call, and nothing in the backup account.
    for a in mutating_actions(&w, PROD) {
        assert!(
            [
                "kms:CreateKey",
                "kms:CreateAlias",
                "kms:EnableKeyRotation",
                "ec2:CopySnapshot",
                "ec2:CreateTags",
            ]
            .contains(&a.as_str()),
            "{a} is not the targeted migration's"
        );
    }
    assert_eq!(mutating_actions(&w, BACKUP), Vec::<String>::new());

    // The rest of the plan is still to do; the targeted migration is done.
    let rest = w.ferry(&["plan", "demo.yaml"]);
    let rest = text(&rest.stdout);
    assert!(rest.contains("+ app-ami/"), "{rest}");
    assert!(rest.contains("+ app-logs/replication/put"), "{rest}");
    assert!(
        !rest.contains("+ nightly-snapshots/") && rest.contains("= nightly-snapshots/"),
        "{rest}"
    );
}

/// Each line of `lines` against docs/events.schema.json (Python's jsonschema, in the
/// emulator's virtualenv): the problems, one per line, empty when all are valid.
fn schema_problems(lines: &str) -> String {
    let check = r#"
import json, sys
from jsonschema import Draft202012Validator
v = Draft202012Validator(json.load(open(sys.argv[1])))
for n, line in enumerate(sys.stdin, 1):
    for e in v.iter_errors(json.loads(line)):
        print(f"line {n}: {e.message}")
"#;
    let mut child =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .arg("-c")
            .arg(check)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/docs/events.schema.json"
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the schema check ran");
    text(&out.stdout)
}

#[test]
fn apply_output_json_is_one_event_per_line_each_valid_against_the_documented_schema() {
    let w = World::new(json!({ "copy_seconds": 1.0 }));
    let src_key = w.key(SRC, "alias/source");
    let sources = w.snapshots(&src_key, 2, |_| true);
    let plan_file = w.write_plan(&plan(&[]));

    // A prompt cannot share stdout with the events.
    let asks = w.ferry(&["apply", "--output", "json", &plan_file]);
    assert_eq!(asks.status.code(), Some(2));

    let out = w.ferry(&["apply", "--yes", "--output", "json", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    // The schema is strict (no field it does not name): a wrong shape would show here.
    assert_eq!(schema_problems(&stdout), "");
    // A broken line is caught: the check can fail.
    assert!(!schema_problems("{\"type\":\"step-done\",\"step\":1}\n").is_empty());

    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "plan");
    assert_eq!(types[1], "run-started");
    assert_eq!(*types.last().unwrap(), "summary");
    let summary = events.last().unwrap();
    assert_eq!(summary["result"], "succeeded");
    let steps = events[1]["steps"].as_u64().unwrap();
    assert_eq!(summary["done"].as_u64(), Some(steps));
    assert_eq!(
        types.iter().filter(|t| **t == "step-done").count() as u64,
        steps,
        "a step-done per step"
    );
    // Each copy's submission names the copy that exists now.
    let copies: Vec<String> = w.copies().into_iter().map(|c| c.0).collect();
    let submitted: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "step-submitted")
        .map(|e| e["operation_id"].as_str().unwrap())
        .collect();
    assert_eq!(submitted.len(), sources.len());
    for id in &submitted {
        assert!(copies.iter().any(|c| c == id), "{id} in {copies:?}");
    }
    assert!(
        types.contains(&"step-progress"),
        "copy progress is reported"
    );

    // `ferry status --output json`: the same run, every step done.
    let status = w.ferry(&["status", "--output", "json"]);
    assert_eq!(status.status.code(), Some(0));
    let st: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(st["result"], "succeeded");
    assert_eq!(st["run_id"], summary["run_id"]);
    let states: Vec<&str> = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len() as u64, steps);
    assert!(states.iter().all(|s| *s == "done"), "{states:?}");
}
