//! [`Forward`]: the tower service that sends an authorized request to the upstream FHIR server
//! and its answer back, on the upstream's kept-alive connections (`upstream.rs`). Put
//! [`SmartGuardLayer`] in front of it.
//!
//! What crosses is in `headers.rs` (hop-by-hop fields, method overrides, identity, forwarding)
//! and `rewrite.rs` (the upstream base in `Location`, `Content-Location` and Bundles).
//!
//! [`SmartGuardLayer`]: crate::SmartGuardLayer

use std::{
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::{
    bodies::{NoTrailers, Pieces, Prefixed, ProxyBody},
    client_fields::ClientFields,
    config::ProxyConfig,
    failure::ProxyFailure,
    headers::{self, Forwarding, IdentityPrefix, RequestFields},
    identity::IdentityValues,
    rewrite::{Bases, answers_with_bundle, is_plain_json},
    stall::{Sweeper, Watch},
    upstream::{Lease, SendError, Sending, Sent, Upstream},
};
use crate::{VerifiedClaims, error::ConfigError, guard::original_path};

/// The address of the client a request came from, put into its extensions by the proxy's
/// server (used for `Forwarded` and `X-Forwarded-For`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Counters of one [`Forward`] service (shared by its clones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardStats {
    /// Requests sent to the upstream.
    pub forwarded: u64,
    /// Requests answered 502 or 504 because the upstream failed.
    pub upstream_failures: u64,
    /// JSON Bundles whose URLs were rewritten.
    pub bundles_rewritten: u64,
    /// JSON bodies over `SMART_GUARD_MAX_REWRITE_BYTES` (or compressed) passed on unrewritten.
    pub rewrite_skipped: u64,
    /// Response bodies cut after no progress for `SMART_GUARD_UPSTREAM_TIMEOUT_MS` (a client
    /// that stopped reading): their upstream slot and connection freed.
    pub stalled_bodies_cut: u64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    upstream_failures: AtomicU64,
    bundles_rewritten: AtomicU64,
    rewrite_skipped: AtomicU64,
}

/// Forwards requests under the public FHIR base to the upstream FHIR base, as a tower service
/// on `axum` bodies. It never fails: upstream failures are answered 502, 504 or 503 with an
/// `OperationOutcome`.
///
/// ```no_run
/// use axum::Router;
/// use smart_guard::{Config, SmartGuardLayer, proxy::{Forward, ProxyConfig}};
///
/// # fn f() -> Result<(), smart_guard::ConfigError> {
/// let forward = Forward::new(
///     &ProxyConfig::from_env()?,
///     "https://fhir.example.org/fhir".parse().unwrap(),
/// )?;
/// let app: Router = Router::new()
///     .fallback_service(forward)
///     .layer(SmartGuardLayer::new(Config::from_env()?)?);
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Forward {
    inner: Arc<Inner>,
    /// What the requests of one client connection share ([`Forward::for_client`]); without
    /// it, each request's [`ClientAddr`] is read.
    client: Option<Arc<ClientFields>>,
}

#[derive(Debug)]
struct Inner {
    upstream: Arc<Upstream>,
    /// The upstream base's path, without a trailing `/` (empty for a root base).
    upstream_path: String,
    /// The public base's path: the guard's base path.
    public_path: String,
    bases: Bases,
    /// What crosses on a request, with the forwarding values precomputed.
    fields: RequestFields,
    upstream_timeout: Duration,
    slots: Arc<Semaphore>,
    max_rewrite_bytes: usize,
    counters: Counters,
    sweeper: Arc<Sweeper>,
}

