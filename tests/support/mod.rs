//! Test support: a scriptable loopback introspection server that counts its calls, and a
//! guarded FHIR app served on loopback.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Form, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde_json::{Value, json};
use smart_guard::{Config, SmartGuardLayer, VerifiedClaims};
use tokio::{net::TcpListener, task::JoinHandle};

pub const RS_CLIENT_ID: &str = "fhir-rs";
pub const RS_SECRET: &str = "rs-s3cret:with&odd=chars";

/// How the mock AS behaves on the next calls.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer from the token table (unknown tokens are inactive).
    Normal,
    /// Answer this status with an empty JSON object.
    Status(u16),
    /// Answer 200 with this raw body.
    Raw(&'static str),
    /// Wait, then answer normally.
    Delay(Duration),
    /// Accept the request and never answer it.
    Hang,
    /// Answer 200 with `Content-Length: 100`, send 20 bytes, then drop the connection.
    TruncatedBody,
    /// Answer 200 with a JSON object of this many bytes (`Content-Length` set).
    HugeBody(usize),
    /// Answer 200 with a JSON object of this many bytes, chunked (no `Content-Length`).
    HugeChunked(usize),
    /// Drop the connection as soon as a request arrives, without an answer.
    ConnectionClose,
}

#[derive(Default)]
struct AsState {
    answers: HashMap<String, Value>,
    default_answer: Option<Value>,
    behaviour: Option<Behaviour>,
    last_form: Vec<(String, String)>,
    last_authorization: Option<String>,
}

