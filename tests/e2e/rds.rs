//! RDS DB snapshots and Aurora DB cluster snapshots: copies across regions and accounts through
//! the real binary, with the emulator's RDS additions (copies take time, copy limits, shares
//! and KMS judged across accounts).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use super::{DST, PROD, SRC, World, assert_reapply_changes_nothing, kill, text, wait_for};

const BACKUP: &str = "222222222222";

/// One RDS snapshot as a test reads it.
#[derive(Debug)]
struct Snap {
    id: String,
    status: String,
    snapshot_type: String,
    kms_key_id: String,
    tags: BTreeMap<String, String>,
}

impl World {
    /// An encrypted postgres instance `name` in prod/us-east-1 under `key` (None: `aws/rds`).
    fn db_instance(&self, name: &str, key: Option<&str>, engine: &str) {
        self.rt.block_on(async {
            let mut req = self
                .emu
                .rds(PROD, SRC)
                .create_db_instance()
                .db_instance_identifier(name)
                .engine(engine)
                .db_instance_class("db.t3.micro")
                .allocated_storage(20)
                .master_username("admin")
                .master_user_password("not-a-secret-1")
                .storage_encrypted(true)
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key("Team")
                        .value("orders")
                        .build(),
                );
            if let Some(k) = key {
                req = req.kms_key_id(k);
            }
            req.send().await.expect("CreateDBInstance");
        })
    }

    /// A manual snapshot of `instance`, tagged Backup=nightly.
    fn db_snapshot(&self, instance: &str, id: &str) -> String {
        self.rt.block_on(async {
            self.emu
                .rds(PROD, SRC)
                .create_db_snapshot()
                .db_instance_identifier(instance)
                .db_snapshot_identifier(id)
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key("Backup")
                        .value("nightly")
                        .build(),
                )
                .send()
                .await
                .expect("CreateDBSnapshot");
        });
        id.to_string()
    }

    fn automated_snapshot(&self, instance: &str) -> String {
        self.rt.block_on(async {
            let out = self
                .emu
                .rds(PROD, SRC)
                .describe_db_snapshots()
                .db_instance_identifier(instance)
                .snapshot_type("automated")
                .send()
                .await
                .expect("DescribeDBSnapshots");
            out.db_snapshots()[0]
                .db_snapshot_identifier()
                .unwrap()
                .to_string()
        })
    }

    /// Every DB snapshot of `account`/`region`.
    fn db_snapshots(&self, account: &str, region: &str) -> Vec<Snap> {
        self.rt.block_on(async {
            let out = self
                .emu
                .rds(account, region)
                .describe_db_snapshots()
                .send()
                .await
                .expect("DescribeDBSnapshots");
            out.db_snapshots()
                .iter()
                .map(|s| Snap {
                    id: s.db_snapshot_identifier().unwrap_or_default().into(),
                    status: s.status().unwrap_or_default().into(),
                    snapshot_type: s.snapshot_type().unwrap_or_default().into(),
                    kms_key_id: s.kms_key_id().unwrap_or_default().into(),
                    tags: s
                        .tag_list()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                })
                .collect()
        })
    }

    fn restorers(&self, id: &str) -> Vec<String> {
        self.rt.block_on(async {
            match self
                .emu
                .rds(PROD, SRC)
                .describe_db_snapshot_attributes()
                .db_snapshot_identifier(id)
                .send()
                .await
            {
                Ok(out) => out
                    .db_snapshot_attributes_result()
                    .map(|r| {
                        r.db_snapshot_attributes()
                            .iter()
                            .flat_map(|a| a.attribute_values().to_vec())
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        })
    }
}

fn rds_plan(sources: &str, extra: &str) -> String {
    format!(
        r#"version: 1
name: e2e
accounts:
  prod:
    id: "{PROD}"
keys:
  dr-rds:
    account: prod
    region: {DST}
    alias: alias/dr-rds
    create: true
migrations:
  - id: orders
    type: db-snapshot-copy
    source:
      account: prod
      region: {SRC}
      {sources}
    destination:
      region: {DST}
      key: dr-rds
{extra}    tags: {{ Purpose: dr }}
settings:
  tags: {{ MigratedBy: ferry }}
"#
    )
}

/// ferry's copies in prod/eu-west-2.
fn copies_in_dst(w: &World) -> Vec<Snap> {
    w.db_snapshots(PROD, DST)
        .into_iter()
        .filter(|s| s.tags.get("ferry:plan").map(String::as_str) == Some("e2e"))
        .collect()
}

#[test]
fn a_db_snapshot_is_copied_across_regions_under_the_destination_key_with_its_tags_once() {
    let w = World::new(json!({ "rds_copy_seconds": 0.5 }));
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("orders-db", Some(&src_key), "postgres");
    let snap = w.db_snapshot("orders-db", "orders-2026-11-30");
    let plan_file = w.write_plan(&rds_plan(&format!("snapshots: [{snap}]"), ""));

    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        text(&dry.stdout).contains("+ ferry-e2e-orders-2026-11-30 copy of orders-2026-11-30"),
        "the dry run names the copy it would make"
    );
    assert_eq!(
        w.emu.counters().mutating(PROD),
        0,
        "a dry run changes nothing"
    );

    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    // What the dry run and the apply called is what `ferry iam-policy` allows.
    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    let dr = w
        .key_arn(DST, "alias/dr-rds")
        .expect("the plan made its key");
    let copies = copies_in_dst(&w);
    assert_eq!(copies.len(), 1, "{copies:#?}");
    let c = &copies[0];
    assert_eq!(c.id, "ferry-e2e-orders-2026-11-30");
    assert_eq!(c.status, "available");
    assert_eq!(c.snapshot_type, "manual");
    assert_eq!(c.kms_key_id, dr, "under the destination key");
    for (k, v) in [
        ("Backup", "nightly"),
        ("Purpose", "dr"),
        ("MigratedBy", "ferry"),
        ("ferry:migration", "orders"),
        ("ferry:source", "orders-2026-11-30"),
        ("ferry:key", "alias/dr-rds"),
    ] {
        assert_eq!(
            c.tags.get(k).map(String::as_str),
            Some(v),
            "tag {k}: {c:#?}"
        );
    }
    assert_eq!(w.emu.counters().copy_totals.db_snapshots, 1);
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);

    // A tag changed on the source is drift: shown, then written onto the copy.
    w.rt.block_on(async {
        w.emu
            .rds(PROD, SRC)
            .add_tags_to_resource()
            .resource_name(format!("arn:aws:rds:{SRC}:{PROD}:snapshot:{snap}"))
            .tags(
                aws_sdk_rds::types::Tag::builder()
                    .key("Backup")
                    .value("weekly")
                    .build(),
            )
            .send()
            .await
            .expect("AddTagsToResource");
    });
    let dry = w.ferry(&["plan", &plan_file]);
    assert!(text(&dry.stdout).contains(r#"~ tag Backup: "nightly" -> "weekly""#));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let c = &copies_in_dst(&w)[0];
    assert_eq!(c.tags.get("Backup").map(String::as_str), Some("weekly"));
    assert_eq!(
        w.emu.counters().copy_totals.db_snapshots,
        0,
        "mended, not copied again (counters were reset by the re-apply above)"
    );
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn killed_while_db_snapshot_copies_are_pending_then_resumed_copies_each_once() {
    let w = World::new(json!({ "rds_copy_seconds": 3.0 }));
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("orders-db", Some(&src_key), "postgres");
    let snaps: Vec<String> = (0..6)
        .map(|i| w.db_snapshot("orders-db", &format!("orders-2026-11-{:02}", 20 + i)))
        .collect();
    let plan_file = w.write_plan(&rds_plan("tags: { Backup: nightly }", ""));
    let mut child = w
        .command(&["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts");
    wait_for("copies in flight", Duration::from_secs(60), || {
        w.emu.counters().copy_totals.db_snapshots >= 2
    });
    kill(&mut child);
    let before = w.emu.counters().copy_totals.db_snapshots;
    assert!(
        copies_in_dst(&w).iter().any(|c| c.status == "copying"),
        "killed while copies were pending"
    );
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    let copies = copies_in_dst(&w);
    assert_eq!(
        copies.len(),
        snaps.len(),
        "one copy per snapshot: {copies:#?}"
    );
    assert!(copies.iter().all(|c| c.status == "available"));
    assert_eq!(
        w.emu.counters().copy_totals.db_snapshots,
        snaps.len() as u64,
        "the resume made only the {} copies the killed run had not ({before} before the kill)",
        snaps.len() as u64 - before
    );
}

#[test]
fn lost_answers_and_faults_still_make_one_db_snapshot_copy_each() {
    for seed in super::soak_seeds(&[5]) {
        let w = World::new(json!({ "rds_copy_seconds": 0.3 }));
        let src_key = w.key(SRC, "alias/orders-src");
        w.db_instance("orders-db", Some(&src_key), "postgres");
        for i in 0..8 {
            w.db_snapshot("orders-db", &format!("orders-2026-10-{:02}", 10 + i));
        }
        let plan_file = w.write_plan(&rds_plan("tags: { Backup: nightly }", ""));
        w.emu.reset_counters();
        let faults = super::every_fault(seed);
        w.emu.configure(faults.clone());
        let out = super::apply_until_done(&w, &plan_file, None, 6);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{faults}: done, with resumes if need be"
        );
        let c = w.emu.counters();
        assert!(
            c.totals.lost + c.totals.faults + c.totals.throttled > 0,
            "the emulator misbehaved: {:?}",
            c.totals
        );
        assert_eq!(
            c.copy_totals.db_snapshots, 8,
            "{faults}: a lost answer is found by the copy's name, never copied twice"
        );
        w.emu.configure(super::no_faults());
        let copies = copies_in_dst(&w);
        assert_eq!(copies.len(), 8, "{copies:#?}");
        assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
    }
}

#[test]
fn a_snapshot_ferry_did_not_make_under_the_copys_name_is_never_adopted() {
    let w = World::new(json!({ "rds_copy_seconds": 0.2 }));
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("orders-db", Some(&src_key), "postgres");
    let snap = w.db_snapshot("orders-db", "orders-2026-11-30");
    // Someone else's snapshot in eu-west-2 under the name ferry would give its copy.
    let theirs_key = w.key(DST, "alias/theirs");
    w.rt.block_on(async {
        w.emu
            .rds(PROD, DST)
            .copy_db_snapshot()
            .source_db_snapshot_identifier(format!("arn:aws:rds:{SRC}:{PROD}:snapshot:{snap}"))
            .target_db_snapshot_identifier("ferry-e2e-orders-2026-11-30")
            .kms_key_id(&theirs_key)
            .send()
            .await
            .expect("CopyDBSnapshot");
    });
    w.emu.complete_copies();
    // Refused before any change (key access, shares and other copies included).
    super::bad_input(
        &w,
        &rds_plan(&format!("snapshots: [{snap}]"), ""),
        &[
            "ferry-e2e-orders-2026-11-30",
            "that ferry did not make",
            "ferry never adopts it",
        ],
    );
    let theirs = w.db_snapshots(PROD, DST);
    assert_eq!(theirs.len(), 1);
    assert!(
        !theirs[0].tags.contains_key("ferry:plan"),
        "their snapshot is untouched"
    );
}

#[test]
fn forty_five_db_snapshots_copy_within_the_copy_gate_without_throttling() {
    let w = World::new(json!({ "rds_copy_seconds": 0.5, "throttle": true }));
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("orders-db", Some(&src_key), "postgres");
    for i in 0..45 {
        w.db_snapshot("orders-db", &format!("orders-nightly-{i:02}"));
    }
    let plan_file = w.write_plan(&rds_plan("tags: { Backup: nightly }", ""));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let c = w.emu.counters();
    assert_eq!(c.copy_totals.db_snapshots, 45);
    assert_eq!(c.totals.throttled, 0, "{:#?}", c.requests);
    let sent: u64 = c
        .requests
        .iter()
        .filter(|r| r.service == "rds" && r.action == "CopyDBSnapshot")
        .map(|r| r.count)
        .sum();
    assert_eq!(
        sent, 45,
        "one CopyDBSnapshot per snapshot: none refused by the 20-copy limit"
    );
    assert_eq!(copies_in_dst(&w).len(), 45);
    // Pending copies are polled together: one DescribeDBSnapshots per tick for all of them
    // (besides one look per copy in the dry run and one in the run). Polled one by one, the
    // 45 copies of 0.5 s at a 200 ms interval would take over 100 more.
    let describes: u64 = c
        .requests
        .iter()
        .filter(|r| r.service == "rds" && r.action == "DescribeDBSnapshots")
        .map(|r| r.count)
        .sum();
    assert!(
        describes <= 2 * 45 + 40,
        "{describes} DescribeDBSnapshots calls"
    );
}

#[test]
fn an_aurora_cluster_snapshot_is_copied_across_regions() {
    let w = World::new(json!({ "rds_copy_seconds": 0.3 }));
    let src_key = w.key(SRC, "alias/ledger-src");
    w.rt.block_on(async {
        let rds = w.emu.rds(PROD, SRC);
        rds.create_db_cluster()
            .db_cluster_identifier("ledger")
            .engine("aurora-postgresql")
            .master_username("admin")
            .master_user_password("not-a-secret-1")
            .storage_encrypted(true)
            .kms_key_id(&src_key)
            .send()
            .await
            .expect("CreateDBCluster");
        rds.create_db_cluster_snapshot()
            .db_cluster_identifier("ledger")
            .db_cluster_snapshot_identifier("ledger-2026-11-30")
            .send()
            .await
            .expect("CreateDBClusterSnapshot");
    });
    let plan = rds_plan("latest_of: [ledger]", "")
        .replace("type: db-snapshot-copy", "type: db-cluster-snapshot-copy");
    let plan_file = w.write_plan(&plan);
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    let dr = w.key_arn(DST, "alias/dr-rds").unwrap();
    let copies: Vec<(String, String, String, Option<String>)> = w.rt.block_on(async {
        let out = w
            .emu
            .rds(PROD, DST)
            .describe_db_cluster_snapshots()
            .send()
            .await
            .unwrap();
        out.db_cluster_snapshots()
            .iter()
            .map(|s| {
                (
                    s.db_cluster_snapshot_identifier().unwrap().to_string(),
                    s.status().unwrap().to_string(),
                    s.kms_key_id().unwrap_or_default().to_string(),
                    s.tag_list()
                        .iter()
                        .find(|t| t.key() == Some("ferry:source"))
                        .and_then(|t| t.value().map(str::to_string)),
                )
            })
            .collect()
    });
    // The newest snapshot of the cluster: the manual one, made after the automated one.
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].1, "available");
    assert_eq!(copies[0].2, dr);
    assert_eq!(copies[0].3.as_deref(), Some("ledger-2026-11-30"));
    assert_eq!(w.emu.counters().copy_totals.db_cluster_snapshots, 1);
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

fn key_policy(w: &World, key: &str) -> Value {
    w.rt.block_on(async {
        let p = w
            .emu
            .kms(PROD, SRC)
            .get_key_policy()
            .key_id(key)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        serde_json::from_str(p.policy().unwrap()).unwrap()
    })
}

/// The role cross_account_plan's backup account names, trusting prod.
fn backup_role(w: &World) {
    w.rt.block_on(
        w.emu
            .create_assumable_role(BACKUP, "ferry-migrator", PROD, None),
    );
}

fn cross_account_plan(source: &str, key_access: &str) -> String {
    format!(
        r#"version: 1
name: e2e
accounts:
  prod:
    id: "{PROD}"
  backup:
    id: "{BACKUP}"
    role_arn: arn:aws:iam::{BACKUP}:role/ferry-migrator
keys:
  vault-rds:
    account: backup
    region: {SRC}
    alias: alias/vault-rds
    create: true
migrations:
  - id: vault
    type: db-snapshot-copy
    source:
      account: prod
      region: {SRC}
      {source}
    destination:
      account: backup
      key: vault-rds
    key_access: {key_access}
    revoke_after: true
"#
    )
}

#[test]
fn an_automated_snapshot_goes_to_another_account_through_a_manual_copy_taken_back_after() {
    for key_access in ["policy", "grant"] {
        automated_snapshot_to_another_account(key_access);
    }
}

fn automated_snapshot_to_another_account(key_access: &str) {
    let w = World::new(json!({ "rds_copy_seconds": 0.3 }));
    backup_role(&w);
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("orders-db", Some(&src_key), "postgres");
    let automated = w.automated_snapshot("orders-db");
    let policy_before = key_policy(&w, &src_key);
    // By the instance (the newest snapshot is the automated one), and by the automated
    // snapshot's own identifier.
    let source = match key_access {
        "policy" => "latest_of: [orders-db]".to_string(),
        _ => format!("snapshots: [\"{automated}\"]"),
    };
    let plan_file = w.write_plan(&cross_account_plan(&source, key_access));

    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    let shared = format!("ferry-e2e-vault-{}-shared", automated.replace(':', "-"));
    let target = format!("ferry-e2e-{}", automated.replace(':', "-"));
    let log = text(&out.stderr);
    for step in [
        "copy-to-share",
        "/share",
        "/copy",
        "/unshare",
        "delete-shared",
        "revoke-access",
    ] {
        assert!(log.contains(step), "the run went through {step}:\n{log}");
    }
    // The backup account's copy, under its own key.
    let vault = w.rt.block_on(async {
        w.emu
            .kms(BACKUP, SRC)
            .describe_key()
            .key_id("alias/vault-rds")
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .arn()
            .unwrap()
            .to_string()
    });
    let theirs = w.db_snapshots(BACKUP, SRC);
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0].id, target);
    assert_eq!(theirs[0].status, "available");
    assert_eq!(theirs[0].kms_key_id, vault);
    // The manual copy made to share it is gone, nothing is shared, the key policy is as before.
    let ours = w.db_snapshots(PROD, SRC);
    assert!(
        !ours.iter().any(|s| s.id == shared),
        "the intermediate copy was removed: {ours:#?}"
    );
    for s in &ours {
        assert!(w.restorers(&s.id).is_empty(), "{} is not shared", s.id);
    }
    assert_eq!(
        w.emu.counters().copy_totals.db_snapshots,
        2,
        "the manual copy and theirs"
    );
    assert_eq!(
        key_policy(&w, &src_key),
        policy_before,
        "the source key policy is the original"
    );
    let grants = w.rt.block_on(async {
        w.emu
            .kms(PROD, SRC)
            .list_grants()
            .key_id(&src_key)
            .send()
            .await
            .unwrap()
            .grants()
            .len()
    });
    assert_eq!(grants, 0, "{key_access}: no grant left on the source key");
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD, BACKUP]);
}

