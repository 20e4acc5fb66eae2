//! Resolve an `s3-replication` migration: where both buckets are, which key encrypts the
//! source, whether the destination key can encrypt replicas in the destination bucket's region,
//! and whether the source bucket's replication configuration leaves room for ferry's rule.

use crate::aws::AwsError;
use crate::exec::BucketKey;
use crate::plan::{BackfillMode, Diagnostic, S3Replication};

use super::{BucketSample, ResolveError, Resolver};

/// Object versions a `backfill: batch` samples for its estimate (one ListObjectVersions page).
const BATCH_SAMPLE: u64 = 999;

/// What GetBucketLocation says of a bucket, for one account's credentials.
enum Location {
    In(String),
    Missing,
    /// It exists but these credentials may not read it (another owner, or no permission).
    Denied(String),
}

/// `LocationConstraint` as a region: empty means us-east-1, `EU` is the old name of eu-west-1.
pub(crate) fn region_of_constraint(c: Option<&str>) -> String {
    match c.unwrap_or_default() {
        "" => "us-east-1".into(),
        "EU" => "eu-west-1".into(),
        r => r.into(),
    }
}

impl Resolver<'_> {
    async fn locate(&self, account: &str, bucket: &str) -> Result<Location, ResolveError> {
        let out = self
            .aws
            .s3(account, "us-east-1")
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await;
        match out {
            Ok(o) => Ok(Location::In(region_of_constraint(
                o.location_constraint().map(|c| c.as_str()),
            ))),
            Err(e) => {
                let e = AwsError::from_sdk("s3", "GetBucketLocation", e);
                if e.is_code(&["NoSuchBucket"]) || e.status == Some(404) {
                    Ok(Location::Missing)
                } else if e.is_code(&["AccessDenied", "AllAccessDisabled"]) || e.status == Some(403)
                {
                    Ok(Location::Denied(e.code))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    pub(super) async fn s3_replication(&mut self, m: &S3Replication) -> Result<(), ResolveError> {
        let src_account = m.source.account.value.clone();
        let dst_account = m
            .destination
            .account
            .as_ref()
            .unwrap_or(&m.source.account)
            .value
            .clone();
        let src_bucket = &m.source.bucket;
        let dst_bucket = &m.destination.bucket;
        let creates = m.destination.create.as_ref().is_some_and(|c| c.value);

        let src_region = match self.locate(&src_account, &src_bucket.value).await? {
            Location::In(r) => r,
            Location::Missing => {
                self.problems.push(
                    Diagnostic::new(format!(
                        "source bucket {} does not exist (account `{src_account}`)",
                        src_bucket.value
                    ))
                    .at(src_bucket.span)
                    .label("no such bucket"),
                );
                return Ok(());
            }
            Location::Denied(code) => {
                self.problems.push(
                    Diagnostic::new(format!(
                        "source bucket {} cannot be read by account `{src_account}` ({code})",
                        src_bucket.value
                    ))
                    .at(src_bucket.span)
                    .help("the source bucket must belong to the source account"),
                );
                return Ok(());
            }
        };
        self.out
            .record_bucket_region(&src_account, &src_bucket.value, src_region.clone());

        let dst_region = match self.locate(&dst_account, &dst_bucket.value).await? {
            Location::In(r) => {
                if let Some(wanted) = &m.destination.region
                    && wanted.value != r
                {
                    self.problems.push(
                        Diagnostic::new(format!(
                            "destination bucket {} is in {r}, not {}",
                            dst_bucket.value, wanted.value
                        ))
                        .at(wanted.span)
                        .help(format!("set `region: {r}` or name another bucket")),
                    );
                    return Ok(());
                }
                r
            }
            Location::Missing => match (&m.destination.region, creates) {
                (Some(r), true) => r.value.clone(),
                _ => {
                    self.problems.push(
                        Diagnostic::new(format!(
                            "destination bucket {} does not exist (account `{dst_account}`)",
                            dst_bucket.value
                        ))
                        .at(dst_bucket.span)
                        .label("no such bucket")
                        .help("create it, or set `create: true` and `region:`"),
                    );
                    return Ok(());
                }
            },
            Location::Denied(code) => {
                self.problems.push(
                    Diagnostic::new(format!(
                        "destination bucket {} exists but account `{dst_account}` cannot read it ({code})",
                        dst_bucket.value
                    ))
                    .at(dst_bucket.span)
                    .help("bucket names are global: it may belong to another account; choose another name"),
                );
                return Ok(());
            }
        };
        self.out
            .record_bucket_region(&dst_account, &dst_bucket.value, dst_region.clone());

        self.source_bucket_keys(m, &src_account, &src_region, &dst_account)
            .await?;
        self.sample_source(m, &src_account, &src_region).await?;
        self.replication_role_fits(m, &src_account, &src_region)
            .await?;

        // A plan key must live (or have a replica) where the destination bucket is.
        if let Some(named) = self
            .plan
            .keys
            .iter()
            .find(|k| k.name.value == m.destination.key.value)
        {
            let k = &named.value;
            let replicated = k
                .replicas
                .as_ref()
                .is_some_and(|r| r.value.iter().any(|x| x.value == dst_region));
            if k.region.value != dst_region && !replicated {
                self.problems.push(
                    Diagnostic::new(format!(
                        "destination key `{}` is in {}, but the destination bucket {} is in {dst_region}",
                        named.name.value, k.region.value, dst_bucket.value
                    ))
                    .at(m.destination.key.span)
                    .help("S3 accepts a replica key of another region and replication then fails silently: use a key of the bucket's region"),
                );
                return Ok(());
            }
        }
        self.destination_key(&m.destination.key, &dst_account, &dst_region)
            .await
    }

    /// For a backfill that may run as a batch job: how many object versions the source holds
    /// under the rule's prefix, listing at most `backfill_inline_max + 1` to decide (one page
    /// for `backfill: batch`, which needs only an estimate): never the whole of a huge bucket.
    /// A batch job needs a place for its report.
    async fn sample_source(
        &mut self,
        m: &S3Replication,
        account: &str,
        region: &str,
    ) -> Result<(), ResolveError> {
        let Some(mode) = m.backfill.as_ref().map(|b| b.value) else {
            return Ok(());
        };
        if !matches!(mode, BackfillMode::Auto | BackfillMode::Batch) {
            return Ok(());
        }
        let inline_max = self.plan.settings.inline_max();
        // `batch` needs no decision, only an estimate: one page. `true` must know whether
        // there are more than `inline_max`.
        let enough = if mode == BackfillMode::Batch {
            BATCH_SAMPLE
        } else {
            inline_max
        };
        let prefix = m
            .rule
            .as_ref()
            .and_then(|r| r.value.prefix.as_ref())
            .map(|p| p.value.clone())
            .unwrap_or_default();
        let s3 = self.aws.s3(account, region);
        let mut sample = BucketSample::default();
        let mut from = crate::lookup::VersionsFrom::default();
        loop {
            self.limits
                .take(&[BucketKey::new(
                    &format!("{account}/{}", m.source.bucket.value),
                    "s3:read-per-prefix",
                )])
                .await;
            let (out, next) =
                crate::lookup::object_versions_page(&s3, &m.source.bucket.value, &prefix, from)
                    .await?;
            for v in out.versions() {
                sample.objects += 1;
                sample.bytes += v.size().unwrap_or(0).max(0) as u64;
            }
            match next {
                None => {
                    sample.complete = true;
                    break;
                }
                Some(_) if sample.objects > enough => break,
                Some(n) => from = n,
            }
        }
        let batch = mode == BackfillMode::Batch || sample.objects > inline_max;
        if batch && m.report_location(&self.plan.settings).is_none() {
            let span = m.backfill.as_ref().map(|b| b.span).unwrap_or(m.id.span);
            self.problems.push(
                Diagnostic::new(format!(
                    "source bucket {} holds more than {inline_max} objects: its backfill is an S3 Batch Replication job, which needs `backfill_report`",
                    m.source.bucket.value
                ))
                .at(span)
                .help("add `backfill_report: s3://BUCKET/PREFIX` for the job's completion report (with the state on S3 it defaults to the state bucket), or `backfill: inline`"),
            );
        }
        self.out
            .inventory
            .bucket_samples
            .insert(m.id.value.clone(), sample);
        Ok(())
    }

    /// The KMS key of the source bucket's default encryption: the role needs `kms:Decrypt` on it.
    async fn source_bucket_keys(
        &mut self,
        m: &S3Replication,
        account: &str,
        region: &str,
        dst_account: &str,
    ) -> Result<(), ResolveError> {
        let out = self
            .aws
            .s3(account, region)
            .get_bucket_encryption()
            .bucket(&m.source.bucket.value)
            .send()
            .await;
        let key = match out {
            Ok(o) => o
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .and_then(|d| d.kms_master_key_id())
                .map(str::to_string),
            Err(e) => {
                let e = AwsError::from_sdk("s3", "GetBucketEncryption", e);
                if e.code != "ServerSideEncryptionConfigurationNotFoundError" {
                    return Err(e.into());
                }
                None
            }
        };
        let mut keys = Vec::new();
        match key {
            None => self.out.notes.push(format!(
                "source bucket {} has no default SSE-KMS key; ferry's role may decrypt no key, \
                 so only objects not under SSE-KMS replicate",
                m.source.bucket.value
            )),
            Some(k) => match self.describe_key(account, region, &k).await? {
                None => self.problems.push(
                    Diagnostic::new(format!(
                        "source bucket {} is encrypted with {k}, which account `{account}` cannot describe in {region}",
                        m.source.bucket.value
                    ))
                    .at(m.source.bucket.span),
                ),
                Some(f) => {
                    if !f.customer_managed && self.cross_account(account, dst_account) {
                        self.problems.push(
                            Diagnostic::new(format!(
                                "source bucket {} is encrypted with the AWS managed key aws/s3 ({}); cross-account replication needs a customer managed key",
                                m.source.bucket.value, f.arn
                            ))
                            .at(m.source.bucket.span)
                            .help("re-encrypt the source objects under a customer managed key first"),
                        );
                    }
                    keys.push(f.arn.to_string());
                }
            },
        }
        self.out
            .inventory
            .source_keys
            .insert(m.id.value.clone(), keys);
        Ok(())
    }

    /// A bucket's replication configuration has one role for all its rules: if other rules use
    /// another role, ferry would have to change it under them. Refuse, and say what to do.
    async fn replication_role_fits(
        &mut self,
        m: &S3Replication,
        account: &str,
        region: &str,
    ) -> Result<(), ResolveError> {
        let out = self
            .aws
            .s3(account, region)
            .get_bucket_replication()
            .bucket(&m.source.bucket.value)
            .send()
            .await;
        let config = match out {
            Ok(o) => o.replication_configuration,
            Err(e) => {
                let e = AwsError::from_sdk("s3", "GetBucketReplication", e);
                if e.code != "ReplicationConfigurationNotFoundError" {
                    return Err(e.into());
                }
                None
            }
        };
        let Some(config) = config else { return Ok(()) };
        let rule_id = m
            .rule
            .as_ref()
            .and_then(|r| r.value.id.as_ref())
            .map(|s| s.value.clone())
            .unwrap_or_else(|| format!("ferry-{}", m.id.value));
        let others: Vec<&str> = config
            .rules()
            .iter()
            .filter_map(|r| r.id())
            .filter(|r| *r != rule_id)
            .collect();
        // Rules with a Filter need priorities of their own (S3 refuses two equal ones, and
        // only once versioning and the role are already in place).
        let priority = m
            .rule
            .as_ref()
            .and_then(|r| r.value.priority.as_ref())
            .map(|p| p.value as i32)
            .unwrap_or(1);
        if let Some(clash) = config
            .rules()
            .iter()
            .find(|r| r.id() != Some(rule_id.as_str()) && r.priority() == Some(priority))
        {
            let span = m
                .rule
                .as_ref()
                .and_then(|r| r.value.priority.as_ref())
                .map(|p| p.span)
                .or(m.rule.as_ref().map(|r| r.span))
                .unwrap_or(m.id.span);
            self.problems.push(
                Diagnostic::new(format!(
                    "source bucket {} already has rule {} with priority {priority}; replication rules need priorities of their own",
                    m.source.bucket.value,
                    clash.id().unwrap_or("(no id)")
                ))
                .at(span)
                .help("set `rule: { priority: N }` to a priority no other rule of the bucket has"),
            );
        }
        // S3 refuses a configuration that mixes rules of the older schema (a rule-level
        // Prefix, no Filter) with rules that have a Filter, as ferry's has.
        #[allow(deprecated)]
        let old_schema: Vec<&str> = config
            .rules()
            .iter()
            .filter(|r| {
                r.id() != Some(rule_id.as_str()) && r.filter().is_none() && r.prefix().is_some()
            })
            .map(|r| r.id().unwrap_or("(no id)"))
            .collect();
        if !old_schema.is_empty() {
            self.problems.push(
                Diagnostic::new(format!(
                    "source bucket {} has replication rules of the older schema ({}): S3 does not accept them together with ferry's rule, which has a Filter",
                    m.source.bucket.value,
                    old_schema.join(", ")
                ))
                .at(m.source.bucket.span)
                .help("rewrite those rules with `Filter: { Prefix: ... }` (and Priority, DeleteMarkerReplication), then run ferry again"),
            );
        }
        let theirs = config.role();
        let ours = match (&m.role.name, &m.role.arn) {
            (_, Some(a)) => theirs == a.value,
            (Some(n), None) => {
                theirs.starts_with("arn:") && theirs.ends_with(&format!("/{}", n.value))
            }
            _ => true,
        };
        if !others.is_empty() && !ours {
            let span = m
                .role
                .name
                .as_ref()
                .or(m.role.arn.as_ref())
                .map(|s| s.span)
                .unwrap_or(m.id.span);
            self.problems.push(
                Diagnostic::new(format!(
                    "source bucket {} already replicates (rules {}) with role {theirs}; a bucket has one replication role for all its rules",
                    m.source.bucket.value,
                    others.join(", ")
                ))
                .at(span)
                .help(format!(
                    "use that role (`role: {{ arn: {theirs} }}`, used untouched: give it the permissions ferry's rule needs), or remove the other rules first"
                )),
            );
        }
        Ok(())
    }
}