/// A loopback RFC 7662 endpoint with a call counter.
pub struct MockAs {
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    state: Arc<Mutex<AsState>>,
    /// Bumped by [`MockAs::stop`]: connections accepted under an older generation die.
    generation: Arc<AtomicUsize>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for MockAs {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A typical active answer for `scope`, valid for five minutes.
pub fn active(scope: &str) -> Value {
    json!({
        "active": true, "scope": scope, "client_id": "backend-app", "sub": "backend-app",
        "exp": now() + 300, "iat": now(), "iss": "https://as.example", "token_type": "bearer",
        "jti": "jti-1"
    })
}

impl MockAs {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mock = Self {
            addr,
            calls: Arc::new(AtomicUsize::new(0)),
            state: Arc::new(Mutex::new(AsState::default())),
            generation: Arc::new(AtomicUsize::new(0)),
            task: Mutex::new(None),
        };
        mock.serve(listener);
        mock
    }

    fn serve(&self, listener: TcpListener) {
        let app = Router::new()
            .route("/introspect", post(introspect))
            .with_state((Arc::clone(&self.calls), Arc::clone(&self.state)));
        let listener = MockListener {
            inner: listener,
            calls: Arc::clone(&self.calls),
            state: Arc::clone(&self.state),
            generation: Arc::clone(&self.generation),
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        if let Some(old) = self.task.lock().unwrap().replace(task) {
            old.abort();
        }
    }

    /// Takes the AS down: the port refuses connections and open connections die.
    pub fn stop(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Brings the AS back on the same port after [`MockAs::stop`] (no-op if it is up).
    pub async fn restart(&self) {
        if self.task.lock().unwrap().is_some() {
            return;
        }
        // The aborted task releases the port at its next poll; retry the bind briefly.
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("could not bind {} again", self.addr);
    }

    pub fn url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    pub fn answer(&self, token: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(token.to_owned(), answer);
    }

    /// The answer for tokens not in the table (default: `{"active":false}`).
    pub fn answer_unknown(&self, answer: Value) {
        self.state.lock().unwrap().default_answer = Some(answer);
    }

    pub fn behave(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = Some(behaviour);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last_form(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().last_form.clone()
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.state.lock().unwrap().last_authorization.clone()
    }

    /// A guard configuration for this AS (basic auth, base path `/fhir`).
    pub fn config(&self) -> Config {
        Config::new(self.url().parse().expect("url"), RS_CLIENT_ID, RS_SECRET)
            .with_base_path("/fhir")
            .expect("base path")
    }
}

type AsShared = (Arc<AtomicUsize>, Arc<Mutex<AsState>>);

/// The mock's listener: connections die when the mock is stopped, and
/// [`Behaviour::ConnectionClose`] drops them as soon as a request arrives.
struct MockListener {
    inner: TcpListener,
    calls: Arc<AtomicUsize>,
    state: Arc<Mutex<AsState>>,
    generation: Arc<AtomicUsize>,
}

impl axum::serve::Listener for MockListener {
    type Io = MockConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (MockConn, SocketAddr) {
        loop {
            if let Ok((stream, addr)) = self.inner.accept().await {
                let conn = MockConn {
                    stream,
                    calls: Arc::clone(&self.calls),
                    state: Arc::clone(&self.state),
                    born: self.generation.load(Ordering::SeqCst),
                    generation: Arc::clone(&self.generation),
                };
                return (conn, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct MockConn {
    stream: tokio::net::TcpStream,
    calls: Arc<AtomicUsize>,
    state: Arc<Mutex<AsState>>,
    born: usize,
    generation: Arc<AtomicUsize>,
}

impl MockConn {
    fn dead(&self) -> bool {
        self.generation.load(Ordering::SeqCst) != self.born
    }

    fn reset() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock AS closed it")
    }
}

impl tokio::io::AsyncRead for MockConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.dead() {
            return std::task::Poll::Ready(Err(Self::reset()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        let close = matches!(
            self.state.lock().unwrap().behaviour,
            Some(Behaviour::ConnectionClose)
        );
        if close && buf.filled().len() > before {
            // A request arrived: count it and hang up without answering.
            self.calls.fetch_add(1, Ordering::SeqCst);
            return std::task::Poll::Ready(Err(Self::reset()));
        }
        polled
    }
}

impl tokio::io::AsyncWrite for MockConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.dead() {
            return std::task::Poll::Ready(Err(Self::reset()));
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body that sends its frames and then, if `fail`, errors (so the server drops the
/// connection mid-body).
struct TestBody {
    frames: std::collections::VecDeque<bytes::Bytes>,
    fail: bool,
    size: Option<u64>,
}

impl http_body::Body for TestBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(frame))));
        }
        if self.fail {
            self.fail = false;
            return std::task::Poll::Ready(Some(Err(MockConn::reset())));
        }
        std::task::Poll::Ready(None)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.size {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

fn test_response(body: TestBody) -> Response {
    let mut response = Response::new(axum::body::Body::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"active":true,"pad":"xxxx…"}` of `bytes` bytes, in 8 KiB frames; `Content-Length` only if
/// `sized`.
fn huge_body(bytes: usize, sized: bool) -> Response {
    let head: &[u8] = br#"{"active":true,"pad":""#;
    let tail: &[u8] = br#""}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut frames = std::collections::VecDeque::from([bytes::Bytes::from_static(head)]);
    let chunk = bytes::Bytes::from(vec![b'x'; 8192]);
    frames.extend(std::iter::repeat_n(chunk, pad / 8192));
    frames.push_back(bytes::Bytes::from(vec![b'x'; pad % 8192]));
    frames.push_back(bytes::Bytes::from_static(tail));
    test_response(TestBody {
        frames,
        fail: false,
        size: sized.then_some((head.len() + pad + tail.len()) as u64),
    })
}

/// Promises 100 bytes, sends 20, then fails.
fn truncated_body() -> Response {
    test_response(TestBody {
        frames: std::collections::VecDeque::from([bytes::Bytes::from_static(
            br#"{"active":true,"exp""#,
        )]),
        fail: true,
        size: Some(100),
    })
}

async fn introspect(
    State((calls, state)): State<AsShared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    calls.fetch_add(1, Ordering::SeqCst);
    let behaviour = {
        let mut s = state.lock().unwrap();
        s.last_form = form.clone();
        s.last_authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.behaviour.clone().unwrap_or(Behaviour::Normal)
    };
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Status(code) => {
            return (StatusCode::from_u16(code).expect("status"), Json(json!({}))).into_response();
        }
        Behaviour::Raw(body) => return (StatusCode::OK, body).into_response(),
        Behaviour::Delay(delay) => tokio::time::sleep(delay).await,
        Behaviour::Hang => std::future::pending::<()>().await,
        Behaviour::TruncatedBody => return truncated_body(),
        Behaviour::HugeBody(bytes) => return huge_body(bytes, true),
        Behaviour::HugeChunked(bytes) => return huge_body(bytes, false),
        // Handled by the connection (MockConn) before the request reaches this handler.
        Behaviour::ConnectionClose => {}
    }
    if !authenticated(&headers, &form) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone());
    let answer = {
        let s = state.lock().unwrap();
        token
            .and_then(|t| s.answers.get(&t).cloned())
            .or_else(|| s.default_answer.clone())
            .unwrap_or_else(|| json!({"active": false}))
    };
    Json(answer).into_response()
}

/// client_secret_basic (form-urlencoded then base64, RFC 6749 §2.3.1) or client_secret_post.
fn authenticated(headers: &HeaderMap, form: &[(String, String)]) -> bool {
    use base64::Engine as _;
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .unwrap_or_default();
        let Some((id, secret)) = decoded.split_once(':') else {
            return false;
        };
        let decode = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return decode(id) == RS_CLIENT_ID && decode(secret) == RS_SECRET;
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    get("client_id") == Some(RS_CLIENT_ID) && get("client_secret") == Some(RS_SECRET)
}

/// What the inner FHIR handler saw: echoes the claims as JSON.
async fn echo_claims(claims: Option<VerifiedClaims>, body: axum::body::Bytes) -> Response {
    let Some(claims) = claims else {
        return Json(json!({ "public": true })).into_response();
    };
    Json(json!({
        "client_id": claims.client_id(),
        "sub": claims.sub(),
        "scope": claims.scope(),
        "scopes": claims.scopes().scopes().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "exp": claims.exp(),
        "iss": claims.iss(),
        "jti": claims.jti(),
        "interaction": claims.request().interaction().as_str(),
        "grants": claims
            .grants()
            .map(|(grant, scope)| json!({
                "entry": grant.entry,
                "need": format!("{}.{}", grant.need.resource, grant.need.permissions),
                "scope": scope.to_string(),
            }))
            .collect::<Vec<_>>(),
        "resource_type": claims.request().resource_type().map(|t| t.as_str()),
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// A FHIR-shaped router whose every route echoes the claims.
pub fn fhir_routes() -> Router {
    Router::new()
        .route(
            "/metadata",
            get(|| async { Json(json!({"resourceType": "CapabilityStatement"})) }),
        )
        .route("/", any(echo_claims))
        .route("/{*rest}", any(echo_claims))
}

/// Serves `app` on loopback and returns its base URL (`http://127.0.0.1:port`).
pub async fn serve(app: Router) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}"), task)
}

/// The FHIR routes nested at `/fhir` with the guard on the outer router.
pub async fn guarded(config: Config) -> (String, JoinHandle<()>) {
    let layer = SmartGuardLayer::new(config).expect("layer");
    serve(Router::new().nest("/fhir", fhir_routes()).layer(layer)).await
}

/// `GET url` with `Authorization: Bearer token`.
pub async fn get_with_token(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: &str,
) -> reqwest::Response {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Asserts a denial: status, challenge, OperationOutcome code.
pub async fn assert_denied(
    response: reqwest::Response,
    status: u16,
    challenge: Option<&str>,
    issue_code: &str,
) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let headers = response.headers().clone();
    assert_eq!(
        headers
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii")),
        challenge,
        "WWW-Authenticate"
    );
    assert_eq!(
        headers
            .get("content-type")
            .map(|v| v.to_str().expect("ascii")),
        Some("application/fhir+json; charset=utf-8")
    );
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], issue_code, "{body}");
    body
}

/// Sends `GET {path}` byte for byte (no client-side URL normalization) and returns the status
/// and body. `base` is `http://127.0.0.1:port`.
pub async fn raw_get(base: &str, path: &str, token: &str) -> (u16, String) {
    let host = base.strip_prefix("http://").expect("http base");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw_request(base, request.as_bytes()).await;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Captures everything a `tracing` subscriber writes, for assertions on log output.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// A subscriber that writes every event and span (TRACE and up), without colours, here.
    /// Install it with `tracing::subscriber::set_default` on a current-thread runtime, so the
    /// tasks the test spawns log into it too.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines written so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Sends `request` byte for byte (it should say `Connection: close`) and returns the status and
/// the raw response text. Write errors are ignored (the server may answer and close before the
/// whole request is sent); the read gives up after 5 s.
pub async fn raw_request(base: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.strip_prefix("http://").expect("http base");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}
