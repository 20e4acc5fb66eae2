//! Cross-account sharing of KMS-encrypted snapshots and AMIs, re-encrypted by the other account.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, ImageAttributeName, SnapshotAttributeName,
};
use serde_json::{Value, json};

use super::{PROD, SRC, World, iam_policy, kill, text, wait_for};

const BACKUP: &str = "222222222222";
/// The external id every plan here gives with the backup account's role_arn; the role's trust
/// policy asks for it.
const EXTERNAL_ID: &str = "not-a-real-secret-but-never-printed";

/// A's side: an AMI with two volumes under two different CMKs, a standalone encrypted
/// snapshot; B's side: its own key.
struct Fixture {
    ami: String,
    standalone: String,
    source_keys: Vec<String>,
    backup_key: String,
    policies_before: Vec<Value>,
}

fn encrypted_snapshot(w: &World, key: Option<&str>) -> String {
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        let mut vol = ec2
            .create_volume()
            .availability_zone(format!("{SRC}a"))
            .size(2)
            .encrypted(true);
        if let Some(k) = key {
            vol = vol.kms_key_id(k);
        }
        let vol = vol.send().await.expect("CreateVolume");
        ec2.create_snapshot()
            .volume_id(vol.volume_id().unwrap())
            .send()
            .await
            .expect("CreateSnapshot")
            .snapshot_id()
            .unwrap()
            .to_string()
    })
}

fn register_image(w: &World, name: &str, snapshots: &[&str]) -> String {
    w.rt.block_on(async {
        let mut req = w
            .emu
            .ec2(PROD, SRC)
            .register_image()
            .name(name)
            .root_device_name("/dev/xvda")
            .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
            .virtualization_type("hvm");
        for (device, snap) in ["/dev/xvda", "/dev/xvdb"].iter().zip(snapshots) {
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(*device)
                    .ebs(EbsBlockDevice::builder().snapshot_id(*snap).build())
                    .build(),
            );
        }
        req.send()
            .await
            .expect("RegisterImage")
            .image_id()
            .unwrap()
            .to_string()
    })
}

fn key_policy(w: &World, account: &str, key: &str) -> Value {
    w.rt.block_on(async {
        let p = w
            .emu
            .kms(account, SRC)
            .get_key_policy()
            .key_id(key)
            .policy_name("default")
            .send()
            .await
            .expect("GetKeyPolicy");
        serde_json::from_str(p.policy().unwrap()).unwrap()
    })
}

fn fixture(w: &World) -> Fixture {
    let k1 = w.key(SRC, "alias/app-root");
    let k2 = w.key(SRC, "alias/app-data");
    let root = encrypted_snapshot(w, Some(&k1));
    let data = encrypted_snapshot(w, Some(&k2));
    let ami = register_image(w, "golden-app", &[&root, &data]);
    let standalone = encrypted_snapshot(w, Some(&k1));
    let backup_key = w.rt.block_on(async {
        let kms = w.emu.kms(BACKUP, SRC);
        let k = kms.create_key().send().await.unwrap();
        let id = k.key_metadata().unwrap().key_id().to_string();
        kms.create_alias()
            .alias_name("alias/backup-ebs")
            .target_key_id(&id)
            .send()
            .await
            .unwrap();
        k.key_metadata().unwrap().arn().unwrap().to_string()
    });
    let policies_before = [&k1, &k2].iter().map(|k| key_policy(w, PROD, k)).collect();
    w.rt.block_on(
        w.emu
            .create_assumable_role(BACKUP, "ferry-migrator", PROD, Some(EXTERNAL_ID)),
    );
    Fixture {
        ami,
        standalone,
        source_keys: vec![k1, k2],
        backup_key,
        policies_before,
    }
}

fn plan(f: &Fixture, key_access: &str, revoke: bool) -> String {
    format!(
        r#"version: 1
name: xacct
accounts:
  prod:
    id: "{PROD}"
  backup:
    id: "{BACKUP}"
    role_arn: arn:aws:iam::{BACKUP}:role/ferry-migrator
    external_id: "{EXTERNAL_ID}"
keys:
  backup-ebs:
    account: backup
    region: {SRC}
    alias: alias/backup-ebs
migrations:
  - id: golden
    type: ami-copy
    source: {{ account: prod, region: {SRC}, images: [{ami}] }}
    destination: {{ account: backup, key: backup-ebs }}
    key_access: {key_access}
    revoke_after: {revoke}
  - id: standalone
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, snapshots: [{snap}] }}
    destination: {{ account: backup, key: backup-ebs }}
    key_access: {key_access}
    revoke_after: {revoke}
"#,
        ami = f.ami,
        snap = f.standalone,
    )
}

/// An AMI copy in B: its id and the keys of its snapshots.
type AmiCopy = (String, Vec<String>);
/// A snapshot copy in B: its id and key.
type SnapshotCopy = (String, String);

