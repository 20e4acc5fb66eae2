//! Semantic checks of a decoded plan: names, ids, regions, references, cycles and the refusals
//! of plan-format.md that need no AWS call. Every problem is collected, none stops the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::de::{Spanned, one_of, suggest};
use super::diagnostic::{Diagnostic, Span};
use super::key_ref::KeyRef;
use super::load::Broken;
use super::model::*;
use super::regions;

pub fn check(plan: &Plan, broken: &Broken) -> Vec<Diagnostic> {
    let mut c = Checker {
        plan,
        broken,
        diags: Vec::new(),
        allow_unknown_regions: plan
            .settings
            .allow_unknown_regions
            .as_ref()
            .is_some_and(|b| b.value),
    };
    c.version_and_name();
    c.accounts();
    c.keys();
    c.migrations();
    c.settings();
    c.diags.sort_by_key(|d| (d.span.offset, d.message.clone()));
    c.diags
}

/// `[a-z0-9][a-z0-9-]{0,62}`: the shape of account, key and migration names.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit())
}

fn is_hex_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        (rest.len() == 8 || rest.len() == 17) && rest.bytes().all(|c| c.is_ascii_hexdigit())
    })
}

/// An RDS snapshot identifier as AWS accepts it: letters, digits and hyphens, starting with a
/// letter, no `--` and no trailing hyphen (automated snapshots add an `rds:` prefix).
pub fn is_db_snapshot_name(s: &str) -> bool {
    let s = s.strip_prefix("rds:").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 255
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// The identifier of an RDS snapshot given by identifier or ARN.
pub fn db_snapshot_name(given: &str) -> &str {
    if given.starts_with("arn:") {
        // arn:aws:rds:REGION:ACCOUNT:snapshot:NAME (NAME may itself hold `rds:`)
        return given.splitn(7, ':').nth(6).unwrap_or(given);
    }
    given
}

/// An ARN split into its parts: `arn:partition:service:region:account:resource`.
pub struct Arn<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

pub fn parse_arn(s: &str) -> Option<Arn<'_>> {
    let mut parts = s.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let partition = parts.next()?;
    if !partition.starts_with("aws") {
        return None;
    }
    let arn = Arn {
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    };
    (!arn.service.is_empty() && !arn.resource.is_empty()).then_some(arn)
}

/// S3 bucket naming rules (general purpose buckets).
fn is_bucket_name(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !s.contains("..")
        && !s.split('.').all(|p| p.parse::<u8>().is_ok())
}

fn is_role_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+=,.@_-".contains(&c))
}

struct Checker<'p> {
    plan: &'p Plan,
    broken: &'p Broken,
    diags: Vec<Diagnostic>,
    allow_unknown_regions: bool,
}

