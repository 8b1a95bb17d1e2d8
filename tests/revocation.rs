//! `RevocationService` over loopback HTTP, in front of the scripted AS of `tests/support`: who
//! may call it, what it refuses, and that a token revoked through it is asked about again at
//! once instead of served from the cache (one replica; the fleet's own tests are tests/fleet).

mod support;

use axum::Router;
use serde_json::json;
use smart_guard::{RevocationSecret, RevocationService, SmartGuardLayer};
use support::{MockAs, active, fhir_routes, get_with_token, http};

const TOKEN: &str = "revocation-token-Zq81";
const SECRET: &str = "hook-secret-0123456789abcdef";

async fn serve(auth: &MockAs) -> String {
    let layer = SmartGuardLayer::new(auth.config()).expect("layer");
    let app = Router::new()
        .nest("/fhir", fhir_routes())
        .layer(layer.clone())
        .route_service(
            "/revoke",
            RevocationService::new(layer, RevocationSecret::new(SECRET).expect("secret")),
        );
    let (base, task) = support::serve(app).await;
    std::mem::forget(task);
    base
}

async fn post(
    base: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: &str,
) -> reqwest::Response {
    let mut request = http()
        .post(format!("{base}/revoke"))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn a_revoked_token_is_asked_about_again_at_once_instead_of_served_from_the_cache() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let base = serve(&auth).await;
    let client = http();
    let read = || get_with_token(&client, format!("{base}/fhir/Patient/1"), TOKEN);
    assert_eq!(read().await.status(), 200);
    auth.answer(TOKEN, json!({ "active": false }));
    assert_eq!(read().await.status(), 200, "cached: the AS is not asked");
    assert_eq!(auth.calls(), 1);

    let response = post(
        &base,
        Some(&format!("Bearer {SECRET}")),
        "application/x-www-form-urlencoded",
        &format!("token={TOKEN}&token_type_hint=access_token"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(read().await.status(), 401, "asked again: inactive");
    assert_eq!(auth.calls(), 2);

    let unknown = post(
        &base,
        Some(&format!("bearer {SECRET}")),
        "application/x-www-form-urlencoded; charset=utf-8",
        "token=never-seen",
    )
    .await;
    assert_eq!(
        unknown.status(),
        200,
        "RFC 7009: 200 for a token the guard never saw"
    );
}

#[tokio::test]
async fn callers_without_the_secret_and_malformed_revocations_are_refused() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let base = serve(&auth).await;
    let form = "application/x-www-form-urlencoded";
    let good = format!("Bearer {SECRET}");
    let body = format!("token={TOKEN}");
    for (case, authorization) in [
        ("no Authorization", None),
        (
            "wrong secret",
            Some("Bearer hook-secret-0123456789abcdeF".to_owned()),
        ),
        (
            "a prefix of the secret",
            Some("Bearer hook-secret".to_owned()),
        ),
        ("Basic", Some(format!("Basic {SECRET}"))),
        ("no space", Some(format!("Bearer{SECRET}"))),
        ("two spaces", Some(format!("Bearer  {SECRET}"))),
    ] {
        let response = post(&base, authorization.as_deref(), form, &body).await;
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"revocation\"",
            "{case}"
        );
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"error":"invalid_client"}"#,
            "{case}"
        );
    }
    let big = format!("token={}", "a".repeat(20_000));
    for (case, content_type, body) in [
        (
            "JSON",
            "application/json",
            format!("{{\"token\":\"{TOKEN}\"}}"),
        ),
        ("no token", form, "token_type_hint=access_token".to_owned()),
        ("two tokens", form, format!("token={TOKEN}&token=other")),
        ("empty token", form, "token=".to_owned()),
        (
            "an unencoded + reads as a space",
            form,
            "token=abc+def".to_owned(),
        ),
        ("not a b64token", form, "token=a%0Ab".to_owned()),
        ("over 16 KiB", form, big),
    ] {
        let response = post(&base, Some(&good), content_type, &body).await;
        assert_eq!(response.status(), 400, "{case}");
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"error":"invalid_request"}"#,
            "{case}"
        );
    }
    let encoded = post(&base, Some(&good), form, "token=abc%2Bdef").await;
    assert_eq!(encoded.status(), 200, "a + sent as %2B is a token");
    let get = http()
        .get(format!("{base}/revoke"))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("send");
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    assert_eq!(auth.calls(), 0, "nothing here asks the AS");
}
