//! `s3-replication` end to end: versioning, the role, the key policy, the replication
//! configuration merged with the bucket's other rules, and the backfill of existing objects.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Destination,
    ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter, ReplicationRuleStatus,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, StorageClass, VersioningConfiguration,
};
use serde_json::{Value, json};

use super::{DST, PROD, SRC, World, bad_input, iam_policy, kill, text, wait_for};

pub(super) const SOURCE: &str = "app-logs";
pub(super) const DESTINATION: &str = "app-logs-dr";
pub(super) const ROLE: &str = "ferry-app-logs-replication";
const OBJECTS: usize = 500;

/// The key of object `i`: a few prefixes, and some keys that need encoding.
fn object_key(i: usize) -> String {
    match i % 50 {
        0 => format!("odd keys/{i:04} ünïcode + space.txt"),
        _ => format!("logs/{:02}/{i:04}.log", i % 7),
    }
}

fn body(i: usize) -> Vec<u8> {
    format!("object {i}\n").repeat(1 + i % 13).into_bytes()
}

fn s3_plan(key: &str, backfill: bool) -> String {
    s3_plan_with(key, backfill, "")
}

fn s3_plan_with(key: &str, backfill: bool, settings: &str) -> String {
    format!(
        r#"version: 1
name: e2e
accounts:
  prod: {{ id: "{PROD}" }}
migrations:
  - id: app-logs
    type: s3-replication
    source: {{ account: prod, bucket: {SOURCE} }}
    destination: {{ bucket: {DESTINATION}, region: {DST}, create: true, key: {key} }}
    role: {{ name: {ROLE} }}
    backfill: {backfill}
settings:
  tags: {{ MigratedBy: ferry }}
{settings}"#
    )
}

