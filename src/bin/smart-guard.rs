//! `smart-guard`: key pairs, tokens, introspection, a development authorization server, and a demo
//! of SMART Backend Services with the guard layer.
//!
//! ```text
//! smart-guard keygen --alg ES384 --out keys/
//! smart-guard token --token-url http://127.0.0.1:9090/token --client-id my-client \
//!     --key keys/private-key.pem --scope "system/Patient.rs"
//! SMART_GUARD_CLIENT_SECRET=... smart-guard introspect --url http://127.0.0.1:9090/introspect \
//!     --client-id fhir-server TOKEN
//! smart-guard dev-server --clients clients.json --addr 127.0.0.1:9090
//! smart-guard demo
//! ```

use std::error::Error;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use smart_guard::client::{
    AssertionSigner, GRANT_TYPE_CLIENT_CREDENTIALS, KeyPair, SigningAlg, TokenResponse,
    request_token,
};
use smart_guard::dev_server::fhir_store::FhirStore;
use smart_guard::dev_server::{
    ClientRegistration, ClientsFile, DevServer, JwksSource, ResourceServerRegistration,
};
use smart_guard::{Config, SmartGuardLayer};

type BoxError = Box<dyn Error + Send + Sync>;

/// File name of the private key `keygen` writes.
const PRIVATE_KEY_FILE: &str = "private-key.pem";
/// File name of the JWKS `keygen` writes.
const JWKS_FILE: &str = "jwks.json";

#[derive(Debug, Parser)]
#[command(
    name = "smart-guard",
    version,
    about = "SMART Backend Services tools: keys, tokens, introspection, a development authorization server, and a demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a signing key pair: private key (PKCS#8 PEM, mode 0600) and JWKS.
    Keygen(KeygenArgs),
    /// Sign a client assertion, request an access token, and print the token response JSON.
    Token(TokenArgs),
    /// Ask an RFC 7662 introspection endpoint about a token and print its answer.
    Introspect(IntrospectArgs),
    /// Run the development authorization server (development and testing only).
    DevServer(DevServerArgs),
    /// Walk through the whole flow on loopback: dev AS, guarded FHIR server, token, calls, revocation.
    Demo,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AlgArg {
    #[value(name = "RS384")]
    Rs384,
    #[value(name = "ES384")]
    Es384,
}

