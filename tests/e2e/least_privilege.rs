//! `ferry` under exactly the policy `ferry iam-policy` prints, with the emulator enforcing IAM
//! (`iam_enforce`, additions/iam_enforce.py): an IAM user in the account ferry starts from, the
//! plan's assumed role in the other, each with its account's printed policy. The run succeeds;
//! without any one of the actions it needs, it fails with the access denied error naming that
//! action and the `ferry iam-policy` hint.

use std::process::Output;

use serde_json::{Value, json};

use super::{PROD, World, text};

const BACKUP: &str = "222222222222";

/// What `ferry iam-policy` prints for `plan_file`, by account id: (policy, statements the
/// identity ferry starts from needs to assume that account's role).
fn printed(w: &World, plan_file: &str) -> Vec<(String, Value, Option<Value>)> {
    let out = w.ferry(&["iam-policy", plan_file]);
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    doc.as_object()
        .expect("accounts")
        .values()
        .map(|p| {
            (
                p["account_id"].as_str().unwrap().to_string(),
                p["policy"].clone(),
                p.get("caller_needs").cloned(),
            )
        })
        .collect()
}

/// `policy` without `action` (statements left with no action are dropped).
fn without(policy: &Value, action: &str) -> Value {
    let mut p = policy.clone();
    let statements: Vec<Value> = p["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|st| {
            let mut st = st.clone();
            let actions: Vec<Value> = match &st["Action"] {
                Value::String(a) => vec![Value::String(a.clone())],
                Value::Array(a) => a.clone(),
                _ => Vec::new(),
            };
            let left: Vec<Value> = actions.into_iter().filter(|a| a != action).collect();
            if left.is_empty() {
                return None;
            }
            st["Action"] = Value::Array(left);
            Some(st)
        })
        .collect();
    p["Statement"] = Value::Array(statements);
    p
}

/// The identities of a least-privilege run: the IAM user ferry starts from (in `PROD`) and the
/// policies it and the plan's roles hold.
struct Identities {
    key_id: String,
    secret: String,
    /// (account, role name or None for the user, full policy)
    holders: Vec<(String, Option<String>, Value)>,
}

impl Identities {
    /// Creates the user in `PROD` and puts each account's printed policy on its identity: the
    /// user's own account's, plus the statements it needs to assume the other accounts' roles;
    /// each role gets its account's.
    fn create(w: &World, plan_file: &str) -> Identities {
        let policies = printed(w, plan_file);
        let mut user_policy = policies
            .iter()
            .find(|(a, _, _)| a == PROD)
            .map(|(_, p, _)| p.clone())
            .unwrap_or_else(|| json!({ "Version": "2012-10-17", "Statement": [] }));
        let mut holders = Vec::new();
        for (account, policy, caller_needs) in &policies {
            if let Some(needs) = caller_needs {
                let mut needs = needs.clone();
                needs["Sid"] = json!(format!("AssumeInto{account}"));
                user_policy["Statement"].as_array_mut().unwrap().push(needs);
            }
            if account != PROD {
                let role = caller_needs
                    .as_ref()
                    .and_then(|n| n["Resource"].as_str())
                    .and_then(|arn| arn.rsplit('/').next())
                    .expect("another account is reached through a role")
                    .to_string();
                holders.push((account.clone(), Some(role), policy.clone()));
            }
        }
        let (key_id, secret) = w.rt.block_on(w.emu.create_user_with_policy(
            PROD,
            "ferry-least-privilege",
            &user_policy,
        ));
        holders.insert(0, (PROD.to_string(), None, user_policy));
        let ids = Identities {
            key_id,
            secret,
            holders,
        };
        ids.put_all(w, None);
        ids
    }

    /// Puts every identity's policy, `removed` = (account, action) taken out of that account's.
    fn put_all(&self, w: &World, removed: Option<(&str, &str)>) {
        for (account, role, policy) in &self.holders {
            let policy = match removed {
                Some((a, action)) if a == account => without(policy, action),
                _ => policy.clone(),
            };
            w.rt.block_on(async {
                let iam = w.emu.iam(account);
                match role {
                    None => iam
                        .put_user_policy()
                        .user_name("ferry-least-privilege")
                        .policy_name("ferry")
                        .policy_document(policy.to_string())
                        .send()
                        .await
                        .map(|_| ())
                        .expect("PutUserPolicy"),
                    Some(role) => iam
                        .put_role_policy()
                        .role_name(role)
                        .policy_name("ferry")
                        .policy_document(policy.to_string())
                        .send()
                        .await
                        .map(|_| ())
                        .expect("PutRolePolicy"),
                }
            });
        }
    }

