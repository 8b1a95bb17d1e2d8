//! The client side against the development authorization server, end to end over loopback HTTP:
//! keygen, registration, assertion, token, introspection, revocation, the token-reusing
//! `BackendServicesClient`, and a guarded FHIR server in front of the dev AS.
#![cfg(feature = "dev-server")]

use std::time::Duration;

use axum::Router;
use base64::Engine as _;
use serde_json::{Value, json};
use smart_guard::client::{
    AssertionSigner, BackendServicesClient, ClientErrorKind, KeyPair, OAuthErrorCode, SigningAlg,
    request_token,
};
use smart_guard::dev_server::fhir_store::FhirStore;
use smart_guard::dev_server::{
    ClientRegistration, DevServer, JwksSource, ResourceServerRegistration,
};
use smart_guard::{Config, SmartGuardLayer};

const CLIENT: &str = "backend-1";
const RS: &str = "fhir-rs";
const RS_SECRET: &str = "rs s3cret:with&odd=chars";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

async fn dev_server(key: &KeyPair, lifetime: Option<Duration>) -> DevServer {
    let mut builder = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::inline(key.jwks()))
                .with_scopes(["system/Patient.rs", "system/Observation.rs"]),
        )
        .with_resource_server(ResourceServerRegistration::with_secret(RS, RS_SECRET));
    if let Some(lifetime) = lifetime {
        builder = builder.with_token_lifetime(lifetime);
    }
    builder.spawn("127.0.0.1:0").await.expect("dev server")
}

/// Introspects with `client_secret_basic` (id and secret form-encoded, RFC 6749 §2.3.1).
async fn introspect(server: &DevServer, token: &str) -> (u16, Value) {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(RS), enc(RS_SECRET)));
    let response = http()
        .post(server.introspection_url())
        .header("authorization", format!("Basic {basic}"))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .expect("introspect");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn keygen_register_token_introspect_then_revoke_makes_the_token_inactive() {
    for alg in [SigningAlg::Rs384, SigningAlg::Es384] {
        let key = KeyPair::generate(alg).expect("keygen");
        let server = dev_server(&key, None).await;
        let signer = AssertionSigner::new(CLIENT, key);
        let token = request_token(
            &http(),
            server.token_url(),
            &signer,
            "system/Observation.rs system/Patient.rs system/Encounter.rs",
        )
        .await
        .expect("token");
        assert_eq!(token.token_type, "bearer");
        assert_eq!(token.expires_in, Some(300));
        assert_eq!(
            token.scope.as_deref(),
            Some("system/Observation.rs system/Patient.rs")
        );

        let (status, answer) = introspect(&server, token.access_token.as_str()).await;
        assert_eq!(status, 200, "{alg}: {answer}");
        assert_eq!(answer["active"], true);
        assert_eq!(answer["scope"], "system/Observation.rs system/Patient.rs");
        assert_eq!(answer["client_id"], CLIENT);
        assert_eq!(answer["sub"], CLIENT);
        assert_eq!(answer["iss"], server.base_url());
        assert_eq!(answer["token_type"], "bearer");
        let (iat, exp) = (answer["iat"].as_u64(), answer["exp"].as_u64());
        assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(300));

        let revoked = http()
            .post(server.revocation_url())
            .basic_auth(RS, Some(RS_SECRET))
            .form(&[("token", token.access_token.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), 200);
        let (status, answer) = introspect(&server, token.access_token.as_str()).await;
        assert_eq!((status, answer), (200, json!({"active": false})));
        assert_eq!(server.introspection_count(), 2);
        assert_eq!(server.revocation_count(), 1);
    }
}

