//! Taking the bearer token from a request (RFC 6750 §2.1, docs/AUTHORIZATION.md §1.1).

use std::fmt;

use http::{HeaderMap, header::AUTHORIZATION};

/// A bearer token borrowed from the request. Its `Debug` never shows the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BearerToken<'a>(&'a [u8]);

impl<'a> BearerToken<'a> {
    /// The token exactly as sent. Handle with care: it is a live credential.
    #[must_use]
    pub fn expose(&self) -> &'a str {
        // A b64token is ASCII, so this is never the empty fallback.
        std::str::from_utf8(self.0).unwrap_or_default()
    }

    /// The token's bytes exactly as sent (ASCII). Handle with care: it is a live credential.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why no bearer token could be taken from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// No `Authorization` header, or one with another scheme (`Basic`, `DPoP`, …): 401 with a
    /// bare challenge.
    Missing,
    /// A malformed request: 400 `invalid_request`.
    Malformed(&'static str),
}

/// Extracts the token from the one `Authorization: Bearer <b64token>` header.
///
/// The scheme is case-insensitive, exactly one space separates it from the token, the token must
/// match RFC 6750 `b64token` and be at most `max_len` bytes. A token in the query string next to
/// the header is refused; one in the query alone counts as no token (the guard supports the header
/// method only).
///
/// # Errors
///
/// [`BearerError::Missing`] or [`BearerError::Malformed`].
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
/// use smart_guard::{BearerError, extract_bearer};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc.DEF-123"));
/// assert_eq!(extract_bearer(&headers, None, 8192).unwrap().expose(), "abc.DEF-123");
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  two-spaces"));
/// assert!(matches!(extract_bearer(&headers, None, 8192), Err(BearerError::Malformed(_))));
/// ```
pub fn extract_bearer<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
    max_len: usize,
) -> Result<BearerToken<'a>, BearerError> {
    extract_bearer_unchecked(headers, query, max_len)?.checked()
}

/// [`extract_bearer`] but for the token's alphabet, which [`BearerToken::checked`] checks.
///
/// The guard checks the alphabet of a token it has cached an answer for only once, when the
/// token was first seen: a request whose token digests to a cached key carries that same token
/// (the digest is a keyed 256-bit one), so on a cache hit the check would re-parse for nothing.
/// The errors, and their order, are those of [`extract_bearer`].
pub(crate) fn extract_bearer_unchecked<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
    max_len: usize,
) -> Result<BearerToken<'a>, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::Malformed("more than one Authorization header"));
    }
    let token = split_bearer(value.as_bytes())?;
    if token.len() > max_len {
        return Err(BearerError::Malformed("bearer token too long"));
    }
    let token = BearerToken(token);
    if query.is_some_and(has_access_token_param) {
        // A malformed token is reported first, as `extract_bearer` always did.
        token.checked()?;
        return Err(BearerError::Malformed(
            "access_token in the query next to an Authorization header",
        ));
    }
    Ok(token)
}

/// The token after `Bearer ` (scheme case-insensitive), or why there is none.
fn split_bearer(value: &[u8]) -> Result<&[u8], BearerError> {
    // The usual shape, without a scan for the space: `Bearer ` (7 bytes) and a token.
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        return Ok(&value[7..]);
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], Some(&value[space + 1..])),
        None => (value, None),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::Missing);
    }
    rest.filter(|t| !t.is_empty())
        .ok_or(BearerError::Malformed("empty bearer token"))
}

impl BearerToken<'_> {
    /// The token if it matches RFC 6750 `b64token`.
    pub(crate) fn checked(self) -> Result<Self, BearerError> {
        if is_b64token(self.0) {
            Ok(self)
        } else {
            Err(BearerError::Malformed("bearer token is not a b64token"))
        }
    }
}

/// RFC 6750: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// Branch-free per byte over exact 32-byte chunks, with the "bad byte" flags ORed into 32 lanes
/// and reduced once at the end, so the compiler vectorizes it even for baseline x86-64 (SSE2):
/// a 1 KB token is checked in tens of nanoseconds (this runs on every request).
pub(crate) fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..body_len];
    let chunks = body.chunks_exact(32);
    let tail = chunks.remainder();
    let mut bad = [0u8; 32];
    for chunk in chunks {
        for (lane, &byte) in bad.iter_mut().zip(chunk) {
            *lane |= u8::from(!is_b64token_char(byte));
        }
    }
    for (lane, &byte) in bad.iter_mut().zip(tail) {
        *lane |= u8::from(!is_b64token_char(byte));
    }
    body_len > 0 && bad.iter().fold(0, |all, &lane| all | lane) == 0
}