    fn ferry(&self, w: &World, args: &[&str]) -> Output {
        let out = w
            .command(args)
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .output()
            .expect("ferry runs");
        eprintln!(
            "$ ferry {} (as ferry-least-privilege)\n--- exit {:?}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }
}

/// Requests the emulator refused (denials count as faults; nothing else injects any here).
fn refused(w: &World) -> u64 {
    w.emu.counters().requests.iter().map(|r| r.faults).sum()
}

/// The failure of a run without `action`: it names the action and the `ferry iam-policy` hint.
fn assert_denied_naming(out: &Output, action: &str, plan_file: &str) {
    assert_ne!(out.status.code(), Some(0), "without {action} the run fails");
    let err = text(&out.stderr);
    if action == "sts:AssumeRole" {
        // A role ferry cannot assume has its own sentence: the trust policy or the caller's
        // sts:AssumeRole.
        assert!(
            err.contains("ferry could not assume")
                && err.contains("(AccessDenied,")
                && err.contains("needs sts:AssumeRole on it")
                && err.contains(&format!("`ferry iam-policy {plan_file}`")),
            "{err}"
        );
        return;
    }
    assert!(
        err.contains(&format!("may not call {action} on ")),
        "the failure names {action}: {err}"
    );
    // The service's access denied code (EC2 names it UnauthorizedOperation).
    assert!(
        [
            "(AccessDenied,",
            "(AccessDeniedException,",
            "(UnauthorizedOperation,"
        ]
        .iter()
        .any(|code| err.contains(code)),
        "an access denied error: {err}"
    );
    assert!(
        err.contains(&format!("allow {action} to the identity ferry runs as"))
            && err.contains(&format!("`ferry iam-policy {plan_file}`")),
        "the hint: {err}"
    );
}

#[test]
fn the_demo_plan_runs_under_exactly_the_printed_policies_and_fails_without_any_one_action() {
    let w = World::new(json!({ "copy_seconds": 0.5 }));
    super::destroy::seed(&w);
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/plans/demo.yaml"),
        w.path("demo.yaml"),
    )
    .expect("the demo plan");
    let ids = Identities::create(&w, "demo.yaml");
    w.emu.configure(json!({ "iam_enforce": true }));

    // One action per service the demo calls, each taken from the account that needs it:
    // `ferry plan` reads with them before any change.
    let removals = [
        (PROD, "ec2:DescribeSnapshots"),
        (PROD, "kms:ListKeys"),
        (PROD, "rds:DescribeDBSnapshots"),
        (PROD, "s3:GetEncryptionConfiguration"),
        (PROD, "iam:GetRole"),
        (PROD, "sts:AssumeRole"),
        (BACKUP, "ec2:DescribeImages"),
        (BACKUP, "kms:DescribeKey"),
    ];
    for (account, action) in removals {
        ids.put_all(&w, Some((account, action)));
        let before = refused(&w);
        let out = ids.ferry(&w, &["plan", "demo.yaml"]);
        assert_denied_naming(&out, action, "demo.yaml");
        assert!(refused(&w) > before, "the emulator refused {action}");
    }

    // With every action: the plan and the apply succeed, and nothing was refused.
    ids.put_all(&w, None);
    w.emu.reset_counters();
    let plan = ids.ferry(&w, &["plan", "demo.yaml"]);
    assert_eq!(plan.status.code(), Some(0));
    let applied = ids.ferry(&w, &["apply", "--yes", "demo.yaml"]);
    assert_eq!(applied.status.code(), Some(0));
    let c = w.emu.counters();
    assert_eq!(refused(&w), 0, "no call was refused: {:#?}", c.requests);
    assert!(
        c.mutating(PROD) > 0 && c.mutating(BACKUP) > 0,
        "both accounts changed"
    );
    assert_eq!(
        c.copy_totals.snapshots, 5,
        "the five nightly snapshots copied"
    );

    // Under the same policies, a second apply changes nothing.
    let again = ids.ferry(&w, &["apply", "--yes", "demo.yaml"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stdout).contains("No changes"));
}

/// An example plan from plans/, made to run on the demo's seeded world: its placeholder ids
/// become the seed's (a nightly snapshot, the demo AMI, a key made in backup, the demo bucket),
/// and `profile:` lines go (the run signs with the IAM user's keys from the environment).
fn example_plan(w: &World, name: &str) -> String {
    let world = super::destroy::seed(w);
    let backup_key = w.rt.block_on(async {
        w.emu
            .kms(BACKUP, super::SRC)
            .create_key()
            .send()
            .await
            .expect("CreateKey")
            .key_metadata()
            .and_then(|m| m.arn().map(str::to_string))
            .expect("arn")
    });
    if name == "rds" {
        // rds.yaml's cluster, encrypted under the seed's key, with a manual snapshot.
        w.rt.block_on(async {
            let rds = w.emu.rds(PROD, super::SRC);
            rds.create_db_cluster()
                .db_cluster_identifier("ledger")
                .engine("aurora-postgresql")
                .master_username("admin")
                .master_user_password("not-a-secret-1")
                .storage_encrypted(true)
                .kms_key_id(world["kms_key"]["arn"].as_str().unwrap())
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
    }
    let text = std::fs::read_to_string(format!("{}/plans/{name}.yaml", env!("CARGO_MANIFEST_DIR")))
        .expect("the example plan");
    let text = text
        .replace(
            "snap-0a1b2c3d4e5f60718",
            world["snapshots"][0]["id"].as_str().unwrap(),
        )
        .replace(
            "ami-0123456789abcdef0",
            world["image"]["id"].as_str().unwrap(),
        )
        .replace(
            "arn:aws:kms:us-east-1:222222222222:key/0f1e2d3c-aaaa-bbbb-cccc-123456789012",
            &backup_key,
        )
        .replace("bucket: app-logs-dr", "bucket: demo-app-logs-dr")
        .replace("bucket: app-logs ", "bucket: demo-app-logs ")
        .replace("bucket: app-logs\n", "bucket: demo-app-logs\n");
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("profile:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = format!("{name}.yaml");
    std::fs::write(w.path(&file), text).expect("plan written");
    file
}

/// `name` from plans/ under exactly its printed policies with IAM enforced: without `removed`
/// (account, action), `ferry apply` fails naming it; with every action, the apply succeeds,
/// nothing is refused, both of `changed` accounts see changes, and a second apply changes
/// nothing.
fn least_privilege_run(name: &str, removed: (&str, &str), changed: &[&str]) {
    let w = World::new(json!({ "copy_seconds": 0.5, "rds_copy_seconds": 0.3 }));
    let plan_file = example_plan(&w, name);
    let ids = Identities::create(&w, &plan_file);
    w.emu.configure(json!({ "iam_enforce": true }));

    ids.put_all(&w, Some(removed));
    w.emu.reset_counters();
    let out = ids.ferry(&w, &["apply", "--yes", &plan_file]);
    assert_denied_naming(&out, removed.1, &plan_file);
    assert!(refused(&w) > 0, "the emulator refused {}", removed.1);

    // The failed apply went on with the steps that did not need the action; the next one
    // does the rest. Changes are counted over both.
    ids.put_all(&w, None);
    let before = refused(&w);
    let applied = ids.ferry(&w, &["apply", "--yes", &plan_file]);
    assert_eq!(applied.status.code(), Some(0), "{name}: the apply succeeds");
    let c = w.emu.counters();
    assert_eq!(
        refused(&w),
        before,
        "{name}: nothing refused: {:#?}",
        c.requests
    );
    for a in changed {
        assert!(c.mutating(a) > 0, "{name}: {a} changed");
    }
    let again = ids.ferry(&w, &["apply", "--yes", &plan_file]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stdout).contains("No changes"), "{name}");
}

#[test]
fn snapshot_copy_plan_under_its_printed_policy() {
    least_privilege_run("snapshot-copy", (PROD, "ec2:CopySnapshot"), &[PROD]);
}

#[test]
fn ami_copy_plan_under_its_printed_policies() {
    least_privilege_run("ami-copy", (BACKUP, "ec2:CopyImage"), &[PROD, BACKUP]);
}

#[test]
fn s3_replication_plan_under_its_printed_policy() {
    least_privilege_run(
        "s3-replication",
        (PROD, "s3:PutReplicationConfiguration"),
        &[PROD],
    );
}

#[test]
fn rds_plan_under_its_printed_policies() {
    least_privilege_run("rds", (PROD, "rds:CopyDBSnapshot"), &[PROD, BACKUP]);
}

#[test]
fn combined_plan_under_its_printed_policies() {
    least_privilege_run("combined", (PROD, "kms:CreateKey"), &[PROD, BACKUP]);
}
