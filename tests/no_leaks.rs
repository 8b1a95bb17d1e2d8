//! No secret in any output: every log line (TRACE and up, spans included) across integration and
//! fault scenarios, and the `Debug` (and `Display`) of every configuration, claims, token and
//! error type, are free of access tokens, the client secret (raw, form-encoded and inside the
//! base64 Basic credentials), client assertions and private key material.

mod support;

use std::time::Duration;

use axum::{Json, Router, response::IntoResponse, routing};
use base64::Engine as _;
use serde_json::json;
use smart_guard::{ClientAuth, Config, SmartGuardLayer, VerifiedClaims};
use support::{Behaviour, Logs, MockAs, RS_CLIENT_ID, RS_SECRET, active, http, serve};

const VALID: &str = "valid-7f3a9c1e.Tok_en~ABC";
const INACTIVE: &str = "inactive-88d2b0e4.Tok_en~DEF";
const UNKNOWN: &str = "unknown-5a1c77f2.Tok_en~GHI";
const FAILING: &str = "failing-19e0c3aa.Tok_en~JKL";

/// Everything that must never show up.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn new() -> Self {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(RS_CLIENT_ID),
            encode(RS_SECRET)
        ));
        let mut list = vec![
            ("client secret".to_owned(), RS_SECRET.to_owned()),
            ("form-encoded client secret".to_owned(), encode(RS_SECRET)),
            ("basic credentials".to_owned(), basic),
        ];
        for token in [VALID, INACTIVE, UNKNOWN, FAILING] {
            list.push((format!("token {token}"), token.to_owned()));
            list.push((format!("form-encoded token {token}"), encode(token)));
        }
        Self(list)
    }

    fn add(&mut self, label: impl Into<String>, secret: impl Into<String>) {
        let secret = secret.into();
        assert!(
            secret.len() >= 16,
            "a secret short enough to match by chance"
        );
        self.0.push((label.into(), secret));
    }

    fn assert_absent(&self, what: &str, text: &str) {
        for (label, secret) in &self.0 {
            assert!(!text.contains(secret.as_str()), "{label} appears in {what}");
        }
    }
}

/// The FHIR routes, with the handler answering the claims' `Debug`.
fn debug_routes() -> Router {
    let debug = |claims: Option<VerifiedClaims>| async move {
        Json(json!({ "debug": format!("{claims:?}") })).into_response()
    };
    Router::new().route("/{*rest}", routing::get(debug))
}

async fn guarded(config: Config) -> (String, SmartGuardLayer) {
    let layer = SmartGuardLayer::new(config).expect("layer");
    let (base, task) = serve(
        Router::new()
            .nest("/fhir", debug_routes())
            .layer(layer.clone()),
    )
    .await;
    std::mem::forget(task);
    (base, layer)
}

