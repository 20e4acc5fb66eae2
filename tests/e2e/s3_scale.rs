//! `s3-replication` at any size, end to end: a backfill by S3 Batch Replication job (created
//! once, followed, resumed, its report read), its redrive of FAILED objects, multipart copies
//! of big objects, and the canary that proves a rule replicates.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde_json::{Value, json};

use super::s3::{BACKUP, backup_account};
use super::s3::{DESTINATION, ROLE, SOURCE, assert_copied, object_tags, source_bucket};
use super::{DST, PROD, SRC, World, assert_reapply_changes_nothing, kill, text, wait_for};

const REPORTS: &str = "ferry-reports";

fn plan(settings: &str, migration: &str) -> String {
    format!(
        r#"version: 1
name: e2e
accounts:
  prod: {{ id: "{PROD}" }}
migrations:
  - id: app-logs
    type: s3-replication
    source: {{ account: prod, bucket: {SOURCE} }}
    destination: {{ bucket: {DESTINATION}, region: {DST}, create: true, key: alias/s3-dr }}
{migration}
settings:
  tags: {{ MigratedBy: ferry }}
{settings}"#
    )
}

/// The bucket batch jobs write their reports to, in the source region.
fn reports_bucket(w: &World) {
    w.rt.block_on(async {
        w.emu
            .s3(PROD, SRC)
            .create_bucket()
            .bucket(REPORTS)
            .send()
            .await
            .unwrap();
    });
}

fn batch(w: &World) -> Value {
    w.emu.counters_json()["batch_jobs"].clone()
}

fn jobs_created(w: &World) -> u64 {
    batch(w)["created"].as_u64().unwrap_or(0)
}