#[test]
fn rds_problems_aws_would_refuse_are_found_before_any_change() {
    let w = World::new(json!({}));
    backup_role(&w);
    let src_key = w.key(SRC, "alias/orders-src");
    // Under the AWS managed key aws/rds: it cannot be shared with another account.
    w.db_instance("managed-db", None, "postgres");
    let managed = w.db_snapshot("managed-db", "managed-2026-11-30");
    super::bad_input(
        &w,
        &cross_account_plan(&format!("snapshots: [{managed}]"), "policy"),
        &[
            "AWS managed key aws/rds",
            "cannot be shared with another account",
            "plan.yaml:21:",
        ],
    );
    // A key of another region than the destination.
    w.db_instance("orders-db", Some(&src_key), "postgres");
    let snap = w.db_snapshot("orders-db", "orders-2026-11-30");
    let wrong_region = w.key(SRC, "alias/wrong-region");
    super::bad_input(
        &w,
        &rds_plan(&format!("snapshots: [{snap}]"), "")
            .replace("key: dr-rds", &format!("key: {wrong_region}")),
        &["this key is in region `us-east-1` but the destination region is `eu-west-2`"],
    );
    // An Oracle snapshot to another region without an option group of that region.
    w.db_instance("erp-db", Some(&src_key), "oracle-ee");
    let erp = w.db_snapshot("erp-db", "erp-2026-11-30");
    super::bad_input(
        &w,
        &rds_plan(&format!("snapshots: [{erp}]"), ""),
        &[
            "oracle-ee",
            "need an option group",
            "destination.option_group",
        ],
    );
    // An option group the destination region does not have.
    super::bad_input(
        &w,
        &rds_plan(&format!("snapshots: [{erp}]"), "").replace(
            "      key: dr-rds\n",
            "      key: dr-rds\n      option_group: erp-og-eu\n",
        ),
        &["option group erp-og-eu does not exist in prod/eu-west-2"],
    );
    // More tags than RDS takes on the copy: 46 of the source's, 2 of the plan's, ferry's 6.
    let tagged = w.db_snapshot("orders-db", "orders-many-tags");
    w.rt.block_on(async {
        let mut req = w
            .emu
            .rds(PROD, SRC)
            .add_tags_to_resource()
            .resource_name(format!("arn:aws:rds:{SRC}:{PROD}:snapshot:{tagged}"));
        for i in 0..45 {
            req = req.tags(
                aws_sdk_rds::types::Tag::builder()
                    .key(format!("k{i}"))
                    .value("v")
                    .build(),
            );
        }
        req.send().await.expect("AddTagsToResource");
    });
    super::bad_input(
        &w,
        &rds_plan(&format!("snapshots: [{tagged}]"), ""),
        &["would carry 54 tags", "at most 50"],
    );
    // Copies that would take the destination past its manual snapshot quota (2 here, one of
    // them used by a snapshot already there).
    let other = w.db_snapshot("orders-db", "orders-2026-11-29");
    w.emu.configure(json!({ "max_manual_db_snapshots": 2 }));
    let dst_key = w.key(DST, "alias/someone-else");
    w.rt.block_on(async {
        w.emu
            .rds(PROD, DST)
            .copy_db_snapshot()
            .source_db_snapshot_identifier(format!("arn:aws:rds:{SRC}:{PROD}:snapshot:{other}"))
            .target_db_snapshot_identifier("someone-elses-copy")
            .kms_key_id(&dst_key)
            .send()
            .await
            .expect("CopyDBSnapshot");
    });
    super::bad_input(
        &w,
        &rds_plan(&format!("snapshots: [{snap}, {other}]"), ""),
        &[
            "2 new manual DB snapshots",
            "1 of its quota of 2",
            "Service Quotas",
        ],
    );
}