/// B's copies made by this plan.
fn copies_in_backup(w: &World) -> (Vec<AmiCopy>, Vec<SnapshotCopy>) {
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(BACKUP, SRC);
        let mine = Filter::builder()
            .name("tag:ferry:plan")
            .values("xacct")
            .build();
        let images = ec2
            .describe_images()
            .owners("self")
            .filters(mine.clone())
            .send()
            .await
            .unwrap();
        let mut amis = Vec::new();
        for i in images.images() {
            assert_eq!(i.state().map(|s| s.as_str()), Some("available"));
            let snaps: Vec<String> = i
                .block_device_mappings()
                .iter()
                .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
                .collect();
            let described = ec2
                .describe_snapshots()
                .filters(
                    Filter::builder()
                        .name("snapshot-id")
                        .set_values(Some(snaps))
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let keys = described
                .snapshots()
                .iter()
                .map(|s| s.kms_key_id().unwrap_or_default().to_string())
                .collect();
            amis.push((i.image_id().unwrap().to_string(), keys));
        }
        let snaps = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(mine)
            .filters(
                Filter::builder()
                    .name("tag:ferry:migration")
                    .values("standalone")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let standalone = snaps
            .snapshots()
            .iter()
            .map(|s| {
                assert_eq!(s.state().map(|x| x.as_str()), Some("completed"));
                (
                    s.snapshot_id().unwrap().to_string(),
                    s.kms_key_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        (amis, standalone)
    })
}

fn assert_b_owns_one_copy_of_each(w: &World, f: &Fixture) {
    let (amis, snaps) = copies_in_backup(w);
    assert_eq!(amis.len(), 1, "B owns one copy of the AMI: {amis:?}");
    assert_eq!(amis[0].1.len(), 2, "both volumes were copied");
    for k in &amis[0].1 {
        assert_eq!(
            k, &f.backup_key,
            "every volume of B's AMI is encrypted with B's key"
        );
    }
    assert_eq!(snaps.len(), 1, "B owns one copy of the snapshot: {snaps:?}");
    assert_eq!(snaps[0].1, f.backup_key);
}

/// Whether A shares the AMI (launch permission) and the standalone snapshot with B.
fn shares(w: &World, f: &Fixture) -> (bool, bool) {
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        let launch = ec2
            .describe_image_attribute()
            .image_id(&f.ami)
            .attribute(ImageAttributeName::LaunchPermission)
            .send()
            .await
            .unwrap();
        let image = launch
            .launch_permissions()
            .iter()
            .any(|p| p.user_id() == Some(BACKUP));
        let vol = ec2
            .describe_snapshot_attribute()
            .snapshot_id(&f.standalone)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .unwrap();
        let snap = vol
            .create_volume_permissions()
            .iter()
            .any(|p| p.user_id() == Some(BACKUP));
        (image, snap)
    })
}

fn ferry_statements(policy: &Value) -> Vec<Value> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Sid"].as_str().is_some_and(|x| x.starts_with("ferry-")))
        .cloned()
        .collect()
}

fn assert_zero_mutating_reapply(w: &World, plan_file: &str) {
    super::assert_reapply_changes_nothing(w, plan_file, &[PROD, BACKUP]);
}

#[test]
fn key_policy_access_then_revoke_keeps_everything_else() {
    let w = World::new(json!({ "copy_seconds": 0.5 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&plan(&f, "policy", false));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    // Both accounts' calls (ami-copy and snapshot-copy across accounts) are in the policy.
    iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    assert!(
        !text(&out.stdout).contains("not-a-real-secret"),
        "the external id is never printed"
    );
    assert!(!text(&out.stderr).contains("not-a-real-secret"));
    // Not one byte of the state holds it: the stored plan keeps its SHA-256.
    let mut files = vec![w.path(".ferry")];
    let mut plans = 0;
    while let Some(f) = files.pop() {
        if f.is_dir() {
            files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("not-a-real-secret"),
            "{} holds the external id",
            f.display()
        );
        if f.file_name().is_some_and(|n| n == "plan.yaml") {
            plans += 1;
            assert!(String::from_utf8_lossy(&bytes).contains("external_id: \"sha256:"));
        }
    }
    assert_eq!(plans, 1, "the run's plan is stored");
    assert_b_owns_one_copy_of_each(&w, &f);

    // Each of A's keys gained exactly one statement for B; the rest is unchanged.
    for (key, before) in f.source_keys.iter().zip(&f.policies_before) {
        let after = key_policy(&w, PROD, key);
        let added = ferry_statements(&after);
        assert_eq!(added.len(), 1, "{after}");
        assert_eq!(
            added[0]["Principal"]["AWS"],
            format!("arn:aws:iam::{BACKUP}:root")
        );
        let actions: Vec<&str> = added[0]["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "kms:DescribeKey",
                "kms:CreateGrant",
                "kms:GenerateDataKey*",
                "kms:ReEncrypt*",
                "kms:Decrypt"
            ]
        );
        let rest: Vec<&Value> = after["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !added.contains(s))
            .collect();
        let original: Vec<&Value> = before["Statement"].as_array().unwrap().iter().collect();
        assert_eq!(rest, original, "every other statement kept as it was");
    }
    assert_eq!(
        shares(&w, &f),
        (true, true),
        "without revoke_after the shares stay"
    );
    // The policy before ferry's edit is in the journal.
    let journal = std::fs::read_dir(w.path(".ferry/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let events = std::fs::read_to_string(journal.join("events.jsonl")).unwrap();
    assert!(events.contains("policy_before"));
    assert!(
        !events.contains("not-a-real-secret"),
        "no secret in the journal"
    );

    assert_zero_mutating_reapply(&w, &plan_file);

    // Now take it back: the shares and statements go, the copies stay.
    let plan_file = w.write_plan(&plan(&f, "policy", true));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(shares(&w, &f), (false, false));
    for (key, before) in f.source_keys.iter().zip(&f.policies_before) {
        assert_eq!(
            &key_policy(&w, PROD, key),
            before,
            "the policy is as before"
        );
    }
    assert_b_owns_one_copy_of_each(&w, &f);
    assert_zero_mutating_reapply(&w, &plan_file);
}

#[test]
fn grant_access_with_revoke_leaves_what_was_there_before() {
    let w = World::new(json!({ "copy_seconds": 0.5 }));
    let f = fixture(&w);
    // The standalone snapshot was shared with B before ferry: that share must stay.
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .modify_snapshot_attribute()
            .snapshot_id(&f.standalone)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(aws_sdk_ec2::types::OperationType::Add)
            .user_ids(BACKUP)
            .send()
            .await
            .unwrap();
    });
    let plan_file = w.write_plan(&plan(&f, "grant", true));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    assert_b_owns_one_copy_of_each(&w, &f);
    assert_eq!(
        shares(&w, &f),
        (false, true),
        "ferry's launch permission is gone; the earlier share stays"
    );
    for (key, before) in f.source_keys.iter().zip(&f.policies_before) {
        assert_eq!(
            &key_policy(&w, PROD, key),
            before,
            "grants leave the key policy alone"
        );
    }
    let grants = grants_on_source_keys(&w, &f);
    assert!(grants.is_empty(), "ferry's grants were revoked: {grants:?}");
    assert_zero_mutating_reapply(&w, &plan_file);
}

/// The grants still on A's source keys that ferry made (named `ferry-…`) or that B issued
/// through the access ferry gave it (its copies): (key, grant name or issuer).
fn grants_on_source_keys(w: &World, f: &Fixture) -> Vec<(String, String)> {
    w.rt.block_on(async {
        let kms = w.emu.kms(PROD, SRC);
        let b = format!("arn:aws:iam::{BACKUP}:root");
        let mut left = Vec::new();
        for key in &f.source_keys {
            let out = kms.list_grants().key_id(key).send().await.unwrap();
            for g in out.grants() {
                if let Some(n) = g.name().filter(|n| n.starts_with("ferry-")) {
                    left.push((key.clone(), n.to_string()));
                } else if g.issuing_account() == Some(b.as_str()) {
                    left.push((key.clone(), format!("issued by {b}")));
                }
            }
        }
        left
    })
}

#[test]
fn without_key_access_the_copy_fails_naming_the_key_and_resumes_cleanly_after_the_fix() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&plan(&f, "none", false));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(1), "the run fails");
    let err = text(&out.stderr);
    // Named by its id: the key the user must open to the backup account.
    assert!(
        f.source_keys.iter().any(|k| err.contains(k.as_str())),
        "the error names the source key: {err}"
    );
    assert!(
        err.contains("kms:Decrypt"),
        "the hint names the missing actions: {err}"
    );

    // Resumed before the fix: it fails again (a second failed copy, a second attempt).
    let again = w.ferry(&["resume"]);
    assert_eq!(again.status.code(), Some(1), "still no key access");

    // The fix, made by the key's owner outside ferry: a statement for B on both keys. The
    // third attempt must not reuse the second's client token (the image copy would come back
    // as the failed one).
    for key in &f.source_keys {
        let mut p = key_policy(&w, PROD, key);
        p["Statement"].as_array_mut().unwrap().push(json!({
            "Sid": "BackupAccountUse", "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{BACKUP}:root") },
            "Action": "kms:*", "Resource": "*"
        }));
        w.rt.block_on(async {
            w.emu
                .kms(PROD, SRC)
                .put_key_policy()
                .key_id(key)
                .policy_name("default")
                .policy(p.to_string())
                .send()
                .await
                .unwrap();
        });
    }
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    assert_b_owns_one_copy_of_each(&w, &f);
    // Nothing half-done is left in B: no failed copies remain.
    let leftovers = w.rt.block_on(async {
        let ec2 = w.emu.ec2(BACKUP, SRC);
        let s = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
        let i = ec2.describe_images().owners("self").send().await.unwrap();
        s.snapshots()
            .iter()
            .filter(|s| s.state().map(|x| x.as_str()) == Some("error"))
            .count()
            + i.images()
                .iter()
                .filter(|i| i.state().map(|x| x.as_str()) == Some("failed"))
                .count()
    });
    assert_eq!(leftovers, 0, "failed copies were cleaned up");
}

