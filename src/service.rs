//! The guard as a tower `Service`: tower plumbing only; the decisions live in `authorize`.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Limited};
use tower_service::Service;
use tracing::Instrument;

use crate::{
    authorize::{Decision, Shared},
    future::ResponseFuture,
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
        // The cache-hit path decides here, without a future of its own, and calls the inner
        // service that `poll_ready` readied. With DEBUG watched, every request takes the
        // instrumented path below instead (one span per request).
        if !tracing::level_enabled!(tracing::Level::DEBUG) {
            match decide_now(&self.shared, &mut request) {
                Some(Ok(())) => return ResponseFuture::inner(self.inner.call(request)),
                Some(Err(denied)) => return ResponseFuture::denied(denied),
                None => {}
            }
        }
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
        let future = guard(shared, ready, request);
        if span.is_disabled() {
            ResponseFuture::waiting(Box::pin(future))
        } else {
            ResponseFuture::waiting(Box::pin(future.instrument(span)))
        }
    }
}

/// The decision on a request that needs neither its body nor a wait: `Ok` when the request may
/// go on (claims inserted), the denial response, or `None` when it has to wait.
fn decide_now<B, ResBody: From<String>>(
    shared: &Shared,
    request: &mut Request<B>,
) -> Option<Result<(), Response<ResBody>>> {
    let Some(relative) = shared.relative_path(request.uri(), request.extensions()) else {
        return Some(Err(deny(
            shared,
            Rejection::new(AuthFailure::NotFound, "outside the FHIR base path"),
        )));
    };
    if Shared::needs_body(request.method(), relative, request.headers()) {
        return None;
    }
    let decision = shared.authorize_now(
        request.method(),
        relative,
        request.uri().query(),
        request.headers(),
    )?;
    Some(match decision {
        Ok(decision) => {
            admit(shared, decision, request);
            Ok(())
        }
        Err(rejection) => Err(deny(shared, rejection)),
    })
}

/// One request through the guard: classify, authenticate, authorize, then call `ready`.
///
/// A request whose body the guard reads goes in the order that keeps anonymous requests cheap:
/// what its headers decide (path, token present and well-formed, a declared length over the
/// limit), then the token (cache or AS), and only for an active token the body.
async fn guard<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut ready: S,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<String>,
{
    let (parts, body) = request.into_parts();
    let Some(relative) = shared.relative_path(&parts.uri, &parts.extensions) else {
        return Ok(deny(
            &shared,
            Rejection::new(AuthFailure::NotFound, "outside the FHIR base path"),
        ));
    };
    let query = parts.uri.query();
    let (decision, body) = if Shared::needs_body(&parts.method, relative, &parts.headers) {
        // A body declared larger than the limit is refused before the token is looked up.
        let declared_too_large = body.size_hint().lower() > shared.max_body_bytes as u64;
        let checked_headers = shared.bearer(&parts.headers, query).and_then(|_| {
            if declared_too_large {
                Err(too_large())
            } else {
                Ok(())
            }
        });
        if let Err(rejection) = checked_headers {
            return Ok(deny(&shared, rejection));
        }
        let info = match shared
            .authenticate_before_body(&parts.method, relative, query, &parts.headers)
            .await
        {
            Ok(Some(info)) => info,
            Ok(None) => {
                let mut request = Request::from_parts(parts, body);
                admit(&shared, Decision::Public, &mut request);
                return ready.call(request).await;
            }
            Err(rejection) => return Ok(deny(&shared, rejection)),
        };
        let bytes = match Limited::new(body, shared.max_body_bytes).collect().await {
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
                return Ok(deny(&shared, rejection));
            }
        };
        let decision = shared.authorize_with_body(
            &parts.method,
            relative,
            query,
            &parts.headers,
            &bytes,
            info,
        );
        (decision, ReqBody::from(bytes))
    } else {
        let decision = shared
            .authorize(&parts.method, relative, query, &parts.headers)
            .await;
        (decision, body)
    };
    match decision {
        Ok(decision) => {
            let mut request = Request::from_parts(parts, body);
            admit(&shared, decision, &mut request);
            ready.call(request).await
        }
        Err(rejection) => Ok(deny(&shared, rejection)),
    }
}

fn too_large() -> Rejection {
    Rejection::new(
        AuthFailure::PayloadTooLarge,
        "the request body is too large",
    )
}

/// Lets an allowed request through: counts the decision and, for a token, marks the
/// `Authorization` header sensitive and puts the claims into the extensions.
fn admit<B>(shared: &Shared, decision: Decision, request: &mut Request<B>) {
    match decision {
        Decision::Public => {
            shared.stats.decision(Ok(true));
            record_decision("public");
        }
        Decision::Allow(claims) => {
            shared.stats.decision(Ok(false));
            record_decision("allow");
            if let Some(value) = request.headers_mut().get_mut(header::AUTHORIZATION) {
                value.set_sensitive(true);
            }
            request.extensions_mut().insert(claims);
        }
    }
}

fn deny<B: From<String>>(shared: &Shared, rejection: Rejection) -> Response<B> {
    shared.stats.decision(Err(rejection.kind));
    record_decision(rejection.kind.as_str());
    if rejection.kind == AuthFailure::Unavailable {
        tracing::warn!("denied: authorization server unavailable");
    } else {
        tracing::debug!(reason = rejection.kind.as_str(), "denied");
    }
    shared.challenges.respond(rejection)
}

/// Records the decision on the request's span; skips the span lookup when no one watches DEBUG
/// (the span was never built then, see `SmartGuard::call`).
#[inline]
fn record_decision(decision: &'static str) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("decision", decision);
    }
}
