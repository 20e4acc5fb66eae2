//! Text -> typed [`Plan`], collecting every problem instead of stopping at the first.
//!
//! Each account, key, migration and the settings are decoded on their own, so one broken entry
//! does not hide the problems of the others.

use std::collections::{BTreeSet, HashMap};

use super::de::{Spanned, from_node, from_node_skipping, one_of, suggest};
use super::diagnostic::{Diagnostic, Span};
use super::model::{MIGRATION_TYPES, Migration, Named, PLAN_KEYS, Plan, Settings};
use super::yaml::{self, Node, Value};

/// What decoding produced: the plan (possibly with broken parts left out) and its problems.
pub struct Decoded {
    pub plan: Option<Plan>,
    pub diagnostics: Vec<Diagnostic>,
    /// Names of entries that exist but could not be decoded; checks treat them as defined so
    /// that one typo does not cascade into "unknown account" errors elsewhere.
    pub broken: Broken,
}

/// Names of entries that are present but could not be decoded, by section.
#[derive(Debug, Default)]
pub struct Broken {
    pub accounts: BTreeSet<String>,
    pub keys: BTreeSet<String>,
    pub migrations: BTreeSet<String>,
}

pub fn decode(text: &str) -> Decoded {
    let mut out = Decoded {
        plan: None,
        diagnostics: Vec::new(),
        broken: Broken::default(),
    };
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(d) => {
            out.diagnostics.push(d);
            return out;
        }
    };
    let Value::Map(entries) = &root.value else {
        out.diagnostics.push(
            Diagnostic::new(format!(
                "a plan is a mapping of keys ({}), but this file holds {}",
                one_of(PLAN_KEYS),
                root.kind()
            ))
            .at(root.span),
        );
        return out;
    };

    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut version = None;
    let mut name = None;
    let mut accounts = None;
    let mut keys = Vec::new();
    let mut migrations = None;
    let mut settings = Settings::default();
    let diags = &mut out.diagnostics;

    for (k, v) in entries {
        let Some(key) = k.scalar_text() else {
            diags.push(Diagnostic::new("a plan key must be a plain word").at(k.span));
            continue;
        };
        if let Some(first) = seen.get(&key) {
            diags.push(
                Diagnostic::new(format!("duplicate key `{key}`"))
                    .at(k.span)
                    .label("defined again here")
                    .related(*first, "first defined here")
                    .help("YAML mappings must not repeat a key; remove one of them"),
            );
            continue;
        }
        seen.insert(key.clone(), k.span);
        match key.as_str() {
            "version" => version = take(from_node::<Spanned<u32>>(v), diags),
            "name" => name = take(from_node::<Spanned<String>>(v), diags),
            "accounts" => {
                accounts = Some(named_entries(
                    v,
                    "accounts",
                    diags,
                    &mut out.broken.accounts,
                ))
            }
            "keys" => keys = named_entries(v, "keys", diags, &mut out.broken.keys),
            "migrations" => migrations = Some(migration_list(v, diags, &mut out.broken.migrations)),
            "settings" => {
                if let Some(s) = take(from_node::<Settings>(v), diags) {
                    settings = s;
                }
            }
            other => {
                let d = Diagnostic::new(format!("unknown key `{other}`"))
                    .at(k.span)
                    .label("unknown key");
                diags.push(match suggest(other, PLAN_KEYS.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("the top-level keys are {}", one_of(PLAN_KEYS))),
                });
            }
        }
    }

    for (field, missing) in [
        (
            "version",
            version.is_none() && !seen.contains_key("version"),
        ),
        ("name", name.is_none() && !seen.contains_key("name")),
        ("accounts", accounts.is_none()),
        ("migrations", migrations.is_none()),
    ] {
        if missing {
            let d = Diagnostic::new(format!("missing required key `{field}`"))
                .at(Span::start())
                .label(format!("`{field}` is missing from the plan"));
            diags.push(match field {
                "version" => d.help("add `version: 1` at the top of the plan"),
                _ => d,
            });
        }
    }

    if let (Some(version), Some(name)) = (version, name) {
        out.plan = Some(Plan {
            version,
            name,
            accounts: accounts.unwrap_or_default(),
            keys,
            migrations: migrations.unwrap_or_default(),
            settings,
        });
    }
    out
}

