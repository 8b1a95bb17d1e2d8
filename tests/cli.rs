//! The `smart-guard` binary: keygen output, token and introspect against a dev AS, the dev-server
//! command with a clients file, and the demo.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use smart_guard::client::{AssertionSigner, Jwks, KeyPair, request_token};
use smart_guard::dev_server::{
    ClientRegistration, DevServer, JwksSource, ResourceServerRegistration,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_smart-guard");

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("smart-guard-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SMART_GUARD_CLIENT_SECRET")
        .envs(envs.iter().copied())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run smart-guard")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn keygen(dir: &Path, alg: &str) -> (Output, Jwks) {
    let out = dir.to_str().expect("utf-8 path");
    let output = run(&["keygen", "--alg", alg, "--out", out], &[]).await;
    assert!(output.status.success(), "keygen {alg}: {output:?}");
    let jwks: Jwks = serde_json::from_value(stdout_json(&output)).expect("stdout is a JWKS");
    (output, jwks)
}

#[tokio::test]
async fn keygen_prints_a_jwks_whose_kid_is_the_rfc7638_thumbprint() {
    for (alg, kty) in [("RS384", "RSA"), ("ES384", "EC")] {
        let scratch = Scratch::new(&format!("keygen-{alg}"));
        let (_, jwks) = keygen(scratch.path(), alg).await;
        assert_eq!(jwks.keys.len(), 1);
        let jwk = &jwks.keys[0];
        assert_eq!(jwk.kty, kty);
        assert_eq!(jwk.alg.as_deref(), Some(alg));
        assert_eq!(jwk.key_use.as_deref(), Some("sig"));
        assert!(jwk.kid.is_some());
        assert_eq!(
            jwk.kid,
            jwk.thumbprint(),
            "{alg}: kid is the RFC 7638 thumbprint"
        );

        let written: Jwks = serde_json::from_str(
            &std::fs::read_to_string(scratch.path().join("jwks.json")).expect("jwks.json"),
        )
        .expect("jwks.json parses");
        assert_eq!(written, jwks);
        let key_path = scratch.path().join("private-key.pem");
        let pem = std::fs::read_to_string(&key_path).expect("private-key.pem");
        let key = KeyPair::from_pkcs8_pem(&pem).expect("key loads");
        assert_eq!(Some(key.kid()), jwk.kid.as_deref());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{alg}: private key is owner-only");
        }
    }
}

#[tokio::test]
async fn keygen_refuses_to_overwrite_a_private_key_without_force() {
    let scratch = Scratch::new("keygen-force");
    let (_, first) = keygen(scratch.path(), "ES384").await;
    let out = scratch.path().to_str().expect("utf-8 path");
    let again = run(&["keygen", "--alg", "ES384", "--out", out], &[]).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{again:?}"
    );
    let pem = std::fs::read_to_string(scratch.path().join("private-key.pem")).expect("pem");
    assert_eq!(
        Some(KeyPair::from_pkcs8_pem(&pem).expect("key").kid()),
        first.keys[0].kid.as_deref(),
        "the old key is untouched"
    );
    let forced = run(&["keygen", "--alg", "ES384", "--out", out, "--force"], &[]).await;
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(
        stdout_json(&forced)["keys"][0]["kid"],
        json!(first.keys[0].kid)
    );
}

#[tokio::test]
async fn keygen_rejects_other_algorithms() {
    let scratch = Scratch::new("keygen-alg");
    let out = scratch.path().to_str().expect("utf-8 path");
    let output = run(&["keygen", "--alg", "RS256", "--out", out], &[]).await;
    assert!(!output.status.success());
    assert!(!scratch.path().join("private-key.pem").exists());
}

/// `smart-guard introspect` against the dev server as resource server `rs`, the secret in the
/// environment, `args` after the fixed ones.
async fn introspect(server: &DevServer, args: &[&str], secret: &str) -> Output {
    let mut all = vec![
        "introspect",
        "--url",
        server.introspection_url(),
        "--client-id",
        "rs",
    ];
    all.extend_from_slice(args);
    run(&all, &[("SMART_GUARD_CLIENT_SECRET", secret)]).await
}

