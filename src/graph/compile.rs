//! Plan -> steps and their order. Dependencies encode what AWS needs first: a key before any
//! copy that uses it, key access and shares before a cross-account copy, versioning and the
//! role before replication, and the migrations' own `depends_on`. Every step gets its whole
//! desired state as a typed spec; the destination key is resolved here, once per use.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::step::*;
use super::{CompileError, GraphBuilder, PlanGraph};
use crate::ids::db_copy_identifier;
use crate::ids::{
    AccountName, BucketName, ImageId, KeyArn, KeyName, MigrationId, Owner, Region, SnapshotId,
    StepId,
};
use crate::plan::check::db_snapshot_name;
use crate::plan::{
    AmiCopy, BackfillMode, DbSnapshotCopy, KeyAccess, KeyRef, Migration, Plan, S3Replication,
    SnapshotCopy, Spanned,
};
use crate::resolve::{BucketSample, CopyOrder, Resolution};

/// Compile a checked plan offline. Selectors that need AWS to expand (tags, source keys) stay
/// as one step each, marked by their [`Target`]; see [`compile_resolved`].
pub fn compile(plan: &Plan) -> Result<PlanGraph, CompileError> {
    compile_with(plan, None, false)
}

/// Compile with the resolve stage's findings: tag selectors become one step per resource, and
/// destination keys are the ARNs found (or the steps that make them).
pub fn compile_resolved(plan: &Plan, resolution: &Resolution) -> Result<PlanGraph, CompileError> {
    compile_with(plan, Some(resolution), false)
}

/// Compile offline with every path a run may take (`backfill: true` both inline and as a
/// batch job, which only the bucket's size decides): what `ferry iam-policy` must cover.
pub fn compile_every_path(plan: &Plan) -> Result<PlanGraph, CompileError> {
    compile_with(plan, None, true)
}

fn compile_with(
    plan: &Plan,
    resolution: Option<&Resolution>,
    every_path: bool,
) -> Result<PlanGraph, CompileError> {
    let mut c = Compiler {
        plan,
        resolution,
        every_path,
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
            Migration::DbSnapshotCopy(d) => c.db_snapshot_copy(d, DbKind::Instance),
            Migration::DbClusterSnapshotCopy(d) => c.db_snapshot_copy(d, DbKind::Cluster),
        }
        let ids: Vec<StepId> = (before..c.b.graph.node_count())
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
    resolution: Option<&'p Resolution>,
    /// Compile every path a run may take (see [`compile_every_path`]).
    every_path: bool,
    b: GraphBuilder,
    /// First and last steps of each migration.
    migration_steps: BTreeMap<String, Ends>,
    /// Per cross-account migration: who it shares with, its key-access steps, its revokes and
    /// its copies, for ordering revokes after everyone's copies.
    shared_keys: Vec<SharedKeys>,
}

struct SharedKeys {
    migration: String,
    with_account: String,
    /// (source key, grant step)
    grants: Vec<(SourceKey, StepId)>,
    revokes: Vec<(SourceKey, StepId)>,
    copies: Vec<StepId>,
}

/// A migration's steps that wait for nothing else in it (`first`) and that nothing in it waits
/// for (`last`): `depends_on` connects the `last` of one to the `first` of the other.
struct Ends {
    first: Vec<StepId>,
    last: Vec<StepId>,
}

impl Ends {
    fn of(ids: &[StepId], edges: &[(StepId, StepId)]) -> Ends {
        let own: HashSet<&StepId> = ids.iter().collect();
        let mut waits = HashSet::new();
        let mut awaited = HashSet::new();
        for (step, dep) in edges {
            if own.contains(step) && own.contains(dep) {
                waits.insert(step);
                awaited.insert(dep);
            }
        }
        Ends {
            first: ids.iter().filter(|i| !waits.contains(i)).cloned().collect(),
            last: ids
                .iter()
                .filter(|i| !awaited.contains(i))
                .cloned()
                .collect(),
        }
    }
}

fn key_owner(name: &str) -> Owner {
    Owner::Key(KeyName::new(name))
}

fn migration_owner(id: &str) -> Owner {
    Owner::Migration(MigrationId::new(id))
}

/// Tags ferry puts on everything it creates for a migration (plan-format.md, "Tags").
fn ferry_tags(plan: &Plan, migration: &str, extra: &BTreeMap<String, String>) -> Tags {
    let mut tags = plan.settings.tags.value.clone();
    tags.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    tags.insert("ferry:plan".into(), plan.name.value.clone());
    tags.insert("ferry:migration".into(), migration.into());
    tags
}

/// What a snapshot-copy shares of `source`: the source, or the intermediate copy `via` makes.
fn shared_snapshot(via: Option<&StepId>, source: &str) -> Shared {
    match via {
        Some(step) => Shared::CopyMadeBy {
            step: step.clone(),
            of: SnapshotId::new(source),
        },
        None => Shared::Snapshot(SnapshotId::new(source)),
    }
}

/// What an ami-copy shares of `image` (its launch permission, its snapshots): the AMI, or the
/// intermediate copy `via` makes.
fn shared_image(
    via: Option<&StepId>,
    image: &ImageId,
    backing: Option<Vec<SnapshotId>>,
) -> (Shared, Shared) {
    match via {
        Some(step) => (
            Shared::ImageMadeBy {
                step: step.clone(),
                of: image.clone(),
            },
            Shared::SnapshotsOfCopy {
                step: step.clone(),
                of: image.clone(),
            },
        ),
        None => (
            Shared::Image(image.clone()),
            Shared::SnapshotsOf {
                image: image.clone(),
                snapshots: backing,
            },
        ),
    }
}

/// One resource of a migration: its name in step ids, and what it is.
#[derive(Clone)]
struct Selected {
    resource: String,
    target: Target,
}

impl<'p> Compiler<'p> {
    fn step(
        &mut self,
        id: StepId,
        account: &str,
        region: Option<&str>,
        target: Target,
        spec: StepSpec,
    ) -> StepId {
        self.b.add(PlannedStep {
            id,
            scope: Scope {
                account: AccountName::new(account),
                region: region.map(Region::new),
            },
            target,
            spec,
        })
    }

    /// A key's ARN in `account`/`region` as the resolve stage found it.
    fn known_key(&self, account: &str, region: &str, reference: &str) -> Option<KeyArn> {
        self.resolution?.key_arn(account, region, reference)
    }

    fn keys(&mut self) {
        for named in &self.plan.keys {
            let k = &named.value;
            let name = named.name.value.as_str();
            let owner = key_owner(name);
            let account = k.account.value.as_str();
            let region = k.region.value.as_str();
            let key_ref = k
                .alias
                .as_ref()
                .or(k.arn.as_ref())
                .map(|s| s.value.clone())
                .unwrap_or_default();
            let create = k.creates().then(|| {
                let mut tags = self.plan.settings.tags.value.clone();
                tags.insert("ferry:plan".into(), self.plan.name.value.clone());
                tags.insert("ferry:key".into(), name.to_string());
                let spec = StepSpec::CreateKey(CreateKeySpec {
                    name: KeyName::new(name),
                    alias: key_ref.clone(),
                    multi_region: k.is_multi_region(),
                    description: k.description.as_ref().map(|d| d.value.clone()),
                    tags,
                });
                self.step(
                    StepId::new(owner.clone(), "key", "create"),
                    account,
                    Some(region),
                    Target::One(key_ref.clone()),
                    spec,
                )
            });
            let after_create = |b: &mut GraphBuilder, id: &StepId| {
                if let Some(c) = &create {
                    b.depends(id, c);
                }
            };
            if k.rotates() {
                let id = self.step(
                    StepId::new(owner.clone(), "key", "rotation"),
                    account,
                    Some(region),
                    Target::One(key_ref.clone()),
                    StepSpec::EnableKeyRotation(KeyRotationSpec {
                        key: key_ref.clone(),
                    }),
                );
                after_create(&mut self.b, &id);
            }
            if let Some(replicas) = &k.replicas {
                for r in &replicas.value {
                    let id = self.step(
                        StepId::new(owner.clone(), format!("replica-{}", r.value), "replicate"),
                        account,
                        Some(&r.value),
                        Target::One(key_ref.clone()),
                        StepSpec::ReplicateKey(ReplicateKeySpec {
                            key: key_ref.clone(),
                            primary_region: Region::new(region),
                        }),
                    );
                    after_create(&mut self.b, &id);
                }
            }
            if let Some(statements) = &k.policy_statements {
                let key = match (self.known_key(account, region, &key_ref), &create) {
                    (Some(arn), _) => DestKey::Existing(arn),
                    (None, Some(c)) => DestKey::MadeBy(c.clone()),
                    (None, None) => DestKey::Unresolved(key_ref.clone()),
                };
                let id = self.step(
                    StepId::new(owner.clone(), "policy", "merge"),
                    account,
                    Some(region),
                    Target::One(key_ref.clone()),
                    StepSpec::MergeKeyPolicy(KeyPolicySpec {
                        key: DestinationKey {
                            shown: key_ref.clone(),
                            key,
                        },
                        statements: Statements::Given(
                            statements.iter().map(|s| s.value.clone()).collect(),
                        ),
                    }),
                );
                after_create(&mut self.b, &id);
            }
        }
    }

