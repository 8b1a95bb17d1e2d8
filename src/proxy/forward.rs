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
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body::Frame;
use http_body_util::BodyExt;
use reqwest::Url;
use tokio::sync::Semaphore;
use tower_service::Service;

use super::{
    config::ProxyConfig,
    failure::ProxyFailure,
    headers::{
        self, Forwarding, Identity, IdentityPrefix, IdentityValues, PeerFields, RequestFields,
    },
    rewrite::Bases,
    stall::Sweeper,
    upstream::{SendError, Upstream},
};
use crate::{
    VerifiedClaims, error::ConfigError, guard::original_path, introspect::response::TokenInfo,
};

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

/// The fields of one client connection: its forwarding fields, and the identity values of the
/// last token it sent (a client sends the same token request after request: they are encoded
/// once, not per request).
struct ClientFields {
    peer: PeerFields,
    last: Mutex<Option<(Arc<TokenInfo>, Arc<IdentityValues>)>>,
}

/// Without the last token's introspection answer (its claims are nobody's business in a log).
impl std::fmt::Debug for ClientFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFields")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ClientFields {
    /// The identity values of `claims`' token: the last ones when the token is the same cached
    /// answer (held here, so its address cannot be reused by another).
    fn identity_values(&self, claims: &VerifiedClaims) -> Arc<IdentityValues> {
        let token = claims.shared_token();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, values)) = &*last
            && Arc::ptr_eq(seen, token)
        {
            return Arc::clone(values);
        }
        let values = Arc::new(IdentityValues::new(claims.client_id(), claims.scope()));
        *last = Some((Arc::clone(token), Arc::clone(&values)));
        values
    }
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
            client: Some(Arc::new(ClientFields {
                peer: self.inner.fields.peer(addr.ip()),
                last: Mutex::new(None),
            })),
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
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let claims = request.extensions_mut().remove::<VerifiedClaims>();
        self.forward_verified(request, claims)
    }
}