#[tokio::test]
async fn token_and_introspect_commands_work_against_a_dev_server() {
    let scratch = Scratch::new("token");
    let (_, jwks) = keygen(scratch.path(), "RS384").await;
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new("cli-client", JwksSource::inline(jwks))
                .with_scopes(["system/Patient.rs"]),
        )
        .with_resource_server(ResourceServerRegistration::with_secret("rs", "cli s3cret"))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let key = scratch.path().join("private-key.pem");
    let key = key.to_str().expect("utf-8 path");
    let token_url = server.token_url().to_owned();
    let args = [
        "token",
        "--token-url",
        &token_url,
        "--client-id",
        "cli-client",
        "--key",
        key,
        "--scope",
        "system/Patient.rs system/Observation.rs",
    ];
    let output = run(&args, &[]).await;
    assert!(output.status.success(), "{output:?}");
    let answer = stdout_json(&output);
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["expires_in"], 300);
    assert_eq!(answer["scope"], "system/Patient.rs");
    let token = answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert_eq!(server.tokens_issued(), 1);

    for auth in ["basic", "post"] {
        let output = introspect(&server, &["--auth", auth, &token], "cli s3cret").await;
        assert!(output.status.success(), "{auth}: {output:?}");
        let answer = stdout_json(&output);
        assert_eq!(answer["active"], true, "{auth}");
        assert_eq!(answer["client_id"], "cli-client");
        assert_eq!(answer["scope"], "system/Patient.rs");
    }
    let output = introspect(&server, &[&token], "wrong").await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid_client"),
        "{output:?}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("wrong"),
        "no secret in errors"
    );
    assert_eq!(server.introspection_count(), 3);
}

#[tokio::test]
async fn introspect_takes_a_token_that_begins_with_a_hyphen() {
    let server = DevServer::builder()
        .with_resource_server(ResourceServerRegistration::with_secret("rs", "cli s3cret"))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    // base64url tokens begin with `-` one time in 64; oidc-provider handed CI one such token.
    let output = introspect(
        &server,
        &["-W0YOqhG9vU3b6lFh2xNqkTzJ1cE5pRa8sDwXmLyKfI"],
        "cli s3cret",
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_json(&output)["active"], false);
    assert_eq!(server.introspection_count(), 1);
}

#[tokio::test]
async fn token_command_reports_an_oauth_error_and_fails() {
    let scratch = Scratch::new("token-error");
    let (_, jwks) = keygen(scratch.path(), "ES384").await;
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new("cli-client", JwksSource::inline(jwks))
                .with_scopes(["system/Patient.rs"]),
        )
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let key = scratch.path().join("private-key.pem");
    let output = run(
        &[
            "token",
            "--token-url",
            server.token_url(),
            "--client-id",
            "cli-client",
            "--key",
            key.to_str().expect("utf-8 path"),
            "--scope",
            "system/Encounter.rs",
        ],
        &[],
    )
    .await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"invalid_scope\""), "{stderr}");
}

