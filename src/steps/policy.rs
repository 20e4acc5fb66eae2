//! Key (and bucket) policy edits as merges by statement `Sid`: statements ferry did not write
//! are kept exactly as they are; ferry's own are added, replaced or removed by Sid.

use serde_json::{Value, json};

/// A policy document as AWS returned it (`None`: there is none). One ferry cannot read stops
/// the step and shows the text: merging into `{}` instead would drop every statement in it.
pub fn parse(text: Option<&str>, what: &str) -> Result<Value, crate::exec::StepError> {
    let text = text.unwrap_or("{}");
    serde_json::from_str(text).map_err(|e| {
        crate::exec::StepError::permanent(
            "UnreadablePolicy",
            format!("{what} is not a JSON document ferry can read ({e}); nothing was changed. It reads: {text}"),
        )
    })
}

/// The policy with `statements` merged in by Sid. Statements without a Sid, and those with
/// other Sids, stay unchanged and in place; a statement with a known Sid replaces that one.
pub fn merge(policy: &Value, statements: &[Value]) -> Value {
    let mut out = normalized(policy);
    let list = out["Statement"].as_array_mut().expect("normalized");
    for st in statements {
        let sid = st.get("Sid").and_then(Value::as_str);
        match sid.and_then(|s| {
            list.iter()
                .position(|x| x.get("Sid").and_then(Value::as_str) == Some(s))
        }) {
            Some(i) => list[i] = st.clone(),
            None => list.push(st.clone()),
        }
    }
    out
}

/// The policy without the statements whose Sid is `sid`.
pub fn remove(policy: &Value, sid: &str) -> Value {
    let mut out = normalized(policy);
    out["Statement"]
        .as_array_mut()
        .expect("normalized")
        .retain(|x| x.get("Sid").and_then(Value::as_str) != Some(sid));
    out
}

/// `Statement` as a list (IAM allows a single object too), `Version` kept.
fn normalized(policy: &Value) -> Value {
    let mut out = if policy.is_object() {
        policy.clone()
    } else {
        json!({ "Version": "2012-10-17" })
    };
    let statements = match out.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(single @ Value::Object(_)) => vec![single.clone()],
        _ => Vec::new(),
    };
    out["Statement"] = Value::Array(statements);
    out
}

