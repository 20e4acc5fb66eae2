//! Read-only discovery against AWS, before anything changes: which account each set of
//! credentials belongs to, which snapshots a selector means, whether each destination key can
//! be used. Problems found here are bad input (exit 2) and point at the plan line they concern.

use std::collections::BTreeMap;

mod rds;
mod s3;

use aws_sdk_ec2::types::{Filter, SnapshotState};
use serde::{Deserialize, Serialize};

use crate::aws::{Aws, AwsError};
use crate::exec::Limits;
use crate::ids::KeyArn;
use crate::lookup::{self, KeyFacts};
use crate::plan::{Diagnostic, Migration, Plan, Spanned};
use crate::quotas::bucket;

/// What the resolve stage found for selectors, so that compiling can expand them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// s3-replication migration id -> what a sample listing of its source found (backfills).
    #[serde(default)]
    pub bucket_samples: BTreeMap<String, BucketSample>,
    /// db-snapshot-copy / db-cluster-snapshot-copy migration id -> its source snapshots.
    #[serde(default)]
    pub db_snapshots: BTreeMap<String, Vec<DbSource>>,
    /// snapshot-copy migration id -> its selected sources that `retention` does not copy.
    #[serde(default)]
    pub beyond_retention: BTreeMap<String, Vec<String>>,
    /// AMI id -> its lineage for `retention` (its `Name` tag, else its name) and creation
    /// time (ms).
    #[serde(default)]
    pub image_lineages: BTreeMap<String, (String, i64)>,
    /// snapshot-copy / ami-copy migration id -> its sources under an AWS managed key, copied
    /// under the intermediate key before they are shared (`reencrypt_managed_sources`).
    #[serde(default)]
    pub reencrypted: BTreeMap<String, Vec<String>>,
    /// AMI id -> its own tags (`copy_tags`), as [`copyable_tags`] keeps them.
    #[serde(default)]
    pub image_tags: BTreeMap<String, BTreeMap<String, String>>,
    /// snapshot-copy migration id -> source -> the key of its completed copy in the
    /// destination (from an earlier run): where a chain of incremental copies starts.
    #[serde(default)]
    pub copied: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

/// In what order copies of one volume's snapshots run (`FERRY_COPY_ORDER`, for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyOrder {
    /// Per volume and destination, oldest first, each after the one before has completed, so
    /// that every copy after the first is incremental; the chain with the most bytes left
    /// first.
    #[default]
    Chains,
    /// The largest snapshot first, every copy on its own (what ferry did before chains).
    LargestFirst,
}

/// One source RDS snapshot of a migration, as resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSource {
    pub id: String,
    /// Automated snapshots cannot be shared: a manual copy is shared instead.
    pub automated: bool,
    pub size_gib: i32,
    /// Its own tags (no `aws:` or `ferry:` keys), read with the source account: RDS copies a
    /// source's tags only when the copy is given none, and never across accounts.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The instance (or cluster) it is a snapshot of, and when it was made (ms): its lineage
    /// and age, for `retention`.
    #[serde(default)]
    pub of: String,
    #[serde(default)]
    pub created_ms: Option<i64>,
}

/// How many object versions the resolve stage saw in a source bucket (under the rule's
/// prefix), listing at most a sample: enough to choose inline copies or a batch job, never the
/// whole of a huge bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSample {
    pub objects: u64,
    pub bytes: u64,
    /// The whole bucket (under the prefix) was listed: the counts are exact.
    pub complete: bool,
}

/// The key of [`Inventory::bucket_regions`].
fn bucket_slot(account: &str, bucket: &str) -> String {
    format!("{account}/{bucket}")
}

/// What the resolve stage established; stored with the run so that a resume works on exactly
/// the same resources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resolution {
    /// Plan account name -> AWS account id.
    pub account_ids: BTreeMap<String, String>,
    pub inventory: Inventory,
    /// Source snapshot id -> what ferry knows of it.
    pub snapshots: BTreeMap<String, SnapshotFacts>,
    /// Keys that exist already: "account/region/reference" -> ARN.
    pub keys: BTreeMap<String, String>,
    /// What the user should know that is no problem (an unencrypted source, say).
    #[serde(default, skip_serializing)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub copy_order: CopyOrder,
}

impl Resolution {
    /// The ARN of the key `reference` names in `account`/`region`, if it existed when resolved.
    pub fn key_arn(&self, account: &str, region: &str, reference: &str) -> Option<KeyArn> {
        self.keys
            .get(&key_slot(account, region, reference))
            .map(|a| KeyArn::new(a.as_str()))
    }

    fn record_key(&mut self, account: &str, region: &str, reference: &str, arn: &KeyArn) {
        self.keys
            .insert(key_slot(account, region, reference), arn.to_string());
    }

