//! `ClientError`: what can go wrong on the client side, and the RFC 6749 §5.2 error model.

use std::error::Error as StdError;
use std::fmt;

use serde::{Deserialize, Serialize};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error from key handling, assertion signing or a token request.
///
/// `Display` describes this level only; the underlying cause is available through
/// [`Error::source`](std::error::Error::source). No key material and no token ever appears in it.
pub struct ClientError {
    kind: ClientErrorKind,
    status: Option<u16>,
    oauth: Option<OAuthError>,
    source: Option<BoxError>,
}

/// The category of a [`ClientError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientErrorKind {
    /// A key could not be generated, parsed, or is of an unsupported type or size.
    Key,
    /// The client assertion could not be signed.
    Signing,
    /// The HTTP request failed (connection, timeout, TLS).
    Transport,
    /// The server answered with an RFC 6749 §5.2 error; see [`ClientError::oauth_error`].
    OAuth,
    /// The server answered with an unexpected HTTP status and no OAuth error body.
    UnexpectedStatus,
    /// The server answered 2xx, but the body is not a valid response.
    InvalidResponse,
}

impl ClientError {
    pub(crate) fn new(kind: ClientErrorKind) -> Self {
        Self {
            kind,
            status: None,
            oauth: None,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn oauth(status: u16, error: OAuthError) -> Self {
        Self {
            kind: ClientErrorKind::OAuth,
            status: Some(status),
            oauth: Some(error),
            source: None,
        }
    }

    /// The category of this error.
    pub fn kind(&self) -> ClientErrorKind {
        self.kind
    }

    /// The HTTP status the server answered with, if a response was received.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The RFC 6749 §5.2 error body, when the server sent one.
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        self.oauth.as_ref()
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientError")
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("oauth", &self.oauth)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ClientErrorKind::Key => f.write_str("invalid or unsupported key"),
            ClientErrorKind::Signing => f.write_str("failed to sign the client assertion"),
            ClientErrorKind::Transport => f.write_str("http request failed"),
            ClientErrorKind::OAuth => match &self.oauth {
                Some(e) => write!(f, "server answered {e}"),
                None => f.write_str("server answered an oauth error"),
            },
            ClientErrorKind::UnexpectedStatus => match self.status {
                Some(s) => write!(f, "server answered unexpected http status {s}"),
                None => f.write_str("server answered unexpected http status"),
            },
            ClientErrorKind::InvalidResponse => {
                f.write_str("server answer is not a valid response")
            }
        }
    }
}

impl StdError for ClientError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// An RFC 6749 §5.2 error response body (`error`, `error_description`, `error_uri`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// The `error` code.
    pub error: OAuthErrorCode,
    /// The optional human-readable `error_description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// The optional `error_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.error.as_str())?;
        if let Some(d) = &self.error_description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// An RFC 6749 §5.2 `error` code; unknown codes are kept in [`OAuthErrorCode::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: a parameter is missing, repeated, or malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the grant is invalid, expired, or revoked.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the server does not support this grant type.
    UnsupportedGrantType,
    /// `invalid_scope`: the requested scope is invalid, unknown, or not allowed.
    InvalidScope,
    /// Any other code.
    Other(String),
}

impl OAuthErrorCode {
    /// The wire form of this code, e.g. `"invalid_client"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire code; unknown codes become [`OAuthErrorCode::Other`].
    pub fn from_code(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OAuthErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OAuthErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::from_code(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_through_their_wire_form() {
        for code in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "temporarily_unavailable",
        ] {
            assert_eq!(OAuthErrorCode::from_code(code).as_str(), code);
        }
    }

    #[test]
    fn an_oauth_error_body_parses_with_optional_fields() {
        let e: OAuthError =
            serde_json::from_str(r#"{"error":"invalid_scope"}"#).expect("valid json");
        assert_eq!(e.error, OAuthErrorCode::InvalidScope);
        assert_eq!(e.error_description, None);
        let e = ClientError::oauth(400, e);
        assert_eq!(e.to_string(), "server answered invalid_scope");
        assert_eq!(e.status(), Some(400));
    }
}