#[test]
fn killed_at_any_point_and_resumed_never_copies_twice() {
    // Kill points: after the first mutating call, after the first copy call, with copies pending.
    for (n, at) in [(1u64, "mutating"), (1, "copies"), (2, "copies")] {
        let w = World::new(json!({ "copy_seconds": 1.5 }));
        let f = fixture(&w);
        let plan_file = w.write_plan(&plan(&f, "policy", true));
        w.emu.reset_counters();
        let mut child = w
            .command(&["apply", "--yes", &plan_file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the kill point", Duration::from_secs(60), || {
            let c = w.emu.counters();
            match at {
                "mutating" => c.totals.mutating >= n,
                _ => c.copy_totals.snapshots + c.copy_totals.images >= n,
            }
        });
        kill(&mut child);
        let resumed = w.ferry(&["resume"]);
        assert_eq!(resumed.status.code(), Some(0), "kill point {at} {n}");
        assert_b_owns_one_copy_of_each(&w, &f);
        let (snapshots, images, _) = w.emu.counters().copies_into(BACKUP, SRC);
        assert_eq!(
            (snapshots, images),
            (1, 1),
            "one CopySnapshot and one CopyImage in all (kill point {at} {n})"
        );
    }
}

#[test]
fn an_ami_under_the_aws_managed_key_is_refused_before_any_change() {
    let w = World::new(json!({}));
    let mut f = fixture(&w);
    let managed = encrypted_snapshot(&w, None);
    f.ami = register_image(&w, "default-key-app", &[&managed]);
    let plan_file = w.write_plan(&plan(&f, "policy", false));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("AWS managed key"), "{err}");
    assert!(
        err.contains("reencrypt_managed_sources: true"),
        "names the setting that fixes it: {err}"
    );
    assert!(err.contains(&f.ami), "{err}");
    let c = w.emu.counters();
    assert_eq!(c.mutating(PROD) + c.mutating(BACKUP), 0, "nothing changed");
}

#[test]
fn ami_copy_to_another_region_of_the_same_account_re_encrypts_every_volume() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&format!(
        r#"version: 1
name: west
accounts:
  prod: {{ id: "{PROD}" }}
keys:
  west:
    account: prod
    region: us-west-2
    alias: alias/west
    create: true
migrations:
  - id: golden-west
    type: ami-copy
    source: {{ account: prod, region: {SRC}, images: [{ami}] }}
    destination: {{ region: us-west-2, key: west }}
"#,
        ami = f.ami
    ));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    let west_key = w.key_arn("us-west-2", "alias/west").expect("key created");
    let keys: Vec<String> = w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, "us-west-2");
        let images = ec2.describe_images().owners("self").send().await.unwrap();
        assert_eq!(images.images().len(), 1, "one copy");
        let snaps: Vec<String> = images.images()[0]
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect();
        let out = ec2
            .describe_snapshots()
            .filters(
                Filter::builder()
                    .name("snapshot-id")
                    .set_values(Some(snaps))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.snapshots()
            .iter()
            .map(|s| s.kms_key_id().unwrap_or_default().to_string())
            .collect()
    });
    assert_eq!(
        keys,
        vec![west_key.clone(), west_key],
        "both volumes under the new key"
    );
    let c = w.emu.counters();
    assert_eq!(
        c.requests(PROD, "ec2", "ModifyImageAttribute"),
        0,
        "no sharing within one account"
    );
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert!(text(&again.stdout).contains("No changes"));
    assert_eq!(w.emu.counters().mutating(PROD), 0);
}

