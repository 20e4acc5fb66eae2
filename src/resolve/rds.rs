//! Resolving RDS DB snapshot and Aurora cluster snapshot copies: which snapshots the selectors
//! mean, and what AWS would refuse once copies started (an `aws/rds` source shared with another
//! account, a missing option group, a missing destination key, the manual snapshot quota).

use std::collections::BTreeMap;

use super::{DbSource, ResolveError, Resolver};
use crate::ids::{DbKind, db_copy_identifier};
use crate::lookup::{self, DbQuery, DbSnapshotFacts};
use crate::plan::check::db_snapshot_name;
use crate::plan::{DbSnapshotCopy, Diagnostic, Span};

/// Manual snapshots per account and region when RDS does not say (CHAP_Limits: 100 DB and 100
/// cluster snapshots, adjustable).
const DEFAULT_MANUAL_SNAPSHOTS: i64 = 100;

/// A manual snapshot the plan would make in one (account, region) of one kind.
pub(super) struct PlannedCopy {
    migration: String,
    /// The plan's source snapshot it stands for (`ferry:source`).
    origin: String,
    /// The destination key's ARN, when it exists (a copy under another key is drift).
    key: Option<String>,
    span: Span,
    /// A manual copy made to share an automated source: not made when this final copy
    /// (account, region, name) exists already.
    unless: Option<(String, String, String)>,
}

/// Per (account, region, kind): the copies the plan would make there, by name.
pub(super) type Planned = BTreeMap<String, PlannedCopy>;

/// Tags per RDS resource (RDS user guide, "Tagging Amazon RDS resources": up to 50).
const MAX_TAGS: usize = 50;

