//! No request takes the server down. The guard runs in a server process of its own (this test
//! binary, re-executed as `child_server`), in front of FHIR routes that answer 200 to anything
//! that gets through, with the development AS of this process as its introspection endpoint.
//! Each hostile request goes in with a made-up token and with a valid `system/*.cruds` token:
//! the answer is the expected one (a 4xx but where a valid token may do it), the process stays
//! up, and its peak resident memory grows by less than 64 MiB.
#![cfg(feature = "dev-server")]

mod support;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use axum::Router;
use smart_guard::SmartGuardLayer;
use smart_guard::client::{AssertionSigner, KeyPair, SigningAlg, request_token};
use smart_guard::dev_server::{
    ClientRegistration, DevServer, JwksSource, ResourceServerRegistration,
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

const CHILD_ENV: &str = "SMART_GUARD_SURVIVAL_CHILD";
const CLIENT: &str = "backend";
const RS: &str = "guard";
const RS_SECRET: &str = "survival-secret";
const MADE_UP: &str = "not-a-real-token";

/// The server process of [`hostile_requests_never_take_the_server_down`]: the guard on the
/// outer router, FHIR routes that echo whatever reaches them, settings from the environment.
/// Does nothing unless re-executed by that test.
#[test]
#[ignore = "the server process of the survival tests; runs only when they re-execute this binary"]
fn child_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Worker threads with tokio's default 2 MiB stacks, as in any axum server.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let layer = SmartGuardLayer::from_env().expect("guard settings");
        // The echo routes read any body the guard lets through (axum's own 2 MB limit raised).
        let app = Router::new()
            .nest("/fhir", support::fhir_routes())
            .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("LISTENING http://{}", listener.local_addr().expect("addr"));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The guarded server in its own process, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(auth: &DevServer) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args(["child_server", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, "1")
            .env("SMART_GUARD_INTROSPECTION_URL", auth.introspection_url())
            .env("SMART_GUARD_CLIENT_ID", RS)
            .env("SMART_GUARD_CLIENT_SECRET", RS_SECRET)
            .env("SMART_GUARD_BASE_PATH", "/fhir")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    return format!("{addr}/fhir");
                }
            }
            panic!("the server process exited before listening");
        })
        .await
        .expect("the server process listens within 30 s");
        // Keep draining its stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, base }
    }

    /// Panics with the exit status when the process is gone.
    fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("the server process died after {after}: {status}");
        }
    }

    /// The peak resident memory so far, in bytes (Linux `/proc`: `VmHWM`), so that memory
    /// taken and given back within one request still counts.
    fn peak_rss(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib * 1024
    }
}

async fn dev_as() -> (DevServer, String) {
    let key = KeyPair::generate(SigningAlg::Es384).expect("key");
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::inline(key.jwks()))
                .with_scopes(["system/*.cruds"]),
        )
        .with_resource_server(ResourceServerRegistration::with_secret(RS, RS_SECRET))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev AS");
    let token = request_token(
        &support::http(),
        server.token_url(),
        &AssertionSigner::new(CLIENT, key),
        "system/*.cruds",
    )
    .await
    .expect("token")
    .access_token;
    (server, token.as_str().to_owned())
}

/// One hostile request, as raw HTTP/1.1 bytes with `Connection: close`.
struct Hostile {
    label: String,
    head: String,
    body: Vec<u8>,
    /// The status for a made-up token: 401 once the body would have to be read (the token is
    /// checked first), 400 for what the guard refuses from the headers alone, 413 for a body
    /// declared too large.
    made_up: u16,
    /// The status for a valid token: 400 past an analysis limit or for a JSON body the guard
    /// cannot read, 413 past the body size limit.
    valid: u16,
}

/// `_has:Flag:x:` nested `n` times: a search parameter name of ~12 bytes a level.
fn deep_has(n: usize) -> String {
    "_has:Flag:x:".repeat(n)
}

