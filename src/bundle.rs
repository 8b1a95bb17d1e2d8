//! Batch and transaction Bundles (SMART-NOTES §4 rows 22-23, §6.11): parse the JSON body within a
//! nesting limit and pull out each entry's `request` and the conditional references it carries.
//!
//! Pure logic; only `POST /` bodies come here, so the hot path never does.

use serde_json::{Map, Value};

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
    /// Whether `request` or one of its fields has the wrong JSON type.
    pub(crate) malformed: bool,
    /// Every `reference` in `resource` of the form `Type?query` (a conditional reference).
    pub(crate) conditional_references: Vec<String>,
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
pub(crate) fn parse(
    body: &[u8],
    limits: Limits,
) -> Result<(BundleKind, Vec<RawEntry>), BundleError> {
    if too_deep(body, limits.max_depth) {
        return Err(BundleError::Malformed);
    }
    let root: Value = serde_json::from_slice(body).map_err(|_| BundleError::Malformed)?;
    let root = root.as_object().ok_or(BundleError::NotABundle)?;
    if root.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(BundleError::NotABundle);
    }
    let kind = match root.get("type").and_then(Value::as_str) {
        Some("batch") => BundleKind::Batch,
        Some("transaction") => BundleKind::Transaction,
        _ => return Err(BundleError::WrongType),
    };
    let entries = match root.get("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) if entries.len() > limits.max_entries => {
            return Err(BundleError::TooManyEntries);
        }
        Some(Value::Array(entries)) => entries.iter().map(entry).collect(),
        Some(_) => return Err(BundleError::NotABundle),
    };
    Ok((kind, entries))
}

fn entry(value: &Value) -> RawEntry {
    let mut out = RawEntry::default();
    let Some(entry) = value.as_object() else {
        out.malformed = true;
        return out;
    };
    match entry.get("request") {
        Some(Value::Object(request)) => {
            out.method = string(request, "method", &mut out.malformed);
            out.url = string(request, "url", &mut out.malformed);
            out.if_none_exist = string(request, "ifNoneExist", &mut out.malformed);
            for field in ["ifMatch", "ifNoneMatch", "ifModifiedSince"] {
                let _ = string(request, field, &mut out.malformed);
            }
        }
        _ => out.malformed = true,
    }
    if let Some(resource) = entry.get("resource") {
        match resource {
            Value::Object(map) => {
                out.nested_bundle =
                    map.get("resourceType").and_then(Value::as_str) == Some("Bundle");
                collect_conditional_references(resource, &mut out.conditional_references);
            }
            _ => out.malformed = true,
        }
    }
    out
}

/// Reads an optional string field; a field of another JSON type marks the entry malformed.
fn string(map: &Map<String, Value>, key: &str, malformed: &mut bool) -> Option<String> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            *malformed = true;
            None
        }
    }
}

/// Walks a resource for `"reference": "Type?query"` values. Recursive, but its depth is bounded
/// by the pre-scan ([`too_deep`]) before the tree is built.
fn collect_conditional_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("reference", Value::String(reference)) if is_conditional(reference) => {
                        out.push(reference.clone());
                    }
                    _ => collect_conditional_references(child, out),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_conditional_references(item, out);
            }
        }
        _ => {}
    }
}

/// `Type?…`: a relative reference whose path part has no `/` and which carries a query.
fn is_conditional(reference: &str) -> bool {
    reference
        .split_once('?')
        .is_some_and(|(path, _)| !path.contains([':', '/']) && !path.starts_with('#'))
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
