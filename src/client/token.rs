//! `request_token`: the SMART Backend Services `client_credentials` token request and its answer.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::assertion::AssertionSigner;
use super::error::{ClientError, ClientErrorKind, OAuthError};

/// The `grant_type` SMART Backend Services uses.
pub const GRANT_TYPE_CLIENT_CREDENTIALS: &str = "client_credentials";

/// An access token.
///
/// # Security
///
/// `Debug` prints `AccessToken(<redacted>)`; read the value with [`AccessToken::as_str`] only to
/// put it into an `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// The token itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl Serialize for AccessToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccessToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token (redacted in `Debug`).
    pub access_token: AccessToken,
    /// The token type; SMART servers answer `bearer` (compare case-insensitively).
    pub token_type: String,
    /// Lifetime in seconds; SMART Backend Services servers SHOULD NOT exceed 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The granted scopes, space-separated; may differ from the requested ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Requests an access token with `grant_type=client_credentials` and a fresh client assertion whose
/// `aud` is `token_url`.
///
/// # Errors
///
/// - [`ClientErrorKind::OAuth`] with [`ClientError::oauth_error`] when the server answers an RFC 6749
///   §5.2 error (e.g. `invalid_client`, `invalid_scope`);
/// - [`ClientErrorKind::Transport`], [`ClientErrorKind::UnexpectedStatus`] or
///   [`ClientErrorKind::InvalidResponse`] for other failures;
/// - [`ClientErrorKind::Signing`] if the assertion cannot be signed.
pub async fn request_token(
    http: &reqwest::Client,
    token_url: &str,
    signer: &AssertionSigner,
    scope: &str,
) -> Result<TokenResponse, ClientError> {
    let assertion = signer.sign(token_url)?;
    let [assertion_type, assertion_param] = assertion.form_params();
    let form = [
        ("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS),
        ("scope", scope),
        assertion_type,
        assertion_param,
    ];
    let response = http
        .post(token_url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| ClientError::new(ClientErrorKind::Transport).with_source(e.without_url()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ClientError::new(ClientErrorKind::Transport).with_source(e.without_url()))?;
    parse_token_answer(status.as_u16(), &body)
}

/// Interprets a token endpoint answer: a 2xx token response, an RFC 6749 §5.2 error, or neither.
pub(crate) fn parse_token_answer(status: u16, body: &[u8]) -> Result<TokenResponse, ClientError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice::<TokenResponse>(body).map_err(|e| {
            // serde_json errors name positions, never the token value.
            ClientError::new(ClientErrorKind::InvalidResponse)
                .with_status(status)
                .with_source(e)
        });
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(error) => Err(ClientError::oauth(status, error)),
        Err(_) => Err(ClientError::new(ClientErrorKind::UnexpectedStatus).with_status(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::OAuthErrorCode;

    #[test]
    fn a_token_response_parses_and_hides_the_token_in_debug() {
        let body = br#"{"access_token":"s3cr3t-value","token_type":"bearer","expires_in":300,"scope":"system/Patient.rs"}"#;
        let r = parse_token_answer(200, body).expect("parses");
        assert_eq!(r.access_token.as_str(), "s3cr3t-value");
        assert_eq!(r.expires_in, Some(300));
        assert!(!format!("{r:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn an_error_answer_becomes_a_typed_oauth_error() {
        let body = br#"{"error":"invalid_client","error_description":"bad signature"}"#;
        let e = parse_token_answer(401, body).expect_err("error");
        assert_eq!(e.kind(), ClientErrorKind::OAuth);
        assert_eq!(e.status(), Some(401));
        assert_eq!(
            e.oauth_error().map(|o| &o.error),
            Some(&OAuthErrorCode::InvalidClient)
        );
        assert_eq!(
            e.to_string(),
            "server answered invalid_client: bad signature"
        );
    }

    #[test]
    fn non_json_answers_are_unexpected_or_invalid() {
        assert_eq!(
            parse_token_answer(502, b"<html>")
                .expect_err("error")
                .kind(),
            ClientErrorKind::UnexpectedStatus
        );
        assert_eq!(
            parse_token_answer(200, b"{}").expect_err("error").kind(),
            ClientErrorKind::InvalidResponse
        );
    }
}
