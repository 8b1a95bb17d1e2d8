//! An upstream HTTP server on loopback (hyper) that records every request it receives and
#![allow(unreachable_pub)]
//! answers in a few FHIR-shaped ways. `stop()` closes its listener and every open connection,
//! so a pooled connection in the proxy dies too; `drop_connections()` closes the connections
//! only, as an upstream's keep-alive timeout does.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::watch};

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub version: http::Version,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

pub struct Upstream {
    scheme: &'static str,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: watch::Sender<bool>,
    /// Bumped to close every open connection (the listener stays).
    kick: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
}

type Body = BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// An https upstream with the test certificate (`tests/proxy/tls`).
    pub async fn start_tls() -> Self {
        Self::start_with(Some(test_tls_acceptor())).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let (kick, kicked) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let base = format!("{scheme}://{addr}/fhir");
        let log = Arc::clone(&seen);
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = stopped_accept.changed() => return,
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (log, base) = (Arc::clone(&log), base.clone());
                let (mut stopped, mut kicked) = (stopped.clone(), kicked.clone());
                // Only a kick after this connection opened closes it.
                kicked.borrow_and_update();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, Arc::clone(&log), base.clone())
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.changed() => {}
                                _ = kicked.changed() => {}
                            }
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.changed() => {}
                                _ = kicked.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Self {
            scheme,
            addr,
            seen,
            stop,
            kick,
            accepted,
        }
    }

    /// The upstream's FHIR base.
    pub fn base(&self) -> String {
        format!("{}://{}/fhir", self.scheme, self.addr)
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection; the listener stays.
    pub async fn drop_connections(&self) {
        self.kick.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Closes the listener and every connection.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The test certificate and key (self-signed, `localhost` and `127.0.0.1`).
pub const TEST_CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/tls/cert.pem");
pub const TEST_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/tls/key.pem");

fn test_tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(TEST_CERT)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(TEST_KEY).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// A search Bundle as the upstream writes it: its base in `link[].url` and `fullUrl`, and in
/// places the proxy must not touch.
pub fn search_bundle(base: &str) -> String {
    r#"{
  "resourceType": "Bundle",
  "type": "searchset",
  "link": [ { "relation": "self", "url": "BASE/Patient?name=x" } ],
  "entry": [
    {
      "fullUrl": "BASE/Patient/1",
      "resource": {
        "resourceType": "Patient", "id": "1",
        "text": { "status": "generated", "div": "<div>see BASE/Patient/1\u0020</div>" },
        "identifier": [ { "system": "BASE/ids", "value": "1.50" } ],
        "extension": [ { "url": "BASE/ext", "valueDecimal": 1.50 } ]
      },
      "search": { "mode": "match", "score": 1.0E0 }
    }
  ]
}"#
    .replace("BASE", base)
}

/// The byte pattern of the huge download and upload (byte `i` is `i % 251`), and its BLAKE3.
pub fn pattern_body(
    size: u64,
) -> (
    impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    String,
) {
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < size {
        let chunk = pattern_chunk(offset, size);
        offset += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let digest = hasher.finalize().to_hex().to_string();
    let stream = futures_util::stream::unfold(0u64, move |offset| async move {
        (offset < size).then(|| {
            let chunk = pattern_chunk(offset, size);
            let next = offset + chunk.len() as u64;
            (Ok(chunk), next)
        })
    });
    (stream, digest)
}

fn pattern_chunk(offset: u64, size: u64) -> Bytes {
    let len = (size - offset).min(64 * 1024);
    (0..len)
        .map(|i| ((offset + i) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn answer(
    request: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    base: String,
) -> Result<Response<Body>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, |pq| pq.as_str().to_owned());
    let seen = Seen {
        version: request.version(),
        method: request.method().to_string(),
        target: target.clone(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    log.lock().expect("lock").push(seen.clone());
    if seen.header("x-upstream-hang").as_deref() == Some("1") {
        std::future::pending::<()>().await;
    }
    if let Some(ms) = seen
        .header("x-upstream-delay-ms")
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let json = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/fhir+json")
            .body(full(body))
            .expect("response")
    };
    // Headers and a first part of the body, then nothing more, for ever.
    if seen.header("x-upstream-stall-body").as_deref() == Some("1") {
        let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"{\"resourceType\":"),
        ))]);
        let body = BodyExt::boxed(StreamBody::new(
            first.chain(futures_util::stream::pending()),
        ));
        return Ok(Response::builder()
            .header("content-type", "application/fhir+json")
            .header("content-length", "1000")
            .body(body)
            .expect("response"));
    }
    if let Some(n) = path
        .strip_prefix("/fhir/Binary/huge-")
        .and_then(|n| n.parse::<u64>().ok())
    {
        let (stream, _) = pattern_body_unhashed(n);
        let body = BodyExt::boxed(StreamBody::new(stream.map(|c| c.map(Frame::data))));
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", n)
            .body(body)
            .expect("response"));
    }
    if method == "POST" && path == "/fhir/Binary" {
        let mut body = request.into_body();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut trailers = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            match frame.into_data() {
                Ok(data) => {
                    size += data.len() as u64;
                    hasher.update(&data);
                }
                Err(frame) => {
                    if let Ok(fields) = frame.into_trailers() {
                        trailers.extend(fields.keys().map(|name| name.as_str().to_owned()));
                    }
                }
            }
        }
        let receipt = serde_json::json!({
            "resourceType": "Binary", "id": "big", "size": size,
            "blake3": hasher.finalize().to_hex().as_str(),
            "trailers": trailers,
        });
        return Ok(json(StatusCode::CREATED, receipt.to_string()));
    }
    if method == "POST" && path == "/fhir/Patient" {
        let location = format!("{base}/Patient/new/_history/1");
        let mut response = json(
            StatusCode::CREATED,
            r#"{"resourceType":"Patient","id":"new"}"#.to_owned(),
        );
        let headers = response.headers_mut();
        headers.insert("location", location.parse().expect("value"));
        headers.insert("content-location", location.parse().expect("value"));
        return Ok(response);
    }
    if method == "GET" && path == "/fhir/Patient" {
        return Ok(json(StatusCode::OK, search_bundle(&base)));
    }
    let mut response = json(
        StatusCode::OK,
        r#"{"resourceType":"Patient","id":"1"}"#.to_owned(),
    );
    let headers = response.headers_mut();
    headers.insert("connection", "x-upstream-hop".parse().expect("value"));
    headers.insert("x-upstream-hop", "1".parse().expect("value"));
    headers.insert("keep-alive", "timeout=5".parse().expect("value"));
    headers.insert("x-upstream-end-to-end", "kept".parse().expect("value"));
    Ok(response)
}

fn pattern_body_unhashed(
    size: u64,
) -> (
    impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    (),
) {
    let stream = futures_util::stream::unfold(0u64, move |offset| async move {
        (offset < size).then(|| {
            let chunk = pattern_chunk(offset, size);
            let next = offset + chunk.len() as u64;
            (Ok(chunk), next)
        })
    });
    (stream, ())
}
