//! The default AWS quota table (aws-facts.md): token buckets per API call and limits on
//! operations in flight. Defaults only: `settings.quotas` overrides any entry by name.

/// EBS snapshot copy throughput (EBS user guide, "Time-based copies"): per copy, fixed.
pub const SNAPSHOT_COPY_MIB_S: f64 = 500.0;
/// EBS snapshot copy throughput per source and destination region pair (adjustable).
pub const REGION_PAIR_MIB_S: f64 = 2000.0;
/// What an incremental snapshot copy is expected to move, as a share of its volume: AWS
/// tells the changed blocks only after the copy (or through EBS direct APIs ferry does not
/// call), so plans and scheduling estimate them; a daily change of 5 % is a common figure.
pub const CHANGED_SHARE_ESTIMATE: f64 = 0.05;

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quota {
    /// A token bucket per (account, region): `burst` calls at once, refilled `per_second`.
    Rate { burst: u32, per_second: f64 },
    /// At most `in_flight` operations running at once per destination (account, region).
    InFlight(u32),
}

/// `(name, quota)`; names are `service:Action` for API buckets and `service:what-in-flight` for
/// concurrency limits.
pub const DEFAULTS: &[(&str, Quota)] = &[
    (
        "ec2:CopySnapshot",
        Quota::Rate {
            burst: 50,
            per_second: 5.0,
        },
    ),
    (
        "ec2:CopyImage",
        Quota::Rate {
            burst: 100,
            per_second: 1.0,
        },
    ),
    (
        "ec2:DescribeSnapshots",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "ec2:DescribeImages",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    // Non-mutating actions the table does not name share EC2's default bucket: 100 and 20/s.
    (
        "ec2:DescribeSnapshotAttribute",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "ec2:DescribeImageAttribute",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "ec2:ModifyImageAttribute",
        Quota::Rate {
            burst: 100,
            per_second: 5.0,
        },
    ),
    (
        "ec2:ModifySnapshotAttribute",
        Quota::Rate {
            burst: 100,
            per_second: 5.0,
        },
    ),
    (
        "ec2:CreateTags",
        Quota::Rate {
            burst: 100,
            per_second: 10.0,
        },
    ),
    (
        "ec2:DeleteTags",
        Quota::Rate {
            burst: 100,
            per_second: 10.0,
        },
    ),
    (
        "ec2:DeleteSnapshot",
        Quota::Rate {
            burst: 100,
            per_second: 5.0,
        },
    ),
    (
        "ec2:DeregisterImage",
        Quota::Rate {
            burst: 100,
            per_second: 5.0,
        },
    ),
    (
        "kms:CreateGrant",
        Quota::Rate {
            burst: 50,
            per_second: 50.0,
        },
    ),
    (
        "kms:RetireGrant",
        Quota::Rate {
            burst: 50,
            per_second: 50.0,
        },
    ),
    (
        "kms:RevokeGrant",
        Quota::Rate {
            burst: 50,
            per_second: 50.0,
        },
    ),
    (
        "kms:PutKeyPolicy",
        Quota::Rate {
            burst: 15,
            per_second: 15.0,
        },
    ),
    (
        "kms:EnableKeyRotation",
        Quota::Rate {
            burst: 15,
            per_second: 15.0,
        },
    ),
    (
        "kms:GetKeyPolicy",
        Quota::Rate {
            burst: 1000,
            per_second: 1000.0,
        },
    ),
    (
        "kms:DescribeKey",
        Quota::Rate {
            burst: 2000,
            per_second: 2000.0,
        },
    ),
    (
        "kms:ListGrants",
        Quota::Rate {
            burst: 100,
            per_second: 100.0,
        },
    ),
    (
        "kms:CreateKey",
        Quota::Rate {
            burst: 5,
            per_second: 5.0,
        },
    ),
    (
        "kms:ReplicateKey",
        Quota::Rate {
            burst: 5,
            per_second: 5.0,
        },
    ),
    (
        "kms:TagResource",
        Quota::Rate {
            burst: 10,
            per_second: 10.0,
        },
    ),
    (
        "kms:cryptographic",
        Quota::Rate {
            burst: 10_000,
            per_second: 10_000.0,
        },
    ),
    (
        "s3:write-per-prefix",
        Quota::Rate {
            burst: 3500,
            per_second: 3500.0,
        },
    ),
    (
        "s3:read-per-prefix",
        Quota::Rate {
            burst: 5500,
            per_second: 5500.0,
        },
    ),
    // RDS publishes no per-action request rates: these assume EC2's (burst, refill) for the
    // same kinds of call, well under what RDS answers in practice.
    (
        "rds:CopyDBSnapshot",
        Quota::Rate {
            burst: 50,
            per_second: 5.0,
        },
    ),
    (
        "rds:CopyDBClusterSnapshot",
        Quota::Rate {
            burst: 50,
            per_second: 5.0,
        },
    ),
    (
        "rds:DeleteDBSnapshot",
        Quota::Rate {
            burst: 50,
            per_second: 5.0,
        },
    ),
    (
        "rds:DeleteDBClusterSnapshot",
        Quota::Rate {
            burst: 50,
            per_second: 5.0,
        },
    ),
    (
        "rds:ModifyDBSnapshotAttribute",
        Quota::Rate {
            burst: 100,
            per_second: 5.0,
        },
    ),
    (
        "rds:ModifyDBClusterSnapshotAttribute",
        Quota::Rate {
            burst: 100,
            per_second: 5.0,
        },
    ),
    (
        "rds:DescribeDBSnapshots",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "rds:DescribeDBClusterSnapshots",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "rds:DescribeDBSnapshotAttributes",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "rds:DescribeDBClusterSnapshotAttributes",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "rds:DescribeOptionGroups",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    (
        "rds:DescribeAccountAttributes",
        Quota::Rate {
            burst: 100,
            per_second: 20.0,
        },
    ),
    ("ec2:snapshot-copies-in-flight", Quota::InFlight(20)),
    // ferry's own limit, not AWS's: the most snapshot copies that move bytes at once from one
    // source region into one destination (account, region); quick copies (ending within a few
    // polls at the pace seen) do not count. Within it, the pair's slots are learned from its
    // copies' pace (steps/pace.rs): from AWS's pair over copy throughput for time-based copies
    // (2,000 / 500 MiB/s: 4), more while the copies keep their pace as more run, and as many
    // as keep the pair busy once the pace is seen to fall with the copies in flight. 20 (no
    // limit beyond the one above) by default.
    ("ec2:snapshot-copies-per-region-pair", Quota::InFlight(20)),
    ("ec2:image-copies-in-flight", Quota::InFlight(300)),
    // RDS: 20 DB snapshot copies in progress per destination region and account; Aurora: 5
    // cluster snapshot copies (aws-facts-next.md §1).
    ("rds:snapshot-copies-in-flight", Quota::InFlight(20)),
    ("rds:cluster-snapshot-copies-in-flight", Quota::InFlight(5)),
];

pub fn default_for(name: &str) -> Option<Quota> {
    DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, q)| *q)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    DEFAULTS.iter().map(|(n, _)| *n)
}

/// The token bucket of one API call (`ec2:CopySnapshot`) in one account and region.
pub fn bucket(account: &str, region: &str, api: &str) -> crate::exec::BucketKey {
    crate::exec::BucketKey::new(&format!("{account}/{region}"), api)
}
