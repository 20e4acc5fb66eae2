//! Identifiers as types: the names of the plan and the ids of AWS resources, from the YAML to
//! the AWS call. Each is formatted and parsed here and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

name!(
    /// A plan account name (`prod`), the key of `accounts:`.
    AccountName
);
name!(
    /// A 12-digit AWS account id.
    AccountId
);
name!(
    /// An AWS region (`eu-west-2`).
    Region
);
name!(
    /// A plan key name, the key of `keys:`.
    KeyName
);
name!(
    /// A migration's `id`.
    MigrationId
);
name!(
    /// An EBS snapshot id (`snap-…`).
    SnapshotId
);
name!(
    /// An AMI id (`ami-…`).
    ImageId
);
name!(
    /// An S3 bucket name.
    BucketName
);

name!(
    /// A KMS key ARN: `arn:aws:kms:<region>:<account>:key/<id>`.
    KeyArn
);

impl KeyArn {
    fn part(&self, i: usize) -> &str {
        self.0.split(':').nth(i).unwrap_or("")
    }
    pub fn region(&self) -> &str {
        self.part(3)
    }
    pub fn account(&self) -> &str {
        self.part(4)
    }
    /// The key id (`1234abcd-…` or `mrk-…`), the last part of the ARN.
    pub fn key_id(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// RDS DB snapshots or Aurora DB cluster snapshots: the same calls with other names and quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DbKind {
    Instance,
    Cluster,
}

impl DbKind {
    /// The ARN resource type (`arn:aws:rds:REGION:ACCOUNT:<this>:NAME`).
    pub fn arn_type(self) -> &'static str {
        match self {
            DbKind::Instance => "snapshot",
            DbKind::Cluster => "cluster-snapshot",
        }
    }
    /// Longest identifier AWS accepts (CopyDBSnapshot 255, CopyDBClusterSnapshot 63).
    pub fn max_identifier(self) -> usize {
        match self {
            DbKind::Instance => 255,
            DbKind::Cluster => 63,
        }
    }
    pub fn noun(self) -> &'static str {
        match self {
            DbKind::Instance => "DB snapshot",
            DbKind::Cluster => "DB cluster snapshot",
        }
    }
}

/// The plan element a step belongs to: a key of `keys:` or a migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Key(KeyName),
    Migration(MigrationId),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Key(k) => write!(f, "key.{k}"),
            Owner::Migration(m) => f.write_str(m.as_str()),
        }
    }
}

/// A step's id, stable across runs: `<owner>/<resource>/<action>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId {
    pub owner: Owner,
    /// What the step acts on within its owner (`snap-…`, `key`, `replica-eu-west-1`).
    pub resource: String,
    /// `copy`, `share`, `unshare`, `grant-access`, …
    pub action: String,
}

impl StepId {
    pub fn new(owner: Owner, resource: impl Into<String>, action: impl Into<String>) -> Self {
        StepId {
            owner,
            resource: resource.into(),
            action: action.into(),
        }
    }

    /// The step of the same owner and resource with another action (the share an unshare undoes).
    pub fn with_action(&self, action: &str) -> StepId {
        StepId::new(self.owner.clone(), self.resource.clone(), action)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.owner, self.resource, self.action)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a step id (`<owner>/<resource>/<action>`)")]
pub struct BadStepId(String);

impl FromStr for StepId {
    type Err = BadStepId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStepId(s.to_string());
        let mut parts = s.splitn(3, '/');
        let (owner, resource, action) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        if owner.is_empty() || resource.is_empty() || action.is_empty() || action.contains('/') {
            return Err(bad());
        }
        let owner = match owner.strip_prefix("key.") {
            Some(k) => Owner::Key(KeyName::new(k)),
            None => Owner::Migration(MigrationId::new(owner)),
        };
        Ok(StepId::new(owner, resource, action))
    }
}

impl Serialize for StepId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The identifier ferry gives its copy of `source`: `ferry-<plan>-<source>[-<suffix>]` in RDS's
/// alphabet (letters, digits, single hyphens, a letter first, no trailing hyphen), lowercased
/// as RDS stores it, and cut to `max` characters with a hash of the whole so that long names
/// stay distinct. Deterministic: it is how a repeat, a resume or a lost answer finds the copy.
pub fn db_copy_identifier(plan: &str, source: &str, suffix: Option<&str>, max: usize) -> String {
    let mut raw = format!("ferry-{plan}-{source}");
    if let Some(s) = suffix {
        raw.push('-');
        raw.push_str(s);
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_end_matches('-').to_string();
    if out.len() <= max {
        return out;
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(raw.as_bytes())[..4]);
    let keep = &out[..max - hash.len() - 1];
    format!("{}-{hash}", keep.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_copy_identifiers_follow_rds_rules() {
        assert_eq!(
            db_copy_identifier("dr", "orders-2026-11-30", None, 255),
            "ferry-dr-orders-2026-11-30"
        );
        assert_eq!(
            db_copy_identifier(
                "Nightly_DR",
                "rds:orders-db-2026-11-30-03-00",
                Some("shared"),
                255
            ),
            "ferry-nightly-dr-rds-orders-db-2026-11-30-03-00-shared"
        );
        let long = "a".repeat(80);
        let a = db_copy_identifier("dr", &long, None, 63);
        let b = db_copy_identifier("dr", &format!("{long}b"), None, 63);
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(id.starts_with(|c: char| c.is_ascii_lowercase()), "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            );
            assert!(!id.contains("--") && !id.ends_with('-'), "{id}");
        }
        assert!(!db_copy_identifier("x-", "-y-", None, 255).contains("--"));
    }

    #[test]
    fn step_ids_round_trip() {
        for s in [
            "key.dr-ebs/key/create",
            "key.app-mrk/replica-eu-west-1/replicate",
            "db-snapshots/snap-0a1b2c3d4e5f60718/copy",
            "golden/ami-0123456789abcdef0-snapshots/unshare",
        ] {
            let id: StepId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: StepId = "key.dr/key/create".parse().unwrap();
        assert_eq!(id.owner, Owner::Key(KeyName::new("dr")));
        assert!("a/b".parse::<StepId>().is_err());
        assert!("a//c".parse::<StepId>().is_err());
    }

    #[test]
    fn key_arns_have_parts() {
        let k = KeyArn::new("arn:aws:kms:eu-west-2:111111111111:key/mrk-1234");
        assert_eq!(k.region(), "eu-west-2");
        assert_eq!(k.account(), "111111111111");
        assert_eq!(k.key_id(), "mrk-1234");
    }
}