    /// Known keys as (account, region, reference, ARN).
    pub fn known_keys(&self) -> impl Iterator<Item = (&str, &str, &str, KeyArn)> {
        self.keys.iter().filter_map(|(slot, arn)| {
            let mut parts = slot.splitn(3, '/');
            let (a, r, k) = (parts.next()?, parts.next()?, parts.next()?);
            Some((a, r, k, KeyArn::new(arn.as_str())))
        })
    }

    /// Where a bucket is, as looked up (or declared for one to be created).
    pub fn bucket_region(&self, account: &str, bucket: &str) -> Option<String> {
        self.inventory
            .bucket_regions
            .get(&bucket_slot(account, bucket))
            .cloned()
    }

    pub(crate) fn record_bucket_region(&mut self, account: &str, bucket: &str, region: String) {
        self.inventory
            .bucket_regions
            .insert(bucket_slot(account, bucket), region);
    }
}

/// One copy a migration made in its destination.
struct DestinationCopy {
    source: String,
    lineage: Option<String>,
    time: Option<i64>,
    key: Option<String>,
    completed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotFacts {
    pub size_gib: i32,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    /// Its own tags, without `aws:` and `ferry:` keys (read with the source account: tags do
    /// not cross accounts), for `copy_tags`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The volume it is a snapshot of: its lineage, for `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// When it was started (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
}

/// A resource's tags as a copy may carry them: no `aws:` keys (AWS reserves them) and no
/// `ferry:` ones (ferry writes its own).
pub fn copyable_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    tags.into_iter()
        .filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with("ferry:"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug)]
pub enum ResolveError {
    /// The plan asks for something AWS says cannot be (exit 2); each names the plan line.
    BadInput(Vec<Diagnostic>),
    /// AWS could not be asked (credentials, network): the run fails (exit 1).
    Aws(AwsError),
}

impl From<AwsError> for ResolveError {
    fn from(e: AwsError) -> Self {
        ResolveError::Aws(e)
    }
}

fn key_slot(account: &str, region: &str, reference: &str) -> String {
    format!("{account}/{region}/{reference}")
}

struct Resolver<'a> {
    plan: &'a Plan,
    aws: &'a Aws,
    limits: &'a Limits,
    problems: Vec<Diagnostic>,
    out: Resolution,
    /// New manual RDS snapshots per (account, region, kind), checked against the quota.
    db_quota: BTreeMap<(String, String, crate::ids::DbKind), rds::Planned>,
    /// Manual RDS snapshots per (account, region, kind), as listed once.
    db_manual: BTreeMap<(String, String, crate::ids::DbKind), Vec<crate::lookup::DbSnapshotFacts>>,
}

/// Resolves `plan` with read-only calls.
pub async fn resolve(plan: &Plan, aws: &Aws, limits: &Limits) -> Result<Resolution, ResolveError> {
    let mut r = Resolver {
        plan,
        aws,
        limits,
        problems: Vec::new(),
        out: Resolution::default(),
        db_quota: BTreeMap::new(),
        db_manual: BTreeMap::new(),
    };
    r.accounts().await?;
    if !r.problems.is_empty() {
        // Wrong credentials make every later answer meaningless.
        return Err(ResolveError::BadInput(r.problems));
    }
    r.keys().await?;
    for m in &plan.migrations {
        match m {
            Migration::SnapshotCopy(s) => r.snapshot_copy(s).await?,
            Migration::AmiCopy(a) => r.ami_copy(a).await?,
            Migration::S3Replication(m) => r.s3_replication(m).await?,
            Migration::DbSnapshotCopy(d) => {
                r.db_snapshot_copy(d, crate::ids::DbKind::Instance).await?
            }
            Migration::DbClusterSnapshotCopy(d) => {
                r.db_snapshot_copy(d, crate::ids::DbKind::Cluster).await?
            }
        }
    }
    r.db_snapshot_quotas().await?;
    r.out.inventory.sizes = r
        .out
        .snapshots
        .iter()
        .map(|(id, f)| (id.clone(), f.size_gib))
        .collect();
    if r.problems.is_empty() {
        Ok(r.out)
    } else {
        Err(ResolveError::BadInput(r.problems))
    }
}