impl From<AlgArg> for SigningAlg {
    fn from(alg: AlgArg) -> Self {
        match alg {
            AlgArg::Rs384 => SigningAlg::Rs384,
            AlgArg::Es384 => SigningAlg::Es384,
        }
    }
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Signature algorithm: RS384 (RSA 2048) or ES384 (P-384).
    #[arg(long, value_enum)]
    alg: AlgArg,
    /// Directory to write `private-key.pem` and `jwks.json` into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing private key.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Token endpoint URL (also the assertion's `aud`).
    #[arg(long, env = "SMART_GUARD_TOKEN_URL")]
    token_url: String,
    /// The backend client's `client_id`.
    #[arg(long)]
    client_id: String,
    /// Private key file (PKCS#8 PEM), as written by `keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Space-separated scopes to request.
    #[arg(long)]
    scope: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum IntrospectAuth {
    /// `client_secret_basic`: HTTP Basic.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    Post,
}

#[derive(Debug, Args)]
struct IntrospectArgs {
    /// Introspection endpoint URL.
    #[arg(long, env = "SMART_GUARD_INTROSPECTION_URL")]
    url: String,
    /// The resource server's `client_id` at the authorization server.
    #[arg(long, env = "SMART_GUARD_CLIENT_ID")]
    client_id: String,
    /// Its client secret; prefer the environment variable over the command line.
    #[arg(long, env = "SMART_GUARD_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// How to send the secret.
    #[arg(long, value_enum, default_value = "basic")]
    auth: IntrospectAuth,
    /// The token to introspect; `-` reads it from standard input. A token may begin with `-`
    /// (base64url), so this argument takes hyphen values.
    #[arg(allow_hyphen_values = true)]
    token: String,
}

#[derive(Debug, Args)]
struct DevServerArgs {
    /// Clients file (JSON; format in the `smart_guard::dev_server::ClientsFile` docs).
    #[arg(long)]
    clients: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: String,
    /// Base URL to announce instead of `http://<addr>` (e.g. behind a proxy).
    #[arg(long)]
    public_base_url: Option<String>,
    /// Access token lifetime in seconds (overrides the clients file; default 300).
    #[arg(long)]
    token_lifetime_secs: Option<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Keygen(args) => keygen(&args),
        Command::Token(args) => token(args).await,
        Command::Introspect(args) => introspect(args).await,
        Command::DevServer(args) => dev_server(args).await,
        Command::Demo => demo().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                let _ = write!(message, ": {cause}");
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn http() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

// ---------------------------------------------------------------------------------------------
// keygen

fn keygen(args: &KeygenArgs) -> Result<(), BoxError> {
    let key = KeyPair::generate(args.alg.into())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let key_path = args.out.join(PRIVATE_KEY_FILE);
    write_private(&key_path, key.private_key_pem().as_bytes(), args.force)?;
    let jwks = pretty(&serde_json::to_value(key.jwks())?);
    let jwks_path = args.out.join(JWKS_FILE);
    std::fs::write(&jwks_path, format!("{jwks}\n"))
        .map_err(|e| format!("cannot write {}: {e}", jwks_path.display()))?;
    println!("{jwks}");
    eprintln!(
        "wrote {} (mode 0600) and {}; kid {}",
        key_path.display(),
        jwks_path.display(),
        key.kid()
    );
    Ok(())
}

/// Writes a file readable by its owner only; refuses to replace an existing file unless `force`.
fn write_private(path: &Path, contents: &[u8], force: bool) -> Result<(), BoxError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    if force && path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; use --force to replace it", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// token

fn load_key(path: &Path) -> Result<KeyPair, BoxError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(KeyPair::from_pkcs8_pem(&pem)?)
}

fn token_json(token: &TokenResponse) -> Value {
    json!({
        "access_token": token.access_token.as_str(),
        "token_type": token.token_type,
        "expires_in": token.expires_in,
        "scope": token.scope,
    })
}

async fn token(args: TokenArgs) -> Result<(), BoxError> {
    let signer = AssertionSigner::new(args.client_id, load_key(&args.key)?);
    let answer = request_token(&http()?, &args.token_url, &signer, &args.scope).await;
    match answer {
        Ok(token) => {
            println!("{}", pretty(&token_json(&token)));
            Ok(())
        }
        Err(e) => {
            if let Some(oauth) = e.oauth_error() {
                eprintln!("{}", pretty(&serde_json::to_value(oauth)?));
            }
            Err(Box::new(e))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// introspect

async fn introspect(args: IntrospectArgs) -> Result<(), BoxError> {
    let token = if args.token == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        buf.trim().to_owned()
    } else {
        args.token
    };
    let form = [
        ("token", token.as_str()),
        ("token_type_hint", "access_token"),
    ];
    let request = http()?
        .post(&args.url)
        .header(reqwest::header::ACCEPT, "application/json");
    let request = match args.auth {
        IntrospectAuth::Basic => {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request
                .basic_auth(enc(&args.client_id), Some(enc(&args.client_secret)))
                .form(&form)
        }
        IntrospectAuth::Post => request.form(&[
            form[0],
            form[1],
            ("client_id", args.client_id.as_str()),
            ("client_secret", args.client_secret.as_str()),
        ]),
    };
    let response = request.send().await.map_err(reqwest::Error::without_url)?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|_| format!("introspection endpoint answered {status} without a JSON body"))?;
    if status.is_success() {
        println!("{}", pretty(&body));
        Ok(())
    } else {
        eprintln!("{}", pretty(&body));
        Err(format!("introspection endpoint answered {status}").into())
    }
}

// ---------------------------------------------------------------------------------------------
// dev-server

async fn dev_server(args: DevServerArgs) -> Result<(), BoxError> {
    let file = ClientsFile::from_path(&args.clients)?;
    let (clients, resource_servers) = (file.clients.len(), file.resource_servers.len());
    let mut builder = DevServer::builder().with_clients_file(file);
    if let Some(url) = args.public_base_url {
        builder = builder.with_public_base_url(url);
    }
    if let Some(secs) = args.token_lifetime_secs {
        builder = builder.with_token_lifetime(Duration::from_secs(secs));
    }
    let server = builder
        .spawn(args.addr.as_str())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    println!(
        "smart-guard dev-server listening on {} (development and testing only)",
        server.base_url()
    );
    println!("  token:         {}", server.token_url());
    println!("  introspection: {}", server.introspection_url());
    println!("  revocation:    {}", server.revocation_url());
    println!("  discovery:     {}", server.smart_configuration_url());
    println!("  {clients} client(s), {resource_servers} resource server(s); Ctrl-C stops");
    std::io::stdout().flush()?;
    server.run_forever().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// demo

const DEMO_CLIENT: &str = "demo-backend";
const DEMO_SCOPE: &str = "system/Patient.rs system/Observation.rs";
const DEMO_RS: &str = "demo-fhir-server";

/// Tracks the demo's expectations; the demo exits non-zero if any was not met.
#[derive(Debug, Default)]
struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn expect(&mut self, what: &str, ok: bool) {
        if ok {
            self.passed += 1;
            println!("   ✓ {what}");
        } else {
            self.failed.push(what.to_owned());
            println!("   ✗ {what}");
        }
    }
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn elide(secret: &str) -> String {
    let shown: String = secret.chars().take(6).collect();
    format!("{shown}… ({} chars, elided)", secret.len())
}

async fn demo() -> Result<(), BoxError> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut checks = Checks::default();
    println!("smart-guard demo: SMART Backend Services end to end, on loopback");

    step(1, "Generate a key pair");
    let key = KeyPair::generate(SigningAlg::Es384)?;
    println!("   alg: ES384 (ECDSA P-384 with SHA-384)");
    println!("   kid: {} (RFC 7638 thumbprint)", key.kid());
    println!(
        "   private key: PKCS#8 PEM, {} bytes, kept in memory (`smart-guard keygen` writes it with mode 0600)",
        key.private_key_pem().len()
    );

    step(
        2,
        "Register the client's JWKS with the development authorization server",
    );
    let rs_secret = smart_guard_secret();
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(DEMO_CLIENT, JwksSource::inline(key.jwks()))
                .with_scope_string(DEMO_SCOPE),
        )
        .with_resource_server(ResourceServerRegistration::with_secret(DEMO_RS, &rs_secret))
        .spawn("127.0.0.1:0")
        .await?;
    println!("   authorization server: {}", server.base_url());
    println!("   client_id: {DEMO_CLIENT}, allowed scopes: {DEMO_SCOPE}");
    print!("{}", indent(&pretty(&serde_json::to_value(key.jwks())?)));
    let discovery: Value = http
        .get(server.smart_configuration_url())
        .send()
        .await?
        .json()
        .await?;
    println!(
        "   /.well-known/smart-configuration: token_endpoint {}, capabilities {}",
        discovery["token_endpoint"], discovery["capabilities"]
    );

    let fhir = start_guarded_fhir(&http, &server, &rs_secret).await?;
    println!(
        "   FHIR server: {fhir} (SmartGuardLayer introspects as \"{DEMO_RS}\", cache max TTL 1 s)"
    );

    step(3, "Sign a client assertion (private_key_jwt)");
    let signer = AssertionSigner::new(DEMO_CLIENT, key);
    let assertion = signer.sign(server.token_url())?;
    let header = serde_json::to_value(assertion.header())?;
    let header: Value = header
        .as_object()
        .map(|h| {
            h.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    println!("   header: {header}");
    print!(
        "{}",
        indent(&format!(
            "claims: {}",
            pretty(&serde_json::to_value(assertion.claims())?)
        ))
    );
    println!("   signature: <elided>");

    step(4, "Request an access token (grant_type=client_credentials)");
    let [assertion_type, assertion_param] = assertion.form_params();
    let response = http
        .post(server.token_url())
        .form(&[
            ("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS),
            (
                "scope",
                "system/Patient.rs system/Observation.rs system/Patient.c",
            ),
            assertion_type,
            assertion_param,
        ])
        .send()
        .await?;
    let status = response.status();
    let token: TokenResponse = response.json().await?;
    let mut shown = token_json(&token);
    shown["access_token"] = json!(elide(token.access_token.as_str()));
    println!("   requested: system/Patient.rs system/Observation.rs system/Patient.c");
    print!("{}", indent(&pretty(&shown)));
    checks.expect("token issued (200)", status == 200);
    checks.expect(
        "granted scope = requested ∩ allowed (no system/Patient.c)",
        token.scope.as_deref() == Some("system/Patient.rs system/Observation.rs"),
    );
    let bearer = token.access_token.as_str();

    step(5, "FHIR read: GET /fhir/Patient/example");
    let read = http
        .get(format!("{fhir}/Patient/example"))
        .bearer_auth(bearer)
        .send()
        .await?;
    let read_status = read.status();
    let patient: Value = read.json().await.unwrap_or_default();
    println!(
        "   {read_status}: Patient {} {}",
        patient["id"], patient["name"][0]["family"]
    );
    checks.expect("read allowed by system/Patient.rs", read_status == 200);

    step(6, "FHIR search: GET /fhir/Observation?patient=example");
    let search = http
        .get(format!("{fhir}/Observation?patient=example"))
        .bearer_auth(bearer)
        .send()
        .await?;
    let search_status = search.status();
    let bundle: Value = search.json().await.unwrap_or_default();
    println!(
        "   {search_status}: Bundle searchset, total {}",
        bundle["total"]
    );
    checks.expect(
        "search allowed by system/Observation.rs",
        search_status == 200,
    );

    step(7, "FHIR create: POST /fhir/Patient");
    let create = http
        .post(format!("{fhir}/Patient"))
        .bearer_auth(bearer)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient","name":[{"family":"Demo"}]}"#)
        .send()
        .await?;
    let create_status = create.status();
    let challenge = header_text(create.headers());
    let outcome: Value = create.json().await.unwrap_or_default();
    println!("   {create_status}");
    println!("   WWW-Authenticate: {challenge}");
    println!("   OperationOutcome: {}", outcome["issue"][0]["code"]);
    checks.expect(
        "create refused: 403 insufficient_scope (no c permission)",
        create_status == 403 && challenge.contains("insufficient_scope"),
    );
    checks.expect(
        "three FHIR calls, one introspection (the guard caches)",
        server.introspection_count() == 1,
    );

    step(8, "Introspect the token, as the guard does (RFC 7662)");
    let answer = introspect_as_rs(&http, &server, &rs_secret, bearer).await?;
    print!("{}", indent(&pretty(&answer)));
    checks.expect(
        "active with the granted scopes",
        answer["active"] == true && answer["scope"] == DEMO_SCOPE,
    );

    step(9, "Revoke the token (RFC 7009), then call again");
    let revocation_assertion = signer.sign(server.revocation_url())?;
    let [kind, jwt] = revocation_assertion.form_params();
    let revoked = http
        .post(server.revocation_url())
        .form(&[("token", bearer), kind, jwt])
        .send()
        .await?;
    println!("   POST /revoke: {}", revoked.status());
    let answer = introspect_as_rs(&http, &server, &rs_secret, bearer).await?;
    println!("   introspection now: {answer}");
    checks.expect(
        "inactive after revocation",
        answer == json!({"active": false}),
    );
    println!("   waiting 1.2 s for the guard's cache entry (max TTL 1 s) to expire…");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = http
        .get(format!("{fhir}/Patient/example"))
        .bearer_auth(bearer)
        .send()
        .await?;
    let after_status = after.status();
    let challenge = header_text(after.headers());
    println!("   GET /fhir/Patient/example: {after_status}");
    println!("   WWW-Authenticate: {challenge}");
    checks.expect(
        "revoked token refused: 401 invalid_token",
        after_status == 401 && challenge.contains("invalid_token"),
    );

    println!("\nSummary");
    println!(
        "   authorization server saw {} token request(s), {} introspection(s), {} revocation(s)",
        server.token_request_count(),
        server.introspection_count(),
        server.revocation_count()
    );
    server.shutdown().await;
    if checks.failed.is_empty() {
        println!("   all {} checks passed", checks.passed);
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed: {}",
            checks.failed.len(),
            checks.failed.join("; ")
        )
        .into())
    }
}

/// A random per-run secret for the demo resource server.
fn smart_guard_secret() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

fn header_text(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_owned()
}

async fn start_guarded_fhir(
    http: &reqwest::Client,
    server: &DevServer,
    rs_secret: &str,
) -> Result<String, BoxError> {
    // Everything is on loopback: the demo's proxy-free client keeps HTTP(S)_PROXY out of the way.
    let config = Config::new(server.introspection_url().parse()?, DEMO_RS, rs_secret)
        .with_base_path("/fhir")?
        .with_max_ttl(Duration::from_secs(1))
        .with_http_client(http.clone());
    let app = axum::Router::new()
        .nest(
            "/fhir",
            FhirStore::with_samples()
                .with_token_url(server.token_url())
                .with_introspection_url(server.introspection_url())
                .with_revocation_url(server.revocation_url())
                .router(),
        )
        .layer(SmartGuardLayer::new(config)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/fhir", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("fhir server stopped: {e}");
        }
    });
    Ok(base)
}

async fn introspect_as_rs(
    http: &reqwest::Client,
    server: &DevServer,
    rs_secret: &str,
    token: &str,
) -> Result<Value, BoxError> {
    Ok(http
        .post(server.introspection_url())
        .basic_auth(DEMO_RS, Some(rs_secret))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await?
        .json()
        .await?)
}
