//! The discovery documents over loopback HTTP: the SMART configuration (SMART App Launch 2.x
//! "Conformance"), the RFC 9728 protected resource metadata and the `resource_metadata`
//! parameter of every challenge (§5.1), the metadata path as a public endpoint, and the dev
//! store's CapabilityStatement.

mod support;

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};
use smart_guard::{Config, SmartGuardLayer, dev_server::fhir_store::FhirStore, metadata};
use support::{MockAs, active, assert_denied, fhir_routes, http};
use tokio::{net::TcpListener, task::JoinHandle};

const TOKEN: &str = "tok-metadata-1";
const PRM: &str = "/.well-known/oauth-protected-resource";

/// A loopback listener and its `http://127.0.0.1:port`, known before the app is built.
async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, origin)
}

fn spawn(listener: TcpListener, app: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    })
}

/// A scripted AS serving `document(issuer)` as its SMART configuration.
async fn scripted_as(document: impl FnOnce(&str) -> Value) -> (String, JoinHandle<()>) {
    let (listener, issuer) = bind().await;
    let document = document(&issuer);
    let app = Router::new().route(
        "/.well-known/smart-configuration",
        get(move || async move { Json(document) }),
    );
    (issuer, spawn(listener, app))
}

/// GETs `url` without a token; returns status, Content-Type, Cache-Control and the JSON body.
async fn fetch(url: &str) -> (u16, String, String, Value) {
    let response = http().get(url).send().await.expect("send");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    };
    let (status, content_type, cache) = (
        response.status().as_u16(),
        header("content-type"),
        header("cache-control"),
    );
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, cache, body)
}

/// Asserts a document answer: 200, `application/json`, cacheable for an hour, exactly `want`.
async fn assert_document(url: &str, want: Value) {
    let (status, content_type, cache, body) = fetch(url).await;
    assert_eq!(status, 200, "{url}");
    assert_eq!(content_type, "application/json", "{url}");
    assert_eq!(cache, "public, max-age=3600", "{url}");
    assert_eq!(body, want, "{url}");
}

#[tokio::test]
async fn both_documents_repeat_what_discovery_found_at_the_as() {
    let (issuer, _as) = scripted_as(|issuer| {
        json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "revocation_endpoint": format!("{issuer}/revoke"),
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES384"],
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "scopes_supported": ["system/*.rs", "system/Patient.read", "openid", "launch"],
            "capabilities": ["launch-ehr"],
        })
    })
    .await;
    let (listener, origin) = bind().await;
    let config = Config::for_issuer(&issuer, "fhir-rs")
        .expect("issuer")
        .with_client_secret("s3cret")
        .with_base_path("/fhir")
        .expect("base")
        .with_resource_url(&format!("{origin}/fhir/"))
        .expect("resource url")
        .with_resource_name("Example FHIR")
        .discover()
        .await
        .expect("discovered");
    let _app = spawn(listener, metadata::router(&config));

    assert_document(
        &format!("{origin}/fhir/.well-known/smart-configuration"),
        json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "revocation_endpoint": format!("{issuer}/revoke"),
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES384"],
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "scopes_supported": ["system/*.rs", "system/Patient.read", "openid", "launch"],
            "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        }),
    )
    .await;
    assert_document(
        &format!("{origin}{PRM}/fhir"),
        json!({
            "resource": format!("{origin}/fhir"),
            "authorization_servers": [issuer],
            "scopes_supported": ["system/*.rs", "system/Patient.read"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Example FHIR",
        }),
    )
    .await;
}