#[tokio::test]
async fn unknown_tokens_introspect_inactive_and_revoking_them_is_still_200() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let (status, answer) = introspect(&server, "never-issued").await;
    assert_eq!((status, answer), (200, json!({"active": false})));
    let response = http()
        .post(server.revocation_url())
        .form(&[("token", "never-issued")])
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn introspection_accepts_client_secret_post_and_rejects_bad_credentials_with_401() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let token = server.issue_token(CLIENT, "system/Patient.rs");
    let post = |form: Vec<(&'static str, String)>| {
        let url = server.introspection_url().to_owned();
        async move {
            let r = http().post(url).form(&form).send().await.expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let t = token.as_str().to_owned();
    let (status, body) = post(vec![
        ("token", t.clone()),
        ("client_id", RS.into()),
        ("client_secret", RS_SECRET.into()),
    ])
    .await;
    assert_eq!((status, &body["active"]), (200, &json!(true)), "{body}");
    for (case, form) in [
        (
            "wrong secret",
            vec![
                ("token", t.clone()),
                ("client_id", RS.into()),
                ("client_secret", "nope".into()),
            ],
        ),
        (
            "unknown resource server",
            vec![
                ("token", t.clone()),
                ("client_id", "other".into()),
                ("client_secret", RS_SECRET.into()),
            ],
        ),
        ("no credentials", vec![("token", t.clone())]),
    ] {
        let (status, body) = post(form).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"], "invalid_client", "{case}");
        assert!(
            body.get("active").is_none(),
            "{case}: nothing about the token"
        );
    }
    let wrong_basic = http()
        .post(server.introspection_url())
        .basic_auth(RS, Some("nope"))
        .form(&[("token", t.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_basic.status(), 401);
    assert!(
        wrong_basic
            .headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("Basic ")))
    );
    assert_eq!(server.introspection_count(), 5);
}

#[tokio::test]
async fn a_resource_server_can_introspect_with_private_key_jwt() {
    let client_key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let rs_key = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
    let server = DevServer::builder()
        .with_client(
            ClientRegistration::new(CLIENT, JwksSource::inline(client_key.jwks()))
                .with_scopes(["system/Patient.rs"]),
        )
        .with_resource_server(ResourceServerRegistration::with_jwks(
            RS,
            JwksSource::inline(rs_key.jwks()),
        ))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev server");
    let token = server.issue_token(CLIENT, "system/Patient.rs");
    let rs_signer = AssertionSigner::new(RS, rs_key);
    let assertion = rs_signer.sign(server.introspection_url()).expect("sign");
    let [kind, jwt] = assertion.form_params();
    let response = http()
        .post(server.introspection_url())
        .form(&[("token", token.as_str()), kind, jwt])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["active"], true, "{body}");
    // The backend client's own key does not authorize introspection.
    let client_assertion = AssertionSigner::new(CLIENT, client_key)
        .sign(server.introspection_url())
        .expect("sign");
    let [kind, jwt] = client_assertion.form_params();
    let response = http()
        .post(server.introspection_url())
        .form(&[("token", token.as_str()), kind, jwt])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_client_may_revoke_only_its_own_tokens() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let own = server.issue_token(CLIENT, "system/Patient.rs");
    let foreign = server.issue_token("someone-else", "system/Patient.rs");
    let signer = AssertionSigner::new(CLIENT, key);
    for token in [&foreign, &own] {
        let assertion = signer.sign(server.revocation_url()).expect("sign");
        let [kind, jwt] = assertion.form_params();
        let response = http()
            .post(server.revocation_url())
            .form(&[("token", token.as_str()), kind, jwt])
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        introspect(&server, foreign.as_str()).await.1["active"],
        true
    );
    assert_eq!(introspect(&server, own.as_str()).await.1["active"], false);
}

#[tokio::test]
async fn token_errors_come_back_as_typed_oauth_errors() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let signer = AssertionSigner::new(CLIENT, key);
    let err = request_token(&http(), server.token_url(), &signer, "system/Encounter.rs")
        .await
        .expect_err("not allowed");
    assert_eq!(err.kind(), ClientErrorKind::OAuth);
    assert_eq!(err.status(), Some(400));
    assert_eq!(
        err.oauth_error().map(|e| &e.error),
        Some(&OAuthErrorCode::InvalidScope)
    );
    let stranger = AssertionSigner::new(
        "stranger",
        KeyPair::generate(SigningAlg::Es384).expect("keygen"),
    );
    let err = request_token(&http(), server.token_url(), &stranger, "system/Patient.rs")
        .await
        .expect_err("unknown client");
    assert_eq!(err.status(), Some(401));
    assert_eq!(
        err.oauth_error().map(|e| &e.error),
        Some(&OAuthErrorCode::InvalidClient)
    );
}

#[tokio::test]
async fn concurrent_callers_of_a_backend_client_share_one_token_fetch() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let client = BackendServicesClient::new(
        server.token_url(),
        AssertionSigner::new(CLIENT, key),
        "system/Patient.rs",
    )
    .with_http_client(http());
    let calls = (0..8).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.access_token().await })
    });
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.expect("join").expect("token"));
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "one shared token");
    assert_eq!(server.token_request_count(), 1);
    let again = client.access_token().await.expect("token");
    assert_eq!(again, tokens[0]);
    assert_eq!(server.token_request_count(), 1, "reused, not refetched");
}