/// The old rule someone else put on the source bucket (same role: a bucket has one).
fn old_rule() -> ReplicationRule {
    ReplicationRule::builder()
        .id("someone-elses-rule")
        .priority(7)
        .status(ReplicationRuleStatus::Enabled)
        .filter(ReplicationRuleFilter::builder().prefix("audit/").build())
        .destination(
            Destination::builder()
                .bucket("arn:aws:s3:::audit-archive")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// The source bucket in us-east-1: versioned, default SSE-KMS under `key`, `n` objects under
/// it, and an unrelated replication rule.
pub(super) fn source_bucket(w: &World, key: &str, n: usize) {
    w.rt.block_on(async {
        let s3 = w.emu.s3(PROD, SRC);
        s3.create_bucket().bucket(SOURCE).send().await.unwrap();
        s3.put_bucket_versioning()
            .bucket(SOURCE)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        s3.put_bucket_encryption()
            .bucket(SOURCE)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(
                        ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(
                                ServerSideEncryptionByDefault::builder()
                                    .sse_algorithm(ServerSideEncryption::AwsKms)
                                    .kms_master_key_id(key)
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        s3.put_bucket_replication()
            .bucket(SOURCE)
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role(format!("arn:aws:iam::{PROD}:role/{ROLE}"))
                    .rules(old_rule())
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let puts = (0..n).map(|i| {
            let s3 = s3.clone();
            async move {
                s3.put_object()
                    .bucket(SOURCE)
                    .key(object_key(i))
                    .body(ByteStream::from(body(i)))
                    .content_type(if i % 2 == 0 {
                        "text/plain"
                    } else {
                        "application/x-log"
                    })
                    .metadata("origin", format!("host-{}", i % 5))
                    .tagging(format!("team=logs&shard={}", i % 4))
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(key)
                    // Every third object in another storage class, which a copy must keep.
                    .set_storage_class((i % 3 == 0).then_some(StorageClass::StandardIa))
                    .send()
                    .await
                    .unwrap();
            }
        });
        use futures::StreamExt;
        futures::stream::iter(puts)
            .buffer_unordered(50)
            .collect::<Vec<()>>()
            .await;
    });
}

/// A bucket that already exists in the destination region (for refusals).
fn destination_bucket(w: &World) {
    w.rt.block_on(async {
        w.emu
            .s3(PROD, DST)
            .create_bucket()
            .bucket(DESTINATION)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(DST))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
}

fn copy_calls(w: &World) -> u64 {
    w.emu.counters().requests(PROD, "s3", "CopyObject")
}

/// The first page (1,000) of the destination bucket's versions and delete markers.
pub(super) fn destination_versions(
    w: &World,
) -> aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput {
    w.rt.block_on(async {
        w.emu
            .s3(PROD, DST)
            .list_object_versions()
            .bucket(DESTINATION)
            .send()
            .await
            .unwrap()
    })
}

/// Keys in the destination bucket.
fn destination_keys(w: &World) -> Vec<String> {
    w.rt.block_on(async {
        let mut keys = Vec::new();
        let mut pages = w
            .emu
            .s3(PROD, DST)
            .list_objects_v2()
            .bucket(DESTINATION)
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            let Ok(p) = p else { break };
            keys.extend(
                p.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys
    })
}

/// Every source object is in the destination: same bytes, content type and metadata,
/// encrypted with `key`.
fn assert_backfilled(w: &World, key: &str) {
    assert_copied(w, key, 0..OBJECTS)
}

/// Objects `which` are in the destination: same bytes, content type, storage class, metadata
/// and tags, encrypted with `key`.
pub(super) fn assert_copied(w: &World, key: &str, which: impl Iterator<Item = usize>) {
    w.rt.block_on(async {
        let src = w.emu.s3(PROD, SRC);
        let dst = w.emu.s3(PROD, DST);
        for i in which {
            let k = object_key(i);
            let a = src
                .get_object()
                .bucket(SOURCE)
                .key(&k)
                .send()
                .await
                .unwrap();
            let b = dst
                .get_object()
                .bucket(DESTINATION)
                .key(&k)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{k} is missing in the destination: {e:?}"));
            assert_eq!(
                b.server_side_encryption(),
                Some(&ServerSideEncryption::AwsKms)
            );
            assert_eq!(
                b.ssekms_key_id(),
                Some(key),
                "{k} is encrypted with the destination key"
            );
            assert_eq!(b.content_type(), a.content_type(), "{k}: content type kept");
            assert_eq!(
                b.storage_class().map(|c| c.as_str()),
                (i % 3 == 0).then_some("STANDARD_IA"),
                "{k}: storage class kept"
            );
            assert_eq!(
                b.metadata().and_then(|m| m.get("origin")),
                Some(&format!("host-{}", i % 5)),
                "{k}: metadata kept"
            );
            let a = a.body.collect().await.unwrap().into_bytes();
            let b = b.body.collect().await.unwrap().into_bytes();
            assert_eq!(a, b, "{k}: identical bytes");
            assert_eq!(
                object_tags(&dst, DESTINATION, &k).await,
                [
                    ("shard".to_string(), (i % 4).to_string()),
                    ("team".to_string(), "logs".to_string())
                ],
                "{k}: tags kept"
            );
        }
    });
}

pub(super) async fn object_tags(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Vec<(String, String)> {
    let t = s3
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = t
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    tags.sort();
    tags
}

/// The source bucket's replication configuration.
fn replication(w: &World) -> ReplicationConfiguration {
    w.rt.block_on(async {
        w.emu
            .s3(PROD, SRC)
            .get_bucket_replication()
            .bucket(SOURCE)
            .send()
            .await
            .unwrap()
            .replication_configuration()
            .unwrap()
            .clone()
    })
}

/// The ids of the source bucket's replication rules.
fn rule_ids(w: &World) -> Vec<String> {
    replication(w)
        .rules()
        .iter()
        .filter_map(|r| r.id().map(str::to_string))
        .collect()
}

fn statements(policy: &Value) -> Vec<Value> {
    policy["Statement"].as_array().cloned().unwrap_or_default()
}

#[test]
fn s3_replication_sets_up_kms_replication_keeps_other_rules_and_backfills() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, OBJECTS);
    let plan_file = w.write_plan(&s3_plan("alias/s3-dr", true));

    // The dry run shows the replication rule and what the backfill would copy; changes nothing.
    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    let out = text(&dry.stdout);
    assert!(out.contains(&format!("copy {OBJECTS} objects")), "{out}");
    assert!(out.contains("+ rule {"), "the rule diff is shown: {out}");
    assert!(
        out.contains("= rule someone-elses-rule (kept)"),
        "the other rule is kept: {out}"
    );
    assert_eq!(
        w.emu.counters().mutating(PROD),
        0,
        "ferry plan changes nothing"
    );

    let started = std::time::Instant::now();
    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    let took = started.elapsed();
    assert_eq!(applied.status.code(), Some(0));
    iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    eprintln!(
        "apply with a backfill of {OBJECTS} objects took {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(
        copy_calls(&w),
        OBJECTS as u64,
        "one CopyObject per object, no more"
    );

    w.rt.block_on(async {
        // Versioning on both buckets.
        for (region, bucket) in [(SRC, SOURCE), (DST, DESTINATION)] {
            let v = w
                .emu
                .s3(PROD, region)
                .get_bucket_versioning()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            assert_eq!(
                v.status(),
                Some(&BucketVersioningStatus::Enabled),
                "{bucket}"
            );
        }
        // The destination bucket: default SSE-KMS under the destination key, bucket key, tags.
        let dst = w.emu.s3(PROD, DST);
        let enc = dst
            .get_bucket_encryption()
            .bucket(DESTINATION)
            .send()
            .await
            .unwrap();
        let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
        assert_eq!(
            rule.apply_server_side_encryption_by_default()
                .unwrap()
                .kms_master_key_id(),
            Some(dst_key.as_str())
        );
        assert_eq!(rule.bucket_key_enabled(), Some(true));
        let tags = dst
            .get_bucket_tagging()
            .bucket(DESTINATION)
            .send()
            .await
            .unwrap();
        assert!(
            tags.tag_set()
                .iter()
                .any(|t| t.key() == "ferry:migration" && t.value() == "app-logs")
        );

        // The role: trusted by S3, Decrypt on the source key and Encrypt on the destination key,
        // each only through S3 in its region.
        let iam = w.emu.iam(PROD);
        let role = iam.get_role().role_name(ROLE).send().await.unwrap();
        let trust = role.role().unwrap().assume_role_policy_document().unwrap();
        assert!(trust.contains("s3.amazonaws.com"), "{trust}");
        let names = iam
            .list_role_policies()
            .role_name(ROLE)
            .send()
            .await
            .unwrap();
        let name = names
            .policy_names()
            .first()
            .expect("an inline policy")
            .clone();
        let doc = iam
            .get_role_policy()
            .role_name(ROLE)
            .policy_name(&name)
            .send()
            .await
            .unwrap();
        let doc = doc.policy_document();
        let doc: Value = serde_json::from_str(doc).unwrap_or_else(|_| {
            serde_json::from_str(&urlencoding_decode(doc)).expect("policy JSON")
        });
        let by_sid = |sid: &str| {
            statements(&doc)
                .into_iter()
                .find(|s| s["Sid"] == sid)
                .unwrap_or_else(|| panic!("{sid} in {doc}"))
        };
        let decrypt = by_sid("DecryptSource");
        assert_eq!(decrypt["Action"], "kms:Decrypt");
        assert_eq!(decrypt["Resource"], json!([src_key]));
        assert_eq!(
            decrypt["Condition"]["StringEquals"]["kms:ViaService"],
            format!("s3.{SRC}.amazonaws.com")
        );
        let encrypt = by_sid("EncryptDestination");
        assert!(encrypt["Action"].to_string().contains("kms:Encrypt"));
        assert_eq!(encrypt["Resource"], dst_key);
        assert_eq!(
            encrypt["Condition"]["StringEquals"]["kms:ViaService"],
            format!("s3.{DST}.amazonaws.com")
        );
        let reads = by_sid("SourceObjects").to_string();
        assert!(reads.contains("s3:GetObjectVersionForReplication"));
        let writes = by_sid("DestinationObjects").to_string();
        assert!(writes.contains("s3:ReplicateObject"));

        // The destination key policy lets the role encrypt; its default statement stays.
        let policy = w
            .emu
            .kms(PROD, DST)
            .get_key_policy()
            .key_id(&dst_key)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let role_arn = format!("arn:aws:iam::{PROD}:role/{ROLE}");
        assert!(
            statements(&policy)
                .iter()
                .any(|s| s["Principal"]["AWS"] == role_arn
                    && s["Action"].to_string().contains("kms:Encrypt")),
            "{policy}"
        );
        assert!(statements(&policy).len() >= 2, "{policy}");

        // The replication configuration: ferry's rule and the old one, unchanged.
        let repl = w
            .emu
            .s3(PROD, SRC)
            .get_bucket_replication()
            .bucket(SOURCE)
            .send()
            .await
            .unwrap();
        let config = repl.replication_configuration().unwrap();
        assert_eq!(config.role(), role_arn);
        assert_eq!(config.rules().len(), 2, "{config:#?}");
        let old = config
            .rules()
            .iter()
            .find(|r| r.id() == Some("someone-elses-rule"))
            .expect("the old rule is kept");
        assert_eq!(old, &old_rule(), "the old rule is kept as it was");
        let ours = config
            .rules()
            .iter()
            .find(|r| r.id() == Some("ferry-app-logs"))
            .expect("ferry's rule");
        assert_eq!(
            ours.source_selection_criteria()
                .and_then(|c| c.sse_kms_encrypted_objects())
                .map(|s| s.status().as_str()),
            Some("Enabled")
        );
        let dest = ours.destination().unwrap();
        assert_eq!(dest.bucket(), format!("arn:aws:s3:::{DESTINATION}"));
        assert_eq!(
            dest.encryption_configuration()
                .and_then(|e| e.replica_kms_key_id()),
            Some(dst_key.as_str())
        );
    });

    // The backfill: every object, same bytes, under the destination key.
    assert_backfilled(&w, &dst_key);

    // Again: zero mutating calls.
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
}

/// IAM answers policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn s3_backfill_copies_listed_versions_keeps_newer_objects_and_collects_per_object_errors() {
    const N: usize = 60;
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, N);
    let plan_file = w.write_plan(&s3_plan("alias/s3-dr", true));
    // Another writer deletes three objects between ferry's listing and its copies.
    let gone: Vec<String> = [4, 5, 6].into_iter().map(object_key).collect();
    w.emu
        .configure(json!({ "delete_before_copy": { "bucket": SOURCE, "keys": gone } }));
    w.emu.reset_counters();

    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    let out = text(&applied.stdout);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{out}{}",
        text(&applied.stderr)
    );
    assert!(
        out.contains(&format!(
            "3 were deleted in the source after they were listed: {}",
            gone.join(", ")
        )),
        "the deleted objects are named: {out}"
    );
    let copied = destination_keys(&w);
    assert_eq!(copied.len(), N - 3, "every other object is copied");
    assert!(gone.iter().all(|k| !copied.contains(k)));
    assert_copied(&w, &dst_key, (0..N).filter(|i| !(4..=6).contains(i)));

    // Something newer lands in the destination under one key (a replica of a later write, say):
    // a backfill never overwrites it. Two source objects are archived, and one more is new.
    let newer = object_key(7);
    let archived: Vec<String> = ["archive/a.log", "archive/b.log"]
        .map(String::from)
        .to_vec();
    std::thread::sleep(Duration::from_millis(1100));
    // Written as if before the rule: live replication would otherwise take them (they are the
    // rule's, not the backfill's), racing the backfill this part is about.
    w.emu.configure(json!({ "live_replication": false }));
    w.rt.block_on(async {
        let (src, dst) = (w.emu.s3(PROD, SRC), w.emu.s3(PROD, DST));
        dst.put_object()
            .bucket(DESTINATION)
            .key(&newer)
            .body(ByteStream::from_static(
                b"written later, and longer than the source",
            ))
            .send()
            .await
            .unwrap();
        for (k, class) in archived
            .iter()
            .map(|k| (k.as_str(), Some(StorageClass::Glacier)))
            .chain([("fresh.log", None)])
        {
            src.put_object()
                .bucket(SOURCE)
                .key(k)
                .body(ByteStream::from_static(b"x"))
                .set_storage_class(class)
                .send()
                .await
                .unwrap();
        }
    });
    w.emu.configure(json!({ "live_replication": true }));
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    let err = text(&again.stderr);
    assert_eq!(
        again.status.code(),
        Some(1),
        "archived objects fail the run: {err}"
    );
    assert!(
        err.contains(&format!(
            "2 objects archived and not restored (restore them, then apply again): {}",
            archived.join(", ")
        )),
        "the archived objects are counted and named: {err}"
    );
    assert_eq!(
        copy_calls(&w),
        3,
        "the new object and the two archived ones are tried"
    );
    let keys = destination_keys(&w);
    assert!(
        keys.contains(&"fresh.log".to_string()),
        "the rest is copied"
    );
    w.rt.block_on(async {
        let b = w
            .emu
            .s3(PROD, DST)
            .get_object()
            .bucket(DESTINATION)
            .key(&newer)
            .send()
            .await
            .unwrap();
        let body = b.body.collect().await.unwrap().into_bytes();
        assert_eq!(
            &body[..],
            b"written later, and longer than the source",
            "not overwritten"
        );
    });
}

#[test]
fn fault_matrix_s3_replication_with_backfill() {
    for seed in super::soak_seeds(&[4]) {
        s3_under(seed, None);
    }
}

#[test]
fn killed_at_random_points_under_faults_s3_replication_backfills_everything() {
    for seed in super::soak_seeds(&[6]) {
        s3_under(seed, Some(1 + seed % 40));
    }
}

/// `s3-replication` with a backfill of 120 objects under every fault (and a kill): every object
/// copied as it was, the other rule kept, a re-apply with 0 mutating calls.
fn s3_under(seed: u64, kill_at: Option<u64>) {
    const N: usize = 120;
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, N);
    let plan_file = w.write_plan(&s3_plan("alias/s3-dr", true));
    w.emu.reset_counters();
    w.emu.configure(super::every_fault(seed));
    let out = super::apply_until_done(&w, &plan_file, kill_at, 6);
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}, kill at {kill_at:?}: done, with resumes"
    );
    w.emu.configure(super::no_faults());
    let mut keys = destination_keys(&w);
    keys.sort();
    let mut wanted: Vec<String> = (0..N).map(object_key).collect();
    wanted.sort();
    assert_eq!(keys, wanted, "seed {seed}: every object, once");
    assert_copied(&w, &dst_key, 0..N);
    // No copy was sent twice: each object has one version in the (versioned) destination.
    // One page holds them all (up to 1,000).
    let out = destination_versions(&w);
    assert_ne!(out.is_truncated(), Some(true));
    let versions = out.versions().len();
    assert_eq!(versions, N, "seed {seed}: one version per object");
    let rules = rule_ids(&w);
    assert!(
        rules.contains(&"someone-elses-rule".to_string()) && rules.len() == 2,
        "seed {seed}: ferry's rule beside the other one: {rules:?}"
    );
    super::assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn s3_backfill_killed_then_resumed_copies_only_what_is_missing() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, OBJECTS);
    let plan_file = w.write_plan(&s3_plan("alias/s3-dr", true));
    // Slow every request down so that the kill lands in the middle of the backfill.
    w.emu.configure(json!({ "latency_ms": 60 }));
    w.emu.reset_counters();

    let mut child = w
        .command(&["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts");
    wait_for(
        "two thirds of the objects copied",
        Duration::from_secs(120),
        || copy_calls(&w) >= (OBJECTS * 2 / 3 + 10) as u64,
    );
    kill(&mut child);
    // Copies ferry sent before it died still land (the emulator is slowed down): let them.
    std::thread::sleep(Duration::from_secs(2));
    let before = copy_calls(&w);
    w.emu.configure(json!({ "latency_ms": 0 }));
    let present = destination_keys(&w).len() as u64;
    assert!(
        present < OBJECTS as u64,
        "killed before the backfill finished ({present} copied)"
    );

    w.emu.reset_counters();
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    let again = copy_calls(&w);
    eprintln!(
        "killed after {before} CopyObject calls ({present} objects present); the resumed run made {again}"
    );
    assert_eq!(
        again,
        OBJECTS as u64 - present,
        "the resumed run copies exactly the objects still missing"
    );
    assert!(
        again < (OBJECTS / 3) as u64,
        "fewer than a third of the objects are copied again"
    );
    let mut keys = destination_keys(&w);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), OBJECTS, "none missing");
    assert_backfilled(&w, &dst_key);
}

