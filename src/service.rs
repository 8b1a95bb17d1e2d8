//! The guard as a tower `Service`: tower plumbing only; the decisions live in `guard`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response, Uri, header};
use tower_service::Service;
use tracing::Instrument;

use crate::{
    VerifiedClaims,
    audit::AuditEvent,
    future::ResponseFuture,
    guard::{Decision, Pending, Shared, Step, original_path},
    rejection::{AuthFailure, Rejection},
};

/// Middleware that authenticates and authorizes each request before the inner service sees it.
///
/// Built by [`SmartGuardLayer`](crate::SmartGuardLayer). Denials are responses (`Ok`), never
/// errors, so the error type stays the inner service's.
#[derive(Clone, Debug)]
pub struct SmartGuard<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SmartGuard<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the guard, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SmartGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match check(&self.shared, &mut request) {
            Checked::Admitted(claims) => {
                with_claims(&mut request, claims);
                ResponseFuture::inner(self.inner.call(request))
            }
            Checked::Denied(response) => ResponseFuture::denied(response),
            Checked::Pending(pending) => {
                // The decision waits: take the readied service along, leave a fresh clone in
                // its place.
                let fresh = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, fresh);
                let method = request.method().clone();
                let future = wait(
                    Arc::clone(&self.shared),
                    request,
                    pending,
                    move |mut request: Request<ReqBody>, claims| {
                        with_claims(&mut request, claims);
                        ready.call(request)
                    },
                );
                ResponseFuture::waiting(boxed(&method, future))
            }
        }
    }
}

/// Puts the `claims` of an admitted request into its extensions, for the service behind the
/// layer.
fn with_claims<B>(request: &mut Request<B>, claims: Option<VerifiedClaims>) {
    if let Some(claims) = claims {
        request.extensions_mut().insert(claims);
    }
}

/// What the guard says of a request before the service behind it sees it.
pub(crate) enum Checked<R> {
    /// Allowed at once (its `Authorization` now marked sensitive), with the verified claims
    /// for a token.
    Admitted(Option<VerifiedClaims>),
    /// Denied at once.
    Denied(Response<R>),
    /// The decision waits for the token's answer or the body: [`wait`].
    Pending(Pending),
}

/// The guard's first step on `request`, whatever the log level: the cache-hit path decides
/// here, without a future of its own. The proxy acts on it directly (no extension map to
/// allocate for the claims); [`SmartGuard`] puts the claims into the extensions.
pub(crate) fn check<B, R>(shared: &Shared, request: &mut Request<B>) -> Checked<R>
where
    B: http_body::Body,
    R: From<String>,
{
    let declared_body_len = request.body().size_hint().lower();
    let step = shared.begin(
        request.method(),
        request.uri(),
        request.extensions(),
        request.headers(),
        declared_body_len,
    );
    match step {
        Step::Decided(Ok(decision)) => Checked::Admitted(admit(shared, decision, request)),
        Step::Decided(Err(rejection)) => {
            let (method, uri, ext) = (request.method(), request.uri(), request.extensions());
            Checked::Denied(deny(shared, rejection, method, uri, ext))
        }
        Step::Pending(pending) => Checked::Pending(pending),
    }
}

/// A request that waits for its token's answer (and its body, when the guard reads one); once
/// allowed, `call` gets it with the claims.
pub(crate) async fn wait<B, R, E, F, Fut>(
    shared: Arc<Shared>,
    request: Request<B>,
    pending: Pending,
    call: F,
) -> Result<Response<R>, E>
where
    B: http_body::Body<Data = Bytes> + From<Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R: From<String>,
    F: FnOnce(Request<B>, Option<VerifiedClaims>) -> Fut,
    Fut: Future<Output = Result<Response<R>, E>>,
{
    let (parts, body) = request.into_parts();
    let (decision, body) = shared.finish(pending, &parts, body).await;
    match decision {
        Ok(decision) => {
            let mut request = Request::from_parts(parts, body);
            let claims = admit(&shared, decision, &mut request);
            call(request, claims).await
        }
        Err(rejection) => Ok(deny(
            &shared,
            rejection,
            &parts.method,
            &parts.uri,
            &parts.extensions,
        )),
    }
}

/// `future` boxed, in a span when a subscriber wants DEBUG (a disabled span still costs field
/// formatting and a log-crate check on every poll, so none is built otherwise).
pub(crate) fn boxed<T>(
    method: &Method,
    future: impl Future<Output = T> + Send + 'static,
) -> Pin<Box<dyn Future<Output = T> + Send + 'static>> {
    let span = if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::debug_span!(
            "smart_guard",
            method = %method,
            decision = tracing::field::Empty,
            client_id = tracing::field::Empty,
            cache = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    if span.is_disabled() {
        Box::pin(future)
    } else {
        Box::pin(future.instrument(span))
    }
}

/// Lets an allowed request through: counts the decision and, for a token, marks the
/// `Authorization` header sensitive and returns the claims.
fn admit<B>(
    shared: &Shared,
    decision: Decision,
    request: &mut Request<B>,
) -> Option<VerifiedClaims> {
    match decision {
        Decision::Public => {
            shared.stats.decision(Ok(true));
            record_decision("public");
            tracing::debug!(decision = "public", "admitted");
            if let Some(auditor) = &shared.audit {
                let path = original_path(request.uri(), request.extensions());
                auditor.record(&AuditEvent::public(request.method(), path));
            }
            None
        }
        Decision::Allow(claims) => {
            shared.stats.decision(Ok(false));
            record_decision("allow");
            tracing::debug!(decision = "allow", "admitted");
            if let Some(auditor) = &shared.audit {
                let path = original_path(request.uri(), request.extensions());
                auditor.record(&AuditEvent::allowed(request.method(), path, &claims));
            }
            if let Some(value) = request.headers_mut().get_mut(header::AUTHORIZATION) {
                value.set_sensitive(true);
            }
            Some(claims)
        }
    }
}

fn deny<B: From<String>>(
    shared: &Shared,
    rejection: Rejection,
    method: &Method,
    uri: &Uri,
    extensions: &http::Extensions,
) -> Response<B> {
    shared.stats.decision(Err(rejection.kind));
    record_decision(rejection.kind.as_str());
    if rejection.kind == AuthFailure::Unavailable {
        // One line per outage interval, not one per request (a burst of 503s is one line).
        match shared.unavailable_log.count() {
            Some(answered) => tracing::warn!(
                answered,
                "denied with 503: the authorization server is unavailable ({answered} such answers since the last line; at most one line every 10 s)"
            ),
            None => tracing::debug!("denied: authorization server unavailable"),
        }
    } else {
        tracing::debug!(reason = rejection.kind.as_str(), "denied");
    }
    if let Some(auditor) = &shared.audit {
        auditor.record(&AuditEvent::denied(
            method,
            original_path(uri, extensions),
            rejection.kind,
            rejection.token.as_deref(),
            rejection.request.as_deref(),
            rejection.missing_scope(),
        ));
    }
    shared.challenges.respond(rejection)
}

/// Records the decision on the current span (the guard's own when the request waited; a field
/// the span does not declare is ignored); skips the span lookup when no one watches DEBUG.
#[inline]
fn record_decision(decision: &'static str) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("decision", decision);
    }
}