#[test]
fn shares_removed_by_hand_are_shown_and_made_again() {
    let w = World::new(json!({ "copy_seconds": 0.2 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&plan(&f, "grant", false));
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    assert_eq!(
        shares(&w, &f),
        (true, true),
        "without revoke_after the shares stay"
    );

    // Someone takes both shares back by hand.
    w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, SRC);
        ec2.modify_image_attribute()
            .image_id(&f.ami)
            .launch_permission(
                aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                    .remove(
                        aws_sdk_ec2::types::LaunchPermission::builder()
                            .user_id(BACKUP)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        ec2.modify_snapshot_attribute()
            .snapshot_id(&f.standalone)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(aws_sdk_ec2::types::OperationType::Remove)
            .user_ids(BACKUP)
            .send()
            .await
            .unwrap();
    });
    assert_eq!(shares(&w, &f), (false, false));

    let dry = w.ferry(&["plan", &plan_file]);
    let out = text(&dry.stdout);
    assert!(
        out.contains(&format!("+ {}: share with `backup`", f.ami)),
        "{out}"
    );
    assert!(
        out.contains(&format!("+ {}: share with `backup`", f.standalone)),
        "{out}"
    );
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    assert_eq!(shares(&w, &f), (true, true), "apply shared both again");
    assert_b_owns_one_copy_of_each(&w, &f);
    assert_zero_mutating_reapply(&w, &plan_file);
}

#[test]
fn lost_answers_across_accounts_leave_one_copy_each_and_nothing_shared_after_revoke() {
    for seed in super::soak_seeds(&[5, 9, 13]) {
        lost_answers_across_accounts(seed);
    }
}

fn lost_answers_across_accounts(seed: u64) {
    // A third of the mutating calls take effect and lose their answer: shares, statements,
    // copies and their revokes alike.
    across_accounts_under(
        seed,
        "policy",
        json!({ "lost_response_rate": 0.3, "seed": seed }),
        None,
    );
}

#[test]
fn fault_matrix_ami_and_snapshot_copy_across_accounts_with_revoke() {
    for seed in super::soak_seeds(&[7]) {
        let access = if seed % 2 == 0 { "grant" } else { "policy" };
        across_accounts_under(seed, access, super::every_fault(seed), None);
    }
}

#[test]
fn killed_at_random_points_under_faults_across_accounts_leaves_nothing_shared() {
    for seed in super::soak_seeds(&[8]) {
        across_accounts_under(
            seed,
            "policy",
            super::every_fault(seed),
            Some(1 + seed % 16),
        );
    }
}

/// The cross-account plan with `revoke_after` under `faults` (and a kill): one copy of each in
/// B, nothing left shared, every key policy as it was, a re-apply with 0 mutating calls.
fn across_accounts_under(seed: u64, access: &str, faults: Value, kill_at: Option<u64>) {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&plan(&f, access, true));
    w.emu.reset_counters();
    w.emu.configure(faults);
    let out = super::apply_until_done(&w, &plan_file, kill_at, 6);
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}, kill at {kill_at:?}: done, with resumes if need be"
    );
    assert!(
        w.emu.counters().totals.lost > 0,
        "seed {seed}: answers were lost"
    );
    w.emu.configure(super::no_faults());
    assert_all_taken_back(&w, &f, &plan_file, &format!("seed {seed}"));
}

/// After a `revoke_after` run: one copy of each in B, no share, grant or statement of ferry's
/// left in A (every key policy as it was), and a re-apply with 0 mutating calls.
fn assert_all_taken_back(w: &World, f: &Fixture, plan_file: &str, case: &str) {
    let grants = grants_on_source_keys(w, f);
    assert!(grants.is_empty(), "{case}: every grant retired: {grants:?}");
    assert_b_owns_one_copy_of_each(w, f);
    assert_eq!(
        shares(w, f),
        (false, false),
        "{case}: every share taken back"
    );
    for (key, before) in f.source_keys.iter().zip(&f.policies_before) {
        assert_eq!(
            &key_policy(w, PROD, key),
            before,
            "{case}: the key policy is as it was"
        );
    }
    assert_zero_mutating_reapply(w, plan_file);
}

