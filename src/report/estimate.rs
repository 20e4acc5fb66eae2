//! What a live plan is expected to move, take and cost, per migration and in all: the bytes
//! of the copies it will make (full or incremental, as the compiler expects them), the time
//! they take at AWS's copy throughput, and a price from the dated table in `prices`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::plan::{PlanDocument, Shown};
use crate::graph::{PlanGraph, PlannedStep, StepSpec};
use crate::ids::Owner;
use crate::prices;
use crate::quotas::{REGION_PAIR_MIB_S, SNAPSHOT_COPY_MIB_S};
use crate::resolve::Resolution;
use crate::steps::Action;

/// One migration's (or the plan's) estimate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Estimate {
    /// Bytes of full copies (a first copy to the region, another key, an AMI or DB snapshot,
    /// objects).
    pub bytes_full: u64,
    /// Bytes of incremental snapshot copies (the blocks changed since the copy before, an
    /// estimate: AWS tells them only once copied).
    pub bytes_incremental: u64,
    /// Snapshot, AMI and DB snapshot copies.
    pub copies_full: u64,
    pub copies_incremental: u64,
    /// S3 objects to copy or replicate (their bytes count as full).
    pub objects: u64,
    /// Of those bytes, what crosses regions (what AWS charges transfer for).
    pub bytes_between_regions: u64,
    /// Seconds the copies take at AWS's snapshot copy throughput (500 MiB/s per copy, 2,000
    /// MiB/s per region pair), each volume's copies one after another.
    pub seconds: f64,
    pub usd: Usd,
}

/// Dollars, at the list prices of `prices` (us-east-1).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usd {
    /// Data transfer between regions, once.
    pub transfer: f64,
    /// Snapshot storage the copies add in their destinations, per month.
    pub snapshot_storage_per_month: f64,
    /// KMS keys (and replica keys) created, per month.
    pub keys_per_month: f64,
    /// ferry's own API requests that are charged (KMS and S3; EC2 and RDS calls are free).
    pub requests: f64,
    /// Object copies (PUT requests) or S3 Batch Operations jobs and tasks, once.
    pub s3: f64,
    /// What the run costs once (transfer, requests, S3).
    pub once: f64,
    /// What the plan adds per month (storage, keys).
    pub per_month: f64,
}

/// One migration's estimate, as `ferry plan --output json` carries it.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationEstimate {
    pub id: String,
    pub estimate: Estimate,
}

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

fn gib(size_gib: i32) -> u64 {
    u64::try_from(size_gib).unwrap_or(0) << 30
}

/// One copy (or object copy) the plan will make.
struct Copy {
    bytes: u64,
    incremental: bool,
    between_regions: bool,
    /// Its chain's bytes from it on: the chain's critical path at one copy's throughput.
    chain_bytes: u64,
    /// S3 objects (0: a snapshot copy, stored as snapshot storage).
    objects: u64,
}

/// The estimates of a live plan: per migration (in plan order), and the plan's total (keys
/// included, which belong to no migration).
pub fn estimate(
    doc: &PlanDocument,
    graph: &PlanGraph,
    resolution: &Resolution,
) -> (Vec<MigrationEstimate>, Estimate) {
    let mut per: BTreeMap<String, (Vec<Copy>, Estimate)> = BTreeMap::new();
    let mut total = Estimate::default();
    // The document lists the graph's steps in its order (`PlanDocument::offline`).
    for (shown, step) in doc.steps.iter().zip(graph.in_order()) {
        debug_assert_eq!(shown.id, step.id.to_string());
        // What will be made or changed: not what is done, in progress, or deleted.
        if !matches!(shown.change, Some(Shown::Change(a)) if a != Action::Delete) {
            continue;
        }
        let Owner::Migration(m) = &step.id.owner else {
            // Keys: a month each, created or replicated.
            if matches!(
                step.spec,
                StepSpec::CreateKey(_) | StepSpec::ReplicateKey(_)
            ) {
                total.usd.keys_per_month += prices::KMS_KEY_PER_MONTH_USD;
            }
            if step.kind().as_str().starts_with("kms.") {
                total.usd.requests += prices::KMS_PER_REQUEST_USD;
            }
            continue;
        };
        let (copies, e) = per.entry(m.to_string()).or_default();
        charge(step, resolution, copies, e);
    }
    let mut out = Vec::new();
    for m in graph_migrations(graph) {
        let Some((copies, mut e)) = per.remove(&m) else {
            continue;
        };
        finish(&copies, &mut e);
        add(&mut total, &e);
        out.push(MigrationEstimate { id: m, estimate: e });
    }
    total.usd.per_month = total.usd.snapshot_storage_per_month + total.usd.keys_per_month;
    (out, total)
}

