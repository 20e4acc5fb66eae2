//! `ferry iam-policy` against what a run really did: every AWS call a flow made in a plan
//! account is an action the printed policy allows, and every mutating call (the audit log
//! names its resource) is allowed on that resource.

use std::path::Path;

use serde_json::Value;

use super::World;

/// IAM's wildcard match (`*` any run, `?` one character), case-sensitive as for resources.
fn matches(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `policy` allows `action` on `resource` (`None`: on some resource). A statement's
/// condition does not narrow it here: ferry's conditions are on resource tags, which this
/// check cannot see.
fn allows(policy: &Value, action: &str, resource: Option<&str>) -> bool {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|st| {
            st["Effect"] == "Allow"
                && list(&st["Action"]).iter().any(|a| matches(a, action))
                && resource.is_none_or(|r| list(&st["Resource"]).iter().any(|p| matches(p, r)))
        })
}

/// The IAM action of an S3 API operation, where the two differ.
fn s3_action(op: &str) -> Vec<String> {
    let name = match op {
        "GetBucketEncryption" => "GetEncryptionConfiguration",
        "PutBucketEncryption" => "PutEncryptionConfiguration",
        "GetBucketReplication" => "GetReplicationConfiguration",
        "PutBucketReplication" => "PutReplicationConfiguration",
        "ListObjectsV2" | "ListObjects" | "HeadBucket" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "HeadObject" => "GetObject",
        // Parts of a multipart copy are writes of the object (and reads of the source).
        "CreateMultipartUpload" | "CompleteMultipartUpload" | "UploadPart" => "PutObject",
        "UploadPartCopy" => {
            return vec![
                "s3:PutObject".into(),
                "s3:GetObject".into(),
                "s3:GetObjectVersion".into(),
            ];
        }
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "ListParts" => "ListMultipartUploadParts",
        // A copy reads the source (by version id) and writes the destination.
        "CopyObject" => {
            return vec![
                "s3:PutObject".into(),
                "s3:GetObject".into(),
                "s3:GetObjectVersion".into(),
            ];
        }
        other => other,
    };
    vec![format!("s3:{name}")]
}

/// The ARN of what an audited call acted on, from the audit record's resource.
fn resource_arn(r: &Value) -> Option<String> {
    let service = r["service"].as_str()?.to_lowercase().replace(' ', "");
    let op = r["operation"].as_str()?;
    let (region, account) = (r["region"].as_str()?, r["account"].as_str()?);
    let res = r["resource"].as_str()?;
    Some(match service.as_str() {
        "ec2" if res.starts_with("snap-") => format!("arn:aws:ec2:{region}::snapshot/{res}"),
        "ec2" if res.starts_with("ami-") => format!("arn:aws:ec2:{region}::image/{res}"),
        "kms" if res.starts_with("arn:") => res.to_string(),
        "kms" if res.starts_with("alias/") => format!("arn:aws:kms:{region}:{account}:{res}"),
        "kms" => format!("arn:aws:kms:{region}:{account}:key/{res}"),
        "iam" => format!("arn:aws:iam::{account}:role/{res}"),
        "rds" if op.contains("Cluster") => {
            format!("arn:aws:rds:{region}:{account}:cluster-snapshot:{res}")
        }
        "rds" => format!("arn:aws:rds:{region}:{account}:snapshot:{res}"),
        // Batch Operations jobs: `v20180820/jobs[/ID[/status]]`.
        "s3control" => {
            let id = res.split('/').nth(2).unwrap_or("new");
            format!("arn:aws:s3:{region}:{account}:job/{id}")
        }
        "s3" => {
            let res = res.trim_end_matches('/');
            let object = op.ends_with("Object")
                || op.contains("ObjectTagging")
                || op.contains("MultipartUpload")
                || op.starts_with("UploadPart");
            match res.split_once('/') {
                Some((bucket, key)) if object => format!("arn:aws:s3:::{bucket}/{key}"),
                Some((bucket, _)) => format!("arn:aws:s3:::{bucket}"),
                None => format!("arn:aws:s3:::{res}"),
            }
        }
        _ => return None,
    })
}

/// Every call the emulator counted for the plan's accounts since its counters were last reset,
/// and every mutating call in the audit logs of the runs under `state`, against the policy
/// `ferry iam-policy` prints for `plan_file`. Returns how many calls and resources it checked.
pub fn assert_policy_covers(w: &World, plan_file: &str, state: &Path) -> (usize, usize) {
    let out = w.ferry(&["iam-policy", plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let policies: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let by_id: Vec<(String, Value)> = policies
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            (
                p["account_id"].as_str().unwrap().to_string(),
                p["policy"].clone(),
            )
        })
        .collect();
    let policy_of = |id: &str| by_id.iter().find(|(a, _)| a == id).map(|(_, p)| p);

    let mut missing = Vec::new();
    let mut calls = 0;
    for r in &w.emu.counters().requests {
        let Some(policy) = policy_of(&r.account) else {
            continue;
        };
        // Who ferry is, and the role it assumes, need no permission of the account.
        if r.service == "sts" {
            continue;
        }
        calls += 1;
        let actions = match r.service.as_str() {
            "s3" => s3_action(&r.action),
            // S3 control's actions are IAM's `s3:` actions.
            "s3control" => vec![format!("s3:{}", r.action)],
            s => vec![format!("{s}:{}", r.action)],
        };
        for a in actions {
            if !allows(policy, &a, None) {
                missing.push(format!("{} in {}: {a}", r.account, r.region));
            }
        }
    }

    let (mut audited, mut resources) = (0, 0);
    for run in std::fs::read_dir(state.join("runs")).unwrap() {
        let audit = run.unwrap().path().join("audit.jsonl");
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        for line in text.lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let account = r["account"].as_str().unwrap_or_default();
            let Some(policy) = policy_of(account) else {
                continue;
            };
            let op = r["operation"].as_str().unwrap_or_default();
            // "S3 Control" as the SDK names it.
            let service = r["service"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .replace(' ', "");
            let actions = match service.as_str() {
                "s3" => s3_action(op),
                "s3control" => vec![format!("s3:{op}")],
                s => vec![format!("{s}:{op}")],
            };
            let arn = resource_arn(&r);
            audited += 1;
            resources += usize::from(arn.is_some());
            // A copy's source is read, not written: only the copy's own action is checked there.
            for a in actions.iter().take(1) {
                if !allows(policy, a, Some(arn.as_deref().unwrap_or("*"))) {
                    missing.push(format!("{account}: {a} on {arn:?} (audited: {line})"));
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "`ferry iam-policy` does not allow what the run did:\n{}",
        missing.join("\n")
    );
    assert!(calls > 0, "the check saw the run's calls");
    assert!(
        audited > 0 && resources > 0,
        "the check saw the run's audited resources"
    );
    (calls, resources)
}

#[test]
fn wildcards_match_as_iam_matches_them() {
    assert!(matches(
        "kms:GenerateDataKey*",
        "kms:GenerateDataKeyWithoutPlaintext"
    ));
    assert!(matches(
        "arn:aws:ec2:eu-west-2::snapshot/*",
        "arn:aws:ec2:eu-west-2::snapshot/snap-1"
    ));
    assert!(!matches(
        "arn:aws:ec2:eu-west-2::snapshot/*",
        "arn:aws:ec2:us-east-1::snapshot/snap-1"
    ));
    assert!(matches("*", "anything"));
    assert!(!matches("s3:Get*", "s3:PutObject"));
}