/// A statement in one canonical form of the equivalent ones IAM and KMS accept (and echo back
/// as put, or rewritten): `Action`, `Resource`, principals and condition values as sorted
/// lists (a single string is a list of one), and an account id principal as the account's root
/// ARN (what KMS stores for it). Object key order never matters (JSON objects are maps).
pub fn canonical_statement(st: &Value) -> Value {
    fn list(v: &Value) -> Value {
        let mut items: Vec<Value> = match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        items.sort_by_key(|x| x.to_string());
        items.dedup();
        Value::Array(items)
    }
    fn principal(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(kind, ids)| {
                        let ids = list(ids);
                        let ids: Vec<Value> = ids
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|id| match id.as_str() {
                                Some(a)
                                    if kind == "AWS"
                                        && a.len() == 12
                                        && a.bytes().all(|b| b.is_ascii_digit()) =>
                                {
                                    Value::String(format!("arn:aws:iam::{a}:root"))
                                }
                                _ => id.clone(),
                            })
                            .collect();
                        (kind.clone(), list(&Value::Array(ids)))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let Value::Object(m) = st else {
        return st.clone();
    };
    let mut out = m.clone();
    for k in ["Action", "NotAction", "Resource", "NotResource"] {
        if let Some(v) = m.get(k) {
            out.insert(k.into(), list(v));
        }
    }
    for k in ["Principal", "NotPrincipal"] {
        if let Some(v) = m.get(k) {
            out.insert(k.into(), principal(v));
        }
    }
    if let Some(Value::Object(ops)) = m.get("Condition") {
        let ops = ops
            .iter()
            .map(|(op, keys)| {
                let keys = match keys {
                    Value::Object(k) => {
                        Value::Object(k.iter().map(|(k, v)| (k.clone(), list(v))).collect())
                    }
                    other => other.clone(),
                };
                (op.clone(), keys)
            })
            .collect();
        out.insert("Condition".into(), Value::Object(ops));
    }
    Value::Object(out)
}

/// Whether two policies say the same thing: statements compared in canonical form
/// (`canonical_statement`) and in any order, a single statement the same as a list of one.
pub fn same(a: &Value, b: &Value) -> bool {
    let canonical = |p: &Value| {
        let mut p = normalized(p);
        let mut sts: Vec<Value> = p["Statement"]
            .as_array()
            .expect("normalized")
            .iter()
            .map(canonical_statement)
            .collect();
        sts.sort_by_key(|s| s.to_string());
        p["Statement"] = Value::Array(sts);
        if p.get("Version").is_none() {
            p["Version"] = json!("2008-10-17");
        }
        p
    };
    canonical(a) == canonical(b)
}

/// What changes between two policies, for `ferry plan`: each statement that is added, removed
/// or changed, as pretty-printed JSON, every line marked `+ ` (added), `- ` (removed) or `  `
/// (unchanged, inside a changed statement). Statements are matched by Sid.
pub fn diff(before: &Value, after: &Value) -> Vec<String> {
    let b = normalized(before);
    let a = normalized(after);
    let bs = b["Statement"].as_array().expect("normalized");
    let as_ = a["Statement"].as_array().expect("normalized");
    let sid = |s: &Value| s.get("Sid").and_then(Value::as_str).map(str::to_string);
    let mut lines = Vec::new();
    for s in bs {
        let counterpart = sid(s).and_then(|id| as_.iter().find(|x| sid(x).as_deref() == Some(&id)));
        match counterpart {
            Some(x) if canonical_statement(x) == canonical_statement(s) => {}
            Some(x) => lines.extend(line_diff(&pretty(s), &pretty(x))),
            None if !as_
                .iter()
                .any(|x| canonical_statement(x) == canonical_statement(s)) =>
            {
                lines.extend(pretty(s).iter().map(|l| format!("- {l}")))
            }
            None => {}
        }
    }
    for s in as_ {
        let had = bs
            .iter()
            .any(|x| canonical_statement(x) == canonical_statement(s))
            || sid(s).is_some_and(|id| bs.iter().any(|x| sid(x).as_deref() == Some(&id)));
        if !had {
            lines.extend(pretty(s).iter().map(|l| format!("+ {l}")));
        }
    }
    lines
}

fn pretty(v: &Value) -> Vec<String> {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A line diff by longest common subsequence (statements are a few dozen lines).
fn line_diff(old: &[String], new: &[String]) -> Vec<String> {
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push(format!("  {}", old[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", new[j]));
            j += 1;
        } else {
            out.push(format!("- {}", old[i]));
            i += 1;
        }
    }
    out
}

/// Whether `policy` allows `action` on `resource`: an Allow statement whose `Action` and
/// `Resource` match (`*` and `?` wildcards; actions case-insensitive), for one of `principals`
/// when it is a resource policy (`None`: an identity policy, whose statements name no
/// principal), and no Deny that matches. Conditions are not evaluated: this explains a
/// failure, it does not decide access.
pub fn allows(policy: &Value, action: &str, resource: &str, principals: Option<&[String]>) -> bool {
    let statements = normalized(policy)["Statement"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let matches = |st: &Value| {
        let listed = |v: &Value| -> Vec<String> {
            match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let action_ok = listed(&st["Action"])
            .iter()
            .any(|a| wildcard(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()));
        let resource_ok = st
            .get("Resource")
            .is_none_or(|r| listed(r).iter().any(|p| wildcard(p, resource)));
        let principal_ok = match principals {
            None => true,
            Some(who) => {
                let p = &st["Principal"];
                p == "*"
                    || listed(&p["AWS"]).iter().any(|x| {
                        x == "*"
                            || who
                                .iter()
                                .any(|w| w == x || root_of(w).as_deref() == Some(x.as_str()))
                    })
            }
        };
        action_ok && resource_ok && principal_ok
    };
    let effect = |st: &Value, e: &str| st["Effect"].as_str() == Some(e);
    !statements
        .iter()
        .any(|st| effect(st, "Deny") && matches(st))
        && statements
            .iter()
            .any(|st| effect(st, "Allow") && matches(st))
}

/// `arn:aws:iam::123456789012:root` for a principal of that account, also written as the bare
/// account id.
fn root_of(principal: &str) -> Option<String> {
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("arn:aws:iam::{principal}:root"));
    }
    None
}

/// IAM's `*` / `?` matching.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Value {
        json!({
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                { "Sid": "Enable IAM User Permissions", "Effect": "Allow",
                  "Principal": { "AWS": "arn:aws:iam::111111111111:root" }, "Action": "kms:*", "Resource": "*" },
                { "Effect": "Allow", "Principal": { "AWS": "arn:aws:iam::111111111111:role/x" },
                  "Action": "kms:Decrypt", "Resource": "*" }
            ]
        })
    }

    #[test]
    fn merge_adds_and_keeps_everything_else_byte_for_byte() {
        let st = json!({ "Sid": "ferry-p-222", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*" });
        let merged = merge(&policy(), std::slice::from_ref(&st));
        let list = merged["Statement"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            &list[..2],
            policy()["Statement"].as_array().unwrap().as_slice()
        );
        assert_eq!(list[2], st);
        assert_eq!(merged["Id"], "key-default-1");
        // Merging again changes nothing.
        assert!(same(&merge(&merged, &[st]), &merged));
    }

    #[test]
    fn merge_replaces_by_sid_and_remove_takes_only_that_sid() {
        let st1 = json!({ "Sid": "ferry-p", "Action": "kms:Decrypt" });
        let st2 = json!({ "Sid": "ferry-p", "Action": ["kms:Decrypt", "kms:DescribeKey"] });
        let merged = merge(&merge(&policy(), &[st1]), std::slice::from_ref(&st2));
        assert_eq!(merged["Statement"].as_array().unwrap().len(), 3);
        assert_eq!(merged["Statement"][2], st2);
        let back = remove(&merged, "ferry-p");
        assert!(same(&back, &policy()));
    }

    #[test]
    fn a_policy_that_does_not_parse_is_an_error_not_an_empty_policy() {
        let e = parse(Some("{ not json"), "the key policy of k").unwrap_err();
        assert_eq!(e.code, "UnreadablePolicy");
        assert!(e.message.contains("{ not json"), "{}", e.message);
        assert_eq!(parse(None, "x").unwrap(), json!({}));
    }

    #[test]
    fn equivalent_forms_of_a_policy_are_the_same_policy() {
        let ours = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "A", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
             "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*",
             "Condition": {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}},
            {"Sid": "B", "Effect": "Allow", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"}
        ]});
        // As KMS may hand it back: statements reordered, lists reordered, the account id
        // principal as given, single values as lists.
        let echoed = json!({"Statement": [
            {"Effect": "Allow", "Resource": ["*"], "Principal": "*", "Action": ["kms:Encrypt"], "Sid": "B"},
            {"Sid": "A", "Effect": "Allow", "Principal": {"AWS": ["222222222222"]},
             "Action": ["kms:DescribeKey", "kms:Decrypt"], "Resource": ["*"],
             "Condition": {"StringEquals": {"kms:ViaService": ["ec2.us-east-1.amazonaws.com"]}}}
        ], "Version": "2012-10-17"});
        assert!(same(&ours, &echoed));
        assert!(
            diff(&ours, &echoed).is_empty(),
            "{:?}",
            diff(&ours, &echoed)
        );
        let mut other = echoed.clone();
        other["Statement"][1]["Action"] = json!(["kms:Decrypt"]);
        assert!(!same(&ours, &other), "a real change is a change");
        let mut other = echoed;
        other["Statement"][1]["Principal"] = json!({"AWS": "333333333333"});
        assert!(!same(&ours, &other));
    }

    #[test]
    fn single_statement_object_is_a_list_of_one() {
        let p = json!({ "Version": "2012-10-17", "Statement": { "Sid": "a", "Effect": "Allow" } });
        let merged = merge(&p, &[json!({ "Sid": "b" })]);
        assert_eq!(merged["Statement"].as_array().unwrap().len(), 2);
        assert_eq!(diff(&p, &merged), ["+ {", r#"+   "Sid": "b""#, "+ }"]);
    }

    #[test]
    fn a_changed_statement_shows_its_changed_lines_only_marked() {
        let before =
            json!({ "Statement": [{ "Sid": "x", "Effect": "Allow", "Action": "kms:Decrypt" }] });
        let after =
            json!({ "Statement": [{ "Sid": "x", "Effect": "Allow", "Action": "kms:Encrypt" }] });
        let d = diff(&before, &after);
        assert!(
            d.contains(&r#"-   "Action": "kms:Decrypt","#.to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&r#"+   "Action": "kms:Encrypt","#.to_string()),
            "{d:?}"
        );
        assert!(d.contains(&r#"    "Sid": "x""#.to_string()), "{d:?}");
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn allows_matches_actions_resources_and_principals_with_wildcards() {
        let identity = json!({"Statement": [
            {"Effect": "Allow", "Action": ["kms:Decrypt", "s3:Get*"], "Resource": "arn:aws:kms:*:1:key/*"},
            {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:eu-west-2:1:key/k2"}
        ]});
        assert!(allows(
            &identity,
            "KMS:Decrypt",
            "arn:aws:kms:us-east-1:1:key/k",
            None
        ));
        assert!(!allows(
            &identity,
            "kms:Encrypt",
            "arn:aws:kms:us-east-1:1:key/k",
            None
        ));
        assert!(!allows(
            &identity,
            "kms:Decrypt",
            "arn:aws:kms:eu-west-2:1:key/k2",
            None
        ));
        let key = json!({"Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"}, "Action": "kms:*", "Resource": "*"}});
        let who = ["111111111111".to_string()];
        assert!(allows(
            &key,
            "kms:Encrypt",
            "arn:aws:kms:r:1:key/k",
            Some(&who)
        ));
        assert!(!allows(
            &key,
            "kms:Encrypt",
            "arn:aws:kms:r:1:key/k",
            Some(&["222222222222".to_string()])
        ));
        assert!(wildcard("a?c*", "abcdef") && !wildcard("a?c", "abcd"));
    }
}
