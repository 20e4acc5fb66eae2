//! Errors as sentences (issue 19): every error a user can hit is at most three lines, names
//! the account and the fix, has its exit status, and never shows Rust `Debug` output; the
//! SDK's chain of causes appears with `-v` only.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use super::{DST, PROD, SRC, World, text};

/// Keys whose session the emulator says has ended (`expired_access_keys`).
const EXPIRED_KEY: &str = "AKIA111111111111XPRD";

/// The plan of every case: an account reached through a profile, a key ferry creates, a copy.
fn plan() -> String {
    format!(
        r#"version: 1
name: errors
accounts:
  prod: {{ id: "{PROD}", profile: prod }}
keys:
  dr: {{ account: prod, region: {DST}, alias: alias/dr, create: true }}
migrations:
  - id: nightly
    type: snapshot-copy
    source: {{ account: prod, region: {SRC}, tags: {{ Backup: nightly }} }}
    destination: {{ region: {DST}, key: dr }}
"#
    )
}

/// How one case reaches AWS.
#[derive(Clone, Copy)]
enum Creds {
    /// None anywhere: no keys, no profile files, no instance metadata.
    None,
    /// The emulator's keys for prod, in the environment (as the other e2e tests).
    Keys,
    /// Keys with a session token the emulator says has expired.
    ExpiredSession,
    /// Profile `prod` signs in with SSO, and its cached token has expired.
    ExpiredSso,
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    creds: Creds,
    /// `--endpoint-url` (the emulator unless the case says otherwise).
    endpoint: String,
    code: i32,
    /// The fix the message must name.
    fix: &'static [&'static str],
    /// What only `-v` shows: the technical chain (empty: nothing more to show).
    verbose: &'static [&'static str],
}

