//! The names the walker schedules by: token buckets, concurrency gates and poll batches. Steps
//! build them from typed parts; each is formatted (and, for the journal, parsed) only here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A token bucket: one quota (`ec2:CopySnapshot`) in one scope (`prod/us-east-1`). Buckets of
/// the same quota share the quota table's entry unless the table names the whole key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    key: String,
    quota_at: usize,
}

impl BucketKey {
    pub fn new(scope: &str, quota: &str) -> Self {
        BucketKey {
            key: format!("{scope}/{quota}"),
            quota_at: scope.len() + 1,
        }
    }
    /// The quota table's name for this bucket (`ec2:CopySnapshot`).
    pub fn quota(&self) -> &str {
        &self.key[self.quota_at..]
    }
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// A concurrency gate: one limit (`snapshot-copies`) for one scope (`prod/eu-west-2`, a key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GateKey {
    key: String,
    limit_len: usize,
}

impl GateKey {
    pub fn new(limit: &str, scope: &str) -> Self {
        GateKey {
            key: format!("{limit}/{scope}"),
            limit_len: limit.len(),
        }
    }
    /// The limit table's name for this gate.
    pub fn limit(&self) -> &str {
        &self.key[..self.limit_len]
    }
    /// What the gate is for (`prod/eu-west-2`).
    pub fn scope(&self) -> &str {
        &self.key[self.limit_len + 1..]
    }
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for GateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// A batch of pending operations polled together: one poller in one account and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PollKey {
    /// Which poller answers (`ec2.snapshot`).
    pub poller: String,
    pub account: String,
    pub region: String,
}

impl PollKey {
    pub fn new(poller: &str, account: &str, region: &str) -> Self {
        PollKey {
            poller: poller.to_string(),
            account: account.to_string(),
            region: region.to_string(),
        }
    }
}

impl fmt::Display for PollKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.poller, self.account, self.region)
    }
}

impl FromStr for PollKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(a), Some(r)) if !p.is_empty() => Ok(PollKey::new(p, a, r)),
            _ => Err(format!(
                "`{s}` is not a poll key (`<poller>/<account>/<region>`)"
            )),
        }
    }
}

// Journaled as the one string it always was.
impl Serialize for PollKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PollKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_parts() {
        let b = BucketKey::new("prod/us-east-1", "ec2:CopySnapshot");
        assert_eq!(b.as_str(), "prod/us-east-1/ec2:CopySnapshot");
        assert_eq!(b.quota(), "ec2:CopySnapshot");
        let g = GateKey::new("snapshot-copies", "prod/eu-west-2");
        assert_eq!(g.limit(), "snapshot-copies");
        let p: PollKey = "ec2.snapshot/prod/eu-west-2".parse().unwrap();
        assert_eq!(p, PollKey::new("ec2.snapshot", "prod", "eu-west-2"));
        assert_eq!(p.to_string(), "ec2.snapshot/prod/eu-west-2");
    }
}
