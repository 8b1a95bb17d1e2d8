//! The guard layer end to end over loopback HTTP: a real (scripted) introspection server behind
//! the layer, a real axum app in front, and counts of every AS call.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use smart_guard::ClientAuth;
use support::{Behaviour, MockAs, active, assert_denied, guarded, http, now};

const TOKEN: &str = "tok-abc.DEF_123~+/=";

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_claims_and_is_introspected_once() {
    let auth = MockAs::start().await;
    auth.answer(
        TOKEN,
        active("system/Patient.rs system/Observation.read openid"),
    );
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    for _ in 0..5 {
        let response =
            support::get_with_token(&client, format!("{base}/fhir/Patient/123"), TOKEN).await;
        assert_eq!(response.status(), 200);
        let seen: Value = response.json().await.expect("json");
        assert_eq!(seen["client_id"], "backend-app");
        assert_eq!(seen["sub"], "backend-app");
        assert_eq!(seen["interaction"], "read");
        assert_eq!(seen["resource_type"], "Patient");
        assert_eq!(seen["iss"], "https://as.example");
        assert_eq!(
            seen["scopes"],
            json!(["system/Patient.rs", "system/Observation.rs"])
        );
        assert_eq!(
            seen["scope"],
            "system/Patient.rs system/Observation.read openid"
        );
    }
    assert_eq!(auth.calls(), 1, "one introspection for five requests");
    let form = auth.last_form();
    assert!(form.contains(&("token".into(), TOKEN.into())));
    assert!(form.contains(&("token_type_hint".into(), "access_token".into())));
    assert!(
        !form.iter().any(|(k, _)| k == "client_secret"),
        "basic auth by default"
    );
    assert!(
        auth.last_authorization()
            .is_some_and(|a| a.starts_with("Basic "))
    );
}

#[tokio::test]
async fn client_secret_post_sends_the_credentials_in_the_form() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let (base, _app) = guarded(auth.config().with_client_auth(ClientAuth::ClientSecretPost)).await;
    let response = support::get_with_token(&http(), format!("{base}/fhir/Patient/1"), TOKEN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(auth.calls(), 1);
    assert_eq!(auth.last_authorization(), None);
    assert!(
        auth.last_form()
            .contains(&("client_id".into(), support::RS_CLIENT_ID.into()))
    );
}

