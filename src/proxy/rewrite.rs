//! The upstream FHIR server writes absolute URLs with its own base; the proxy rewrites that base
//! to the public one, and nothing else: in the `Location` and `Content-Location` headers and in
//! the three places of a Bundle that hold the server's URLs (`link[*].url`, `entry[*].fullUrl`,
//! `entry[*].response.location`).
//!
//! Pure logic. A Bundle body is read by a byte-level JSON scanner, not parsed into a tree and
//! written again: every byte outside the rewritten strings is copied as it was (member order,
//! number spellings such as `1.50`, whitespace, escapes), and the scan is linear in the body and
//! iterative, with a depth limit.

use std::fmt;

use http::{HeaderMap, HeaderValue, Uri, header};

/// Deepest nesting of objects and arrays [`Bases::rewrite_bundle`] reads; a deeper body is
/// passed through unchanged.
pub(crate) const MAX_DEPTH: usize = 128;

/// The upstream server's base URL and the public base URL that replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bases {
    /// `scheme://authority` of the upstream base, lowercase: compared ASCII case-insensitively.
    upstream_origin: String,
    /// The path of the upstream base, without a trailing slash: compared byte for byte.
    upstream_path: String,
    /// The public base, without a trailing slash.
    public: String,
}

/// Why a base URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InvalidBase {
    /// The base that was refused: a configuration value, not a secret.
    base: String,
}

impl fmt::Display for InvalidBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an absolute http(s) URL without query or fragment",
            self.base
        )
    }
}

impl std::error::Error for InvalidBase {}

impl Bases {
    /// The bases from two absolute `http` or `https` URLs without query or fragment; trailing
    /// slashes are removed (`http://up/fhir/` is `http://up/fhir`).
    ///
    /// The upstream base is matched as configured: its scheme and authority ASCII
    /// case-insensitively, its path byte for byte. Configure it as the upstream writes it
    /// (`http://up:80/fhir` does not match `http://up/fhir`, nor `%2F` a `/`).
    ///
    /// # Errors
    ///
    /// When either base is not such a URL.
    pub(crate) fn new(upstream: &str, public: &str) -> Result<Self, InvalidBase> {
        let upstream = trim_base(upstream)?;
        let public = trim_base(public)?;
        let path_start = upstream
            .find("://")
            .and_then(|scheme_end| {
                let authority = scheme_end + 3;
                upstream
                    .get(authority..)
                    .map(|rest| authority + rest.find('/').unwrap_or(rest.len()))
            })
            .unwrap_or(upstream.len());
        let (origin, path) = upstream.split_at(path_start);
        Ok(Self {
            upstream_origin: origin.to_ascii_lowercase(),
            upstream_path: path.to_owned(),
            public: public.to_owned(),
        })
    }

    /// The public URL for `value` when it is the upstream base or under it (the base followed by
    /// the end, `/`, `?` or `#`); `None` otherwise.
    pub(crate) fn rewrite_url(&self, value: &str) -> Option<String> {
        let origin_len = self.upstream_origin.len();
        let origin = value.as_bytes().get(..origin_len)?;
        if !origin.eq_ignore_ascii_case(self.upstream_origin.as_bytes()) {
            return None;
        }
        let rest = value
            .get(origin_len..)?
            .strip_prefix(&*self.upstream_path)?;
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return None;
        }
        Some(format!("{}{rest}", self.public))
    }

    /// Rewrites the `Location` and `Content-Location` headers in place; a value that is not
    /// UTF-8, or not under the upstream base, is left alone.
    pub(crate) fn rewrite_headers(&self, headers: &mut HeaderMap) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            // Most answers have neither: one lookup each, nothing built.
            if !headers.contains_key(&name) {
                continue;
            }
            let mut changed = false;
            let values: Vec<HeaderValue> = headers
                .get_all(&name)
                .iter()
                .map(|value| {
                    let rewritten = std::str::from_utf8(value.as_bytes())
                        .ok()
                        .and_then(|text| self.rewrite_url(text))
                        .and_then(|url| HeaderValue::from_str(&url).ok());
                    match rewritten {
                        Some(rewritten) => {
                            changed = true;
                            rewritten
                        }
                        None => value.clone(),
                    }
                })
                .collect();
            if changed {
                headers.remove(&name);
                for value in values {
                    headers.append(name.clone(), value);
                }
            }
        }
    }

    /// The body with the upstream base rewritten in `link[*].url`, `entry[*].fullUrl` and
    /// `entry[*].response.location`, when `body` is a JSON object whose `resourceType` is
    /// `"Bundle"` and one of those strings changes; every other byte is copied as it was.
    ///
    /// `None` (pass the body through unchanged) when nothing changes, or the body is not valid
    /// JSON (RFC 8259, UTF-8, no lone surrogate escapes), not an object, not a Bundle, nests
    /// deeper than [`MAX_DEPTH`], or is ambiguous: a repeated `resourceType`, `link` or `entry`
    /// at the top, or a repeated `url`, `fullUrl`, `response` or `location` in an object on
    /// the way to a rewritten string. Resources inside entries, Bundles among them, are not
    /// touched.
    pub(crate) fn rewrite_bundle(&self, body: &[u8]) -> Option<Vec<u8>> {
        let scan = scan(body)?;
        if !scan.is_bundle {
            return None;
        }
        let mut replacements = Vec::new();
        for (start, end) in scan.targets {
            let raw = body.get(start + 1..end - 1)?;
            let value = decode_string(raw)?;
            if let Some(url) = self.rewrite_url(&value)
                && url != value
            {
                replacements.push((start, end, serde_json::to_string(&url).ok()?));
            }
        }
        if replacements.is_empty() {
            return None;
        }
        let grown: usize = replacements.iter().map(|(_, _, s)| s.len()).sum();
        let mut out = Vec::with_capacity(body.len() + grown);
        let mut copied = 0;
        for (start, end, json) in &replacements {
            out.extend_from_slice(body.get(copied..*start)?);
            out.extend_from_slice(json.as_bytes());
            copied = *end;
        }
        out.extend_from_slice(body.get(copied..)?);
        Some(out)
    }
}