/// Every key in the destination bucket, with the KMS key of each (HeadObject).
fn destination_objects(w: &World) -> Vec<(String, Option<String>)> {
    w.rt.block_on(async {
        use futures::StreamExt;
        let dst = w.emu.s3(PROD, DST);
        let mut keys = Vec::new();
        let mut pages = dst
            .list_objects_v2()
            .bucket(DESTINATION)
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            let p = p.unwrap();
            keys.extend(
                p.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        futures::stream::iter(keys)
            .map(|k| {
                let dst = dst.clone();
                async move {
                    let h = dst
                        .head_object()
                        .bucket(DESTINATION)
                        .key(&k)
                        .send()
                        .await
                        .unwrap();
                    (k, h.ssekms_key_id().map(str::to_string))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await
    })
}

#[test]
fn a_big_bucket_is_backfilled_by_one_batch_job_that_a_kill_does_not_duplicate() {
    const N: usize = 5_000;
    // Slow enough to kill ferry while the job runs (about 12 s of tasks).
    let w = World::new(json!({ "batch_task_rate": 400 }));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, N);
    reports_bucket(&w);
    let plan_file = w.write_plan(&plan(
        "  backfill_inline_max: 1000\n",
        &format!(
            "    role: {{ name: {ROLE} }}\n    backfill: true\n    backfill_report: s3://{REPORTS}/jobs\n"
        ),
    ));

    // The plan shows the job, its estimate from a sample and its cost; nothing is listed in
    // full and nothing changes.
    w.emu.reset_counters();
    let dry = w.ferry(&["plan", &plan_file]);
    assert_eq!(dry.status.code(), Some(0));
    let out = text(&dry.stdout);
    assert!(out.contains("S3 Batch Replication job"), "{out}");
    assert!(out.contains("at least 2000 object versions"), "{out}");
    assert!(out.contains("cost: at least $0.25"), "{out}");
    assert!(
        out.contains(&format!("{ROLE}-batch")),
        "the batch role is shown: {out}"
    );
    assert!(out.contains("batchoperations.s3.amazonaws.com"), "{out}");
    let c = w.emu.counters();
    assert_eq!(c.mutating(PROD), 0, "a plan changes nothing");
    let listed = c.requests(PROD, "s3", "ListObjectVersions");
    assert!(
        listed <= 3,
        "the sample lists at most inline_max + 1 versions, not {N}: {listed} pages"
    );

    // Killed while the job runs, then resumed: still one job, and it completes.
    let mut child = w
        .command(&["apply", "--yes", &plan_file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the batch job to run", Duration::from_secs(120), || {
        batch(&w)["tasks_succeeded"].as_u64().unwrap_or(0) > 200
    });
    kill(&mut child);
    assert_eq!(jobs_created(&w), 1);
    // The journal knows the job and how far it had come.
    let status = w.ferry(&["status"]);
    let st = text(&status.stdout);
    assert!(
        st.contains("submitted") && st.contains("app-logs/backfill/batch-job"),
        "{st}"
    );
    assert!(st.contains("tasks succeeded"), "the job's progress: {st}");
    assert!(
        batch(&w)["tasks_succeeded"].as_u64().unwrap_or(0) < N as u64,
        "the kill landed while the job ran"
    );
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    let all = format!("{}{}", text(&resumed.stdout), text(&resumed.stderr));
    assert!(
        all.contains("batch job"),
        "the summary names the job: {all}"
    );
    assert_eq!(jobs_created(&w), 1, "the resume attached to the same job");
    assert_eq!(
        w.emu.counters().requests(PROD, "s3", "CopyObject"),
        0,
        "nothing was copied inline"
    );

    // Every object is in the destination under the replica key.
    let objects = destination_objects(&w);
    assert_eq!(
        objects.len(),
        N,
        "every object and nothing else (the canary is gone)"
    );
    for (k, key) in &objects {
        assert_eq!(
            key.as_deref(),
            Some(dst_key.as_str()),
            "{k} under the replica key"
        );
    }
    assert_copied(&w, &dst_key, (0..N).step_by(97));
    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    // The Batch Operations role is shown for review: its trust and least-privilege policy.
    let policy: Value =
        serde_json::from_slice(&w.ferry(&["iam-policy", &plan_file]).stdout).unwrap();
    let role = &policy["prod"]["roles_ferry_makes"][format!("{ROLE}-batch")];
    assert_eq!(
        role["trust"]["Statement"][0]["Principal"]["Service"],
        "batchoperations.s3.amazonaws.com"
    );
    let doc = role["inline_policy"]["document"].to_string();
    assert!(doc.contains("s3:InitiateReplication"), "{doc}");
    assert!(
        doc.contains(&format!("arn:aws:s3:::{REPORTS}/jobs/*")),
        "the report location only: {doc}"
    );

    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
    assert_eq!(
        jobs_created(&w),
        0,
        "the re-apply made no job (counters were reset)"
    );
}

/// A role ferry does not manage, trusting S3, with `policy` inline.
fn user_role(w: &World, name: &str, policy: &Value) -> String {
    w.rt.block_on(async {
        let iam = w.emu.iam(PROD);
        let trust = json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        let arn = match iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
        {
            Ok(r) => r.role().unwrap().arn().to_string(),
            Err(_) => format!("arn:aws:iam::{PROD}:role/{name}"),
        };
        iam.put_role_policy()
            .role_name(name)
            .policy_name("replication")
            .policy_document(policy.to_string())
            .send()
            .await
            .unwrap();
        arn
    })
}

/// What a replication role needs, with kms:Decrypt on `decrypt` and kms:Encrypt unless
/// `without_encrypt`.
fn replication_policy(decrypt: &[&str], without_encrypt: bool) -> Value {
    let mut st = vec![
        json!({"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": format!("arn:aws:s3:::{SOURCE}")}),
        json!({"Effect": "Allow", "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"], "Resource": format!("arn:aws:s3:::{SOURCE}/*")}),
        json!({"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"], "Resource": format!("arn:aws:s3:::{DESTINATION}/*")}),
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": decrypt}),
    ];
    if !without_encrypt {
        st.push(json!({"Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": format!("arn:aws:kms:{DST}:{PROD}:key/*")}));
    }
    json!({"Version": "2012-10-17", "Statement": st})
}

#[test]
fn a_batch_job_left_failed_objects_then_a_redrive_replicates_only_those() {
    let w = World::new(json!({ "batch_task_rate": 5000 }));
    let key_a = w.key(SRC, "alias/s3-source");
    let key_b = w.key(SRC, "alias/s3-other");
    w.key(DST, "alias/s3-dr");
    // 60 objects under the bucket's key, then 40 under a second key the role may not use.
    source_bucket(&w, &key_a, 60);
    w.rt.block_on(async {
        let s3 = w.emu.s3(PROD, SRC);
        for i in 0..40 {
            s3.put_object()
                .bucket(SOURCE)
                .key(format!("other/{i:03}"))
                .body(ByteStream::from(vec![b'x'; 100 + i]))
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(&key_b)
                .send()
                .await
                .unwrap();
        }
    });
    reports_bucket(&w);
    let role = user_role(&w, ROLE, &replication_policy(&[&key_a], false));
    let migration = |redrive: bool| {
        format!(
            "    role: {{ arn: \"{role}\" }}\n    backfill: batch\n    backfill_report: s3://{REPORTS}/jobs\n    redrive_failed: {redrive}\n"
        )
    };
    let plan_file = w.write_plan(&plan("", &migration(false)));
    let first = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "a job with failed objects fails the run"
    );
    let err = text(&first.stderr);
    assert!(
        err.contains("40 of 100 objects failed to replicate"),
        "{err}"
    );
    assert!(
        err.contains("other/000"),
        "the first failed keys are named: {err}"
    );
    assert!(err.contains("kms:Decrypt"), "with the reason: {err}");
    assert!(
        err.contains("redrive_failed"),
        "and the way to rerun: {err}"
    );
    assert_eq!(jobs_created(&w), 1);
    assert_eq!(destination_objects(&w).len(), 60);

    // Applying again without a redrive neither pretends nor makes a useless job.
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("redrive_failed"));
    assert_eq!(jobs_created(&w), 1);

    // Fixed, and redriven: only the 40 FAILED objects are replicated again.
    user_role(&w, ROLE, &replication_policy(&[&key_a, &key_b], false));
    let plan_file = w.write_plan(&plan("", &migration(true)));
    let before = batch(&w)["tasks_succeeded"].as_u64().unwrap_or(0);
    let fixed = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(fixed.status.code(), Some(0));
    assert_eq!(jobs_created(&w), 2);
    assert_eq!(
        batch(&w)["tasks_succeeded"].as_u64().unwrap_or(0) - before,
        40,
        "the redrive job's tasks are exactly the FAILED objects"
    );
    assert_eq!(destination_objects(&w).len(), 100);
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn a_big_object_is_copied_in_parts_byte_for_byte_with_its_metadata_and_tags() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, 3);
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    w.rt.block_on(async {
        w.emu
            .s3(PROD, SRC)
            .put_object()
            .bucket(SOURCE)
            .key("big/blob.bin")
            .body(ByteStream::from(big.clone()))
            .content_type("application/octet-stream")
            .cache_control("max-age=60")
            .metadata("origin", "host-9")
            .tagging("team=data&size=big")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&src_key)
            .send()
            .await
            .unwrap();
    });
    let plan_file = w.write_plan(&plan(
        "  multipart_threshold: 8MiB\n",
        &format!("    role: {{ name: {ROLE} }}\n    backfill: inline\n"),
    ));
    let dry = w.ferry(&["plan", &plan_file]);
    assert!(text(&dry.stdout).contains("1 of them larger than 8388608 bytes, copied in parts"));
    w.emu.reset_counters();
    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(applied.status.code(), Some(0));
    let c = w.emu.counters();
    assert_eq!(
        c.requests(PROD, "s3", "UploadPartCopy"),
        5,
        "40 MiB in 8 MiB parts"
    );
    assert_eq!(c.requests(PROD, "s3", "CompleteMultipartUpload"), 1);
    assert_eq!(
        c.requests(PROD, "s3", "CopyObject"),
        3,
        "the small ones in one call each"
    );
    w.rt.block_on(async {
        let dst = w.emu.s3(PROD, DST);
        let got = dst
            .get_object()
            .bucket(DESTINATION)
            .key("big/blob.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.ssekms_key_id(),
            Some(dst_key.as_str()),
            "under the replica key"
        );
        assert_eq!(got.content_type(), Some("application/octet-stream"));
        assert_eq!(got.cache_control(), Some("max-age=60"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("origin"))
                .map(String::as_str),
            Some("host-9")
        );
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert!(bytes.as_ref() == big.as_slice(), "byte for byte");
        assert_eq!(
            object_tags(&dst, DESTINATION, "big/blob.bin").await,
            [
                ("size".to_string(), "big".to_string()),
                ("team".to_string(), "data".to_string())
            ]
        );
        let open = dst
            .list_multipart_uploads()
            .bucket(DESTINATION)
            .send()
            .await
            .unwrap();
        assert!(open.uploads().is_empty(), "no upload is left to bill");
    });
    assert_copied(&w, &dst_key, 0..3);
    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn a_rule_whose_role_may_not_encrypt_fails_its_canary_and_passes_once_fixed() {
    // Across accounts the replica key's policy (which ferry edits) is not enough: the role's
    // own IAM policy (which the user manages here) must allow kms:Encrypt too.
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    source_bucket(&w, &src_key, 2);
    let dst_key = backup_account(&w);
    let policy = |encrypt: bool| {
        let mut p = replication_policy(&[&src_key], true);
        p["Statement"].as_array_mut().unwrap().push(json!({"Effect": "Allow",
            "Action": "s3:ObjectOwnerOverrideToBucketOwner", "Resource": format!("arn:aws:s3:::{DESTINATION}/*")}));
        if encrypt {
            p["Statement"]
                .as_array_mut()
                .unwrap()
                .push(json!({"Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": dst_key}));
        }
        p
    };
    let role = user_role(&w, ROLE, &policy(false));
    let plan_file = w.write_plan(&format!(
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
    role: {{ arn: "{role}" }}
"#
    ));
    let dry = w.ferry(&["plan", &plan_file]);
    assert!(text(&dry.stdout).contains("canary object ferry-canary/"));
    w.emu.reset_counters();
    let failed = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "the verify step fails the run"
    );
    let err = text(&failed.stderr);
    assert!(err.contains("replication/verify"), "{err}");
    assert!(err.contains("status FAILED"), "{err}");
    assert!(
        err.contains(&format!("lacks kms:Encrypt on {dst_key}")),
        "names the missing permission and the key: {err}"
    );
    assert!(err.contains(&role), "and the role: {err}");

    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));

    user_role(&w, ROLE, &policy(true));
    w.emu.reset_counters();
    let resumed = w.ferry(&["resume"]);
    assert_eq!(resumed.status.code(), Some(0));
    assert!(text(&resumed.stdout).contains("replicated under the replica key"));
    // The canaries are gone from both buckets, every version.
    w.rt.block_on(async {
        for (s3, bucket) in [
            (w.emu.s3(PROD, SRC), SOURCE),
            (w.emu.s3(BACKUP, DST), DESTINATION),
        ] {
            let v = s3
                .list_object_versions()
                .bucket(bucket)
                .prefix("ferry-canary/")
                .send()
                .await
                .unwrap();
            assert!(
                v.versions().is_empty() && v.delete_markers().is_empty(),
                "no canary left in {bucket}: {v:?}"
            );
        }
    });
    super::iam_policy::assert_policy_covers(&w, &plan_file, &w.path(".ferry"));
    // `ferry verify` proves it again on demand, and samples the objects' status.
    let verified = w.ferry(&["verify", &plan_file]);
    assert_eq!(verified.status.code(), Some(0));
    let out = text(&verified.stdout);
    assert!(out.contains("canary replicated"), "{out}");
    assert!(out.contains("sampled 2 objects"), "{out}");
    assert_reapply_changes_nothing(&w, &plan_file, &[PROD, BACKUP]);
}

