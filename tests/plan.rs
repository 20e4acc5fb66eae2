//! The plan language end to end: example plans, the corpus of bad plans and their diagnostics,
//! compiled graphs, the schema, the property that graphs respect dependencies, and the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry::graph;
use ferry::plan;
use ferry::report::graph as render;
use proptest::prelude::*;
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Paths relative to the repository root, so snapshots do not depend on where it is checked out.
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(root()).unwrap_or(path).to_path_buf()
}

fn example_plans() -> Vec<PathBuf> {
    let mut plans: Vec<PathBuf> = std::fs::read_dir(root().join("plans"))
        .expect("plans/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| relative(&p))
        .collect();
    plans.sort();
    plans
}

/// Runs the real `ferry` binary from the repository root.
fn ferry(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(root())
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("ferry runs");
    if std::env::var_os("FERRY_TEST_SHOW").is_some() {
        eprintln!(
            "ferry {args:?}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A corpus file by the name after its number, e.g. `dependency-cycle`.
fn bad(name: &str) -> PathBuf {
    let dir = root().join("tests/plans/bad");
    let found = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            f.split_once('-')
                .is_some_and(|(_, rest)| rest == format!("{name}.yaml"))
        })
        .unwrap_or_else(|| panic!("no corpus file named {name}"));
    relative(&found)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_example_plan_validates() {
    let plans = example_plans();
    assert!(
        plans.len() >= 4,
        "one example per migration type and a combined one"
    );
    for p in &plans {
        if let Err(e) = plan::load(p) {
            panic!("{} should validate:\n{}", p.display(), e.render());
        }
    }
    let mut args = vec!["validate"];
    let names: Vec<String> = plans.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = ferry(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn examples_cover_every_migration_type() {
    let mut types = std::collections::BTreeSet::new();
    for p in example_plans() {
        for m in plan::load(&p).expect("valid").migrations {
            types.insert(m.type_name());
        }
    }
    let mut all = plan::MIGRATION_TYPES.to_vec();
    all.sort();
    assert_eq!(types.into_iter().collect::<Vec<_>>(), all);
}

#[test]
fn bad_plans_report_their_problems() {
    let mut seen = 0;
    insta::glob!("plans/bad/*.yaml", |path| {
        seen += 1;
        let rel = relative(path);
        let err = plan::load(&rel).expect_err("a bad plan must not load");
        assert!(!err.diagnostics.is_empty());
        let rendered = err.render();
        // Every problem names file:line:column and shows the line with a caret.
        let name = rel.display().to_string();
        for d in &err.diagnostics {
            assert!(
                rendered.contains(&format!("{name}:{}:{}", d.span.line, d.span.column)),
                "{rendered}"
            );
        }
        insta::assert_snapshot!(rendered);
    });
    assert!(
        seen >= 40,
        "the corpus has {seen} bad plans; it should have at least 40"
    );
}

#[test]
fn several_problems_in_one_file_are_all_reported() {
    let err = plan::load(&bad("several-problems")).unwrap_err();
    let messages: Vec<&str> = err.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(messages.len() >= 5, "{messages:#?}");
}

#[test]
fn a_cycle_is_named_in_full() {
    let err = plan::load(&bad("dependency-cycle")).unwrap_err();
    let cycle = err
        .diagnostics
        .iter()
        .find(|d| d.message.starts_with("dependency cycle"))
        .expect("the cycle is reported");
    assert_eq!(cycle.message, "dependency cycle: a -> c -> b -> a");
    assert_eq!(
        cycle.related.len(),
        3,
        "each edge of the cycle is pointed at"
    );
}

#[test]
fn compiled_graphs_of_the_examples() {
    for p in example_plans() {
        let plan = plan::load(&p).expect("valid");
        let g = graph::compile(&plan).expect("compiles");
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("graph-{name}"), render::text(&plan.name.value, &g));
    }
}

#[test]
fn schema_is_generated_from_the_plan_types() {
    let schema = plan::json_schema();
    let props: Vec<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = plan::PLAN_KEYS.to_vec();
    expected.sort();
    let mut props_sorted = props.clone();
    props_sorted.sort();
    assert_eq!(props_sorted, expected);
    let text = serde_json::to_string(&schema).unwrap();
    for t in plan::MIGRATION_TYPES {
        assert!(
            text.contains(&format!("\"{t}\"")),
            "schema names migration type {t}"
        );
    }
    insta::assert_json_snapshot!("schema", schema);
    let out = ferry(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("ferry schema prints JSON");
    assert_eq!(printed, schema);
}

#[test]
fn plan_offline_json_lists_steps_in_dependency_order() {
    let out = ferry(&[
        "plan",
        "--offline",
        "--output",
        "json",
        "plans/combined.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let steps = doc["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    let mut seen = std::collections::HashSet::new();
    for s in steps {
        for field in ["id", "kind", "account", "region", "depends_on"] {
            assert!(s.get(field).is_some(), "step {s} has `{field}`");
        }
        for d in s["depends_on"].as_array().unwrap() {
            assert!(
                seen.contains(d.as_str().unwrap()),
                "{d} comes before {}",
                s["id"]
            );
        }
        seen.insert(s["id"].as_str().unwrap().to_string());
    }
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"kms.create-key"));
    assert!(kinds.contains(&"ec2.copy-snapshot"));
    // A copy waits for the key it encrypts with.
    let copy = steps
        .iter()
        .find(|s| s["id"] == "db-snapshots/snap-0a1b2c3d4e5f60718/copy")
        .expect("the explicit snapshot has a copy step");
    assert!(
        copy["depends_on"]
            .as_array()
            .unwrap()
            .contains(&json!("key.dr-ebs/key/create"))
    );
    assert_eq!(copy["region"], "eu-west-2");
}

/// The ids of the steps `id` waits for.
fn deps_of(g: &graph::PlanGraph, id: &str) -> Vec<String> {
    g.dependencies(&id.parse().expect("a step id"))
        .into_iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn cross_account_copies_wait_for_shares_and_key_access() {
    let plan = plan::load(Path::new("plans/ami-copy.yaml")).unwrap();
    let g = graph::compile(&plan).unwrap();
    let deps = deps_of(&g, "golden-ami/ami-0123456789abcdef0/copy");
    for d in [
        "golden-ami/ami-0123456789abcdef0/share",
        "golden-ami/ami-0123456789abcdef0-snapshots/share",
        "golden-ami/source-keys/grant-access",
    ] {
        assert!(deps.contains(&d.to_string()), "{deps:?} contains {d}");
    }
    let unshare = deps_of(&g, "golden-ami/ami-0123456789abcdef0/unshare");
    assert!(unshare.contains(&"golden-ami/ami-0123456789abcdef0/copy".to_string()));
    // `depends_on: [golden-ami]`: the second migration's first step waits for the first's last.
    let find = deps_of(&g, "golden-ami-west/tagged/find");
    assert!(
        find.contains(&"golden-ami/source-keys/revoke-access".to_string()),
        "{find:?}"
    );
}

#[test]
fn graph_formats() {
    let dot = ferry(&["graph", "plans/snapshot-copy.yaml"]);
    assert_eq!(dot.status.code(), Some(0));
    let dot = text(&dot.stdout);
    assert!(dot.starts_with("digraph ferry {"));
    assert!(
        dot.contains("\"key.dr-ebs/key/create\" -> \"db-snapshots/snap-0a1b2c3d4e5f60718/copy\"")
    );
    let mermaid = ferry(&["graph", "--format", "mermaid", "plans/snapshot-copy.yaml"]);
    assert_eq!(mermaid.status.code(), Some(0));
    assert!(text(&mermaid.stdout).starts_with("flowchart LR"));
}

/// The subcommands `ferry --help` lists, from the clap definitions.
fn visible_subcommands() -> Vec<String> {
    use clap::CommandFactory;
    ferry::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn shell_completions_name_every_subcommand() {
    let names = visible_subcommands();
    assert!(names.len() >= 14, "{names:?}");
    let bash = ferry(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let script = text(&bash.stdout);
    for name in &names {
        assert!(
            script.contains(&format!("ferry__subcmd__{}", name.replace('-', "__")))
                || script.contains(&format!("ferry,{name})")),
            "bash completion names `{name}`"
        );
    }
    // The script parses (bash is on every machine the tests run on; skip where it is not).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.bash");
    std::fs::write(&file, &bash.stdout).unwrap();
    if let Ok(check) = Command::new("bash").arg("-n").arg(&file).output() {
        assert!(check.status.success(), "bash -n: {}", text(&check.stderr));
    }
    for shell in ["zsh", "fish"] {
        let out = ferry(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains("apply"), "{shell}: {script}");
        assert!(script.contains("destroy"), "{shell}");
    }
    assert!(script.len() > 1000);
    let unknown = ferry(&["completions", "tcsh"]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_lists_every_subcommand() {
    let out = ferry(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.contains(".TH ferry 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for name in visible_subcommands() {
        // roff escapes a hyphen.
        let entry = format!("ferry\\-{}(1)", name.replace('-', "\\-"));
        assert!(page.contains(&entry), "the man page lists {entry}");
    }
    let apply = ferry(&["man", "apply"]);
    assert_eq!(apply.status.code(), Some(0));
    let apply = text(&apply.stdout);
    assert!(apply.contains(".TH ferry-apply 1"), "{apply}");
    assert!(apply.contains("\\-\\-concurrency"), "{apply}");
    assert_eq!(ferry(&["man", "nope"]).status.code(), Some(2));
    let help = text(&ferry(&["--help"]).stdout);
    assert!(help.contains("completions"), "{help}");
    assert!(help.contains("\n  man "), "`man` is listed in help: {help}");
}

#[test]
fn exit_codes() {
    let path = bad("unknown-migration-field");
    let out = ferry(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:", path.display())), "{err}");
    assert!(err.contains("did you mean `destination`?"), "{err}");

    let missing = ferry(&["validate", "tests/plans/does-not-exist.yaml"]);
    assert_eq!(missing.status.code(), Some(2));

    let usage = ferry(&["plan"]);
    assert_eq!(usage.status.code(), Some(2), "a usage error exits 2");

    let ok = ferry(&["plan", "--offline", "plans/s3-replication.yaml"]);
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn huge_and_hostile_files_get_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // 100 MB of plausible YAML.
    let line = "# padding padding padding padding padding padding padding padding padding pad\n";
    let mut content = String::with_capacity(100 * 1024 * 1024);
    while content.len() < 100 * 1024 * 1024 {
        content.push_str(line);
    }
    std::fs::write(&big, &content).unwrap();
    let out = ferry(&["validate", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at most"),
        "{}",
        text(&out.stderr)
    );

    for name in [
        "alias-bomb",
        "deeply-nested",
        "binary-junk",
        "not-utf8",
        "empty-file",
    ] {
        let path = bad(name);
        let out = ferry(&["validate", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"), "{name}");
    }
}

// ---- property: random valid plans compile into graphs that respect every dependency ----

const REGIONS: &[&str] = &[
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "ap-southeast-2",
];

/// (account, region, create, multi_region, replica regions)
type KeyShape = (usize, usize, bool, bool, Vec<usize>);
/// (type, source account, source region, destination account, destination region, with tags,
/// depends on, revoke after)
type MigrationShape = (u8, usize, usize, usize, usize, bool, Vec<usize>, bool);

#[derive(Debug, Clone)]
struct Shape {
    accounts: usize,
    keys: Vec<KeyShape>,
    migrations: Vec<MigrationShape>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..4,
        prop::collection::vec(
            (
                0usize..3,
                0usize..5,
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(0usize..5, 0..3),
            ),
            0..5,
        ),
        prop::collection::vec(
            (
                0u8..3,
                0usize..3,
                0usize..5,
                0usize..3,
                0usize..5,
                any::<bool>(),
                prop::collection::vec(0usize..8, 0..3),
                any::<bool>(),
            ),
            1..8,
        ),
    )
        .prop_map(|(accounts, keys, migrations)| Shape {
            accounts,
            keys,
            migrations,
        })
}

/// Builds a plan that is valid by construction (as JSON, which is YAML) from a random shape.
fn plan_from(shape: &Shape) -> Value {
    let acct = |i: usize| format!("acct{}", i % shape.accounts);
    let mut accounts = serde_json::Map::new();
    for i in 0..shape.accounts {
        accounts.insert(
            acct(i),
            json!({ "id": format!("{:012}", 100000000000u64 + i as u64) }),
        );
    }
    let mut keys = serde_json::Map::new();
    let mut key_places = Vec::new();
    for (i, (a, r, create, mr, replicas)) in shape.keys.iter().enumerate() {
        let region = REGIONS[*r];
        let mut k =
            json!({ "account": acct(*a), "region": region, "alias": format!("alias/k{i}") });
        if *create {
            k["create"] = json!(true);
            k["rotation"] = json!(true);
        }
        let mut places = vec![(acct(*a), region.to_string())];
        if *mr {
            k["multi_region"] = json!(true);
            let mut reps: Vec<&str> = replicas
                .iter()
                .map(|r| REGIONS[*r])
                .filter(|r| *r != region)
                .collect();
            reps.sort();
            reps.dedup();
            if !reps.is_empty() {
                places.extend(reps.iter().map(|r| (acct(*a), r.to_string())));
                k["replicas"] = json!(reps);
            }
        }
        keys.insert(format!("k{i}"), k);
        key_places.push((format!("k{i}"), places));
    }
    let mut migrations = Vec::new();
    for (i, (ty, sa, sr, da, dr, tags, deps, revoke)) in shape.migrations.iter().enumerate() {
        let (src_a, src_r) = (acct(*sa), REGIONS[*sr]);
        let (mut dst_a, mut dst_r) = (acct(*da), REGIONS[*dr]);
        if dst_a == src_a && dst_r == src_r {
            dst_r = REGIONS[(*sr + 1) % REGIONS.len()];
        }
        if *ty == 2 {
            dst_a = src_a.clone();
        }
        // A plan key in the destination if one exists there, else a literal alias.
        let key = key_places
            .iter()
            .find(|(_, places)| places.iter().any(|(a, r)| *a == dst_a && r == dst_r))
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "alias/literal".into());
        let depends: Vec<String> = deps
            .iter()
            .filter(|d| **d < i)
            .map(|d| format!("m{d}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let cross = dst_a != src_a;
        let mut m = match ty {
            0 => {
                let mut source = json!({ "account": src_a, "region": src_r, "snapshots": [format!("snap-{:017x}", i)] });
                if *tags {
                    source["tags"] = json!({ "Backup": "nightly" });
                }
                json!({ "id": format!("m{i}"), "type": "snapshot-copy", "source": source,
                        "destination": { "account": dst_a, "region": dst_r, "key": key } })
            }
            1 => {
                let mut source = json!({ "account": src_a, "region": src_r, "images": [format!("ami-{:017x}", i)] });
                if *tags {
                    source["tags"] = json!({ "Role": "golden" });
                }
                json!({ "id": format!("m{i}"), "type": "ami-copy", "source": source,
                        "destination": { "account": dst_a, "region": dst_r, "key": key } })
            }
            _ => json!({ "id": format!("m{i}"), "type": "s3-replication",
                         "source": { "account": src_a, "bucket": format!("src-{i}") },
                         "destination": { "bucket": format!("dst-{i}"), "region": dst_r, "create": true, "key": key },
                         "role": { "name": format!("role-{i}") }, "backfill": *tags }),
        };
        if cross && *ty != 2 {
            m["revoke_after"] = json!(*revoke);
            m["key_access"] = json!(if *revoke { "grant" } else { "policy" });
        }
        m["depends_on"] = json!(depends);
        migrations.push(m);
    }
    json!({ "version": 1, "name": "prop", "accounts": accounts, "keys": keys, "migrations": migrations })
}

/// A step's spec as text, less its `copies_under` keys: a share looks for copies under a key
/// the plan makes only once that key exists (none can be there before), so it does not wait
/// for the key's step.
fn without_copies_under(spec: &str) -> String {
    const FIELD: &str = "copies_under: Some(";
    let mut out = String::new();
    let mut rest = spec;
    while let Some(at) = rest.find(FIELD) {
        out.push_str(&rest[..at]);
        let mut depth = 1;
        let inner = &rest[at + FIELD.len()..];
        let end = inner
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(inner.len(), |(i, _)| i + 1);
        rest = &inner[end..];
    }
    out.push_str(rest);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

    #[test]
    fn random_valid_plans_compile_into_ordered_acyclic_graphs(shape in shape()) {
        let doc = plan_from(&shape);
        let text = serde_json::to_string_pretty(&doc).unwrap();
        let plan = match plan::from_text("random.yaml", &text) {
            Ok(p) => p,
            Err(e) => panic!("generated plan should be valid:\n{}\n{}", e.render(), text),
        };
        let g = graph::compile(&plan).expect("compiles");
        prop_assert!(!petgraph::algo::is_cyclic_directed(g.petgraph()));
        let mut position = std::collections::HashMap::new();
        for (i, s) in g.in_order().enumerate() {
            prop_assert!(position.insert(s.id.clone(), i).is_none(), "step ids are unique");
        }
        prop_assert_eq!(position.len(), g.len());
        for s in g.in_order() {
            prop_assert!(plan.accounts.iter().any(|a| a.name.value == s.scope.account.as_str()));
        }
        // The order alone proves nothing (a topological sort respects whatever edges there
        // are): what matters is that the edges are there. Judged by paths in the graph.
        let pg = g.petgraph();
        let node: std::collections::HashMap<String, petgraph::graph::NodeIndex> =
            pg.node_indices().map(|n| (pg[n].id.to_string(), n)).collect();
        let after = |before: &graph::PlannedStep, step: &graph::PlannedStep| {
            petgraph::algo::has_path_connecting(pg, node[&before.id.to_string()], node[&step.id.to_string()], None)
        };
        // A step that reads another step's output (a key it makes, a copy it shares) runs
        // after it.
        let specs: Vec<(&graph::PlannedStep, String)> =
            g.in_order().map(|s| (s, without_copies_under(&format!("{:?}", s.spec)))).collect();
        for (s, spec) in &specs {
            for t in g.in_order().filter(|t| t.id != s.id) {
                if spec.contains(&format!("{:?}", t.id)) {
                    prop_assert!(after(t, s), "{} reads the output of {} but may run before it", s.id, t.id);
                }
            }
        }
        // A migration that depends on another starts only after all of that one's steps.
        for m in &plan.migrations {
            for dep in m.depends_on() {
                let owned_by = |s: &graph::PlannedStep, m: &str| s.id.owner.to_string() == m;
                for a in g.in_order().filter(|s| owned_by(s, &dep.value)) {
                    for b in g.in_order().filter(|s| owned_by(s, &m.id().value)) {
                        prop_assert!(after(a, b), "{} of {} may run before {}", b.id, m.id().value, a.id);
                    }
                }
            }
        }
    }
}

#[test]
fn iam_policy_lists_what_each_account_needs() {
    let out = ferry(&["iam-policy", "plans/ami-copy.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let policies: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let actions = |account: &str| -> Vec<String> {
        policies[account]["policy"]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
            })
            .collect()
    };
    // The source account shares and grants; the destination account copies.
    let prod = actions("prod");
    for a in [
        "ec2:ModifyImageAttribute",
        "ec2:ModifySnapshotAttribute",
        "kms:CreateGrant",
        "kms:RevokeGrant",
    ] {
        assert!(prod.contains(&a.to_string()), "prod needs {a}: {prod:?}");
    }
    let backup = actions("backup");
    assert!(backup.contains(&"ec2:CopyImage".to_string()));
    assert!(
        !backup.contains(&"ec2:ModifyImageAttribute".to_string()),
        "least privilege"
    );
    assert_eq!(
        policies["backup"]["caller_needs"]["Action"],
        "sts:AssumeRole"
    );
    insta::assert_json_snapshot!("iam-policy-ami-copy", policies);
}

#[test]
fn resolved_copies_start_largest_first() {
    let plan = plan::load(Path::new("plans/snapshot-copy.yaml")).unwrap();
    let mut resolution = ferry::resolve::Resolution::default();
    let inventory = &mut resolution.inventory;
    inventory.tagged.insert(
        "db-snapshots".into(),
        vec![
            "snap-00000000000000001".into(),
            "snap-00000000000000002".into(),
        ],
    );
    inventory.sizes.insert("snap-00000000000000001".into(), 8);
    inventory.sizes.insert("snap-00000000000000002".into(), 500);
    inventory.sizes.insert("snap-0a1b2c3d4e5f60718".into(), 100);
    let g = graph::compile_resolved(&plan, &resolution).unwrap();
    let copies: Vec<String> = g
        .in_order()
        .filter(|s| s.kind() == graph::StepKind::CopySnapshot)
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(
        copies,
        [
            "db-snapshots/snap-00000000000000002/copy",
            "db-snapshots/snap-0a1b2c3d4e5f60718/copy",
            "db-snapshots/snap-00000000000000001/copy",
        ]
    );
    assert!(
        g.get(&"db-snapshots/tagged/find".parse().unwrap())
            .is_none(),
        "the selector was expanded"
    );
}

/// The layers of the crate, lowest first: a module may import only modules of lower layers.
/// (`exec` knows nothing of AWS or of ferry's steps; the stages run plan -> resolve -> graph,
/// with the steps above the graph they are built from.)
const LAYERS: &[&[&str]] = &[
    &["ids", "exec"],
    &["quotas", "prices"],
    &["plan"],
    &["aws"],
    &["journal", "lookup"],
    &["resolve"],
    &["graph"],
    &["steps"],
    &["report"],
    &["cli"],
    &["commands"],
];

/// Every `crate::<module>` a source tree names, per top-level module.
fn crate_imports(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = vec![path.clone()];
        let mut names = std::collections::BTreeSet::new();
        while let Some(f) = files.pop() {
            if f.is_dir() {
                files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if module != name && !module.is_empty() {
                    names.insert(module);
                }
            }
        }
        out.insert(name, names);
    }
    out
}

fn layering_problems(src: &Path) -> Vec<String> {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut problems = Vec::new();
    for (module, imports) in crate_imports(src) {
        let Some(mine) = layer(&module) else {
            problems.push(format!("module `{module}` is in no layer"));
            continue;
        };
        for i in imports {
            match layer(&i) {
                Some(theirs) if theirs < mine => {}
                _ => problems.push(format!("`{module}` imports `{i}`, which is not below it")),
            }
        }
    }
    problems
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let problems = layering_problems(Path::new("src"));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_planted_circle_breaks_the_layering() {
    // A copy of the sources where `resolve` uses the steps again (the circle this replaced).
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
        while let Some((f, t)) = stack.pop() {
            if f.is_dir() {
                std::fs::create_dir_all(&t).unwrap();
                for e in std::fs::read_dir(&f).unwrap() {
                    let p = e.unwrap().path();
                    stack.push((p.clone(), t.join(p.file_name().unwrap())));
                }
            } else {
                std::fs::copy(&f, &t).unwrap();
            }
        }
    };
    copy(Path::new("src"), dir.path());
    let resolve = dir.path().join("resolve/mod.rs");
    let text = std::fs::read_to_string(&resolve).unwrap();
    std::fs::write(&resolve, format!("use crate::steps::Cx;\n{text}")).unwrap();
    let problems = layering_problems(dir.path());
    assert_eq!(
        problems,
        ["`resolve` imports `steps`, which is not below it"],
        "the planted import is found, and only it"
    );
}

#[test]
fn modules_within_a_layer_do_not_import_each_other_in_a_circle() {
    for dir in [
        "src/steps",
        "src/exec",
        "src/plan",
        "src/journal",
        "src/graph",
        "src/aws",
    ] {
        let mut uses: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
            .filter(|n| n != "mod")
            .collect();
        for f in &files {
            let me = f.file_stem().unwrap().to_string_lossy().to_string();
            if me == "mod" {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            let used = names
                .iter()
                .filter(|n| **n != me && text.contains(&format!("super::{n}")))
                .cloned()
                .collect();
            uses.insert(me, used);
        }
        // Depth-first search for a back edge.
        fn visit(
            n: &str,
            uses: &std::collections::BTreeMap<String, Vec<String>>,
            path: &mut Vec<String>,
            done: &mut std::collections::BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == n) {
                let mut cycle = path[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            if !done.insert(n.to_string()) {
                return None;
            }
            path.push(n.to_string());
            for m in uses.get(n).into_iter().flatten() {
                if let Some(c) = visit(m, uses, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = Default::default();
        for n in uses.keys() {
            if let Some(cycle) = visit(n, &uses, &mut Vec::new(), &mut done) {
                panic!("{dir}: {} import each other", cycle.join(" -> "));
            }
        }
    }
}
