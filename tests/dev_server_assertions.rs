//! The development authorization server's token endpoint: every client assertion check, scope
//! handling, grant type handling, and JWKS-by-URL caching, over real loopback HTTP.
#![cfg(feature = "dev-server")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use smart_guard::client::{AssertionSigner, CLIENT_ASSERTION_TYPE, KeyPair, SigningAlg};
use smart_guard::dev_server::{ClientRegistration, DevServer, JwksSource};

const CLIENT: &str = "backend-1";
const ALLOWED: &str = "system/Patient.rs system/Observation.rs";

struct Fixture {
    server: DevServer,
    rsa: KeyPair,
    ec: KeyPair,
    http: reqwest::Client,
}

async fn fixture() -> Fixture {
    let rsa = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
    let ec = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let jwks =
        smart_guard::client::Jwks::new(vec![rsa.public_jwk().clone(), ec.public_jwk().clone()]);
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::inline(jwks)).with_scope_string(ALLOWED),
        )
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server starts");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    Fixture {
        server,
        rsa,
        ec,
        http,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

fn good_claims(aud: &str) -> Value {
    let now = now();
    json!({ "iss": CLIENT, "sub": CLIENT, "aud": aud, "jti": jti(), "iat": now, "exp": now + 120 })
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    h
}

fn sign(key: &KeyPair, header: &Header, claims: &Value) -> String {
    let pem = key.private_key_pem();
    let encoding_key = match key.alg() {
        SigningAlg::Rs384 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    }
    .expect("encoding key");
    jsonwebtoken::encode(header, claims, &encoding_key).expect("sign")
}

impl Fixture {
    fn rsa_assertion(&self, claims: &Value) -> String {
        sign(&self.rsa, &header(Algorithm::RS384, self.rsa.kid()), claims)
    }

    async fn post_token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.server.token_url())
            .form(form)
            .send()
            .await
            .expect("token request");
        let status = response.status().as_u16();
        let cache_control = response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        assert_eq!(
            cache_control.as_deref(),
            Some("no-store"),
            "token answers are never cached"
        );
        let body = response.json::<Value>().await.expect("json body");
        (status, body)
    }

    async fn token_with(&self, assertion: &str, scope: &str) -> (u16, Value) {
        self.post_token(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ])
        .await
    }
}

fn assert_invalid_client(case: &str, (status, body): &(u16, Value), reason: &str) {
    assert_eq!(*status, 401, "{case}: {body}");
    assert_eq!(body["error"], "invalid_client", "{case}: {body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(reason),
        "{case}: expected {reason:?} in {description:?}"
    );
}

#[tokio::test]
async fn a_well_formed_assertion_gets_an_opaque_bearer_token_with_the_allowed_scopes() {
    let f = fixture().await;
    for key in [&f.rsa, &f.ec] {
        let assertion = AssertionSigner::new(
            CLIENT,
            KeyPair::from_pkcs8_pem(&key.private_key_pem()).expect("reload"),
        )
        .sign(f.server.token_url())
        .expect("sign");
        let (status, body) = f
            .token_with(assertion.as_str(), "system/Patient.rs system/Encounter.rs")
            .await;
        assert_eq!(status, 200, "{} {body}", key.alg());
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["scope"], "system/Patient.rs", "requested ∩ allowed");
        let token = body["access_token"].as_str().expect("token");
        assert!(!token.contains('.'), "opaque, not a JWT");
        assert!(
            URL_SAFE_NO_PAD.decode(token).is_ok_and(|b| b.len() >= 16),
            "base64url, >= 128 bits"
        );
    }
    assert_eq!(f.server.tokens_issued(), 2);
}