#[test]
fn killed_at_random_points_under_faults_a_batch_backfill_makes_one_job() {
    for seed in super::soak_seeds(&[5]) {
        batch_under(seed, Some(1 + seed % 9));
    }
}

/// A batch backfill of 300 objects under every fault and a kill: one job however many
/// CreateJob answers were lost or runs resumed, every object replicated once, no canary left,
/// and a re-apply changes nothing.
fn batch_under(seed: u64, kill_at: Option<u64>) {
    const N: usize = 300;
    let w = World::new(json!({ "batch_task_rate": 2000 }));
    let src_key = w.key(SRC, "alias/s3-source");
    let dst_key = w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, N);
    reports_bucket(&w);
    let plan_file = w.write_plan(&plan(
        "  backfill_inline_max: 100\n",
        &format!(
            "    role: {{ name: {ROLE} }}\n    backfill: true\n    backfill_report: s3://{REPORTS}/jobs\n"
        ),
    ));
    w.emu.reset_counters();
    w.emu.configure(super::every_fault(seed));
    let out = super::apply_until_done(&w, &plan_file, kill_at, 8);
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}, kill at {kill_at:?}: done, with resumes"
    );
    w.emu.configure(super::no_faults());
    assert_eq!(jobs_created(&w), 1, "seed {seed}: one job");
    let objects = destination_objects(&w);
    assert_eq!(
        objects.len(),
        N,
        "seed {seed}: every object, and no canary, in the destination"
    );
    assert!(
        objects
            .iter()
            .all(|(_, k)| k.as_deref() == Some(dst_key.as_str())),
        "seed {seed}: under the replica key"
    );
    let out = super::s3::destination_versions(&w);
    let versions = out.versions().len() + out.delete_markers().len();
    assert_eq!(versions, N, "seed {seed}: one version per object");
    super::assert_reapply_changes_nothing(&w, &plan_file, &[PROD]);
}