#[tokio::test]
async fn dev_server_command_serves_the_clients_of_a_json_file() {
    let scratch = Scratch::new("dev-server");
    let key = KeyPair::generate(smart_guard::client::SigningAlg::Es384).expect("keygen");
    std::fs::create_dir_all(scratch.path()).expect("mkdir");
    let clients = scratch.path().join("clients.json");
    let file = json!({
        "token_lifetime_secs": 120,
        "clients": [{ "client_id": "file-client", "scope": "system/Patient.rs system/Observation.rs", "jwks": key.jwks() }],
        "resource_servers": [{ "client_id": "rs", "client_secret": "s" }]
    });
    std::fs::write(&clients, file.to_string()).expect("write clients file");
    let mut child = Command::new(BIN)
        .args([
            "dev-server",
            "--clients",
            clients.to_str().expect("utf-8"),
            "--addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dev-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("dev-server starts in time")
        .expect("read")
        .expect("a line");
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("base url in the first line")
        .to_owned();
    assert!(first.contains("development and testing only"), "{first}");

    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let config: Value = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        config["scopes_supported"],
        json!(["system/Observation.rs", "system/Patient.rs"])
    );
    let token_url = config["token_endpoint"].as_str().expect("token endpoint");
    let token = request_token(
        &http,
        token_url,
        &AssertionSigner::new("file-client", key),
        "system/Patient.rs",
    )
    .await
    .expect("token from the file's client");
    assert_eq!(token.expires_in, Some(120));
    child.kill().await.expect("kill");
}

#[tokio::test]
async fn demo_runs_every_step_and_exits_0() {
    let output = run(&["demo"], &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "\"kty\": \"EC\"",
        "signature: <elided>",
        "(43 chars, elided)",
        "403 Forbidden",
        "insufficient_scope",
        "401 Unauthorized",
        "invalid_token",
        "all 9 checks passed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("✗"));
}

/// Runs `smart-guard` with only `envs` from the `SMART_GUARD_*` family, `stdin` on its standard
/// input; returns the output and stdout + stderr as text.
async fn run_clean(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> (Output, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut command = Command::new(BIN);
    for (var, _) in std::env::vars() {
        if var.starts_with("SMART_GUARD_") {
            command.env_remove(var);
        }
    }
    let mut child = command
        .args(args)
        .envs(envs.iter().copied())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn smart-guard");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("run smart-guard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

const RS_SECRET: &str = "check s3cret value";

/// A dev AS with resource server `rs` (secret [`RS_SECRET`]) and backend client `cli-client`.
async fn check_server(jwks: Jwks) -> DevServer {
    DevServer::builder()
        .with_client(
            ClientRegistration::new("cli-client", JwksSource::inline(jwks))
                .with_scopes(["system/Patient.rs"]),
        )
        .with_resource_server(ResourceServerRegistration::with_secret("rs", RS_SECRET))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server")
}

#[tokio::test]
async fn check_against_the_dev_server_exits_0_and_prints_the_settings_without_the_secret() {
    let key = KeyPair::generate(smart_guard::client::SigningAlg::Es384).expect("key");
    let server = check_server(key.jwks()).await;
    let (output, text) = run_clean(
        &["check"],
        &[
            ("SMART_GUARD_INTROSPECTION_URL", server.introspection_url()),
            ("SMART_GUARD_CLIENT_ID", "rs"),
            ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
            ("SMART_GUARD_CACHE_MAX_TTL_SECS", "30"),
        ],
        "",
    )
    .await;
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(RS_SECRET), "{text}");
    for expected in [
        "SMART_GUARD_CLIENT_SECRET",
        "<redacted>",
        "SMART_GUARD_CLIENT_AUTH",
        "client_secret_basic",
        "SMART_GUARD_NEGATIVE_TTL_SECS",
        "discovery: not configured",
        server.introspection_url(),
        "active: false (inactive): the AS accepted our credentials",
        "check: ok",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let ttl = text
        .lines()
        .find(|l| l.contains("SMART_GUARD_CACHE_MAX_TTL_SECS"))
        .expect("the TTL line");
    assert!(ttl.trim_end().ends_with(" 30"), "{ttl}");
    assert_eq!(server.introspection_count(), 1, "one call");
}

#[tokio::test]
async fn check_discovers_the_endpoints_from_the_issuer() {
    let key = KeyPair::generate(smart_guard::client::SigningAlg::Es384).expect("key");
    let server = check_server(key.jwks()).await;
    let (output, text) = run_clean(
        &["check"],
        &[
            ("SMART_GUARD_ISSUER", server.base_url()),
            ("SMART_GUARD_CLIENT_ID", "rs"),
            ("SMART_GUARD_CLIENT_AUTH", "client_secret_post"),
            ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
        ],
        "",
    )
    .await;
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("discovery: reading the metadata of"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "introspection_endpoint: {}",
            server.introspection_url()
        )),
        "{text}"
    );
    assert!(text.contains("check: ok"), "{text}");
}

#[tokio::test]
async fn check_with_a_wrong_secret_exits_1_and_says_the_credentials_were_rejected() {
    let key = KeyPair::generate(smart_guard::client::SigningAlg::Es384).expect("key");
    let server = check_server(key.jwks()).await;
    let (output, text) = run_clean(
        &["check"],
        &[
            ("SMART_GUARD_INTROSPECTION_URL", server.introspection_url()),
            ("SMART_GUARD_CLIENT_ID", "rs"),
            ("SMART_GUARD_CLIENT_SECRET", "wrong-secret-value"),
        ],
        "",
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("credentials rejected"), "{text}");
    assert!(text.contains("HTTP 401, invalid_client"), "{text}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
    assert!(!text.contains("check: ok"), "{text}");
}

#[tokio::test]
async fn check_with_a_bad_variable_exits_1_naming_it() {
    let (output, text) = run_clean(
        &["check"],
        &[
            (
                "SMART_GUARD_INTROSPECTION_URL",
                "http://127.0.0.1:9/introspect",
            ),
            ("SMART_GUARD_CLIENT_ID", "rs"),
            ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
            ("SMART_GUARD_CACHE_MAX_TTL_SECS", "sixty"),
        ],
        "",
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("configuration: SMART_GUARD_CACHE_MAX_TTL_SECS is invalid"),
        "{text}"
    );
    assert!(!text.contains(RS_SECRET), "{text}");
}

#[tokio::test]
async fn check_says_when_the_as_is_unreachable() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/introspect", listener.local_addr().expect("addr"))
    };
    let (output, text) = run_clean(
        &["check"],
        &[
            ("SMART_GUARD_INTROSPECTION_URL", &closed),
            ("SMART_GUARD_CLIENT_ID", "rs"),
            ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
        ],
        "",
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("AS unreachable at {closed}")),
        "{text}"
    );
}