#[test]
fn s3_destination_key_in_another_region_is_refused_before_any_change() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    source_bucket(&w, &src_key, 3);
    destination_bucket(&w);
    // A key that exists, but in the source region: S3 would accept it and replication would fail.
    let wrong = w.key(SRC, "alias/s3-wrong");
    bad_input(&w, &s3_plan(&wrong, false), &[&wrong]);
    bad_input(
        &w,
        &s3_plan("alias/s3-wrong", false),
        &["alias/s3-wrong", "does not exist in prod/eu-west-2"],
    );
    // The bucket already replicates with another role: one role serves every rule of a bucket,
    // so ferry would change it under the other rule. Refused, with what to do.
    w.key(DST, "alias/s3-dr");
    w.rt.block_on(async {
        w.emu
            .s3(PROD, SRC)
            .put_bucket_replication()
            .bucket(SOURCE)
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role(format!("arn:aws:iam::{PROD}:role/someone-elses-role"))
                    .rules(old_rule())
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
    bad_input(
        &w,
        &s3_plan("alias/s3-dr", false),
        &["someone-elses-role", "one replication role"],
    );
}

pub(super) const BACKUP: &str = "222222222222";

/// In the backup account: the role ferry assumes there, and a key for the replicas (its ARN).
pub(super) fn backup_account(w: &World) -> String {
    w.rt.block_on(async {
        w.emu
            .create_assumable_role(BACKUP, "ferry-migrator", PROD, None)
            .await;
        let k = w.emu.kms(BACKUP, DST).create_key().send().await.unwrap();
        k.key_metadata().unwrap().arn().unwrap().to_string()
    })
}

#[test]
fn s3_replication_to_another_account_adds_bucket_policy_and_owner_override() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    source_bucket(&w, &src_key, 3);
    let dst_key = backup_account(&w);
    let plan = format!(
        r#"version: 1
name: e2e
accounts:
  prod: {{ id: "{PROD}" }}
  backup: {{ id: "{BACKUP}", role_arn: "arn:aws:iam::{BACKUP}:role/ferry-migrator" }}
migrations:
  - id: app-logs
    type: s3-replication
    source: {{ account: prod, bucket: {SOURCE} }}
    destination: {{ account: backup, bucket: {DESTINATION}, region: {DST}, create: true, key: "{dst_key}" }}
    role: {{ name: {ROLE} }}
"#
    );
    let plan_file = w.write_plan(&plan);
    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(applied.status.code(), Some(0));
    let role_arn = format!("arn:aws:iam::{PROD}:role/{ROLE}");
    w.rt.block_on(async {
        // The destination bucket, in the backup account, lets the role replicate into it.
        let policy = w
            .emu
            .s3(BACKUP, DST)
            .get_bucket_policy()
            .bucket(DESTINATION)
            .send()
            .await
            .unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let objects = statements(&policy)
            .into_iter()
            .find(|s| s["Sid"].as_str().unwrap_or("").ends_with("-objects"))
            .expect("a statement for the objects");
        assert_eq!(objects["Principal"]["AWS"], role_arn);
        assert!(
            objects["Action"]
                .to_string()
                .contains("s3:ObjectOwnerOverrideToBucketOwner")
        );
        // The backup key lets the prod role encrypt.
        let kp = w
            .emu
            .kms(BACKUP, DST)
            .get_key_policy()
            .key_id(&dst_key)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        let kp: Value = serde_json::from_str(kp.policy().unwrap()).unwrap();
        assert!(
            statements(&kp)
                .iter()
                .any(|s| s["Principal"]["AWS"] == role_arn),
            "{kp}"
        );
        // The rule names the destination account and hands the replicas to it.
        let repl = w
            .emu
            .s3(PROD, SRC)
            .get_bucket_replication()
            .bucket(SOURCE)
            .send()
            .await
            .unwrap();
        let config = repl.replication_configuration().unwrap();
        assert_eq!(config.rules().len(), 2);
        let ours = config
            .rules()
            .iter()
            .find(|r| r.id() == Some("ferry-app-logs"))
            .unwrap();
        let dest = ours.destination().unwrap();
        assert_eq!(dest.account(), Some(BACKUP));
        assert_eq!(
            dest.access_control_translation()
                .map(|a| a.owner().as_str()),
            Some("Destination")
        );
        assert_eq!(
            dest.encryption_configuration()
                .and_then(|e| e.replica_kms_key_id()),
            Some(dst_key.as_str())
        );
    });
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(0));
    let c = w.emu.counters();
    assert_eq!(
        c.mutating(PROD) + c.mutating(BACKUP),
        0,
        "{:#?}",
        c.requests
    );
}