    /// Copies are started in the order of their steps: the longest (largest) first, so that
    /// the last one to finish is not a large one started late.
    fn largest_first(&self, targets: &mut [Selected]) {
        if let Some(r) = self.resolution.filter(|r| !r.inventory.sizes.is_empty()) {
            targets.sort_by_key(|t| {
                std::cmp::Reverse(r.inventory.sizes.get(&t.resource).copied().unwrap_or(0))
            });
        }
    }

    /// Copies of one volume's snapshots to one destination form a chain, oldest first: each
    /// copy waits for the one before it, so that AWS copies it incrementally (only the blocks
    /// changed since), and the chains with the most bytes left start first. A source whose
    /// copy is already there (an earlier run) moves nothing and lets the next copy be
    /// incremental. Orders `targets` so, and gives each source its expected transfer and the
    /// source whose copy it waits for. `CopyOrder::LargestFirst`: every copy full and on its
    /// own, the largest first.
    fn chains(
        &self,
        id: &str,
        targets: &mut [Selected],
        key: &DestinationKey,
    ) -> HashMap<String, (Transfer, Option<String>)> {
        let mut out = HashMap::new();
        let Some(r) = self.resolution else {
            return out;
        };
        let chained = r.copy_order == CopyOrder::Chains;
        let copied = r.inventory.copied.get(id);
        let wanted = match &key.key {
            DestKey::Existing(arn) => Some(arn.as_str()),
            _ => None,
        };
        let there = |source: &str| {
            copied
                .and_then(|c| c.get(source))
                .is_some_and(|k| wanted.is_some() && k.as_deref() == wanted)
        };
        let mut by_volume: BTreeMap<String, Vec<(Option<i64>, String)>> = BTreeMap::new();
        for t in targets.iter().filter(|t| !t.target.is_expanded_later()) {
            let f = r.snapshots.get(&t.resource);
            let volume = f
                .and_then(|f| f.volume_id.clone())
                .filter(|_| chained)
                .unwrap_or_else(|| t.resource.clone());
            by_volume
                .entry(volume)
                .or_default()
                .push((f.and_then(|f| f.start_ms), t.resource.clone()));
        }
        // Source -> (its chain's bytes from its head, its place in the chain).
        let mut order: HashMap<String, (u64, usize)> = HashMap::new();
        for chain in by_volume.values_mut() {
            chain.sort();
            let full = |s: &str| {
                r.snapshots
                    .get(s)
                    .map_or(0, |f| u64::try_from(f.size_gib).unwrap_or(0) << 30)
            };
            let bytes: Vec<Transfer> = chain
                .iter()
                .enumerate()
                .map(|(k, (_, s))| match (there(s), k > 0) {
                    (true, _) => Transfer::default(),
                    (false, true) => Transfer {
                        bytes: (full(s) as f64 * crate::quotas::CHANGED_SHARE_ESTIMATE) as u64,
                        incremental: true,
                        chain_bytes: 0,
                    },
                    (false, false) => Transfer {
                        bytes: full(s),
                        incremental: false,
                        chain_bytes: 0,
                    },
                })
                .collect();
            let mut left = 0;
            for (k, (_, s)) in chain.iter().enumerate().rev() {
                left += bytes[k].bytes;
                let t = Transfer {
                    chain_bytes: left,
                    ..bytes[k]
                };
                let before = k.checked_sub(1).map(|j| chain[j].1.clone());
                out.insert(s.clone(), (t, before));
            }
            for (k, (_, s)) in chain.iter().enumerate() {
                order.insert(s.clone(), (left, k));
            }
        }
        if chained {
            targets.sort_by_key(|t| {
                let (bytes, k) = order.get(&t.resource).copied().unwrap_or((0, 0));
                let volume = r
                    .snapshots
                    .get(&t.resource)
                    .and_then(|f| f.volume_id.clone());
                (std::cmp::Reverse(bytes), volume, k)
            });
        }
        out
    }

    /// The resources a migration acts on: its explicit ids, plus what its tag selector matched
    /// (resolved), or one `find` step standing for the selector (offline).
    fn selection(
        &mut self,
        id: &str,
        explicit: &[Spanned<String>],
        tags: Option<&Spanned<BTreeMap<String, String>>>,
        images: bool,
        account: &str,
        region: &str,
    ) -> (Vec<Selected>, Option<StepId>) {
        let mut targets: Vec<Selected> = explicit
            .iter()
            .map(|s| Selected {
                resource: s.value.clone(),
                target: Target::One(s.value.clone()),
            })
            .collect();
        let Some(tags) = tags.filter(|t| !t.value.is_empty()) else {
            self.largest_first(&mut targets);
            return (targets, None);
        };
        if let Some(found) = self.resolution.and_then(|r| r.inventory.tagged.get(id)) {
            let mut named: HashSet<String> = targets.iter().map(|t| t.resource.clone()).collect();
            for r in found {
                if named.insert(r.clone()) {
                    targets.push(Selected {
                        resource: r.clone(),
                        target: Target::One(r.clone()),
                    });
                }
            }
            self.largest_first(&mut targets);
            return (targets, None);
        }
        let find = FindSpec {
            tags: tags.value.clone(),
        };
        let find = self.step(
            StepId::new(migration_owner(id), "tagged", "find"),
            account,
            Some(region),
            Target::Tagged(tags.value.clone()),
            if images {
                StepSpec::FindImages(find)
            } else {
                StepSpec::FindSnapshots(find)
            },
        );
        targets.push(Selected {
            resource: "tagged".into(),
            target: Target::Tagged(tags.value.clone()),
        });
        (targets, Some(find))
    }

    /// The steps a use of `key` (a plan key name, or a literal) in `region` must wait for.
    fn key_steps(&self, key: &str, region: &str) -> Vec<StepId> {
        let Some(named) = self.plan.keys.iter().find(|k| k.name.value == key) else {
            return Vec::new();
        };
        let owner = key_owner(key);
        let mut ids = vec![
            StepId::new(owner.clone(), "key", "create"),
            StepId::new(owner.clone(), "policy", "merge"),
        ];
        if named.value.region.value != region {
            ids.push(StepId::new(owner, format!("replica-{region}"), "replicate"));
        }
        ids.into_iter().filter(|id| self.b.contains(id)).collect()
    }