#[tokio::test]
async fn every_bad_assertion_is_401_invalid_client() {
    let f = fixture().await;
    let token_url = f.server.token_url().to_owned();
    let kid = f.rsa.kid().to_owned();
    let claims = || good_claims(&token_url);
    let with = |name: &str, value: Value| {
        let mut c = claims();
        c[name] = value;
        c
    };
    let without = |name: &str| {
        let mut c = claims();
        c.as_object_mut().map(|o| o.remove(name));
        c
    };
    let other_key = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
    let mut tampered = f.rsa_assertion(&claims());
    let sig_start = tampered.rfind('.').map_or(0, |i| i + 1);
    let flip_at = sig_start + 10;
    let flipped = if &tampered[flip_at..=flip_at] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(flip_at..=flip_at, flipped);
    let none_jwt = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let hs256 = jsonwebtoken::encode(
        &header(Algorithm::HS256, &kid),
        &claims(),
        &EncodingKey::from_secret(f.rsa.public_key_pem().as_bytes()),
    )
    .expect("sign hs256");
    let unknown_client = {
        let mut c = claims();
        c["iss"] = json!("nobody");
        c["sub"] = json!("nobody");
        f.rsa_assertion(&c)
    };
    let mut foreign_jku = header(Algorithm::RS384, &kid);
    foreign_jku.jku = Some("https://attacker.example/jwks.json".to_owned());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong kid",
            sign(
                &f.rsa,
                &header(Algorithm::RS384, "not-a-registered-kid"),
                &claims(),
            ),
            "kid",
        ),
        ("unknown client", unknown_client, "unknown client"),
        ("alg none", none_jwt, "well-formed"),
        (
            "HS256 keyed with the public key PEM",
            hs256,
            "RS384 or ES384",
        ),
        (
            "RS256 with an RS384 key",
            sign(&f.rsa, &header(Algorithm::RS256, &kid), &claims()),
            "RS384 or ES384",
        ),
        (
            "ES384 naming an RSA key",
            sign(&f.ec, &header(Algorithm::ES384, &kid), &claims()),
            "does not match the key",
        ),
        (
            "expired",
            f.rsa_assertion(&with("exp", json!(now() - 5))),
            "expired",
        ),
        (
            "exp more than five minutes ahead",
            f.rsa_assertion(&with("exp", json!(now() + 400))),
            "five minutes",
        ),
        ("missing exp", f.rsa_assertion(&without("exp")), "exp"),
        ("missing jti", f.rsa_assertion(&without("jti")), "jti"),
        (
            "wrong aud",
            f.rsa_assertion(&with("aud", json!(f.server.base_url()))),
            "aud",
        ),
        (
            "iss differs from sub",
            f.rsa_assertion(&with("sub", json!("someone-else"))),
            "iss and sub",
        ),
        (
            "signed by another key under the registered kid",
            sign(&other_key, &header(Algorithm::RS384, &kid), &claims()),
            "signature",
        ),
        ("tampered signature", tampered, "signature"),
        ("not a jwt", "garbage".to_owned(), "well-formed"),
        (
            "jku other than a registered jwks url",
            sign(&f.rsa, &foreign_jku, &claims()),
            "jku",
        ),
    ];
    for (case, assertion, reason) in &cases {
        let answer = f.token_with(assertion, ALLOWED).await;
        assert_invalid_client(case, &answer, reason);
    }
    assert_eq!(f.server.tokens_issued(), 0);
    // The control: the same fixture accepts a good assertion.
    let (status, body) = f.token_with(&f.rsa_assertion(&claims()), ALLOWED).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_replayed_jti_is_401_invalid_client() {
    let f = fixture().await;
    let assertion = f.rsa_assertion(&good_claims(f.server.token_url()));
    let (status, body) = f.token_with(&assertion, ALLOWED).await;
    assert_eq!(status, 200, "{body}");
    let replay = f.token_with(&assertion, ALLOWED).await;
    assert_invalid_client("replay", &replay, "already used");
    assert_eq!(f.server.tokens_issued(), 1);
}

#[tokio::test]
async fn missing_or_foreign_client_authentication_is_401_invalid_client() {
    let f = fixture().await;
    let assertion = f.rsa_assertion(&good_claims(f.server.token_url()));
    let answer = f
        .post_token(&[("grant_type", "client_credentials"), ("scope", ALLOWED)])
        .await;
    assert_invalid_client("no assertion", &answer, "required");
    let answer = f
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("scope", ALLOWED),
            ("client_assertion_type", "urn:example:other"),
            ("client_assertion", &assertion),
        ])
        .await;
    assert_invalid_client("wrong assertion type", &answer, "client_assertion_type");
    let answer = f
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("scope", ALLOWED),
            ("client_id", "someone-else"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .await;
    assert_invalid_client("client_id differs from iss", &answer, "client_id");
}

#[tokio::test]
async fn other_grant_types_are_unsupported_grant_type_and_a_missing_one_is_invalid_request() {
    let f = fixture().await;
    let claims = || good_claims(f.server.token_url());
    for (grant_type, status, error) in [
        (Some("password"), 400, "unsupported_grant_type"),
        (Some("authorization_code"), 400, "unsupported_grant_type"),
        (None, 400, "invalid_request"),
    ] {
        let assertion = f.rsa_assertion(&claims());
        let mut form = vec![
            ("scope", ALLOWED),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ];
        if let Some(g) = grant_type {
            form.push(("grant_type", g));
        }
        let (got_status, body) = f.post_token(&form).await;
        assert_eq!(
            (got_status, body["error"].as_str()),
            (status, Some(error)),
            "{grant_type:?}: {body}"
        );
    }
    assert_eq!(f.server.tokens_issued(), 0);
}

