//! The one pipeline a request goes through (docs/AUTHORIZATION.md §1.3):
//!
//! resource metadata? → base path → classify → public? → bearer → front cache → [a declared body
//! over the limit: 413] → [miss: introspect] → body, when the guard reads one → grant → claims.
//!
//! [`Shared::begin`] runs everything that needs no wait, inside `Service::call`: it decides
//! (public endpoint, a request's own error, a token in the front cache) or returns a
//! [`Pending`] carrying what it already computed, which [`Shared::finish`] completes. Free of
//! tower: `service.rs` does the plumbing.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, request::Parts};
use http_body_util::{BodyExt, Limited};

use crate::{
    audit::Auditor,
    bearer::{self, BearerError},
    claims::VerifiedClaims,
    classify::{ClassifyError, FhirRequest, Incoming, Policy, reads_body},
    config::Config,
    error::{ConfigError, IntrospectError},
    introspect::{Introspector, Lookup, Miss, response::TokenInfo, status::TokenStatus},
    rejection::{AuthFailure, Challenges, Rejection},
    stats::Stats,
    throttle::{OUTAGE_LOG_INTERVAL, Tally},
};

/// What the guard decided for an allowed request.
#[derive(Debug)]
pub(crate) enum Decision {
    /// A public endpoint: passes without a token.
    Public,
    /// Authenticated and authorized.
    Allow(VerifiedClaims),
}

/// What [`Shared::begin`] found: a decision, or what the request waits for.
#[derive(Debug)]
pub(crate) enum Step {
    Decided(Result<Decision, Rejection>),
    Pending(Pending),
}

/// A request that waits: for its token's answer (a front-cache miss) and, when the guard reads
/// its body, for the body. Carries the classification already made.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The request classified from its headers; `None` when it is classified again with its
    /// body once the token is known to be active.
    classified: Option<FhirRequest>,
    /// Where the path relative to the FHIR base starts in the request's path.
    relative_start: usize,
}

/// Everything one guard shares across its clones.
#[derive(Debug)]
pub(crate) struct Shared {
    introspector: Introspector,
    pub(crate) stats: Arc<Stats>,
    pub(crate) challenges: Challenges,
    base_path: String,
    max_token_bytes: usize,
    max_body_bytes: usize,
    policy: Policy,
    /// `None` when neither the audit log nor a hook is on.
    pub(crate) audit: Option<Auditor>,
    /// The WARN summary of 503 answers.
    pub(crate) unavailable_log: Tally,
    /// The path of the RFC 9728 protected resource metadata, public when set.
    resource_metadata_path: Option<Arc<str>>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Result<Self, ConfigError> {
        let stats = Arc::new(Stats::default());
        if config.max_ttl.is_zero() {
            tracing::warn!(
                "SMART_GUARD_CACHE_MAX_TTL_SECS is 0: active answers are not cached, every request makes an introspection call"
            );
        }
        Ok(Self {
            audit: Auditor::new(config.audit_log, config.audit_hook.clone()),
            unavailable_log: Tally::new(OUTAGE_LOG_INTERVAL),
            policy: config.policy(),
            introspector: Introspector::new(
                &config,
                config.http_client.clone(),
                Arc::clone(&stats),
            )?,
            stats,
            challenges: Challenges::new(
                &config.realm,
                config.retry_after.as_secs(),
                config.resource_metadata_url(),
            ),
            resource_metadata_path: config
                .resource
                .as_ref()
                .map(|r| Arc::clone(&r.metadata_path)),
            base_path: config.base_path,
            max_token_bytes: config.max_token_bytes,
            max_body_bytes: config.max_body_bytes,
        })
    }

    pub(crate) fn readiness(&self) -> crate::readiness::Readiness {
        self.introspector.readiness()
    }

    /// Forgets `token` here and, in fleet mode, across the fleet (see
    /// `Introspector::invalidate`).
    pub(crate) async fn invalidate(&self, token: &str) -> bool {
        self.introspector.invalidate(token).await
    }

    /// Forgets the token named `shared` across the fleet.
    #[cfg(feature = "redis")]
    pub(crate) async fn invalidate_shared(&self, shared: crate::fleet::SharedKey) -> bool {
        self.introspector.invalidate_shared(shared).await
    }

