//! serde over our span-keeping node tree: typed values from [`Node`]s, with errors that know
//! which node they came from, and a [`Spanned`] wrapper for values later checks point at.

use std::collections::HashMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Serialize};

use super::diagnostic::{Diagnostic, Span};
use super::yaml::{Node, Value};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T: Default> Default for Spanned<T> {
    fn default() -> Self {
        Spanned::new(T::default(), Span::default())
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

const SPANNED: &str = "$ferry::Spanned";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Spanned<T>, A::Error> {
                let (offset, len, line, column): (usize, usize, usize, usize) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("span missing"))?;
                let value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("value missing"))?;
                Ok(Spanned {
                    value,
                    span: Span {
                        offset,
                        len,
                        line,
                        column,
                    },
                })
            }
        }
        d.deserialize_newtype_struct(SPANNED, V(std::marker::PhantomData))
    }
}

/// Decode one typed value from a node. The error points at the innermost node that was wrong.
pub fn from_node<'a, T: Deserialize<'a>>(node: &'a Node) -> Result<T, Diagnostic> {
    T::deserialize(NodeDe { node, skip: &[] }).map_err(|e| e.into_diagnostic(node.span))
}

/// Like [`from_node`], for a mapping from which some keys were already taken (e.g. `type`).
pub fn from_node_skipping<'a, T: Deserialize<'a>>(
    node: &'a Node,
    skip: &'a [&'a str],
) -> Result<T, Diagnostic> {
    T::deserialize(NodeDe { node, skip }).map_err(|e| e.into_diagnostic(node.span))
}

#[derive(Debug)]
pub struct Error {
    message: String,
    label: Option<String>,
    help: Option<String>,
    span: Option<Span>,
    related: Vec<(Span, String)>,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            label: None,
            help: None,
            span: None,
            related: Vec::new(),
        }
    }
    fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
    fn label(mut self, l: impl Into<String>) -> Self {
        self.label = Some(l.into());
        self
    }
    fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }
    fn into_diagnostic(self, fallback: Span) -> Diagnostic {
        let mut d = Diagnostic::new(self.message).at(self.span.unwrap_or(fallback));
        d.label = self.label;
        d.help = self.help;
        d.related = self.related;
        d
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Error {}

/// The closest known word to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(word, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

pub fn one_of(known: &[&str]) -> String {
    known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(msg.to_string())
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let e = Error::new(format!("unknown key `{field}`")).label("unknown key");
        match suggest(field, expected.iter().copied()) {
            Some(s) => e.help(format!("did you mean `{s}`?")),
            None if expected.is_empty() => e.help("no keys are allowed here"),
            None => e.help(format!("the keys allowed here are {}", one_of(expected))),
        }
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let e = Error::new(format!("unknown value `{variant}`")).label("unknown value");
        match suggest(variant, expected.iter().copied()) {
            Some(s) => e.help(format!("did you mean `{s}`? (one of {})", one_of(expected))),
            None => e.help(format!("expected one of {}", one_of(expected))),
        }
    }
    fn missing_field(field: &'static str) -> Self {
        Error::new(format!("missing required key `{field}`"))
            .label(format!("`{field}` is missing here"))
    }
    fn duplicate_field(field: &'static str) -> Self {
        Error::new(format!("duplicate key `{field}`")).label("duplicate key")
    }
    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Error::new(format!("expected {exp}, found {unexp}"))
    }
    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Error::new(format!("invalid value {unexp}: expected {exp}"))
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    /// Keys of a mapping that the caller has already handled.
    skip: &'a [&'a str],
}

impl<'a> NodeDe<'a> {
    fn mismatch(&self, expected: &str) -> Error {
        let found = self.node.kind();
        let mut e = Error::new(format!("expected {expected}, found {found}"))
            .label(format!("{found} here"))
            .at(self.node.span);
        if expected.contains("string") && matches!(self.node.value, Value::Int(_) | Value::Float(_))
        {
            e = e.help(
                "put it in quotes, e.g. \"012345678901\": YAML reads bare digits as a number",
            );
        }
        if let (true, Value::Str(s)) = (expected == "true or false", &self.node.value)
            && ["yes", "no", "on", "off", "y", "n"].contains(&s.to_lowercase().as_str())
        {
            e = e.help("write `true` or `false`: plans use YAML 1.2, where `yes`/`no` are strings");
        }
        if expected.contains("string") && matches!(self.node.value, Value::Bool(_)) {
            e = e.help("put it in quotes: YAML reads a bare true/false as a boolean");
        }
        e
    }

    fn entries(&self) -> Option<&'a [(Node, Node)]> {
        match &self.node.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    fn with_span<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| e.at(self.node.span))
    }
}