#[tokio::test]
async fn no_token_is_401_with_a_bare_challenge_and_no_introspection() {
    let auth = MockAs::start().await;
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let response = client
        .get(format!("{base}/fhir/Patient/1"))
        .send()
        .await
        .expect("send");
    assert_denied(response, 401, Some(r#"Bearer realm="fhir""#), "login").await;
    let basic = client
        .get(format!("{base}/fhir/Patient/1"))
        .basic_auth("user", Some("pw"))
        .send()
        .await
        .expect("send");
    assert_denied(basic, 401, Some(r#"Bearer realm="fhir""#), "login").await;
    assert_eq!(auth.calls(), 0);
}

#[tokio::test]
async fn public_endpoints_pass_without_a_token_and_never_introspect_one() {
    let auth = MockAs::start().await;
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let response = client
        .get(format!("{base}/fhir/metadata"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["resourceType"], "CapabilityStatement");
    let response = client
        .get(format!("{base}/fhir/metadata"))
        .header("authorization", "Bearer not-a-real-token")
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        200,
        "a bad token never fails a public request"
    );
    let response = client
        .head(format!("{base}/fhir/metadata"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let response = client
        .get(format!("{base}/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    for (method, path) in [("POST", "/fhir/metadata"), ("GET", "/fhir/Metadata")] {
        let response = client
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 401, "{method} {path} is not public");
    }
    assert_eq!(auth.calls(), 0);
}

#[tokio::test]
async fn malformed_credentials_are_400_invalid_request_without_introspection() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/*.cruds"));
    let (base, _app) = guarded(auth.config().with_max_token_bytes(64)).await;
    let client = http();
    let challenge = Some(r#"Bearer realm="fhir", error="invalid_request""#);
    for value in [
        "Bearer",
        "Bearer  two-spaces",
        "Bearer a b",
        "Bearer a,Bearer b",
        "Bearer ab\"c",
        &format!("Bearer {}", "a".repeat(65)),
    ] {
        let response = client
            .get(format!("{base}/fhir/Patient/1"))
            .header("authorization", value)
            .send()
            .await
            .expect("send");
        assert_denied(response, 400, challenge, "invalid").await;
    }
    let two = client
        .get(format!("{base}/fhir/Patient/1"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("send");
    assert_denied(two, 400, challenge, "invalid").await;
    let query = support::get_with_token(
        &client,
        format!("{base}/fhir/Patient/1?access_token={TOKEN}"),
        TOKEN,
    )
    .await;
    assert_denied(query, 400, challenge, "invalid").await;
    assert_eq!(auth.calls(), 0);
    // A body is read only once its token is known to be active: one lookup first.
    let body = client
        .post(format!("{base}/fhir/Patient/_search"))
        .bearer_auth(TOKEN)
        .form(&[("name", "x"), ("access_token", TOKEN)])
        .send()
        .await
        .expect("send");
    assert_denied(body, 400, challenge, "invalid").await;
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn path_traps_are_refused_before_introspection() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/*.cruds"));
    let (base, _app) = guarded(auth.config()).await;
    for (path, status, code) in [
        ("/fhir/Patient/%2e%2e/Observation/1", 400, "invalid"),
        ("/fhir/Patient%2F1", 400, "invalid"),
        ("/fhir/%50atient/1", 400, "invalid"),
        ("/fhir/Patient//1", 400, "invalid"),
        ("/fhir/Patient/1/", 400, "invalid"),
        ("/fhir/patient/1", 404, "not-found"),
        ("/fhir/Patient/1;x=y", 400, "invalid"),
        ("/fhir/Patient/1/Observation/2", 404, "not-found"),
        ("/other/Patient/1", 404, "not-found"),
        ("/fhirPatient/1", 404, "not-found"),
        ("/fhir/Patient/../Observation/1", 400, "invalid"),
        ("/fhir/Patient/./1", 400, "invalid"),
        ("/fhir/metadata/../Patient/1", 400, "invalid"),
        ("/fhir/Patient/%24export", 400, "invalid"),
    ] {
        let (got, body) = support::raw_get(&base, path, TOKEN).await;
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("OperationOutcome");
        assert_eq!(body["issue"][0]["code"], code, "{path}");
    }
    assert_eq!(auth.calls(), 0);
}

#[tokio::test]
async fn scopes_that_do_not_cover_the_request_are_403_naming_the_missing_scope() {
    let auth = MockAs::start().await;
    auth.answer(
        TOKEN,
        active("system/Patient.rs patient/*.cruds user/Observation.cruds"),
    );
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let create = client
        .post(format!("{base}/fhir/Patient"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .expect("send");
    let body = assert_denied(
        create,
        403,
        Some(r#"Bearer realm="fhir", error="insufficient_scope", scope="system/Patient.c""#),
        "forbidden",
    )
    .await;
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .expect("text")
            .contains("system/Patient.c")
    );
    let observation =
        support::get_with_token(&client, format!("{base}/fhir/Observation?code=x"), TOKEN).await;
    assert_denied(
        observation,
        403,
        Some(r#"Bearer realm="fhir", error="insufficient_scope", scope="system/Observation.s""#),
        "forbidden",
    )
    .await;
    let conditional = client
        .post(format!("{base}/fhir/Patient"))
        .bearer_auth(TOKEN)
        .header("if-none-exist", "identifier=x")
        .send()
        .await
        .expect("send");
    assert_eq!(conditional.status(), 403);
    // A POST to the base without a JSON Bundle is no batch the guard can read: 415, decided
    // from the headers.
    let batch = client
        .post(format!("{base}/fhir"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_denied(batch, 415, None, "not-supported").await;
    assert_eq!(
        auth.calls(),
        1,
        "the decision is not cached, the claims are"
    );
}

#[tokio::test]
async fn an_empty_grant_is_403_for_every_protected_request() {
    let auth = MockAs::start().await;
    let mut answer = active("");
    answer.as_object_mut().expect("object").remove("scope");
    auth.answer(TOKEN, answer);
    let (base, _app) = guarded(auth.config()).await;
    let response = support::get_with_token(&http(), format!("{base}/fhir/Patient/1"), TOKEN).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn system_search_needs_search_on_every_listed_type_including_post_bodies() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.s system/Observation.s"));
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let get = support::get_with_token(
        &client,
        format!("{base}/fhir?_type=Patient,Observation"),
        TOKEN,
    )
    .await;
    assert_eq!(get.status(), 200);
    let all = support::get_with_token(&client, format!("{base}/fhir?name=x"), TOKEN).await;
    assert_eq!(all.status(), 403, "no _type needs system/*.s");
    let post = client
        .post(format!("{base}/fhir/_search"))
        .bearer_auth(TOKEN)
        .form(&[("_type", "Patient")])
        .send()
        .await
        .expect("send");
    assert_eq!(post.status(), 200);
    let seen: Value = post.json().await.expect("json");
    assert_eq!(seen["interaction"], "search-system");
    assert_eq!(
        seen["body"], "_type=Patient",
        "the body reaches the handler unchanged"
    );
    let wider = client
        .post(format!("{base}/fhir/_search"))
        .bearer_auth(TOKEN)
        .form(&[("_type", "Condition")])
        .send()
        .await
        .expect("send");
    assert_eq!(wider.status(), 403);
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn oversized_search_bodies_are_413() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/*.rs"));
    let (base, _app) = guarded(auth.config().with_max_body_bytes(1024)).await;
    let response = http()
        .post(format!("{base}/fhir/Patient/_search"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name={}", "x".repeat(2000)))
        .send()
        .await
        .expect("send");
    assert_denied(response, 413, None, "too-long").await;
    assert_eq!(auth.calls(), 0);
}

#[tokio::test]
async fn an_inactive_token_is_401_and_cached_briefly() {
    let auth = MockAs::start().await;
    let (base, _app) = guarded(auth.config().with_negative_ttl(Duration::from_millis(500))).await;
    let client = http();
    let challenge = Some(r#"Bearer realm="fhir", error="invalid_token""#);
    for _ in 0..3 {
        let response =
            support::get_with_token(&client, format!("{base}/fhir/Patient/1"), "unknown-token")
                .await;
        assert_denied(response, 401, challenge, "login").await;
    }
    assert_eq!(auth.calls(), 1, "inactive answers are cached");
    tokio::time::sleep(Duration::from_millis(700)).await;
    auth.answer("unknown-token", active("system/Patient.rs"));
    let response =
        support::get_with_token(&client, format!("{base}/fhir/Patient/1"), "unknown-token").await;
    assert_eq!(
        response.status(),
        200,
        "after the negative TTL the AS is asked again"
    );
    assert_eq!(auth.calls(), 2);
}

#[tokio::test]
async fn active_entries_expire_after_the_max_ttl() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let (base, _app) = guarded(auth.config().with_max_ttl(Duration::from_millis(500))).await;
    let client = http();
    let get = || {
        client
            .get(format!("{base}/fhir/Patient/1"))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(get().await.expect("send").status(), 200);
    assert_eq!(get().await.expect("send").status(), 200);
    assert_eq!(auth.calls(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    auth.answer(TOKEN, json!({"active": false}));
    assert_eq!(
        get().await.expect("send").status(),
        401,
        "revocation seen after the TTL"
    );
    assert_eq!(auth.calls(), 2);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_exp_passes() {
    let auth = MockAs::start().await;
    let mut answer = active("system/Patient.rs");
    let exp = now() + 2;
    answer["exp"] = json!(exp);
    auth.answer(TOKEN, answer);
    let (base, _app) = guarded(auth.config().with_clock_skew(Duration::ZERO)).await;
    let client = http();
    let get = || {
        client
            .get(format!("{base}/fhir/Patient/1"))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(get().await.expect("send").status(), 200);
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get().await.expect("send").status(), 401);
    // The entry's TTL ends at exp, and exp is checked again on every hit: either way, 401.
}

#[tokio::test]
async fn answers_with_exp_in_the_past_wrong_issuer_or_audience_are_invalid_tokens() {
    let auth = MockAs::start().await;
    let mut expired = active("system/*.rs");
    expired["exp"] = json!(now() - 60);
    auth.answer("expired", expired);
    let mut foreign = active("system/*.rs");
    foreign["iss"] = json!("https://evil.example");
    auth.answer("foreign", foreign);
    let mut elsewhere = active("system/*.rs");
    elsewhere["aud"] = json!(["https://other.example/fhir"]);
    auth.answer("elsewhere", elsewhere);
    // An `aud` that is present must name this server, even as an empty list.
    let mut nobody = active("system/*.rs");
    nobody["aud"] = json!([]);
    auth.answer("nobody", nobody);
    let mut no_exp = active("system/*.rs");
    no_exp.as_object_mut().expect("object").remove("exp");
    auth.answer("no-exp", no_exp);
    let mut refresh = active("system/*.rs");
    refresh["token_type"] = json!("refresh_token");
    auth.answer("refresh", refresh);
    let config = auth
        .config()
        .with_expected_issuer("https://as.example")
        .with_expected_audience("https://fhir.example/fhir");
    let (base, _app) = guarded(config).await;
    let client = http();
    for token in [
        "expired",
        "foreign",
        "elsewhere",
        "nobody",
        "no-exp",
        "refresh",
    ] {
        let response =
            support::get_with_token(&client, format!("{base}/fhir/Patient/1"), token).await;
        assert_denied(
            response,
            401,
            Some(r#"Bearer realm="fhir", error="invalid_token""#),
            "login",
        )
        .await;
    }
    assert_eq!(auth.calls(), 6);
    // Cached verdicts: the first four are cached negatives, an answer without exp is not cached.
    for token in ["expired", "no-exp"] {
        let response =
            support::get_with_token(&client, format!("{base}/fhir/Patient/1"), token).await;
        assert_eq!(response.status(), 401);
    }
    assert_eq!(
        auth.calls(),
        7,
        "only the answer without exp was asked again"
    );
}

#[tokio::test]
async fn as_failures_are_503_with_retry_after_and_never_cached() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let (base, _app) = guarded(
        auth.config()
            .with_retry_after(Duration::from_secs(7))
            .with_timeouts(Duration::from_millis(500), Duration::from_millis(300)),
    )
    .await;
    let client = http();
    let get = || {
        client
            .get(format!("{base}/fhir/Patient/1"))
            .bearer_auth(TOKEN)
            .send()
    };
    for (behaviour, label) in [
        (Behaviour::Status(500), "500"),
        (Behaviour::Status(503), "503"),
        (Behaviour::Status(401), "AS rejects our credentials"),
        (Behaviour::Status(404), "unexpected status"),
        (Behaviour::Raw("not json"), "garbage"),
        (
            Behaviour::Raw(r#"{"active":true,"exp":"later"}"#),
            "wrong field type",
        ),
        (Behaviour::Delay(Duration::from_millis(600)), "timeout"),
    ] {
        auth.behave(behaviour);
        let before = auth.calls();
        let response = get().await.expect("send");
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"7"[..]),
            "{label}"
        );
        assert_denied(response, 503, None, "transient").await;
        assert_eq!(auth.calls(), before + 1, "{label}");
    }
    auth.behave(Behaviour::Normal);
    assert_eq!(
        get().await.expect("send").status(),
        200,
        "recovers without restart"
    );
    assert_eq!(get().await.expect("send").status(), 200);
    assert_eq!(auth.calls(), 8, "errors were never cached; the success is");
}

#[tokio::test]
async fn an_unreachable_as_is_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/introspect", listener.local_addr().expect("addr"));
    drop(listener);
    let config = smart_guard::Config::new(url.parse().expect("url"), "rs", "secret")
        .with_base_path("/fhir")
        .expect("base");
    let (base, _app) = guarded(config).await;
    let response = support::get_with_token(&http(), format!("{base}/fhir/Patient/1"), TOKEN).await;
    assert_denied(response, 503, None, "transient").await;
}

#[tokio::test]
async fn a_hundred_concurrent_misses_cause_one_introspection() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.behave(Behaviour::Delay(Duration::from_millis(300)));
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let requests = (0..100).map(|_| {
        let client = client.clone();
        let url = format!("{base}/fhir/Patient/1");
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .map(|r| r.status())
        })
    });
    for handle in requests.collect::<Vec<_>>() {
        assert_eq!(handle.await.expect("join").expect("send"), 200);
    }
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn a_cancelled_request_does_not_fail_the_others() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.behave(Behaviour::Delay(Duration::from_millis(400)));
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let url = format!("{base}/fhir/Patient/1");
    let impatient = client
        .get(&url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_millis(100))
        .send();
    let patient = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.get(&url).bearer_auth(TOKEN).send().await
    };
    let (first, second) = tokio::join!(impatient, patient);
    assert!(first.is_err(), "the first client gave up");
    assert_eq!(second.expect("send").status(), 200);
    assert!(auth.calls() <= 2);
}

#[tokio::test]
async fn the_layer_works_on_a_router_nested_at_the_base_path() {
    use axum::Router;
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    // Base path configured, layer on the inner router (axum strips /fhir before it).
    let inner = support::fhir_routes()
        .layer(smart_guard::SmartGuardLayer::new(auth.config()).expect("layer"));
    let (with_base, _a) = support::serve(Router::new().nest("/fhir", inner)).await;
    // No base path configured, layer on the inner router.
    let config = smart_guard::Config::new(
        auth.url().parse().expect("url"),
        support::RS_CLIENT_ID,
        support::RS_SECRET,
    );
    let inner =
        support::fhir_routes().layer(smart_guard::SmartGuardLayer::new(config).expect("layer"));
    let (without_base, _b) = support::serve(Router::new().nest("/fhir", inner)).await;
    let client = http();
    for base in [&with_base, &without_base] {
        let read = support::get_with_token(&client, format!("{base}/fhir/Patient/1"), TOKEN).await;
        assert_eq!(read.status(), 200, "{base}");
        let seen: Value = read.json().await.expect("json");
        assert_eq!(seen["interaction"], "read");
        let search =
            support::get_with_token(&client, format!("{base}/fhir/Patient?name=x"), TOKEN).await;
        assert_eq!(search.status(), 200, "{base}");
        let denied =
            support::get_with_token(&client, format!("{base}/fhir/Observation/1"), TOKEN).await;
        assert_eq!(denied.status(), 403, "{base}");
        let public = client
            .get(format!("{base}/fhir/metadata"))
            .send()
            .await
            .expect("send");
        assert_eq!(public.status(), 200, "{base}");
        let anonymous = client
            .get(format!("{base}/fhir/Patient/1"))
            .send()
            .await
            .expect("send");
        assert_eq!(anonymous.status(), 401, "{base}");
    }
    assert_eq!(
        auth.calls(),
        2,
        "two guards, two caches: one introspection each"
    );
}

#[tokio::test]
async fn the_claims_extractor_without_the_layer_is_a_500_that_says_so() {
    use axum::{Router, routing::get};
    let app = Router::new().route(
        "/Patient/{id}",
        get(|_: smart_guard::VerifiedClaims| async { "unreachable" }),
    );
    let (base, _app) = support::serve(app).await;
    let response = http()
        .get(format!("{base}/Patient/1"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 500);
    assert!(
        response
            .text()
            .await
            .expect("text")
            .contains("SmartGuardLayer")
    );
}

/// Serves the FHIR routes behind `layer` and sends, with [`TOKEN`] (`system/Patient.rs`), three
/// Patient reads (one miss, two hits), an Observation read (403) and `metadata` (public).
async fn three_reads_a_denial_and_metadata(
    layer: &smart_guard::SmartGuardLayer,
) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .nest("/fhir", support::fhir_routes())
        .layer(layer.clone());
    let (base, task) = support::serve(app).await;
    let client = http();
    for path in [
        "Patient/1",
        "Patient/2",
        "Patient/3",
        "Observation/1",
        "metadata",
    ] {
        support::get_with_token(&client, format!("{base}/fhir/{path}"), TOKEN).await;
    }
    (base, task)
}

#[tokio::test]
async fn stats_count_hits_misses_calls_and_decisions() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let layer = smart_guard::SmartGuardLayer::new(auth.config()).expect("layer");
    let (base, _app) = three_reads_a_denial_and_metadata(&layer).await;
    let client = http();
    support::get_with_token(&client, format!("{base}/fhir/Patient/1"), "nope").await;
    support::get_with_token(&client, format!("{base}/fhir/Patient/1"), "nope").await;
    let stats = layer.stats();
    assert_eq!(stats.introspection_calls, 2);
    assert_eq!(stats.cache_misses, 2);
    assert_eq!(
        stats.cache_hits, 4,
        "three cached actives and one cached inactive"
    );
    assert_eq!(stats.inactive_hits, 1);
    assert_eq!(stats.allowed, 3);
    assert_eq!(stats.public, 1);
    assert_eq!(
        stats.denied,
        [
            (smart_guard::AuthFailure::InvalidToken, 2),
            (smart_guard::AuthFailure::InsufficientScope, 1)
        ]
    );
    assert!(stats.introspection_errors.is_empty());
}

/// The per-request counters reach the `metrics` recorder that was installed when the layer was
/// built (their handles are registered then, so a hit pays no key lookup).
#[cfg(feature = "metrics")]
#[tokio::test]
async fn decisions_and_hits_reach_the_metrics_recorder() {
    use metrics_util::{
        CompositeKey, MetricKind,
        debugging::{DebugValue, DebuggingRecorder},
    };
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        smart_guard::SmartGuardLayer::new(auth.config()).expect("layer")
    });
    let _app = three_reads_a_denial_and_metadata(&layer).await;
    let counters: Vec<(String, Vec<String>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let (kind, key): (MetricKind, _) = CompositeKey::into_parts(key);
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) if n > 0 => Some((
                    key.name().to_owned(),
                    key.labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect(),
                    n,
                )),
                _ => None,
            }
        })
        .collect();
    let count = |name: &str, label: Option<&str>| {
        counters
            .iter()
            .filter(|(n, labels, _)| {
                n == name && label.is_none_or(|l| labels.iter().any(|x| x == l))
            })
            .map(|(_, _, n)| n)
            .sum::<u64>()
    };
    assert_eq!(
        count("smart_guard_cache_hits_total", None),
        3,
        "{counters:?}"
    );
    assert_eq!(
        count("smart_guard_decisions_total", Some("outcome=allow")),
        3
    );
    assert_eq!(
        count("smart_guard_decisions_total", Some("outcome=public")),
        1
    );
    assert_eq!(
        count(
            "smart_guard_decisions_total",
            Some("outcome=insufficient_scope")
        ),
        1
    );
    let stats = layer.stats();
    assert_eq!(
        (stats.cache_hits, stats.allowed),
        (3, 3),
        "the same as stats()"
    );
}

#[tokio::test]
async fn the_claims_record_which_scope_granted_each_need() {
    let auth = MockAs::start().await;
    auth.answer(
        TOKEN,
        active("system/Observation.s system/*.r system/Patient.rs"),
    );
    let (base, _app) = guarded(auth.config()).await;
    let response =
        support::get_with_token(&http(), format!("{base}/fhir/Observation/1"), TOKEN).await;
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.expect("json");
    assert_eq!(
        seen["grants"],
        json!([{ "entry": null, "need": "Observation.r", "scope": "system/*.r" }])
    );
}

#[tokio::test]
async fn a_batch_is_checked_entry_by_entry_and_a_denied_entry_is_named() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs system/Observation.c"));
    let (base, _app) = guarded(auth.config()).await;
    let client = http();
    let batch = |entries: Value| {
        json!({ "resourceType": "Bundle", "type": "batch", "entry": entries }).to_string()
    };
    let allowed = batch(json!([
        { "request": { "method": "GET", "url": "Patient/1" } },
        { "request": { "method": "POST", "url": "Observation" },
          "resource": { "resourceType": "Observation", "status": "final" } }
    ]));
    let response = client
        .post(format!("{base}/fhir"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(allowed.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.expect("json");
    assert_eq!(
        seen["body"], allowed,
        "the bundle reaches the handler unchanged"
    );
    let entries: Vec<_> = seen["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .map(|g| g["entry"].clone())
        .collect();
    assert!(
        entries.contains(&json!(0)) && entries.contains(&json!(1)),
        "{seen}"
    );

    let denied = batch(json!([
        { "request": { "method": "GET", "url": "Patient/1" } },
        { "request": { "method": "DELETE", "url": "Patient/2" } }
    ]));
    let response = client
        .post(format!("{base}/fhir"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(denied)
        .send()
        .await
        .expect("send");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = assert_denied(response, 403, challenge.as_deref(), "forbidden").await;
    assert!(
        challenge
            .expect("challenge")
            .contains(r#"scope="system/Patient.d""#)
    );
    let text = body["issue"][0]["diagnostics"]
        .as_str()
        .expect("diagnostics");
    assert!(text.contains("entry 1"), "{text}");
    assert_eq!(auth.calls(), 1);
}