    /// One uncached introspection call (see `Introspector::introspect_uncached`).
    pub(crate) async fn introspect_uncached(
        &self,
        token: &str,
    ) -> Result<TokenStatus, IntrospectError> {
        self.introspector.introspect_uncached(token).await
    }

    /// The first, synchronous step: everything the request line and headers decide, and the
    /// front cache. `declared_body_len` is the body's declared length, if any.
    #[inline]
    pub(crate) fn begin(
        &self,
        method: &Method,
        uri: &Uri,
        extensions: &http::Extensions,
        headers: &HeaderMap,
        declared_body_len: u64,
    ) -> Step {
        if self.is_resource_metadata(method, uri, extensions) {
            return Step::Decided(Ok(Decision::Public));
        }
        let Some(relative) = self.relative_path(uri, extensions) else {
            return Step::Decided(Err(not_found("outside the FHIR base path")));
        };
        let query = uri.query();
        let with_body = reads_body(method, relative, headers);
        let incoming = incoming(method, relative, query, headers, None);
        let classified = match contained(|| self.policy.classify(&incoming)) {
            Ok(Ok(request)) if request.interaction().is_public() => {
                return Step::Decided(Ok(Decision::Public));
            }
            Ok(classified) => classified,
            Err(rejection) => return Step::Decided(Err(rejection)),
        };
        let request = match classified {
            Ok(request) => request,
            // The credentials' own errors come first, then the request's.
            Err(error) => {
                let rejection = match self.bearer(headers, query) {
                    Err(rejection) => rejection,
                    Ok(_) if with_body && declared_body_len > self.max_body_bytes as u64 => {
                        too_large()
                    }
                    Ok(_) => classify_rejection(error),
                };
                return Step::Decided(Err(rejection));
            }
        };
        // The front cache holds only tokens that passed every check when first seen, so a
        // classified request looks its token up unchecked; a miss checks it in full.
        if !with_body {
            let token = match bearer::extract_bearer_unchecked(headers, query, self.max_token_bytes)
            {
                Ok(token) => token,
                Err(error) => return Step::Decided(Err(bearer_rejection(error))),
            };
            if let Some(info) = self.introspector.cached(token.as_bytes()) {
                return Step::Decided(grant(&incoming, request, info));
            }
        }
        if let Err(rejection) = self.bearer(headers, query) {
            return Step::Decided(Err(rejection));
        }
        let relative_start = uri.path().len() - relative.len();
        if !with_body {
            return Step::Pending(Pending {
                classified: Some(request),
                relative_start,
            });
        }
        // A body declared larger than the limit is refused before the token is looked up.
        if declared_body_len > self.max_body_bytes as u64 {
            return Step::Decided(Err(too_large()));
        }
        Step::Pending(Pending {
            classified: None,
            relative_start,
        })
    }

