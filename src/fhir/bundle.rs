//! Batch and transaction Bundles (docs/AUTHORIZATION.md §6): parse the JSON body within a
//! nesting limit and pull out each entry's `request` and the conditional references it carries.
//!
//! Pure logic; only `POST /` bodies come here, so the hot path never does.

use std::{cell::Cell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::json::{self, Members, Text, Walk};

/// `Bundle.type` values the guard accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BundleKind {
    Batch,
    Transaction,
}

/// What one entry asks for, before classification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// `request.method`.
    pub(crate) method: Option<String>,
    /// `request.url`.
    pub(crate) url: Option<String>,
    /// `request.ifNoneExist`.
    pub(crate) if_none_exist: Option<String>,
    /// Whether `resource` is itself a Bundle.
    pub(crate) nested_bundle: bool,
    /// Whether the entry has a `resource`.
    pub(crate) has_resource: bool,
    /// `resource.resourceType`, when a string.
    pub(crate) resource_type: Option<String>,
    /// `resource.id`, when a string.
    pub(crate) resource_id: Option<String>,
    /// Whether `request` or one of its fields has the wrong JSON type.
    pub(crate) malformed: bool,
    /// Every `reference` in `resource` that carries a `?` (a conditional reference, in any spelling).
    pub(crate) conditional_references: Vec<String>,
}

impl RawEntry {
    fn malformed() -> Self {
        Self {
            malformed: true,
            ..Self::default()
        }
    }
}

/// Why a body is not a bundle the guard can check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BundleError {
    /// Not JSON, or nested deeper than the limit: answered 400.
    Malformed,
    /// JSON, but not a Bundle: denied.
    NotABundle,
    /// A Bundle of another type (`collection`, `history`, `document`, …): denied.
    WrongType,
    /// More entries than the limit: answered 400.
    TooManyEntries,
}

/// How much of a Bundle the guard reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Deepest nesting of objects and arrays.
    pub(crate) max_depth: usize,
    /// Most entries.
    pub(crate) max_entries: usize,
}

/// Whether `body` nests objects and arrays deeper than `max_depth`. Scans bytes without
/// allocating, so a hostile body is refused before any tree is built.
pub(crate) fn too_deep(body: &[u8], max_depth: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a batch or transaction Bundle.
///
/// Streams the body: only each entry's `request` members and the conditional references in its
/// `resource` are kept, so a body costs its bytes and those strings, never a tree of values. An
/// object that repeats a member name is [`BundleError::Malformed`].
pub(crate) fn parse(
    body: &[u8],
    limits: Limits,
) -> Result<(BundleKind, Vec<RawEntry>), BundleError> {
    if too_deep(body, limits.max_depth) {
        return Err(BundleError::Malformed);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let too_many = Cell::new(false);
    let root = Root {
        max_entries: limits.max_entries,
        too_many: &too_many,
    }
    .deserialize(&mut deserializer)
    .map_err(|_| {
        // The list stops the parse at the first entry past the limit.
        if too_many.get() {
            BundleError::TooManyEntries
        } else {
            BundleError::Malformed
        }
    })?;
    deserializer.end().map_err(|_| BundleError::Malformed)?;
    let root = root?;
    if root.resource_type.as_deref() != Some("Bundle") {
        return Err(BundleError::NotABundle);
    }
    let kind = match root.bundle_type.as_deref() {
        Some("batch") => BundleKind::Batch,
        Some("transaction") => BundleKind::Transaction,
        _ => return Err(BundleError::WrongType),
    };
    match root.entries {
        Entries::Absent => Ok((kind, Vec::new())),
        Entries::List(entries) => Ok((kind, entries)),
        Entries::NotAList => Err(BundleError::NotABundle),
    }
}

/// What the top level of the body holds, as far as the guard reads it.
struct Bundle {
    resource_type: Option<String>,
    bundle_type: Option<String>,
    entries: Entries,
}

enum Entries {
    Absent,
    List(Vec<RawEntry>),
    NotAList,
}

/// The body's top level: an object (a Bundle or not), or any other value (not a Bundle).
struct Root<'a> {
    max_entries: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = Result<Bundle, BundleError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = Result<Bundle, BundleError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bundle")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        let mut bundle = Bundle {
            resource_type: None,
            bundle_type: None,
            entries: Entries::Absent,
        };
        while let Some(name) = json::next_name(&mut map, &mut members)? {
            match &*name {
                "resourceType" => bundle.resource_type = map.next_value::<Text>()?.into_string(),
                "type" => bundle.bundle_type = map.next_value::<Text>()?.into_string(),
                "entry" => {
                    bundle.entries = map.next_value_seed(EntryList {
                        max: self.max_entries,
                        too_many: self.too_many,
                    })?;
                }
                _ => json::skip(&mut map)?,
            }
        }
        Ok(Ok(bundle))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        json::drain(&mut seq)?;
        Ok(Err(BundleError::NotABundle))
    }

    json::scalars!(|_this| Err(BundleError::NotABundle));
}

