//! Denials as responses: status, `WWW-Authenticate` (RFC 6750 §3) and a FHIR `OperationOutcome`.

use std::{borrow::Cow, sync::Arc};

use http::{HeaderValue, Response, StatusCode, header};

use crate::{classify::FhirRequest, introspect::response::TokenInfo, scope::InsufficientScope};

/// Why the guard refused a request. A copy travels in the response's extensions.
///
/// ```
/// # use http::Response;
/// use smart_guard::AuthFailure;
///
/// fn was_scope_denial(response: &Response<String>) -> bool {
///     response.extensions().get::<AuthFailure>() == Some(&AuthFailure::InsufficientScope)
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No credentials (or another auth scheme): 401 with a bare challenge.
    MissingToken,
    /// Malformed credentials, or a token in the query next to the header: 400 `invalid_request`.
    InvalidRequest,
    /// A malformed FHIR path (dot segments, percent-encoding, empty segments): 400.
    MalformedPath,
    /// Not a FHIR interaction, or outside the base path: 404.
    NotFound,
    /// A body the guard must read is over the limit: 413.
    PayloadTooLarge,
    /// Inactive, expired, unknown or locally rejected token: 401 `invalid_token`.
    InvalidToken,
    /// The token's scopes do not cover the request: 403 `insufficient_scope`.
    InsufficientScope,
    /// The authorization server could not answer: 503 with `Retry-After`.
    Unavailable,
    /// A body the guard must read comes in a form it does not read (another media type or
    /// parameter, a `Content-Encoding`): 415.
    UnsupportedMediaType,
    /// The guard failed on this request (a bug: its analysis panicked): 500. The panic is
    /// caught, logged at ERROR and answered; the server and other requests go on.
    Internal,
}

impl AuthFailure {
    /// The HTTP status this failure is answered with.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest | Self::MalformedPath => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short lowercase name, used in tracing.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidRequest => "invalid_request",
            Self::MalformedPath => "malformed_path",
            Self::NotFound => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The FHIR `IssueType` code of the OperationOutcome.
    fn issue_code(self) -> &'static str {
        match self {
            Self::MissingToken | Self::InvalidToken => "login",
            Self::InvalidRequest | Self::MalformedPath => "invalid",
            Self::NotFound => "not-found",
            Self::PayloadTooLarge => "too-long",
            Self::UnsupportedMediaType => "not-supported",
            Self::InsufficientScope => "forbidden",
            Self::Unavailable => "transient",
            Self::Internal => "exception",
        }
    }
}

/// The `Content-Type` of every denial's `OperationOutcome`.
pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A denial, ready to become a response.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) kind: AuthFailure,
    detail: Cow<'static, str>,
    scope: Option<InsufficientScope>,
    /// What the guard knew when it refused (for the audit record): the token's answer, once
    /// the token was found active, and the classified request.
    pub(crate) token: Option<Arc<TokenInfo>>,
    pub(crate) request: Option<Box<FhirRequest>>,
}

impl Rejection {
    pub(crate) fn new(kind: AuthFailure, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            scope: None,
            token: None,
            request: None,
        }
    }

    /// Keeps the active token's answer and the classified request, for the audit record.
    pub(crate) fn with_context(
        mut self,
        token: Arc<TokenInfo>,
        request: Option<FhirRequest>,
    ) -> Self {
        self.token = Some(token);
        self.request = request.map(Box::new);
        self
    }

    /// What a 403 missed.
    pub(crate) fn missing_scope(&self) -> Option<&InsufficientScope> {
        self.scope.as_ref()
    }

    pub(crate) fn insufficient_scope(missing: InsufficientScope) -> Self {
        // Names what is missing, why nothing could help, or each denied batch entry.
        let detail = Cow::Owned(missing.to_string());
        Self {
            kind: AuthFailure::InsufficientScope,
            detail,
            scope: Some(missing),
            token: None,
            request: None,
        }
    }
}

/// The precomputed challenge headers of one guard (they depend only on the realm and the
/// resource metadata URL).
#[derive(Debug, Clone)]
pub(crate) struct Challenges {
    realm: String,
    /// `, resource_metadata="<url>"` (RFC 9728 §5.1), or empty.
    resource_metadata: String,
    bare: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
    insufficient_scope: HeaderValue,
    retry_after: HeaderValue,
}

impl Challenges {
    /// `realm` is checked by the config: printable ASCII without `"` or `\`; so is
    /// `resource_metadata`, a serialized URL (RFC 9728 §5.1: with it, every challenge names the
    /// protected resource metadata).
    pub(crate) fn new(realm: &str, retry_after_secs: u64, resource_metadata: Option<&str>) -> Self {
        let resource_metadata = resource_metadata
            .map(|url| format!(", resource_metadata=\"{url}\""))
            .unwrap_or_default();
        let value = |error: &str| {
            HeaderValue::try_from(format!(
                "Bearer realm=\"{realm}\"{error}{resource_metadata}"
            ))
            .expect("realm and URL are printable ASCII (checked by Config)")
        };
        Self {
            bare: value(""),
            invalid_request: value(", error=\"invalid_request\""),
            invalid_token: value(", error=\"invalid_token\""),
            insufficient_scope: value(", error=\"insufficient_scope\""),
            realm: realm.to_owned(),
            resource_metadata,
            retry_after: HeaderValue::from(retry_after_secs),
        }
    }

    fn challenge(&self, rejection: &Rejection) -> Option<HeaderValue> {
        match rejection.kind {
            AuthFailure::MissingToken => Some(self.bare.clone()),
            AuthFailure::InvalidRequest => Some(self.invalid_request.clone()),
            AuthFailure::InvalidToken => Some(self.invalid_token.clone()),
            AuthFailure::InsufficientScope => match &rejection.scope {
                Some(scope) if !scope.missing().is_empty() => HeaderValue::try_from(format!(
                    "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"{}",
                    self.realm,
                    scope.scope_hint(),
                    self.resource_metadata
                ))
                .ok(),
                _ => Some(self.insufficient_scope.clone()),
            },
            AuthFailure::MalformedPath
            | AuthFailure::NotFound
            | AuthFailure::PayloadTooLarge
            | AuthFailure::UnsupportedMediaType
            | AuthFailure::Unavailable
            | AuthFailure::Internal => None,
        }
    }

    /// Turns a rejection into its response.
    pub(crate) fn respond<B: From<String>>(&self, rejection: Rejection) -> Response<B> {
        let body = operation_outcome(rejection.kind.issue_code(), &rejection.detail);
        let mut response = Response::new(B::from(body));
        *response.status_mut() = rejection.kind.status();
        let headers = response.headers_mut();
        // FHIR's JSON media type with the charset spelled out (R4 http.html#mime-type: UTF-8
        // is the only encoding; a client that defaults to Latin-1 otherwise reads it right).
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.challenge(&rejection) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if rejection.kind == AuthFailure::Unavailable {
            headers.insert(header::RETRY_AFTER, self.retry_after.clone());
        }
        response.extensions_mut().insert(rejection.kind);
        response
    }
}

pub(crate) fn operation_outcome(code: &str, diagnostics: &str) -> String {
    serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    })
    .to_string()
}