    /// The second step: the token's answer (cache or AS), then, for a request whose body the
    /// guard reads, the body within its limit and the classification with it, then the grant.
    /// Returns the decision and the body to pass on.
    pub(crate) async fn finish<B>(
        &self,
        pending: Pending,
        parts: &Parts,
        body: B,
    ) -> (Result<Decision, Rejection>, B)
    where
        B: http_body::Body<Data = Bytes> + From<Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let query = parts.uri.query();
        let token = match self.bearer(&parts.headers, query) {
            Ok(token) => token,
            Err(rejection) => return (Err(rejection), body),
        };
        let info = match self.authenticate(token.expose()).await {
            Ok(info) => info,
            Err(rejection) => return (Err(rejection), body),
        };
        let relative = parts
            .uri
            .path()
            .get(pending.relative_start..)
            .unwrap_or_default();
        if let Some(request) = pending.classified {
            let incoming = incoming(&parts.method, relative, query, &parts.headers, None);
            return (grant(&incoming, request, info), body);
        }
        let bytes = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let rejection = if error.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    Rejection::new(
                        AuthFailure::InvalidRequest,
                        "the request body could not be read",
                    )
                };
                let rejection = rejection.with_context(info, None);
                return (Err(rejection), B::from(Bytes::new()));
            }
        };
        let decision = self.with_body(parts, relative, &bytes, Arc::clone(&info));
        let decision = decision.map_err(|rejection| match rejection.token {
            Some(_) => rejection,
            None => rejection.with_context(info, None),
        });
        (decision, B::from(bytes))
    }

    /// Classifies a request again with its body, and grants it.
    fn with_body(
        &self,
        parts: &Parts,
        relative: &str,
        body: &[u8],
        info: Arc<TokenInfo>,
    ) -> Result<Decision, Rejection> {
        let query = parts.uri.query();
        if std::str::from_utf8(body).is_ok_and(bearer::has_access_token_param) {
            return Err(Rejection::new(
                AuthFailure::InvalidRequest,
                "access_token in the body next to an Authorization header",
            ));
        }
        let incoming = incoming(&parts.method, relative, query, &parts.headers, Some(body));
        let request = contained(|| self.policy.classify(&incoming))?.map_err(classify_rejection)?;
        grant(&incoming, request, info)
    }

    /// Whether this is `GET` or `HEAD` of exactly the protected resource metadata path (RFC 9728
    /// §3.1), which usually lies outside the FHIR base. Compared byte for byte with the path as
    /// it came in (a router nested elsewhere that stripped a prefix does not match), so no
    /// encoding, dot segment or case variant matches; the query is not looked at, as for the
    /// other public endpoints.
    #[inline]
    fn is_resource_metadata(
        &self,
        method: &Method,
        uri: &Uri,
        extensions: &http::Extensions,
    ) -> bool {
        let Some(path) = self.resource_metadata_path.as_deref() else {
            return false;
        };
        (method == Method::GET || method == Method::HEAD)
            && uri.path() == path
            && original_path(uri, extensions) == path
    }

    /// The path relative to the FHIR base, or `None` when the request is outside it.
    ///
    /// Works for a layer on the outer router (the path still holds the base) and on a router
    /// nested at the base (axum strips the prefix and keeps the original URI in extensions).
    #[inline]
    fn relative_path<'a>(&self, uri: &'a Uri, extensions: &http::Extensions) -> Option<&'a str> {
        let path = uri.path();
        if self.base_path.is_empty() {
            return Some(path);
        }
        #[cfg(feature = "axum")]
        if let Some(axum::extract::OriginalUri(original)) = extensions.get()
            && original.path() != path
        {
            // Nested: the router already stripped the base; check it was exactly our base.
            let rest = original.path().strip_prefix(self.base_path.as_str())?;
            let same = rest == path || (rest.is_empty() && path == "/");
            return same.then_some(path);
        }
        #[cfg(not(feature = "axum"))]
        let _ = extensions;
        let rest = path.strip_prefix(self.base_path.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    /// The bearer token of a request, checked in full, or the rejection for its absence or
    /// malformation.
    fn bearer<'h>(
        &self,
        headers: &'h HeaderMap,
        query: Option<&str>,
    ) -> Result<bearer::BearerToken<'h>, Rejection> {
        bearer::extract_bearer(headers, query, self.max_token_bytes).map_err(bearer_rejection)
    }

    /// The claims of an active token, or the rejection for an inactive one or an AS that
    /// could not answer.
    async fn authenticate(&self, token: &str) -> Result<Arc<TokenInfo>, Rejection> {
        // The span exists only when DEBUG is watched (see `SmartGuard::call`).
        let span = if tracing::level_enabled!(tracing::Level::DEBUG) {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        let info = match self.introspector.lookup(token).await {
            Lookup::Active(info, status) => {
                span.record("cache", status.as_str());
                info
            }
            Lookup::Inactive(status, reason) => {
                span.record("cache", status.as_str());
                tracing::debug!(reason, "token rejected");
                return Err(Rejection::new(
                    AuthFailure::InvalidToken,
                    "the access token is not active",
                ));
            }
            Lookup::Unavailable(miss) => {
                if let Miss::Failed(error) = &*miss {
                    tracing::debug!(kind = ?error.kind(), status = ?error.status(), "introspection unavailable");
                }
                return Err(Rejection::new(
                    AuthFailure::Unavailable,
                    "the authorization server is unavailable; try again later",
                ));
            }
        };
        if let Some(client_id) = info.client_id.as_deref() {
            span.record("client_id", client_id);
        }
        Ok(info)
    }
}