async fn get(base: &str, token: &str) -> (u16, String) {
    let response = http()
        .get(format!("{base}/fhir/Patient/1"))
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// Runs every scenario under a TRACE subscriber (current-thread runtime: the spawned servers
/// and clients log into it too) and checks the captured output.
#[tokio::test]
async fn no_log_line_at_any_level_holds_a_secret() {
    let logs = Logs::default();
    let _default = tracing::subscriber::set_default(logs.subscriber());
    let mut secrets = Secrets::new();
    let mut outputs = Vec::new();

    let auth = MockAs::start().await;
    auth.answer(VALID, active("system/Patient.rs"));
    auth.answer(INACTIVE, json!({ "active": false }));
    for (label, client_auth) in [
        ("basic", ClientAuth::ClientSecretBasic),
        ("post", ClientAuth::ClientSecretPost),
    ] {
        let (base, layer) = guarded(
            auth.config()
                .with_client_auth(client_auth)
                .with_timeouts(Duration::from_millis(300), Duration::from_millis(300))
                .with_max_ttl(Duration::from_secs(1)),
        )
        .await;
        auth.behave(Behaviour::Normal);
        for (token, status) in [(VALID, 200), (VALID, 200), (INACTIVE, 401), (UNKNOWN, 401)] {
            let (got, body) = get(&base, token).await;
            assert_eq!(got, status, "{label} {token}");
            outputs.push((format!("{label} response to {token}"), body));
        }
        for behaviour in [
            Behaviour::Status(500),
            Behaviour::Status(401),
            Behaviour::Raw("garbage"),
            Behaviour::Raw(r#"{"active":true,"exp":"x"}"#),
            Behaviour::TruncatedBody,
            Behaviour::Hang,
        ] {
            auth.behave(behaviour);
            let (got, body) = get(&base, FAILING).await;
            assert_eq!(got, 503, "{label}");
            outputs.push((format!("{label} 503"), body));
        }
        auth.stop();
        assert_eq!(get(&base, FAILING).await.0, 503);
        auth.restart().await;
        outputs.push((format!("{label} layer Debug"), format!("{layer:?}")));
    }
    // Our own credentials rejected: the misconfiguration error line.
    let wrong = Config::new(
        auth.url().parse().expect("url"),
        RS_CLIENT_ID,
        "wrong-secret-0123456789",
    )
    .with_base_path("/fhir")
    .expect("base");
    secrets.add("wrong secret", "wrong-secret-0123456789");
    let (base, _) = guarded(wrong).await;
    auth.behave(Behaviour::Normal);
    assert_eq!(get(&base, VALID).await.0, 503);

    #[cfg(feature = "client")]
    {
        use smart_guard::client::{KeyPair, SigningAlg};
        let key = KeyPair::generate(SigningAlg::Es384).expect("key");
        for line in key
            .private_key_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
        {
            secrets.add("private key PEM", line);
        }
        let (base, _) = guarded(
            auth.config()
                .with_client_auth(ClientAuth::PrivateKeyJwt)
                .with_private_key(key),
        )
        .await;
        // The mock knows no keys: the AS refuses the assertion (503), after it was sent.
        assert_eq!(get(&base, VALID).await.0, 503);
        let assertion = auth
            .last_form()
            .into_iter()
            .find(|(k, _)| k == "client_assertion")
            .map(|(_, v)| v)
            .expect("an assertion was sent");
        secrets.add("client assertion", assertion.clone());
        // Its signature alone (the part that makes it a credential).
        secrets.add(
            "client assertion signature",
            assertion.rsplit('.').next().expect("jwt").to_owned(),
        );
    }

    let text = logs.text();
    for expected in [
        "smart_guard",
        "introspection failed",
        "rejected our credentials",
        "TRACE",
    ] {
        assert!(
            text.contains(expected),
            "the capture works: no {expected:?} in\n{text}"
        );
    }
    secrets.assert_absent("the logs", &text);
    for (what, output) in &outputs {
        secrets.assert_absent(what, output);
    }
}

#[test]
fn debug_and_display_of_every_public_type_redact_secrets() {
    #[cfg_attr(not(feature = "client"), allow(unused_mut))]
    let mut secrets = Secrets::new();
    let config = Config::new(
        "http://127.0.0.1:9/introspect".parse().expect("url"),
        RS_CLIENT_ID,
        RS_SECRET,
    );
    let mut outputs = vec![("Config".to_owned(), format!("{config:?}"))];
    let layer = SmartGuardLayer::new(config.clone()).expect("layer");
    outputs.push(("SmartGuardLayer".into(), format!("{layer:?}")));
    outputs.push((
        "ClientAuth::ClientSecretPost Config".into(),
        format!(
            "{:?}",
            config
                .clone()
                .with_client_auth(ClientAuth::ClientSecretPost)
        ),
    ));

    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {VALID}")).expect("header"),
    );
    let token = smart_guard::extract_bearer(&headers, None, 8192).expect("token");
    outputs.push(("BearerToken".into(), format!("{token:?}")));

    // Config errors name the variable, never the secret, even next to a bad value.
    let env = std::collections::HashMap::from([
        ("SMART_GUARD_INTROSPECTION_URL", "not a url"),
        ("SMART_GUARD_CLIENT_ID", RS_CLIENT_ID),
        ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
    ]);
    let err = Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).expect_err("bad url");
    outputs.push(("ConfigError".into(), format!("{err} {err:?}")));

    #[cfg(feature = "client")]
    {
        use smart_guard::client::{AccessToken, AssertionSigner, KeyPair, SigningAlg};
        for alg in [SigningAlg::Es384, SigningAlg::Rs384] {
            let key = KeyPair::generate(alg).expect("key");
            for line in key
                .private_key_pem()
                .lines()
                .filter(|l| !l.starts_with("-----"))
            {
                secrets.add("private key PEM", line);
            }
            outputs.push(("KeyPair".into(), format!("{key:?}")));
            let key = std::sync::Arc::new(key);
            let signer = AssertionSigner::new("client", std::sync::Arc::clone(&key));
            outputs.push(("AssertionSigner".into(), format!("{signer:?}")));
            let assertion = signer.sign("https://as.example/token").expect("sign");
            secrets.add(
                "assertion signature",
                assertion
                    .as_str()
                    .rsplit('.')
                    .next()
                    .expect("jwt")
                    .to_owned(),
            );
            outputs.push(("ClientAssertion".into(), format!("{assertion:?}")));
            let with_key = config
                .clone()
                .with_client_auth(ClientAuth::PrivateKeyJwt)
                .with_private_key(key);
            outputs.push(("Config with a key".into(), format!("{with_key:?}")));
        }
        let own = AccessToken::new(UNKNOWN);
        outputs.push(("AccessToken".into(), format!("{own:?}")));
    }

    for (what, output) in &outputs {
        secrets.assert_absent(what, output);
    }
}