#[test]
fn s3_backfill_under_s3_throttling_with_a_key_ferry_creates_still_copies_everything() {
    // The destination bucket takes 20 writes a second: far below what ferry's limiter allows
    // (AWS's 3,500 per prefix), so the emulator answers 503 SlowDown and ferry slows down.
    let w = World::new(json!({
        "throttle": true,
        "quotas": { format!("s3:{DESTINATION}:write"): [10, 20] },
    }));
    let src_key = w.key(SRC, "alias/s3-source");
    source_bucket(&w, &src_key, 120);
    let plan = s3_plan("dr-s3", true).replace(
        "migrations:",
        &format!(
            "keys:\n  dr-s3: {{ account: prod, region: {DST}, alias: alias/dr-s3, create: true }}\nmigrations:"
        ),
    );
    let plan_file = w.write_plan(&plan);
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    assert!(text(&dry.stdout).contains("copy 120 objects"));

    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "no step failed under throttling"
    );
    let c = w.emu.counters();
    assert!(
        c.throttled(PROD, "s3", "CopyObject") > 0,
        "the emulator did throttle the copies: {:?}",
        c.totals
    );
    let dr = w
        .key_arn(DST, "alias/dr-s3")
        .expect("ferry created the key");
    let mut keys = destination_keys(&w);
    keys.sort();
    assert_eq!(keys.len(), 120, "every object copied");
    w.rt.block_on(async {
        let head = w
            .emu
            .s3(PROD, DST)
            .head_object()
            .bucket(DESTINATION)
            .key(object_key(1))
            .send()
            .await
            .unwrap();
        assert_eq!(head.ssekms_key_id(), Some(dr.as_str()));
    });
}