#[test]
fn the_external_id_is_in_no_byte_of_s3_state_verbose_output_or_temporary_files() {
    const SECRET: &str = "not-a-real-secret";
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    w.rt.block_on(async {
        w.emu
            .s3(PROD, SRC)
            .create_bucket()
            .bucket("xacct-state")
            .send()
            .await
            .unwrap();
    });
    let plan_file = w.write_plan(&format!(
        "{}settings:\n  state: s3://xacct-state/runs\n",
        plan(&f, "grant", true)
    ));
    let tmp = w.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = w
        .command(&["-vv", "apply", "--yes", &plan_file])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "printed at -vv"
    );
    // A resume of the stored plan, from S3, on "another machine" (no plan file there).
    let elsewhere = tempfile::tempdir().unwrap();
    let resumed = w
        .command(&["-vv", "--state", "s3://xacct-state/runs", "status"])
        .current_dir(elsewhere.path())
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(!text(&resumed.stdout).contains(SECRET) && !text(&resumed.stderr).contains(SECRET));
    let objects = w.rt.block_on(async {
        let s3 = w.emu.s3(PROD, SRC);
        let list = s3
            .list_objects_v2()
            .bucket("xacct-state")
            .send()
            .await
            .unwrap();
        let mut bodies = Vec::new();
        for o in list.contents() {
            let k = o.key().unwrap().to_string();
            let b = s3
                .get_object()
                .bucket("xacct-state")
                .key(&k)
                .send()
                .await
                .unwrap();
            bodies.push((k, b.body.collect().await.unwrap().into_bytes()));
        }
        bodies
    });
    assert!(objects.len() > 3, "the run is in S3: {}", objects.len());
    for (k, body) in &objects {
        assert!(
            !String::from_utf8_lossy(body).contains(SECRET),
            "s3://xacct-state/{k} holds the external id"
        );
    }
    assert!(
        objects.iter().any(
            |(k, b)| k.ends_with("plan.yaml") && String::from_utf8_lossy(b).contains("sha256:")
        ),
        "the stored plan keeps the secret's fingerprint"
    );
    // Every temporary file ferry made is gone.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_revoke_right_after_the_change_takes_back_what_reads_do_not_show_yet() {
    for access in ["grant", "policy"] {
        // Shares, grants and key policies show in reads 1 s after they change (ferry waits up
        // to 1.5 s); copies take 0.1 s, so the revoke reads before ferry's changes show.
        let w = World::new(json!({ "copy_seconds": 0.1, "visibility_delay_ms": 1000 }));
        let f = fixture(&w);
        let plan_file = w.write_plan(&plan(&f, access, true));
        let out = w.ferry(&["apply", "--yes", &plan_file]);
        assert_eq!(out.status.code(), Some(0), "{access}");
        w.emu.configure(json!({ "visibility_delay_ms": 0 }));
        assert_all_taken_back(&w, &f, &plan_file, access);
    }
}

#[test]
fn grants_the_destination_account_issued_before_ferry_gave_it_access_stay() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    let data_key = f.source_keys[1].clone();
    // Before ferry: A lets B make grants on the data key, and B makes one of its own.
    let (theirs, earlier) = w.rt.block_on(async {
        let theirs = w
            .emu
            .kms(PROD, SRC)
            .create_grant()
            .key_id(&data_key)
            .grantee_principal(format!("arn:aws:iam::{BACKUP}:root"))
            .operations(aws_sdk_kms::types::GrantOperation::CreateGrant)
            .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
            .name("someone-elses-grant")
            .send()
            .await
            .unwrap()
            .grant_id()
            .unwrap()
            .to_string();
        let earlier = w
            .emu
            .kms(BACKUP, SRC)
            .create_grant()
            .key_id(&data_key)
            .grantee_principal(format!("arn:aws:iam::{BACKUP}:role/app"))
            .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
            .send()
            .await
            .unwrap()
            .grant_id()
            .unwrap()
            .to_string();
        (theirs, earlier)
    });
    std::thread::sleep(Duration::from_millis(50));
    let plan_file = w.write_plan(&plan(&f, "policy", true));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_b_owns_one_copy_of_each(&w, &f);
    let left: Vec<String> = w.rt.block_on(async {
        let out = w
            .emu
            .kms(PROD, SRC)
            .list_grants()
            .key_id(&data_key)
            .send()
            .await
            .unwrap();
        out.grants()
            .iter()
            .filter_map(|g| g.grant_id().map(str::to_string))
            .collect()
    });
    let mut want = vec![theirs, earlier];
    want.sort();
    let mut left = left;
    left.sort();
    assert_eq!(
        left, want,
        "only the grants from before ferry stay; those B's copies made are revoked"
    );
    let grants = grants_on_source_keys(&w, &f);
    assert_eq!(grants.len(), 1, "B's own earlier grant: {grants:?}");
}