impl<'p> Checker<'p> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn err(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::new(message).at(span));
        self.diags.last_mut().expect("just pushed")
    }

    fn name(&mut self, name: &Spanned<String>, what: &str) {
        if !is_name(&name.value) {
            self.err(name.span, format!("`{}` is not a valid {what} name", name.value))
                .help = Some(
                "names are 1-63 lowercase letters, digits and hyphens, starting with a letter or digit"
                    .into(),
            );
        }
    }

    fn region(&mut self, region: &Spanned<String>) {
        if regions::is_known(&region.value) {
            return;
        }
        let d = Diagnostic::new(format!("unknown region `{}`", region.value))
            .at(region.span)
            .label("unknown region");
        let d = match suggest(&region.value, regions::KNOWN.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d,
        };
        if self.allow_unknown_regions {
            return;
        }
        let d = if d.help.is_none() {
            d.help("set `settings.allow_unknown_regions: true` to use a region ferry does not know yet")
        } else {
            d
        };
        self.push(d);
    }

    fn account(&self, name: &str) -> Option<&'p Account> {
        self.plan
            .accounts
            .iter()
            .find(|a| a.name.value == name)
            .map(|a| &a.value)
    }

    fn key(&self, name: &str) -> Option<&'p Named<Key>> {
        self.plan.keys.iter().find(|k| k.name.value == name)
    }

    /// Checks that `name` is one of `accounts:`; returns whether it is (or is a broken one).
    fn account_ref(&mut self, name: &Spanned<String>) -> bool {
        if self.account(&name.value).is_some() {
            return true;
        }
        if self.broken.accounts.contains(&name.value) {
            return false;
        }
        let known: Vec<&str> = self
            .plan
            .accounts
            .iter()
            .map(|a| a.name.value.as_str())
            .chain(self.broken.accounts.iter().map(String::as_str))
            .collect();
        let d = Diagnostic::new(format!("unknown account `{}`", name.value))
            .at(name.span)
            .label("not defined in `accounts:`");
        let d = match suggest(&name.value, known.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None if known.is_empty() => d.help("define it under `accounts:`"),
            None => d.help(format!("the accounts of this plan are {}", one_of(&known))),
        };
        self.push(d);
        false
    }

    fn account_id(&self, name: &str) -> Option<&'p str> {
        self.account(name)
            .and_then(|a| a.id.as_ref())
            .map(|id| id.value.as_str())
    }

    fn tags(&mut self, tags: &Spanned<BTreeMap<String, String>>, whose: &str) {
        for (k, v) in &tags.value {
            if k.starts_with("ferry:") || k.starts_with("aws:") {
                self.err(tags.span, format!("tag key `{k}` is reserved"))
                    .help = Some(format!(
                    "`ferry:` tags are set by ferry itself and `aws:` tags by AWS; rename the tag in {whose}"
                ));
            }
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                self.err(
                    tags.span,
                    format!("tag `{k}` is invalid: keys are 1-128 characters, values at most 256"),
                );
            }
        }
    }

    fn version_and_name(&mut self) {
        let v = &self.plan.version;
        if v.value != 1 {
            self.err(v.span, format!("unsupported plan version {}", v.value))
                .help = Some("this ferry reads `version: 1` plans".into());
        }
        let name = self.plan.name.clone();
        self.name(&name, "plan");
    }

    fn accounts(&mut self) {
        if self.plan.accounts.is_empty() && self.broken.accounts.is_empty() {
            self.err(Span::start(), "`accounts` must define at least one account");
        }
        for entry in &self.plan.accounts {
            self.name(&entry.name, "account");
            let a = &entry.value;
            if let Some(id) = &a.id
                && !is_account_id(&id.value)
            {
                self.err(id.span, format!("`{}` is not an AWS account id", id.value))
                    .help = Some("account ids are exactly 12 digits, written in quotes".into());
            }
            if let Some(ext) = &a.external_id
                && a.role_arn.is_none()
            {
                // The value itself is never shown: it is a shared secret.
                self.err(ext.span, "`external_id` is only used with `role_arn`")
                    .help = Some("add the `role_arn` to assume, or remove `external_id`".into());
            }
            if let Some(s) = &a.session_name
                && a.role_arn.is_none()
            {
                self.err(s.span, "`session_name` is only used with `role_arn`");
            }
            if let Some(role) = &a.role_arn {
                match parse_arn(&role.value) {
                    Some(arn) if arn.service == "iam" && arn.resource.starts_with("role/") => {
                        if let Some(id) = &a.id
                            && is_account_id(&id.value)
                            && arn.account != id.value
                        {
                            self.err(
                                role.span,
                                format!(
                                    "`role_arn` is in account {} but `id` says {}",
                                    arn.account, id.value
                                ),
                            );
                        }
                    }
                    _ => {
                        self.err(
                            role.span,
                            format!("`{}` is not an IAM role ARN", role.value),
                        )
                        .help = Some("expected arn:aws:iam::123456789012:role/NAME".into());
                    }
                }
            }
        }
        // Two plan accounts naming the same AWS account would make "cross-account" ambiguous.
        let mut ids: HashMap<&str, &Spanned<String>> = HashMap::new();
        for entry in &self.plan.accounts {
            if let Some(id) = &entry.value.id {
                if let Some(first) = ids.get(id.value.as_str()) {
                    let d = Diagnostic::new(format!(
                        "accounts `{}` and `{}` have the same id {}",
                        first.value, entry.name.value, id.value
                    ))
                    .at(id.span)
                    .related(first.span, "first used here")
                    .help("use one account name per AWS account");
                    self.push(d);
                } else {
                    ids.insert(id.value.as_str(), &entry.name);
                }
            }
        }
    }

    fn keys(&mut self) {
        for entry in &self.plan.keys {
            self.name(&entry.name, "key");
            let k = &entry.value;
            self.account_ref(&k.account);
            self.region(&k.region);
            match (&k.alias, &k.arn) {
                (None, None) => {
                    self.err(entry.name.span, format!("key `{}` needs `alias` or `arn`", entry.name.value))
                        .help = Some("`alias: alias/NAME` finds (or, with `create: true`, creates) the key; `arn:` names an existing key".into());
                }
                (Some(alias), Some(_)) => {
                    self.err(alias.span, "give either `alias` or `arn`, not both");
                }
                (Some(alias), None) => {
                    if !alias.value.starts_with("alias/") || alias.value.len() <= 6 {
                        self.err(alias.span, format!("`{}` is not a KMS alias", alias.value))
                            .help = Some("aliases start with `alias/`, e.g. alias/dr-ebs".into());
                    } else if alias.value.starts_with("alias/aws/") && (k.creates() || k.rotates())
                    {
                        self.err(
                                alias.span,
                                format!(
                                    "`{}` is an AWS managed key: ferry cannot create or rotate it",
                                    alias.value
                                ),
                            )
                            .help = Some("the `alias/aws/` prefix is reserved for AWS; choose another alias for a customer managed key".into());
                    }
                }
                (None, Some(arn)) => {
                    if let Some(create) = &k.create
                        && create.value
                    {
                        self.err(
                            create.span,
                            "`create: true` needs `alias`: a key given by `arn` is never created",
                        )
                        .help =
                            Some("replace `arn` with the `alias` the new key should get".into());
                    }
                    self.key_arn(arn, &k.account.value, &k.region.value);
                }
            }
            if let Some(replicas) = &k.replicas {
                if !k.is_multi_region() {
                    self.err(replicas.span, "`replicas` needs `multi_region: true`")
                        .help = Some("only multi-Region keys have replicas; add `multi_region: true` (with `create: true`)".into());
                }
                let mut seen = BTreeSet::new();
                for r in &replicas.value {
                    self.region(r);
                    if r.value == k.region.value {
                        self.err(
                            r.span,
                            format!("replica region `{}` is the key's own region", r.value),
                        )
                        .help =
                            Some("a replica must be in another region than its primary key".into());
                    } else if !seen.insert(r.value.clone()) {
                        self.err(
                            r.span,
                            format!("replica region `{}` is listed twice", r.value),
                        );
                    }
                }
            }
            if let Some(mr) = &k.multi_region
                && mr.value
                && !k.creates()
                && k.arn.is_none()
                && k.alias.is_some()
            {
                // Allowed: an existing multi-Region key found by alias. Nothing to check offline.
            }
            if let Some(statements) = &k.policy_statements {
                let mut sids: HashMap<String, Span> = HashMap::new();
                for st in statements {
                    let sid = st.value.get("Sid").and_then(|s| s.as_str());
                    match sid {
                        None => {
                            self.err(st.span, "every policy statement needs a `Sid`")
                                .help =
                                Some("ferry merges statements into the key policy by Sid".into());
                        }
                        Some(sid) if sid.starts_with("ferry-") => {
                            self.err(
                                st.span,
                                format!("Sid `{sid}` is reserved for statements ferry writes"),
                            );
                        }
                        Some(sid) => {
                            if let Some(first) = sids.get(sid) {
                                let d = Diagnostic::new(format!("Sid `{sid}` is used twice"))
                                    .at(st.span)
                                    .related(*first, "first used here");
                                self.push(d);
                            } else {
                                sids.insert(sid.to_string(), st.span);
                            }
                        }
                    }
                    if !st.value.is_object() {
                        self.err(st.span, "a policy statement is a mapping (Sid, Effect, Principal, Action, Resource)");
                    }
                }
            }
        }
    }

    /// An existing key's ARN must be a KMS ARN in the key's declared region and account.
    fn key_arn(&mut self, arn: &Spanned<String>, account: &str, region: &str) {
        match parse_arn(&arn.value) {
            Some(a)
                if a.service == "kms"
                    && (a.resource.starts_with("key/") || a.resource.starts_with("alias/")) =>
            {
                if a.region != region {
                    self.err(
                        arn.span,
                        format!(
                            "this key ARN is in region `{}` but the key is declared in `{region}`",
                            a.region
                        ),
                    );
                }
                if let Some(id) = self.account_id(account)
                    && a.account != id
                {
                    self.err(
                        arn.span,
                        format!(
                            "this key ARN is in account {} but account `{account}` is {id}",
                            a.account
                        ),
                    );
                }
            }
            _ => {
                self.err(arn.span, format!("`{}` is not a KMS key ARN", arn.value))
                    .help = Some("expected arn:aws:kms:REGION:ACCOUNT:key/KEY-ID".into());
            }
        }
    }

    /// A migration's `destination.key`: a plan key in the destination account and region, or a
    /// literal alias / key id / ARN that can be valid there.
    fn destination_key(&mut self, key: &Spanned<String>, account: &str, region: &str) {
        self.key_at(key, account, region, "destination");
    }

    /// A key that must be in `account`/`region`: the migration's `place` (`destination`, or
    /// `source` for an intermediate key).
    fn key_at(&mut self, key: &Spanned<String>, account: &str, region: &str, place: &str) {
        let value = key.value.as_str();
        if let Some(named) = self.key(value) {
            let k = &named.value;
            let replica_here = k
                .replicas
                .as_ref()
                .is_some_and(|r| r.value.iter().any(|r| r.value == region));
            if k.account.value != account || (k.region.value != region && !replica_here) {
                let d = Diagnostic::new(format!(
                    "key `{value}` is in {}/{}, but this migration's {place} is {account}/{region}",
                    k.account.value, k.region.value
                ))
                .at(key.span)
                .label("wrong account or region")
                .related(named.name.span, "key defined here")
                .help(format!("KMS keys are regional: use a key in the {place} account and region (or a multi-Region replica there)"));
                self.push(d);
            }
            return;
        }
        if self.broken.keys.contains(value) {
            return;
        }
        match self.plan.key_ref(value) {
            Some(KeyRef::Plan { .. } | KeyRef::Alias(_) | KeyRef::Id(_)) => return,
            Some(KeyRef::Arn(_)) => {
                if let Some(a) = parse_arn(value)
                    && a.service == "kms"
                {
                    if a.region != region {
                        self.err(
                            key.span,
                            format!(
                                "this key is in region `{}` but the {place} region is `{region}`",
                                a.region
                            ),
                        )
                        .help = Some(format!(
                            "KMS keys are regional: use a key in the {place} region"
                        ));
                    }
                    if let Some(id) = self.account_id(account)
                        && a.account != id
                    {
                        self.err(key.span, format!("this key is in account {} but the {place} account `{account}` is {id}", a.account))
                                    .help = Some(format!("copies are encrypted with a key of the {place} account"));
                    }
                    return;
                }
                self.err(key.span, format!("`{value}` is not a KMS key ARN"));
                return;
            }
            None => {}
        }
        let known: Vec<&str> = self
            .plan
            .keys
            .iter()
            .map(|k| k.name.value.as_str())
            .collect();
        let d = Diagnostic::new(format!("unknown key `{value}`"))
            .at(key.span)
            .label("not in `keys:` and not an alias or ARN");
        self.push(match suggest(value, known.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("use a name from `keys:`, an `alias/...`, or a key ARN"),
        });
    }

    fn cross_account_options(
        &mut self,
        cross_account: bool,
        key_access: &Option<Spanned<KeyAccess>>,
        revoke_after: &Option<Spanned<bool>>,
    ) {
        if cross_account {
            return;
        }
        if let Some(ka) = key_access {
            self.err(
                ka.span,
                "`key_access` applies only when the destination account differs from the source",
            )
            .help = Some("remove it, or set `destination.account` to another account".into());
        }
        if let Some(r) = revoke_after {
            self.err(
                r.span,
                "`revoke_after` applies only when the destination account differs from the source",
            )
            .help = Some("remove it, or set `destination.account` to another account".into());
        }
    }

    fn ids<'a>(&mut self, ids: &'a [Spanned<String>], prefix: &str, what: &str) {
        let mut seen: HashMap<&'a str, Span> = HashMap::new();
        for id in ids {
            if !is_hex_id(&id.value, prefix) {
                self.err(id.span, format!("`{}` is not {what} id", id.value))
                    .help = Some(format!("{what} ids look like {prefix}0123456789abcdef0"));
            } else if let Some(first) = seen.get(id.value.as_str()) {
                let d = Diagnostic::new(format!("`{}` is listed twice", id.value))
                    .at(id.span)
                    .related(*first, "first listed here");
                self.push(d);
            } else {
                seen.insert(&id.value, id.span);
            }
        }
    }

    fn migrations(&mut self) {
        let plan = self.plan;
        if plan.migrations.is_empty() && self.broken.migrations.is_empty() {
            self.err(
                Span::start(),
                "`migrations` must list at least one migration",
            );
        }
        let mut ids: HashMap<&str, Span> = HashMap::new();
        for m in &plan.migrations {
            let id = m.id();
            self.name(id, "migration");
            if let Some(first) = ids.get(id.value.as_str()) {
                let d = Diagnostic::new(format!("migration id `{}` is used twice", id.value))
                    .at(id.span)
                    .related(*first, "first used here");
                self.push(d);
            } else {
                ids.insert(&id.value, id.span);
            }
        }
        for m in &plan.migrations {
            for dep in m.depends_on() {
                if dep.value == m.id().value {
                    self.err(
                        dep.span,
                        format!("migration `{}` depends on itself", dep.value),
                    );
                } else if !ids.contains_key(dep.value.as_str())
                    && !self.broken.migrations.contains(&dep.value)
                {
                    let known: Vec<&str> = ids.keys().copied().collect();
                    let d = Diagnostic::new(format!("unknown migration `{}`", dep.value))
                        .at(dep.span)
                        .label("no migration has this id");
                    self.push(match suggest(&dep.value, known.iter().copied()) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d,
                    });
                }
            }
            match m {
                Migration::SnapshotCopy(s) => self.snapshot_copy(s),
                Migration::AmiCopy(a) => self.ami_copy(a),
                Migration::S3Replication(r) => self.s3_replication(r),
                Migration::DbSnapshotCopy(d) => self.db_snapshot_copy(d, false),
                Migration::DbClusterSnapshotCopy(d) => self.db_snapshot_copy(d, true),
            }
        }
        self.cycles();
    }

    /// Resolve a destination's account and region against the source's; checks both exist.
    fn destination(
        &mut self,
        src_account: &'p Spanned<String>,
        src_region: &'p Spanned<String>,
        account: &'p Option<Spanned<String>>,
        region: &'p Option<Spanned<String>>,
    ) -> (&'p Spanned<String>, &'p Spanned<String>) {
        let dst_account = account.as_ref().unwrap_or(src_account);
        let dst_region = region.as_ref().unwrap_or(src_region);
        if let Some(a) = account {
            self.account_ref(a);
        }
        if let Some(r) = region {
            self.region(r);
        }
        (dst_account, dst_region)
    }

    fn same_place(&mut self, same_account: bool, same_region: bool, where_: Span, what: &str) {
        if same_account && same_region {
            self.err(where_, format!("the destination is the source's own account and region: {what} must go to another account or region"))
                .help = Some("set `destination.region` and/or `destination.account`".into());
        }
    }

    fn same_aws_account(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        matches!((self.account_id(a), self.account_id(b)), (Some(x), Some(y)) if x == y)
    }

    fn snapshot_copy(&mut self, m: &'p SnapshotCopy) {
        self.account_ref(&m.source.account);
        self.region(&m.source.region);
        let (dst_account, dst_region) = self.destination(
            &m.source.account,
            &m.source.region,
            &m.destination.account,
            &m.destination.region,
        );
        let same_account = self.same_aws_account(&m.source.account.value, &dst_account.value);
        let same_region = m.source.region.value == dst_region.value;
        self.same_place(same_account, same_region, m.id.span, "snapshot copies");
        self.ids(&m.source.snapshots, "snap-", "a snapshot");
        let no_tags = m.source.tags.as_ref().is_none_or(|t| t.value.is_empty());
        if m.source.snapshots.is_empty() && no_tags {
            self.err(
                m.id.span,
                format!("migration `{}` selects no snapshots", m.id.value),
            )
            .help = Some(
                "add `source.snapshots: [snap-...]` and/or `source.tags: {Key: value}`".into(),
            );
        }
        self.destination_key(&m.destination.key, &dst_account.value, &dst_region.value);
        if let Some(d) = &m.destination.completion_duration {
            let secs = d.value.0;
            if !(15 * 60..=2880 * 60).contains(&secs) || secs % (15 * 60) != 0 {
                self.err(
                    d.span,
                    "`completion_duration` must be 15 minutes to 48 hours, in steps of 15 minutes",
                )
                .help = Some("EBS takes CompletionDurationMinutes from 15 to 2880, a multiple of 15: e.g. `2h` or `45m`".into());
            }
        }
        self.cross_account_options(!same_account, &m.key_access, &m.revoke_after);
        self.tags(&m.tags, "the migration's `tags`");
        self.retention(&m.retention);
        self.reencrypt(
            !same_account,
            &m.reencrypt_managed_sources,
            &m.intermediate_key,
            &m.source.account.value,
            &m.source.region.value,
        );
    }

    /// `reencrypt_managed_sources` needs another account and an `intermediate_key` in the
    /// source account and region; `intermediate_key` alone means nothing.
    fn reencrypt(
        &mut self,
        cross_account: bool,
        on: &Option<Spanned<bool>>,
        key: &Option<Spanned<String>>,
        account: &str,
        region: &str,
    ) {
        let enabled = on.as_ref().filter(|o| o.value);
        match (enabled, key) {
            (Some(o), _) if !cross_account => {
                self.err(
                    o.span,
                    "`reencrypt_managed_sources` applies only when the destination account differs from the source",
                )
                .help = Some("within an account, a copy under the destination key is all it takes: remove it".into());
            }
            (Some(o), None) => {
                self.err(
                    o.span,
                    "`reencrypt_managed_sources` needs `intermediate_key`",
                )
                .help = Some(format!(
                    "name a customer managed key of `{account}` in {region} for the intermediate copies"
                ));
            }
            (None, Some(k)) => {
                self.err(
                    k.span,
                    "`intermediate_key` is used only with `reencrypt_managed_sources: true`",
                )
                .help = Some("set `reencrypt_managed_sources: true`, or remove it".into());
            }
            (Some(_), Some(k)) => self.key_at(k, account, region, "source"),
            (None, None) => {}
        }
    }

    fn retention(&mut self, retention: &Option<Spanned<Retention>>) {
        let Some(r) = retention else {
            return;
        };
        if r.value.keep_last.is_none() && r.value.max_age.is_none() {
            self.err(r.span, "`retention` needs `keep_last` and/or `max_age`");
        }
        if let Some(k) = r.value.keep_last.as_ref().filter(|k| k.value == 0) {
            self.err(k.span, "`keep_last` must be at least 1").help =
                Some("the newest copy of each lineage is always kept".into());
        }
        if let Some(a) = r.value.max_age.as_ref().filter(|a| a.value.0 == 0) {
            self.err(a.span, "`max_age` must be longer than 0");
        }
    }

    fn db_snapshot_copy(&mut self, m: &'p DbSnapshotCopy, cluster: bool) {
        let what = if cluster {
            "DB cluster snapshot copies"
        } else {
            "DB snapshot copies"
        };
        self.account_ref(&m.source.account);
        self.region(&m.source.region);
        let (dst_account, dst_region) = self.destination(
            &m.source.account,
            &m.source.region,
            &m.destination.account,
            &m.destination.region,
        );
        let same_account = self.same_aws_account(&m.source.account.value, &dst_account.value);
        let same_region = m.source.region.value == dst_region.value;
        self.same_place(same_account, same_region, m.id.span, what);
        if !same_account && !same_region {
            let span = m
                .destination
                .region
                .as_ref()
                .map(|r| r.span)
                .unwrap_or(m.id.span);
            self.err(
                span,
                "RDS copies a snapshot shared by another account only within its region: this migration changes both account and region",
            )
            .help = Some(format!(
                "use two plans: one copies to `{}` within account `{}`, the second shares that copy (named `ferry-<first plan>-<source>`) with the other account in `{}`",
                dst_region.value, m.source.account.value, dst_region.value
            ));
        }
        self.reencrypt(
            !same_account,
            &m.reencrypt_managed_sources,
            &m.intermediate_key,
            &m.source.account.value,
            &m.source.region.value,
        );
        let resource = if cluster {
            "cluster-snapshot"
        } else {
            "snapshot"
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for s in &m.source.snapshots {
            let v = s.value.as_str();
            if let Some(a) = parse_arn(v) {
                let id_ok = a.service == "rds"
                    && a.resource
                        .strip_prefix(resource)
                        .and_then(|r| r.strip_prefix(':'))
                        .is_some_and(is_db_snapshot_name);
                if !id_ok {
                    self.err(s.span, format!("`{v}` is not an RDS {resource} ARN"))
                        .help = Some(format!(
                        "expected arn:aws:rds:REGION:ACCOUNT:{resource}:NAME"
                    ));
                } else if a.region != m.source.region.value {
                    self.err(
                        s.span,
                        format!(
                            "this snapshot is in region `{}` but the source region is `{}`",
                            a.region, m.source.region.value
                        ),
                    );
                } else if let Some(id) = self.account_id(&m.source.account.value)
                    && a.account != id
                {
                    self.err(
                        s.span,
                        format!(
                            "this snapshot is in account {} but the source account `{}` is {id}",
                            a.account, m.source.account.value
                        ),
                    );
                }
            } else if !is_db_snapshot_name(v) {
                self.err(s.span, format!("`{v}` is not an RDS snapshot identifier"))
                    .help = Some("identifiers are letters, digits and hyphens, starting with a letter (automated ones start with `rds:`)".into());
            }
            if let Some(first) = seen.get(v) {
                let d = Diagnostic::new(format!("`{v}` is listed twice"))
                    .at(s.span)
                    .related(*first, "first listed here");
                self.push(d);
            } else {
                seen.insert(v, s.span);
            }
        }
        for i in &m.source.latest_of {
            if !is_db_snapshot_name(&i.value) || i.value.starts_with("rds:") {
                let whose = if cluster { "DB cluster" } else { "DB instance" };
                self.err(i.span, format!("`{}` is not a {whose} identifier", i.value))
                    .help = Some(
                    "identifiers are letters, digits and hyphens, starting with a letter".into(),
                );
            }
        }
        let no_tags = m.source.tags.as_ref().is_none_or(|t| t.value.is_empty());
        if m.source.snapshots.is_empty() && no_tags && m.source.latest_of.is_empty() {
            self.err(m.id.span, format!("migration `{}` selects no snapshots", m.id.value))
                .help = Some("add `source.snapshots: [...]`, `source.tags: {Key: value}` and/or `source.latest_of: [instance-id]`".into());
        }
        if let Some(key) = &m.destination.key {
            self.destination_key(key, &dst_account.value, &dst_region.value);
        }
        if let (true, Some(og)) = (cluster, &m.destination.option_group) {
            self.err(og.span, "Aurora DB cluster snapshots have no option group")
                .help = Some("remove `option_group`".into());
        }
        self.cross_account_options(!same_account, &m.key_access, &m.revoke_after);
        self.tags(&m.tags, "the migration's `tags`");
        self.retention(&m.retention);
    }

    fn ami_copy(&mut self, m: &'p AmiCopy) {
        self.account_ref(&m.source.account);
        self.region(&m.source.region);
        let (dst_account, dst_region) = self.destination(
            &m.source.account,
            &m.source.region,
            &m.destination.account,
            &m.destination.region,
        );
        let same_account = self.same_aws_account(&m.source.account.value, &dst_account.value);
        let same_region = m.source.region.value == dst_region.value;
        self.same_place(same_account, same_region, m.id.span, "AMI copies");
        self.ids(&m.source.images, "ami-", "an AMI");
        let no_tags = m.source.tags.as_ref().is_none_or(|t| t.value.is_empty());
        if m.source.images.is_empty() && no_tags {
            self.err(
                m.id.span,
                format!("migration `{}` selects no AMIs", m.id.value),
            )
            .help =
                Some("add `source.images: [ami-...]` and/or `source.tags: {Key: value}`".into());
        }
        match (&m.destination.key, m.destination.copies()) {
            (Some(key), true) => self.destination_key(key, &dst_account.value, &dst_region.value),
            (None, true) => {
                self.err(m.id.span, format!("migration `{}` copies AMIs but has no `destination.key`", m.id.value))
                    .help = Some("copies are re-encrypted: name the destination key, or set `destination.copy: false` to share only".into());
            }
            (Some(key), false) => {
                self.err(key.span, "`destination.key` is not used with `copy: false`")
                    .help = Some(
                    "sharing keeps the source encryption; remove `key`, or set `copy: true`".into(),
                );
            }
            (None, false) => {}
        }
        if !m.destination.copies() {
            if same_account {
                let span = m
                    .destination
                    .copy
                    .as_ref()
                    .map(|c| c.span)
                    .unwrap_or(m.id.span);
                self.err(span, "`copy: false` shares AMIs with another account, but the destination is the source account")
                    .help = Some("set `destination.account` to the account to share with".into());
            }
            if let Some(r) = &m.destination.region
                && r.value != m.source.region.value
            {
                self.err(
                    r.span,
                    "a share-only migration (`copy: false`) stays in the source region",
                )
                .help = Some(
                    "AMIs are shared within their region; to move one, set `copy: true`".into(),
                );
            }
            if let Some(r) = m.revoke_after.as_ref().filter(|r| r.value) {
                self.err(
                    r.span,
                    "`revoke_after: true` with `copy: false` would share the AMI and take the share back in the same run",
                )
                .help = Some(
                    "a share-only migration keeps its shares: remove `revoke_after`, or set `copy: true` to copy and then revoke".into(),
                );
            }
        }
        self.cross_account_options(!same_account, &m.key_access, &m.revoke_after);
        self.retention(&m.retention);
        if let Some(r) = &m.retention
            && !m.destination.copies()
        {
            self.err(r.span, "`retention` needs copies (`copy: true`)")
                .help =
                Some("a share-only migration makes no copies to keep or delete: remove it".into());
        }
        if let Some(o) = m.reencrypt_managed_sources.as_ref().filter(|o| o.value)
            && !m.destination.copies()
        {
            self.err(
                o.span,
                "`reencrypt_managed_sources` needs copies (`copy: true`)",
            )
            .help = Some("a share-only migration shares the AMI as it is: remove it".into());
        }
        self.reencrypt(
            !same_account,
            &m.reencrypt_managed_sources,
            &m.intermediate_key,
            &m.source.account.value,
            &m.source.region.value,
        );
        self.tags(&m.tags, "the migration's `tags`");
    }

    fn s3_replication(&mut self, m: &'p S3Replication) {
        self.account_ref(&m.source.account);
        let dst_account = m.destination.account.as_ref().unwrap_or(&m.source.account);
        if let Some(a) = &m.destination.account {
            self.account_ref(a);
        }
        for b in [&m.source.bucket, &m.destination.bucket] {
            if !is_bucket_name(&b.value) {
                self.err(
                    b.span,
                    format!("`{}` is not a valid S3 bucket name", b.value),
                )
                .help = Some(
                    "bucket names are 3-63 lowercase letters, digits, dots and hyphens".into(),
                );
            }
        }
        if m.source.bucket.value == m.destination.bucket.value {
            self.err(
                m.destination.bucket.span,
                "the destination bucket is the source bucket",
            )
            .help = Some("replication needs a second bucket".into());
        }
        let creates = m.destination.create.as_ref().is_some_and(|c| c.value);
        match &m.destination.region {
            Some(r) => {
                self.region(r);
                self.destination_key(&m.destination.key, &dst_account.value, &r.value);
            }
            None => {
                if creates {
                    let span = m
                        .destination
                        .create
                        .as_ref()
                        .map(|c| c.span)
                        .unwrap_or(m.id.span);
                    self.err(span, "`create: true` needs `destination.region`")
                        .help = Some("ferry must know where to create the bucket".into());
                }
                // Without a region the key can only be checked once the bucket is looked up.
                self.key_reference_exists(&m.destination.key);
            }
        }
        match (&m.role.name, &m.role.arn) {
            (None, None) => {
                self.err(
                    m.id.span,
                    format!("migration `{}` needs `role.name` or `role.arn`", m.id.value),
                );
            }
            (Some(n), Some(_)) => {
                self.err(n.span, "give either `role.name` or `role.arn`, not both");
            }
            (Some(n), None) => {
                if !is_role_name(&n.value) {
                    self.err(
                        n.span,
                        format!("`{}` is not a valid IAM role name", n.value),
                    )
                    .help = Some("role names are 1-64 letters, digits and +=,.@_-".into());
                }
            }
            (None, Some(a)) => {
                if !parse_arn(&a.value)
                    .is_some_and(|p| p.service == "iam" && p.resource.starts_with("role/"))
                {
                    self.err(a.span, format!("`{}` is not an IAM role ARN", a.value));
                }
            }
        }
        if let Some(rule) = &m.rule
            && let Some(id) = &rule.value.id
            && (id.value.is_empty() || id.value.len() > 255)
        {
            self.err(id.span, "a replication rule id is 1-255 characters");
        }
        self.batch_backfill(m);
    }

    /// The options of a batch backfill: its report location and its role.
    fn batch_backfill(&mut self, m: &'p S3Replication) {
        let mode = m.backfill.as_ref().map(|b| b.value);
        if let Some(r) = &m.backfill_report {
            match r
                .value
                .strip_prefix("s3://")
                .map(|rest| rest.split('/').next().unwrap_or(""))
            {
                Some(bucket) if is_bucket_name(bucket) => {}
                _ => {
                    self.err(
                        r.span,
                        format!("`{}` is not an s3://bucket/prefix", r.value),
                    )
                    .help = Some("expected s3://BUCKET/PREFIX, e.g. s3://my-reports/ferry".into());
                }
            }
        } else if mode == Some(BackfillMode::Batch)
            && !self
                .plan
                .settings
                .state
                .as_ref()
                .is_some_and(|s| s.value.starts_with("s3://"))
        {
            let span = m.backfill.as_ref().map(|b| b.span).unwrap_or(m.id.span);
            self.err(span, "a batch backfill needs `backfill_report`")
                .help = Some(
                "add `backfill_report: s3://BUCKET/PREFIX` (in the source region) for the job's completion report; with the state on S3 it defaults to the state bucket".into(),
            );
        }
        if let Some(role) = &m.backfill_role {
            // One role for both would have each step write its own policy over the other's.
            let same = match (&role.name, &m.role.name, &role.arn, &m.role.arn) {
                (Some(b), Some(r), _, _) => (b.value == r.value).then_some(b.span),
                (_, _, Some(b), Some(r)) => (b.value == r.value).then_some(b.span),
                _ => None,
            };
            if let Some(span) = same {
                self.err(span, "the batch backfill's role is the replication role")
                    .help = Some(
                    "S3 Batch Operations needs a role of its own (it trusts batchoperations.s3.amazonaws.com): name another one, or leave `backfill_role` out".into(),
                );
            }
            match (&role.name, &role.arn) {
                (Some(n), Some(_)) => {
                    self.err(
                        n.span,
                        "give either `backfill_role.name` or `backfill_role.arn`, not both",
                    );
                }
                (Some(n), None) if !is_role_name(&n.value) => {
                    self.err(
                        n.span,
                        format!("`{}` is not a valid IAM role name", n.value),
                    )
                    .help = Some("role names are 1-64 letters, digits and +=,.@_-".into());
                }
                (None, Some(a))
                    if !parse_arn(&a.value)
                        .is_some_and(|p| p.service == "iam" && p.resource.starts_with("role/")) =>
                {
                    self.err(a.span, format!("`{}` is not an IAM role ARN", a.value));
                }
                _ => {}
            }
        } else if mode.is_some_and(|b| matches!(b, BackfillMode::Auto | BackfillMode::Batch))
            && let Some(n) = &m.role.name
            && !is_role_name(&format!("{}-batch", n.value))
        {
            self.err(
                n.span,
                format!(
                    "the batch backfill's role would be `{}-batch`, longer than IAM allows",
                    n.value
                ),
            )
            .help = Some("name it with `backfill_role.name`".into());
        }
    }

    fn key_reference_exists(&mut self, key: &Spanned<String>) {
        let v = key.value.as_str();
        if self.broken.keys.contains(v) || self.plan.key_ref(v).is_some() {
            return;
        }
        let known: Vec<&str> = self
            .plan
            .keys
            .iter()
            .map(|k| k.name.value.as_str())
            .collect();
        let d = Diagnostic::new(format!("unknown key `{v}`"))
            .at(key.span)
            .label("not in `keys:` and not an alias or ARN");
        self.push(match suggest(v, known.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("use a name from `keys:`, an `alias/...`, or a key ARN"),
        });
    }

    /// Names every dependency cycle in full: `a -> b -> c -> a`.
    fn cycles(&mut self) {
        let ms = &self.plan.migrations;
        let index: HashMap<&str, usize> = ms
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id().value.as_str(), i))
            .collect();
        let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
        let nodes: Vec<_> = (0..ms.len()).map(|i| graph.add_node(i)).collect();
        for (i, m) in ms.iter().enumerate() {
            for dep in m.depends_on() {
                if let Some(&j) = index.get(dep.value.as_str())
                    && i != j
                {
                    graph.update_edge(nodes[i], nodes[j], ());
                }
            }
        }
        let mut sccs = petgraph::algo::tarjan_scc(&graph);
        sccs.retain(|c| c.len() > 1);
        sccs.sort_by_key(|c| c.iter().map(|n| graph[*n]).min());
        for scc in sccs {
            let members: BTreeSet<usize> = scc.iter().map(|n| graph[*n]).collect();
            let start = *members.first().expect("non-empty");
            // Walk from the first member along dependencies inside the component back to it.
            let mut path = vec![start];
            let mut visited = BTreeSet::from([start]);
            let mut cur = start;
            'walk: loop {
                for dep in ms[cur].depends_on() {
                    let Some(&j) = index.get(dep.value.as_str()) else {
                        continue;
                    };
                    if j == start && path.len() > 1 {
                        break 'walk;
                    }
                    if members.contains(&j) && visited.insert(j) {
                        path.push(j);
                        cur = j;
                        continue 'walk;
                    }
                }
                break;
            }
            let names: Vec<&str> = path
                .iter()
                .map(|&i| ms[i].id().value.as_str())
                .chain([ms[start].id().value.as_str()])
                .collect();
            let mut d = Diagnostic::new(format!("dependency cycle: {}", names.join(" -> ")))
                .at(ms[start].id().span)
                .label("this migration waits for itself")
                .help("remove one of the `depends_on` entries in the cycle");
            for w in path.windows(2).chain(std::iter::once(
                &[*path.last().expect("non-empty"), start][..],
            )) {
                if let Some(dep) = ms[w[0]]
                    .depends_on()
                    .iter()
                    .find(|d| d.value == ms[w[1]].id().value)
                {
                    d = d.related(
                        dep.span,
                        format!("`{}` waits for `{}`", ms[w[0]].id().value, dep.value),
                    );
                }
            }
            self.push(d);
        }
    }

    fn settings(&mut self) {
        let s = &self.plan.settings;
        if let Some(c) = &s.concurrency
            && (c.value == 0 || c.value > 1024)
        {
            self.err(c.span, format!("concurrency {} is out of range", c.value))
                .help = Some("use 1 to 1024 (the default is 16)".into());
        }
        if let Some(state) = &s.state {
            if let Some(rest) = state.value.strip_prefix("s3://") {
                let bucket = rest.split('/').next().unwrap_or("");
                if !is_bucket_name(bucket) {
                    self.err(
                        state.span,
                        format!("`{}` does not name a valid S3 bucket", state.value),
                    )
                    .help = Some("expected s3://BUCKET/PREFIX".into());
                }
            } else if state.value.contains("://") {
                self.err(
                    state.span,
                    "`state` is a local directory or an s3://bucket/prefix",
                );
            }
        }
        self.tags(&s.tags, "`settings.tags`");
        if let Some(t) = &s.multipart_threshold
            && !(crate::plan::PART_MIN..=crate::plan::MULTIPART_THRESHOLD).contains(&t.value.0)
        {
            self.err(
                t.span,
                format!("multipart_threshold {} bytes is out of range", t.value.0),
            )
            .help = Some(
                "use 5MiB (S3's smallest part) to 5GiB (the most one CopyObject copies, the default)".into(),
            );
        }
        for (name, q) in &s.quotas {
            match crate::quotas::default_for(&name.value) {
                None => {
                    let d =
                        Diagnostic::new(format!("unknown quota `{}`", name.value)).at(name.span);
                    self.push(match suggest(&name.value, crate::quotas::names()) {
                        Some(sug) => d.help(format!("did you mean `{sug}`?")),
                        None => d.help("see the quota table in the README for the names"),
                    });
                }
                Some(crate::quotas::Quota::InFlight(_)) => {
                    if q.burst.is_some() || q.per_second.is_some() || q.in_flight.is_none() {
                        self.err(
                            name.span,
                            format!(
                                "`{}` limits operations in flight: set `in_flight` only",
                                name.value
                            ),
                        );
                    }
                }
                Some(crate::quotas::Quota::Rate { .. }) => {
                    if q.in_flight.is_some() {
                        self.err(
                            name.span,
                            format!(
                                "`{}` is a rate: set `burst` and/or `per_second`",
                                name.value
                            ),
                        );
                    }
                    if q.per_second.is_some_and(|r| !(r > 0.0 && r.is_finite()))
                        || q.burst == Some(0)
                    {
                        self.err(
                            name.span,
                            format!("`{}` must allow at least some calls", name.value),
                        );
                    }
                }
            }
        }
    }
}