#[tokio::test]
async fn scopes_are_granted_by_exact_match_and_none_allowed_is_invalid_scope() {
    let f = fixture().await;
    for (requested, expected) in [
        ("system/Patient.rs", Ok("system/Patient.rs")),
        (
            "system/Observation.rs  system/Patient.rs system/Patient.rs",
            Ok("system/Observation.rs system/Patient.rs"),
        ),
        ("system/Patient.r", Err("invalid_scope")),
        ("system/Patient.cruds", Err("invalid_scope")),
        ("SYSTEM/Patient.rs", Err("invalid_scope")),
        ("", Err("invalid_scope")),
    ] {
        let assertion = f.rsa_assertion(&good_claims(f.server.token_url()));
        let (status, body) = f.token_with(&assertion, requested).await;
        match expected {
            Ok(granted) => {
                assert_eq!(status, 200, "{requested}: {body}");
                assert_eq!(body["scope"], granted, "{requested}");
            }
            Err(error) => {
                assert_eq!(status, 400, "{requested}: {body}");
                assert_eq!(body["error"], error, "{requested}");
            }
        }
    }
}

#[tokio::test]
async fn malformed_token_requests_are_invalid_request() {
    let f = fixture().await;
    let assertion = f.rsa_assertion(&good_claims(f.server.token_url()));
    let (status, body) = f
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
            ("scope", ALLOWED),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "repeated parameter: {body}"
    );
    let response = f
        .http
        .post(f.server.token_url())
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request", "json body: {body}");
}

/// A JWKS endpoint with a fetch counter and a fixed `Cache-Control`.
async fn jwks_host(
    jwks: Value,
    cache_control: &'static str,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let counter = Arc::clone(&counter);
            let jwks = jwks.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", cache_control)], axum::Json(jwks))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits, task)
}

async fn tokens_via_jwks_url(
    cache_control: &'static str,
    requests: usize,
    pause: Option<Duration>,
) -> usize {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let (url, hits, task) = jwks_host(
        serde_json::to_value(key.jwks()).expect("jwks json"),
        cache_control,
    )
    .await;
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::url(url)).with_scope_string(ALLOWED),
        )
        .with_http_client(reqwest::Client::builder().no_proxy().build().expect("http"))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let signer = AssertionSigner::new(CLIENT, key);
    for i in 0..requests {
        if let Some(pause) = pause.filter(|_| i == requests - 1) {
            tokio::time::sleep(pause).await;
        }
        let token = smart_guard::client::request_token(
            &http,
            server.token_url(),
            &signer,
            "system/Patient.rs",
        )
        .await;
        assert!(token.is_ok(), "{cache_control} request {i}: {token:?}");
    }
    task.abort();
    hits.load(Ordering::SeqCst)
}

#[tokio::test]
async fn jwks_by_url_is_fetched_once_within_max_age() {
    assert_eq!(tokens_via_jwks_url("public, max-age=60", 3, None).await, 1);
}

#[tokio::test]
async fn jwks_by_url_with_no_store_or_no_cache_header_is_fetched_every_time() {
    assert_eq!(tokens_via_jwks_url("no-store", 3, None).await, 3);
    assert_eq!(tokens_via_jwks_url("max-age=0", 2, None).await, 2);
}

#[tokio::test]
async fn jwks_by_url_is_fetched_again_after_max_age() {
    assert_eq!(
        tokens_via_jwks_url("max-age=1", 3, Some(Duration::from_millis(1100))).await,
        2
    );
}

#[tokio::test]
async fn an_unreachable_jwks_url_is_401_invalid_client() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    // Port 9 on loopback: nothing listens there in the test environment.
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::url("http://127.0.0.1:9/jwks.json"))
                .with_scope_string(ALLOWED),
        )
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let err = smart_guard::client::request_token(
        &http,
        server.token_url(),
        &AssertionSigner::new(CLIENT, key),
        ALLOWED,
    )
    .await
    .expect_err("no keys");
    assert_eq!(err.status(), Some(401));
    assert_eq!(
        err.oauth_error().map(|e| e.error.as_str()),
        Some("invalid_client")
    );
}

#[tokio::test]
async fn a_jku_equal_to_the_registered_jwks_url_is_accepted() {
    let key = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
    let (url, hits, task) = jwks_host(
        serde_json::to_value(key.jwks()).expect("jwks json"),
        "max-age=60",
    )
    .await;
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::url(url.clone()))
                .with_scope_string(ALLOWED),
        )
        .with_http_client(reqwest::Client::builder().no_proxy().build().expect("http"))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    for (jku, expected) in [(url.as_str(), 200), ("http://127.0.0.1:9/other.json", 401)] {
        let mut h = header(Algorithm::RS384, key.kid());
        h.jku = Some(jku.to_owned());
        let assertion = sign(&key, &h, &good_claims(server.token_url()));
        let response = http
            .post(server.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", ALLOWED),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status().as_u16(), expected, "jku {jku}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the foreign jku was never fetched"
    );
    task.abort();
}