impl Forward {
    /// A forwarder to `config`'s upstream for clients that use `public_base`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] when the upstream CA file cannot be read or holds no
    /// certificate, or the upstream's host is not a TLS server name.
    pub fn new(config: &ProxyConfig, public_base: Url) -> Result<Self, ConfigError> {
        let upstream = &config.upstream;
        let https = upstream.scheme() == "https";
        // A CA file is read (and refused when unreadable) even for an http upstream.
        let tls = super::tls::client_config(https, config.ca_file.as_deref())?;
        let invalid_upstream = |reason: String| ConfigError::Invalid {
            var: crate::config::env::ENV_UPSTREAM_URL,
            reason,
        };
        let port = upstream
            .port_or_known_default()
            .ok_or_else(|| invalid_upstream("it has no port".to_owned()))?;
        let connections = Upstream::new(
            upstream.host_str().unwrap_or_default(),
            port,
            https.then_some(tls),
            config.connect_timeout,
            config.max_connections,
        )
        .map_err(invalid_upstream)?;
        let connections = Arc::new(connections);
        let bases = Bases::new(upstream.as_str(), public_base.as_str()).map_err(|e| {
            ConfigError::Invalid {
                var: crate::config::env::ENV_PUBLIC_BASE_URL,
                reason: e.to_string(),
            }
        })?;
        let prefix =
            IdentityPrefix::new(&config.identity_prefix).map_err(|e| ConfigError::Invalid {
                var: crate::config::env::ENV_IDENTITY_HEADER_PREFIX,
                reason: e.to_string(),
            })?;
        let public_proto = if public_base.scheme() == "https" {
            "https"
        } else {
            "http"
        };
        let upstream_host = upstream_authority(upstream);
        let fields = RequestFields::new(
            prefix,
            config.forward_authorization,
            // The upstream speaks HTTP/1.1 (`upstream.rs`): its `Host` is set here, once.
            Some(upstream_host.as_str()),
            &Forwarding {
                proto: public_proto,
                // The public base's host, never the client's `Host`: an upstream that trusts
                // `X-Forwarded-Host` writes it into its URLs.
                host: Some(&upstream_authority(&public_base)),
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                upstream: Arc::clone(&connections),
                upstream_path: upstream.path().trim_end_matches('/').to_owned(),
                public_path: public_base.path().trim_end_matches('/').to_owned(),
                bases,
                fields,
                upstream_timeout: config.upstream_timeout,
                slots: Arc::new(Semaphore::new(config.max_connections)),
                max_rewrite_bytes: config.max_rewrite_bytes,
                counters: Counters::default(),
                sweeper: Sweeper::for_upstream(config.upstream_timeout, Arc::clone(&connections)),
            }),
            client: None,
        })
    }

    /// This forwarder for the requests of one client connection from `addr`: the forwarding
    /// fields (`Forwarded`, `X-Forwarded-For`) are made once, not per request, and no
    /// [`ClientAddr`] is needed in the requests' extensions.
    #[must_use]
    pub fn for_client(&self, addr: SocketAddr) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            client: Some(Arc::new(ClientFields::new(
                self.inner.fields.peer(addr.ip()),
            ))),
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ForwardStats {
        let c = &self.inner.counters;
        ForwardStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
            bundles_rewritten: c.bundles_rewritten.load(Ordering::Relaxed),
            rewrite_skipped: c.rewrite_skipped.load(Ordering::Relaxed),
            stalled_bodies_cut: self.inner.sweeper.cut(),
        }
    }
}

impl Service<Request<Body>> for Forward {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let claims = request.extensions_mut().remove::<VerifiedClaims>();
        ForwardFuture {
            answer: self.forward_verified(request, claims),
        }
    }
}

/// The answer future of [`Forward`].
pub struct ForwardFuture {
    answer: Answer,
}

/// The proxy's answer to come, on its own body type.
pub(crate) type Answer =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl std::fmt::Debug for ForwardFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardFuture").finish_non_exhaustive()
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.answer
            .as_mut()
            .poll(cx)
            .map(|answered| answered.map(|response| response.map(ProxyBody::into_axum)))
    }
}

impl Forward {
    /// Forwards `request` with the `claims` the guard verified (`None`: a public endpoint):
    /// what [`Service::call`] does with the claims it finds in the extensions.
    pub(crate) fn forward_verified(
        &self,
        request: Request<Body>,
        claims: Option<VerifiedClaims>,
    ) -> Answer {
        let inner = Arc::clone(&self.inner);
        // Everything up to the request's departure happens here, so the future below holds
        // only what waits for the answer: it is allocated and moved on every request.
        match inner.start(request, claims.as_ref(), self.client.as_deref()) {
            Ok(Started::Sent(exchange)) => Box::pin(Answering::new(inner, exchange)),
            Ok(Started::NoSlot(waiting)) => Box::pin(async move {
                match inner.slot(waiting).await {
                    Ok(exchange) => Answering::new(inner, exchange).await,
                    Err(failure) => Ok(inner.respond(Err(failure))),
                }
            }),
            Err(failure) => Box::pin(std::future::ready(Ok(inner.respond(Err(failure))))),
        }
    }
}

