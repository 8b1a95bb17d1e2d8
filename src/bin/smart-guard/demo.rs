//! `smart-guard demo`: the whole flow on loopback, step by step.

use std::time::Duration;

use serde_json::{Value, json};
use smart_guard::client::{
    AssertionSigner, GRANT_TYPE_CLIENT_CREDENTIALS, KeyPair, SigningAlg, TokenResponse,
};
use smart_guard::dev_server::fhir_store::FhirStore;
use smart_guard::dev_server::{
    ClientRegistration, DevServer, JwksSource, ResourceServerRegistration,
};
use smart_guard::{Config, SmartGuardLayer};

use crate::token::token_json;
use crate::{BoxError, pretty};

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

pub(crate) async fn demo() -> Result<(), BoxError> {
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
