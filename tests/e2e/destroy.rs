//! `ferry destroy` after the demo plan: what ferry made is gone (keys scheduled for deletion
//! with `--include-keys`), what others made is untouched, and a destroy killed midway
//! completes on resume.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, LaunchPermission, LaunchPermissionModifications, SnapshotAttributeName,
};
use aws_sdk_s3::types::{
    Destination, ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter,
    ReplicationRuleStatus,
};
use serde_json::{Value, json};

use super::{PROD, SRC, World, kill, text, wait_for};

const BACKUP: &str = "222222222222";
const DST: &str = "eu-west-2";
const OTHER: &str = "333333333333";

/// The demo's world (tests/emulator/seed_demo.py), as `scripts/demo` seeds it.
pub(super) fn seed(w: &World) -> Value {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/emulator/seed_demo.py"
        ))
        .arg("--endpoint")
        .arg(w.emu.endpoint())
        .output()
        .expect("seed_demo.py runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the seed's JSON")
}

/// Snapshots in (account, region) carrying the demo plan's ferry tag.
fn ferry_snapshots(w: &World, account: &str, region: &str) -> Vec<String> {
    w.rt.block_on(async {
        w.emu
            .ec2(account, region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name("tag:ferry:plan")
                    .values("demo")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeSnapshots")
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect()
    })
}

fn ferry_images(w: &World, account: &str, region: &str) -> Vec<String> {
    w.rt.block_on(async {
        w.emu
            .ec2(account, region)
            .describe_images()
            .owners("self")
            .filters(
                Filter::builder()
                    .name("tag:ferry:plan")
                    .values("demo")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages")
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect()
    })
}

fn db_snapshots(w: &World, account: &str, region: &str) -> Vec<String> {
    w.rt.block_on(async {
        w.emu
            .rds(account, region)
            .describe_db_snapshots()
            .snapshot_type("manual")
            .send()
            .await
            .expect("DescribeDBSnapshots")
            .db_snapshots()
            .iter()
            .filter_map(|s| s.db_snapshot_identifier().map(str::to_string))
            .collect()
    })
}

/// (key id, state) behind an alias, or `None` when the alias is gone.
fn aliased(w: &World, account: &str, region: &str, alias: &str) -> Option<String> {
    w.rt.block_on(async {
        let kms = w.emu.kms(account, region);
        let aliases = kms.list_aliases().send().await.expect("ListAliases");
        aliases
            .aliases()
            .iter()
            .find(|a| a.alias_name() == Some(alias))
            .and_then(|a| a.target_key_id().map(str::to_string))
    })
}

fn key_state(w: &World, account: &str, region: &str, key_id: &str) -> String {
    w.rt.block_on(async {
        w.emu
            .kms(account, region)
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .expect("DescribeKey")
            .key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default()
    })
}

fn policy_sids(w: &World, account: &str, region: &str, key_id: &str) -> Vec<String> {
    w.rt.block_on(async {
        let p = w
            .emu
            .kms(account, region)
            .get_key_policy()
            .key_id(key_id)
            .policy_name("default")
            .send()
            .await
            .expect("GetKeyPolicy");
        let doc: Value = serde_json::from_str(p.policy().unwrap_or("{}")).expect("JSON");
        doc["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["Sid"].as_str().map(str::to_string))
            .collect()
    })
}

fn add_statement(w: &World, account: &str, region: &str, key_id: &str, sid: &str) {
    w.rt.block_on(async {
        let kms = w.emu.kms(account, region);
        let p = kms
            .get_key_policy()
            .key_id(key_id)
            .policy_name("default")
            .send()
            .await
            .expect("GetKeyPolicy");
        let mut doc: Value = serde_json::from_str(p.policy().unwrap_or("{}")).expect("JSON");
        doc["Statement"]
            .as_array_mut()
            .expect("statements")
            .push(json!({
                "Sid": sid,
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
                "Action": "kms:DescribeKey",
                "Resource": "*",
            }));
        kms.put_key_policy()
            .key_id(key_id)
            .policy_name("default")
            .policy(doc.to_string())
            .send()
            .await
            .expect("PutKeyPolicy");
    })
}

/// What others add after the demo apply: a statement on ferry's key and on the source key, a
/// replication rule beside ferry's, shares of the sources, a copy of a source made by hand.
struct Foreign {
    copy: String,
    shared_snapshot: String,
    image: String,
    source_key: String,
    dr_key: String,
}

fn add_foreign(w: &World, world: &Value) -> Foreign {
    let source_key = world["kms_key"]["arn"].as_str().unwrap().to_string();
    let dr_key = aliased(w, PROD, DST, "alias/demo-dr").expect("ferry made alias/demo-dr");
    add_statement(w, PROD, DST, &dr_key, "TeamAudit");
    add_statement(w, PROD, SRC, &source_key, "TeamAudit");
    let shared_snapshot = world["snapshots"][0]["id"].as_str().unwrap().to_string();
    let image = world["image"]["id"].as_str().unwrap().to_string();
    let team_key = w.key(DST, "alias/team-copies");
    let copy = w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        ec2.modify_snapshot_attribute()
            .snapshot_id(&shared_snapshot)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(aws_sdk_ec2::types::OperationType::Add)
            .user_ids(OTHER)
            .send()
            .await
            .expect("share by hand");
        ec2.modify_image_attribute()
            .image_id(&image)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .add(LaunchPermission::builder().user_id(BACKUP).build())
                    .build(),
            )
            .send()
            .await
            .expect("launch permission by hand");
        // A rule of someone else's beside ferry's, under the configuration's role.
        let s3 = w.emu.s3(PROD, SRC);
        let config = s3
            .get_bucket_replication()
            .bucket("demo-app-logs")
            .send()
            .await
            .expect("ferry's replication configuration")
            .replication_configuration
            .expect("configuration");
        let mut rules = config.rules().to_vec();
        rules.push(
            ReplicationRule::builder()
                .id("team-archive")
                .priority(7)
                .status(ReplicationRuleStatus::Enabled)
                .filter(ReplicationRuleFilter::builder().prefix("archive/").build())
                .destination(
                    Destination::builder()
                        .bucket("arn:aws:s3:::team-archive")
                        .build()
                        .unwrap(),
                )
                .delete_marker_replication(
                    aws_sdk_s3::types::DeleteMarkerReplication::builder()
                        .status(aws_sdk_s3::types::DeleteMarkerReplicationStatus::Disabled)
                        .build(),
                )
                .build()
                .unwrap(),
        );
        s3.put_bucket_replication()
            .bucket("demo-app-logs")
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role(config.role())
                    .set_rules(Some(rules))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("a rule by hand");
        w.emu
            .ec2(PROD, DST)
            .copy_snapshot()
            .source_snapshot_id(&shared_snapshot)
            .source_region(SRC)
            .encrypted(true)
            .kms_key_id(&team_key)
            .send()
            .await
            .expect("a copy by hand")
            .snapshot_id()
            .unwrap()
            .to_string()
    });
    Foreign {
        copy,
        shared_snapshot,
        image,
        source_key,
        dr_key,
    }
}

