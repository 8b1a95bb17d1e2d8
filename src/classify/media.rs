//! The media types and content codings of the bodies the guard reads (docs/AUTHORIZATION.md
//! §8.4): a `Content-Type` is compared by type and subtype with its parameters parsed, and a
//! body is read only in the one form the guard reads, so it never reads a body as one thing
//! while the server's framework reads it as another.

/// The two kinds of body the guard reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Form,
    Json,
}

/// The kind of a clean `Content-Type`: `type/subtype`, optional white space, at most a
/// `charset=utf-8` parameter and, for FHIR JSON, at most an R4 `fhirVersion` (4.0 or 4.0.1, the
/// parameter FHIR defines for its media types). `None` for any other type, parameter or
/// trailing text: a framework that accepts `application/x-www-form-urlencoded, text/plain` as a
/// form must not find the guard reading it as no form.
pub(crate) fn media_type(value: &str) -> Option<BodyKind> {
    let mut parts = value.split(';');
    let essence = parts.next()?.trim_matches(WS);
    let kind = if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else if JSON_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        BodyKind::Json
    } else {
        return None;
    };
    let (mut charset, mut version) = (false, false);
    for parameter in parts {
        let (name, value) = parameter.trim_matches(WS).split_once('=')?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let seen = if name.eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8") {
            &mut charset
        } else if kind == BodyKind::Json
            && name.eq_ignore_ascii_case("fhirVersion")
            && matches!(value, "4.0" | "4.0.1")
        {
            &mut version
        } else {
            return None;
        };
        if std::mem::replace(seen, true) {
            return None;
        }
    }
    Some(kind)
}

/// Whether a `Content-Encoding` leaves the body as sent: absent, or exactly `identity`.
pub(crate) fn is_identity(encoding: Option<&str>) -> bool {
    encoding.is_none_or(|e| e.trim_matches(WS).eq_ignore_ascii_case("identity"))
}

/// Whether a header value is visible ASCII (spaces and tabs allowed), as the guard must be able
/// to read every header it decides on.
pub(crate) fn is_readable(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

const WS: [char; 2] = [' ', '\t'];

const JSON_TYPES: [&str; 3] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_media_types_are_read() {
        for (value, kind) in [
            ("application/x-www-form-urlencoded", Some(BodyKind::Form)),
            ("Application/X-WWW-Form-Urlencoded", Some(BodyKind::Form)),
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                Some(BodyKind::Form),
            ),
            (
                "application/x-www-form-urlencoded;charset=\"UTF-8\"",
                Some(BodyKind::Form),
            ),
            ("application/fhir+json", Some(BodyKind::Json)),
            ("application/json; charset=utf-8", Some(BodyKind::Json)),
            (" application/json+fhir ", Some(BodyKind::Json)),
            ("application/x-www-form-urlencoded, text/plain", None),
            ("application/x-www-form-urlencoded text/plain", None),
            ("application/x-www-form-urlencoded\ttext/plain", None),
            ("application/x-www-form-urlencodedx", None),
            ("application/x-www-form-urlencoded; charset=latin1", None),
            ("application/x-www-form-urlencoded; boundary=x", None),
            (
                "application/x-www-form-urlencoded; charset=utf-8; charset=utf-8",
                None,
            ),
            ("application/x-www-form-urlencoded;", None),
            (
                "application/fhir+json; fhirVersion=4.0; charset=utf-8",
                Some(BodyKind::Json),
            ),
            ("application/fhir+json; fhirVersion=5.0", None),
            ("application/x-www-form-urlencoded; fhirVersion=4.0", None),
            ("application/fhir+xml", None),
            ("multipart/form-data; boundary=x", None),
            ("text/plain", None),
            ("", None),
        ] {
            assert_eq!(media_type(value), kind, "{value:?}");
        }
    }

    #[test]
    fn only_identity_leaves_the_body_as_sent() {
        assert!(is_identity(None));
        assert!(is_identity(Some("identity")));
        assert!(is_identity(Some(" IDENTITY ")));
        for coding in [
            "gzip",
            "deflate",
            "br",
            "identity, gzip",
            "gzip, identity",
            "",
        ] {
            assert!(!is_identity(Some(coding)), "{coding:?}");
        }
    }

    #[test]
    fn a_header_is_readable_only_as_visible_ascii() {
        assert!(is_readable("identifier=x&_has:Observation:patient:code=1"));
        assert!(is_readable("a\tb c"));
        assert!(!is_readable("identifier=\u{e9}"));
        assert!(!is_readable("\u{fffd}"));
        assert!(!is_readable("a\u{7f}"));
    }
}