/// The tags ferry writes on a copy of its own (at most).
const FERRY_TAGS: usize = 6;

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

        let own_id = self
            .out
            .account_ids
            .get(account)
            .cloned()
            .unwrap_or_default();
        for wanted in &m.source.snapshots {
            let name = db_snapshot_name(&wanted.value);
            if let Some(arn) = crate::plan::check::parse_arn(&wanted.value)
                && arn.account != own_id
            {
                self.problems.push(
                    Diagnostic::new(format!(
                        "this snapshot is in account {}, but the source account `{account}` is {own_id}",
                        arn.account
                    ))
                    .at(wanted.span)
                    .help("name a snapshot of the source account (a snapshot another account shares is copied from that account)"),
                );
                continue;
            }
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
            let all = self.manual_snapshots(account, region, kind).await?;
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

        // The sources retention would not keep are not copied (a later apply would copy again
        // what it deleted).
        if let Some(ret) = &m.retention {
            // One judgment of the sources selected now and of those the migration's copies in
            // the destination came from (see the snapshot-copy resolve), with one clock.
            let mut sources: BTreeMap<String, (Option<String>, Option<i64>)> = chosen
                .iter()
                .map(|(f, _)| {
                    let of = Some(f.of.clone()).filter(|o| !o.is_empty());
                    (f.id.clone(), (of, f.created_ms))
                })
                .collect();
            let dst = self
                .manual_snapshots(&dst_account, &dst_region, kind)
                .await?;
            for s in dst {
                let tag = |k: &str| s.tags.get(k).cloned();
                if tag("ferry:plan").as_deref() != Some(plan.as_str())
                    || tag("ferry:migration").as_deref() != Some(m.id.value.as_str())
                    || tag("ferry:intermediate").is_some()
                {
                    continue;
                }
                if let Some(source) = tag("ferry:source") {
                    let time = tag("ferry:source-time").and_then(|t| t.parse().ok());
                    sources
                        .entry(source)
                        .or_insert((tag("ferry:lineage"), time));
                }
            }
            let beyond = self.judge_retention(&m.id.value, &ret.value, sources);
            chosen.retain(|(f, _)| !beyond.contains(&f.id));
        }
        let cross = self.cross_account(account, &dst_account);
        let cross_region = region != dst_region;
        let mut used = Vec::new();
        let reencrypt = super::reencrypt_with(&m.reencrypt_managed_sources, &m.intermediate_key);
        let mut reencrypted = Vec::new();
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
                let key = f.kms_key_id.clone().filter(|_| f.encrypted);
                // Under aws/rds with `reencrypt_managed_sources`: copied under the
                // intermediate key first, which is then the key the other account needs.
                if let (Some(_), Some(k)) = (reencrypt, &key)
                    && self
                        .describe_key(account, region, k)
                        .await?
                        .is_some_and(|k| !k.customer_managed)
                {
                    reencrypted.push(f.id.clone());
                    continue;
                }
                used.push((what, key, *span));
            }
        }
        if cross {
            self.source_keys(&m.id.value, account, region, used, "aws/rds")
                .await?;
        }
        if let (Some(key), false) = (reencrypt, reencrypted.is_empty()) {
            self.intermediate_key(&m.id.value, key, account, region)
                .await?;
            self.out
                .inventory
                .reencrypted
                .insert(m.id.value.clone(), reencrypted);
        }
        if let Some(og) = &m.destination.option_group {
            self.option_group(og, &dst_account, &dst_region, &chosen)
                .await?;
        }
        // RDS takes at most 50 tags on a resource: the source's, the plan's and ferry's.
        let ours: BTreeMap<&str, ()> = self
            .plan
            .settings
            .tags
            .value
            .keys()
            .chain(m.tags.value.keys())
            .map(|k| (k.as_str(), ()))
            .collect();
        let copy_tags = crate::plan::copies_tags(&m.copy_tags, true);
        for (f, span) in chosen.iter().filter(|_| copy_tags) {
            let source_only = f
                .tags
                .keys()
                .filter(|k| !k.starts_with("aws:") && !k.starts_with("ferry:"))
                .filter(|k| !ours.contains_key(k.as_str()))
                .count();
            // ferry:plan, ferry:migration, ferry:source, ferry:key, ferry:lineage,
            // ferry:source-time (or ferry:intermediate).
            let total = source_only + ours.len() + FERRY_TAGS;
            if total > MAX_TAGS {
                self.problems.push(
                    Diagnostic::new(format!(
                        "the copy of {} would carry {total} tags (its own {source_only}, the plan's {}, ferry's {FERRY_TAGS}): RDS takes at most {MAX_TAGS}",
                        f.id,
                        ours.len()
                    ))
                    .at(*span)
                    .help("remove tags from the source, `settings.tags` or the migration's `tags`"),
                );
            }
        }
        if let Some(key) = &m.destination.key {
            self.destination_key(key, &dst_account, &dst_region).await?;
        }

        // What the run would add to the manual snapshot quotas, and the names it would take.
        let key = m.destination.key.as_ref().and_then(|k| {
            let reference = self
                .plan
                .key_ref(&k.value)
                .map(|r| r.lookup().to_string())
                .unwrap_or_else(|| k.value.clone());
            self.out
                .key_arn(&dst_account, &dst_region, &reference)
                .map(|a| a.to_string())
        });
        for (f, span) in &chosen {
            let target = db_copy_identifier(&plan, &f.id, None, kind.max_identifier());
            if cross && f.automated() {
                let shared = db_copy_identifier(
                    &plan,
                    &format!("{}-{}", m.id.value, f.id),
                    Some("shared"),
                    kind.max_identifier(),
                );
                let copy = PlannedCopy {
                    migration: m.id.value.clone(),
                    origin: f.id.clone(),
                    key: None,
                    span: *span,
                    unless: Some((dst_account.clone(), dst_region.clone(), target.clone())),
                };
                self.plan_copy(account, region, kind, shared, copy);
            }
            let copy = PlannedCopy {
                migration: m.id.value.clone(),
                origin: f.id.clone(),
                key: key.clone(),
                span: *span,
                unless: None,
            };
            self.plan_copy(&dst_account, &dst_region, kind, target, copy);
        }
        self.out.inventory.db_snapshots.insert(
            m.id.value.clone(),
            chosen
                .iter()
                .map(|(f, _)| DbSource {
                    id: f.id.clone(),
                    automated: f.automated(),
                    size_gib: f.size_gib,
                    tags: if crate::plan::copies_tags(&m.copy_tags, true) {
                        super::copyable_tags(f.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    } else {
                        BTreeMap::new()
                    },
                    of: f.of.clone(),
                    created_ms: f.created_ms,
                })
                .collect(),
        );
        Ok(())
    }

    /// `destination.option_group` must exist in the destination, for the sources' engine.
    async fn option_group(
        &mut self,
        og: &crate::plan::Spanned<String>,
        account: &str,
        region: &str,
        chosen: &[(DbSnapshotFacts, Span)],
    ) -> Result<(), ResolveError> {
        self.limits
            .take(&[crate::quotas::bucket(
                account,
                region,
                "rds:DescribeOptionGroups",
            )])
            .await;
        let found = self
            .aws
            .rds(account, region)
            .describe_option_groups()
            .option_group_name(&og.value)
            .send()
            .await;
        let engine = match found {
            Ok(out) => out
                .option_groups_list()
                .first()
                .and_then(|g| g.engine_name())
                .map(str::to_string),
            Err(e) => {
                let e = crate::aws::AwsError::from_sdk("rds", "DescribeOptionGroups", e);
                if !e.is_not_found() && e.code != "OptionGroupNotFoundFault" {
                    return Err(e.into());
                }
                self.problems.push(
                    Diagnostic::new(format!(
                        "option group {} does not exist in {account}/{region}",
                        og.value
                    ))
                    .at(og.span)
                    .label("not found")
                    .help("option groups are regional: create it in the destination region (for the source's engine), then plan again"),
                );
                return Ok(());
            }
        };
        if let Some(engine) = engine {
            for (f, span) in chosen {
                if !f.engine.is_empty() && f.engine != engine {
                    self.problems.push(
                        Diagnostic::new(format!(
                            "option group {} is for {engine}, but {} is {}",
                            og.value, f.id, f.engine
                        ))
                        .at(*span)
                        .related(og.span, "the option group"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The manual snapshots of an account and region, listed once per resolve (the tag
    /// selector, retention and the quota check all read them; nothing changes meanwhile).
    async fn manual_snapshots(
        &mut self,
        account: &str,
        region: &str,
        kind: DbKind,
    ) -> Result<Vec<DbSnapshotFacts>, ResolveError> {
        let slot = (account.to_string(), region.to_string(), kind);
        if let Some(found) = self.db_manual.get(&slot) {
            return Ok(found.clone());
        }
        let found = lookup::db_snapshots(
            self.aws,
            self.limits,
            account,
            region,
            kind,
            DbQuery::Manual,
        )
        .await?;
        self.db_manual.insert(slot, found.clone());
        Ok(found)
    }

    /// Records a copy the plan would make; two under one name are refused (the name is the
    /// copy's identity: the second would be taken for the first).
    fn plan_copy(
        &mut self,
        account: &str,
        region: &str,
        kind: DbKind,
        id: String,
        copy: PlannedCopy,
    ) {
        let p = self
            .db_quota
            .entry((account.to_string(), region.to_string(), kind))
            .or_default();
        if let Some(first) = p.get(&id) {
            let d = Diagnostic::new(format!(
                "{} and {} would both be copied to {id} in {account}/{region}",
                first.origin, copy.origin
            ))
            .at(copy.span)
            .related(first.span, "the other source")
            .help("ferry names each copy after its plan and source: copy these in two plans");
            self.problems.push(d);
            return;
        }
        p.insert(id, copy);
    }

    /// Before any change: a name ferry would copy to that holds someone else's snapshot, one
    /// of ferry's copies under another key than the plan's, and copies that would exceed a
    /// manual snapshot quota (RDS would refuse the copies past it, after the first were made).
    pub(super) async fn db_snapshot_quotas(&mut self) -> Result<(), ResolveError> {
        let planned = std::mem::take(&mut self.db_quota);
        let mut listed: BTreeMap<(String, String, DbKind), BTreeMap<String, DbSnapshotFacts>> =
            BTreeMap::new();
        for (account, region, kind) in planned.keys() {
            let found = self
                .manual_snapshots(account, region, *kind)
                .await?
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect();
            listed.insert((account.clone(), region.clone(), *kind), found);
        }
        let plan = self.plan.name.value.clone();
        for ((account, region, kind), copies) in &planned {
            let existing = &listed[&(account.clone(), region.clone(), *kind)];
            let noun = kind.noun();
            let mut new = 0i64;
            let mut span = None;
            for (id, c) in copies {
                let final_exists = c.unless.as_ref().is_some_and(|(a, r, f)| {
                    listed
                        .get(&(a.clone(), r.clone(), *kind))
                        .is_some_and(|l| l.contains_key(f))
                });
                let Some(s) = existing.get(id) else {
                    if !final_exists {
                        new += 1;
                        span.get_or_insert(c.span);
                    }
                    continue;
                };
                let tag = |k: &str| s.tags.get(k).map(String::as_str);
                if tag("ferry:plan") != Some(plan.as_str())
                    || tag("ferry:migration") != Some(c.migration.as_str())
                    || tag("ferry:source") != Some(c.origin.as_str())
                {
                    self.problems.push(
                        Diagnostic::new(format!(
                            "a {noun} named {id} exists in {account}/{region} that ferry did not make for migration `{}` (from {}): ferry never adopts it",
                            c.migration, c.origin
                        ))
                        .at(c.span)
                        .label("its copy's name is taken")
                        .help("rename or delete that snapshot, then plan again"),
                    );
                } else if let (Some(want), Some(under)) = (&c.key, &s.kms_key_id)
                    && want != under
                {
                    self.problems.push(
                        Diagnostic::new(format!(
                            "ferry's copy {id} in {account}/{region} is under {under}, but the plan's key is {want}: RDS names are unique, so ferry cannot make a second copy beside it"
                        ))
                        .at(c.span)
                        .label("copied under another key")
                        .help("delete or rename that copy (ferry never deletes a finished copy), then apply again"),
                    );
                }
            }
            if new == 0 {
                continue;
            }
            let (used, max) =
                match lookup::manual_snapshot_quota(self.aws, self.limits, account, region, *kind)
                    .await
                {
                    Ok(Some(q)) => q,
                    // Not allowed to read the quota (or not reported): the default quota.
                    Ok(None) | Err(_) => (existing.len() as i64, DEFAULT_MANUAL_SNAPSHOTS),
                };
            if used + new > max {
                self.problems.push(
                    Diagnostic::new(format!(
                        "the copies would make {new} new manual {noun}s in {account}/{region}, which has {used} of its quota of {max}"
                    ))
                    .at(span.unwrap_or_else(Span::start))
                    .label("over the manual snapshot quota")
                    .help("delete manual snapshots no longer needed, or raise the quota in Service Quotas (\"Amazon RDS\"), then plan again"),
                );
            }
        }
        Ok(())
    }
}