/// `Bundle.entry`: a list of at most `max` entries, read one at a time.
struct EntryList<'a> {
    max: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for EntryList<'_> {
    type Value = Entries;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entries, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntryList<'_> {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element_seed(EntrySeed)? {
            if entries.len() == self.max {
                // An error stops the parse here: the rest of the body is not read.
                self.too_many.set(true);
                return Err(de::Error::custom("too many entries"));
            }
            entries.push(entry);
        }
        Ok(Entries::List(entries))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut members = Members::default();
        while json::next_name(&mut map, &mut members)?.is_some() {
            json::skip(&mut map)?;
        }
        Ok(Entries::NotAList)
    }

    json::scalars!(|_this| Entries::NotAList);
}

/// One entry: its `request` and its `resource`; anything but an object is malformed.
struct EntrySeed;

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = RawEntry;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawEntry, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bundle entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let mut out = RawEntry::default();
        let mut has_request = false;
        let mut members = Members::default();
        while let Some(name) = json::next_name(&mut map, &mut members)? {
            match &*name {
                "request" => {
                    has_request = true;
                    map.next_value_seed(RequestSeed(&mut out))?;
                }
                "resource" => {
                    out.has_resource = true;
                    map.next_value_seed(ResourceSeed(&mut out))?;
                }
                _ => json::skip(&mut map)?,
            }
        }
        out.malformed |= !has_request;
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEntry, A::Error> {
        json::drain(&mut seq)?;
        Ok(RawEntry::malformed())
    }

    json::scalars!(|_this| RawEntry::malformed());
}

/// `entry.request`: `method`, `url`, `ifNoneExist` kept; the other string fields checked for
/// their type. Anything but an object marks the entry malformed.
struct RequestSeed<'a>(&'a mut RawEntry);

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entry request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let mut members = Members::default();
        while let Some(name) = json::next_name(&mut map, &mut members)? {
            let slot = match &*name {
                "method" => Some(&mut out.method),
                "url" => Some(&mut out.url),
                "ifNoneExist" => Some(&mut out.if_none_exist),
                "ifMatch" | "ifNoneMatch" | "ifModifiedSince" => None,
                _ => {
                    json::skip(&mut map)?;
                    continue;
                }
            };
            match (map.next_value::<Text>()?, slot) {
                (Text::String(value), Some(slot)) => *slot = Some(value),
                (Text::String(_) | Text::Null, _) => {}
                (Text::Other, _) => out.malformed = true,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        json::drain(&mut seq)?;
        self.0.malformed = true;
        Ok(())
    }

    json::scalars!(|this| this.0.malformed = true);
}

/// `entry.resource`: whether it is itself a Bundle, and every conditional reference in it.
/// Anything but an object marks the entry malformed.
struct ResourceSeed<'a>(&'a mut RawEntry);

