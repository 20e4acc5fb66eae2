//! Resolving RDS DB snapshot and Aurora cluster snapshot copies: which snapshots the selectors
//! mean, and what AWS would refuse once copies started (an `aws/rds` source shared with another
//! account, a missing option group, a missing destination key, the manual snapshot quota).

use std::collections::BTreeSet;

use super::{DbSource, ResolveError, Resolver};
use crate::ids::{DbKind, db_copy_identifier};
use crate::lookup::{self, DbQuery, DbSnapshotFacts};
use crate::plan::check::db_snapshot_name;
use crate::plan::{DbSnapshotCopy, Diagnostic, Span};

/// Manual snapshots per account and region when RDS does not say (CHAP_Limits: 100 DB and 100
/// cluster snapshots, adjustable).
const DEFAULT_MANUAL_SNAPSHOTS: i64 = 100;

/// The new manual snapshots the plan would make in one (account, region) of one kind.
#[derive(Default)]
pub(super) struct Planned {
    made: BTreeSet<String>,
    span: Option<Span>,
}

/// Engines whose snapshots need an option group of the destination region (Oracle and SQL
/// Server, for TDE and their options; aws-facts-next.md §1).
fn needs_option_group(engine: &str) -> bool {
    engine.starts_with("oracle") || engine.starts_with("sqlserver")
}

