//! Harness: keys from our CLI, oidc-provider as a child process, a guarded FHIR server, tokens
//! from the crate's own client.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use axum::Router;
use reqwest::header::HeaderMap;
use serde_json::Value;
use smart_guard::{
    Config, SmartGuardLayer,
    client::{AssertionSigner, KeyPair, TokenResponse, request_token},
    dev_server::fhir_store::FhirStore,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::OnceCell,
};

/// The resource indicator (and so the `aud`) of tokens for the guarded FHIR server.
pub const FHIR_RS: &str = "https://fhir.interop.test/fhir";
/// The secret of `rs-basic` and `rs-post` (as.mjs).
pub const RS_SECRET: &str = "interop rs-s3cret:with&odd=chars";
/// The scope `rs-bearer`'s own token needs for introspection (as.mjs).
pub const INTROSPECTION_SCOPE: &str = "introspection";

/// The keys as.mjs registers, with their algorithm: generated once per run by `smart-guard keygen`.
const KEYS: [(&str, &str); 5] = [
    ("backend-rs384", "RS384"),
    ("backend-es384", "ES384"),
    ("rs-jwt-rs384", "RS384"),
    ("rs-jwt-es384", "ES384"),
    ("rs-bearer", "ES384"),
];

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn scratch_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-{}", std::process::id()))
}

/// A loopback HTTP client that ignores proxy settings.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// The guard's client to the AS: loopback, short timeouts so an AS outage is quick to see.
pub fn guard_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

static KEY_DIR: OnceCell<PathBuf> = OnceCell::const_new();