#[test]
fn a_run_longer_than_the_assumed_role_session_completes() {
    // Sessions of the role assumed in the backup account end after 2 s; its copies take 3 s.
    let w = World::new(json!({ "copy_seconds": 3.0, "session_seconds": 2 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&plan(&f, "grant", false));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_b_owns_one_copy_of_each(&w, &f);
    let c = w.emu.counters();
    assert!(
        c.requests(BACKUP, "sts", "AssumeRole") + c.requests(PROD, "sts", "AssumeRole") >= 2,
        "the session was renewed: {:#?}",
        c.requests
    );
}

/// The tags of a snapshot (in `account`, us-east-1).
fn snapshot_tags(w: &World, account: &str, id: &str) -> std::collections::BTreeMap<String, String> {
    w.rt.block_on(async {
        let out = w
            .emu
            .ec2(account, SRC)
            .describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await
            .unwrap();
        out.snapshots()[0]
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

fn tag_source(w: &World, id: &str, tags: &[(&str, &str)]) {
    w.rt.block_on(async {
        let mut req = w.emu.ec2(PROD, SRC).create_tags().resources(id);
        for (k, v) in tags {
            req = req.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        req.send().await.expect("CreateTags");
    })
}

#[test]
fn copy_tags_across_accounts_carry_the_sources_tags_and_a_changed_tag_is_mended() {
    let w = World::new(json!({ "copy_seconds": 0.2 }));
    let f = fixture(&w);
    tag_source(&w, &f.ami, &[("Team", "platform"), ("Name", "golden-app")]);
    tag_source(
        &w,
        &f.standalone,
        &[
            ("Team", "payments"),
            ("CostCenter", "42"),
            ("Purpose", "prod"),
            ("aws:backup:source-resource", "vol-1"),
        ],
    );
    let plan_file = w.write_plan(&format!(
        r#"version: 1
name: xacct
accounts:
  prod: {{ id: "{PROD}" }}
  backup: {{ id: "{BACKUP}", role_arn: "arn:aws:iam::{BACKUP}:role/ferry-migrator", external_id: "{EXTERNAL_ID}" }}
migrations:
  - id: standalone
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, snapshots: [{snap}] }}
    destination: {{ account: backup, key: alias/backup-ebs }}
    copy_tags: true
    tags: {{ Purpose: dr }}
  - id: golden
    type: ami-copy
    source: {{ account: prod, region: {SRC}, images: [{ami}] }}
    destination: {{ account: backup, key: alias/backup-ebs }}
    copy_tags: true
"#,
        snap = f.standalone,
        ami = f.ami
    ));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let (_, copies) = copies_in_backup(&w);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let tags = snapshot_tags(&w, BACKUP, &copies[0].0);
    assert_eq!(
        tags.get("Team").map(String::as_str),
        Some("payments"),
        "{tags:?}"
    );
    assert_eq!(tags.get("CostCenter").map(String::as_str), Some("42"));
    assert_eq!(
        tags.get("Purpose").map(String::as_str),
        Some("dr"),
        "the migration's tags win over the source's"
    );
    assert!(
        !tags.keys().any(|k| k.starts_with("aws:")),
        "no aws: keys: {tags:?}"
    );
    assert_eq!(
        tags.get("ferry:migration").map(String::as_str),
        Some("standalone")
    );
    let (amis, _) = copies_in_backup(&w);
    assert_eq!(amis.len(), 1);
    let image_tags: std::collections::BTreeMap<String, String> = w.rt.block_on(async {
        let out = w
            .emu
            .ec2(BACKUP, SRC)
            .describe_images()
            .image_ids(&amis[0].0)
            .send()
            .await
            .unwrap();
        out.images()[0]
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
            .collect()
    });
    assert_eq!(
        image_tags.get("Team").map(String::as_str),
        Some("platform"),
        "{image_tags:?}"
    );
    assert_eq!(
        image_tags.get("Name").map(String::as_str),
        Some("golden-app")
    );

    // A tag changed on the source is drift: shown, then mended on the copy.
    tag_source(&w, &f.standalone, &[("Team", "billing")]);
    let dry = w.ferry(&["plan", &plan_file]);
    assert!(
        text(&dry.stdout).contains(r#"~ tag Team: "payments" -> "billing""#),
        "the plan shows the changed tag"
    );
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let tags = snapshot_tags(&w, BACKUP, &copies[0].0);
    assert_eq!(tags.get("Team").map(String::as_str), Some("billing"));
    let (_, again) = copies_in_backup(&w);
    assert_eq!(again.len(), 1, "mended in place, no second copy");
    assert_zero_mutating_reapply(&w, &plan_file);
}

fn reencrypt_plan(f: &Fixture, setting: &str) -> String {
    format!(
        r#"version: 1
name: xacct
accounts:
  prod:
    id: "{PROD}"
  backup:
    id: "{BACKUP}"
    role_arn: arn:aws:iam::{BACKUP}:role/ferry-migrator
    external_id: "{EXTERNAL_ID}"
keys:
  backup-ebs:
    account: backup
    region: {SRC}
    alias: alias/backup-ebs
  src-cmk:
    account: prod
    region: {SRC}
    alias: alias/app-root
migrations:
  - id: standalone
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, snapshots: [{snap}] }}
    destination: {{ account: backup, key: backup-ebs }}
    revoke_after: true
{setting}"#,
        snap = f.standalone,
    )
}

/// Snapshots in prod/us-east-1 that ferry made as intermediate copies.
fn intermediates(w: &World) -> Vec<String> {
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name("tag:ferry:intermediate")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect()
    })
}

#[test]
fn a_snapshot_under_aws_ebs_is_refused_naming_the_setting_and_with_it_is_copied_through_an_intermediate()
 {
    let w = World::new(json!({}));
    let mut f = fixture(&w);
    f.standalone = encrypted_snapshot(&w, None);

    // Without the setting: refused before any change, the hint names it.
    let plan_file = w.write_plan(&reencrypt_plan(&f, ""));
    w.emu.reset_counters();
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("AWS managed key"), "{err}");
    assert!(err.contains("reencrypt_managed_sources: true"), "{err}");
    assert!(err.contains("intermediate_key"), "{err}");
    let c = w.emu.counters();
    assert_eq!(c.mutating(PROD) + c.mutating(BACKUP), 0, "nothing changed");

    // With it: copied under src-cmk in prod, that copy shared and copied by backup under its
    // own key, then deleted.
    let plan_file = w.write_plan(&reencrypt_plan(
        &f,
        "    reencrypt_managed_sources: true\n    intermediate_key: src-cmk\n",
    ));
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        text(&dry.stdout).contains("/reencrypt"),
        "{}",
        text(&dry.stdout)
    );
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let (_, snaps) = copies_in_backup(&w);
    assert_eq!(snaps.len(), 1, "one copy in backup: {snaps:?}");
    assert_eq!(snaps[0].1, f.backup_key, "under backup's key");
    assert_eq!(
        intermediates(&w),
        Vec::<String>::new(),
        "no intermediate copy remains"
    );
    assert_eq!(
        w.emu.counters().requests(PROD, "ec2", "CopySnapshot"),
        1,
        "one intermediate copy was made"
    );
    // The share ferry made of the intermediate and the key access are taken back.
    let policy = key_policy(&w, PROD, &f.source_keys[0]);
    assert!(ferry_statements(&policy).is_empty(), "{policy}");
    assert_zero_mutating_reapply(&w, &plan_file);
    assert_eq!(intermediates(&w), Vec::<String>::new());

    // An intermediate a stopped run left behind is deleted by the next run...
    let leftover = w.rt.block_on(async {
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        w.emu
            .ec2(PROD, SRC)
            .copy_snapshot()
            .source_snapshot_id(&f.standalone)
            .source_region(SRC)
            .encrypted(true)
            .kms_key_id(&f.source_keys[0])
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Snapshot)
                    .tags(tag("ferry:plan", "xacct"))
                    .tags(tag("ferry:migration", "standalone"))
                    .tags(tag("ferry:source", &f.standalone))
                    .tags(tag("ferry:intermediate", "true"))
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .snapshot_id()
            .unwrap()
            .to_string()
    });
    assert_eq!(intermediates(&w), vec![leftover.clone()]);
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains(&leftover),
        "shown: {}",
        text(&again.stdout)
    );
    assert_eq!(
        intermediates(&w),
        Vec::<String>::new(),
        "the leftover is deleted"
    );
    assert_eq!(
        copies_in_backup(&w).1.len(),
        1,
        "and no second copy is made"
    );
    // ...and `ferry destroy` takes back the rest.
    let destroyed = w.ferry(&["destroy", "--yes", &plan_file]);
    assert_eq!(destroyed.status.code(), Some(0));
    assert_eq!(copies_in_backup(&w).1, Vec::<SnapshotCopy>::new());
}