/// Migration ids in the order their steps come.
fn graph_migrations(graph: &PlanGraph) -> Vec<String> {
    let mut seen = Vec::new();
    for s in graph.in_order() {
        if let Owner::Migration(m) = &s.id.owner
            && !seen.iter().any(|x: &String| x == m.as_str())
        {
            seen.push(m.to_string());
        }
    }
    seen
}

/// What one changing step of a migration adds.
fn charge(step: &PlannedStep, r: &Resolution, copies: &mut Vec<Copy>, e: &mut Estimate) {
    let region = step.scope.region.as_ref().map(|r| r.as_str());
    let other_region = |from: Option<&str>| from.is_some() && from != region;
    match &step.spec {
        StepSpec::CopySnapshot(c) if c.serves.is_none() => copies.push(Copy {
            bytes: c.transfer.bytes,
            incremental: c.transfer.incremental,
            between_regions: other_region(Some(c.source_region.as_str())),
            chain_bytes: c.transfer.chain_bytes,
            objects: 0,
        }),
        StepSpec::CopyImage(c) if c.serves.is_none() => {
            let bytes = r
                .inventory
                .image_snapshots
                .get(c.source.as_str())
                .into_iter()
                .flatten()
                .map(|s| gib(r.inventory.sizes.get(s).copied().unwrap_or(0)))
                .sum();
            copies.push(Copy {
                bytes,
                incremental: false,
                between_regions: other_region(Some(c.source_region.as_str())),
                chain_bytes: bytes,
                objects: 0,
            });
        }
        StepSpec::CopyDbSnapshot(c) => {
            let bytes = r
                .inventory
                .db_snapshots
                .values()
                .flatten()
                .find(|s| s.id == c.origin)
                .map_or(0, |s| gib(s.size_gib));
            copies.push(Copy {
                bytes,
                incremental: false,
                between_regions: other_region(Some(c.source.region.as_str())),
                chain_bytes: bytes,
                objects: 0,
            });
        }
        StepSpec::Backfill(b) => {
            if let Some(s) = r
                .inventory
                .bucket_samples
                .get(step.id.owner.to_string().as_str())
            {
                copies.push(Copy {
                    bytes: s.bytes,
                    incremental: false,
                    between_regions: other_region(b.source_region.as_ref().map(|r| r.as_str())),
                    chain_bytes: 0,
                    objects: s.objects,
                });
                e.usd.s3 += s.objects as f64 * prices::S3_PUT_PER_REQUEST_USD;
            }
        }
        StepSpec::BatchReplication(b) => {
            if let Some(s) = r.inventory.bucket_samples.get(b.migration.as_str()) {
                copies.push(Copy {
                    bytes: s.bytes,
                    incremental: false,
                    between_regions: true,
                    chain_bytes: 0,
                    objects: s.objects,
                });
                e.usd.s3 += prices::batch_replication_usd(s.objects, s.objects);
            }
        }
        _ => {}
    }
    let kind = step.kind().as_str();
    if kind.starts_with("kms.") {
        e.usd.requests += prices::KMS_PER_REQUEST_USD;
    } else if kind.starts_with("s3.") {
        e.usd.requests += prices::S3_PUT_PER_REQUEST_USD;
    }
}

/// Sums a migration's copies, its time and its price.
fn finish(copies: &[Copy], e: &mut Estimate) {
    let mut chain = 0u64;
    let mut snapshot_bytes = 0u64;
    for c in copies {
        if c.objects > 0 {
            e.objects += c.objects;
            e.bytes_full += c.bytes;
        } else if c.incremental {
            e.bytes_incremental += c.bytes;
            e.copies_incremental += 1;
        } else {
            e.bytes_full += c.bytes;
            e.copies_full += 1;
        }
        if c.between_regions {
            e.bytes_between_regions += c.bytes;
        }
        if c.objects == 0 {
            snapshot_bytes += c.bytes;
            chain = chain.max(c.chain_bytes);
        }
    }
    // The copies share their region pair's throughput; a chain's copies go one at a time.
    let shared = snapshot_bytes as f64 / (REGION_PAIR_MIB_S * MIB);
    let longest = chain as f64 / (SNAPSHOT_COPY_MIB_S * MIB);
    e.seconds = shared.max(longest);
    e.usd.transfer =
        e.bytes_between_regions as f64 / GIB * prices::TRANSFER_BETWEEN_REGIONS_PER_GB_USD;
    e.usd.snapshot_storage_per_month =
        snapshot_bytes as f64 / GIB * prices::SNAPSHOT_STORAGE_PER_GB_MONTH_USD;
    e.usd.once = e.usd.transfer + e.usd.requests + e.usd.s3;
    e.usd.per_month = e.usd.snapshot_storage_per_month + e.usd.keys_per_month;
}

