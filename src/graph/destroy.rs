//! `ferry destroy`: the graph that takes back what a plan's graph makes, derived from it. Each
//! step that makes or adds something has an inverse; the inverses run in the reverse order of
//! the steps they undo (a copy is deleted before the key it is under is scheduled for
//! deletion; a replication rule is removed before its role). Pure, like the compiler.

use std::collections::{BTreeMap, HashMap};

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::step::*;
use super::{CompileError, GraphBuilder, PlanGraph};
use crate::ids::{BucketName, StepId};

/// What `ferry destroy` may touch beyond ferry's copies, shares, statements, rules and roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestroyOptions {
    /// Schedule the plan's created keys (and replicas) for deletion.
    pub include_keys: bool,
    /// Delete copies whose source no longer exists (they may be the only copy left).
    pub include_orphans: bool,
}

/// The destroy graph of `forward` (a graph compiled from the same plan and resolution).
pub fn destroy(forward: &PlanGraph, opts: DestroyOptions) -> Result<PlanGraph, CompileError> {
    // Each key's replica buckets, for what the key still encrypts.
    let mut buckets: BTreeMap<String, Vec<BucketName>> = BTreeMap::new();
    for s in forward.in_order() {
        if let StepSpec::CreateBucket(b) = &s.spec {
            buckets
                .entry(b.key.shown.clone())
                .or_default()
                .push(b.bucket.clone());
        }
    }
    let mut b = GraphBuilder::new();
    // The inverse of each forward node (several copy steps share one inverse).
    let mut inverse: HashMap<NodeIndex, StepId> = HashMap::new();
    let g = forward.petgraph();
    for s in forward.in_order() {
        let Some(step) = inverse_of(s, forward, &buckets, opts) else {
            continue;
        };
        let id = step.id.clone();
        if !b.contains(&id) {
            b.add(step);
        }
        inverse.insert(forward.index[&s.id], id);
    }
    // inv(a) waits for the inverses nearest below a: for each dependent of a, its inverse,
    // or (if it has none) the inverses nearest below it.
    let mut below: HashMap<NodeIndex, Vec<StepId>> = HashMap::new();
    for n in forward.order.iter().rev() {
        let mut under: Vec<StepId> = Vec::new();
        for m in g.neighbors_directed(*n, Direction::Outgoing) {
            match inverse.get(&m) {
                Some(id) => under.push(id.clone()),
                None => under.extend(below[&m].iter().cloned()),
            }
        }
        under.sort();
        under.dedup();
        if let Some(id) = inverse.get(n) {
            for u in &under {
                if u != id {
                    b.depends(id, u);
                }
            }
        }
        below.insert(*n, under);
    }
    b.seal()
}

/// A key as a step of the destroy graph uses it: the ARN resolved when the key existed, else
/// looked up by its alias (its create step is not in this graph).
fn looked_up(key: &DestinationKey) -> DestinationKey {
    match &key.key {
        DestKey::MadeBy(_) => DestinationKey {
            shown: key.shown.clone(),
            key: DestKey::Unresolved(key.shown.clone()),
        },
        _ => key.clone(),
    }
}

