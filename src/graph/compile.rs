//! Plan -> steps and their order. Dependencies encode what AWS needs first: a key before any
//! copy that uses it, key access and shares before a cross-account copy, versioning and the
//! role before replication, and the migrations' own `depends_on`.

use std::collections::BTreeMap;

use serde_json::json;

use super::step::{Scope, StepKind, StepSpec, Target};
use super::{GraphBuilder, GraphError, StepGraph};
use crate::plan::{AmiCopy, KeyAccess, Migration, Plan, S3Replication, SnapshotCopy, Spanned};

/// What the resolve stage found for selectors, so that compiling can expand them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    /// Migration id -> ids of the resources its tag selector matched.
    pub tagged: BTreeMap<String, Vec<String>>,
    /// Migration id -> ARNs of the KMS keys behind its source resources (cross-account).
    #[serde(default)]
    pub source_keys: BTreeMap<String, Vec<String>>,
    /// AMI id -> the snapshots behind its block devices.
    #[serde(default)]
    pub image_snapshots: BTreeMap<String, Vec<String>>,
    /// Snapshot id -> size in GiB: the largest copies start first (they take longest).
    #[serde(default)]
    pub sizes: BTreeMap<String, i32>,
    /// "account/bucket" -> the bucket's region (S3 buckets, looked up or to be created).
    #[serde(default)]
    pub bucket_regions: BTreeMap<String, String>,
}

/// The key of [`Inventory::bucket_regions`].
pub fn bucket_slot(account: &str, bucket: &str) -> String {
    format!("{account}/{bucket}")
}

/// Compile a checked plan offline. Selectors that need AWS to expand (tags, source keys) stay
/// as one step each, marked by their [`Target`]; see [`compile_resolved`].
pub fn compile(plan: &Plan) -> Result<StepGraph, GraphError> {
    compile_with(plan, None)
}

/// Compile with the resolve stage's findings: tag selectors become one step per resource.
pub fn compile_resolved(plan: &Plan, inventory: &Inventory) -> Result<StepGraph, GraphError> {
    compile_with(plan, Some(inventory))
}

fn compile_with(plan: &Plan, inventory: Option<&Inventory>) -> Result<StepGraph, GraphError> {
    let mut c = Compiler {
        plan,
        inventory,
        b: GraphBuilder::new(),
        migration_steps: BTreeMap::new(),
        shared_keys: Vec::new(),
    };
    c.keys();
    for m in &plan.migrations {
        let before = c.b.graph.node_count();
        let edges_before = c.b.pending_edges.len();
        match m {
            Migration::SnapshotCopy(s) => c.snapshot_copy(s),
            Migration::AmiCopy(a) => c.ami_copy(a),
            Migration::S3Replication(r) => c.s3_replication(r),
        }
        let ids: Vec<String> = (before..c.b.graph.node_count())
            .map(|i| c.b.graph[petgraph::graph::NodeIndex::new(i)].id.clone())
            .collect();
        let ends = Ends::of(&ids, &c.b.pending_edges[edges_before..]);
        c.migration_steps.insert(m.id().value.clone(), ends);
    }
    c.migration_dependencies();
    c.revokes_after_every_copy();
    c.b.seal()
}

struct Compiler<'p> {
    plan: &'p Plan,
    inventory: Option<&'p Inventory>,
    b: GraphBuilder,
    /// First and last steps of each migration.
    migration_steps: BTreeMap<String, Ends>,
    /// Per cross-account migration: (destination account, its key-access steps, its
    /// revoke-access steps, its copies), for ordering revokes after everyone's copies.
    shared_keys: Vec<SharedKeys>,
}

struct SharedKeys {
    migration: String,
    with_account: String,
    grants: Vec<String>,
    revokes: Vec<String>,
    copies: Vec<String>,
}

/// A migration's steps that wait for nothing else in it (`first`) and that nothing in it waits
/// for (`last`): `depends_on` connects the `last` of one to the `first` of the other.
struct Ends {
    first: Vec<String>,
    last: Vec<String>,
}

impl Ends {
    fn of(ids: &[String], edges: &[(String, String)]) -> Ends {
        let own: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut waits = std::collections::HashSet::new();
        let mut awaited = std::collections::HashSet::new();
        for (step, dep) in edges {
            if own.contains(step.as_str()) && own.contains(dep.as_str()) {
                waits.insert(step.as_str());
                awaited.insert(dep.as_str());
            }
        }
        Ends {
            first: ids
                .iter()
                .filter(|i| !waits.contains(i.as_str()))
                .cloned()
                .collect(),
            last: ids
                .iter()
                .filter(|i| !awaited.contains(i.as_str()))
                .cloned()
                .collect(),
        }
    }
}