impl Resolver<'_> {
    async fn accounts(&mut self) -> Result<(), ResolveError> {
        for named in &self.plan.accounts {
            let name = &named.name.value;
            let actual = self.aws.caller_account(name).await?;
            if let Some(declared) = &named.value.id
                && declared.value != actual
            {
                self.problems.push(
                    Diagnostic::new(format!(
                        "account `{name}` is declared as {} but its credentials belong to account {actual}",
                        declared.value
                    ))
                    .at(declared.span)
                    .help("check the profile / role_arn of this account, or the id"),
                );
            }
            self.out.account_ids.insert(name.clone(), actual);
        }
        Ok(())
    }

    async fn describe_key(
        &self,
        account: &str,
        region: &str,
        key: &str,
    ) -> Result<Option<KeyFacts>, ResolveError> {
        Ok(lookup::describe_key(self.aws, self.limits, account, region, key).await?)
    }

    /// Keys declared by ARN must exist; keys that will be created are checked if they already do.
    async fn keys(&mut self) -> Result<(), ResolveError> {
        for named in &self.plan.keys {
            let k = &named.value;
            let Some(reference) = k.alias.as_ref().or(k.arn.as_ref()) else {
                continue;
            };
            let found = self
                .describe_key(&k.account.value, &k.region.value, &reference.value)
                .await?;
            match found {
                None if !k.creates() => self.problems.push(
                    Diagnostic::new(format!(
                        "key `{}` ({}) does not exist in {}/{}",
                        named.name.value, reference.value, k.account.value, k.region.value
                    ))
                    .at(reference.span)
                    .help("create it, fix the reference, or set `create: true` (with an alias)"),
                ),
                None => {}
                Some(facts) => {
                    if (k.rotates() || k.creates() || k.policy_statements.is_some())
                        && !facts.customer_managed
                    {
                        self.problems.push(
                            Diagnostic::new(format!(
                                "key `{}` ({}) is an AWS managed key: ferry cannot change its rotation or policy",
                                named.name.value, reference.value
                            ))
                            .at(reference.span),
                        );
                    }
                    if k.replicas.is_some() && !facts.multi_region {
                        self.problems.push(
                            Diagnostic::new(format!(
                                "key `{}` ({}) exists and is not a multi-Region key, so it cannot have replicas",
                                named.name.value, reference.value
                            ))
                            .at(reference.span)
                            .help("a single-Region key cannot become multi-Region; use a new alias with `multi_region: true`"),
                        );
                    }
                    self.out.record_key(
                        &k.account.value,
                        &k.region.value,
                        &reference.value,
                        &facts.arn,
                    );
                }
            }
        }
        Ok(())
    }

    /// The key of a migration's intermediate copies (`reencrypt_managed_sources`): a usable
    /// customer managed key of the source account and region that exists now; the other
    /// account is given access to it as to any source key.
    async fn intermediate_key(
        &mut self,
        migration: &str,
        key: &Spanned<String>,
        account: &str,
        region: &str,
    ) -> Result<(), ResolveError> {
        let problems = self.problems.len();
        self.destination_key(key, account, region).await?;
        if self.problems.len() > problems {
            return Ok(());
        }
        let reference = self
            .plan
            .key_ref(&key.value)
            .map(|k| k.lookup().to_string())
            .unwrap_or_else(|| key.value.clone());
        let Some(arn) = self.out.key_arn(account, region, &reference) else {
            self.problems.push(
                Diagnostic::new(format!(
                    "intermediate key {reference} does not exist in {account}/{region} yet"
                ))
                .at(key.span)
                .label("not found")
                .help("the intermediate copies need the key before the run: apply a plan that creates it first, or name an existing key"),
            );
            return Ok(());
        };
        let keys = self
            .out
            .inventory
            .source_keys
            .entry(migration.to_string())
            .or_default();
        if !keys.contains(&arn.to_string()) {
            keys.push(arn.to_string());
            keys.sort();
        }
        Ok(())
    }

    /// A destination key: usable for re-encrypting copies in `account`/`region`.
    async fn destination_key(
        &mut self,
        key: &Spanned<String>,
        account: &str,
        region: &str,
    ) -> Result<(), ResolveError> {
        // A plan key that ferry creates (or replicates) there is checked by its own steps.
        let key_ref = self.plan.key_ref(&key.value);
        let reference = key_ref
            .as_ref()
            .map(|k| k.lookup().to_string())
            .unwrap_or_else(|| key.value.clone());
        let will_exist = key_ref
            .as_ref()
            .and_then(|k| k.plan_key())
            .and_then(|name| {
                self.plan
                    .keys
                    .iter()
                    .find(|k| k.name.value == name.as_str())
            })
            .is_some_and(|k| k.value.creates());
        let facts = self.describe_key(account, region, &reference).await?;
        let Some(f) = facts else {
            if !will_exist {
                self.problems.push(
                    Diagnostic::new(format!(
                        "destination key {reference} does not exist in {account}/{region}"
                    ))
                    .at(key.span)
                    .label("not found")
                    .help(
                        "KMS keys are regional: name a key of the destination account and region",
                    ),
                );
            }
            return Ok(());
        };
        let id = self
            .out
            .account_ids
            .get(account)
            .cloned()
            .unwrap_or_default();
        let arn_region = f.arn.region();
        let arn_account = f.arn.account();
        let mut problem = |msg: String, help: &str| {
            self.problems
                .push(Diagnostic::new(msg).at(key.span).help(help));
        };
        if arn_region != region || (!id.is_empty() && arn_account != id) {
            problem(
                format!(
                    "destination key {reference} is {}, not in {account}/{region}",
                    f.arn
                ),
                "copies are encrypted with a key of the destination account and region",
            );
        } else if !f.customer_managed {
            problem(
                format!(
                    "destination key {reference} is an AWS managed key; copies need a customer managed key"
                ),
                "create a customer managed key (e.g. `create: true` under keys:) and use it",
            );
        } else if !f.enabled {
            problem(
                format!(
                    "destination key {reference} is disabled (state {})",
                    f.state
                ),
                "enable the key, or choose another",
            );
        } else if !f.symmetric_encrypt_decrypt {
            problem(
                format!("destination key {reference} is not a symmetric ENCRYPT_DECRYPT key"),
                "EBS and S3 encrypt only with symmetric encryption keys",
            );
        }
        self.out.record_key(account, region, &reference, &f.arn);
        Ok(())
    }

    async fn snapshot_copy(&mut self, m: &crate::plan::SnapshotCopy) -> Result<(), ResolveError> {
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
        let client = self.aws.ec2(account, region);

        let explicit: Vec<String> = m.source.snapshots.iter().map(|s| s.value.clone()).collect();
        let described: BTreeMap<String, aws_sdk_ec2::types::Snapshot> =
            lookup::snapshots_by_id(self.aws, self.limits, account, region, &explicit)
                .await?
                .into_iter()
                .map(|s| (s.snapshot_id().unwrap_or_default().to_string(), s))
                .collect();
        for wanted in &m.source.snapshots {
            match described.get(&wanted.value) {
                None => self.problems.push(
                    Diagnostic::new(format!("snapshot {} does not exist in {account}/{region} (or is not visible to it)", wanted.value))
                        .at(wanted.span)
                        .label("unknown snapshot"),
                ),
                Some(s) if s.state() != Some(&SnapshotState::Completed) => self.problems.push(
                    Diagnostic::new(format!(
                        "snapshot {} is {}, not completed: only completed snapshots can be copied",
                        wanted.value,
                        s.state().map(|s| s.as_str()).unwrap_or("in an unknown state")
                    ))
                    .at(wanted.span),
                ),
                Some(s) => {
                    self.out.snapshots.insert(wanted.value.clone(), facts(s));
                }
            }
        }

        if let Some(tags) = m.source.tags.as_ref().filter(|t| !t.value.is_empty()) {
            let mut req = client
                .describe_snapshots()
                .owner_ids("self")
                .filters(Filter::builder().name("status").values("completed").build());
            for (k, v) in &tags.value {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
            let mut pages = req
                .into_paginator()
                .page_size(crate::lookup::PAGE_SIZE)
                .send();
            let mut ids = Vec::new();
            loop {
                self.limits
                    .take(&[bucket(account, region, "ec2:DescribeSnapshots")])
                    .await;
                let Some(page) = pages.next().await else {
                    break;
                };
                let page = page.map_err(|e| AwsError::from_sdk("ec2", "DescribeSnapshots", e))?;
                for s in page.snapshots() {
                    // ferry's own copies carry the source's tags only if a user copied them over;
                    // never treat a copy made by this plan as a source.
                    if s.tags().iter().any(|t| {
                        t.key() == Some("ferry:plan") && t.value() == Some(&self.plan.name.value)
                    }) {
                        continue;
                    }
                    if let Some(id) = s.snapshot_id() {
                        ids.push(id.to_string());
                        self.out.snapshots.insert(id.to_string(), facts(s));
                    }
                }
            }
            ids.sort();
            ids.dedup();
            self.out.inventory.tagged.insert(m.id.value.clone(), ids);
        }

        // Every source the migration selected: named, and tagged.
        let mut selected: Vec<String> =
            m.source.snapshots.iter().map(|s| s.value.clone()).collect();
        selected.extend(
            self.out
                .inventory
                .tagged
                .get(&m.id.value)
                .cloned()
                .unwrap_or_default(),
        );
        selected.sort();
        selected.dedup();
        let copies = self
            .destination_copies(&m.id.value, &dst_account, &dst_region)
            .await?;
        // Where each volume's chain of incremental copies starts (compile orders by it).
        self.out.inventory.copied.insert(
            m.id.value.clone(),
            copies
                .iter()
                .filter(|c| c.completed)
                .map(|c| (c.source.clone(), c.key.clone()))
                .collect(),
        );
        let mut beyond = Vec::new();
        if let Some(r) = &m.retention {
            // One judgment of every source: those selected now and those the migration's
            // copies in the destination came from (a source deleted or untagged since still
            // counts in its lineage), each once, with one clock. The copy steps skip the
            // sources beyond it, the prune step deletes their copies: the two never disagree.
            let mut sources: BTreeMap<String, (Option<String>, Option<i64>)> = selected
                .iter()
                .filter_map(|id| {
                    let f = self.out.snapshots.get(id)?;
                    Some((id.clone(), (f.volume_id.clone(), f.start_ms)))
                })
                .collect();
            for (source, lineage) in self.copied_lineages(copies, account, region).await? {
                sources.entry(source).or_insert(lineage);
            }
            beyond = self.judge_retention(&m.id.value, &r.value, sources);
        }
        // Sources retention does not copy need no key access (nor any check of their key).
        selected.retain(|id| !beyond.contains(id));
        if self.cross_account(account, &dst_account) {
            let span_of = |id: &str| {
                m.source
                    .snapshots
                    .iter()
                    .find(|s| s.value == id)
                    .map(|s| s.span)
                    .or(m.source.tags.as_ref().map(|t| t.span))
                    .unwrap_or(m.id.span)
            };
            let mut used = Vec::new();
            let reencrypt = reencrypt_with(&m.reencrypt_managed_sources, &m.intermediate_key);
            let mut reencrypted = Vec::new();
            for id in &selected {
                let Some(f) = self.out.snapshots.get(id) else {
                    continue;
                };
                let key = f.kms_key_id.clone();
                // Under an AWS managed key: copied under the intermediate key first, which is
                // then the key the other account needs.
                if let (Some(_), Some(k)) = (reencrypt, &key)
                    && self
                        .describe_key(account, region, k)
                        .await?
                        .is_some_and(|f| !f.customer_managed)
                {
                    reencrypted.push(id.clone());
                    continue;
                }
                used.push((format!("snapshot {id}"), key, span_of(id)));
            }
            self.source_keys(&m.id.value, account, region, used, "aws/ebs")
                .await?;
            if let (Some(key), false) = (reencrypt, reencrypted.is_empty()) {
                self.intermediate_key(&m.id.value, key, account, region)
                    .await?;
                self.out
                    .inventory
                    .reencrypted
                    .insert(m.id.value.clone(), reencrypted);
            }
        }
        self.destination_key(&m.destination.key, &dst_account, &dst_region)
            .await
    }

    /// The one retention judgment of a migration, over every source with its lineage and
    /// time, with one clock: the sources beyond it (kept for the copy and prune steps).
    fn judge_retention(
        &mut self,
        migration: &str,
        r: &crate::plan::Retention,
        sources: BTreeMap<String, (Option<String>, Option<i64>)>,
    ) -> Vec<String> {
        let judged: Vec<(String, Option<String>, Option<i64>)> = sources
            .into_iter()
            .map(|(id, (lineage, t))| (id, lineage, t))
            .collect();
        let beyond = beyond_retention(
            &judged,
            r.keep_last.as_ref().map(|k| k.value),
            r.max_age.as_ref().map(|a| a.value.0),
            crate::exec::now_ms() as i64,
        );
        self.out
            .inventory
            .beyond_retention
            .insert(migration.to_string(), beyond.clone());
        beyond
    }

    /// The sources of an ami-copy migration's copies in the destination, with their lineage
    /// and creation time: from the copies' `ferry:lineage` / `ferry:source-time`, else from the
    /// source AMI (a source that is gone is a lineage of its own).
    async fn copied_image_lineages(
        &self,
        migration: &str,
        dst_account: &str,
        dst_region: &str,
        src_account: &str,
        src_region: &str,
    ) -> Result<BTreeMap<String, (Option<String>, Option<i64>)>, ResolveError> {
        let tagged =
            |k: &str, v: &str| Filter::builder().name(format!("tag:{k}")).values(v).build();
        let mut pages = self
            .aws
            .ec2(dst_account, dst_region)
            .describe_images()
            .owners("self")
            .filters(tagged("ferry:plan", &self.plan.name.value))
            .filters(tagged("ferry:migration", migration))
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut out: BTreeMap<String, (Option<String>, Option<i64>)> = BTreeMap::new();
        let mut unknown = Vec::new();
        loop {
            self.limits
                .take(&[bucket(dst_account, dst_region, "ec2:DescribeImages")])
                .await;
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| AwsError::from_sdk("ec2", "DescribeImages", e))?;
            for i in page.images() {
                let tag = |k: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                        .map(str::to_string)
                };
                // Intermediate copies (source account) are never judged.
                let Some(source) =
                    tag("ferry:source").filter(|_| tag("ferry:intermediate").is_none())
                else {
                    continue;
                };
                let lineage = tag("ferry:lineage");
                let time = tag("ferry:source-time").and_then(|t| t.parse().ok());
                if lineage.is_none() {
                    unknown.push(source.clone());
                }
                out.entry(source).or_insert((lineage, time));
            }
        }
        if !unknown.is_empty() {
            let found =
                lookup::images_by_id(self.aws, self.limits, src_account, src_region, &unknown)
                    .await?;
            for i in &found {
                if let (Some(id), Some((l, t))) = (i.image_id(), image_lineage(i)) {
                    out.insert(id.to_string(), (Some(l), Some(t)));
                }
            }
        }
        Ok(out)
    }

    /// The copies a snapshot-copy migration made in its destination, as their ferry tags
    /// and state tell.
    async fn destination_copies(
        &self,
        migration: &str,
        dst_account: &str,
        dst_region: &str,
    ) -> Result<Vec<DestinationCopy>, ResolveError> {
        let mut pages = self
            .aws
            .ec2(dst_account, dst_region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name("tag:ferry:plan")
                    .values(&self.plan.name.value)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("tag:ferry:migration")
                    .values(migration)
                    .build(),
            )
            .into_paginator()
            .page_size(crate::lookup::PAGE_SIZE)
            .send();
        let mut out = Vec::new();
        loop {
            self.limits
                .take(&[bucket(dst_account, dst_region, "ec2:DescribeSnapshots")])
                .await;
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| AwsError::from_sdk("ec2", "DescribeSnapshots", e))?;
            for s in page.snapshots() {
                let tag = |k: &str| {
                    s.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                        .map(str::to_string)
                };
                let Some(source) = tag("ferry:source") else {
                    continue;
                };
                out.push(DestinationCopy {
                    source,
                    lineage: tag("ferry:lineage"),
                    time: tag("ferry:source-time").and_then(|t| t.parse().ok()),
                    key: s.kms_key_id().map(str::to_string),
                    completed: s.state() == Some(&SnapshotState::Completed),
                });
            }
        }
        Ok(out)
    }

    /// The sources of a snapshot-copy migration's copies in the destination, with their
    /// lineage and start time: from the copies' `ferry:lineage` / `ferry:source-time`, else
    /// from the source (read in the source account; a source that is gone has no lineage).
    async fn copied_lineages(
        &self,
        copies: Vec<DestinationCopy>,
        src_account: &str,
        src_region: &str,
    ) -> Result<BTreeMap<String, (Option<String>, Option<i64>)>, ResolveError> {
        let mut out: BTreeMap<String, (Option<String>, Option<i64>)> = BTreeMap::new();
        let mut unknown = Vec::new();
        for c in copies {
            if c.lineage.is_none() {
                unknown.push(c.source.clone());
            }
            out.entry(c.source).or_insert((c.lineage, c.time));
        }
        if !unknown.is_empty() {
            for s in
                lookup::snapshots_by_id(self.aws, self.limits, src_account, src_region, &unknown)
                    .await?
            {
                let f = facts(&s);
                if let Some(e) = s.snapshot_id().and_then(|id| out.get_mut(id)) {
                    *e = (f.volume_id, e.1.or(f.start_ms));
                }
            }
        }
        Ok(out)
    }

    fn cross_account(&self, a: &str, b: &str) -> bool {
        a != b && self.out.account_ids.get(a) != self.out.account_ids.get(b)
    }

    /// The source keys of a cross-account migration: each must be a customer managed key
    /// (AWS managed keys cannot be shared). Unencrypted sources need no key.
    async fn source_keys(
        &mut self,
        migration: &str,
        account: &str,
        region: &str,
        used: Vec<(String, Option<String>, crate::plan::Span)>,
        managed: &str,
    ) -> Result<(), ResolveError> {
        let mut keys: Vec<String> = Vec::new();
        let mut described: BTreeMap<String, Option<KeyFacts>> = BTreeMap::new();
        for (what, key, span) in used {
            let Some(key) = key else {
                self.out.notes.push(format!(
                    "{what} is not encrypted; its copy will be encrypted with the destination key"
                ));
                continue;
            };
            // Many snapshots share a few keys: describe each key once.
            if !described.contains_key(&key) {
                let facts = self.describe_key(account, region, &key).await?;
                described.insert(key.clone(), facts);
            }
            match described[&key].clone() {
                None => self.problems.push(
                    Diagnostic::new(format!(
                        "{what} is encrypted with {key}, which account `{account}` cannot describe in {region}"
                    ))
                    .at(span),
                ),
                Some(f) if !f.customer_managed => self.problems.push(
                    Diagnostic::new(format!(
                        "{what} is encrypted with the AWS managed key {managed} ({}), which cannot be shared with another account",
                        f.arn
                    ))
                    .at(span)
                    .label("encrypted with an AWS managed key")
                    .help(format!(
                        "set `reencrypt_managed_sources: true` and `intermediate_key: KEY` (a customer managed key of `{account}` in {region}) on the migration: ferry then copies it under that key first, shares that copy and deletes it after"
                    )),
                ),
                Some(f) => {
                    if !keys.contains(&f.arn.to_string()) {
                        keys.push(f.arn.to_string());
                    }
                }
            }
        }
        keys.sort();
        self.out
            .inventory
            .source_keys
            .insert(migration.to_string(), keys);
        Ok(())
    }

    async fn ami_copy(&mut self, m: &crate::plan::AmiCopy) -> Result<(), ResolveError> {
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
        let client = self.aws.ec2(account, region);
        let mut images: Vec<(String, crate::plan::Span, aws_sdk_ec2::types::Image)> = Vec::new();

        if !m.source.images.is_empty() {
            let ids: Vec<String> = m.source.images.iter().map(|s| s.value.clone()).collect();
            let found = lookup::images_by_id(self.aws, self.limits, account, region, &ids).await?;
            for wanted in &m.source.images {
                match found
                    .iter()
                    .find(|i| i.image_id() == Some(wanted.value.as_str()))
                {
                    None => self.problems.push(
                        Diagnostic::new(format!(
                            "AMI {} does not exist in {account}/{region} (or is not visible to it)",
                            wanted.value
                        ))
                        .at(wanted.span)
                        .label("unknown AMI"),
                    ),
                    Some(i) => images.push((wanted.value.clone(), wanted.span, i.clone())),
                }
            }
        }
        if let Some(tags) = m.source.tags.as_ref().filter(|t| !t.value.is_empty()) {
            let mut req = client.describe_images().owners("self");
            for (k, v) in &tags.value {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
            let mut pages = req.into_paginator().page_size(lookup::PAGE_SIZE).send();
            let mut tagged = Vec::new();
            loop {
                self.limits
                    .take(&[bucket(account, region, "ec2:DescribeImages")])
                    .await;
                let Some(page) = pages.next().await else {
                    break;
                };
                let page = page.map_err(|e| AwsError::from_sdk("ec2", "DescribeImages", e))?;
                tagged.extend(page.images().iter().cloned());
            }
            let mut ids = Vec::new();
            for i in &tagged {
                let ours = i.tags().iter().any(|t| {
                    t.key() == Some("ferry:plan")
                        && t.value() == Some(self.plan.name.value.as_str())
                });
                if ours {
                    continue;
                }
                let id = i.image_id().unwrap_or_default().to_string();
                if !images.iter().any(|(x, _, _)| *x == id) {
                    images.push((id.clone(), tags.span, i.clone()));
                }
                ids.push(id);
            }
            ids.sort();
            self.out.inventory.tagged.insert(m.id.value.clone(), ids);
        }

        let mut used = Vec::new();
        let mut wanted: Vec<String> = Vec::new();
        let mut available = Vec::new();
        for (id, span, image) in &images {
            let state = image
                .state()
                .map(|s| s.as_str())
                .unwrap_or("in an unknown state");
            if state != "available" {
                self.problems
                    .push(Diagnostic::new(format!("AMI {id} is {state}, not available")).at(*span));
                continue;
            }
            if let Some(l) = image_lineage(image) {
                self.out.inventory.image_lineages.insert(id.clone(), l);
            }
            let snaps: Vec<String> = image
                .block_device_mappings()
                .iter()
                .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
                .collect();
            wanted.extend(snaps.iter().cloned());
            self.out
                .inventory
                .image_snapshots
                .insert(id.clone(), snaps.clone());
            if crate::plan::copies_tags(&m.copy_tags, false) {
                let tags = copyable_tags(
                    image
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))),
                );
                self.out.inventory.image_tags.insert(id.clone(), tags);
            }
            available.push((id.clone(), *span, snaps));
        }
        if let Some(r) = &m.retention {
            // One judgment, as for snapshot-copy: the AMIs selected now and the sources of the
            // migration's copies already in the destination, per lineage.
            let mut sources: BTreeMap<String, (Option<String>, Option<i64>)> = available
                .iter()
                .map(|(id, _, _)| {
                    let l = self.out.inventory.image_lineages.get(id).cloned();
                    (id.clone(), (l.clone().map(|l| l.0), l.map(|l| l.1)))
                })
                .collect();
            for (source, lineage) in self
                .copied_image_lineages(&m.id.value, &dst_account, &dst_region, account, region)
                .await?
            {
                sources.entry(source).or_insert(lineage);
            }
            let beyond = self.judge_retention(&m.id.value, &r.value, sources);
            // AMIs the policy does not keep are not copied, so need no key access either.
            available.retain(|(id, _, _)| !beyond.contains(id));
        }
        // The snapshots of every AMI, described in batches (not one call per AMI).
        let found: BTreeMap<String, SnapshotFacts> =
            lookup::snapshots_by_id(self.aws, self.limits, account, region, &wanted)
                .await?
                .iter()
                .map(|s| (s.snapshot_id().unwrap_or_default().to_string(), facts(s)))
                .collect();
        let reencrypt = reencrypt_with(&m.reencrypt_managed_sources, &m.intermediate_key)
            .filter(|_| self.cross_account(account, &dst_account) && m.destination.copies());
        let mut reencrypted = Vec::new();
        for (id, span, snaps) in available {
            let mut volumes = Vec::new();
            let mut managed = false;
            for sid in snaps {
                if let Some(f) = found.get(&sid) {
                    if let (Some(_), Some(k)) = (reencrypt, &f.kms_key_id) {
                        managed |= self
                            .describe_key(account, region, k)
                            .await?
                            .is_some_and(|f| !f.customer_managed);
                    }
                    volumes.push((
                        format!("AMI {id} (its volume snapshot {sid})"),
                        f.kms_key_id.clone(),
                        span,
                    ));
                    self.out.snapshots.insert(sid, f.clone());
                }
            }
            // A volume under an AWS managed key: the whole AMI is copied under the
            // intermediate key first, whose access is then all the other account needs.
            if managed {
                reencrypted.push(id);
            } else {
                used.extend(volumes);
            }
        }
        if self.cross_account(account, &dst_account) {
            self.source_keys(&m.id.value, account, region, used, "aws/ebs")
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
        if let (Some(key), true) = (&m.destination.key, m.destination.copies()) {
            self.destination_key(key, &dst_account, &dst_region).await?;
        }
        Ok(())
    }
}