fn inverse_of(
    s: &PlannedStep,
    forward: &PlanGraph,
    buckets: &BTreeMap<String, Vec<BucketName>>,
    opts: DestroyOptions,
) -> Option<PlannedStep> {
    let at = |id: StepId, spec: StepSpec| PlannedStep {
        id,
        scope: s.scope.clone(),
        target: s.target.clone(),
        spec,
    };
    let copies = |what: Copied,
                  migration: &crate::ids::MigrationId,
                  account: &crate::ids::AccountName,
                  region: &crate::ids::Region| {
        let region_here = s.scope.region.as_ref().map(|r| r.as_str()).unwrap_or("");
        PlannedStep {
            id: StepId::new(
                crate::ids::Owner::Migration(migration.clone()),
                format!("copies.{}.{region_here}", s.scope.account),
                "delete",
            ),
            scope: s.scope.clone(),
            target: Target::One(format!("the copies of migration {migration}")),
            spec: StepSpec::DeleteCopies(DeleteCopiesSpec {
                what,
                migration: migration.clone(),
                source_account: account.clone(),
                source_region: region.clone(),
                include_orphans: opts.include_orphans,
            }),
        }
    };
    Some(match &s.spec {
        StepSpec::CreateKey(k) if opts.include_keys => at(
            s.id.with_action("schedule-deletion"),
            StepSpec::ScheduleKeyDeletion(KeyDeletionSpec {
                name: k.name.clone(),
                alias: k.alias.clone(),
                tags_region: s.scope.region.clone()?,
                buckets: buckets.get(&k.alias).cloned().unwrap_or_default(),
            }),
        ),
        StepSpec::ReplicateKey(r) if opts.include_keys => {
            let crate::ids::Owner::Key(name) = &s.id.owner else {
                return None;
            };
            at(
                s.id.with_action("schedule-deletion"),
                StepSpec::ScheduleKeyDeletion(KeyDeletionSpec {
                    name: name.clone(),
                    alias: r.key.clone(),
                    tags_region: r.primary_region.clone(),
                    buckets: buckets.get(&r.key).cloned().unwrap_or_default(),
                }),
            )
        }
        StepSpec::MergeKeyPolicy(p) => at(
            s.id.with_action("remove"),
            StepSpec::RemoveKeyPolicyStatements(KeyPolicySpec {
                key: looked_up(&p.key),
                statements: p.statements.clone(),
            }),
        ),
        StepSpec::GrantKeyAccess(a) => at(
            s.id.with_action("revoke-access"),
            StepSpec::RevokeKeyAccess(KeyAccessSpec {
                undoes: Some(s.id.clone()),
                ..a.clone()
            }),
        ),
        StepSpec::ShareSnapshot(sh) => at(
            s.id.with_action("unshare"),
            StepSpec::UnshareSnapshot(ShareSpec {
                undoes: Some(s.id.clone()),
                ..sh.clone()
            }),
        ),
        StepSpec::ShareImage(sh) => at(
            s.id.with_action("unshare"),
            StepSpec::UnshareImage(ShareSpec {
                undoes: Some(s.id.clone()),
                ..sh.clone()
            }),
        ),
        StepSpec::ShareDbSnapshot(sh) => at(
            s.id.with_action("unshare"),
            StepSpec::UnshareDbSnapshot(DbShareSpec {
                undoes: Some(s.id.clone()),
                ..sh.clone()
            }),
        ),
        StepSpec::CopySnapshot(c) => copies(
            Copied::Snapshots,
            &c.migration,
            &c.source_account,
            &c.source_region,
        ),
        StepSpec::CopyImage(c) => copies(
            Copied::Images,
            &c.migration,
            &c.source_account,
            &c.source_region,
        ),
        StepSpec::CopyDbSnapshot(c) => copies(
            Copied::DbSnapshots(c.kind),
            &c.migration,
            &c.source.account,
            &c.source.region,
        ),
        StepSpec::CreateBucket(c) => at(
            s.id.with_action("delete"),
            StepSpec::DeleteBucket(c.clone()),
        ),
        StepSpec::AllowReplicationRole(p) => at(
            s.id.with_action("remove-policy"),
            StepSpec::RemoveBucketPolicy(p.clone()),
        ),
        StepSpec::PutReplication(r) => at(
            s.id.with_action("remove-rule"),
            StepSpec::RemoveReplication(ReplicationSpec {
                key: looked_up(&r.key),
                ..r.clone()
            }),
        ),
        StepSpec::EnsureRole(r) => at(
            s.id.with_action("delete"),
            StepSpec::DeleteRole(RoleDeletionSpec {
                role: r.clone(),
                ferrys_rules: forward
                    .in_order()
                    .filter_map(|s| match &s.spec {
                        StepSpec::PutReplication(p) => Some(p.rule.id.clone()),
                        _ => None,
                    })
                    .collect(),
            }),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::compile;

    fn demo() -> PlanGraph {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/demo.yaml"))
            .expect("the demo plan");
        let plan = crate::plan::from_text("demo.yaml", &text).expect("a valid plan");
        compile(&plan).expect("compiles")
    }

    fn position(g: &PlanGraph, kind: StepKind) -> Vec<usize> {
        g.in_order()
            .enumerate()
            .filter(|(_, s)| s.kind() == kind)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn undoes_in_reverse_dependency_order() {
        let g = destroy(
            &demo(),
            DestroyOptions {
                include_keys: true,
                include_orphans: false,
            },
        )
        .expect("acyclic");
        // The demo's three keys and the two replicas of its multi-Region key.
        assert_eq!(position(&g, StepKind::ScheduleKeyDeletion).len(), 5);
        let ids: Vec<String> = g.in_order().map(|s| s.id.to_string()).collect();
        let at = |id: &str| {
            ids.iter()
                .position(|x| x == id)
                .unwrap_or_else(|| panic!("{id} in {ids:?}"))
        };
        let dr = at("key.demo-dr/key/schedule-deletion");
        let backup = at("key.demo-backup/key/schedule-deletion");
        // A copy is deleted before the key it is under is scheduled for deletion...
        assert!(at("nightly-snapshots/copies.prod.eu-west-2/delete") < dr);
        assert!(at("orders-db-dr/copies.prod.eu-west-2/delete") < dr);
        assert!(at("app-ami/copies.backup.us-east-1/delete") < backup);
        assert!(at("orders-db-vault/copies.backup.us-east-1/delete") < backup);
        // ...the rule before its role, the bucket it replicates to and the replica key...
        let rule = at("app-logs/replication/remove-rule");
        assert!(rule < at("app-logs/role/delete"));
        assert!(rule < at("app-logs/destination-bucket/delete"));
        assert!(rule < dr);
        // ...and a replica before its primary.
        assert!(
            at("key.demo-mrk/replica-eu-west-2/schedule-deletion")
                < at("key.demo-mrk/key/schedule-deletion")
        );
    }

    #[test]
    fn keys_are_kept_without_include_keys() {
        let g = destroy(&demo(), DestroyOptions::default()).expect("acyclic");
        assert!(position(&g, StepKind::ScheduleKeyDeletion).is_empty());
        assert!(!position(&g, StepKind::DeleteSnapshotCopies).is_empty());
    }
}
