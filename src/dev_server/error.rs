//! `OAuthErrorResponse`: RFC 6749 §5.2 JSON error answers.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// An RFC 6749 §5.2 error answer. Descriptions are fixed strings: never a token, secret or assertion.
#[derive(Debug)]
pub(crate) struct OAuthErrorResponse {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    basic_challenge: bool,
}

impl OAuthErrorResponse {
    fn new(status: StatusCode, error: &'static str, description: &'static str) -> Self {
        Self {
            status,
            error,
            description,
            basic_challenge: false,
        }
    }

    pub(crate) fn invalid_request(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn invalid_client(description: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    pub(crate) fn invalid_scope(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub(crate) fn unsupported_grant_type(description: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    /// Adds `WWW-Authenticate: Basic` (RFC 6749 §5.2: required when the client used the header).
    pub(crate) fn with_basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }

    pub(crate) fn description(&self) -> &'static str {
        self.description
    }
}

impl IntoResponse for OAuthErrorResponse {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"smart-guard dev-server\""),
            );
        }
        response
    }
}