#[tokio::test]
async fn a_backend_client_fetches_a_new_token_shortly_before_expiry() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    // A 2 s lifetime with the default 30 s margin: reused for half the lifetime, 1 s.
    let server = dev_server(&key, Some(Duration::from_secs(2))).await;
    let client = BackendServicesClient::new(
        server.token_url(),
        AssertionSigner::new(CLIENT, key),
        "system/Patient.rs",
    )
    .with_http_client(http());
    let first = client.access_token().await.expect("token");
    assert_eq!(client.access_token().await.expect("token"), first);
    assert_eq!(server.token_request_count(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = client.access_token().await.expect("token");
    assert_ne!(second, first);
    assert_eq!(server.token_request_count(), 2);
    client.invalidate().await;
    client.access_token().await.expect("token");
    assert_eq!(server.token_request_count(), 3);
}

#[tokio::test]
async fn smart_configuration_advertises_the_endpoints_and_capabilities() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let config: Value = http()
        .get(server.smart_configuration_url())
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(config["issuer"], server.base_url());
    assert_eq!(config["token_endpoint"], server.token_url());
    assert_eq!(config["introspection_endpoint"], server.introspection_url());
    assert_eq!(config["revocation_endpoint"], server.revocation_url());
    assert_eq!(
        config["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        config["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
    assert_eq!(
        config["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        config["scopes_supported"],
        json!(["system/Observation.rs", "system/Patient.rs"])
    );
    for capability in [
        "client-confidential-asymmetric",
        "permission-v1",
        "permission-v2",
    ] {
        assert!(
            config["capabilities"]
                .as_array()
                .is_some_and(|c| c.contains(&json!(capability))),
            "{capability}"
        );
    }
}

#[tokio::test]
async fn a_server_stops_listening_after_shutdown() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let url = server.smart_configuration_url();
    assert_eq!(http().get(&url).send().await.expect("up").status(), 200);
    server.shutdown().await;
    assert!(http().get(&url).send().await.is_err());
}

/// The guard (lead's layer) in front of the in-memory FHIR store, introspecting at the dev AS.
async fn guarded_fhir(server: &DevServer, max_ttl: Duration) -> String {
    let config = Config::new(
        server.introspection_url().parse().expect("url"),
        RS,
        RS_SECRET,
    )
    .with_base_path("/fhir")
    .expect("base path")
    .with_max_ttl(max_ttl)
    .with_http_client(http());
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

#[tokio::test]
async fn a_guarded_fhir_server_introspects_a_real_token_once_for_repeated_calls() {
    let key = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
    let server = dev_server(&key, None).await;
    let fhir = guarded_fhir(&server, Duration::from_secs(60)).await;
    let client = BackendServicesClient::new(
        server.token_url(),
        AssertionSigner::new(CLIENT, key),
        "system/Patient.rs system/Observation.rs",
    )
    .with_http_client(http());
    for _ in 0..3 {
        let token = client.access_token().await.expect("token");
        let read = http()
            .get(format!("{fhir}/Patient/example"))
            .bearer_auth(token.as_str())
            .send()
            .await
            .expect("read");
        assert_eq!(read.status(), 200);
        assert_eq!(
            read.headers()
                .get("x-smart-client-id")
                .and_then(|v| v.to_str().ok()),
            Some(CLIENT)
        );
        let search = http()
            .get(format!("{fhir}/Observation?patient=example"))
            .bearer_auth(token.as_str())
            .send()
            .await
            .expect("search");
        assert_eq!(search.status(), 200);
        let bundle: Value = search.json().await.expect("bundle");
        assert_eq!(bundle["total"], 2);
    }
    let token = client.access_token().await.expect("token");
    let create = http()
        .post(format!("{fhir}/Patient"))
        .bearer_auth(token.as_str())
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .expect("create");
    assert_eq!(create.status(), 403);
    let challenge = create
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert_eq!(server.token_request_count(), 1);
    assert_eq!(server.introspection_count(), 1, "7 calls, 1 introspection");
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_the_guard_cache_expires() {
    let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
    let server = dev_server(&key, None).await;
    let fhir = guarded_fhir(&server, Duration::from_secs(1)).await;
    let token = server.issue_token(CLIENT, "system/Patient.rs");
    let read = |token: String| {
        let url = format!("{fhir}/Patient/example");
        async move {
            http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("read")
                .status()
                .as_u16()
        }
    };
    assert_eq!(read(token.as_str().to_owned()).await, 200);
    assert!(server.revoke_token(token.as_str()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(read(token.as_str().to_owned()).await, 401);
    assert_eq!(server.introspection_count(), 2);
}
