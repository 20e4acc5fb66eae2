//! YAML text -> a tree of nodes that remember where they stand in the file.
//!
//! serde-saphyr does the parsing (with its budgets against alias bombs and deep nesting);
//! we keep our own tree so that every later error, not only the first, can point at a line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::diagnostic::{Diagnostic, Span};

/// Plans are small documents; anything bigger is almost certainly the wrong file.
pub const MAX_PLAN_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    /// What a user would call this kind of value, for "expected X, found Y".
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar key or value, as the user wrote it.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some("null".into()),
            _ => None,
        }
    }
}

/// Parse `text` into a node tree. Rejects what is not a plan before YAML sees it.
pub fn parse(text: &str) -> Result<Node, Diagnostic> {
    if text.len() > MAX_PLAN_BYTES {
        return Err(Diagnostic::new(format!(
            "the plan is {} bytes; a plan file may be at most {} bytes (is this the right file?)",
            text.len(),
            MAX_PLAN_BYTES
        ))
        .at(Span::start()));
    }
    if let Some(pos) = text.find('\0') {
        return Err(Diagnostic::new(
            "the plan contains a NUL byte: this looks like a binary file, not YAML",
        )
        .at(Span::point(text, pos)));
    }
    if text.trim().is_empty() {
        return Err(Diagnostic::new("the plan is empty")
            .at(Span::start())
            .help("a plan starts with `version: 1` and `name: ...`; see plans/ for examples"));
    }

    let mut options = serde_saphyr::options::Options::default();
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::PassThrough;
    options.strict_booleans = true;
    options.with_snippet = false;
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_PLAN_BYTES);
    budget.max_depth = 32;
    budget.max_aliases = 1_000;
    budget.max_nodes = 200_000;
    budget.max_documents = 1;
    options.budget = Some(budget);

    match serde_saphyr::from_str_with_options::<Option<RawNode>>(text, options) {
        Ok(Some(node)) => Ok(node.0),
        Ok(None) => Err(Diagnostic::new("the plan is empty").at(Span::start())),
        Err(err) => Err(from_yaml_error(text, &err)),
    }
}

fn from_yaml_error(text: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let message = err.to_string();
    // serde-saphyr appends its own location; we show ours, so keep only the first line.
    let message = message.lines().next().unwrap_or("invalid YAML").trim();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .trim_end_matches(':')
        .to_string();
    let span = err
        .location()
        .map(|loc| Span::from_line_col(text, loc.line() as usize, loc.column() as usize))
        .unwrap_or_else(Span::start);
    let lowered = message.to_lowercase();
    let message = if lowered.contains("budget breached") {
        "the document expands to too many values (through anchors and aliases, or sheer size)"
            .to_string()
    } else {
        message
    };
    let help = if lowered.contains("alias") || lowered.contains("budget") {
        Some("anchors and aliases are limited in plans; write the values out")
    } else if lowered.contains("depth")
        || lowered.contains("nesting")
        || lowered.contains("recursion")
    {
        Some("plans nest only a few levels deep")
    } else if lowered.contains("tab") {
        Some("indent YAML with spaces, not tabs")
    } else {
        None
    };
    let d = Diagnostic::new(format!("invalid YAML: {message}")).at(span);
    match help {
        Some(h) => d.help(h),
        None => d,
    }
}

/// serde adapter: a node read through serde-saphyr's span-aware wrapper.
struct RawNode(Node);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<RawValue>::deserialize(deserializer)?;
        let loc = spanned.referenced;
        let span = Span {
            offset: loc.span().byte_offset().unwrap_or(0) as usize,
            len: loc.span().byte_len().unwrap_or(0) as usize,
            line: loc.line() as usize,
            column: loc.column() as usize,
        };
        Ok(RawNode(Node {
            value: spanned.value.0,
            span,
        }))
    }
}

struct RawValue(Value);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue(Value::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(RawValue(Value::Int(i))),
            Err(_) => Ok(RawValue(Value::Float(v as f64))),
        }
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue(Value::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawValue, E> {
        Ok(RawValue(Value::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue(Value::Str(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue(Value::Str(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawValue, E> {
        Ok(RawValue(Value::Str(
            String::from_utf8_lossy(v).into_owned(),
        )))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(RawNode(n)) = seq.next_element::<RawNode>()? {
            items.push(n);
        }
        Ok(RawValue(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(RawNode(k)) = map.next_key::<RawNode>()? {
            let RawNode(v) = map.next_value::<RawNode>()?;
            entries.push((k, v));
        }
        Ok(RawValue(Value::Map(entries)))
    }
}