#[inline(always)]
fn is_b64token_char(b: u8) -> bool {
    // '-' '.' '/' and the digits are the contiguous 0x2D..=0x39; '+' is 0x2B.
    let folded = b | 0x20; // 'A'..='Z' -> 'a'..='z'; no other byte lands in 'a'..='z'
    (b.wrapping_sub(b'-') <= b'9' - b'-')
        | (folded.wrapping_sub(b'a') < 26)
        | (b == b'+')
        | (b == b'_')
        | (b == b'~')
}

/// Whether a query string or form body carries an `access_token` parameter.
pub(crate) fn has_access_token_param(params: &str) -> bool {
    form_urlencoded::parse(params.as_bytes()).any(|(name, _)| name == "access_token")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("header value"),
            );
        }
        map
    }

    #[test]
    fn accepted_credentials_yield_the_exact_token() {
        for (header, token) in [
            (&b"Bearer abc"[..], "abc"),
            (b"bearer abc", "abc"),
            (b"BEARER abc", "abc"),
            (b"BeArEr abc", "abc"),
            (b"Bearer a-b.c_d~e+f/g", "a-b.c_d~e+f/g"),
            (b"Bearer abc==", "abc=="),
            (b"Bearer AbC", "AbC"),
        ] {
            let map = headers(&[header]);
            let got = extract_bearer(&map, None, 8192).map(|t| t.expose());
            assert_eq!(got, Ok(token), "{:?}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn missing_or_other_schemes_are_missing_credentials() {
        assert_eq!(
            extract_bearer(&headers(&[]), None, 8192),
            Err(BearerError::Missing)
        );
        for header in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"DPoP abc",
            b"Bearerabc",
            b"Token abc",
            b"",
        ] {
            assert_eq!(
                extract_bearer(&headers(&[header]), None, 8192),
                Err(BearerError::Missing),
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }
        // A query token alone is a method we do not support: no credentials.
        assert_eq!(
            extract_bearer(&headers(&[]), Some("access_token=abc"), 8192),
            Err(BearerError::Missing)
        );
    }

    #[test]
    fn malformed_credentials_are_invalid_requests() {
        for header in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer  abc",
            b"Bearer abc def",
            b"Bearer abc,Bearer def",
            b"Bearer abc, def",
            b"Bearer =abc",
            b"Bearer ab=c",
            b"Bearer ===",
            b"Bearer abc\t",
            b"Bearer \tabc",
            b"Bearer ab\"c",
            b"Bearer abc ",
            b"Bearer ab\xc3\xa9c",
            b"Bearer ab%41c",
        ] {
            assert!(
                matches!(
                    extract_bearer(&headers(&[header]), None, 8192),
                    Err(BearerError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn two_authorization_headers_are_an_invalid_request() {
        let map = headers(&[b"Bearer abc", b"Bearer abc"]);
        assert!(matches!(
            extract_bearer(&map, None, 8192),
            Err(BearerError::Malformed(_))
        ));
    }

    #[test]
    fn tokens_over_the_limit_are_refused() {
        let long = format!("Bearer {}", "a".repeat(8193));
        let map = headers(&[long.as_bytes()]);
        assert!(matches!(
            extract_bearer(&map, None, 8192),
            Err(BearerError::Malformed(_))
        ));
        let exact = format!("Bearer {}", "a".repeat(8192));
        let map = headers(&[exact.as_bytes()]);
        assert!(extract_bearer(&map, None, 8192).is_ok());
    }

    #[test]
    fn a_query_access_token_next_to_the_header_is_an_invalid_request() {
        let map = headers(&[b"Bearer abc"]);
        for query in ["access_token=abc", "a=1&access_token=x", "access%5Ftoken=x"] {
            assert!(
                matches!(
                    extract_bearer(&map, Some(query), 8192),
                    Err(BearerError::Malformed(_))
                ),
                "{query}"
            );
        }
        assert!(extract_bearer(&map, Some("my_access_token_x=1"), 8192).is_ok());
    }

    #[test]
    fn the_b64token_alphabet_is_exactly_rfc_6750() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_b64token_char(b), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let map = headers(&[b"Bearer s3cr3t-token"]);
        let token = extract_bearer(&map, None, 8192).expect("valid");
        assert!(!format!("{token:?}").contains("s3cr3t"));
    }
}
