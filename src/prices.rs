//! What AWS charges for the work ferry plans, where `ferry plan` shows a cost: a dated table,
//! so a reader knows how old the numbers are. Prices are the public list prices in us-east-1
//! (other regions differ slightly); the estimate is a preview, not a bill.

/// When the table was read, and from where.
pub const READ_ON: &str = "2026-12-01";
pub const SOURCE: &str =
    "aws.amazon.com/s3/pricing, Management & insights: S3 Batch Operations (us-east-1)";
/// Where the rest of the table is from.
pub const SOURCE_ESTIMATE: &str = "aws.amazon.com/ebs/pricing, /kms/pricing, /s3/pricing, \
     /ec2/pricing/on-demand (data transfer), us-east-1";

/// EBS snapshot storage, Standard tier, per GB-month (a copy in another region is stored,
/// and billed, there: incremental copies only for their changed blocks).
pub const SNAPSHOT_STORAGE_PER_GB_MONTH_USD: f64 = 0.05;
/// Data transfer from us-east-1 to another AWS region, per GB (what an EBS snapshot copy, an
/// RDS snapshot copy or an S3 object replicated or copied across regions is charged).
pub const TRANSFER_BETWEEN_REGIONS_PER_GB_USD: f64 = 0.02;
/// A KMS key (customer managed, or each multi-Region replica) per month.
pub const KMS_KEY_PER_MONTH_USD: f64 = 1.0;
/// A KMS request ($0.03 per 10,000).
pub const KMS_PER_REQUEST_USD: f64 = 0.03 / 10_000.0;
/// An S3 PUT, COPY, POST or LIST request, S3 Standard ($0.005 per 1,000).
pub const S3_PUT_PER_REQUEST_USD: f64 = 0.005 / 1_000.0;

/// S3 Batch Operations: per job.
pub const BATCH_PER_JOB_USD: f64 = 0.25;
/// S3 Batch Operations: per million object operations (tasks) performed.
pub const BATCH_PER_MILLION_TASKS_USD: f64 = 1.00;
/// S3 Batch Operations manifest generation (a generated manifest): per million objects listed.
pub const MANIFEST_PER_MILLION_OBJECTS_USD: f64 = 0.015;

/// What one Batch Replication job over `objects` object versions costs, with a generated
/// manifest listing `listed` objects (the whole bucket under the rule's prefix).
pub fn batch_replication_usd(objects: u64, listed: u64) -> f64 {
    BATCH_PER_JOB_USD
        + objects as f64 / 1e6 * BATCH_PER_MILLION_TASKS_USD
        + listed as f64 / 1e6 * MANIFEST_PER_MILLION_OBJECTS_USD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_costs_its_fee_plus_its_objects() {
        assert!((batch_replication_usd(0, 0) - 0.25).abs() < 1e-9);
        let m = batch_replication_usd(2_000_000, 2_000_000);
        assert!((m - (0.25 + 2.0 + 0.03)).abs() < 1e-9, "{m}");
    }
}