#[test]
fn s3_changed_rule_replaces_ferrys_rule_only() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, 2);
    let plan = s3_plan("alias/s3-dr", false);
    let plan_file = w.write_plan(&plan);
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );

    // The same migration with another prefix: ferry's rule changes, the other one stays.
    let changed = plan.replace(
        &format!("    role: {{ name: {ROLE} }}\n"),
        &format!(
            "    role: {{ name: {ROLE} }}\n    rule: {{ prefix: logs/, priority: 3, delete_markers: true }}\n"
        ),
    );
    w.write_plan(&changed);
    let dry = w.ferry(&["plan", &plan_file]);
    let out = text(&dry.stdout);
    // Each changed property of ferry's rule is shown, from what is there to what the plan says.
    assert!(
        out.contains(r#"~ rule ferry-app-logs: prefix "" -> "logs/""#),
        "{out}"
    );
    assert!(
        out.contains("~ rule ferry-app-logs: priority 1 -> 3"),
        "{out}"
    );
    assert!(
        out.contains(r#"~ rule ferry-app-logs: delete_markers "Disabled" -> "Enabled""#),
        "{out}"
    );
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    w.rt.block_on(async {
        let repl = w
            .emu
            .s3(PROD, SRC)
            .get_bucket_replication()
            .bucket(SOURCE)
            .send()
            .await
            .unwrap();
        let config = repl.replication_configuration().unwrap();
        assert_eq!(config.rules().len(), 2, "{config:#?}");
        assert!(config.rules().contains(&old_rule()));
        let ours = config
            .rules()
            .iter()
            .find(|r| r.id() == Some("ferry-app-logs"))
            .unwrap();
        assert_eq!(ours.filter().and_then(|f| f.prefix()), Some("logs/"));
        assert_eq!(ours.priority(), Some(3));
        assert_eq!(
            ours.delete_marker_replication()
                .and_then(|d| d.status())
                .map(|s| s.as_str()),
            Some("Enabled")
        );
    });
}

/// A world where ferry has set up replication of a two-object bucket (no backfill).
fn replicating() -> (World, String) {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, 2);
    let plan_file = w.write_plan(&s3_plan("alias/s3-dr", false));
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    (w, plan_file)
}