impl<'de> DeserializeSeed<'de> for ResourceSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResourceSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entry resource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let references = &mut out.conditional_references;
        let mut keep = |reference: &str| {
            if is_conditional(reference) {
                references.push(reference.to_owned());
            }
        };
        let mut members = Members::default();
        while let Some(name) = json::next_name(&mut map, &mut members)? {
            let walk = Walk::new(&mut keep);
            match &*name {
                "resourceType" | "id" | "reference" => {
                    if let Text::String(value) = map.next_value_seed(walk.capturing())? {
                        match &*name {
                            "resourceType" => {
                                out.nested_bundle = value == "Bundle";
                                out.resource_type = Some(value);
                            }
                            "id" => out.resource_id = Some(value),
                            _ => keep(&value),
                        }
                    }
                }
                _ => {
                    map.next_value_seed(walk)?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        json::drain(&mut seq)?;
        self.0.malformed = true;
        Ok(())
    }

    json::scalars!(|this| this.0.malformed = true);
}

/// A conditional reference: any reference with a `?` (`Type?…`, `Type/?…`, `/Type?…`, `[base]/Type?…`).
fn is_conditional(reference: &str) -> bool {
    // Servers resolve any reference with a `?` by searching, whatever comes before it.
    reference.contains('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_depth: 64,
        max_entries: 10,
    };

    #[test]
    fn a_bundle_with_more_entries_than_the_limit_is_refused() {
        let entries = [r#"{"request":{"method":"GET","url":"Patient/1"}}"#; 11].join(",");
        let body = format!(r#"{{"resourceType":"Bundle","type":"batch","entry":[{entries}]}}"#);
        assert_eq!(
            parse(body.as_bytes(), LIMITS).map(|_| ()),
            Err(BundleError::TooManyEntries)
        );
        let ten = [r#"{"request":{"method":"GET","url":"Patient/1"}}"#; 10].join(",");
        let body = format!(r#"{{"resourceType":"Bundle","type":"batch","entry":[{ten}]}}"#);
        assert_eq!(parse(body.as_bytes(), LIMITS).map(|(_, e)| e.len()), Ok(10));
    }

    #[test]
    fn nesting_depth_is_counted_outside_strings_only() {
        assert!(!too_deep(br#"{"a":[{"b":1}]}"#, 3));
        assert!(too_deep(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!too_deep(br#"{"a":"[[[[{{{{\"[["}"#, 1));
        assert!(too_deep(&[b'['; 200], 64));
    }

    #[test]
    fn batch_entries_and_conditional_references_are_extracted() {
        let body = br#"{"resourceType":"Bundle","type":"transaction","entry":[
            {"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=1"},
             "resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"},
                         "performer":[{"reference":"Practitioner/1"},{"reference":"urn:uuid:1"}]}},
            {"request":{"method":"GET","url":"Patient/1"}},
            {"request":{"method":"POST","url":"Bundle"},"resource":{"resourceType":"Bundle"}},
            {"request":{"method":1,"url":"Patient"}},
            {"resource":{"resourceType":"Patient"}}
        ]}"#;
        let (kind, entries) = parse(body, LIMITS).expect("a transaction");
        assert_eq!(kind, BundleKind::Transaction);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].method.as_deref(), Some("POST"));
        assert_eq!(entries[0].if_none_exist.as_deref(), Some("identifier=1"));
        assert_eq!(entries[0].conditional_references, ["Patient?identifier=x"]);
        assert_eq!(entries[1].url.as_deref(), Some("Patient/1"));
        assert!(entries[2].nested_bundle);
        assert!(entries[3].malformed);
        assert!(entries[4].malformed);
    }

    #[test]
    fn other_bodies_are_not_batch_bundles() {
        for (body, error) in [
            (
                &br#"{"resourceType":"Bundle","type":"collection"}"#[..],
                BundleError::WrongType,
            ),
            (
                br#"{"resourceType":"Bundle","type":"history"}"#,
                BundleError::WrongType,
            ),
            (br#"{"resourceType":"Bundle"}"#, BundleError::WrongType),
            (
                br#"{"resourceType":"Patient","type":"batch"}"#,
                BundleError::NotABundle,
            ),
            (br#"[1]"#, BundleError::NotABundle),
            (
                br#"{"resourceType":"Bundle","type":"batch","entry":{}}"#,
                BundleError::NotABundle,
            ),
            (b"not json", BundleError::Malformed),
            (b"", BundleError::Malformed),
        ] {
            assert_eq!(
                parse(body, LIMITS).map(|_| ()),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
