//! A key reference as a plan writes it (`destination.key`), classified once, here: later
//! layers match on the kind instead of looking at the string again.

use crate::ids::{KeyArn, KeyName};

use super::model::Plan;

/// What a `destination.key` (or a similar field) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key of `keys:`; `lookup` is its alias or ARN, what DescribeKey takes.
    Plan { name: KeyName, lookup: String },
    /// `alias/…`
    Alias(String),
    /// A key id (a UUID or `mrk-…`).
    Id(String),
    /// `arn:aws:kms:…:key/…` (or an alias ARN).
    Arn(KeyArn),
}

impl KeyRef {
    /// What KMS takes to find the key (an alias, id or ARN).
    pub fn lookup(&self) -> &str {
        match self {
            KeyRef::Plan { lookup, .. } => lookup,
            KeyRef::Alias(a) | KeyRef::Id(a) => a,
            KeyRef::Arn(a) => a.as_str(),
        }
    }

    /// The plan key this names, if any.
    pub fn plan_key(&self) -> Option<&KeyName> {
        match self {
            KeyRef::Plan { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// A key id: a UUID, or `mrk-` and 32 hex digits.
pub fn is_key_id(s: &str) -> bool {
    let uuid = |t: &str| {
        let groups: Vec<&str> = t.split('-').collect();
        groups.len() == 5
            && groups
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    uuid(s)
        || s.strip_prefix("mrk-")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

impl Plan {
    /// Classifies a key reference: a name from `keys:` first, then an alias, key id or ARN.
    /// `None` when it is none of those (the checks report it).
    pub fn key_ref(&self, written: &str) -> Option<KeyRef> {
        if let Some(named) = self.keys.iter().find(|k| k.name.value == written) {
            let k = &named.value;
            // A key without either is reported by the checks; it never gets this far.
            let lookup = k
                .alias
                .as_ref()
                .or(k.arn.as_ref())
                .map(|s| s.value.clone())
                .unwrap_or_default();
            return Some(KeyRef::Plan {
                name: KeyName::new(written),
                lookup,
            });
        }
        if written.starts_with("alias/") && written.len() > 6 {
            return Some(KeyRef::Alias(written.to_string()));
        }
        if is_key_id(written) {
            return Some(KeyRef::Id(written.to_string()));
        }
        if written.starts_with("arn:") {
            return Some(KeyRef::Arn(KeyArn::new(written)));
        }
        None
    }
}