/// A request ready to go, with no upstream slot free yet.
struct Waiting {
    request: Request<Body>,
    request_sent: Option<Arc<AtomicBool>>,
    may_be_bundle: bool,
}

/// A request on its way: watched (`stall.rs`) from its departure.
struct Exchange<F> {
    watch: Watch,
    sending: Sending<F>,
    may_be_bundle: bool,
}

/// Where [`Inner::start`] left a request.
enum Started<F> {
    Sent(Exchange<F>),
    NoSlot(Waiting),
}

type Rewriting = Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyFailure>> + Send>>;

/// What [`Inner::answered`] made of the upstream's answer.
enum Answered {
    Now(Result<Response<ProxyBody>, ProxyFailure>),
    /// A Bundle, read whole to be rewritten.
    Later(Rewriting),
}

pin_project_lite::pin_project! {
    /// The wait for the upstream's answer, written out: an `async` block would hold its
    /// exchange twice (as an argument and as what it awaits), and this future is allocated
    /// and moved on every request.
    struct Answering<F> {
        inner: Arc<Inner>,
        // `None` once the answer came.
        watch: Option<Watch>,
        #[pin]
        sending: Sending<F>,
        may_be_bundle: bool,
        rewriting: Option<Rewriting>,
    }
}

impl<F> Answering<F> {
    fn new(inner: Arc<Inner>, exchange: Exchange<F>) -> Self {
        Self {
            inner,
            watch: Some(exchange.watch),
            sending: exchange.sending,
            may_be_bundle: exchange.may_be_bundle,
            rewriting: None,
        }
    }
}

impl<F> Future for Answering<F>
where
    F: Future<Output = Sent>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.rewriting.is_none() {
            let Some(watch) = this.watch.as_ref() else {
                // Polled after it completed: a caller bug, answered without a panic (and not
                // counted as an upstream failure).
                return Poll::Ready(Ok(ProxyFailure::Broken
                    .into_response()
                    .map(ProxyBody::Other)));
            };
            let answer = std::task::ready!(watch.poll_answer(cx, this.sending));
            let Some(watch) = this.watch.take() else {
                return Poll::Pending;
            };
            match this.inner.answered(watch, answer, *this.may_be_bundle) {
                Answered::Now(answered) => return Poll::Ready(Ok(this.inner.respond(answered))),
                Answered::Later(rewriting) => *this.rewriting = Some(rewriting),
            }
        }
        match this.rewriting {
            Some(rewriting) => {
                let answered = std::task::ready!(rewriting.as_mut().poll(cx));
                *this.rewriting = None;
                let answered = answered.map(|response| response.map(ProxyBody::Other));
                Poll::Ready(Ok(this.inner.respond(answered)))
            }
            None => Poll::Pending,
        }
    }
}

