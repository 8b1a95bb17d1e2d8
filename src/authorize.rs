//! The pipeline, free of tower: path → public? → bearer → classify → introspect → scopes.

use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Uri};

use crate::{
    bearer::{self, BearerError},
    claims::VerifiedClaims,
    config::Config,
    error::ConfigError,
    fhir_path::{self, ClassifyError, FhirRequest, Incoming, Policy},
    introspect::{Introspector, Lookup, response::TokenInfo},
    rejection::{AuthFailure, Challenges, Rejection},
};

/// What the guard decided for an allowed request.
#[derive(Debug)]
pub(crate) enum Decision {
    /// A public endpoint: passes without a token.
    Public,
    /// Authenticated and authorized.
    Allow(VerifiedClaims),
}

/// Everything one guard shares across its clones.
#[derive(Debug)]
pub(crate) struct Shared {
    introspector: Introspector,
    pub(crate) stats: Arc<crate::stats::Stats>,
    pub(crate) challenges: Challenges,
    base_path: String,
    max_token_bytes: usize,
    pub(crate) max_body_bytes: usize,
    policy: Policy,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Result<Self, ConfigError> {
        let stats = Arc::new(crate::stats::Stats::default());
        Ok(Self {
            policy: Policy::from_config(&config),
            introspector: Introspector::new(
                &config,
                config.http_client.clone(),
                Arc::clone(&stats),
            )?,
            stats,
            challenges: Challenges::new(&config.realm, config.retry_after.as_secs()),
            base_path: config.base_path,
            max_token_bytes: config.max_token_bytes,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The path relative to the FHIR base, or `None` when the request is outside it.
    ///
    /// Works for a layer on the outer router (the path still holds the base) and on a router
    /// nested at the base (axum strips the prefix and keeps the original URI in extensions).
    #[inline]
    pub(crate) fn relative_path<'a>(
        &self,
        uri: &'a Uri,
        extensions: &Extensions,
    ) -> Option<&'a str> {
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

    /// Whether the guard must read the body to classify the request: a form-encoded
    /// `POST …/_search` (its parameters count like query parameters), a JSON `POST /` (batch or
    /// transaction) and a `POST …/$export` (its `_type`).
    pub(crate) fn needs_body(method: &Method, relative_path: &str, headers: &HeaderMap) -> bool {
        fhir_path::reads_body(method, relative_path, headers)
    }

    /// The bearer token of a request, or the rejection for its absence or malformation. Runs
    /// before any body is read, so a request without credentials never makes the guard buffer.
    pub(crate) fn bearer<'h>(
        &self,
        headers: &'h HeaderMap,
        query: Option<&str>,
    ) -> Result<bearer::BearerToken<'h>, Rejection> {
        bearer::extract_bearer(headers, query, self.max_token_bytes).map_err(bearer_rejection)
    }