#[test]
fn an_ami_with_a_volume_under_aws_ebs_is_copied_through_an_intermediate_ami_under_the_setting() {
    let w = World::new(json!({}));
    let mut f = fixture(&w);
    let managed = encrypted_snapshot(&w, None);
    let data = encrypted_snapshot(&w, Some(&f.source_keys[1]));
    f.ami = register_image(&w, "default-key-app", &[&managed, &data]);
    let text_plan = plan(&f, "policy", true).replace(
        "  - id: standalone",
        "    reencrypt_managed_sources: true\n    intermediate_key: src-cmk\n  - id: standalone",
    );
    let text_plan = text_plan.replace(
        "migrations:",
        &format!("  src-cmk:\n    account: prod\n    region: {SRC}\n    alias: alias/app-root\nmigrations:"),
    );
    let plan_file = w.write_plan(&text_plan);
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let (amis, _) = copies_in_backup(&w);
    assert_eq!(amis.len(), 1, "one AMI copy in backup: {amis:?}");
    assert_eq!(amis[0].1.len(), 2, "both volumes");
    assert!(
        amis[0].1.iter().all(|k| *k == f.backup_key),
        "every volume under backup's key: {amis:?}"
    );
    // No intermediate AMI or snapshot is left in prod; the source AMI is untouched.
    assert_eq!(intermediates(&w), Vec::<String>::new());
    let images: Vec<String> = w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .describe_images()
            .owners("self")
            .filters(
                Filter::builder()
                    .name("tag:ferry:plan")
                    .values("xacct")
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect()
    });
    assert_eq!(
        images,
        Vec::<String>::new(),
        "no AMI of ferry's is left in prod"
    );
    let all = w.rt.block_on(async {
        let out = w
            .emu
            .ec2(PROD, SRC)
            .describe_images()
            .owners("self")
            .send()
            .await;
        out.unwrap().images().len()
    });
    assert_eq!(
        all, 2,
        "prod holds its two AMIs (the fixture's and this one), no copy"
    );
    assert_eq!(
        w.emu.counters().requests(PROD, "ec2", "CopyImage"),
        1,
        "one intermediate AMI copy was made"
    );
    // Shares of the intermediate and the key access were taken back.
    let (ami_shared, snap_shared) = shares(&w, &f);
    assert!(!ami_shared && !snap_shared);
    let policy = key_policy(&w, PROD, &f.source_keys[0]);
    assert!(ferry_statements(&policy).is_empty(), "{policy}");
    assert_zero_mutating_reapply(&w, &plan_file);
}

/// A nightly AMI tagged Name=nightly-app (one second apart: AMI creation times are seconds).
fn nightly_ami(w: &World, n: usize) -> String {
    std::thread::sleep(Duration::from_millis(1100));
    let snap = encrypted_snapshot(w, Some(&w.key_arn(SRC, "alias/app-root").unwrap()));
    let ami = register_image(w, &format!("nightly-app-{n}"), &[&snap]);
    w.rt.block_on(async {
        w.emu
            .ec2(PROD, SRC)
            .create_tags()
            .resources(&ami)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("Name")
                    .value("nightly-app")
                    .build(),
            )
            .send()
            .await
            .unwrap()
    });
    ami
}

/// (AMI copy, its ferry:source, its snapshots) in prod/us-west-2.
fn west_copies(w: &World) -> Vec<(String, String, Vec<String>)> {
    w.rt.block_on(async {
        let images = w
            .emu
            .ec2(PROD, "us-west-2")
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap();
        let mut out: Vec<_> = images
            .images()
            .iter()
            .map(|i| {
                let source = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("ferry:source"))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_string();
                let snaps = i
                    .block_device_mappings()
                    .iter()
                    .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
                    .collect();
                (i.image_id().unwrap().to_string(), source, snaps)
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    })
}

#[test]
fn ami_retention_keeps_the_newest_copies_of_a_name_and_deregisters_the_rest_with_their_snapshots() {
    let w = World::new(json!({ "copy_seconds": 0.2 }));
    w.key(SRC, "alias/app-root");
    let amis: Vec<String> = (0..3).map(|n| nightly_ami(&w, n)).collect();
    let plan_file = w.write_plan(&format!(
        r#"version: 1
name: west
accounts:
  prod: {{ id: "{PROD}" }}
keys:
  west: {{ account: prod, region: us-west-2, alias: alias/west, create: true }}
migrations:
  - id: nightly-ami
    type: ami-copy
    source: {{ account: prod, region: {SRC}, tags: {{ Name: nightly-app }} }}
    destination: {{ region: us-west-2, key: west }}
    retention: {{ keep_last: 2 }}
"#
    ));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let copies = west_copies(&w);
    let sources: Vec<&str> = copies.iter().map(|c| c.1.as_str()).collect();
    let mut newest = vec![amis[1].as_str(), amis[2].as_str()];
    newest.sort();
    assert_eq!(sources, newest, "the two newest of the lineage are copied");

    // A new nightly AMI: one copy made, the oldest copy deregistered with its snapshots.
    let fourth = nightly_ami(&w, 3);
    let dropped = copies
        .iter()
        .find(|c| c.1 == amis[1])
        .cloned()
        .expect("the copy of the second AMI");
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("beyond the retention"),
        "{}",
        text(&out.stdout)
    );
    let now: Vec<String> = west_copies(&w).into_iter().map(|c| c.1).collect();
    let mut want = vec![amis[2].clone(), fourth];
    want.sort();
    assert_eq!(now, want);
    let left: usize = w.rt.block_on(async {
        let ec2 = w.emu.ec2(PROD, "us-west-2");
        let out = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name("snapshot-id")
                    .set_values(Some(dropped.2.clone()))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.snapshots().len()
    });
    assert_eq!(left, 0, "the deregistered copy's snapshots are deleted");
    assert_zero_mutating_reapply(&w, &plan_file);
}