#[test]
fn a_bucket_backfilled_inline_that_grows_past_the_limit_gets_no_batch_job() {
    let w = World::new(json!({}));
    let src_key = w.key(SRC, "alias/s3-source");
    w.key(DST, "alias/s3-dr");
    source_bucket(&w, &src_key, 30);
    reports_bucket(&w);
    let plan_file = w.write_plan(&plan(
        "  backfill_inline_max: 40\n",
        &format!(
            "    role: {{ name: {ROLE} }}\n    backfill: true\n    backfill_report: s3://{REPORTS}/jobs\n"
        ),
    ));
    let first = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(first.status.code(), Some(0));
    assert!(text(&first.stdout).contains("copied 30 objects"));
    // The bucket grows past the inline limit; the rule replicates the new objects.
    w.rt.block_on(async {
        let s3 = w.emu.s3(PROD, SRC);
        for i in 0..20 {
            s3.put_object()
                .bucket(SOURCE)
                .key(format!("new/{i:02}"))
                .body(ByteStream::from_static(b"new"))
                .send()
                .await
                .unwrap();
        }
    });
    wait_for(
        "the new objects to replicate",
        Duration::from_secs(30),
        || destination_objects(&w).len() == 50,
    );
    w.emu.reset_counters();
    let again = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("backfilled inline by an earlier run"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        jobs_created(&w),
        0,
        "no job replicates the copied objects again"
    );
    let c = w.emu.counters();
    assert_eq!(c.requests(PROD, "s3", "CopyObject"), 0);
    assert_eq!(destination_objects(&w).len(), 50);
}