/// `base` without trailing slashes, when it is an absolute http(s) URL without query or
/// fragment.
fn trim_base(base: &str) -> Result<&str, InvalidBase> {
    let invalid = || InvalidBase {
        base: base.to_owned(),
    };
    let trimmed = base.trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|_| invalid())?;
    let http = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    if !http || uri.authority().is_none() || trimmed.contains(['?', '#']) {
        return Err(invalid());
    }
    Ok(trimmed)
}

/// Where a value sits on the way to a rewritten string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The top-level object.
    Root,
    /// `link`, `link[*]`.
    Links,
    Link,
    /// `entry`, `entry[*]`, `entry[*].response`.
    Entries,
    Entry,
    Response,
    /// The top-level `resourceType`.
    ResourceType,
    /// A string to rewrite.
    Target,
    /// Anywhere else.
    Other,
}

impl Place {
    /// The place of member `name` of an object at `self`, and its bit among the members that
    /// may not repeat there (0: any other member).
    fn member(self, name: &[u8]) -> (Place, u8) {
        match (self, name) {
            (Place::Root, b"resourceType") => (Place::ResourceType, 1),
            (Place::Root, b"link") => (Place::Links, 2),
            (Place::Root, b"entry") => (Place::Entries, 4),
            (Place::Link, b"url") | (Place::Entry, b"fullUrl") | (Place::Response, b"location") => {
                (Place::Target, 1)
            }
            (Place::Entry, b"response") => (Place::Response, 2),
            _ => (Place::Other, 0),
        }
    }

    /// The place of an element of an array at `self`.
    fn element(self) -> Place {
        match self {
            Place::Links => Place::Link,
            Place::Entries => Place::Entry,
            _ => Place::Other,
        }
    }

    /// The place of an object at `self`: itself when it is meant to be an object.
    fn as_object(self) -> Place {
        match self {
            Place::Root | Place::Link | Place::Entry | Place::Response => self,
            _ => Place::Other,
        }
    }

    /// The place of an array at `self`: itself when it is meant to be an array.
    fn as_array(self) -> Place {
        match self {
            Place::Links | Place::Entries => self,
            _ => Place::Other,
        }
    }
}

/// An open object or array.
#[derive(Debug)]
struct Frame {
    object: bool,
    place: Place,
    /// Bits of the members already seen that may not repeat.
    seen: u8,
}

/// What the scanner expects next.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// A value at this place.
    Value(Place),
    /// A member name or `}` (just after `{`).
    FirstMember,
    /// A member name (after `,`).
    Member,
    /// A value or `]` (just after `[`).
    FirstElement,
    /// `,`, or the end of the open object or array, or of the body.
    AfterValue,
}

/// What [`scan`] found in a valid JSON object.
#[derive(Debug)]
struct Scan {
    /// The top-level `resourceType` is `"Bundle"`.
    is_bundle: bool,
    /// Byte spans of the strings to rewrite, quotes included, in order.
    targets: Vec<(usize, usize)>,
}