impl Resolver<'_> {
    pub(super) async fn db_snapshot_copy(
        &mut self,
        m: &DbSnapshotCopy,
        kind: DbKind,
    ) -> Result<(), ResolveError> {
        let account = m.source.account.value.as_str();
        let region = m.source.region.value.as_str();
        let dst_account = m
            .destination
            .account
            .as_ref()
            .unwrap_or(&m.source.account)
            .value
            .clone();
        let dst_region = m
            .destination
            .region
            .as_ref()
            .unwrap_or(&m.source.region)
            .value
            .clone();
        let plan = self.plan.name.value.clone();
        let noun = kind.noun();
        let mut chosen: Vec<(DbSnapshotFacts, Span)> = Vec::new();
        let push = |chosen: &mut Vec<(DbSnapshotFacts, Span)>, f: DbSnapshotFacts, span| {
            if !chosen.iter().any(|(c, _)| c.id == f.id) {
                chosen.push((f, span));
            }
        };

        for wanted in &m.source.snapshots {
            let name = db_snapshot_name(&wanted.value);
            let found = lookup::db_snapshots(
                self.aws,
                self.limits,
                account,
                region,
                kind,
                DbQuery::One(name),
            )
            .await?
            .into_iter()
            .next();
            match found {
                None => self.problems.push(
                    Diagnostic::new(format!("{noun} {name} does not exist in {account}/{region} (or is not visible to it)"))
                        .at(wanted.span)
                        .label("unknown snapshot"),
                ),
                Some(f) if !f.available() => self.problems.push(
                    Diagnostic::new(format!(
                        "{noun} {name} is {}, not available: only available snapshots can be copied",
                        f.status
                    ))
                    .at(wanted.span),
                ),
                Some(f) => push(&mut chosen, f, wanted.span),
            }
        }
        if let Some(tags) = m.source.tags.as_ref().filter(|t| !t.value.is_empty()) {
            let all = lookup::db_snapshots(
                self.aws,
                self.limits,
                account,
                region,
                kind,
                DbQuery::Manual,
            )
            .await?;
            let mut matched = all
                .into_iter()
                .filter(|s| s.available())
                .filter(|s| tags.value.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
                // A copy ferry made for this plan is never a source of it.
                .filter(|s| s.tags.get("ferry:plan") != Some(&plan))
                .collect::<Vec<_>>();
            matched.sort_by(|a, b| a.id.cmp(&b.id));
            for f in matched {
                push(&mut chosen, f, tags.span);
            }
        }
        for of in &m.source.latest_of {
            let all = lookup::db_snapshots(
                self.aws,
                self.limits,
                account,
                region,
                kind,
                DbQuery::Of(&of.value),
            )
            .await?;
            let newest = all
                .into_iter()
                .filter(|s| s.available() && s.tags.get("ferry:plan") != Some(&plan))
                .max_by_key(|s| (s.created_ms, s.id.clone()));
            match newest {
                Some(f) => push(&mut chosen, f, of.span),
                None => {
                    let whose = if kind == DbKind::Cluster {
                        "DB cluster"
                    } else {
                        "DB instance"
                    };
                    self.problems.push(
                        Diagnostic::new(format!(
                            "{whose} {} has no available snapshot in {account}/{region}",
                            of.value
                        ))
                        .at(of.span)
                        .label("nothing to copy"),
                    )
                }
            }
        }

        let cross = self.cross_account(account, &dst_account);
        let cross_region = region != dst_region;
        let mut used = Vec::new();
        for (f, span) in &chosen {
            let what = format!("{noun} {}", f.id);
            if f.encrypted && m.destination.key.is_none() {
                self.problems.push(
                    Diagnostic::new(format!("{what} is encrypted, and this migration names no `destination.key`"))
                        .at(*span)
                        .help("RDS re-encrypts a copy across regions or accounts under a key of the destination: set `destination.key`"),
                );
            }
            if !f.encrypted && kind == DbKind::Cluster && m.destination.key.is_some() {
                self.problems.push(
                    Diagnostic::new(format!("{what} is not encrypted: RDS cannot encrypt a copy of an unencrypted DB cluster snapshot"))
                        .at(*span)
                        .help("remove `destination.key` (the copy stays unencrypted), or restore the cluster encrypted and snapshot it"),
                );
            }
            if cross_region && needs_option_group(&f.engine) && m.destination.option_group.is_none()
            {
                self.problems.push(
                    Diagnostic::new(format!(
                        "{what} is {}, whose copies in another region need an option group of that region",
                        f.engine
                    ))
                    .at(*span)
                    .label("no `destination.option_group`")
                    .help(format!(
                        "create an option group for {} in {dst_region} (option groups are regional) and name it in `destination.option_group`",
                        f.engine
                    )),
                );
            }
            if cross {
                used.push((what, f.kms_key_id.clone().filter(|_| f.encrypted), *span));
            }
        }
        if cross {
            self.source_keys(&m.id.value, account, region, used, "aws/rds")
                .await?;
        }
        if let Some(key) = &m.destination.key {
            self.destination_key(key, &dst_account, &dst_region).await?;
        }

        // What the run would add to the manual snapshot quotas.
        for (f, span) in &chosen {
            let target = db_copy_identifier(&plan, &f.id, None, kind.max_identifier());
            self.plan_manual(&dst_account, &dst_region, kind, target, *span);
            if cross && f.automated() {
                let shared =
                    db_copy_identifier(&plan, &f.id, Some("shared"), kind.max_identifier());
                self.plan_manual(account, region, kind, shared, *span);
            }
        }
        self.out.inventory.db_snapshots.insert(
            m.id.value.clone(),
            chosen
                .iter()
                .map(|(f, _)| DbSource {
                    id: f.id.clone(),
                    automated: f.automated(),
                    size_gib: f.size_gib,
                    tags: f
                        .tags
                        .iter()
                        .filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with("ferry:"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                })
                .collect(),
        );
        Ok(())
    }

    fn plan_manual(&mut self, account: &str, region: &str, kind: DbKind, id: String, span: Span) {
        let p = self
            .db_quota
            .entry((account.to_string(), region.to_string(), kind))
            .or_default();
        p.made.insert(id);
        p.span.get_or_insert(span);
    }

    /// Refuses a plan whose copies would exceed a manual snapshot quota: RDS would refuse the
    /// copies past it, after the first ones were made.
    pub(super) async fn db_snapshot_quotas(&mut self) -> Result<(), ResolveError> {
        let planned = std::mem::take(&mut self.db_quota);
        for ((account, region, kind), p) in planned {
            let existing: BTreeSet<String> = lookup::db_snapshots(
                self.aws,
                self.limits,
                &account,
                &region,
                kind,
                DbQuery::Manual,
            )
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
            let (used, max) =
                match lookup::manual_snapshot_quota(self.aws, self.limits, &account, &region, kind)
                    .await
                {
                    Ok(Some(q)) => q,
                    // Not allowed to read the quota (or not reported): the default quota.
                    Ok(None) | Err(_) => (existing.len() as i64, DEFAULT_MANUAL_SNAPSHOTS),
                };
            let new = p.made.iter().filter(|id| !existing.contains(*id)).count() as i64;
            if used + new > max {
                let noun = kind.noun();
                self.problems.push(
                    Diagnostic::new(format!(
                        "the copies would make {new} new manual {noun}s in {account}/{region}, which has {used} of its quota of {max}"
                    ))
                    .at(p.span.unwrap_or_else(Span::start))
                    .label("over the manual snapshot quota")
                    .help("delete manual snapshots no longer needed, or raise the quota in Service Quotas (\"Amazon RDS\"), then plan again"),
                );
            }
        }
        Ok(())
    }
}