#[test]
fn a_batch_job_replicates_only_the_objects_under_its_rules_prefix() {
    const N: usize = 100;
    // Written before any replication (the bucket's other rule, for `audit/`, exists already).
    let w = World::new(json!({ "live_replication": false }));
    let src_key = w.key(SRC, "alias/s3-source");
    w.key(DST, "alias/s3-dr");
    // Keys under `logs/`, and every 50th under `odd keys/`.
    source_bucket(&w, &src_key, N);
    // Objects the other rule covers: a job without ferry's prefix would take them too.
    w.rt.block_on(async {
        let s3 = w.emu.s3(PROD, SRC);
        for i in 0..5 {
            s3.put_object()
                .bucket(SOURCE)
                .key(format!("audit/{i}"))
                .body(ByteStream::from_static(b"audit"))
                // SSE-S3: the other rule does not select SSE-KMS objects.
                .server_side_encryption(ServerSideEncryption::Aes256)
                .send()
                .await
                .unwrap();
        }
    });
    w.emu.configure(json!({ "live_replication": true }));
    reports_bucket(&w);
    let plan_file = w.write_plan(&plan(
        "",
        &format!(
            "    role: {{ name: {ROLE} }}\n    rule: {{ prefix: \"logs/\" }}\n    backfill: batch\n    backfill_report: s3://{REPORTS}/jobs\n"
        ),
    ));
    let applied = w.ferry(&["apply", "--yes", &plan_file]);
    assert_eq!(applied.status.code(), Some(0));
    let keys: Vec<String> = destination_objects(&w)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), N - N / 50, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("logs/")), "{keys:?}");
}
