//! [`IdentityValues`]: a token's client id and scopes as the field values the proxy sends
//! upstream (`headers.rs` names the fields).

use bytes::Bytes;
use http::HeaderValue;

/// A token's `client_id` (when the introspection answer had one) and granted scopes as field
/// values, encoded once per token and client connection.
///
/// A value is sent as is when it is visible ASCII with inner spaces; otherwise the bytes that
/// would not be (controls, non-ASCII UTF-8, a leading or trailing space) and every `%` are
/// percent-encoded (`%XX`), so the value is always a valid field value and percent-decoding
/// it gives back the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IdentityValues {
    pub(crate) client_id: Option<HeaderValue>,
    pub(crate) scopes: HeaderValue,
}

impl IdentityValues {
    pub(crate) fn new(client_id: Option<&str>, scopes: &str) -> Self {
        Self {
            client_id: client_id.map(field_value),
            scopes: field_value(scopes),
        }
    }
}

/// `value` as a field value, percent-encoding what [`IdentityValues`] describes (one allocation
/// when nothing needs encoding).
fn field_value(value: &str) -> HeaderValue {
    let bytes = value.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let encoded = |i: usize, b: u8| {
        b == b'%' || !(b' '..=b'~').contains(&b) || (b == b' ' && (i == 0 || i == last))
    };
    if !bytes.iter().enumerate().any(|(i, &b)| encoded(i, b))
        && let Ok(value) = HeaderValue::from_str(value)
    {
        return value;
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for (i, &b) in bytes.iter().enumerate() {
        if encoded(i, b) {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
    HeaderValue::from_maybe_shared(Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";