fn hostile_requests(host: &str, token: &str) -> Vec<Hostile> {
    let head = |method: &str, target: &str, extra: &str| {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             {extra}Connection: close\r\n"
        )
    };
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let json = "Content-Type: application/fhir+json\r\n";
    let with_length =
        |label: &str, [made_up, valid]: [u16; 2], head: String, body: Vec<u8>| Hostile {
            label: label.to_owned(),
            head: format!("{head}Content-Length: {}\r\n\r\n", body.len()),
            body,
            made_up,
            valid,
        };
    let batch = serde_json::json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [{"request": {"method": "GET", "url": format!("Patient?{}=1", deep_has(12_000))}}],
    });
    let transaction = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{
            "request": {"method": "POST", "url": "Observation"},
            "resource": {"resourceType": "Observation",
                         "subject": {"reference": format!("Patient?{}=1", deep_has(12_000))}},
        }],
    });
    let type_filter: String =
        form_urlencoded::byte_serialize(format!("Patient?{}=1", deep_has(12_000)).as_bytes())
            .collect();
    let nested = |n: usize| {
        let mut body = vec![b'['; n];
        body.extend(std::iter::repeat_n(b']', n));
        body
    };
    vec![
        with_length(
            "POST _search form with _has nested 12,000 deep",
            [401, 400],
            head("POST", "/fhir/Patient/_search", form),
            deep_has(12_000).into_bytes(),
        ),
        with_length(
            "POST _search form with 12,000 parameters",
            [401, 400],
            head("POST", "/fhir/Patient/_search", form),
            "name=x&".repeat(12_000).into_bytes(),
        ),
        with_length(
            "query with _has nested 5,000 deep",
            [400, 400],
            head("GET", &format!("/fhir/Patient?{}=1", deep_has(5_000)), ""),
            Vec::new(),
        ),
        with_length(
            "query with a chain 5,000 links long",
            [400, 400],
            head(
                "GET",
                &format!("/fhir/Observation?{}name=x", "patient.".repeat(5_000)),
                "",
            ),
            Vec::new(),
        ),
        with_length(
            "batch entry url with _has nested 12,000 deep",
            [401, 400],
            head("POST", "/fhir", json),
            batch.to_string().into_bytes(),
        ),
        with_length(
            "conditional reference with _has nested 12,000 deep",
            [401, 400],
            head("POST", "/fhir", json),
            transaction.to_string().into_bytes(),
        ),
        with_length(
            "If-None-Exist with _has nested 5,000 deep",
            [400, 400],
            head(
                "POST",
                "/fhir/Patient",
                &format!("{json}If-None-Exist: {}=1\r\n", deep_has(5_000)),
            ),
            b"{\"resourceType\":\"Patient\"}".to_vec(),
        ),
        with_length(
            "$export _typeFilter with _has nested 12,000 deep",
            [401, 400],
            head("POST", "/fhir/$export", form),
            format!("_typeFilter={type_filter}").into_bytes(),
        ),
        with_length(
            "10 MB of nested JSON, Content-Length",
            [413, 413],
            head("POST", "/fhir", json),
            nested(5 * 1024 * 1024),
        ),
        Hostile {
            label: "10 MB of nested JSON, chunked".to_owned(),
            head: format!(
                "{}Transfer-Encoding: chunked\r\n\r\n",
                head("POST", "/fhir", json)
            ),
            body: chunked(&nested(5 * 1024 * 1024)),
            made_up: 401,
            valid: 413,
        },
        with_length(
            "a Bundle of 1.9 million entries in 3.8 MB",
            [401, 400],
            head("POST", "/fhir", json),
            format!(
                r#"{{"resourceType":"Bundle","type":"batch","entry":[0{}]}}"#,
                ",0".repeat(1_900_000)
            )
            .into_bytes(),
        ),
        with_length(
            "$export Parameters of 1.9 million values in 3.8 MB",
            [401, 400],
            head("POST", "/fhir/$export", json),
            format!(
                r#"{{"resourceType":"Parameters","parameter":[0{}]}}"#,
                ",0".repeat(1_900_000)
            )
            .into_bytes(),
        ),
        with_length(
            "3 MB of nested JSON, under the size limit",
            [401, 400],
            head("POST", "/fhir", json),
            nested(3 * 512 * 1024),
        ),
    ]
}

/// `body` in 64 KiB chunks with the closing chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 1000 + 16);
    for chunk in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Sends the request (write errors ignored: the server may answer before reading it all) and
/// returns the status, or `None` when no response came (the connection died).
async fn send(base: &str, request: &Hostile) -> Option<u16> {
    let addr = base
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("http base");
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let write = async {
        stream.write_all(request.head.as_bytes()).await?;
        stream.write_all(&request.body).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), write).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn hostile_requests_never_take_the_server_down() {
    let (auth, token) = dev_as().await;
    let mut server = Server::start(&auth).await;
    let host = server.base["http://".len()..]
        .split('/')
        .next()
        .expect("host")
        .to_owned();
    // Warm up (first introspection, allocator arenas) before the baseline is taken.
    let warm = Hostile {
        label: "warm-up".into(),
        head: format!(
            "GET /fhir/Patient/1 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ),
        body: Vec::new(),
        made_up: 401,
        valid: 200,
    };
    assert_eq!(send(&server.base, &warm).await, Some(200), "a valid read");
    let baseline = server.peak_rss();

    for (who, bearer) in [("a made-up token", MADE_UP), ("a valid token", &token)] {
        for request in hostile_requests(&host, bearer) {
            let status = send(&server.base, &request).await;
            server.assert_alive(&format!("{} with {who}", request.label));
            let status = status.unwrap_or_else(|| {
                panic!("no answer to {} with {who}", request.label);
            });
            let expected = if bearer == MADE_UP {
                request.made_up
            } else {
                request.valid
            };
            assert_eq!(status, expected, "{} with {who}", request.label);
        }
    }
    assert_eq!(send(&server.base, &warm).await, Some(200), "still serving");
    let grown = server.peak_rss().saturating_sub(baseline);
    assert!(
        grown < 64 * 1024 * 1024,
        "peak resident memory grew by {} MiB",
        grown / (1024 * 1024)
    );
}

#[tokio::test]
async fn a_made_up_token_is_refused_before_its_body_is_read() {
    let (auth, _token) = dev_as().await;
    let mut server = Server::start(&auth).await;
    let addr = server.base["http://".len()..]
        .split('/')
        .next()
        .expect("host")
        .to_owned();
    // Announce 3 MB of form body and send none of it: the guard must answer without waiting.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /fhir/Patient/_search HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {MADE_UP}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut response = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("the guard answers without the body")
        .expect("read");
    let text = String::from_utf8_lossy(&response[..read]);
    assert!(
        text.starts_with("HTTP/1.1 401"),
        "after {:?}: {text}",
        started.elapsed()
    );
    assert!(text.contains("invalid_token"), "{text}");
    server.assert_alive("a body never sent");
}