impl Inner {
    /// Prepares `request` for the upstream and sends it when a slot is free.
    fn start(
        self: &Arc<Self>,
        request: Request<Body>,
        claims: Option<&VerifiedClaims>,
        client: Option<&ClientFields>,
    ) -> Result<Started<impl Future<Output = Sent> + use<>>, ProxyFailure> {
        let (mut parts, body) = request.into_parts();
        // Only an answer that can be a Bundle is read whole to be rewritten; the rest streams.
        let may_be_bundle = claims.is_some_and(|claims| answers_with_bundle(claims.request()));
        parts.uri = self.upstream_uri(&parts.uri, &parts.extensions)?;
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(&mut parts.headers);
        }
        self.prepare_headers(&mut parts, claims, client)?;
        // Request trailers never cross; and the connection learns when the body has been sent
        // whole (`upstream.rs`).
        let (body, request_sent) = if http_body::Body::is_end_stream(&body) {
            (body, None)
        } else {
            let sent = Arc::new(AtomicBool::new(false));
            let body = Body::new(NoTrailers::new(body, Arc::clone(&sent)));
            (body, Some(sent))
        };
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        // A free slot is taken at once; only a wait for one needs a timer.
        Ok(match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => Started::Sent(self.send(request, slot, request_sent, may_be_bundle)),
            Err(_) => Started::NoSlot(Waiting {
                request,
                request_sent,
                may_be_bundle,
            }),
        })
    }

    /// Waits up to the upstream timeout for a slot, then sends.
    async fn slot(
        self: &Arc<Self>,
        waiting: Waiting,
    ) -> Result<Exchange<impl Future<Output = Sent> + use<>>, ProxyFailure> {
        let slot = tokio::time::timeout(
            self.upstream_timeout,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        .map_err(|_| ProxyFailure::Busy)?
        .map_err(|_| ProxyFailure::Busy)?;
        let Waiting {
            request,
            request_sent,
            may_be_bundle,
        } = waiting;
        Ok(self.send(request, slot, request_sent, may_be_bundle))
    }

    fn send(
        self: &Arc<Self>,
        request: Request<Body>,
        slot: OwnedSemaphorePermit,
        request_sent: Option<Arc<AtomicBool>>,
        may_be_bundle: bool,
    ) -> Exchange<impl Future<Output = Sent> + use<>> {
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        // Watched from here: the answer must come within the upstream timeout (`stall.rs`).
        let watch = self.sweeper.start();
        Exchange {
            watch,
            sending: self.upstream.send(request, slot, request_sent),
            may_be_bundle,
        }
    }

    /// The upstream's answer (`None`: none within the timeout), its fields and body made ready
    /// for the client; a Bundle to rewrite is read in a future of its own.
    fn answered(
        self: &Arc<Self>,
        watch: Watch,
        answer: Option<Result<(Response<Incoming>, Lease), SendError>>,
        may_be_bundle: bool,
    ) -> Answered {
        let (response, lease) = match answer {
            None => {
                tracing::warn!("upstream did not answer within SMART_GUARD_UPSTREAM_TIMEOUT_MS");
                return Answered::Now(Err(ProxyFailure::Timeout));
            }
            Some(Err(error @ SendError::Connect(_))) => {
                tracing::warn!(error = %error, "upstream connection failed");
                return Answered::Now(Err(ProxyFailure::Unreachable));
            }
            Some(Err(error @ SendError::Broken(_))) => {
                tracing::warn!(error = %error, "upstream request failed");
                return Answered::Now(Err(ProxyFailure::Broken));
            }
            Some(Ok(sent)) => sent,
        };
        let (mut parts, body) = response.into_parts();
        if headers::strip_hop_by_hop_response(&mut parts.headers).urls {
            self.bases.rewrite_headers(&mut parts.headers);
        }
        // The connection and the slot are held until the response body ends, the client goes
        // away, or the body stalls for the upstream timeout.
        let body = watch.body(body, lease);
        if may_be_bundle && is_plain_json(&parts.headers) {
            let inner = Arc::clone(self);
            return Answered::Later(Box::pin(async move {
                let body = inner
                    .rewrite_body(&mut parts.headers, Body::new(body))
                    .await?;
                Ok(Response::from_parts(parts, body))
            }));
        }
        Answered::Now(Ok(Response::from_parts(parts, ProxyBody::Watched(body))))
    }

    /// The client's answer: the upstream's, or the failure's (counted when the upstream
    /// failed).
    fn respond(&self, answered: Result<Response<ProxyBody>, ProxyFailure>) -> Response<ProxyBody> {
        match answered {
            Ok(response) => response,
            Err(failure) => {
                if matches!(
                    failure,
                    ProxyFailure::Unreachable | ProxyFailure::Broken | ProxyFailure::Timeout
                ) {
                    self.counters
                        .upstream_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                failure.into_response().map(ProxyBody::Other)
            }
        }
    }

    /// The upstream request target (origin-form): the upstream base's path, then the path below
    /// the public base and the query, byte for byte as the guard read them.
    fn upstream_uri(&self, uri: &Uri, extensions: &http::Extensions) -> Result<Uri, ProxyFailure> {
        let path = original_path(uri, extensions);
        let below = path
            .strip_prefix(self.public_path.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .ok_or(ProxyFailure::OutsideBase)?;
        let query = uri.query();
        // The guard splits parameters on `&` only; Rack and older Python split on `;` too.
        if query.is_some_and(|query| query.contains(';')) {
            return Err(ProxyFailure::AmbiguousQuery);
        }
        // The same base path on both sides, and the URI the guard read: its path and query go
        // on as they are (a reference count, not a copy and a second parse).
        if self.public_path == self.upstream_path
            && path == uri.path()
            && !path.is_empty()
            && let Some(path_and_query) = uri.path_and_query()
        {
            return Ok(Uri::from(path_and_query.clone()));
        }
        let mut target = String::with_capacity(self.upstream_path.len() + path.len() + 64);
        target.push_str(&self.upstream_path);
        target.push_str(below);
        if target.is_empty() {
            target.push('/');
        }
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        Uri::try_from(target).map_err(|_| ProxyFailure::Unforwardable)
    }

    /// What crosses (`headers.rs`): hop-by-hop fields, method overrides and forged identity
    /// out, our identity and forwarding fields in.
    fn prepare_headers(
        &self,
        parts: &mut http::request::Parts,
        claims: Option<&VerifiedClaims>,
        client: Option<&ClientFields>,
    ) -> Result<(), ProxyFailure> {
        let set = match (client, claims) {
            (Some(client), Some(claims)) => {
                return client
                    .prepare(&self.fields, claims, &mut parts.headers)
                    .map_err(|_| ProxyFailure::Unforwardable);
            }
            (Some(client), None) => self.fields.set_fields(None, client.peer()),
            (None, claims) => {
                let peer = parts
                    .extensions
                    .get::<ClientAddr>()
                    .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
                let values =
                    claims.map(|claims| IdentityValues::new(claims.client_id(), claims.scope()));
                let set = self
                    .fields
                    .set_fields(values.as_ref(), &self.fields.peer(peer));
                match claims {
                    Some(claims) => self
                        .fields
                        .with_interaction(&set, claims.request().interaction().as_str()),
                    None => set,
                }
            }
        };
        self.fields
            .prepare_with(&mut parts.headers, &set)
            .map_err(|_| ProxyFailure::Unforwardable)
    }

    /// A JSON body: read up to the limit and rewritten if it is a Bundle; a larger one goes on
    /// as it came, the part already read first.
    async fn rewrite_body(
        &self,
        headers: &mut http::HeaderMap,
        mut body: Body,
    ) -> Result<Body, ProxyFailure> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_rewrite_bytes as u64) {
            self.counters
                .rewrite_skipped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(body);
        }
        let mut read: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "upstream body failed");
                    return Err(ProxyFailure::Broken);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        total += data.len();
                        read.push(data);
                        if total > self.max_rewrite_bytes {
                            self.counters
                                .rewrite_skipped
                                .fetch_add(1, Ordering::Relaxed);
                            return Ok(Body::new(Prefixed {
                                read: read.into(),
                                rest: body,
                            }));
                        }
                    }
                    // Trailers end a JSON body here: it is passed on without them.
                    Err(_trailers) => break,
                },
            }
        }
        let whole: Vec<u8> = read.concat();
        match self.bases.rewrite_bundle(&whole) {
            Some(rewritten) => {
                self.counters
                    .bundles_rewritten
                    .fetch_add(1, Ordering::Relaxed);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
                Ok(Pieces::body(rewritten))
            }
            None => Ok(Pieces::body(whole)),
        }
    }
}

/// `host[:port]` of a URL, IPv6 bracketed.
fn upstream_authority(url: &Url) -> String {
    // `host_str` brackets an IPv6 address.
    let host = url.host_str().unwrap_or_default().to_owned();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_authority_keeps_its_port_and_brackets_ipv6() {
        for (url, want) in [
            ("http://127.0.0.1:8081/fhir", "127.0.0.1:8081"),
            ("https://fhir.example.org/r4", "fhir.example.org"),
            ("http://[::1]:9/fhir", "[::1]:9"),
        ] {
            assert_eq!(upstream_authority(&url.parse().expect("url")), want);
        }
    }
}