#[tokio::test]
async fn check_with_a_valid_token_on_stdin_reports_it_active_and_never_prints_it() {
    let key = KeyPair::generate(smart_guard::client::SigningAlg::Es384).expect("key");
    let server = check_server(key.jwks()).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let token = request_token(
        &http,
        server.token_url(),
        &AssertionSigner::new("cli-client", key),
        "system/Patient.rs",
    )
    .await
    .expect("token");
    let token = token.access_token.as_str();
    let envs = [
        ("SMART_GUARD_INTROSPECTION_URL", server.introspection_url()),
        ("SMART_GUARD_CLIENT_ID", "rs"),
        ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
    ];
    let (output, text) = run_clean(&["check", "--token-stdin"], &envs, &format!("{token}\n")).await;
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(token), "the token is never printed:\n{text}");
    for expected in [
        "active: true",
        "client_id: cli-client",
        "scope: system/Patient.rs",
        "exp: ",
        "check: ok",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let (output, text) = run_clean(&["check", "--token-stdin"], &envs, "made-up-token\n").await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "an inactive token fails: {text}"
    );
    assert!(text.contains("not usable: inactive"), "{text}");
}

#[tokio::test]
async fn introspect_authenticates_with_private_key_jwt_against_the_dev_server() {
    let scratch = Scratch::new("introspect-jwt");
    let (_, rs_jwks) = keygen(scratch.path(), "ES384").await;
    let backend = KeyPair::generate(smart_guard::client::SigningAlg::Rs384).expect("key");
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new("cli-client", JwksSource::inline(backend.jwks()))
                .with_scopes(["system/Patient.rs"]),
        )
        .with_resource_server(ResourceServerRegistration::with_jwks(
            "rs-jwt",
            JwksSource::inline(rs_jwks),
        ))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let token = request_token(
        &http,
        server.token_url(),
        &AssertionSigner::new("cli-client", backend),
        "system/Patient.rs",
    )
    .await
    .expect("token");
    let key = scratch.path().join("private-key.pem");
    let key = key.to_str().expect("utf-8 path");
    // Flags only, and then the same settings from the environment.
    let flags = [
        "introspect",
        "--url",
        server.introspection_url(),
        "--client-id",
        "rs-jwt",
        "--auth",
        "private_key_jwt",
        "--key",
        key,
        token.access_token.as_str(),
    ];
    let (output, text) = run_clean(&flags, &[], "").await;
    assert!(output.status.success(), "{text}");
    let answer = stdout_json(&output);
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["client_id"], "cli-client");
    assert_eq!(answer["scope"], "system/Patient.rs");
    let envs = [
        ("SMART_GUARD_INTROSPECTION_URL", server.introspection_url()),
        ("SMART_GUARD_CLIENT_ID", "rs-jwt"),
        ("SMART_GUARD_CLIENT_AUTH", "private_key_jwt"),
        ("SMART_GUARD_CLIENT_KEY_FILE", key),
    ];
    let (output, text) = run_clean(&["introspect", "made-up-token"], &envs, "").await;
    assert!(output.status.success(), "{text}");
    assert_eq!(stdout_json(&output)["active"], false);
    let (output, text) = run_clean(&["check"], &envs, "").await;
    assert!(output.status.success(), "{text}");
    assert!(text.contains("SMART_GUARD_CLIENT_KEY_FILE"), "{text}");
    assert!(text.contains(key), "the key file's path is shown: {text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert_eq!(server.introspection_count(), 3);
}