impl Forward {
    /// Forwards `request` with the `claims` the guard verified (`None`: a public endpoint):
    /// what [`Service::call`] does with the claims it finds in the extensions.
    pub(crate) fn forward_verified(
        &self,
        request: Request<Body>,
        claims: Option<VerifiedClaims>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> {
        let inner = Arc::clone(&self.inner);
        let client = self.client.clone();
        Box::pin(async move {
            Ok(
                match inner
                    .forward(request, claims.as_ref(), client.as_deref())
                    .await
                {
                    Ok(response) => response,
                    Err(failure) => {
                        if matches!(
                            failure,
                            ProxyFailure::Unreachable
                                | ProxyFailure::Broken
                                | ProxyFailure::Timeout
                        ) {
                            inner
                                .counters
                                .upstream_failures
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        failure.into_response()
                    }
                },
            )
        })
    }
}

impl Inner {
    async fn forward(
        &self,
        request: Request<Body>,
        claims: Option<&VerifiedClaims>,
        client: Option<&ClientFields>,
    ) -> Result<Response<Body>, ProxyFailure> {
        let (mut parts, body) = request.into_parts();
        // Only an answer that can be a Bundle is read whole to be rewritten; the rest streams.
        let may_be_bundle = claims.is_some_and(|claims| answers_with_bundle(claims.request()));
        parts.uri = self.upstream_uri(&parts.uri, &parts.extensions)?;
        self.prepare_headers(&mut parts, claims, client)?;
        // Request trailers never cross; and the connection learns when the body has been sent
        // whole (`upstream.rs`).
        let (body, request_sent) = if http_body::Body::is_end_stream(&body) {
            (body, None)
        } else {
            let sent = Arc::new(AtomicBool::new(false));
            let body = Body::new(NoTrailers {
                body,
                sent: Arc::clone(&sent),
            });
            (body, Some(sent))
        };
        parts.version = Version::HTTP_11;
        // A free slot is taken at once; only a wait for one needs a timer.
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            // Boxed, as the rewrite below: a timer's state is large, and this future is
            // allocated and moved on every request.
            Err(_) => Box::pin(tokio::time::timeout(
                self.upstream_timeout,
                Arc::clone(&self.slots).acquire_owned(),
            ))
            .await
            .map_err(|_| ProxyFailure::Busy)?
            .map_err(|_| ProxyFailure::Busy)?,
        };
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        // Watched from here: the answer must come within the upstream timeout (`stall.rs`).
        let watch = self.sweeper.start();
        let sent = self
            .upstream
            .send(Request::from_parts(parts, body), slot, request_sent);
        let (response, lease) = match watch.answer(sent).await {
            None => {
                tracing::warn!("upstream did not answer within SMART_GUARD_UPSTREAM_TIMEOUT_MS");
                return Err(ProxyFailure::Timeout);
            }
            Some(Err(error @ SendError::Connect(_))) => {
                tracing::warn!(error = %error, "upstream connection failed");
                return Err(ProxyFailure::Unreachable);
            }
            Some(Err(error @ SendError::Broken(_))) => {
                tracing::warn!(error = %error, "upstream request failed");
                return Err(ProxyFailure::Broken);
            }
            Some(Ok(sent)) => sent,
        };
        let (mut parts, body) = response.into_parts();
        if headers::strip_hop_by_hop_response(&mut parts.headers).urls {
            self.bases.rewrite_headers(&mut parts.headers);
        }
        // The connection and the slot are held until the response body ends, the client goes
        // away, or the body stalls for the upstream timeout.
        let body = Body::new(watch.body(body, lease));
        let body = if may_be_bundle && is_plain_json(&parts.headers) {
            Box::pin(self.rewrite_body(&mut parts.headers, body)).await?
        } else {
            body
        };
        Ok(Response::from_parts(parts, body))
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
        let values = claims.map(|claims| match client {
            Some(client) => client.identity_values(claims),
            None => Arc::new(IdentityValues::new(claims.client_id(), claims.scope())),
        });
        let identity = claims
            .zip(values.as_deref())
            .map(|(claims, values)| Identity {
                values,
                interaction: claims.request().interaction().as_str(),
            });
        let per_request;
        let client = match client {
            Some(client) => &client.peer,
            None => {
                let peer = parts
                    .extensions
                    .get::<ClientAddr>()
                    .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
                per_request = self.fields.peer(peer);
                &per_request
            }
        };
        self.fields
            .prepare(&mut parts.headers, identity.as_ref(), client)
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
                Ok(Body::from(rewritten))
            }
            None => Ok(Body::from(whole)),
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

/// Whether the answer to `request` can be a Bundle: searches, histories, batches and
/// transactions, operations, and reads of a `Bundle`. (A create or read answers one resource,
/// whose URLs the proxy does not touch.)
fn answers_with_bundle(request: &crate::FhirRequest) -> bool {
    use crate::Interaction as I;
    match request.interaction() {
        I::HistoryInstance
        | I::HistoryType
        | I::HistorySystem
        | I::SearchType
        | I::SearchSystem
        | I::SearchCompartment
        | I::BatchOrTransaction
        | I::Operation => true,
        I::Read | I::Vread => {
            request.resource_type().map(crate::ResourceType::as_str) == Some("Bundle")
        }
        _ => false,
    }
}

/// JSON (FHIR or plain) without a content coding: a body the proxy can rewrite.
fn is_plain_json(headers: &http::HeaderMap) -> bool {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/fhir+json" || t == "application/json");
    let coded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    json && !coded
}

pin_project_lite::pin_project! {
    /// A request body without its trailers, which tells when it has been read whole.
    struct NoTrailers<B> {
        #[pin]
        body: B,
        sent: Arc<AtomicBool>,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for NoTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            let mut this = self.as_mut().project();
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if !frame.is_data() => continue,
                Poll::Ready(None) => {
                    this.sent.store(true, Ordering::Release);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // A body of known length may not be polled past its last bytes.
                    if this.body.is_end_stream() {
                        this.sent.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The frames already read, then the rest of the body.
    struct Prefixed<B> {
        read: std::collections::VecDeque<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(data) = this.read.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        this.rest.poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_without_a_coding_are_the_ones_rewritten() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        for (pairs, want) in [
            (
                &[("content-type", "application/fhir+json;charset=utf-8")][..],
                true,
            ),
            (&[("content-type", "Application/JSON")][..], true),
            (
                &[
                    ("content-type", "application/fhir+json"),
                    ("content-encoding", "gzip"),
                ][..],
                false,
            ),
            (
                &[
                    ("content-type", "application/fhir+json"),
                    ("content-encoding", "identity"),
                ][..],
                true,
            ),
            (&[("content-type", "application/fhir+xml")][..], false),
            (&[][..], false),
        ] {
            assert_eq!(is_plain_json(&headers(pairs)), want, "{pairs:?}");
        }
    }

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
