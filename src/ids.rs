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

#[cfg(test)]
mod tests {
    use super::*;

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