fn add(total: &mut Estimate, e: &Estimate) {
    total.bytes_full += e.bytes_full;
    total.bytes_incremental += e.bytes_incremental;
    total.copies_full += e.copies_full;
    total.copies_incremental += e.copies_incremental;
    total.objects += e.objects;
    total.bytes_between_regions += e.bytes_between_regions;
    // Migrations run side by side: the plan takes as long as its longest.
    total.seconds = total.seconds.max(e.seconds);
    total.usd.transfer += e.usd.transfer;
    total.usd.snapshot_storage_per_month += e.usd.snapshot_storage_per_month;
    total.usd.requests += e.usd.requests;
    total.usd.s3 += e.usd.s3;
    total.usd.once = total.usd.transfer + total.usd.requests + total.usd.s3;
}

/// Bytes as a person reads them (binary units, one decimal).
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A duration as a person reads it: `1h 50m`, `4m`, `20s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s.div_ceil(60)),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The estimate lines under a live plan's summary.
pub fn text(migrations: &[MigrationEstimate], total: &Estimate) -> String {
    if migrations.is_empty() && total.usd.keys_per_month == 0.0 {
        return String::new();
    }
    let mut out = format!(
        "\nEstimate (list prices of {}, {}):\n",
        prices::READ_ON,
        prices::SOURCE_ESTIMATE
    );
    for m in migrations {
        let e = &m.estimate;
        if e.copies_full + e.copies_incremental == 0 {
            if e.objects > 0 {
                out.push_str(&format!(
                    "  {}: {} in {} object{} to copy; ${:.2} once\n",
                    m.id,
                    bytes(e.bytes_full),
                    e.objects,
                    if e.objects == 1 { "" } else { "s" },
                    e.usd.once,
                ));
            }
            continue;
        }
        out.push_str(&format!(
            "  {}: {} to move ({} in {} full {}, {} in {} incremental), about {} at AWS's copy throughput; ${:.2} once, ${:.2}/month\n",
            m.id,
            bytes(e.bytes_full + e.bytes_incremental),
            bytes(e.bytes_full),
            e.copies_full,
            if e.copies_full == 1 { "copy" } else { "copies" },
            bytes(e.bytes_incremental),
            e.copies_incremental,
            duration(e.seconds),
            e.usd.once,
            e.usd.per_month,
        ));
    }
    out.push_str(&format!(
        "  in all: ${:.2} once (transfer ${:.2}, requests ${:.2}, S3 ${:.2}), ${:.2}/month (snapshot storage ${:.2}, keys ${:.2})\n",
        total.usd.once,
        total.usd.transfer,
        total.usd.requests,
        total.usd.s3,
        total.usd.per_month,
        total.usd.snapshot_storage_per_month,
        total.usd.keys_per_month,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_timed_by_its_copies_in_turn_and_the_pair_by_its_bytes() {
        let full = 1000u64 << 30;
        let inc = 50u64 << 30;
        let copies: Vec<Copy> = std::iter::once(Copy {
            bytes: full,
            incremental: false,
            between_regions: true,
            chain_bytes: full + 9 * inc,
            objects: 0,
        })
        .chain((0..9).map(|k| Copy {
            bytes: inc,
            incremental: true,
            between_regions: true,
            chain_bytes: (9 - k) * inc,
            objects: 0,
        }))
        .collect();
        let mut e = Estimate::default();
        finish(&copies, &mut e);
        assert_eq!((e.copies_full, e.copies_incremental), (1, 9));
        assert_eq!(e.bytes_full, full);
        assert_eq!(e.bytes_incremental, 9 * inc);
        // One chain: its 1,450 GiB one copy at a time at 500 MiB/s (2,969.6 s), longer than
        // the pair's 2,000 MiB/s.
        assert!(
            (e.seconds - 1450.0 * 1024.0 / 500.0).abs() < 1e-6,
            "{}",
            e.seconds
        );
        let gb = 1450.0;
        assert!((e.usd.transfer - gb * prices::TRANSFER_BETWEEN_REGIONS_PER_GB_USD).abs() < 1e-9);
        assert_eq!(duration(e.seconds), "50m");
        assert_eq!(bytes(e.bytes_full), "1000.0 GiB");
    }
}