/// The path the client sent: the request's own, or, under a router nested at a prefix (which
/// strips it), the one axum keeps in `OriginalUri`.
#[inline]
pub(crate) fn original_path<'a>(uri: &'a Uri, extensions: &'a http::Extensions) -> &'a str {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(original)) = extensions.get() {
        return original.path();
    }
    #[cfg(not(feature = "axum"))]
    let _ = extensions;
    uri.path()
}

/// What the classifier reads of a request.
#[inline]
fn incoming<'a>(
    method: &'a Method,
    relative: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: Option<&'a [u8]>,
) -> Incoming<'a> {
    let incoming = Incoming::new(method, relative).with_headers(headers, body);
    match query {
        Some(query) => incoming.with_query(query),
        None => incoming,
    }
}

/// The scope check of a classified request against an active token's claims.
fn grant(
    incoming: &Incoming<'_>,
    request: FhirRequest,
    info: Arc<TokenInfo>,
) -> Result<Decision, Rejection> {
    match contained(|| info.scopes.authorize(&request, incoming))? {
        Ok(grants) => {
            tracing::debug!(
                interaction = %request.interaction(),
                granted = %grants.audit(&request, &info.scopes),
                "authorized"
            );
            Ok(Decision::Allow(VerifiedClaims::new(info, request, grants)))
        }
        Err(missing) => {
            tracing::debug!(
                interaction = %request.interaction(),
                needs = %crate::grant::Grants::none().audit(&request, &info.scopes),
                denied = %missing,
                "insufficient scope"
            );
            Err(Rejection::insufficient_scope(missing).with_context(info, Some(request)))
        }
    }
}

fn bearer_rejection(error: BearerError) -> Rejection {
    match error {
        BearerError::Missing => {
            Rejection::new(AuthFailure::MissingToken, "an access token is required")
        }
        BearerError::Malformed(why) => Rejection::new(AuthFailure::InvalidRequest, why),
    }
}

fn classify_rejection(error: ClassifyError) -> Rejection {
    match error {
        ClassifyError::MalformedPath => Rejection::new(
            AuthFailure::MalformedPath,
            "malformed FHIR path: dot segments, percent-encoded path bytes and empty segments are refused",
        ),
        ClassifyError::MalformedBody => Rejection::new(
            AuthFailure::InvalidRequest,
            "the request body cannot be checked: not JSON, nested too deeply, or not UTF-8",
        ),
        ClassifyError::UnreadableHeader => Rejection::new(
            AuthFailure::InvalidRequest,
            "a header the guard reads (Content-Type, Content-Encoding, If-None-Exist) is not visible ASCII or is sent twice",
        ),
        ClassifyError::UnsupportedMediaType => Rejection::new(
            AuthFailure::UnsupportedMediaType,
            "the body must be application/x-www-form-urlencoded (a search) or FHIR JSON (a batch or kick-off), with at most charset=utf-8, and no Content-Encoding but identity",
        ),
        ClassifyError::TooComplex(limit) => Rejection::new(
            AuthFailure::InvalidRequest,
            format!("the request is beyond what the guard analyses: {limit}"),
        ),
        _ => not_found("not a FHIR interaction this server understands"),
    }
}

fn not_found(why: &'static str) -> Rejection {
    Rejection::new(AuthFailure::NotFound, why)
}

fn too_large() -> Rejection {
    Rejection::new(
        AuthFailure::PayloadTooLarge,
        "the request body is too large",
    )
}

/// Runs a part of the guard's own analysis so that a panic in it (a bug) answers this request
/// with 500 instead of unwinding through the server's connection task; the server and every
/// other request go on. Needs `panic = "unwind"` (Rust's default): with `panic = "abort"` no
/// panic can be caught, and the process ends.
#[inline]
fn contained<T>(analysis: impl FnOnce() -> T) -> Result<T, Rejection> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(analysis)).map_err(|_| {
        tracing::error!("the guard's analysis of a request panicked; answered 500");
        Rejection::new(
            AuthFailure::Internal,
            "the guard failed to check this request",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_the_analysis_is_a_500_for_that_request() {
        let caught = contained(|| -> u8 { panic!("a bug in the classifier") });
        let rejection = caught.expect_err("caught");
        assert_eq!(rejection.kind, AuthFailure::Internal);
        assert_eq!(
            rejection.kind.status(),
            http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(contained(|| 7).map_err(|r| r.kind), Ok(7));
    }
}