/// The intermediate key when `reencrypt_managed_sources` is on.
fn reencrypt_with<'a>(
    on: &Option<Spanned<bool>>,
    key: &'a Option<Spanned<String>>,
) -> Option<&'a Spanned<String>> {
    on.as_ref()
        .is_some_and(|r| r.value)
        .then_some(key.as_ref())
        .flatten()
}

/// An AMI's lineage for `retention`: its `Name` tag (nightly AMIs share it; AMI names are
/// unique), else its name; and its creation time (ms).
fn image_lineage(i: &aws_sdk_ec2::types::Image) -> Option<(String, i64)> {
    let name = i
        .tags()
        .iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
        .or(i.name())?;
    let created = humantime::parse_rfc3339_weak(i.creation_date()?)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((name.to_string(), created.as_millis() as i64))
}

fn facts(s: &aws_sdk_ec2::types::Snapshot) -> SnapshotFacts {
    SnapshotFacts {
        size_gib: s.volume_size().unwrap_or(0),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key_id: s.kms_key_id().map(str::to_string),
        tags: copyable_tags(
            s.tags()
                .iter()
                .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))),
        ),
        // A snapshot made by CopySnapshot has the placeholder volume vol-ffffffff: no lineage.
        volume_id: s
            .volume_id()
            .filter(|v| *v != PLACEHOLDER_VOLUME)
            .map(str::to_string),
        start_ms: s.start_time().and_then(|t| t.to_millis().ok()),
    }
}