#[test]
fn retention_keeps_the_newest_db_snapshot_copies_of_the_instance() {
    let w = World::new(json!({ "rds_copy_seconds": 0.2 }));
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("orders-db", Some(&src_key), "postgres");
    let mut snaps = Vec::new();
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(1100));
        snaps.push(w.db_snapshot("orders-db", &format!("orders-night-{i}")));
    }
    let plan_file = w.write_plan(&rds_plan(
        "tags: { Backup: nightly }",
        "    retention: { keep_last: 2 }\n",
    ));
    let copied = |w: &World| {
        let mut v: Vec<String> = copies_in_dst(w)
            .iter()
            .map(|c| c.tags["ferry:source"].clone())
            .collect();
        v.sort();
        v
    };
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(copied(&w), snaps[2..].to_vec(), "the newest two are copied");
    assert_eq!(w.emu.counters().copy_totals.db_snapshots, 2);
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);

    // A new night: its snapshot is copied, the oldest copy deleted.
    std::thread::sleep(Duration::from_millis(1100));
    snaps.push(w.db_snapshot("orders-db", "orders-night-4"));
    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert!(
        text(&dry.stdout).contains("- ferry-e2e-orders-night-2 (copy of orders-night-2"),
        "the plan shows the copy retention deletes"
    );
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(copied(&w), snaps[3..].to_vec());
    let c = w.emu.counters();
    assert_eq!(c.copy_totals.db_snapshots, 1, "one copy made");
    let deleted: u64 = c
        .requests
        .iter()
        .filter(|r| r.action == "DeleteDBSnapshot")
        .map(|r| r.count)
        .sum();
    assert_eq!(deleted, 1, "one copy deleted");
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn a_snapshot_under_aws_rds_goes_to_another_account_through_a_copy_under_the_intermediate_key() {
    let w = World::new(json!({ "rds_copy_seconds": 0.3 }));
    backup_role(&w);
    let src_key = w.key(SRC, "alias/orders-src");
    w.db_instance("managed-db", None, "postgres");
    let managed = w.db_snapshot("managed-db", "managed-2026-11-30");
    let plan = cross_account_plan(&format!("snapshots: [{managed}]"), "policy")
        + "    reencrypt_managed_sources: true\n    intermediate_key: alias/orders-src\n";
    let plan_file = w.write_plan(&plan);
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let theirs = w.db_snapshots(BACKUP, SRC);
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0].id, format!("ferry-e2e-{managed}"));
    let vault = w.rt.block_on(async {
        let k = w
            .emu
            .kms(BACKUP, SRC)
            .describe_key()
            .key_id("alias/vault-rds")
            .send();
        k.await
            .unwrap()
            .key_metadata()
            .unwrap()
            .arn()
            .unwrap()
            .to_string()
    });
    assert_eq!(theirs[0].kms_key_id, vault, "under the other account's key");
    let ours = w.db_snapshots(PROD, SRC);
    let shared = format!("ferry-e2e-vault-{managed}-shared");
    assert!(
        !ours.iter().any(|s| s.id == shared),
        "the copy under the intermediate key was deleted: {ours:#?}"
    );
    for s in &ours {
        assert!(w.restorers(&s.id).is_empty(), "{} is not shared", s.id);
    }
    assert_eq!(
        w.emu.counters().copy_totals.db_snapshots,
        2,
        "the intermediate copy and theirs"
    );
    let policy = key_policy(&w, &src_key);
    assert!(
        !policy.to_string().contains("ferry-e2e"),
        "the intermediate key's access is taken back: {policy}"
    );
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD, BACKUP]);
}