    /// Decides on a request whose body the guard does not read.
    pub(crate) async fn authorize(
        &self,
        method: &Method,
        relative_path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Decision, Rejection> {
        let checked = match self.check(method, relative_path, query, headers, None, false)? {
            Checked::Public => return Ok(Decision::Public),
            Checked::Token(checked) => checked,
        };
        let info = self.authenticate(checked.token.expose()).await?;
        grant(&checked.incoming, checked.request, info)
    }

    /// The first half of a request whose body the guard must read: everything its headers
    /// decide, then the token (front cache, cache or AS). Only an active token's request goes on
    /// to have its body read, so a request without one costs no more than its headers.
    /// `Ok(None)` for a public endpoint.
    pub(crate) async fn authenticate_before_body(
        &self,
        method: &Method,
        relative_path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<TokenInfo>>, Rejection> {
        match self.check(method, relative_path, query, headers, None, false)? {
            Checked::Public => Ok(None),
            Checked::Token(checked) => self.authenticate(checked.token.expose()).await.map(Some),
        }
    }

    /// The second half: the request classified again with its body, and its scopes checked
    /// against the claims [`Self::authenticate_before_body`] found.
    pub(crate) fn authorize_with_body(
        &self,
        method: &Method,
        relative_path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        info: Arc<TokenInfo>,
    ) -> Result<Decision, Rejection> {
        match self.check(method, relative_path, query, headers, Some(body), false)? {
            Checked::Public => Ok(Decision::Public),
            Checked::Token(checked) => grant(&checked.incoming, checked.request, info),
        }
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
                if let crate::introspect::Miss::Failed(error) = &*miss {
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

    /// [`Self::authorize`] without waiting: the decision when it needs no introspection call and
    /// no moka read (a public endpoint, a malformed request, a token in the front cache), `None`
    /// otherwise. This is the cache-hit path, run inside `Service::call`.
    pub(crate) fn authorize_now(
        &self,
        method: &Method,
        relative_path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Result<Decision, Rejection>> {
        // Taken apart where it is matched, so the hit path moves no 160-byte struct around.
        let WithToken {
            incoming,
            request,
            token,
        } = match self.check(method, relative_path, query, headers, None, true) {
            Ok(Checked::Public) => return Some(Ok(Decision::Public)),
            Ok(Checked::Token(checked)) => checked,
            Err(rejection) => return Some(Err(rejection)),
        };
        // A hit means this exact token passed every check when it was first seen (its
        // alphabet included, see `extract_bearer_unchecked`); a miss goes the whole way again.
        let info = self.introspector.cached(token.as_bytes())?;
        Some(grant(&incoming, request, info))
    }

    /// Everything before the token lookup: classification, the public endpoints, the bearer
    /// token and the request's own errors, in the order the responses promise.
    ///
    /// With `cached_only`, a classified request's token is not checked against the `b64token`
    /// alphabet: the caller looks it up in the front cache only, where every key is that of a
    /// token that passed the check (a miss goes through [`Self::authorize`] and all checks).
    fn check<'r>(
        &self,
        method: &'r Method,
        relative_path: &'r str,
        query: Option<&'r str>,
        headers: &'r HeaderMap,
        form_body: Option<&'r [u8]>,
        cached_only: bool,
    ) -> Result<Checked<'r>, Rejection> {
        let mut incoming = Incoming::new(method, relative_path).with_headers(headers, form_body);
        if let Some(query) = query {
            incoming = incoming.with_query(query);
        }
        let classified = contained(|| self.policy.classify(&incoming))?;
        if classified
            .as_ref()
            .is_ok_and(|r| r.interaction().is_public())
        {
            return Ok(Checked::Public);
        }

        let token = if cached_only && classified.is_ok() {
            bearer::extract_bearer_unchecked(headers, query, self.max_token_bytes)
                .map_err(bearer_rejection)?
        } else {
            self.bearer(headers, query)?
        };
        if form_body
            .is_some_and(|body| std::str::from_utf8(body).is_ok_and(bearer::has_access_token_param))
        {
            return Err(Rejection::new(
                AuthFailure::InvalidRequest,
                "access_token in the body next to an Authorization header",
            ));
        }
        let request = classified.map_err(|e| match e {
            ClassifyError::MalformedPath => Rejection::new(
                AuthFailure::MalformedPath,
                "malformed FHIR path: dot segments, percent-encoded path bytes and empty segments are refused",
            ),
            ClassifyError::MalformedBody => Rejection::new(
                AuthFailure::InvalidRequest,
                "the request body cannot be checked: not JSON, nested too deeply, or not UTF-8",
            ),
            ClassifyError::TooComplex(limit) => Rejection::new(
                AuthFailure::InvalidRequest,
                format!("the request is beyond what the guard analyses: {limit}"),
            ),
            _ => Rejection::new(AuthFailure::NotFound, "not a FHIR interaction this server understands"),
        })?;
        Ok(Checked::Token(WithToken {
            incoming,
            request,
            token,
        }))
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

/// What [`Shared::check`] found.
enum Checked<'r> {
    Public,
    Token(WithToken<'r>),
}

/// A well-formed request with a bearer token, classified, waiting for the token's claims.
struct WithToken<'r> {
    incoming: Incoming<'r>,
    request: FhirRequest,
    token: bearer::BearerToken<'r>,
}

/// The scope check (SMART-NOTES §3, §4) of a request classified from `incoming` against an
/// active token's claims.
fn grant(
    incoming: &Incoming<'_>,
    mut request: FhirRequest,
    info: Arc<TokenInfo>,
) -> Result<Decision, Rejection> {
    if let Err(missing) = contained(|| info.scopes.authorize(&mut request, incoming))? {
        tracing::debug!(
            interaction = %request.interaction(),
            needs = %request.audit(&info.scopes),
            denied = %missing,
            "insufficient scope"
        );
        return Err(Rejection::insufficient_scope(missing));
    }
    tracing::debug!(
        interaction = %request.interaction(),
        granted = %request.audit(&info.scopes),
        "authorized"
    );
    Ok(Decision::Allow(VerifiedClaims::new(info, request)))
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