/// The volume AWS gives snapshots made by copying (not a real volume, so not a lineage).
pub const PLACEHOLDER_VOLUME: &str = "vol-ffffffff";

/// The sources `retention` keeps from copying: per volume, those beyond the newest `keep_last`
/// or started longer than `max_age` ago, never the newest of a volume. A source without a
/// volume or start time is its own lineage.
pub fn beyond_retention(
    sources: &[(String, Option<String>, Option<i64>)],
    keep_last: Option<u32>,
    max_age_secs: Option<u64>,
    now_ms: i64,
) -> Vec<String> {
    let mut lineages: BTreeMap<String, Vec<(Option<i64>, String)>> = BTreeMap::new();
    for (id, volume, start) in sources {
        let lineage = volume.clone().unwrap_or_else(|| id.clone());
        lineages
            .entry(lineage)
            .or_default()
            .push((*start, id.clone()));
    }
    let mut out = Vec::new();
    for (_, mut copies) in lineages {
        // Newest first; equal times by id, so every look agrees.
        copies.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        for (i, (start, id)) in copies.into_iter().enumerate() {
            if i == 0 {
                continue;
            }
            let beyond = keep_last.is_some_and(|k| i >= k as usize);
            let old = match (max_age_secs, start) {
                (Some(age), Some(t)) => {
                    now_ms.saturating_sub(t)
                        > i64::try_from(age).unwrap_or(i64::MAX).saturating_mul(1000)
                }
                _ => false,
            };
            if beyond || old {
                out.push(id);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::beyond_retention;

    fn s(id: &str, vol: Option<&str>, t: Option<i64>) -> (String, Option<String>, Option<i64>) {
        (id.into(), vol.map(str::to_string), t)
    }

    #[test]
    fn retention_keeps_the_newest_of_each_volume_and_judges_the_rest() {
        let day = 86_400_000;
        let now = 100 * day;
        let sources = vec![
            s("a1", Some("vol-a"), Some(now - 3 * day)),
            s("a2", Some("vol-a"), Some(now - 2 * day)),
            s("a3", Some("vol-a"), Some(now - day)),
            s("b1", Some("vol-b"), Some(now - 40 * day)),
            // No volume or time known: a lineage of its own, kept.
            s("c1", None, None),
        ];
        assert_eq!(beyond_retention(&sources, Some(2), None, now), vec!["a1"]);
        // Older than 30 days, but the newest (only) of vol-b: kept.
        assert_eq!(
            beyond_retention(&sources, None, Some(30 * 86_400), now),
            Vec::<String>::new()
        );
        assert_eq!(
            beyond_retention(&sources, None, Some(36 * 3600), now),
            vec!["a1", "a2"]
        );
        assert_eq!(
            beyond_retention(&sources, Some(1), None, now),
            vec!["a1", "a2"]
        );
    }
}
