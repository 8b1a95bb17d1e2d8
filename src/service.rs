//! The guard as a tower `Service`: tower plumbing only; the decisions live in `guard`.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response, Uri, header};
use tower_service::Service;
use tracing::Instrument;

use crate::{
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
        // Every request takes the same first step, whatever the log level: the cache-hit path
        // decides here, without a future of its own, and calls the readied inner service.
        let declared_body_len = request.body().size_hint().lower();
        let step = self.shared.begin(
            request.method(),
            request.uri(),
            request.extensions(),
            request.headers(),
            declared_body_len,
        );
        let pending = match step {
            Step::Decided(Ok(decision)) => {
                admit(&self.shared, decision, &mut request);
                return ResponseFuture::inner(self.inner.call(request));
            }
            Step::Decided(Err(rejection)) => {
                let (method, uri, ext) = (request.method(), request.uri(), request.extensions());
                return ResponseFuture::denied(deny(&self.shared, rejection, method, uri, ext));
            }
            Step::Pending(pending) => pending,
        };
        // The decision waits: take the readied service along, leave a fresh clone in its place.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let shared = Arc::clone(&self.shared);
        // Build the span only when a subscriber wants DEBUG: a disabled span still costs field
        // formatting and a log-crate check on every poll.
        let span = if tracing::level_enabled!(tracing::Level::DEBUG) {
            tracing::debug_span!(
                "smart_guard",
                method = %request.method(),
                decision = tracing::field::Empty,
                client_id = tracing::field::Empty,
                cache = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let future = wait(shared, ready, request, pending);
        if span.is_disabled() {
            ResponseFuture::waiting(Box::pin(future))
        } else {
            ResponseFuture::waiting(Box::pin(future.instrument(span)))
        }
    }
}

/// A request that waits for its token's answer (and its body, when the guard reads one).
async fn wait<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut ready: S,
    request: Request<ReqBody>,
    pending: Pending,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<String>,
{
    let (parts, body) = request.into_parts();
    let (decision, body) = shared.finish(pending, &parts, body).await;
    match decision {
        Ok(decision) => {
            let mut request = Request::from_parts(parts, body);
            admit(&shared, decision, &mut request);
            ready.call(request).await
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

/// Lets an allowed request through: counts the decision and, for a token, marks the
/// `Authorization` header sensitive and puts the claims into the extensions.
fn admit<B>(shared: &Shared, decision: Decision, request: &mut Request<B>) {
    match decision {
        Decision::Public => {
            shared.stats.decision(Ok(true));
            record_decision("public");
            tracing::debug!(decision = "public", "admitted");
            if let Some(auditor) = &shared.audit {
                let path = original_path(request.uri(), request.extensions());
                auditor.record(&AuditEvent::public(request.method(), path));
            }
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
            request.extensions_mut().insert(claims);
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