fn snapshot_shared_with(w: &World, snapshot: &str) -> Vec<String> {
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .describe_snapshot_attribute()
            .snapshot_id(snapshot)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .expect("DescribeSnapshotAttribute")
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_string))
            .collect()
    })
}

fn image_launchable_by(w: &World, image: &str) -> Vec<String> {
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .describe_image_attribute()
            .image_id(image)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .expect("DescribeImageAttribute")
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_string))
            .collect()
    })
}

fn rules(w: &World) -> Vec<String> {
    w.rt.block_on(async {
        match w
            .emu
            .s3(PROD, SRC)
            .get_bucket_replication()
            .bucket("demo-app-logs")
            .send()
            .await
        {
            Ok(o) => o
                .replication_configuration
                .map(|c| {
                    c.rules()
                        .iter()
                        .filter_map(|r| r.id().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    })
}

#[test]
fn destroy_after_the_demo_removes_what_ferry_made_and_only_that_even_when_killed_midway() {
    let w = World::new(json!({}));
    let world = seed(&w);
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/plans/demo.yaml"),
        w.path("demo.yaml"),
    )
    .expect("the demo plan");
    let applied = w.ferry(&["apply", "--yes", "demo.yaml"]);
    assert_eq!(applied.status.code(), Some(0));
    assert_eq!(ferry_snapshots(&w, PROD, DST).len(), 5, "the demo's copies");
    assert_eq!(ferry_images(&w, BACKUP, SRC).len(), 1, "the AMI copy");
    let foreign = add_foreign(&w, &world);

    // The destroy plan, alone, changes nothing.
    let before = w.emu.counters();
    let dry = w.ferry(&["destroy", "--dry-run", "--include-keys", "demo.yaml"]);
    assert_eq!(dry.status.code(), Some(0));
    assert_eq!(
        w.emu.counters().mutating(PROD) + w.emu.counters().mutating(BACKUP),
        before.mutating(PROD) + before.mutating(BACKUP),
        "a dry run makes no change"
    );
    let shown = text(&dry.stdout);
    assert!(shown.contains("- rule ferry-app-logs"), "{shown}");
    assert!(shown.contains("= rule team-archive (kept)"), "{shown}");
    assert!(
        shown.contains("bucket demo-app-logs-dr: kept, it holds objects"),
        "{shown}"
    );
    assert!(
        !shown.contains(&foreign.copy),
        "a copy ferry did not make is not shown"
    );

    // Slow answers, so that the kill lands with the destroy under way.
    w.emu.configure(json!({ "latency_ms": 300 }));
    let mutations = w.emu.counters().mutating(PROD) + w.emu.counters().mutating(BACKUP);
    let mut child = w
        .command(&["destroy", "--yes", "--include-keys", "demo.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts");
    wait_for("the destroy under way", Duration::from_secs(120), || {
        w.emu.counters().mutating(PROD) + w.emu.counters().mutating(BACKUP) >= mutations + 2
    });
    kill(&mut child);
    w.emu.configure(json!({ "latency_ms": 0 }));
    let left = ferry_snapshots(&w, PROD, DST).len()
        + ferry_images(&w, BACKUP, SRC).len()
        + usize::from(aliased(&w, PROD, DST, "alias/demo-dr").is_some());
    assert!(left > 0, "the kill landed before the destroy was done");

    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));

    // Everything ferry made is gone...
    assert_eq!(ferry_snapshots(&w, PROD, DST), Vec::<String>::new());
    assert_eq!(ferry_images(&w, BACKUP, SRC), Vec::<String>::new());
    assert_eq!(
        ferry_snapshots(&w, BACKUP, SRC),
        Vec::<String>::new(),
        "the AMI copy's snapshots"
    );
    for (account, region) in [(PROD, DST), (BACKUP, SRC)] {
        let left: Vec<String> = db_snapshots(&w, account, region)
            .into_iter()
            .filter(|s| s.starts_with("ferry-demo"))
            .collect();
        assert!(
            left.is_empty(),
            "RDS copies in {account}/{region}: {left:?}"
        );
    }
    assert!(!rules(&w).contains(&"ferry-app-logs".to_string()));
    // ...the keys are scheduled for deletion, their aliases gone...
    assert_eq!(key_state(&w, PROD, DST, &foreign.dr_key), "PendingDeletion");
    for (account, region, alias) in [
        (PROD, DST, "alias/demo-dr"),
        (PROD, SRC, "alias/demo-mrk"),
        (PROD, DST, "alias/demo-mrk"),
        (PROD, "eu-west-1", "alias/demo-mrk"),
        (BACKUP, SRC, "alias/demo-backup"),
    ] {
        assert_eq!(
            aliased(&w, account, region, alias),
            None,
            "{alias} in {region}"
        );
    }
    // ...and what others made is untouched: statements, the rule, shares, the copy.
    assert!(policy_sids(&w, PROD, DST, &foreign.dr_key).contains(&"TeamAudit".to_string()));
    assert!(
        !policy_sids(&w, PROD, DST, &foreign.dr_key)
            .iter()
            .any(|s| s.starts_with("ferry")),
        "ferry's statement on its key is removed"
    );
    assert!(policy_sids(&w, PROD, SRC, &foreign.source_key).contains(&"TeamAudit".to_string()));
    assert_eq!(rules(&w), vec!["team-archive".to_string()]);
    assert!(snapshot_shared_with(&w, &foreign.shared_snapshot).contains(&OTHER.to_string()));
    assert!(image_launchable_by(&w, &foreign.image).contains(&BACKUP.to_string()));
    let copies: Vec<String> = w.rt.block_on(async {
        w.emu
            .ec2(PROD, DST)
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap()
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect()
    });
    assert!(
        copies.contains(&foreign.copy),
        "the copy made by hand is kept"
    );
    // The replication role stays while the rule of someone else's names it; the bucket with
    // the replicated objects stays.
    let role = w.rt.block_on(async {
        w.emu
            .iam(PROD)
            .get_role()
            .role_name("demo-app-logs-replication")
            .send()
            .await
            .is_ok()
    });
    assert!(role, "the role another rule uses is kept");

    // A second destroy finds nothing to do.
    let again = w.ferry(&["destroy", "--dry-run", "--include-keys", "demo.yaml"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("No changes"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn destroy_without_include_keys_keeps_the_keys_and_a_copy_whose_source_is_gone() {
    let w = World::new(json!({}));
    let world = seed(&w);
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/plans/demo.yaml"),
        w.path("demo.yaml"),
    )
    .expect("the demo plan");
    assert_eq!(
        w.ferry(&["apply", "--yes", "demo.yaml"]).status.code(),
        Some(0)
    );
    // One source snapshot deleted at the source: its copy may be the only one left.
    let gone = world["snapshots"][1]["id"].as_str().unwrap().to_string();
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .delete_snapshot()
            .snapshot_id(&gone)
            .send()
            .await
            .expect("DeleteSnapshot")
    });
    let out = w.ferry(&["destroy", "--yes", "demo.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("--include-orphans"),
        "{}",
        text(&out.stdout)
    );
    let left = ferry_snapshots(&w, PROD, DST);
    assert_eq!(left.len(), 1, "only the orphan's copy is kept: {left:?}");
    let dr = aliased(&w, PROD, DST, "alias/demo-dr").expect("the key is kept");
    assert_eq!(key_state(&w, PROD, DST, &dr), "Enabled");

    // With --include-orphans it goes too.
    let out = w.ferry(&["destroy", "--yes", "--include-orphans", "demo.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(ferry_snapshots(&w, PROD, DST), Vec::<String>::new());
}
