//! `extract_bearer` (RFC 6750 §2.1, docs/AUTHORIZATION.md §1.1) on any header values and query: it
//! never panics, and it agrees with a plain reading of the grammar: exactly one `Authorization`
//! header, scheme `Bearer` (any case), one space, a non-empty `b64token` of at most `max_len`
//! bytes, and no `access_token` in the query. A token it returns is the exact tail of the header.
#![no_main]

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use smart_guard::{BearerError, extract_bearer};

/// The grammar, written the slow and obvious way: `Ok(token)`, or `Err(true)` for "no bearer
/// credential" (401) and `Err(false)` for "malformed" (400).
fn reference(value: &[u8], max_len: usize) -> Result<&[u8], bool> {
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        // `Bearer` alone is an empty token (malformed); anything else is another scheme.
        return Err(!value.eq_ignore_ascii_case(b"bearer"));
    };
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(true); // another scheme: no token
    }
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let valid = body_len > 0
        && token.len() <= max_len
        && token[..body_len]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if valid { Ok(token) } else { Err(false) }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // control: bits 0-1 = number of Authorization headers (0..=3), bits 2-7 pick max_len.
    let headers_wanted = usize::from(control & 3);
    let max_len = [1, 8, 64, 8192][usize::from(control >> 2) & 3];
    let mut parts = rest.split(|&b| b == b'\n');
    let mut headers = HeaderMap::new();
    let mut values = Vec::new();
    for _ in 0..headers_wanted {
        let Some(raw) = parts.next() else { break };
        let Ok(value) = HeaderValue::from_bytes(raw) else {
            return; // not a value hyper would hand us
        };
        values.push(raw.to_vec());
        headers.append(AUTHORIZATION, value);
    }
    let query = parts
        .next()
        .map(|q| String::from_utf8_lossy(q).into_owned());
    let result = extract_bearer(&headers, query.as_deref(), max_len);

    let query_has_token = query.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(name, _)| name == "access_token")
    });
    match (values.as_slice(), &result) {
        ([], Err(BearerError::Missing)) => {}
        ([], other) => panic!("no header gave {other:?}"),
        ([_, _, ..], Err(BearerError::Malformed(_))) => {}
        ([_, _, ..], other) => panic!("several headers gave {other:?}"),
        ([value], _) => {
            let expected = reference(value, max_len);
            match (&result, expected) {
                (Ok(token), Ok(want)) => {
                    assert!(
                        !query_has_token,
                        "a token next to access_token in the query"
                    );
                    assert_eq!(token.expose().as_bytes(), want);
                    assert!(value.ends_with(token.expose().as_bytes()));
                    assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
                }
                (Err(BearerError::Malformed(_)), Ok(_)) => {
                    assert!(query_has_token, "refused a valid credential");
                }
                (Err(BearerError::Missing), Err(true)) => {}
                (Err(BearerError::Malformed(_)), Err(false)) => {}
                (got, want) => panic!("{got:?} but the grammar says {want:?}"),
            }
        }
    }
});
