//! The proxy's own refusals and upstream failures, as FHIR `OperationOutcome`s. No internal
//! address or error text reaches the client; the cause is logged.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};

use crate::rejection::{FHIR_JSON, operation_outcome};

/// Why the proxy answered itself instead of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyFailure {
    /// The request cannot be forwarded as the guard read it (e.g. `Connection` names a header
    /// the guard decided on): 400.
    Unforwardable,
    /// A raw `;` in the query, which some servers split parameters on and the guard does not:
    /// 400 (`%3B` passes).
    AmbiguousQuery,
    /// The request is outside the proxy's FHIR base: 404.
    OutsideBase,
    /// The upstream refused the connection or could not be reached: 502.
    Unreachable,
    /// The upstream closed or reset the connection, or answered something that is not HTTP: 502.
    Broken,
    /// No answer within `SMART_GUARD_UPSTREAM_TIMEOUT_MS`: 504.
    Timeout,
    /// Every upstream connection slot stayed busy for the upstream timeout: 503.
    Busy,
}

impl ProxyFailure {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Unforwardable | Self::AmbiguousQuery => StatusCode::BAD_REQUEST,
            Self::OutsideBase => StatusCode::NOT_FOUND,
            Self::Unreachable | Self::Broken => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn issue(self) -> (&'static str, &'static str) {
        match self {
            Self::Unforwardable => (
                "invalid",
                "the request cannot be forwarded as it was authorized: its Connection header names a header the guard decides on",
            ),
            Self::AmbiguousQuery => (
                "invalid",
                "a ';' in the query is read as a parameter separator by some servers: send it as %3B",
            ),
            Self::OutsideBase => ("not-found", "outside the FHIR base"),
            Self::Unreachable => ("transient", "the FHIR server cannot be reached"),
            Self::Broken => ("transient", "the FHIR server closed the connection"),
            Self::Timeout => ("timeout", "the FHIR server did not answer in time"),
            Self::Busy => (
                "transient",
                "too many requests to the FHIR server; try again later",
            ),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let (code, diagnostics) = self.issue();
        let mut response = Response::new(Body::from(operation_outcome(code, diagnostics)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self == Self::Busy {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_are_502_504_and_503_with_an_operation_outcome() {
        for (failure, status) in [
            (ProxyFailure::Unreachable, 502),
            (ProxyFailure::Broken, 502),
            (ProxyFailure::Timeout, 504),
            (ProxyFailure::Busy, 503),
            (ProxyFailure::Unforwardable, 400),
            (ProxyFailure::AmbiguousQuery, 400),
            (ProxyFailure::OutsideBase, 404),
        ] {
            let response = failure.into_response();
            assert_eq!(response.status().as_u16(), status, "{failure:?}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], FHIR_JSON);
        }
    }
}