    /// The destination key as steps use it: its ARN when it exists, else the plan step that
    /// makes it in that region, else (offline) the reference to look up.
    fn destination_key(
        &self,
        written: &str,
        account: &str,
        region: Option<&str>,
    ) -> DestinationKey {
        let key_ref = self.plan.key_ref(written);
        let shown = key_ref
            .as_ref()
            .map(|k| k.lookup().to_string())
            .unwrap_or_else(|| written.to_string());
        let found = region.and_then(|r| self.known_key(account, r, &shown));
        let key = match (found, &key_ref, region) {
            (Some(arn), _, _) => DestKey::Existing(arn),
            (None, Some(KeyRef::Plan { name, .. }), Some(r)) => {
                let home = self
                    .plan
                    .keys
                    .iter()
                    .find(|k| k.name.value == name.as_str())
                    .map(|k| k.value.region.value.clone());
                let owner = Owner::Key(name.clone());
                let maker = if home.as_deref() == Some(r) {
                    StepId::new(owner, "key", "create")
                } else {
                    StepId::new(owner, format!("replica-{r}"), "replicate")
                };
                if self.b.contains(&maker) {
                    DestKey::MadeBy(maker)
                } else {
                    DestKey::Unresolved(shown.clone())
                }
            }
            (None, Some(KeyRef::Arn(arn)), _) => DestKey::Existing(arn.clone()),
            _ => DestKey::Unresolved(shown.clone()),
        };
        DestinationKey { shown, key }
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

    fn sharing(
        &self,
        id: &str,
        dst_account: &str,
        dst_region: &str,
        revoke: bool,
        copies_under: Option<DestinationKey>,
        copied: Copied,
    ) -> Sharing {
        Sharing {
            migration: MigrationId::new(id),
            with_account: AccountName::new(dst_account),
            destination_region: Region::new(dst_region),
            revoke_after: revoke,
            copies_under,
            copied,
        }
    }

    fn snapshot_copy(&mut self, m: &'p SnapshotCopy) {
        let id = m.id.value.as_str();
        let owner = migration_owner(id);
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
        let key = self.destination_key(&m.destination.key.value, dst_account, Some(dst_region));
        let tags = ferry_tags(self.plan, id, &m.tags.value);
        let copy_tags = crate::plan::copies_tags(&m.copy_tags, false);

        let (mut targets, find) = self.selection(
            id,
            &m.source.snapshots,
            m.source.tags.as_ref(),
            false,
            src_account,
            src_region,
        );
        // Sources retention would delete the copies of are not copied at all.
        if let Some(beyond) = self
            .resolution
            .and_then(|r| r.inventory.beyond_retention.get(id))
        {
            targets.retain(|t| !beyond.contains(&t.resource));
        }
        let revoke = m.revoke_after.as_ref().is_some_and(|r| r.value);
        let sharing = self.sharing(
            id,
            dst_account,
            dst_region,
            revoke,
            Some(key.clone()),
            Copied::Snapshots,
        );
        let sources = known_sources(&targets);
        let how = m.key_access.as_ref().map(|k| k.value).unwrap_or_default();
        let manage_access = how != KeyAccess::None;
        let access = if cross && manage_access {
            self.key_access(
                id,
                src_account,
                src_region,
                &sharing,
                how,
                &sources,
                find.as_ref(),
            )
        } else {
            Vec::new()
        };
        let mut copies = Vec::new();
        let mut shares = Vec::new();
        // Sources under aws/ebs (`reencrypt_managed_sources`): copied under the intermediate
        // key in the source account first; that copy is shared, copied, then deleted.
        let (reencrypted, intermediate_key) =
            self.reencrypted(id, m.intermediate_key.as_ref(), src_account, src_region);
        let mut intermediates: Vec<(String, StepId)> = Vec::new();
        let chains = self.chains(id, &mut targets, &key);
        let copy_of = |source: &str| StepId::new(owner.clone(), source.to_string(), "copy");
        for t in targets {
            let later = t.target.is_expanded_later();
            let (transfer, after) = chains.get(&t.resource).cloned().unwrap_or_default();
            let via = match (
                &intermediate_key,
                cross && reencrypted.contains(&t.resource),
            ) {
                (Some(k), true) => {
                    let mut itags = tags.clone();
                    itags.insert("ferry:intermediate".into(), "true".into());
                    Some(self.step(
                        StepId::new(owner.clone(), t.resource.clone(), "reencrypt"),
                        src_account,
                        Some(src_region),
                        t.target.clone(),
                        StepSpec::CopySnapshot(CopySnapshotSpec {
                            migration: MigrationId::new(id),
                            source: SnapshotId::new(t.resource.clone()),
                            source_account: AccountName::new(src_account),
                            source_region: Region::new(src_region),
                            key: k.clone(),
                            tags: itags,
                            source_tags: Tags::new(),
                            lineage: None,
                            via: None,
                            completion_minutes: None,
                            serves: Some(FinalCopy {
                                account: AccountName::new(dst_account),
                                region: Region::new(dst_region),
                                key: key.clone(),
                            }),
                            transfer: Transfer::default(),
                        }),
                    ))
                }
                _ => None,
            };
            let share = cross.then(|| {
                let shared = shared_snapshot(via.as_ref(), &t.resource);
                let s = self.step(
                    StepId::new(owner.clone(), t.resource.clone(), "share"),
                    src_account,
                    Some(src_region),
                    t.target.clone(),
                    StepSpec::ShareSnapshot(ShareSpec {
                        shared,
                        sharing: sharing.clone(),
                        undoes: None,
                    }),
                );
                if let (Some(f), true) = (&find, later) {
                    self.b.depends(&s, f);
                }
                if let Some(v) = &via {
                    self.b.depends(&s, v);
                }
                s
            });
            let copy = self.step(
                StepId::new(owner.clone(), t.resource.clone(), "copy"),
                dst_account,
                Some(dst_region),
                t.target.clone(),
                StepSpec::CopySnapshot(CopySnapshotSpec {
                    migration: MigrationId::new(id),
                    source: SnapshotId::new(t.resource.clone()),
                    source_account: AccountName::new(src_account),
                    source_region: Region::new(src_region),
                    key: key.clone(),
                    tags: tags.clone(),
                    source_tags: match (copy_tags, self.resolution) {
                        (true, Some(r)) => r
                            .snapshots
                            .get(&t.resource)
                            .map(|f| f.tags.clone())
                            .unwrap_or_default(),
                        _ => Tags::new(),
                    },
                    lineage: self.resolution.and_then(|r| {
                        let f = r.snapshots.get(&t.resource)?;
                        Some((f.volume_id.clone()?, f.start_ms?))
                    }),
                    via: via.clone(),
                    completion_minutes: m
                        .destination
                        .completion_duration
                        .as_ref()
                        .map(|d| (d.value.0 / 60) as i32),
                    serves: None,
                    transfer,
                }),
            );
            // The copy of the snapshot before this one in its volume's chain.
            if let Some(a) = &after {
                self.b.depends(&copy, &copy_of(a));
            }
            if let (Some(f), true) = (&find, later) {
                self.b.depends(&copy, f);
            }
            for k in &key_deps {
                self.b.depends(&copy, k);
            }
            if let Some(v) = &via {
                self.b.depends(&copy, v);
                let d =
                    self.delete_intermediate(id, &t, src_account, src_region, Copied::Snapshots);
                self.b.depends(&d, &copy);
                intermediates.push((t.resource.clone(), d));
            }
            if let Some(s) = &share {
                self.b.depends(&copy, s);
                shares.push((t.clone(), s.clone(), via.clone()));
            }
            for (_, a) in &access {
                self.b.depends(&copy, a);
            }
            copies.push(copy);
        }
        if let Some(r) = &m.retention {
            let spec = self.prune_spec(Pruned::Snapshots, id, src_account, src_region, &r.value);
            self.prune(spec, dst_account, dst_region, &copies, find.as_ref());
        }
        if cross && revoke {
            for (t, share, via) in shares {
                let shared = shared_snapshot(via.as_ref(), &t.resource);
                let u = self.step(
                    share.with_action("unshare"),
                    src_account,
                    Some(src_region),
                    t.target,
                    StepSpec::UnshareSnapshot(ShareSpec {
                        shared,
                        sharing: sharing.clone(),
                        undoes: Some(share.clone()),
                    }),
                );
                // An intermediate copy is deleted after its share is taken back.
                if let Some((_, d)) = intermediates.iter().find(|(r, _)| *r == t.resource) {
                    self.b.depends(d, &u);
                }
                // The share step's output says whether ferry added the permission.
                self.b.depends(&u, &share);
                for c in &copies {
                    self.b.depends(&u, c);
                }
            }
            if manage_access {
                let revokes = self.revoke_access(src_account, src_region, &sharing, how, &access);
                self.revokes_after(&revokes, &copies);
                self.remember_shared_keys(id, dst_account, access, revokes, copies);
                return;
            }
        }
        if cross {
            self.remember_shared_keys(id, dst_account, access, Vec::new(), copies);
        }
    }

    /// RDS DB (or Aurora cluster) snapshots. Within an account: one copy per source into the
    /// destination region. Across accounts (same region): an automated source is first copied
    /// to a manual snapshot (automated ones cannot be shared), that is shared along with the
    /// source key, the destination copies it under its own key, and with `revoke_after` the
    /// share, the key access and the manual copy are taken back.
    fn db_snapshot_copy(&mut self, m: &'p DbSnapshotCopy, kind: DbKind) {
        let id = m.id.value.as_str();
        let owner = migration_owner(id);
        let plan_name = self.plan.name.value.as_str();
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
        let (key_deps, key) = match &m.destination.key {
            Some(k) => (
                self.key_steps(&k.value, dst_region),
                Some(self.destination_key(&k.value, dst_account, Some(dst_region))),
            ),
            None => (Vec::new(), None),
        };
        let tags = ferry_tags(self.plan, id, &m.tags.value);
        let revoke = m.revoke_after.as_ref().is_some_and(|r| r.value);
        let sharing = self.sharing(
            id,
            dst_account,
            dst_region,
            revoke,
            key.clone(),
            Copied::DbSnapshots(kind),
        );
        let how = m.key_access.as_ref().map(|k| k.value).unwrap_or_default();

        // The sources: as resolved (tags and latest_of expanded, automated ones known), or
        // offline the explicit ones plus one find step standing for the selectors.
        let resolved = self
            .resolution
            .and_then(|r| r.inventory.db_snapshots.get(id));
        let source_tags = |source: &str| -> Tags {
            resolved
                .and_then(|f| f.iter().find(|s| s.id == source))
                .map(|s| s.tags.clone())
                .unwrap_or_default()
        };
        let (sources, find): (Vec<(String, bool, Target)>, Option<StepId>) = match resolved {
            Some(found) => (
                found
                    .iter()
                    .map(|s| (s.id.clone(), s.automated, Target::One(s.id.clone())))
                    .collect(),
                None,
            ),
            None => {
                let mut v: Vec<(String, bool, Target)> = m
                    .source
                    .snapshots
                    .iter()
                    .map(|s| {
                        // RDS stores identifiers lowercased: the resolved ids are.
                        let name = db_snapshot_name(&s.value).to_ascii_lowercase();
                        let automated = name.starts_with("rds:") || self.every_path;
                        (name.clone(), automated, Target::One(name))
                    })
                    .collect();
                let mut selector = m
                    .source
                    .tags
                    .as_ref()
                    .map(|t| t.value.clone())
                    .unwrap_or_default();
                if !m.source.latest_of.is_empty() {
                    let of: Vec<&str> = m
                        .source
                        .latest_of
                        .iter()
                        .map(|i| i.value.as_str())
                        .collect();
                    selector.insert("latest-of".into(), of.join(","));
                }
                let find = (!selector.is_empty()).then(|| {
                    self.step(
                        StepId::new(owner.clone(), SELECTED, "find"),
                        src_account,
                        Some(src_region),
                        Target::Tagged(selector.clone()),
                        StepSpec::FindDbSnapshots(FindSpec {
                            tags: selector.clone(),
                        }),
                    )
                });
                if find.is_some() {
                    v.push((SELECTED.into(), self.every_path, Target::Tagged(selector)));
                }
                (v, find)
            }
        };
        let known: Vec<String> = sources
            .iter()
            .filter(|(_, _, t)| !t.is_expanded_later())
            .map(|(s, _, _)| s.clone())
            .collect();
        let access = if cross && how != KeyAccess::None {
            self.key_access(
                id,
                src_account,
                src_region,
                &sharing,
                how,
                &known,
                find.as_ref(),
            )
        } else {
            Vec::new()
        };
        let mut copies = Vec::new();
        let mut undo = Vec::new();
        // Sources under aws/rds (`reencrypt_managed_sources`): the manual copy that is shared
        // is made under the intermediate key, and deleted after as for automated sources.
        let (reencrypted, intermediate_key) =
            self.reencrypted(id, m.intermediate_key.as_ref(), src_account, src_region);
        for (source, automated, target) in sources {
            let rekeyed = intermediate_key
                .as_ref()
                .filter(|_| reencrypted.contains(&source))
                .cloned();
            let final_id = db_copy_identifier(plan_name, &source, None, kind.max_identifier());
            let final_ref = DbSnapshotRef {
                account: AccountName::new(dst_account),
                region: Region::new(dst_region),
                id: final_id.clone(),
            };
            let mut shared_id = source.clone();
            let mut deps: Vec<StepId> = find
                .iter()
                .filter(|_| target.is_expanded_later())
                .cloned()
                .collect();
            let mut intermediate = None;
            if cross && (automated || rekeyed.is_some()) {
                // Named after the migration too: two migrations may share one source with two
                // accounts, each through a manual copy of its own.
                shared_id = db_copy_identifier(
                    plan_name,
                    &format!("{id}-{source}"),
                    Some("shared"),
                    kind.max_identifier(),
                );
                let mut itags = tags.clone();
                itags.insert("ferry:intermediate".into(), "true".into());
                let step = self.step(
                    StepId::new(owner.clone(), source.clone(), "copy-to-share"),
                    src_account,
                    Some(src_region),
                    target.clone(),
                    StepSpec::CopyDbSnapshot(DbCopySpec {
                        migration: MigrationId::new(id),
                        kind,
                        source: DbSnapshotRef {
                            account: AccountName::new(src_account),
                            region: Region::new(src_region),
                            id: source.clone(),
                        },
                        origin: source.clone(),
                        target: shared_id.clone(),
                        key: rekeyed.clone(),
                        option_group: None,
                        tags: itags,
                        source_tags: source_tags(&source),
                        lineage: None,
                        serves: Some(final_ref.clone()),
                    }),
                );
                for d in &deps {
                    self.b.depends(&step, d);
                }
                deps.push(step.clone());
                intermediate = Some(step);
            }
            let share = cross.then(|| {
                let s = self.step(
                    StepId::new(owner.clone(), source.clone(), "share"),
                    src_account,
                    Some(src_region),
                    target.clone(),
                    StepSpec::ShareDbSnapshot(DbShareSpec {
                        kind,
                        origin: source.clone(),
                        snapshot: shared_id.clone(),
                        sharing: sharing.clone(),
                        copy: final_ref.clone(),
                        undoes: None,
                    }),
                );
                for d in &deps {
                    self.b.depends(&s, d);
                }
                s
            });
            let copy = self.step(
                StepId::new(owner.clone(), source.clone(), "copy"),
                dst_account,
                Some(dst_region),
                target.clone(),
                StepSpec::CopyDbSnapshot(DbCopySpec {
                    migration: MigrationId::new(id),
                    kind,
                    source: DbSnapshotRef {
                        account: AccountName::new(src_account),
                        region: Region::new(src_region),
                        id: shared_id.clone(),
                    },
                    origin: source.clone(),
                    target: final_id,
                    key: key.clone(),
                    option_group: m.destination.option_group.as_ref().map(|o| o.value.clone()),
                    tags: tags.clone(),
                    source_tags: source_tags(&source),
                    lineage: resolved
                        .and_then(|f| f.iter().find(|s| s.id == source))
                        .and_then(|s| Some((s.of.clone(), s.created_ms?)))
                        .filter(|(of, _)| !of.is_empty()),
                    serves: None,
                }),
            );
            for d in deps.iter().chain(&key_deps).chain(share.iter()) {
                self.b.depends(&copy, d);
            }
            for (_, a) in &access {
                self.b.depends(&copy, a);
            }
            copies.push(copy.clone());
            // A re-keyed intermediate is deleted after the copy even without `revoke_after`.
            if let (true, Some(share)) = (revoke || rekeyed.is_some(), share) {
                undo.push((
                    source,
                    target,
                    shared_id,
                    share,
                    intermediate,
                    final_ref,
                    copy,
                ));
            }
        }
        for (source, target, shared_id, share, intermediate, final_ref, copy) in undo {
            let unshare = revoke.then(|| {
                let u = self.step(
                    share.with_action("unshare"),
                    src_account,
                    Some(src_region),
                    target.clone(),
                    StepSpec::UnshareDbSnapshot(DbShareSpec {
                        kind,
                        origin: source.clone(),
                        snapshot: shared_id.clone(),
                        sharing: sharing.clone(),
                        copy: final_ref.clone(),
                        undoes: Some(share.clone()),
                    }),
                );
                self.b.depends(&u, &share);
                self.b.depends(&u, &copy);
                u
            });
            if intermediate.is_some() {
                let d = self.step(
                    StepId::new(owner.clone(), source.clone(), "delete-shared"),
                    src_account,
                    Some(src_region),
                    target,
                    StepSpec::DeleteDbSnapshot(DbDeleteSpec {
                        migration: MigrationId::new(id),
                        kind,
                        origin: source.clone(),
                        snapshot: shared_id,
                        copy: final_ref,
                    }),
                );
                self.b.depends(&d, unshare.as_ref().unwrap_or(&copy));
            }
        }
        if let Some(r) = &m.retention {
            let spec = self.prune_spec(
                Pruned::DbSnapshots(kind),
                id,
                src_account,
                src_region,
                &r.value,
            );
            self.prune(spec, dst_account, dst_region, &copies, find.as_ref());
        }
        if cross && revoke && how != KeyAccess::None {
            let revokes = self.revoke_access(src_account, src_region, &sharing, how, &access);
            self.revokes_after(&revokes, &copies);
            self.remember_shared_keys(id, dst_account, access, revokes, copies);
        } else if cross {
            self.remember_shared_keys(id, dst_account, access, Vec::new(), copies);
        }
    }

    /// The step deleting the intermediate copies of source `t` (after its final copy).
    fn delete_intermediate(
        &mut self,
        id: &str,
        t: &Selected,
        src_account: &str,
        src_region: &str,
        what: Copied,
    ) -> StepId {
        self.step(
            StepId::new(
                migration_owner(id),
                t.resource.clone(),
                "delete-intermediate",
            ),
            src_account,
            Some(src_region),
            t.target.clone(),
            StepSpec::DeleteIntermediate(IntermediateSpec {
                migration: MigrationId::new(id),
                source: t.resource.clone(),
                what,
            }),
        )
    }

    /// The sources resolve found under an AWS managed key (`reencrypt_managed_sources`), and
    /// the key of their intermediate copies in the source account and region.
    fn reencrypted(
        &self,
        id: &str,
        key: Option<&Spanned<String>>,
        src_account: &str,
        src_region: &str,
    ) -> (Vec<String>, Option<DestinationKey>) {
        let sources = self
            .resolution
            .and_then(|r| r.inventory.reencrypted.get(id))
            .cloned()
            .unwrap_or_default();
        let key = key.map(|k| self.destination_key(&k.value, src_account, Some(src_region)));
        (sources, key)
    }

    /// A migration's prune step spec: its retention and the sources resolve judged beyond it.
    fn prune_spec(
        &self,
        what: Pruned,
        id: &str,
        src_account: &str,
        src_region: &str,
        r: &crate::plan::Retention,
    ) -> PruneSpec {
        PruneSpec {
            what,
            migration: MigrationId::new(id),
            source_account: AccountName::new(src_account),
            source_region: Region::new(src_region),
            keep_last: r.keep_last.as_ref().map(|k| k.value),
            max_age_secs: r.max_age.as_ref().map(|a| a.value.0),
            beyond: self
                .resolution
                .and_then(|res| res.inventory.beyond_retention.get(id))
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The retention step of a migration: after this run's copies (they are the newest of
    /// their lineages).
    fn prune(
        &mut self,
        spec: PruneSpec,
        dst_account: &str,
        dst_region: &str,
        copies: &[StepId],
        find: Option<&StepId>,
    ) {
        let id = spec.migration.to_string();
        let prune = self.step(
            StepId::new(migration_owner(&id), "retention", "prune"),
            dst_account,
            Some(dst_region),
            Target::One(format!("copies of {id}")),
            StepSpec::PruneCopies(spec),
        );
        for c in copies {
            self.b.depends(&prune, c);
        }
        if let Some(f) = find {
            self.b.depends(&prune, f);
        }
    }

    /// The steps granting the destination account use of each source key: one per key once
    /// resolved, one standing for "every source key" offline. Each waits for the selector.
    #[allow(clippy::too_many_arguments)]
    fn key_access(
        &mut self,
        id: &str,
        src_account: &str,
        src_region: &str,
        sharing: &Sharing,
        how: KeyAccess,
        sources: &[String],
        find: Option<&StepId>,
    ) -> Vec<(SourceKey, StepId)> {
        let sid = format!("ferry-{}-{}", self.plan.name.value, sharing.with_account);
        let keys: Vec<SourceKey> = match self
            .resolution
            .and_then(|r| r.inventory.source_keys.get(id))
        {
            Some(keys) => keys
                .iter()
                .map(|k| SourceKey::Known(KeyArn::new(k.as_str())))
                .collect(),
            None => vec![SourceKey::Unresolved],
        };
        let mut out = Vec::new();
        for key in keys {
            let (resource, target) = source_key_names(&key);
            let step = self.step(
                StepId::new(migration_owner(id), resource, "grant-access"),
                src_account,
                Some(src_region),
                target,
                StepSpec::GrantKeyAccess(KeyAccessSpec {
                    key: key.clone(),
                    how,
                    sid: sid.clone(),
                    sharing: sharing.clone(),
                    sources: sources.to_vec(),
                    undoes: None,
                }),
            );
            if let Some(f) = find {
                self.b.depends(&step, f);
            }
            out.push((key, step));
        }
        out
    }

    /// One revoke per grant step: it takes back exactly what that step added.
    fn revoke_access(
        &mut self,
        src_account: &str,
        src_region: &str,
        sharing: &Sharing,
        how: KeyAccess,
        grants: &[(SourceKey, StepId)],
    ) -> Vec<(SourceKey, StepId)> {
        let sid = format!("ferry-{}-{}", self.plan.name.value, sharing.with_account);
        let mut out = Vec::new();
        for (key, grant) in grants {
            let (_, target) = source_key_names(key);
            let step = self.step(
                grant.with_action("revoke-access"),
                src_account,
                Some(src_region),
                target,
                StepSpec::RevokeKeyAccess(KeyAccessSpec {
                    key: key.clone(),
                    how,
                    sid: sid.clone(),
                    sharing: sharing.clone(),
                    sources: Vec::new(),
                    undoes: Some(grant.clone()),
                }),
            );
            // The grant step's output says what ferry added, so only that is taken back.
            self.b.depends(&step, grant);
            out.push((key.clone(), step));
        }
        out
    }

    /// A migration's revokes wait for its copies.
    fn revokes_after(&mut self, revokes: &[(SourceKey, StepId)], copies: &[StepId]) {
        for (_, r) in revokes {
            for c in copies {
                self.b.depends(r, c);
            }
        }
    }

    /// Records a cross-account migration's key access, for [`Self::revokes_after_every_copy`].
    fn remember_shared_keys(
        &mut self,
        id: &str,
        dst_account: &str,
        grants: Vec<(SourceKey, StepId)>,
        revokes: Vec<(SourceKey, StepId)>,
        copies: Vec<StepId>,
    ) {
        self.shared_keys.push(SharedKeys {
            migration: id.to_string(),
            with_account: dst_account.to_string(),
            grants,
            revokes,
            copies,
        });
    }

    fn ami_copy(&mut self, m: &'p AmiCopy) {
        let id = m.id.value.as_str();
        let owner = migration_owner(id);
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
        let key = m
            .destination
            .key
            .as_ref()
            .filter(|_| copy_wanted)
            .map(|k| self.destination_key(&k.value, dst_account, Some(dst_region)));
        let tags = ferry_tags(self.plan, id, &m.tags.value);
        let copy_tags = crate::plan::copies_tags(&m.copy_tags, false);

        let (mut targets, find) = self.selection(
            id,
            &m.source.images,
            m.source.tags.as_ref(),
            true,
            src_account,
            src_region,
        );
        // AMIs retention would deregister the copies of are not copied at all.
        if let Some(beyond) = self
            .resolution
            .and_then(|r| r.inventory.beyond_retention.get(id))
        {
            targets.retain(|t| !beyond.contains(&t.resource));
        }
        let revoke = m.revoke_after.as_ref().is_some_and(|r| r.value);
        let sharing = self.sharing(
            id,
            dst_account,
            dst_region,
            revoke,
            key.clone(),
            Copied::Images,
        );
        let sources = known_sources(&targets);
        let how = m.key_access.as_ref().map(|k| k.value).unwrap_or_default();
        let manage_access = how != KeyAccess::None;
        let access = if cross && manage_access {
            self.key_access(
                id,
                src_account,
                src_region,
                &sharing,
                how,
                &sources,
                find.as_ref(),
            )
        } else {
            Vec::new()
        };
        let mut copies = Vec::new();
        let mut shares = Vec::new();
        // AMIs with a volume under aws/ebs (`reencrypt_managed_sources`): copied under the
        // intermediate key in the source account first; that copy is shared, copied, then
        // deregistered with its snapshots.
        let (reencrypted, intermediate_key) =
            self.reencrypted(id, m.intermediate_key.as_ref(), src_account, src_region);
        let mut intermediates: Vec<(String, StepId)> = Vec::new();
        for t in targets {
            let later = t.target.is_expanded_later();
            let image = ImageId::new(t.resource.clone());
            let mut image_shares = Vec::new();
            let via = match (&intermediate_key, &key) {
                (Some(ik), Some(k)) if cross && reencrypted.contains(&t.resource) => {
                    let mut itags = tags.clone();
                    itags.insert("ferry:intermediate".into(), "true".into());
                    Some(self.step(
                        StepId::new(owner.clone(), t.resource.clone(), "reencrypt"),
                        src_account,
                        Some(src_region),
                        t.target.clone(),
                        StepSpec::CopyImage(CopyImageSpec {
                            migration: MigrationId::new(id),
                            source: image.clone(),
                            source_account: AccountName::new(src_account),
                            source_region: Region::new(src_region),
                            key: ik.clone(),
                            tags: itags,
                            source_tags: Tags::new(),
                            lineage: None,
                            via: None,
                            serves: Some(FinalCopy {
                                account: AccountName::new(dst_account),
                                region: Region::new(dst_region),
                                key: k.clone(),
                            }),
                        }),
                    ))
                }
                _ => None,
            };
            let backing = self.backing_snapshots(&t.resource);
            let (launched, backed) = shared_image(via.as_ref(), &image, backing);
            if cross {
                let launch = self.step(
                    StepId::new(owner.clone(), t.resource.clone(), "share"),
                    src_account,
                    Some(src_region),
                    t.target.clone(),
                    StepSpec::ShareImage(ShareSpec {
                        shared: launched.clone(),
                        sharing: sharing.clone(),
                        undoes: None,
                    }),
                );
                // The snapshots behind the image: known once resolved.
                let snaps = self.step(
                    StepId::new(owner.clone(), format!("{}-snapshots", t.resource), "share"),
                    src_account,
                    Some(src_region),
                    t.target.clone(),
                    StepSpec::ShareSnapshot(ShareSpec {
                        shared: backed.clone(),
                        sharing: sharing.clone(),
                        undoes: None,
                    }),
                );
                for s in [&launch, &snaps] {
                    if let (Some(f), true) = (&find, later) {
                        self.b.depends(s, f);
                    }
                    if let Some(v) = &via {
                        self.b.depends(s, v);
                    }
                }
                image_shares.push(launch.clone());
                image_shares.push(snaps.clone());
                shares.push((t.clone(), launch, snaps, launched, backed));
            }
            if let Some(key) = &key {
                let copy = self.step(
                    StepId::new(owner.clone(), t.resource.clone(), "copy"),
                    dst_account,
                    Some(dst_region),
                    t.target.clone(),
                    StepSpec::CopyImage(CopyImageSpec {
                        migration: MigrationId::new(id),
                        source: image.clone(),
                        source_account: AccountName::new(src_account),
                        source_region: Region::new(src_region),
                        key: key.clone(),
                        tags: tags.clone(),
                        source_tags: match (copy_tags, self.resolution) {
                            (true, Some(r)) => r
                                .inventory
                                .image_tags
                                .get(image.as_str())
                                .cloned()
                                .unwrap_or_default(),
                            _ => Tags::new(),
                        },
                        lineage: self
                            .resolution
                            .and_then(|r| r.inventory.image_lineages.get(image.as_str()))
                            .cloned(),
                        via: via.clone(),
                        serves: None,
                    }),
                );
                if let (Some(f), true) = (&find, later) {
                    self.b.depends(&copy, f);
                }
                let access_steps = access.iter().map(|(_, a)| a);
                for dep in key_deps.iter().chain(&image_shares).chain(access_steps) {
                    self.b.depends(&copy, dep);
                }
                if let Some(v) = &via {
                    self.b.depends(&copy, v);
                    let d =
                        self.delete_intermediate(id, &t, src_account, src_region, Copied::Images);
                    self.b.depends(&d, &copy);
                    intermediates.push((t.resource.clone(), d));
                }
                copies.push(copy);
            }
        }
        if let Some(r) = m.retention.as_ref().filter(|_| key.is_some()) {
            let spec = self.prune_spec(Pruned::Images, id, src_account, src_region, &r.value);
            self.prune(spec, dst_account, dst_region, &copies, find.as_ref());
        }
        if cross && revoke {
            for (t, launch, snaps, launched, backed) in shares {
                let u1 = self.step(
                    launch.with_action("unshare"),
                    src_account,
                    Some(src_region),
                    t.target.clone(),
                    StepSpec::UnshareImage(ShareSpec {
                        shared: launched,
                        sharing: sharing.clone(),
                        undoes: Some(launch.clone()),
                    }),
                );
                let u2 = self.step(
                    snaps.with_action("unshare"),
                    src_account,
                    Some(src_region),
                    t.target.clone(),
                    StepSpec::UnshareSnapshot(ShareSpec {
                        shared: backed,
                        sharing: sharing.clone(),
                        undoes: Some(snaps.clone()),
                    }),
                );
                // An intermediate AMI is deregistered after its shares are taken back.
                if let Some((_, d)) = intermediates.iter().find(|(r, _)| *r == t.resource) {
                    self.b.depends(d, &u1);
                    self.b.depends(d, &u2);
                }
                self.b.depends(&u1, &launch);
                self.b.depends(&u2, &snaps);
                for c in &copies {
                    self.b.depends(&u1, c);
                    self.b.depends(&u2, c);
                }
            }
            if manage_access {
                let revokes = self.revoke_access(src_account, src_region, &sharing, how, &access);
                self.revokes_after(&revokes, &copies);
                self.remember_shared_keys(id, dst_account, access, revokes, copies);
                return;
            }
        }
        if cross {
            self.remember_shared_keys(id, dst_account, access, Vec::new(), copies);
        }
    }

    fn backing_snapshots(&self, image: &str) -> Option<Vec<SnapshotId>> {
        self.resolution
            .and_then(|r| r.inventory.image_snapshots.get(image))
            .map(|l| l.iter().map(|s| SnapshotId::new(s.as_str())).collect())
    }

    fn s3_replication(&mut self, m: &'p S3Replication) {
        let id = m.id.value.as_str();
        let owner = migration_owner(id);
        let src_account = m.source.account.value.as_str();
        let dst_account = self.account_of(&m.destination.account, &m.source.account);
        let src_bucket = m.source.bucket.value.as_str();
        let dst_bucket = m.destination.bucket.value.as_str();
        // Bucket regions are looked up by the resolve stage; offline only a declared one is known.
        let looked_up =
            |account: &str, bucket: &str| self.resolution?.bucket_region(account, bucket);
        let src_region = looked_up(src_account, src_bucket);
        let dst_region = m
            .destination
            .region
            .as_ref()
            .map(|r| r.value.clone())
            .or_else(|| looked_up(dst_account, dst_bucket));
        let src_region = src_region.as_deref();
        let dst_region = dst_region.as_deref();
        let cross = self.is_cross_account(src_account, dst_account);
        let key_deps = dst_region
            .map(|r| self.key_steps(&m.destination.key.value, r))
            .unwrap_or_default();
        let key = self.destination_key(&m.destination.key.value, dst_account, dst_region);
        let source_keys: Vec<KeyArn> = self
            .resolution
            .and_then(|r| r.inventory.source_keys.get(id))
            .map(|keys| keys.iter().map(|k| KeyArn::new(k.as_str())).collect())
            .unwrap_or_default();
        let bucket_key = m.bucket_key.as_ref().is_none_or(|b| b.value);
        let one = |b: &str| Target::One(b.to_string());

        let src_versioning = self.step(
            StepId::new(owner.clone(), "source-bucket", "versioning"),
            src_account,
            src_region,
            one(src_bucket),
            StepSpec::EnableVersioning(VersioningSpec {
                bucket: BucketName::new(src_bucket),
            }),
        );
        let create = m
            .destination
            .create
            .as_ref()
            .is_some_and(|c| c.value)
            .then(|| {
                let c = self.step(
                    StepId::new(owner.clone(), "destination-bucket", "create"),
                    dst_account,
                    dst_region,
                    one(dst_bucket),
                    StepSpec::CreateBucket(CreateBucketSpec {
                        migration: MigrationId::new(id),
                        bucket: BucketName::new(dst_bucket),
                        key: key.clone(),
                        bucket_key,
                        tags: ferry_tags(self.plan, id, &BTreeMap::new()),
                    }),
                );
                for k in &key_deps {
                    self.b.depends(&c, k);
                }
                c
            });
        let dst_versioning = self.step(
            StepId::new(owner.clone(), "destination-bucket", "versioning"),
            dst_account,
            dst_region,
            one(dst_bucket),
            StepSpec::EnableVersioning(VersioningSpec {
                bucket: BucketName::new(dst_bucket),
            }),
        );
        if let Some(c) = &create {
            self.b.depends(&dst_versioning, c);
        }

        let mut role_deps = Vec::new();
        let role = match (&m.role.name, &m.role.arn) {
            (Some(n), _) => {
                let r = self.step(
                    StepId::new(owner.clone(), "role", "ensure"),
                    src_account,
                    Some("global"),
                    one(&n.value),
                    StepSpec::EnsureRole(RoleSpec {
                        migration: MigrationId::new(id),
                        name: n.value.clone(),
                        source_bucket: BucketName::new(src_bucket),
                        source_region: src_region.map(Region::new),
                        destination_bucket: BucketName::new(dst_bucket),
                        destination_account: AccountName::new(dst_account),
                        destination_region: dst_region.map(Region::new),
                        source_keys: source_keys.clone(),
                        key: key.clone(),
                        tags: ferry_tags(self.plan, id, &BTreeMap::new()),
                        purpose: RolePurpose::Replication,
                    }),
                );
                // The inline policy names the destination key's ARN.
                for k in &key_deps {
                    self.b.depends(&r, k);
                }
                role_deps.push(r);
                RoleRef::Name(n.value.clone())
            }
            (None, Some(a)) => RoleRef::Arn(a.value.clone()),
            // The checks require one of the two.
            (None, None) => RoleRef::Name(String::new()),
        };

        let key_policy = self.step(
            StepId::new(owner.clone(), "destination-key", "allow-role"),
            dst_account,
            dst_region,
            Target::One(m.destination.key.value.clone()),
            StepSpec::MergeKeyPolicy(KeyPolicySpec {
                key: key.clone(),
                statements: Statements::ReplicationRole {
                    role: role.clone(),
                    role_account: AccountName::new(src_account),
                    sid: format!("ferry-{}-{}-replication", self.plan.name.value, id),
                },
            }),
        );
        for d in role_deps.iter().chain(&key_deps) {
            self.b.depends(&key_policy, d);
        }

        let bucket_policy = cross.then(|| {
            let s = self.step(
                StepId::new(owner.clone(), "destination-bucket", "allow-role"),
                dst_account,
                dst_region,
                one(dst_bucket),
                StepSpec::AllowReplicationRole(BucketPolicySpec {
                    bucket: BucketName::new(dst_bucket),
                    role: role.clone(),
                    role_account: AccountName::new(src_account),
                    sid: format!("ferry-{}-{}-replication", self.plan.name.value, id),
                }),
            );
            for d in role_deps.iter().chain(create.iter()) {
                self.b.depends(&s, d);
            }
            s
        });

        let rule = m.rule.as_ref().map(|r| &r.value);
        let prefix = rule
            .and_then(|r| r.prefix.as_ref())
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let rule_id = rule
            .and_then(|r| r.id.as_ref())
            .map(|s| s.value.clone())
            .unwrap_or_else(|| format!("ferry-{id}"));
        let replication = self.step(
            StepId::new(owner.clone(), "replication", "put"),
            src_account,
            src_region,
            one(src_bucket),
            StepSpec::PutReplication(ReplicationSpec {
                bucket: BucketName::new(src_bucket),
                destination_bucket: BucketName::new(dst_bucket),
                destination_account: AccountName::new(dst_account),
                destination_region: dst_region.map(Region::new),
                role: role.clone(),
                key: key.clone(),
                rule: RuleSpec {
                    id: rule_id.clone(),
                    prefix: prefix.clone(),
                    priority: rule
                        .and_then(|r| r.priority.as_ref())
                        .map(|s| s.value)
                        .unwrap_or(1),
                    delete_markers: rule
                        .and_then(|r| r.delete_markers.as_ref())
                        .is_some_and(|s| s.value),
                },
                bucket_key,
            }),
        );
        for d in [&src_versioning, &dst_versioning, &key_policy]
            .into_iter()
            .chain(role_deps.iter())
            .chain(bucket_policy.iter())
        {
            self.b.depends(&replication, d);
        }

        // The canary goes first: a rule that cannot replicate fails here, before a backfill
        // of millions of objects is started on it.
        let mut ready = replication.clone();
        if m.verify.as_ref().is_none_or(|v| v.value) {
            let v = self.step(
                StepId::new(owner.clone(), "replication", "verify"),
                src_account,
                src_region,
                one(src_bucket),
                StepSpec::VerifyReplication(VerifySpec {
                    migration: MigrationId::new(id),
                    source_bucket: BucketName::new(src_bucket),
                    destination_bucket: BucketName::new(dst_bucket),
                    destination_account: AccountName::new(dst_account),
                    destination_region: dst_region.map(Region::new),
                    prefix: prefix.clone(),
                    rule_id: rule_id.clone(),
                    key: key.clone(),
                    role: role.clone(),
                    source_keys: source_keys.clone(),
                }),
            );
            self.b.depends(&v, &replication);
            ready = v;
        }

        let inline_max = self.plan.settings.inline_max();
        let sample = self
            .resolution
            .and_then(|r| r.inventory.bucket_samples.get(id))
            .copied();
        let paths = match m.backfill.as_ref().map(|b| b.value) {
            Some(BackfillMode::Auto) if self.every_path => {
                vec![BackfillMode::Inline, BackfillMode::Batch]
            }
            _ => vec![backfill_path(m, inline_max, sample.as_ref())],
        };
        for path in paths {
            let (prefix, key) = (prefix.clone(), key.clone());
            self.backfill(
                m,
                path,
                &ready,
                prefix,
                key,
                sample,
                bucket_key,
                (src_account, src_region),
                (dst_account, dst_region),
                &rule_id,
            );
        }
    }

    /// The backfill of `path`, after `ready` (the rule, or its canary).
    #[allow(clippy::too_many_arguments)]
    fn backfill(
        &mut self,
        m: &'p S3Replication,
        path: BackfillMode,
        ready: &StepId,
        prefix: String,
        key: DestinationKey,
        sample: Option<BucketSample>,
        bucket_key: bool,
        (src_account, src_region): (&str, Option<&str>),
        (dst_account, dst_region): (&str, Option<&str>),
        rule_id: &str,
    ) {
        let id = m.id.value.as_str();
        let owner = migration_owner(id);
        let src_bucket = m.source.bucket.value.as_str();
        let dst_bucket = m.destination.bucket.value.as_str();
        let one = |b: &str| Target::One(b.to_string());
        let settings = &self.plan.settings;
        match path {
            BackfillMode::Off | BackfillMode::Auto => {}
            BackfillMode::Inline => {
                let b = self.step(
                    StepId::new(owner.clone(), "backfill", "copy"),
                    dst_account,
                    dst_region,
                    one(src_bucket),
                    StepSpec::Backfill(BackfillSpec {
                        source_bucket: BucketName::new(src_bucket),
                        source_account: AccountName::new(src_account),
                        source_region: src_region.map(Region::new),
                        destination_bucket: BucketName::new(dst_bucket),
                        prefix,
                        key,
                        bucket_key,
                        inline_max: settings.inline_max(),
                        multipart_threshold: settings.part_threshold(),
                    }),
                );
                self.b.depends(&b, ready);
            }
            BackfillMode::Batch => {
                // The checks (or the resolve stage) refuse a batch backfill without a report
                // location.
                let report = batch_report(m, self.plan).unwrap_or(ReportLocation {
                    bucket: BucketName::new(src_bucket),
                    prefix: "ferry-reports".into(),
                });
                let mut role_step = None;
                let batch_role = match m.backfill_role.as_ref().map(|r| (&r.name, &r.arn)) {
                    Some((_, Some(a))) => RoleRef::Arn(a.value.clone()),
                    other => {
                        let name = match other {
                            Some((Some(n), _)) => n.value.clone(),
                            _ => batch_role_name(m),
                        };
                        let r = self.step(
                            StepId::new(owner.clone(), "batch-role", "ensure"),
                            src_account,
                            Some("global"),
                            one(&name),
                            StepSpec::EnsureRole(RoleSpec {
                                migration: MigrationId::new(id),
                                name: name.clone(),
                                source_bucket: BucketName::new(src_bucket),
                                source_region: src_region.map(Region::new),
                                destination_bucket: BucketName::new(dst_bucket),
                                destination_account: AccountName::new(dst_account),
                                destination_region: dst_region.map(Region::new),
                                source_keys: Vec::new(),
                                key: key.clone(),
                                tags: ferry_tags(self.plan, id, &BTreeMap::new()),
                                purpose: RolePurpose::BatchReplication {
                                    report: report.clone(),
                                },
                            }),
                        );
                        role_step = Some(r);
                        RoleRef::Name(name)
                    }
                };
                let job = self.step(
                    StepId::new(owner.clone(), "backfill", "batch-job"),
                    src_account,
                    src_region,
                    one(src_bucket),
                    StepSpec::BatchReplication(BatchReplicationSpec {
                        migration: MigrationId::new(id),
                        source_bucket: BucketName::new(src_bucket),
                        destination_bucket: BucketName::new(dst_bucket),
                        destination_account: AccountName::new(dst_account),
                        prefix,
                        rule_id: rule_id.to_string(),
                        key,
                        role: batch_role,
                        report,
                        redrive_failed: m.redrive_failed.as_ref().is_some_and(|r| r.value),
                        sample: sample.unwrap_or_default(),
                    }),
                );
                self.b.depends(&job, ready);
                if let Some(r) = &role_step {
                    self.b.depends(&job, r);
                }
            }
        }
    }

    /// A statement or grant for one account on one key serves every migration that shares that
    /// key with that account: taking it back must wait for all their copies, not only its own.
    fn revokes_after_every_copy(&mut self) {
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
                for (k, revoke) in &r.revokes {
                    let shares_key = other.grants.iter().any(|(gk, _)| {
                        gk == k || *gk == SourceKey::Unresolved || *k == SourceKey::Unresolved
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
        let mut seen = HashSet::new();
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

/// Which backfill a migration gets: `backfill: true` is inline up to `inline_max` objects in
/// the source (as the resolve stage sampled it), else a batch job. Unresolved (offline), it is
/// shown as inline.
pub fn backfill_path(
    m: &S3Replication,
    inline_max: u64,
    sample: Option<&BucketSample>,
) -> BackfillMode {
    match m.backfill.as_ref().map(|b| b.value) {
        None | Some(BackfillMode::Off) => BackfillMode::Off,
        Some(BackfillMode::Auto) => match sample {
            Some(s) if s.objects > inline_max => BackfillMode::Batch,
            _ => BackfillMode::Inline,
        },
        Some(mode) => mode,
    }
}

/// Where a batch job's completion report goes: `backfill_report`, else under the S3 state.
pub fn batch_report(m: &S3Replication, plan: &Plan) -> Option<ReportLocation> {
    m.report_location(&plan.settings)
        .map(|(bucket, prefix)| ReportLocation {
            bucket: BucketName::new(bucket.as_str()),
            prefix,
        })
}

/// The Batch Operations role's name when the plan names none.
pub fn batch_role_name(m: &S3Replication) -> String {
    match &m.role.name {
        Some(n) => format!("{}-batch", n.value),
        None => format!("ferry-{}-batch", m.id.value),
    }
}

/// A key-access step's resource name and target: the key id once resolved, else "every
/// source key".
/// The resource name of the steps that stand for an RDS selector offline: not an RDS
/// identifier (those have no parentheses), so no snapshot's steps can take it.
const SELECTED: &str = "(selected)";

fn source_key_names(key: &SourceKey) -> (String, Target) {
    match key {
        SourceKey::Known(arn) => (arn.key_id().to_string(), Target::One(arn.to_string())),
        SourceKey::Unresolved => ("source-keys".to_string(), Target::SourceKeys),
    }
}

/// The migration's source resources known by id (not the ones a selector finds later).
fn known_sources(targets: &[Selected]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| !t.target.is_expanded_later())
        .map(|t| t.resource.clone())
        .collect()
}
