//! Startup errors. Per-request outcomes are [`Rejection`](crate::Rejection)s instead.

use std::fmt;

/// A configuration problem found at startup. It names the offending setting (the env var when the
/// configuration came from the environment) and never shows a secret's value.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is absent or empty.
    Missing {
        /// The env var (or setting) name.
        var: &'static str,
    },
    /// A setting has a value that cannot be used.
    Invalid {
        /// The env var (or setting) name.
        var: &'static str,
        /// What is wrong, in words; quotes the value only for non-secret settings.
        reason: String,
    },
    /// The HTTP client for introspection could not be built.
    HttpClient(reqwest::Error),
    /// [`Config::discover`](crate::Config::discover) found no usable metadata: the AS is
    /// unreachable, or its metadata is inconsistent (issuer mismatch, missing endpoint,
    /// unsupported authentication method or algorithm).
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// What went wrong, naming the metadata URLs tried.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { var } => write!(f, "{var} is required but not set"),
            Self::Invalid { var, reason } => write!(f, "{var} is invalid: {reason}"),
            Self::HttpClient(_) => f.write_str("could not build the introspection HTTP client"),
            Self::Discovery { issuer, reason } => {
                write!(
                    f,
                    "discovery of the authorization server {issuer} failed: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::HttpClient(e) => Some(e),
            _ => None,
        }
    }
}

/// What went wrong talking to the introspection endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IntrospectErrorKind {
    /// The connection could not be made.
    Connect,
    /// The call took longer than the configured timeout.
    Timeout,
    /// The AS refused our own credentials (401 or 403): a misconfiguration.
    CredentialsRejected,
    /// The AS answered an unexpected status (5xx, 4xx other than 401/403, 3xx).
    Status,
    /// The answer was larger than the configured limit.
    AnswerTooLarge,
    /// The answer was not a JSON object, or a known field had the wrong type.
    MalformedAnswer,
    /// Another transport error (reset connection, truncated body, protocol error).
    Transport,
    /// This resource server could not produce its own credentials: signing a client assertion
    /// failed, or (bearer mode) its own access token could not be obtained from the AS.
    OwnCredentials,
}

impl IntrospectErrorKind {
    /// A short snake_case name, used in logs and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::CredentialsRejected => "credentials_rejected",
            Self::Status => "status",
            Self::AnswerTooLarge => "answer_too_large",
            Self::MalformedAnswer => "malformed_answer",
            Self::Transport => "transport",
            Self::OwnCredentials => "own_credentials",
        }
    }
}

/// An introspection call that produced no usable answer. Never cached; the request gets 503.
///
/// `Display` describes this level only; the cause, if any, is in `source()`. Neither ever holds
/// the token: it travels in the request body, never in the URL.
#[derive(Debug)]
pub struct IntrospectError {
    kind: IntrospectErrorKind,
    detail: &'static str,
    status: Option<u16>,
    /// The RFC 6749 §5.2 `error` code of a refusal, e.g. `invalid_client`.
    oauth_error: Option<Box<str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl IntrospectError {
    pub(crate) fn new(kind: IntrospectErrorKind, detail: &'static str) -> Self {
        Self {
            kind,
            detail,
            status: None,
            oauth_error: None,
            source: None,
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Keeps `code` if it is a well-formed RFC 6749 §5.2 error code (so no secret or markup
    /// can ride along).
    pub(crate) fn with_oauth_error(mut self, code: &str) -> Self {
        let valid = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if valid {
            self.oauth_error = Some(code.into());
        }
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> IntrospectErrorKind {
        self.kind
    }

    /// The HTTP status the AS answered, for [`IntrospectErrorKind::Status`] and
    /// [`IntrospectErrorKind::CredentialsRejected`].
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The OAuth `error` code the AS gave with a refusal (RFC 6749 §5.2, e.g. `invalid_client`),
    /// for [`IntrospectErrorKind::CredentialsRejected`].
    #[must_use]
    pub fn oauth_error(&self) -> Option<&str> {
        self.oauth_error.as_deref()
    }
}

impl fmt::Display for IntrospectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("introspection failed: ")?;
        f.write_str(self.detail)?;
        match (self.status, &self.oauth_error) {
            (Some(status), Some(code)) => write!(f, " (HTTP {status}, {code})")?,
            (Some(status), None) => write!(f, " (HTTP {status})")?,
            _ => {}
        }
        Ok(())
    }
}

impl std::error::Error for IntrospectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An error and its sources, `: `-separated: for logs and startup errors, never for a client.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A revocation reached this replica's caches but not the fleet's shared cache (Redis failed
/// or timed out): the other replicas keep their answers until their TTL. Retry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationNotShared;

impl fmt::Display for RevocationNotShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the revocation reached this replica only: the shared cache is unavailable")
    }
}

impl std::error::Error for RevocationNotShared {}