#[tokio::test]
async fn with_settings_only_the_documents_hold_the_settings_and_the_documented_defaults() {
    let (listener, origin) = bind().await;
    let config = Config::new(
        "https://as.example/introspect".parse().expect("url"),
        "fhir-rs",
        "s3cret",
    )
    .with_token_url("https://as.example/token".parse().expect("url"))
    .with_base_path("/fhir")
    .expect("base")
    .with_resource_url(&format!("{origin}/fhir"))
    .expect("resource url");
    let _app = spawn(listener, metadata::router(&config));

    assert_document(
        &format!("{origin}/fhir/.well-known/smart-configuration"),
        json!({
            "token_endpoint": "https://as.example/token",
            "introspection_endpoint": "https://as.example/introspect",
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "grant_types_supported": ["client_credentials"],
            "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        }),
    )
    .await;
    assert_document(
        &format!("{origin}{PRM}/fhir"),
        json!({ "resource": format!("{origin}/fhir"), "bearer_methods_supported": ["header"] }),
    )
    .await;
}

#[tokio::test]
async fn the_dev_as_s_metadata_reaches_the_smart_configuration() {
    use smart_guard::dev_server::{DevServer, ResourceServerRegistration};
    let dev = DevServer::builder()
        .with_resource_server(ResourceServerRegistration::with_secret("fhir-rs", "s3cret"))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev AS");
    let (listener, origin) = bind().await;
    let config = Config::for_issuer(dev.base_url(), "fhir-rs")
        .expect("issuer")
        .with_client_secret("s3cret")
        .with_http_client(http())
        .discover()
        .await
        .expect("discovered");
    let _app = spawn(listener, metadata::router(&config));
    let (status, _, _, body) = fetch(&format!("{origin}/.well-known/smart-configuration")).await;
    assert_eq!(status, 200);
    assert_eq!(body["issuer"], dev.base_url());
    assert_eq!(body["token_endpoint"], dev.token_url());
    assert_eq!(body["introspection_endpoint"], dev.introspection_url());
    assert_eq!(body["revocation_endpoint"], dev.revocation_url());
    assert_eq!(body["grant_types_supported"], json!(["client_credentials"]));
}

#[tokio::test]
async fn at_the_root_the_metadata_path_is_the_bare_well_known_path() {
    let (listener, origin) = bind().await;
    let config = Config::for_issuer("https://as.example", "fhir-rs")
        .expect("issuer")
        .with_introspection_url("https://as.example/introspect".parse().expect("url"))
        .with_client_secret("s3cret")
        .with_resource_url(&format!("{origin}/"))
        .expect("resource url");
    assert_eq!(
        config.resource_metadata_url(),
        Some(&*format!("{origin}{PRM}"))
    );
    let _app = spawn(listener, metadata::router(&config));
    assert_document(
        &format!("{origin}{PRM}"),
        json!({
            "resource": origin,
            "authorization_servers": ["https://as.example"],
            "bearer_methods_supported": ["header"],
        }),
    )
    .await;
    let (status, content_type, _, _) =
        fetch(&format!("{origin}/.well-known/smart-configuration")).await;
    assert_eq!((status, &*content_type), (200, "application/json"));
}

#[tokio::test]
async fn without_a_resource_url_there_is_no_protected_resource_metadata() {
    let (listener, origin) = bind().await;
    let config = Config::new(
        "https://as.example/introspect".parse().expect("url"),
        "fhir-rs",
        "s3cret",
    );
    let _app = spawn(listener, metadata::router(&config));
    assert_eq!(fetch(&format!("{origin}{PRM}")).await.0, 404);
    assert_eq!(
        fetch(&format!("{origin}/.well-known/smart-configuration"))
            .await
            .0,
        200
    );
}

/// The FHIR routes at `/fhir` and the documents, all behind one guard on the outer router.
async fn guarded_with_documents(auth: &MockAs, resource: bool) -> (String, JoinHandle<()>) {
    let (listener, origin) = bind().await;
    let mut config = auth.config();
    if resource {
        config = config
            .with_resource_url(&format!("{origin}/fhir"))
            .expect("resource url");
    }
    let app = Router::new()
        .nest("/fhir", fhir_routes())
        .merge(metadata::router(&config))
        .layer(SmartGuardLayer::new(config).expect("layer"));
    (origin.clone(), spawn(listener, app))
}

/// Every kind of challenge the guard sends, as `(status, WWW-Authenticate, issue code)`.
async fn challenges(origin: &str) -> Vec<(u16, Option<String>)> {
    let client = http();
    let url = format!("{origin}/fhir/Patient/1");
    let requests = [
        client.get(&url),
        client.get(&url).bearer_auth("unknown-token"),
        client.get(&url).header("authorization", "Bearer a b"),
        client.get(&url).bearer_auth(TOKEN),
        client
            .post(format!("{origin}/fhir/$graphql"))
            .bearer_auth(TOKEN),
    ];
    let mut seen = Vec::new();
    for request in requests {
        let response = request.send().await.expect("send");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        seen.push((response.status().as_u16(), challenge));
    }
    seen
}

#[tokio::test]
async fn every_challenge_names_the_resource_metadata_when_a_resource_url_is_set() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Observation.rs"));
    let (origin, _app) = guarded_with_documents(&auth, true).await;
    let rm = format!(r#", resource_metadata="{origin}{PRM}/fhir""#);
    let want = |status: u16, challenge: &str| (status, Some(format!("{challenge}{rm}")));
    assert_eq!(
        challenges(&origin).await,
        [
            want(401, r#"Bearer realm="fhir""#),
            want(401, r#"Bearer realm="fhir", error="invalid_token""#),
            want(400, r#"Bearer realm="fhir", error="invalid_request""#),
            want(
                403,
                r#"Bearer realm="fhir", error="insufficient_scope", scope="system/Patient.r""#
            ),
            want(403, r#"Bearer realm="fhir", error="insufficient_scope""#),
        ]
    );
}

#[tokio::test]
async fn without_a_resource_url_challenges_have_no_resource_metadata() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Observation.rs"));
    let (origin, _app) = guarded_with_documents(&auth, false).await;
    let want = |status: u16, challenge: &str| (status, Some(challenge.to_owned()));
    assert_eq!(
        challenges(&origin).await,
        [
            want(401, r#"Bearer realm="fhir""#),
            want(401, r#"Bearer realm="fhir", error="invalid_token""#),
            want(400, r#"Bearer realm="fhir", error="invalid_request""#),
            want(
                403,
                r#"Bearer realm="fhir", error="insufficient_scope", scope="system/Patient.r""#
            ),
            want(403, r#"Bearer realm="fhir", error="insufficient_scope""#),
        ]
    );
    // And the metadata path is no public endpoint then: outside the base path, 404.
    let response = http()
        .get(format!("{origin}{PRM}/fhir"))
        .send()
        .await
        .expect("send");
    assert_denied(response, 404, None, "not-found").await;
}

#[tokio::test]
async fn the_metadata_path_passes_the_guard_only_for_get_and_head_exactly() {
    let auth = MockAs::start().await;
    let (origin, _app) = guarded_with_documents(&auth, true).await;
    let client = http();
    let url = format!("{origin}{PRM}/fhir");

    // GET and HEAD without a token (and with a broken Authorization header) reach the router.
    let get = client.get(&url).send().await.expect("send");
    assert_eq!(get.status(), 200);
    let head = client.head(&url).send().await.expect("send");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers().get("content-type").expect("type"),
        "application/json"
    );
    let broken = client
        .get(format!("{url}?x=1"))
        .header("authorization", "Bearer a b")
        .send()
        .await
        .expect("send");
    assert_eq!(broken.status(), 200);
    let smart = client
        .get(format!("{origin}/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .expect("send");
    assert_eq!(smart.status(), 200);

    // Another method, case or suffix is outside the base path: the guard's 404, no AS call.
    let post = client.post(&url).send().await.expect("send");
    assert_denied(post, 404, None, "not-found").await;
    for path in [
        format!("{PRM}/FHIR"),
        format!("{PRM}/fhir/"),
        format!("{PRM}/fhirx"),
        format!("{PRM}/fhir/Patient"),
        PRM.to_owned(),
        "/.well-known/OAuth-Protected-Resource/fhir".to_owned(),
        "/.well-known/oauth-protected-resource/%66hir".to_owned(),
    ] {
        let response = client
            .get(format!("{origin}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers().get("content-type").expect("type"),
            "application/fhir+json; charset=utf-8",
            "{path}: refused by the guard"
        );
    }
    let (status, _) = support::raw_get(&origin, &format!("/fhir/..{PRM}/fhir"), TOKEN).await;
    assert_eq!(
        status, 400,
        "a dot segment under the base is a malformed path"
    );
    let dotted = "/.well-known/./oauth-protected-resource/fhir";
    let (status, _) = support::raw_get(&origin, dotted, TOKEN).await;
    assert_eq!(status, 404, "{dotted} is no metadata path");
    assert_eq!(auth.calls(), 0);
}

#[tokio::test]
async fn a_guard_on_a_router_nested_elsewhere_does_not_take_a_stripped_path_for_the_metadata() {
    let auth = MockAs::start().await;
    let (listener, origin) = bind().await;
    let config = auth
        .config()
        .with_resource_url(&format!("{origin}/fhir"))
        .expect("resource url");
    let guard = SmartGuardLayer::new(config).expect("layer");
    let app = Router::new().nest("/fhir", fhir_routes().layer(guard));
    let _app = spawn(listener, app);
    let response = http()
        .get(format!("{origin}/fhir{PRM}/fhir"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401, "not public: a token is needed");
}

#[tokio::test]
async fn the_capability_statement_declares_smart_on_fhir_security_and_the_oauth_uris() {
    let (listener, origin) = bind().await;
    let store = FhirStore::with_samples()
        .with_token_url("https://as.example/token")
        .with_introspection_url("https://as.example/introspect")
        .with_revocation_url("https://as.example/revoke");
    let bare = FhirStore::with_samples();
    let app = Router::new()
        .nest("/fhir", store.router())
        .nest("/bare", bare.router());
    let _app = spawn(listener, app);

    let (status, content_type, _, body) = fetch(&format!("{origin}/fhir/metadata")).await;
    assert_eq!((status, &*content_type), (200, "application/fhir+json"));
    assert_eq!(body["date"], "2026-11-29");
    let service = json!([{
        "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR",
            "display": "SMART-on-FHIR"
        }],
        "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
    }]);
    assert_eq!(
        body["rest"][0]["security"],
        json!({
            "service": service,
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    { "url": "token", "valueUri": "https://as.example/token" },
                    { "url": "introspect", "valueUri": "https://as.example/introspect" },
                    { "url": "revoke", "valueUri": "https://as.example/revoke" },
                ]
            }]
        })
    );

    // Without a token endpoint the extension (which requires `token`) is left out.
    let (_, _, _, body) = fetch(&format!("{origin}/bare/metadata")).await;
    assert_eq!(body["rest"][0]["security"], json!({ "service": service }));
}