fn take<T>(r: Result<T, Diagnostic>, diags: &mut Vec<Diagnostic>) -> Option<T> {
    r.map_err(|d| diags.push(d)).ok()
}

fn named_entries<T: for<'a> serde::Deserialize<'a>>(
    node: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
    broken: &mut BTreeSet<String>,
) -> Vec<Named<T>> {
    let Value::Map(entries) = &node.value else {
        diags.push(
            Diagnostic::new(format!(
                "`{what}` is a mapping of names to entries, but this is {}",
                node.kind()
            ))
            .at(node.span)
            .label(format!("{} here", node.kind())),
        );
        return Vec::new();
    };
    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.scalar_text() else {
            diags.push(
                Diagnostic::new(format!("a name in `{what}` must be a plain word")).at(k.span),
            );
            continue;
        };
        if let Some(first) = seen.get(&name) {
            diags.push(
                Diagnostic::new(format!("`{name}` is defined twice in `{what}`"))
                    .at(k.span)
                    .label("defined again here")
                    .related(*first, "first defined here"),
            );
            continue;
        }
        seen.insert(name.clone(), k.span);
        match from_node::<T>(v) {
            Ok(value) => out.push(Named {
                name: Spanned::new(name, k.span),
                value,
            }),
            Err(d) => {
                diags.push(d);
                broken.insert(name);
            }
        }
    }
    out
}

fn migration_list(
    node: &Node,
    diags: &mut Vec<Diagnostic>,
    broken: &mut BTreeSet<String>,
) -> Vec<Migration> {
    let Value::Seq(items) = &node.value else {
        diags.push(
            Diagnostic::new(format!(
                "`migrations` is a list (each item starts with `- id: ...`), but this is {}",
                node.kind()
            ))
            .at(node.span),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        match migration(item) {
            Ok(m) => out.push(m),
            Err(d) => {
                diags.push(d);
                if let Some(id) = field(item, "id").and_then(Node::scalar_text) {
                    broken.insert(id);
                }
            }
        }
    }
    out
}

fn field<'a>(node: &'a Node, name: &str) -> Option<&'a Node> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar_text().as_deref() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn migration(item: &Node) -> Result<Migration, Diagnostic> {
    if !matches!(item.value, Value::Map(_)) {
        return Err(Diagnostic::new(format!(
            "a migration is a mapping with `id`, `type`, `source` and `destination`, but this is {}",
            item.kind()
        ))
        .at(item.span));
    }
    let Some(ty) = field(item, "type") else {
        return Err(Diagnostic::new("this migration has no `type`")
            .at(item.span)
            .label("`type` is missing here")
            .help(format!(
                "add `type:` with one of {}",
                one_of(MIGRATION_TYPES)
            )));
    };
    let skip: &[&str] = &["type"];
    match ty.value {
        Value::Str(ref t) if t == "snapshot-copy" => {
            from_node_skipping(item, skip).map(Migration::SnapshotCopy)
        }
        Value::Str(ref t) if t == "ami-copy" => {
            from_node_skipping(item, skip).map(Migration::AmiCopy)
        }
        Value::Str(ref t) if t == "s3-replication" => {
            from_node_skipping(item, skip).map(Migration::S3Replication)
        }
        Value::Str(ref t) if t == "db-snapshot-copy" => {
            from_node_skipping(item, skip).map(Migration::DbSnapshotCopy)
        }
        Value::Str(ref t) if t == "db-cluster-snapshot-copy" => {
            from_node_skipping(item, skip).map(Migration::DbClusterSnapshotCopy)
        }
        _ => {
            let text = ty.scalar_text().unwrap_or_default();
            let d = Diagnostic::new(format!("unknown migration type `{text}`"))
                .at(ty.span)
                .label("unknown type");
            Err(match suggest(&text, MIGRATION_TYPES.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "the migration types are {}",
                    one_of(MIGRATION_TYPES)
                )),
            })
        }
    }
}