/// ferry with nothing from this machine's AWS setup: an empty HOME, no AWS_* variables, no
/// profile files, no instance metadata; then what the case gives it.
fn command(w: &World, home: &Path, case: &Case, verbose: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env_clear()
        .current_dir(w.dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("FERRY_POLL_INTERVAL_MS", "200")
        .env("FERRY_VISIBILITY_WAIT_MS", "2500")
        .stdin(Stdio::null());
    match case.creds {
        Creds::None => {}
        Creds::Keys => {
            c.env("AWS_ACCESS_KEY_ID", super::access_key_for(PROD))
                .env("AWS_SECRET_ACCESS_KEY", "ferry-test")
                .env("AWS_REGION", SRC);
        }
        Creds::ExpiredSession => {
            c.env("AWS_ACCESS_KEY_ID", EXPIRED_KEY)
                .env("AWS_SECRET_ACCESS_KEY", "ferry-test")
                .env("AWS_SESSION_TOKEN", "a-session-that-ended")
                .env("AWS_REGION", SRC);
        }
        Creds::ExpiredSso => {
            c.env("AWS_CONFIG_FILE", sso_home(home).join(".aws/config"))
                .env("HOME", sso_home(home));
        }
    }
    c.arg("--endpoint-url").arg(&case.endpoint);
    if verbose {
        c.arg("-v");
    }
    c.args(&case.args);
    c
}

/// A HOME where profile `prod` signs in through SSO session `corp`, whose cached token expired
/// in 2020 and has no refresh token (`aws sso login` is the only way on).
fn sso_home(home: &Path) -> std::path::PathBuf {
    let dir = home.join("sso");
    let cache = dir.join(".aws/sso/cache");
    if !cache.exists() {
        std::fs::create_dir_all(&cache).expect("sso cache dir");
        std::fs::write(
            dir.join(".aws/config"),
            format!(
                "[profile prod]\nsso_session = corp\nsso_account_id = {PROD}\nsso_role_name = Admin\nregion = {SRC}\n\n\
                 [sso-session corp]\nsso_start_url = https://corp.awsapps.example/start\nsso_region = {SRC}\n"
            ),
        )
        .expect("config");
        // The SDK's cache file name: the SHA-1 of the session name ("corp").
        std::fs::write(
            cache.join("ee0bfd2552fbd840c02cc48b6e823320543c450f.json"),
            json!({
                "accessToken": "expired",
                "expiresAt": "2020-01-01T00:00:00Z",
                "region": SRC,
                "startUrl": "https://corp.awsapps.example/start",
            })
            .to_string(),
        )
        .expect("token");
    }
    dir
}

/// The error report: from the first `error:` line on (an apply's progress lines come before).
fn report(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

fn assert_no_debug(case: &str, stderr: &str) {
    for dump in [
        "{ ",
        " }",
        "Some(",
        "ConnectorError",
        "DispatchFailure",
        "ProviderChainError",
        "CredentialsNotLoaded",
        "hyper_util",
        "╭─[",
    ] {
        assert!(
            !stderr.contains(dump),
            "{case}: `{dump}` in the error output:\n{stderr}"
        );
    }
}

#[test]
fn every_error_a_user_can_hit_is_a_short_sentence_with_its_fix_and_exit_status() {
    let w = World::new(json!({
        "expired_access_keys": [EXPIRED_KEY],
        "deny": ["ec2:CopySnapshot"],
    }));
    let key = w.key(SRC, "alias/source");
    let sources = w.snapshots(&key, 1, |_| true);
    let plan_file = w.write_plan(&plan());
    let home = tempfile::tempdir().expect("home");
    let emulator = w.emu.endpoint().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases = vec![
        Case {
            name: "no credentials",
            args: args(&["plan", &plan_file]),
            creds: Creds::None,
            endpoint: emulator.clone(),
            code: 1,
            fix: &["account `prod`", "aws sso login --profile prod"],
            verbose: &["no credentials found in chain", "Ec2InstanceMetadata"],
        },
        Case {
            name: "an unreachable endpoint",
            args: args(&["plan", &plan_file]),
            creds: Creds::Keys,
            endpoint: "http://127.0.0.1:9".into(),
            code: 1,
            fix: &[
                "could not connect to http://127.0.0.1:9 (sts, us-east-1)",
                "account `prod`",
                "--endpoint-url",
            ],
            verbose: &["tcp connect error"],
        },
        Case {
            name: "an expired session",
            args: args(&["plan", &plan_file]),
            creds: Creds::ExpiredSession,
            endpoint: emulator.clone(),
            code: 1,
            fix: &["account `prod`", "expired", "AWS_SESSION_TOKEN"],
            verbose: &["answered HTTP 400: ExpiredToken"],
        },
        Case {
            name: "an expired SSO token",
            args: args(&["plan", &plan_file]),
            creds: Creds::ExpiredSso,
            endpoint: emulator.clone(),
            code: 1,
            fix: &[
                "account `prod` (profile `prod`)",
                "expired",
                "aws sso login --profile prod",
            ],
            verbose: &["an error occurred while loading an access token"],
        },
        Case {
            name: "AccessDenied on CopySnapshot",
            args: args(&["apply", "--yes", &plan_file]),
            creds: Creds::Keys,
            endpoint: emulator.clone(),
            code: 1,
            fix: &[
                "ferry-test, may not call ec2:CopySnapshot in eu-west-2",
                "UnauthorizedOperation",
                "`ferry iam-policy",
                "ferry resume",
            ],
            // A step's error has no chain below AWS's answer: -v shows the same sentence.
            verbose: &[],
        },
        Case {
            name: "a missing plan file",
            args: args(&["apply", "no-such-plan.yaml"]),
            creds: Creds::Keys,
            endpoint: emulator.clone(),
            code: 2,
            fix: &["cannot read the plan no-such-plan.yaml", "check the path"],
            verbose: &[],
        },
        Case {
            name: "a plan that is a directory",
            args: args(&["plan", "."]),
            creds: Creds::Keys,
            endpoint: emulator.clone(),
            code: 2,
            fix: &[
                "cannot read the plan .",
                "is a directory",
                "plan's YAML file",
            ],
            verbose: &[],
        },
    ];
    for case in &cases {
        for verbose in [false, true] {
            let out = command(&w, home.path(), case, verbose)
                .output()
                .expect("ferry runs");
            let stderr = text(&out.stderr);
            let label = format!("{}{}", case.name, if verbose { " (-v)" } else { "" });
            eprintln!("--- {label}: exit {:?}\n{stderr}", out.status.code());
            assert_eq!(out.status.code(), Some(case.code), "{label}:\n{stderr}");
            assert_no_debug(&label, &stderr);
            let lines = report(&stderr);
            assert!(!lines.is_empty(), "{label}: no `error:` line:\n{stderr}");
            for f in case.fix {
                assert!(stderr.contains(f), "{label}: `{f}` not named:\n{stderr}");
            }
            if verbose {
                for v in case.verbose {
                    assert!(
                        stderr.contains(v),
                        "{label}: -v does not show `{v}`:\n{stderr}"
                    );
                }
            } else {
                assert!(
                    lines.len() <= 3,
                    "{label}: {} lines, at most 3:\n{stderr}",
                    lines.len()
                );
                for v in case.verbose {
                    assert!(!stderr.contains(v), "{label}: `{v}` without -v:\n{stderr}");
                }
                if case.name != "AccessDenied on CopySnapshot" {
                    // Nothing but the error: no progress lines before it.
                    assert!(stderr.starts_with("error:"), "{label}:\n{stderr}");
                }
            }
        }
    }
    // Found before any change: the credential and endpoint cases never reached a mutation, and
    // the denied copy made none.
    let copies = w.copies();
    assert!(
        copies.iter().all(|(_, src, _, _)| !sources.contains(src)),
        "no copy was made: {copies:?}"
    );
}
