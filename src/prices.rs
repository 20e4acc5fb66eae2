//! What AWS charges for the work ferry plans, where `ferry plan` shows a cost: a dated table,
//! so a reader knows how old the numbers are. Prices are the public list prices in us-east-1;
//! other regions differ slightly. Transfer and request charges of the copies themselves are not
//! included (they are the same however the objects are copied).

/// When the table was read, and from where.
pub const READ_ON: &str = "2026-12-01";
pub const SOURCE: &str =
    "aws.amazon.com/s3/pricing, Management & insights: S3 Batch Operations (us-east-1)";

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
