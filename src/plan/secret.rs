//! Values that must never reach a terminal, a log, the journal or a file ferry writes: the one
//! type every secret field of the plan has (`external_id` today).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

/// A secret: only `expose` gives the value out (to the AWS call that needs it). Debug and
/// Serialize show its fingerprint, never the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// In the plan's schema a secret is the string it is written as.
impl JsonSchema for Secret {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:<hex>`: what the stored plan keeps instead of the value, so that a resume can
    /// tell the same secret from another.
    pub fn fingerprint(&self) -> String {
        if self.is_fingerprint() {
            return self.0.clone();
        }
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(self.0.as_bytes()))
        )
    }

    /// Whether this is a stored plan's fingerprint rather than the secret.
    pub fn is_fingerprint(&self) -> bool {
        self.0
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.fingerprint())
    }
}

/// `text` (a plan file) with every secret's value replaced by its fingerprint, quoted: what
/// ferry stores with a run. `spans` are where the values are written (byte offset, length).
pub fn redact(text: &str, secrets: &[(usize, usize, &Secret)]) -> String {
    let mut out = text.to_string();
    let mut sorted: Vec<&(usize, usize, &Secret)> = secrets.iter().collect();
    // From the end, so earlier offsets stay right.
    sorted.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (offset, len, secret) in sorted {
        let Some(written) = out.get(*offset..offset + len) else {
            continue;
        };
        // Keep the quoting as written; a fingerprint is a valid plain scalar too.
        let fp = secret.fingerprint();
        let with = match written.chars().next() {
            Some(q @ ('"' | '\'')) => format!("{q}{fp}{q}"),
            _ => fp,
        };
        out.replace_range(*offset..offset + len, &with);
    }
    out
}

/// The names of the plan's secret fields.
pub const SECRET_FIELDS: &[&str] = &["external_id"];

/// `text` with the value of every secret field masked by `*`, byte for byte (so that a
/// diagnostic's line and column still point at the same place): for showing plan lines in
/// errors, whether or not the plan could be read.
pub fn mask(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for field in SECRET_FIELDS {
        let mut from = 0;
        while let Some(i) = text[from..].find(field) {
            let start = from + i + field.len();
            from = start;
            let rest = &text[start..];
            let after_key = rest.trim_start_matches([' ', '\t', '"', '\'']);
            let Some(value) = after_key.strip_prefix(':') else {
                continue;
            };
            let value_at = text.len() - value.trim_start_matches([' ', '\t']).len();
            let v = &text[value_at..];
            let end = match v.chars().next() {
                Some(q @ ('"' | '\'')) => v[1..].find(q).map_or(v.len(), |e| e + 2),
                _ => v
                    .find([',', '}', '#', '\n'])
                    .map_or(v.len(), |e| v[..e].trim_end().len()),
            };
            for b in &mut bytes[value_at..value_at + end] {
                if *b != b'\n' {
                    *b = b'*';
                }
            }
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_only_its_fingerprint() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            !json.contains("hunter2") && json.contains("sha256:"),
            "{json}"
        );
        assert!(!s.is_fingerprint());
        assert!(Secret::new(s.fingerprint()).is_fingerprint());
        assert_eq!(Secret::new(s.fingerprint()).fingerprint(), s.fingerprint());
    }

    #[test]
    fn masking_hides_every_external_id_and_keeps_positions() {
        let text = "  backup:\n    external_id: \"s3cr3t\"\n  x: { role_arn: r, external_id: plain-one, y: 1 }\n";
        let out = mask(text);
        assert!(
            !out.contains("s3cr3t") && !out.contains("plain-one"),
            "{out}"
        );
        assert_eq!(out.len(), text.len());
        assert!(out.contains("external_id: ********\n"), "{out}");
        assert!(out.contains("external_id: *********, y: 1"), "{out}");
    }

    #[test]
    fn redacting_replaces_the_value_where_it_is_written() {
        let text = "a: 1\nexternal_id: \"hunter2\"\nb: 2\n";
        let at = text.find("\"hunter2\"").unwrap();
        let s = Secret::new("hunter2");
        let out = redact(text, &[(at, "\"hunter2\"".len(), &s)]);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains(&format!("external_id: \"{}\"", s.fingerprint())));
        assert!(out.ends_with("b: 2\n"));
    }
}