/// Scans `body` as one JSON object: `None` when it is not valid JSON, not an object, nests
/// deeper than [`MAX_DEPTH`], or repeats a member that matters (see [`Bases::rewrite_bundle`]).
fn scan(body: &[u8]) -> Option<Scan> {
    std::str::from_utf8(body).ok()?;
    let mut found = Scan {
        is_bundle: false,
        targets: Vec::new(),
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = skip_ws(body, 0);
    if body.get(pos) != Some(&b'{') {
        return None;
    }
    let mut next = Next::Value(Place::Root);
    loop {
        pos = skip_ws(body, pos);
        match next {
            Next::Value(place) => {
                let byte = *body.get(pos)?;
                next = Next::AfterValue;
                match byte {
                    b'{' | b'[' => {
                        if stack.len() >= MAX_DEPTH {
                            return None;
                        }
                        let object = byte == b'{';
                        let place = if object {
                            place.as_object()
                        } else {
                            place.as_array()
                        };
                        stack.push(Frame {
                            object,
                            place,
                            seen: 0,
                        });
                        pos += 1;
                        next = if object {
                            Next::FirstMember
                        } else {
                            Next::FirstElement
                        };
                    }
                    b'"' => {
                        let (end, escaped) = scan_string(body, pos)?;
                        match place {
                            Place::Target => found.targets.push((pos, end)),
                            Place::ResourceType => {
                                let raw = body.get(pos + 1..end - 1)?;
                                found.is_bundle = if escaped {
                                    decode_string(raw)? == "Bundle"
                                } else {
                                    raw == b"Bundle"
                                };
                            }
                            _ => {}
                        }
                        pos = end;
                    }
                    b't' => pos = literal(body, pos, b"true")?,
                    b'f' => pos = literal(body, pos, b"false")?,
                    b'n' => pos = literal(body, pos, b"null")?,
                    b'-' | b'0'..=b'9' => pos = scan_number(body, pos)?,
                    _ => return None,
                }
            }
            Next::FirstMember if body.get(pos) == Some(&b'}') => {
                stack.pop();
                pos += 1;
                next = Next::AfterValue;
            }
            Next::FirstMember | Next::Member => {
                if body.get(pos) != Some(&b'"') {
                    return None;
                }
                let (end, escaped) = scan_string(body, pos)?;
                let frame = stack.last_mut()?;
                let place = if frame.place == Place::Other {
                    Place::Other
                } else {
                    let raw = body.get(pos + 1..end - 1)?;
                    let (place, bit) = if escaped {
                        frame.place.member(decode_string(raw)?.as_bytes())
                    } else {
                        frame.place.member(raw)
                    };
                    if frame.seen & bit != 0 {
                        return None;
                    }
                    frame.seen |= bit;
                    place
                };
                pos = skip_ws(body, end);
                if body.get(pos) != Some(&b':') {
                    return None;
                }
                pos += 1;
                next = Next::Value(place);
            }
            Next::FirstElement if body.get(pos) == Some(&b']') => {
                stack.pop();
                pos += 1;
                next = Next::AfterValue;
            }
            Next::FirstElement => next = Next::Value(stack.last()?.place.element()),
            Next::AfterValue => {
                let Some(frame) = stack.last() else {
                    return (pos == body.len()).then_some(found);
                };
                match (*body.get(pos)?, frame.object) {
                    (b',', true) => next = Next::Member,
                    (b',', false) => next = Next::Value(frame.place.element()),
                    (b'}', true) | (b']', false) => {
                        stack.pop();
                    }
                    _ => return None,
                }
                pos += 1;
            }
        }
    }
}

/// The position of the first byte at or after `pos` that is not JSON whitespace.
fn skip_ws(body: &[u8], mut pos: usize) -> usize {
    while matches!(body.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// The position after `word` at `pos`.
fn literal(body: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    body.get(pos..)?
        .starts_with(word)
        .then_some(pos + word.len())
}

/// The position after the number at `pos` (RFC 8259 §6).
fn scan_number(body: &[u8], mut pos: usize) -> Option<usize> {
    let digits = |mut pos: usize| {
        let start = pos;
        while body.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        (pos > start).then_some(pos)
    };
    if body.get(pos) == Some(&b'-') {
        pos += 1;
    }
    pos = match body.get(pos)? {
        b'0' => pos + 1,
        b'1'..=b'9' => digits(pos)?,
        _ => return None,
    };
    if body.get(pos) == Some(&b'.') {
        pos = digits(pos + 1)?;
    }
    if matches!(body.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(body.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        pos = digits(pos)?;
    }
    Some(pos)
}

/// The position after the string whose opening quote is at `pos`, and whether it has escapes.
/// `None` when it is unterminated, has a control character, a bad escape or a lone surrogate.
fn scan_string(body: &[u8], pos: usize) -> Option<(usize, bool)> {
    let mut i = pos + 1;
    let mut escaped = false;
    loop {
        match *body.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i = match *body.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i + 2,
                    b'u' => unicode_escape(body, i)?.1,
                    _ => return None,
                };
            }
            0x00..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// The character of the `\uXXXX` escape at `pos` (with its low surrogate escape when it is a
/// high surrogate) and the position after it.
fn unicode_escape(body: &[u8], pos: usize) -> Option<(char, usize)> {
    let hex4 = |at: usize| -> Option<u32> {
        if body.get(at..at + 2)? != b"\\u" {
            return None;
        }
        let hex = std::str::from_utf8(body.get(at + 2..at + 6)?).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    };
    let first = hex4(pos)?;
    match first {
        0xd800..=0xdbff => {
            let second = hex4(pos + 6)?;
            if !(0xdc00..=0xdfff).contains(&second) {
                return None;
            }
            let code = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
            Some((char::from_u32(code)?, pos + 12))
        }
        0xdc00..=0xdfff => None,
        _ => Some((char::from_u32(first)?, pos + 6)),
    }
}

/// The text of a valid JSON string's contents `raw` (between the quotes), escapes decoded.
fn decode_string(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&byte) = raw.get(i) {
        if byte != b'\\' {
            out.push(byte);
            i += 1;
            continue;
        }
        let simple = match *raw.get(i + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (c, next) = unicode_escape(raw, i)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i = next;
                continue;
            }
            _ => return None,
        };
        out.push(simple);
        i += 2;
    }
    String::from_utf8(out).ok()
}

/// Whether the answer to `request` can be a Bundle: searches, histories, batches and
/// transactions, operations, and reads of a `Bundle`. (A create or read answers one resource,
/// whose URLs the proxy does not touch.)
pub(crate) fn answers_with_bundle(request: &crate::FhirRequest) -> bool {
    use crate::Interaction as I;
    match request.interaction() {
        I::HistoryInstance
        | I::HistoryType
        | I::HistorySystem
        | I::SearchType
        | I::SearchSystem
        | I::SearchCompartment
        | I::BatchOrTransaction
        | I::Operation => true,
        I::Read | I::Vread => {
            request.resource_type().map(crate::ResourceType::as_str) == Some("Bundle")
        }
        _ => false,
    }
}

/// JSON (FHIR or plain) without a content coding: a body the proxy can rewrite.
pub(crate) fn is_plain_json(headers: &http::HeaderMap) -> bool {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/fhir+json" || t == "application/json");
    let coded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    json && !coded
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn json_bodies_without_a_coding_are_the_ones_rewritten() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        for (pairs, want) in [
            (
                &[("content-type", "application/fhir+json;charset=utf-8")][..],
                true,
            ),
            (&[("content-type", "Application/JSON")][..], true),
            (
                &[
                    ("content-type", "application/fhir+json"),
                    ("content-encoding", "gzip"),
                ][..],
                false,
            ),
            (
                &[
                    ("content-type", "application/fhir+json"),
                    ("content-encoding", "identity"),
                ][..],
                true,
            ),
            (&[("content-type", "application/fhir+xml")][..], false),
            (&[][..], false),
        ] {
            assert_eq!(is_plain_json(&headers(pairs)), want, "{pairs:?}");
        }
    }

    const UP: &str = "http://up.internal:8080/fhir";
    const PUBLIC: &str = "https://fhir.example.org/r4";

    fn bases() -> Bases {
        Bases::new(UP, PUBLIC).unwrap()
    }

    /// `body` with each `(from, to)` replaced once, in order: the expected output when exactly
    /// those spans change.
    fn replaced(body: &str, spans: &[(&str, &str)]) -> String {
        let mut out = String::new();
        let mut rest = body;
        for (from, to) in spans {
            let at = rest
                .find(from)
                .unwrap_or_else(|| panic!("{from} in {rest}"));
            out.push_str(&rest[..at]);
            out.push_str(to);
            rest = &rest[at + from.len()..];
        }
        out.push_str(rest);
        out
    }

    fn rewrite(body: &str) -> Option<String> {
        bases()
            .rewrite_bundle(body.as_bytes())
            .map(|out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn bases_are_absolute_http_urls_without_trailing_slashes() {
        for (upstream, public, ok) in [
            ("http://up/fhir", "https://pub/r4", true),
            ("http://up/fhir/", "https://pub/r4//", true),
            ("HTTP://UP", "https://pub", true),
            ("http://up/", "https://pub/", true),
            ("up/fhir", "https://pub", false),
            ("/fhir", "https://pub", false),
            ("ftp://up/fhir", "https://pub", false),
            ("http://up/fhir?x=1", "https://pub", false),
            ("http://up/fhir", "https://pub#top", false),
            ("http://up/fhir", "", false),
            ("http://up/f hir", "https://pub", false),
        ] {
            assert_eq!(
                Bases::new(upstream, public).is_ok(),
                ok,
                "{upstream} {public}"
            );
        }
        let bases = Bases::new("http://up/fhir/", "https://pub/r4/").unwrap();
        assert_eq!(
            bases.rewrite_url("http://up/fhir/Patient/1").as_deref(),
            Some("https://pub/r4/Patient/1")
        );
        assert!(
            InvalidBase { base: "x".into() }
                .to_string()
                .starts_with("\"x\" is not")
        );
    }

    #[test]
    fn only_the_upstream_base_and_what_is_under_it_is_rewritten() {
        let cases = [
            (
                "http://up.internal:8080/fhir",
                Some("https://fhir.example.org/r4"),
            ),
            (
                "http://up.internal:8080/fhir/",
                Some("https://fhir.example.org/r4/"),
            ),
            (
                "http://up.internal:8080/fhir/Patient/1",
                Some("https://fhir.example.org/r4/Patient/1"),
            ),
            (
                "http://up.internal:8080/fhir?_getpages=x",
                Some("https://fhir.example.org/r4?_getpages=x"),
            ),
            (
                "http://up.internal:8080/fhir#frag",
                Some("https://fhir.example.org/r4#frag"),
            ),
            (
                "HTTP://UP.Internal:8080/fhir/Patient",
                Some("https://fhir.example.org/r4/Patient"),
            ),
            ("http://up.internal:8080/FHIR/Patient", None),
            ("http://up.internal:8080/fhir2", None),
            ("http://up.internal:8080/fhir2/Patient", None),
            ("http://up.internal:8080/fhir.json", None),
            ("http://up.internal:8080/fhi", None),
            ("http://up.internal:80801/fhir", None),
            ("http://up.internal/fhir/Patient", None),
            ("https://up.internal:8080/fhir/Patient", None),
            ("http://up.internal:8080@evil/fhir", None),
            ("http://up.internal:8080/fhir%2FPatient", None),
            ("Patient/1", None),
            ("", None),
            (" http://up.internal:8080/fhir", None),
            (
                "http://up.internal:8080/fhir/\u{e9}",
                Some("https://fhir.example.org/r4/\u{e9}"),
            ),
            ("http://up.internal:8080\u{e9}", None),
        ];
        for (value, public) in cases {
            assert_eq!(bases().rewrite_url(value).as_deref(), public, "{value:?}");
        }
        let root = Bases::new("http://up", "https://pub/r4").unwrap();
        for (value, public) in [
            ("http://up", Some("https://pub/r4")),
            ("http://up/Patient", Some("https://pub/r4/Patient")),
            ("http://up?x", Some("https://pub/r4?x")),
            ("http://up:80/Patient", None),
            ("http://up.evil/Patient", None),
            ("http://upper/Patient", None),
        ] {
            assert_eq!(
                root.rewrite_url(value).as_deref(),
                public,
                "root base: {value:?}"
            );
        }
    }

    #[test]
    fn location_headers_are_rewritten_in_place() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("http://up.internal:8080/fhir/Patient/1/_history/2"),
        );
        headers.append(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://up.internal:8080/fhir/Patient/1"),
        );
        headers.append(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://elsewhere/fhir/Patient/1"),
        );
        headers.insert(
            header::LINK,
            HeaderValue::from_static("<http://up.internal:8080/fhir/x>; rel=next"),
        );
        bases().rewrite_headers(&mut headers);
        assert_eq!(
            headers[header::LOCATION],
            "https://fhir.example.org/r4/Patient/1/_history/2"
        );
        let content: Vec<_> = headers.get_all(header::CONTENT_LOCATION).iter().collect();
        assert_eq!(
            content,
            [
                "https://fhir.example.org/r4/Patient/1",
                "http://elsewhere/fhir/Patient/1"
            ]
        );
        assert_eq!(
            headers[header::LINK],
            "<http://up.internal:8080/fhir/x>; rel=next",
            "only the two"
        );
    }

    #[test]
    fn location_headers_that_are_not_utf8_or_elsewhere_are_left_alone() {
        for value in [
            &b"http://up.internal:8080/fhir/\xff"[..],
            b"/fhir/Patient/1",
            b"http://other/fhir",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, HeaderValue::from_bytes(value).unwrap());
            let before = headers.clone();
            bases().rewrite_headers(&mut headers);
            assert_eq!(headers, before, "{value:?}");
        }
    }

    const SEARCH: &str = r#"{
  "resourceType": "Bundle",
  "id": "b1",
  "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
  "type": "searchset",
  "total": 2,
  "link": [
    {"relation": "self", "url": "http://up.internal:8080/fhir/Patient?name=x"},
    {"relation": "next", "url": "http://up.internal:8080/fhir?_getpages=abc&_getpagesoffset=2"}
  ],
  "entry": [
    {
      "fullUrl": "http://up.internal:8080/fhir/Patient/1",
      "resource": {
        "resourceType": "Patient", "id": "1",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"http://up.internal:8080/fhir/Patient/1\">x</a></div>"},
        "identifier": [{"system": "http://up.internal:8080/fhir/ids", "value": "http://up.internal:8080/fhir/Patient/1"}],
        "extension": [{"url": "http://up.internal:8080/fhir/StructureDefinition/x", "valueDecimal": 1.50}],
        "link": [{"url": "http://up.internal:8080/fhir/Patient/9", "other": {"reference": "Patient/9"}}]
      },
      "search": {"mode": "match", "score": 1.50e+3}
    },
    {
      "fullUrl": "http://up.internal:8080/fhir/Bundle/inner",
      "resource": {
        "resourceType": "Bundle", "type": "collection",
        "link": [{"relation": "self", "url": "http://up.internal:8080/fhir/Bundle/inner"}],
        "entry": [{"fullUrl": "http://up.internal:8080/fhir/Patient/2", "response": {"location": "http://up.internal:8080/fhir/Patient/2"}}]
      },
      "response": {"status": "200 OK", "location": "http://up.internal:8080/fhir/Bundle/inner"}
    }
  ]
}"#;

    #[test]
    fn a_search_bundle_has_its_links_and_full_urls_rewritten_and_nothing_else() {
        let expected = replaced(
            SEARCH,
            &[
                (
                    "\"http://up.internal:8080/fhir/Patient?name=x\"",
                    "\"https://fhir.example.org/r4/Patient?name=x\"",
                ),
                (
                    "\"http://up.internal:8080/fhir?_getpages",
                    "\"https://fhir.example.org/r4?_getpages",
                ),
                (
                    "\"http://up.internal:8080/fhir/Patient/1\"",
                    "\"https://fhir.example.org/r4/Patient/1\"",
                ),
                (
                    "\"http://up.internal:8080/fhir/Bundle/inner\"",
                    "\"https://fhir.example.org/r4/Bundle/inner\"",
                ),
            ],
        );
        // The fifth and last one: `entry[1].response.location`, after the nested Bundle.
        let at = expected
            .rfind("\"http://up.internal:8080/fhir/Bundle/inner\"")
            .unwrap();
        let expected = format!(
            "{}\"https://fhir.example.org/r4/Bundle/inner\"{}",
            &expected[..at],
            &expected[at + "\"http://up.internal:8080/fhir/Bundle/inner\"".len()..]
        );
        let out = rewrite(SEARCH).expect("rewritten");
        assert_eq!(out, expected);
        assert_eq!(out.matches("https://fhir.example.org/r4").count(), 5);
        assert!(out.contains("\"valueDecimal\": 1.50}") && out.contains("\"score\": 1.50e+3}"));
    }

    #[test]
    fn a_transaction_response_has_its_locations_rewritten() {
        let body = r#"{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"201 Created","location":"http://up.internal:8080/fhir/Patient/7/_history/1","etag":"W/\"1\""}},{"response":{"status":"200 OK"}},{"response":{"location":"Patient/8/_history/1"}}]}"#;
        let expected = body.replace(
            "http://up.internal:8080/fhir/Patient/7",
            "https://fhir.example.org/r4/Patient/7",
        );
        assert_eq!(rewrite(body).as_deref(), Some(&*expected));
    }

    #[test]
    fn escaped_target_strings_are_decoded_then_written_plain() {
        let cases = [
            (
                r#""http:\/\/up.internal:8080\/fhir\/Patient\/1""#,
                Some(r#""https://fhir.example.org/r4/Patient/1""#),
            ),
            (
                r#""\u0068ttp://up.internal:8080/fhir/P""#,
                Some(r#""https://fhir.example.org/r4/P""#),
            ),
            (
                r#""http://up.internal:8080/fhir/\u00e9\ud83d\ude00""#,
                Some("\"https://fhir.example.org/r4/\u{e9}\u{1F600}\""),
            ),
            (
                r#""http://up.internal:8080/fhir/a\"b\\c\n""#,
                Some(r#""https://fhir.example.org/r4/a\"b\\c\n""#),
            ),
            (r#""http:\/\/up.internal:8080\/fhir2""#, None),
            (r#""http:\/\/elsewhere\/fhir""#, None),
        ];
        for (url, out) in cases {
            let body =
                format!(r#"{{"resourceType":"Bundle","entry":[{{"fullUrl":{url},"x":1}}]}}"#);
            let expected = out.map(|out| body.replace(url, out));
            assert_eq!(rewrite(&body), expected, "{url}");
        }
    }

    #[test]
    fn member_names_and_resource_type_are_compared_decoded() {
        let body = r#"{"resourceType":"Bun\u0064le","\u006cink":[{"\u0075rl":"http://up.internal:8080/fhir/x"}]}"#;
        assert_eq!(
            rewrite(body).as_deref(),
            Some(
                r#"{"resourceType":"Bun\u0064le","\u006cink":[{"\u0075rl":"https://fhir.example.org/r4/x"}]}"#
            )
        );
    }

    #[test]
    fn whitespace_order_and_numbers_are_kept_exactly() {
        let body = " \r\n\t{ \"entry\" :\n[ { \"search\":{\"score\":-0.0E-0}, \"fullUrl\"\t:\t\"http://up.internal:8080/fhir/A/1\" , \"n\" : [ 1.50e+3 , -0 , 10 , true , false , null , { } , [ ] ] } ] ,\n \"resourceType\" : \"Bundle\" } \n";
        let expected = body.replace(
            "http://up.internal:8080/fhir/A/1",
            "https://fhir.example.org/r4/A/1",
        );
        assert_eq!(rewrite(body).as_deref(), Some(&*expected));
    }

    #[test]
    fn bodies_that_are_not_bundles_with_something_to_rewrite_are_none() {
        let link = r#""link":[{"url":"http://up.internal:8080/fhir/x"}]"#;
        let cases = [
            ("another resource", format!(r#"{{"resourceType":"Patient",{link}}}"#)),
            ("no resourceType", format!(r#"{{{link}}}"#)),
            ("resourceType not a string", format!(r#"{{"resourceType":["Bundle"],{link}}}"#)),
            ("resourceType in another case", format!(r#"{{"resourceType":"bundle",{link}}}"#)),
            ("resourceType nested only", format!(r#"{{"meta":{{"resourceType":"Bundle"}},{link}}}"#)),
            ("nothing to rewrite", r#"{"resourceType":"Bundle","link":[{"url":"http://other/fhir"}]}"#.to_owned()),
            ("no links or entries", r#"{"resourceType":"Bundle"}"#.to_owned()),
            ("link is an object", r#"{"resourceType":"Bundle","link":{"url":"http://up.internal:8080/fhir/x"}}"#.to_owned()),
            ("url is a number", r#"{"resourceType":"Bundle","link":[{"url":1}]}"#.to_owned()),
            ("url under entry", r#"{"resourceType":"Bundle","entry":[{"url":"http://up.internal:8080/fhir/x"}]}"#.to_owned()),
            ("location outside response", r#"{"resourceType":"Bundle","entry":[{"location":"http://up.internal:8080/fhir/x"}]}"#.to_owned()),
            ("fullUrl at the top", r#"{"resourceType":"Bundle","fullUrl":"http://up.internal:8080/fhir/x"}"#.to_owned()),
            ("an array", format!(r#"[{{"resourceType":"Bundle",{link}}}]"#)),
            ("a string", r#""http://up.internal:8080/fhir/x""#.to_owned()),
            ("empty", String::new()),
        ];
        for (case, body) in cases {
            assert_eq!(rewrite(&body), None, "{case}");
        }
    }

    #[test]
    fn repeated_members_that_matter_are_ambiguous() {
        let cases = [
            (
                "resourceType twice",
                r#"{"resourceType":"Patient","resourceType":"Bundle","link":[{"url":"http://up.internal:8080/fhir/x"}]}"#,
                None,
            ),
            (
                "resourceType twice, once escaped",
                r#"{"resourceType":"Bundle","resource\u0054ype":"Bundle","link":[{"url":"http://up.internal:8080/fhir/x"}]}"#,
                None,
            ),
            (
                "url twice",
                r#"{"resourceType":"Bundle","link":[{"url":"http://up.internal:8080/fhir/x","url":"http://o"}]}"#,
                None,
            ),
            (
                "fullUrl twice",
                r#"{"resourceType":"Bundle","entry":[{"fullUrl":"http://o","fullUrl":"http://up.internal:8080/fhir/x"}]}"#,
                None,
            ),
            (
                "response twice",
                r#"{"resourceType":"Bundle","entry":[{"response":{},"response":{"location":"http://up.internal:8080/fhir/x"}}]}"#,
                None,
            ),
            (
                "location twice",
                r#"{"resourceType":"Bundle","entry":[{"response":{"location":"http://up.internal:8080/fhir/x","location":"y"}}]}"#,
                None,
            ),
            (
                "link twice",
                r#"{"resourceType":"Bundle","link":[],"link":[{"url":"http://up.internal:8080/fhir/x"}]}"#,
                None,
            ),
            (
                "entry twice",
                r#"{"resourceType":"Bundle","entry":[],"entry":[{"fullUrl":"http://up.internal:8080/fhir/x"}]}"#,
                None,
            ),
            (
                "the same name in another object is fine",
                r#"{"resourceType":"Bundle","link":[{"url":"http://up.internal:8080/fhir/x"},{"url":"http://up.internal:8080/fhir/y"}],"entry":[{"resource":{"a":1,"a":2},"fullUrl":"http://o"}]}"#,
                Some(
                    r#"{"resourceType":"Bundle","link":[{"url":"https://fhir.example.org/r4/x"},{"url":"https://fhir.example.org/r4/y"}],"entry":[{"resource":{"a":1,"a":2},"fullUrl":"http://o"}]}"#,
                ),
            ),
        ];
        for (case, body, out) in cases {
            assert_eq!(rewrite(body).as_deref(), out, "{case}");
        }
    }

    #[test]
    fn invalid_or_truncated_json_is_none() {
        let valid = r#"{"resourceType":"Bundle","link":[{"url":"http://up.internal:8080/fhir/x"}],"n":[1.5,-2e3,true,null]}"#;
        assert!(rewrite(valid).is_some());
        for end in 0..valid.len() {
            assert_eq!(rewrite(&valid[..end]), None, "truncated at {end}");
        }
        let link = r#""link":[{"url":"http://up.internal:8080/fhir/x"}]"#;
        for bad in [
            r#""n":01"#,
            r#""n":1."#,
            r#""n":.5"#,
            r#""n":1e"#,
            r#""n":+1"#,
            r#""n":-"#,
            r#""n":0x1"#,
            r#""n":NaN"#,
            r#""n":tru"#,
            r#""n":nul"#,
            r#""n":True"#,
            r#""n":'x'"#,
            r#""n":"\x""#,
            r#""n":"\u12G4""#,
            r#""n":"\ud800""#,
            r#""n":"\udc00\ud800""#,
            r#""n":"\ud800\u0041""#,
            "\"n\":\"tab\tin string\"",
            r#""n":[1,]"#,
            r#""n":{"a":1,}"#,
            r#""n":[1 2]"#,
            r#""n":{"a" 1}"#,
            r#""n":{1:2}"#,
            r#""n":}"#,
            r#""n"}"#,
            r#"n:1"#,
        ] {
            let body = format!(r#"{{"resourceType":"Bundle",{link},{bad}}}"#);
            assert_eq!(rewrite(&body), None, "{bad}");
        }
        for bad in [
            format!(r#"{{"resourceType":"Bundle",{link}}} x"#),
            format!(r#"{{"resourceType":"Bundle",{link}}}{{}}"#),
            format!(r#"{{"resourceType":"Bundle",{link}}}]"#),
        ] {
            assert_eq!(rewrite(&bad), None, "{bad}");
        }
        let mut not_utf8 = format!(r#"{{"resourceType":"Bundle",{link},"n":"x"}}"#).into_bytes();
        let at = not_utf8.len() - 3;
        not_utf8[at] = 0xff;
        assert_eq!(bases().rewrite_bundle(&not_utf8), None, "not UTF-8");
    }

    #[test]
    fn nesting_up_to_the_limit_is_read_and_deeper_is_none() {
        let link = r#""link":[{"url":"http://up.internal:8080/fhir/x"}]"#;
        // The top object is one level: MAX_DEPTH - 1 arrays inside it reach the limit.
        for (arrays, rewritten) in [(MAX_DEPTH - 1, true), (MAX_DEPTH, false)] {
            let body = format!(
                r#"{{{link},"deep":{}{},"resourceType":"Bundle"}}"#,
                "[".repeat(arrays),
                "]".repeat(arrays)
            );
            assert_eq!(rewrite(&body).is_some(), rewritten, "{arrays} arrays");
        }
    }

    #[test]
    fn very_deep_bodies_are_none_on_a_small_stack() {
        let deep = [
            "[".repeat(10_000),
            format!(r#"{{"resourceType":"Bundle","x":{}"#, "[".repeat(10_000)),
            format!(
                r#"{{"resourceType":"Bundle","x":{}1{}}}"#,
                "{\"a\":".repeat(10_000),
                "}".repeat(10_000)
            ),
            format!(
                r#"{{"resourceType":"Bundle","entry":[{}]}}"#,
                "{\"resource\":[".repeat(5_000)
            ),
        ];
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                deep.iter()
                    .map(|body| bases().rewrite_bundle(body.as_bytes()))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), [None, None, None, None]);
    }

    #[test]
    fn equal_bases_change_nothing() {
        let bases = Bases::new(UP, UP).unwrap();
        assert_eq!(bases.rewrite_bundle(SEARCH.as_bytes()), None);
        let escaped =
            r#"{"resourceType":"Bundle","link":[{"url":"http:\/\/up.internal:8080\/fhir\/x"}]}"#;
        assert_eq!(
            bases.rewrite_bundle(escaped.as_bytes()),
            None,
            "escapes are no change"
        );
    }

    #[test]
    fn big_bundles_are_rewritten_in_one_pass() {
        let entry = r#"{"fullUrl":"http://up.internal:8080/fhir/Observation/1","resource":{"resourceType":"Observation","valueQuantity":{"value":1.50}}}"#;
        let body = format!(
            r#"{{"resourceType":"Bundle","entry":[{}]}}"#,
            vec![entry; 50_000].join(",")
        );
        let out = rewrite(&body).unwrap();
        assert_eq!(
            out,
            body.replace(
                "http://up.internal:8080/fhir/",
                "https://fhir.example.org/r4/"
            )
        );
    }

    /// Arbitrary JSON values, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            url().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(
                    "[a-zA-Z]{0,8}|url|fullUrl|location|response",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn url() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9/?#._-]{0,12}".prop_map(|s| format!("{UP}{s}")),
            "[a-zA-Z0-9/?#._-]{0,12}".prop_map(|s| format!("{UP}/{s}")),
            "[ -~\u{e9}]{0,12}",
        ]
    }

    /// A Bundle-shaped value: links, entries with fullUrl, response.location and a resource.
    fn any_bundle() -> impl Strategy<Value = Value> {
        let link = (url(), any_json())
            .prop_map(|(u, extra)| json!({"relation": "x", "url": u, "extra": extra}));
        let entry = (prop::option::of(url()), prop::option::of(url()), any_json()).prop_map(
            |(full, location, resource)| {
                let mut entry = json!({"resource": resource});
                if let Some(full) = full {
                    entry["fullUrl"] = full.into();
                }
                if let Some(location) = location {
                    entry["response"] = json!({"status": "200", "location": location});
                }
                entry
            },
        );
        (prop::collection::vec(link, 0..4), prop::collection::vec(entry, 0..4), any_json()).prop_map(|(link, entry, meta)| {
            json!({"resourceType": "Bundle", "link": link, "entry": entry, "meta": meta})
        })
    }

    /// What the rewrite should give, computed on a tree: `None` when nothing changes.
    fn model(bases: &Bases, mut bundle: Value) -> Option<Value> {
        let mut changed = false;
        let mut fix = |v: Option<&mut Value>| {
            if let Some(Value::String(s)) = v
                && let Some(new) = bases.rewrite_url(s).filter(|new| new != s)
            {
                *s = new;
                changed = true;
            }
        };
        for link in bundle["link"].as_array_mut().into_iter().flatten() {
            fix(link.get_mut("url"));
        }
        for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
            fix(entry.get_mut("fullUrl"));
            fix(entry
                .get_mut("response")
                .and_then(|r| r.get_mut("location")));
        }
        changed.then_some(bundle)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = bases().rewrite_bundle(&bytes);
        }

        #[test]
        fn a_bundle_is_rewritten_as_its_tree_model_says(bundle in any_bundle(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&bundle) } else { serde_json::to_string(&bundle) }.unwrap();
            let out = bases().rewrite_bundle(text.as_bytes());
            // The model reads the text too: serde_json's float parsing does not round-trip
            // every f64 it writes, but it reads equal spellings equally.
            let expected = model(&bases(), serde_json::from_str(&text).unwrap());
            prop_assert_eq!(out.is_some(), expected.is_some());
            if let (Some(out), Some(expected)) = (out, expected) {
                let parsed: Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(parsed, expected);
            }
            prop_assert_eq!(Bases::new(UP, UP).unwrap().rewrite_bundle(text.as_bytes()), None);
        }

        #[test]
        fn mutated_bundles_never_panic(bundle in any_bundle(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = serde_json::to_vec(&bundle).unwrap();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = bases().rewrite_bundle(&bytes);
            bytes.truncate(i);
            let _ = bases().rewrite_bundle(&bytes);
        }
    }
}