/// Generates every key once per test run with `smart-guard keygen` (the CLI under test).
pub async fn key_dir() -> &'static Path {
    KEY_DIR
        .get_or_init(|| async {
            // Earlier runs' scratch directories (keys, AS logs) are stale by now.
            if let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with("interop-") && entry.path() != scratch_dir() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            let dir = scratch_dir().join("keys");
            let _ = std::fs::remove_dir_all(&dir);
            let runs = KEYS.map(|(name, alg)| {
                let out = dir.join(name);
                async move {
                    let output = Command::new(env!("CARGO_BIN_EXE_smart-guard"))
                        .args(["keygen", "--alg", alg, "--out"])
                        .arg(&out)
                        .output()
                        .await
                        .expect("run smart-guard keygen");
                    assert!(
                        output.status.success(),
                        "keygen {name}: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            });
            futures_join_all(runs).await;
            dir
        })
        .await
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    runs: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    for handle in handles {
        handle.await.expect("keygen task");
    }
}

/// The private key `keygen` wrote for `name`.
pub async fn key(name: &str) -> KeyPair {
    let pem = std::fs::read_to_string(key_dir().await.join(name).join("private-key.pem"))
        .expect("read private key");
    KeyPair::from_pkcs8_pem(&pem).expect("parse private key")
}

/// Path of the private key for `name` (for env-var configuration).
pub async fn key_file(name: &str) -> String {
    key_dir()
        .await
        .join(name)
        .join("private-key.pem")
        .to_string_lossy()
        .into_owned()
}

/// How to run oidc-provider.
#[derive(Clone, Copy, Debug)]
pub struct AsOptions {
    /// Keep tokens in a state file, so a restart remembers them.
    pub persistent: bool,
    /// Lifetime of `backend-short`'s tokens.
    pub short_ttl_secs: u64,
}

impl Default for AsOptions {
    fn default() -> Self {
        Self {
            persistent: false,
            short_ttl_secs: 3,
        }
    }
}

/// oidc-provider running `as.mjs` as a child process on loopback. Killed on drop; it also exits
/// by itself when this process dies (its stdin closes).
pub struct OidcProvider {
    child: Option<(Child, ChildStdin)>,
    pub issuer: String,
    port: u16,
    options: AsOptions,
    state: PathBuf,
    log: PathBuf,
}

static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl OidcProvider {
    /// Starts oidc-provider on a free loopback port and waits until it listens.
    pub async fn start(options: AsOptions) -> Self {
        let keys = key_dir().await;
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let mut provider = Self {
            child: None,
            issuer: String::new(),
            port: 0,
            options,
            state: dir.join(format!("as-{id}.state.json")),
            log: dir.join(format!("as-{id}.log")),
        };
        let _ = std::fs::remove_file(&provider.state);
        provider.spawn(keys).await;
        provider
    }

    async fn spawn(&mut self, keys: &Path) {
        let interop = interop_dir();
        assert!(
            interop.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci` in {}",
            interop.display()
        );
        // A restart may race the old socket's release: retry briefly.
        for attempt in 0..20 {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("log file");
            let mut command = Command::new(std::env::var("NODE").unwrap_or_else(|_| "node".into()));
            command
                .arg("as.mjs")
                .arg("--keys")
                .arg(keys)
                .args(["--port", &self.port.to_string()])
                .args(["--short-ttl", &self.options.short_ttl_secs.to_string()])
                .arg("--watch-stdin")
                .current_dir(&interop)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true);
            if self.options.persistent {
                command.arg("--state").arg(&self.state);
            }
            let mut child = command
                .spawn()
                .expect("start node (the interop suite needs Node.js >= 20 on PATH, or NODE=...)");
            let stdin = child.stdin.take().expect("stdin");
            let stdout = child.stdout.take().expect("stdout");
            let line = tokio::time::timeout(Duration::from_secs(20), async {
                BufReader::new(stdout).lines().next_line().await
            })
            .await;
            match line {
                Ok(Ok(Some(line))) => {
                    let ready: Value = serde_json::from_str(&line).expect("ready line");
                    self.issuer = ready["issuer"].as_str().expect("issuer").to_owned();
                    self.port = ready["port"]
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .expect("port");
                    self.child = Some((child, stdin));
                    return;
                }
                _ => {
                    let _ = child.kill().await;
                    assert!(
                        attempt < 19 && self.port != 0,
                        "oidc-provider did not start; see {}",
                        self.log.display()
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Stops the AS (SIGKILL) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.kill().await;
        }
    }

    /// Starts the AS again on the same port (and with the same state file, if persistent).
    pub async fn restart(&mut self) {
        self.stop().await;
        let keys = key_dir().await;
        self.spawn(keys).await;
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }

    pub fn revocation_url(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }

    /// The counters as.mjs keeps (since its last start).
    pub async fn stats(&self) -> Value {
        http()
            .get(format!("{}/__interop/stats", self.issuer))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// How many introspection requests reached the AS since its last start.
    pub async fn introspections(&self) -> u64 {
        self.stats().await["introspection"].as_u64().expect("count")
    }

    /// A token for `client_id`, obtained by the crate's client with `key_name`'s key.
    pub async fn token(&self, client_id: &str, key_name: &str, scope: &str) -> TokenResponse {
        let signer = AssertionSigner::new(client_id, key(key_name).await);
        request_token(&http(), &self.token_url(), &signer, scope)
            .await
            .unwrap_or_else(|e| panic!("token for {client_id}: {e}"))
    }

    /// Introspects `token` directly as `rs-basic` (client_secret_basic, RFC 6749 §2.3.1 encoding).
    pub async fn introspect_as_rs_basic(&self, token: &str) -> Value {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        http()
            .post(self.introspection_url())
            .basic_auth(encode("rs-basic"), Some(encode(RS_SECRET)))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect")
            .json()
            .await
            .expect("introspection json")
    }

    /// Revokes `token` as its owner (private_key_jwt at the revocation endpoint).
    pub async fn revoke(&self, client_id: &str, key_name: &str, token: &str) -> u16 {
        let signer = AssertionSigner::new(client_id, key(key_name).await);
        let assertion = signer.sign(&self.revocation_url()).expect("sign");
        let [kind, jwt] = assertion.form_params();
        http()
            .post(self.revocation_url())
            .form(&[
                ("token", token),
                ("token_type_hint", "access_token"),
                kind,
                jwt,
            ])
            .send()
            .await
            .expect("revoke")
            .status()
            .as_u16()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some((child, _)) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A guard configuration for this AS's issuer with `rs-basic` (endpoints still to discover).
pub fn basic_config(provider: &OidcProvider) -> Config {
    Config::for_issuer(&provider.issuer, "rs-basic")
        .expect("issuer")
        .with_client_secret(RS_SECRET)
        .with_http_client(guard_http())
}

/// Discovers `config`'s endpoints, then serves the sample FHIR store at `/fhir` behind the guard
/// on loopback. Returns the FHIR base URL.
pub async fn guarded_fhir(config: Config) -> String {
    let config = config
        .with_base_path("/fhir")
        .expect("base path")
        .discover()
        .await
        .expect("discovery");
    let layer = SmartGuardLayer::new(config).expect("layer");
    let app = Router::new()
        .nest("/fhir", FhirStore::with_samples().router())
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/fhir", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// A response from the guarded server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// `GET {base}{path}` with `token` as the bearer token.
pub async fn get(base: &str, path: &str, token: &str) -> Answer {
    let response = http()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request to the guarded server");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

/// Seconds since the epoch, fractional.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