fn key_owner(name: &str) -> String {
    format!("key.{name}")
}

/// What every step that shares with another account needs: who, where its copies go, and
/// whether the share is taken back afterwards (then a finished copy makes sharing unneeded).
fn share_params(
    dst_account: &str,
    dst_region: &str,
    revoke: bool,
) -> BTreeMap<String, serde_json::Value> {
    let mut p = BTreeMap::new();
    p.insert("with_account".into(), json!(dst_account));
    p.insert("destination_region".into(), json!(dst_region));
    p.insert("revoke_after".into(), json!(revoke));
    p
}

/// Share parameters plus the migration's known source resources (for key access).
fn access_params(
    dst_account: &str,
    dst_region: &str,
    revoke: bool,
    targets: &[(String, Target)],
) -> BTreeMap<String, serde_json::Value> {
    let mut p = share_params(dst_account, dst_region, revoke);
    let sources: Vec<&str> = targets
        .iter()
        .filter_map(|(_, t)| match t {
            Target::One(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    p.insert("sources".into(), json!(sources));
    p
}

/// Tags ferry puts on everything it creates for a migration (plan-format.md, "Tags").
fn ferry_tags(plan: &Plan, migration: &str, extra: &BTreeMap<String, String>) -> serde_json::Value {
    let mut tags = plan.settings.tags.value.clone();
    tags.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    tags.insert("ferry:plan".into(), plan.name.value.clone());
    tags.insert("ferry:migration".into(), migration.into());
    json!(tags)
}

impl<'p> Compiler<'p> {
    // Every argument is one part of the step's identity or inputs; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        owner: &str,
        resource: &str,
        action: &str,
        kind: StepKind,
        account: &str,
        region: Option<&str>,
        target: Target,
        params: BTreeMap<String, serde_json::Value>,
    ) -> String {
        self.b.add(StepSpec {
            id: format!("{owner}/{resource}/{action}"),
            kind,
            scope: Scope {
                account: account.to_string(),
                region: region.map(str::to_string),
            },
            owner: owner.to_string(),
            target,
            params,
        })
    }

    fn keys(&mut self) {
        for named in &self.plan.keys {
            let k = &named.value;
            let owner = key_owner(&named.name.value);
            let account = k.account.value.as_str();
            let region = Some(k.region.value.as_str());
            let key_ref = k
                .alias
                .as_ref()
                .or(k.arn.as_ref())
                .map(|s| s.value.clone())
                .unwrap_or_default();
            let create = k.creates().then(|| {
                let mut p = BTreeMap::new();
                p.insert("alias".into(), json!(key_ref));
                p.insert("multi_region".into(), json!(k.is_multi_region()));
                if let Some(d) = &k.description {
                    p.insert("description".into(), json!(d.value));
                }
                let mut tags = self.plan.settings.tags.value.clone();
                tags.insert("ferry:plan".into(), self.plan.name.value.clone());
                tags.insert("ferry:key".into(), named.name.value.clone());
                p.insert("tags".into(), json!(tags));
                self.step(
                    &owner,
                    "key",
                    "create",
                    StepKind::CreateKey,
                    account,
                    region,
                    Target::One(key_ref.clone()),
                    p,
                )
            });
            let after_create = |b: &mut GraphBuilder, id: &str| {
                if let Some(c) = &create {
                    b.depends(id, c);
                }
            };
            if k.rotates() {
                let id = self.step(
                    &owner,
                    "key",
                    "rotation",
                    StepKind::EnableKeyRotation,
                    account,
                    region,
                    Target::One(key_ref.clone()),
                    BTreeMap::new(),
                );
                after_create(&mut self.b, &id);
            }
            if let Some(replicas) = &k.replicas {
                for r in &replicas.value {
                    let mut p = BTreeMap::new();
                    p.insert("primary_region".into(), json!(k.region.value));
                    let id = self.step(
                        &owner,
                        &format!("replica-{}", r.value),
                        "replicate",
                        StepKind::ReplicateKey,
                        account,
                        Some(&r.value),
                        Target::One(key_ref.clone()),
                        p,
                    );
                    after_create(&mut self.b, &id);
                }
            }
            if let Some(statements) = &k.policy_statements {
                let mut p = BTreeMap::new();
                let st: Vec<&serde_json::Value> = statements.iter().map(|s| &s.value).collect();
                p.insert("statements".into(), json!(st));
                let id = self.step(
                    &owner,
                    "policy",
                    "merge",
                    StepKind::MergeKeyPolicy,
                    account,
                    region,
                    Target::One(key_ref.clone()),
                    p,
                );
                after_create(&mut self.b, &id);
            }
        }
    }

    /// Copies are started in the order of their steps: the longest (largest) first, so that
    /// the last one to finish is not a large one started late.
    fn largest_first(&self, targets: &mut [(String, Target)]) {
        if let Some(inv) = self.inventory.filter(|i| !i.sizes.is_empty()) {
            targets.sort_by_key(|(t, _)| std::cmp::Reverse(inv.sizes.get(t).copied().unwrap_or(0)));
        }
    }

    /// The resources a migration acts on: its explicit ids, plus what its tag selector matched
    /// (resolved), or one `find` step standing for the selector (offline).
    fn selection(
        &mut self,
        id: &str,
        explicit: &[Spanned<String>],
        tags: Option<&Spanned<BTreeMap<String, String>>>,
        find_kind: StepKind,
        account: &str,
        region: &str,
    ) -> (Vec<(String, Target)>, Option<String>) {
        let mut targets: Vec<(String, Target)> = explicit
            .iter()
            .map(|s| (s.value.clone(), Target::One(s.value.clone())))
            .collect();
        let Some(tags) = tags.filter(|t| !t.value.is_empty()) else {
            self.largest_first(&mut targets);
            return (targets, None);
        };
        if let Some(found) = self.inventory.and_then(|i| i.tagged.get(id)) {
            let mut named: std::collections::HashSet<String> =
                targets.iter().map(|(t, _)| t.clone()).collect();
            for r in found {
                if named.insert(r.clone()) {
                    targets.push((r.clone(), Target::One(r.clone())));
                }
            }
            self.largest_first(&mut targets);
            return (targets, None);
        }
        let mut p = BTreeMap::new();
        p.insert("tags".into(), json!(tags.value));
        let find = self.step(
            id,
            "tagged",
            "find",
            find_kind,
            account,
            Some(region),
            Target::Tagged(tags.value.clone()),
            p,
        );
        targets.push(("tagged".into(), Target::Tagged(tags.value.clone())));
        (targets, Some(find))
    }

    /// The steps a use of `key` (a plan key name, or a literal) in `region` must wait for.
    fn key_steps(&self, key: &str, region: &str) -> Vec<String> {
        let Some(named) = self.plan.keys.iter().find(|k| k.name.value == key) else {
            return Vec::new();
        };
        let owner = key_owner(key);
        let mut ids = vec![
            format!("{owner}/key/create"),
            format!("{owner}/policy/merge"),
        ];
        if named.value.region.value != region {
            ids.push(format!("{owner}/replica-{region}/replicate"));
        }
        ids.into_iter().filter(|id| self.b.contains(id)).collect()
    }

    fn destination_key_params(&self, key: &str) -> BTreeMap<String, serde_json::Value> {
        let mut p = BTreeMap::new();
        match self.plan.keys.iter().find(|k| k.name.value == key) {
            Some(named) => {
                let r = named.value.alias.as_ref().or(named.value.arn.as_ref());
                p.insert("key".into(), json!(r.map(|s| s.value.clone())));
                p.insert("key_name".into(), json!(key));
            }
            None => {
                p.insert("key".into(), json!(key));
            }
        }
        p
    }

    fn account_of<'a>(
        &self,
        explicit: &'a Option<Spanned<String>>,
        default: &'a Spanned<String>,
    ) -> &'a str {
        explicit.as_ref().unwrap_or(default).value.as_str()
    }

    fn is_cross_account(&self, a: &str, b: &str) -> bool {
        if a == b {
            return false;
        }
        let id = |n: &str| {
            self.plan
                .accounts
                .iter()
                .find(|x| x.name.value == n)
                .and_then(|x| x.value.id.as_ref())
                .map(|i| i.value.clone())
        };
        !matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
    }

    fn snapshot_copy(&mut self, m: &'p SnapshotCopy) {
        let id = m.id.value.as_str();
        let src_account = m.source.account.value.as_str();
        let src_region = m.source.region.value.as_str();
        let dst_account = self.account_of(&m.destination.account, &m.source.account);
        let dst_region = m
            .destination
            .region
            .as_ref()
            .unwrap_or(&m.source.region)
            .value
            .as_str();
        let cross = self.is_cross_account(src_account, dst_account);
        let key_deps = self.key_steps(&m.destination.key.value, dst_region);
        let tags = ferry_tags(self.plan, id, &m.tags.value);

        let (targets, find) = self.selection(
            id,
            &m.source.snapshots,
            m.source.tags.as_ref(),
            StepKind::FindSnapshots,
            src_account,
            src_region,
        );
        let revoke = m.revoke_after.as_ref().is_some_and(|r| r.value);
        let access_params = access_params(dst_account, dst_region, revoke, &targets);

        let manage_access = m.key_access.as_ref().map(|k| k.value) != Some(KeyAccess::None);
        let access = self.access_steps(
            id,
            (src_account, src_region),
            cross && manage_access,
            &access_params,
            m.key_access.as_ref().map(|k| k.value),
            find.as_deref(),
        );
        let mut copies = Vec::new();
        let mut shares = Vec::new();
        for (resource, target) in targets {
            let share = cross.then(|| {
                let mut p = BTreeMap::new();
                p.extend(share_params(dst_account, dst_region, revoke));
                let s = self.step(
                    id,
                    &resource,
                    "share",
                    StepKind::ShareSnapshot,
                    src_account,
                    Some(src_region),
                    target.clone(),
                    p,
                );
                if let Some(f) = &find
                    && target.is_expanded_later()
                {
                    self.b.depends(&s, f);
                }
                s
            });
            let mut p = self.destination_key_params(&m.destination.key.value);
            p.insert("source_account".into(), json!(src_account));
            p.insert("source_region".into(), json!(src_region));
            p.insert("tags".into(), tags.clone());
            let copy = self.step(
                id,
                &resource,
                "copy",
                StepKind::CopySnapshot,
                dst_account,
                Some(dst_region),
                target.clone(),
                p,
            );
            if let Some(f) = &find
                && target.is_expanded_later()
            {
                self.b.depends(&copy, f);
            }
            for k in &key_deps {
                self.b.depends(&copy, k);
            }
            if let Some(s) = &share {
                self.b.depends(&copy, s);
                shares.push((resource.clone(), target.clone(), s.clone()));
            }
            for a in &access {
                self.b.depends(&copy, a);
            }
            copies.push(copy);
        }
        if cross && revoke {
            for (resource, target, share) in shares {
                let mut p = BTreeMap::new();
                p.extend(share_params(dst_account, dst_region, revoke));
                let u = self.step(
                    id,
                    &resource,
                    "unshare",
                    StepKind::UnshareSnapshot,
                    src_account,
                    Some(src_region),
                    target,
                    p,
                );
                // The share step's output says whether ferry added the permission.
                self.b.depends(&u, &share);
                for c in &copies {
                    self.b.depends(&u, c);
                }
            }
            if manage_access {
                let how = m.key_access.as_ref().map(|k| k.value);
                let revokes =
                    self.revoke_access(id, src_account, src_region, access_params.clone(), how);
                self.revokes_after(&revokes, &copies, &access);
            }
        }
        if cross {
            self.remember_shared_keys(id, dst_account, access, copies);
        }
    }

    /// The key-access steps of a cross-account migration (none when ferry does not manage key
    /// access), each after the selector that finds the source keys.
    fn access_steps(
        &mut self,
        id: &str,
        (src_account, src_region): (&str, &str),
        wanted: bool,
        params: &BTreeMap<String, serde_json::Value>,
        how: Option<KeyAccess>,
        find: Option<&str>,
    ) -> Vec<String> {
        if !wanted {
            return Vec::new();
        }
        let access = self.key_access(id, src_account, src_region, params.clone(), how);
        if let Some(f) = find {
            for a in &access {
                self.b.depends(a, f);
            }
        }
        access
    }

    /// A migration's revokes wait for its copies, and each for the grant of the same key: the
    /// grant step's output says what ferry added, so only that is taken back.
    fn revokes_after(&mut self, revokes: &[String], copies: &[String], grants: &[String]) {
        let key_part = |s: &str| s.rsplit_once('/').map(|x| x.0.to_string());
        for r in revokes {
            for c in copies {
                self.b.depends(r, c);
            }
            for g in grants.iter().filter(|g| key_part(g) == key_part(r)) {
                self.b.depends(r, g);
            }
        }
    }

    /// Records a cross-account migration's key access, for [`Self::revokes_after_every_copy`].
    fn remember_shared_keys(
        &mut self,
        id: &str,
        dst_account: &str,
        grants: Vec<String>,
        copies: Vec<String>,
    ) {
        let revokes: Vec<String> = grants
            .iter()
            .map(|a| a.replace("/grant-access", "/revoke-access"))
            .filter(|r| self.b.contains(r))
            .collect();
        self.shared_keys.push(SharedKeys {
            migration: id.to_string(),
            with_account: dst_account.to_string(),
            grants,
            revokes,
            copies,
        });
    }

    /// Steps granting the destination account use of each source key: one per key once
    /// resolved, one standing for "every source key" offline.
    fn key_access(
        &mut self,
        id: &str,
        src_account: &str,
        src_region: &str,
        mut p: BTreeMap<String, serde_json::Value>,
        how: Option<KeyAccess>,
    ) -> Vec<String> {
        let dst_account = p["with_account"].as_str().unwrap_or_default().to_string();
        p.insert("how".into(), json!(how.unwrap_or_default()));
        p.insert(
            "sid".into(),
            json!(format!("ferry-{}-{}", self.plan.name.value, dst_account)),
        );
        self.per_source_key(
            id,
            "grant-access",
            StepKind::GrantKeyAccess,
            src_account,
            src_region,
            p,
        )
    }

    fn revoke_access(
        &mut self,
        id: &str,
        src_account: &str,
        src_region: &str,
        mut p: BTreeMap<String, serde_json::Value>,
        how: Option<KeyAccess>,
    ) -> Vec<String> {
        let dst_account = p["with_account"].as_str().unwrap_or_default().to_string();
        p.insert("how".into(), json!(how.unwrap_or_default()));
        p.insert(
            "sid".into(),
            json!(format!("ferry-{}-{}", self.plan.name.value, dst_account)),
        );
        self.per_source_key(
            id,
            "revoke-access",
            StepKind::RevokeKeyAccess,
            src_account,
            src_region,
            p,
        )
    }

    fn per_source_key(
        &mut self,
        id: &str,
        action: &str,
        kind: StepKind,
        account: &str,
        region: &str,
        params: BTreeMap<String, serde_json::Value>,
    ) -> Vec<String> {
        match self.inventory.and_then(|i| i.source_keys.get(id)) {
            Some(keys) => keys
                .iter()
                .map(|arn| {
                    let key_id = arn.rsplit('/').next().unwrap_or(arn);
                    self.step(
                        id,
                        key_id,
                        action,
                        kind,
                        account,
                        Some(region),
                        Target::One(arn.clone()),
                        params.clone(),
                    )
                })
                .collect(),
            None => vec![self.step(
                id,
                "source-keys",
                action,
                kind,
                account,
                Some(region),
                Target::SourceKeys,
                params,
            )],
        }
    }

    fn ami_copy(&mut self, m: &'p AmiCopy) {
        let id = m.id.value.as_str();
        let src_account = m.source.account.value.as_str();
        let src_region = m.source.region.value.as_str();
        let dst_account = self.account_of(&m.destination.account, &m.source.account);
        let dst_region = m
            .destination
            .region
            .as_ref()
            .unwrap_or(&m.source.region)
            .value
            .as_str();
        let cross = self.is_cross_account(src_account, dst_account);
        let copy_wanted = m.destination.copies();
        let key_deps = match &m.destination.key {
            Some(k) if copy_wanted => self.key_steps(&k.value, dst_region),
            _ => Vec::new(),
        };
        let tags = ferry_tags(self.plan, id, &m.tags.value);

        let (targets, find) = self.selection(
            id,
            &m.source.images,
            m.source.tags.as_ref(),
            StepKind::FindImages,
            src_account,
            src_region,
        );
        let revoke = m.revoke_after.as_ref().is_some_and(|r| r.value);
        let access_params = access_params(dst_account, dst_region, revoke, &targets);
        let manage_access = m.key_access.as_ref().map(|k| k.value) != Some(KeyAccess::None);
        let access = self.access_steps(
            id,
            (src_account, src_region),
            cross && manage_access,
            &access_params,
            m.key_access.as_ref().map(|k| k.value),
            find.as_deref(),
        );
        let mut copies = Vec::new();
        let mut shares = Vec::new();
        for (resource, target) in targets {
            let later = target.is_expanded_later();
            let mut image_shares = Vec::new();
            if cross {
                let mut p = BTreeMap::new();
                p.extend(share_params(dst_account, dst_region, revoke));
                let launch = self.step(
                    id,
                    &resource,
                    "share",
                    StepKind::ShareImage,
                    src_account,
                    Some(src_region),
                    target.clone(),
                    p.clone(),
                );
                // The snapshots behind the image: known once resolved.
                p.insert("backing_snapshots_of".into(), json!(resource));
                if let Some(snaps) = self
                    .inventory
                    .and_then(|i| i.image_snapshots.get(&resource))
                {
                    p.insert("snapshots".into(), json!(snaps));
                }
                let snaps = self.step(
                    id,
                    &format!("{resource}-snapshots"),
                    "share",
                    StepKind::ShareSnapshot,
                    src_account,
                    Some(src_region),
                    target.clone(),
                    p,
                );
                for s in [&launch, &snaps] {
                    if let (Some(f), true) = (&find, later) {
                        self.b.depends(s, f);
                    }
                }
                image_shares.push(launch.clone());
                image_shares.push(snaps.clone());
                shares.push((resource.clone(), target.clone(), launch, snaps));
            }
            if copy_wanted {
                let mut p = m
                    .destination
                    .key
                    .as_ref()
                    .map(|k| self.destination_key_params(&k.value))
                    .unwrap_or_default();
                p.insert("source_account".into(), json!(src_account));
                p.insert("source_region".into(), json!(src_region));
                p.insert("tags".into(), tags.clone());
                let copy = self.step(
                    id,
                    &resource,
                    "copy",
                    StepKind::CopyImage,
                    dst_account,
                    Some(dst_region),
                    target.clone(),
                    p,
                );
                if let (Some(f), true) = (&find, later) {
                    self.b.depends(&copy, f);
                }
                for dep in key_deps.iter().chain(&image_shares).chain(access.iter()) {
                    self.b.depends(&copy, dep);
                }
                copies.push(copy);
            }
        }
        if cross && revoke {
            for (resource, target, launch, snaps) in shares {
                let mut p = BTreeMap::new();
                p.extend(share_params(dst_account, dst_region, revoke));
                let u1 = self.step(
                    id,
                    &resource,
                    "unshare",
                    StepKind::UnshareImage,
                    src_account,
                    Some(src_region),
                    target.clone(),
                    p.clone(),
                );
                p.insert("backing_snapshots_of".into(), json!(resource));
                if let Some(list) = self
                    .inventory
                    .and_then(|i| i.image_snapshots.get(&resource))
                {
                    p.insert("snapshots".into(), json!(list));
                }
                let u2 = self.step(
                    id,
                    &format!("{resource}-snapshots"),
                    "unshare",
                    StepKind::UnshareSnapshot,
                    src_account,
                    Some(src_region),
                    target,
                    p,
                );
                self.b.depends(&u1, &launch);
                self.b.depends(&u2, &snaps);
                for c in &copies {
                    self.b.depends(&u1, c);
                    self.b.depends(&u2, c);
                }
            }
            if manage_access {
                let how = m.key_access.as_ref().map(|k| k.value);
                let revokes =
                    self.revoke_access(id, src_account, src_region, access_params.clone(), how);
                self.revokes_after(&revokes, &copies, &access);
            }
        }
        if cross {
            self.remember_shared_keys(id, dst_account, access, copies);
        }
    }

    fn s3_replication(&mut self, m: &'p S3Replication) {
        let id = m.id.value.as_str();
        let src_account = m.source.account.value.as_str();
        let dst_account = self.account_of(&m.destination.account, &m.source.account);
        let src_bucket = m.source.bucket.value.as_str();
        let dst_bucket = m.destination.bucket.value.as_str();
        // Bucket regions are looked up by the resolve stage; offline only a declared one is known.
        let looked_up = |account: &str, bucket: &str| {
            self.inventory
                .and_then(|i| i.bucket_regions.get(&bucket_slot(account, bucket)))
                .map(String::as_str)
        };
        let src_region = looked_up(src_account, src_bucket);
        let dst_region = m
            .destination
            .region
            .as_ref()
            .map(|r| r.value.as_str())
            .or_else(|| looked_up(dst_account, dst_bucket));
        let cross = self.is_cross_account(src_account, dst_account);
        let key_deps = dst_region
            .map(|r| self.key_steps(&m.destination.key.value, r))
            .unwrap_or_default();
        let source_keys = self
            .inventory
            .and_then(|i| i.source_keys.get(id))
            .cloned()
            .unwrap_or_default();
        let regions = json!({ "source": src_region, "destination": dst_region });
        let bucket_param = |b: &str| {
            let mut p = BTreeMap::new();
            p.insert("bucket".into(), json!(b));
            p
        };

        let src_versioning = self.step(
            id,
            "source-bucket",
            "versioning",
            StepKind::EnableVersioning,
            src_account,
            src_region,
            Target::One(src_bucket.into()),
            bucket_param(src_bucket),
        );
        let create = m
            .destination
            .create
            .as_ref()
            .is_some_and(|c| c.value)
            .then(|| {
                let mut p = bucket_param(dst_bucket);
                p.extend(self.destination_key_params(&m.destination.key.value));
                p.insert(
                    "bucket_key".into(),
                    json!(m.bucket_key.as_ref().is_none_or(|b| b.value)),
                );
                p.insert("tags".into(), ferry_tags(self.plan, id, &BTreeMap::new()));
                let c = self.step(
                    id,
                    "destination-bucket",
                    "create",
                    StepKind::CreateBucket,
                    dst_account,
                    dst_region,
                    Target::One(dst_bucket.into()),
                    p,
                );
                for k in &key_deps {
                    self.b.depends(&c, k);
                }
                c
            });
        let dst_versioning = self.step(
            id,
            "destination-bucket",
            "versioning",
            StepKind::EnableVersioning,
            dst_account,
            dst_region,
            Target::One(dst_bucket.into()),
            bucket_param(dst_bucket),
        );
        if let Some(c) = &create {
            self.b.depends(&dst_versioning, c);
        }

        let mut role_deps = Vec::new();
        let role_target = match (&m.role.name, &m.role.arn) {
            (Some(n), _) => {
                let mut p = BTreeMap::new();
                p.insert("name".into(), json!(n.value));
                p.insert("source_bucket".into(), json!(src_bucket));
                p.insert("destination_bucket".into(), json!(dst_bucket));
                p.insert("destination_account".into(), json!(dst_account));
                p.insert("regions".into(), regions.clone());
                p.insert("source_keys".into(), json!(source_keys));
                p.extend(self.destination_key_params(&m.destination.key.value));
                p.insert("tags".into(), ferry_tags(self.plan, id, &BTreeMap::new()));
                let r = self.step(
                    id,
                    "role",
                    "ensure",
                    StepKind::EnsureRole,
                    src_account,
                    Some("global"),
                    Target::One(n.value.clone()),
                    p,
                );
                // The inline policy names the destination key's ARN.
                for k in &key_deps {
                    self.b.depends(&r, k);
                }
                role_deps.push(r);
                n.value.clone()
            }
            (None, Some(a)) => a.value.clone(),
            (None, None) => String::new(),
        };

        let mut p = self.destination_key_params(&m.destination.key.value);
        p.insert("role".into(), json!(role_target));
        p.insert("role_account".into(), json!(src_account));
        p.insert(
            "sid".into(),
            json!(format!("ferry-{}-{}-replication", self.plan.name.value, id)),
        );
        let key_policy = self.step(
            id,
            "destination-key",
            "allow-role",
            StepKind::MergeKeyPolicy,
            dst_account,
            dst_region,
            Target::One(m.destination.key.value.clone()),
            p,
        );
        for d in role_deps.iter().chain(&key_deps) {
            self.b.depends(&key_policy, d);
        }

        let bucket_policy = cross.then(|| {
            let mut p = bucket_param(dst_bucket);
            p.insert("role".into(), json!(role_target));
            p.insert("role_account".into(), json!(src_account));
            p.insert("plan".into(), json!(self.plan.name.value));
            let s = self.step(
                id,
                "destination-bucket",
                "allow-role",
                StepKind::AllowReplicationRole,
                dst_account,
                dst_region,
                Target::One(dst_bucket.into()),
                p,
            );
            for d in role_deps.iter().chain(create.iter()) {
                self.b.depends(&s, d);
            }
            s
        });

        let rule = m.rule.as_ref().map(|r| &r.value);
        let mut p = bucket_param(src_bucket);
        p.insert("destination_bucket".into(), json!(dst_bucket));
        p.insert("destination_account".into(), json!(dst_account));
        p.insert("role".into(), json!(role_target));
        p.insert("regions".into(), regions.clone());
        p.extend(self.destination_key_params(&m.destination.key.value));
        p.insert(
            "rule".into(),
            json!({
                "id": rule.and_then(|r| r.id.as_ref()).map(|s| s.value.clone()).unwrap_or_else(|| format!("ferry-{id}")),
                "prefix": rule.and_then(|r| r.prefix.as_ref()).map(|s| s.value.clone()).unwrap_or_default(),
                "priority": rule.and_then(|r| r.priority.as_ref()).map(|s| s.value).unwrap_or(1),
                "delete_markers": rule.and_then(|r| r.delete_markers.as_ref()).is_some_and(|s| s.value),
            }),
        );
        p.insert(
            "bucket_key".into(),
            json!(m.bucket_key.as_ref().is_none_or(|b| b.value)),
        );
        let replication = self.step(
            id,
            "replication",
            "put",
            StepKind::PutReplication,
            src_account,
            src_region,
            Target::One(src_bucket.into()),
            p,
        );
        for d in [&src_versioning, &dst_versioning, &key_policy]
            .into_iter()
            .chain(role_deps.iter())
            .chain(bucket_policy.iter())
        {
            self.b.depends(&replication, d);
        }

        if m.backfill.as_ref().is_some_and(|b| b.value) {
            let mut p = bucket_param(src_bucket);
            p.insert("destination_bucket".into(), json!(dst_bucket));
            p.insert("source_account".into(), json!(src_account));
            p.insert("regions".into(), regions.clone());
            p.insert(
                "prefix".into(),
                json!(
                    rule.and_then(|r| r.prefix.as_ref())
                        .map(|s| s.value.clone())
                        .unwrap_or_default()
                ),
            );
            p.insert(
                "bucket_key".into(),
                json!(m.bucket_key.as_ref().is_none_or(|b| b.value)),
            );
            p.insert(
                "inline_max".into(),
                json!(
                    self.plan
                        .settings
                        .backfill_inline_max
                        .as_ref()
                        .map(|v| v.value)
                        .unwrap_or(crate::plan::BACKFILL_INLINE_MAX)
                ),
            );
            p.extend(self.destination_key_params(&m.destination.key.value));
            let b = self.step(
                id,
                "backfill",
                "copy",
                StepKind::Backfill,
                dst_account,
                dst_region,
                Target::One(src_bucket.into()),
                p,
            );
            self.b.depends(&b, &replication);
        }
    }

    /// A statement or grant for one account on one key serves every migration that shares that
    /// key with that account: taking it back must wait for all their copies, not only its own.
    fn revokes_after_every_copy(&mut self) {
        let key_of = |step: &str| {
            step.rsplit_once('/')
                .map(|x| x.0.rsplit_once('/').map_or(x.0, |y| y.1).to_string())
        };
        let mut edges = Vec::new();
        for r in &self.shared_keys {
            for other in &self.shared_keys {
                // A migration that runs after this one (depends_on) re-grants what it needs itself.
                if std::ptr::eq(r, other)
                    || r.with_account != other.with_account
                    || self.runs_after(&other.migration, &r.migration)
                {
                    continue;
                }
                for revoke in &r.revokes {
                    let k = key_of(revoke);
                    let shares_key = other.grants.iter().any(|g| {
                        let gk = key_of(g);
                        gk == k
                            || gk.as_deref() == Some("source-keys")
                            || k.as_deref() == Some("source-keys")
                    });
                    if shares_key {
                        edges.extend(other.copies.iter().map(|c| (revoke.clone(), c.clone())));
                    }
                }
            }
        }
        for (a, b) in edges {
            // A chain of `depends_on` may already order that copy after this revoke; then the
            // later migration re-grants what it needs itself.
            self.b.depends_if_acyclic(&a, &b);
        }
    }

    /// Whether migration `a` waits, directly or not, for migration `b`.
    fn runs_after(&self, a: &str, b: &str) -> bool {
        let mut stack = vec![a];
        let mut seen = std::collections::HashSet::new();
        while let Some(m) = stack.pop() {
            if !seen.insert(m) {
                continue;
            }
            let Some(mig) = self.plan.migrations.iter().find(|x| x.id().value == m) else {
                continue;
            };
            for d in mig.depends_on() {
                if d.value == b {
                    return true;
                }
                stack.push(&d.value);
            }
        }
        false
    }

    /// `depends_on`: a migration's first steps wait for every last step of the ones it names.
    fn migration_dependencies(&mut self) {
        for m in &self.plan.migrations {
            let own = &self.migration_steps[&m.id().value];
            for dep in m.depends_on() {
                let Some(theirs) = self.migration_steps.get(&dep.value) else {
                    continue;
                };
                for a in &own.first {
                    for b in &theirs.last {
                        self.b.depends(a, b);
                    }
                }
            }
        }
    }
}