/// The operations, sorted, of the grants named `ferry-…` on `key`, with their grantee.
fn ferry_grants(w: &World, key: &str) -> Vec<(String, Vec<String>)> {
    w.rt.block_on(async {
        let out = w
            .emu
            .kms(PROD, SRC)
            .list_grants()
            .key_id(key)
            .send()
            .await
            .unwrap();
        out.grants()
            .iter()
            .filter(|g| g.name().is_some_and(|n| n.starts_with("ferry-")))
            .map(|g| {
                let mut ops: Vec<String> = g
                    .operations()
                    .iter()
                    .map(|o| o.as_str().to_string())
                    .collect();
                ops.sort();
                (g.grantee_principal().unwrap_or_default().to_string(), ops)
            })
            .collect()
    })
}

/// The grant operations that express kms:DescribeKey, kms:CreateGrant, kms:GenerateDataKey*,
/// kms:ReEncrypt* and kms:Decrypt (KMS developer guide: key-policy-default for
/// GenerateDataKey*, grants.html#terms-grant-operations for ReEncrypt*), sorted.
const COPY_GRANT_OPERATIONS: [&str; 9] = [
    "CreateGrant",
    "Decrypt",
    "DescribeKey",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
];

#[test]
fn the_grant_ferry_makes_carries_every_operation_of_the_key_policy_statement() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    let plan_file = w.write_plan(&plan(&f, "grant", false));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_b_owns_one_copy_of_each(&w, &f);
    for key in &f.source_keys {
        let grants = ferry_grants(&w, key);
        assert_eq!(
            grants,
            vec![(
                format!("arn:aws:iam::{BACKUP}:root"),
                COPY_GRANT_OPERATIONS.map(String::from).to_vec()
            )],
            "one grant for B on {key}, kept (revoke_after: false)"
        );
    }
    assert_zero_mutating_reapply(&w, &plan_file);
}

#[test]
fn a_grant_short_of_one_operation_fails_the_copy_as_a_missing_key_policy_does() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    // The key's owner grants B use of both keys by hand, one operation short; the plan leaves
    // key access alone.
    let grant = |ops: &[&str]| {
        for key in &f.source_keys {
            w.rt.block_on(async {
                w.emu
                    .kms(PROD, SRC)
                    .create_grant()
                    .key_id(key)
                    .grantee_principal(format!("arn:aws:iam::{BACKUP}:root"))
                    .set_operations(Some(
                        ops.iter()
                            .map(|o| aws_sdk_kms::types::GrantOperation::from(*o))
                            .collect(),
                    ))
                    .send()
                    .await
                    .unwrap();
            });
        }
    };
    let short: Vec<&str> = COPY_GRANT_OPERATIONS
        .into_iter()
        .filter(|o| *o != "GenerateDataKeyWithoutPlaintext")
        .collect();
    grant(&short);
    let plan_file = w.write_plan(&plan(&f, "none", false));
    let out = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(out.status.code(), Some(1), "the run fails");
    let err = text(&out.stderr);
    assert!(
        err.contains("kms:GenerateDataKeyWithoutPlaintext"),
        "the failure names the missing operation: {err}"
    );
    assert!(
        err.contains("kms:Decrypt"),
        "the hint names the permissions a copy needs: {err}"
    );
    let states: Vec<String> = w.rt.block_on(async {
        let ec2 = w.emu.ec2(BACKUP, SRC);
        let s = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
        s.snapshots()
            .iter()
            .map(|s| {
                s.state()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect()
    });
    assert!(
        !states.is_empty() && states.iter().all(|s| s == "error"),
        "every copy B tried failed: {states:?}"
    );

    // The missing operation granted too: the run goes on to the end.
    grant(&["GenerateDataKeyWithoutPlaintext"]);
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_b_owns_one_copy_of_each(&w, &f);
}

#[test]
fn a_wrong_external_id_or_a_trust_policy_without_the_caller_is_refused_before_any_change() {
    let w = World::new(json!({ "copy_seconds": 0.3 }));
    let f = fixture(&w);
    let role = format!("arn:aws:iam::{BACKUP}:role/ferry-migrator");
    let refused = |plan_text: &str| {
        let plan_file = w.write_plan(plan_text);
        w.emu.reset_counters();
        let out = w.ferry(&["apply", "--yes", &plan_file]);
        assert_eq!(out.status.code(), Some(1), "the run fails");
        let c = w.emu.counters();
        assert_eq!(
            c.mutating(PROD) + c.mutating(BACKUP),
            0,
            "nothing changed: {:#?}",
            c.requests
        );
        assert_eq!(c.copy_totals.snapshots + c.copy_totals.images, 0);
        assert!(
            c.requests(PROD, "sts", "AssumeRole") >= 1,
            "ferry asked to assume the role: {:#?}",
            c.requests
        );
        text(&out.stderr)
    };

    // The plan's external id is not the one the role's trust policy asks for.
    let err = refused(&plan(&f, "policy", true).replace(EXTERNAL_ID, "a-wrong-external-id"));
    assert!(
        err.contains(&format!("ferry could not assume {role}")),
        "a short sentence: {err}"
    );
    assert!(
        err.contains("its trust policy must allow"),
        "the fix: {err}"
    );
    assert!(err.contains("external_id"), "{err}");
    assert!(
        !err.contains("a-wrong-external-id"),
        "the external id is never printed"
    );

    // The trust policy names another account.
    w.rt.block_on(async {
        w.emu
            .iam(BACKUP)
            .update_assume_role_policy()
            .role_name("ferry-migrator")
            .policy_document(
                super::common::emulator::trust_policy("999999999999", Some(EXTERNAL_ID))
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
    });
    let err = refused(&plan(&f, "policy", true));
    assert!(
        err.contains(&format!("ferry could not assume {role}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("arn:aws:iam::{PROD}:root")),
        "names the identity the trust policy must allow: {err}"
    );
    assert_eq!(shares(&w, &f), (false, false), "nothing was shared");
}