macro_rules! int_method {
    ($method:ident, $ty:ty, $visit:ident, $what:expr) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            match &self.node.value {
                Value::Int(i) => match <$ty>::try_from(*i) {
                    Ok(n) => self.with_span(v.$visit(n)),
                    Err(_) => Err(Error::new(format!(
                        "the number {} is out of range: expected {}",
                        i, $what
                    ))
                    .label("out of range")
                    .at(self.node.span)),
                },
                _ => Err(self.mismatch($what)),
            }
        }
    };
}

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_borrowed_str(s),
            Value::Seq(_) => return self.deserialize_seq(v),
            Value::Map(_) => return self.deserialize_map(v),
        };
        self.with_span(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Bool(b) => self.with_span(v.visit_bool(*b)),
            _ => Err(self.mismatch("true or false")),
        }
    }

    int_method!(deserialize_u8, u8, visit_u8, "a whole number from 0 to 255");
    int_method!(
        deserialize_u16,
        u16,
        visit_u16,
        "a whole number from 0 to 65535"
    );
    int_method!(
        deserialize_u32,
        u32,
        visit_u32,
        "a whole number from 0 to 4294967295"
    );
    int_method!(deserialize_u64, u64, visit_u64, "a whole number, 0 or more");
    int_method!(deserialize_i8, i8, visit_i8, "a whole number");
    int_method!(deserialize_i16, i16, visit_i16, "a whole number");
    int_method!(deserialize_i32, i32, visit_i32, "a whole number");
    int_method!(deserialize_i64, i64, visit_i64, "a whole number");

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_f64(v)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Int(i) => self.with_span(v.visit_f64(*i as f64)),
            Value::Float(f) => self.with_span(v.visit_f64(*f)),
            _ => Err(self.mismatch("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Str(s) => self.with_span(v.visit_borrowed_str(s)),
            _ => Err(self.mismatch("a string")),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Null => self.with_span(v.visit_none()),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Null => self.with_span(v.visit_unit()),
            _ => Err(self.mismatch("nothing")),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        if name == SPANNED {
            let span = self.node.span;
            return v.visit_seq(SpannedAccess {
                span: Some((span.offset, span.len, span.line, span.column)),
                de: Some(self),
            });
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Seq(items) => self.with_span(v.visit_seq(NodeSeq {
                items: items.iter(),
            })),
            _ => Err(self.mismatch("a list")),
        }
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.entries() {
            Some(entries) => self.with_span(v.visit_map(NodeMap::new(entries, self.skip))),
            None => Err(self.mismatch("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        match self.entries() {
            Some(entries) => self.with_span(v.visit_map(NodeMap::new(entries, self.skip))),
            None => {
                let expected = format!("a mapping with keys such as {}", one_of(fields));
                Err(self.mismatch(&expected))
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Str(s) => {
                let d: de::value::StrDeserializer<'_, Error> = s.as_str().into_deserializer();
                self.with_span(v.visit_enum(d))
            }
            _ => Err(self.mismatch(&format!("one of {}", one_of(variants)))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Str(s) => self.with_span(v.visit_borrowed_str(s)),
            _ => match self.node.scalar_text() {
                Some(t) => self.with_span(v.visit_str(&t)),
                None => Err(self.mismatch("a key")),
            },
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
}

/// Feeds the `(span, value)` pair that [`Spanned`]'s visitor expects.
struct SpannedAccess<'a> {
    span: Option<(usize, usize, usize, usize)>,
    de: Option<NodeDe<'a>>,
}

impl<'de> SeqAccess<'de> for SpannedAccess<'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if let Some((a, b, c, d)) = self.span.take() {
            let items = vec![a as u64, b as u64, c as u64, d as u64];
            let inner: de::value::SeqDeserializer<_, Error> =
                de::value::SeqDeserializer::new(items.into_iter());
            return seed.deserialize(inner).map(Some);
        }
        match self.de.take() {
            Some(de) => seed.deserialize(de).map(Some),
            None => Ok(None),
        }
    }
}

struct NodeSeq<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> SeqAccess<'de> for NodeSeq<'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe { node, skip: &[] })
                .map(Some)
                .map_err(|e| e.at(node.span)),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct NodeMap<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    skip: &'a [&'a str],
    value: Option<&'a Node>,
    seen: HashMap<String, Span>,
}

impl<'a> NodeMap<'a> {
    fn new(entries: &'a [(Node, Node)], skip: &'a [&'a str]) -> Self {
        NodeMap {
            entries: entries.iter(),
            skip,
            value: None,
            seen: HashMap::new(),
        }
    }
}

impl<'de> MapAccess<'de> for NodeMap<'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        loop {
            let Some((k, v)) = self.entries.next() else {
                return Ok(None);
            };
            let text = k.scalar_text();
            if let Some(t) = &text {
                if self.skip.contains(&t.as_str()) {
                    continue;
                }
                if let Some(first) = self.seen.get(t) {
                    let mut e = Error::new(format!("duplicate key `{t}`"))
                        .label("defined again here")
                        .help("YAML mappings must not repeat a key; remove one of them")
                        .at(k.span);
                    e.related.push((*first, "first defined here".into()));
                    return Err(e);
                }
                self.seen.insert(t.clone(), k.span);
            }
            self.value = Some(v);
            return seed
                .deserialize(NodeDe { node: k, skip: &[] })
                .map(Some)
                .map_err(|e| e.at(k.span));
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let node = self
            .value
            .take()
            .ok_or_else(|| Error::new("a mapping value was read twice"))?;
        seed.deserialize(NodeDe { node, skip: &[] })
            .map_err(|e| e.at(node.span))
    }
}