/// Changes ferry's replication rule on the source bucket by hand, keeping every other rule.
fn edit_ferrys_rule(w: &World, edit: impl Fn(&mut ReplicationRule)) {
    let config = replication(w);
    let changed: Vec<ReplicationRule> = config
        .rules()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.id() == Some("ferry-app-logs") {
                edit(&mut r);
            }
            r
        })
        .collect();
    w.rt.block_on(async {
        w.emu
            .s3(PROD, SRC)
            .put_bucket_replication()
            .bucket(SOURCE)
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role(config.role())
                    .set_rules(Some(changed))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn s3_replica_key_named_by_its_alias_is_the_same_key_and_no_change() {
    let (w, plan_file) = replicating();
    // Someone names the same replica key by its alias ARN.
    edit_ferrys_rule(&w, |r| {
        let d = r.destination.as_mut().unwrap();
        d.encryption_configuration = Some(
            aws_sdk_s3::types::EncryptionConfiguration::builder()
                .replica_kms_key_id(format!("arn:aws:kms:{DST}:{PROD}:alias/s3-dr"))
                .build(),
        );
    });
    super::assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn s3_rule_priority_changed_by_hand_is_shown_and_mended() {
    let (w, plan_file) = replicating();

    // Someone raises ferry's rule to priority 5 and leaves everything else.
    let rules = replication;
    edit_ferrys_rule(&w, |r| r.priority = Some(5));

    let dry = w.ferry(&["plan", &plan_file]);
    let out = text(&dry.stdout);
    assert!(out.contains("~ app-logs/replication/put"), "{out}");
    assert!(
        out.contains("~ rule ferry-app-logs: priority 5 -> 1"),
        "{out}"
    );
    assert!(
        out.contains("0 to create, 1 to update"),
        "only the rule changes: {out}"
    );
    assert_eq!(
        w.ferry(&["apply", "--yes", &plan_file]).status.code(),
        Some(0)
    );
    let after = rules(&w);
    let ours = after
        .rules()
        .iter()
        .find(|r| r.id() == Some("ferry-app-logs"))
        .unwrap();
    assert_eq!(
        ours.priority(),
        Some(1),
        "apply put the plan's priority back"
    );
    assert!(
        after.rules().contains(&old_rule()),
        "the other rule is kept"
    );
    super::assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn s3_rule_priority_taken_by_another_rule_is_refused_before_any_change() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, 1);
    // The bucket's other rule has priority 7.
    let plan = s3_plan("alias/s3-dr", false).replace(
        &format!("    role: {{ name: {ROLE} }}\n"),
        &format!("    role: {{ name: {ROLE} }}\n    rule: {{ priority: 7 }}\n"),
    );
    bad_input(
        &w,
        &plan,
        &[
            "someone-elses-rule",
            "priority 7",
            "priorities of their own",
        ],
    );
}
