//! Interop suite: the guard in front of the sample FHIR server, against a real third-party
//! authorization server, [oidc-provider](https://github.com/panva/node-oidc-provider) v9,
//! configured by `tests/interop/as.mjs` (our configuration, their server).
//!
//! Each test starts its own oidc-provider (`node as.mjs`) on a free loopback port and stops it
//! when done; keys come from our CLI (`smart-guard keygen`), tokens from the crate's own client,
//! and every request goes over loopback HTTP. The AS counts the calls it gets
//! (`GET /__interop/stats`), which is how "one introspection for many requests" is checked.
//!
//! The tests need Node.js (>= 20) and `npm ci` in `tests/interop`, so they are `#[ignore]`d and
//! `cargo test --all-features` lists them without running them. Run them with
//!
//! ```text
//! (cd tests/interop && npm ci)
//! cargo test --features interop --test interop -- --ignored
//! ```
//!
//! `.ci/run` does exactly that, so in CI they always run and a failure fails the build.
#![allow(unreachable_pub, missing_docs)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use smart_guard::{AssertionAudience, ClientAuth, Config};
use support::{
    AsOptions, FHIR_RS, INTROSPECTION_SCOPE, OidcProvider, RS_SECRET, basic_config, get,
    guard_http, guarded_fhir, key, key_file, now,
};

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn valid_tokens_are_200_and_many_requests_cost_one_introspection_each() {
    let provider = OidcProvider::start(AsOptions::default()).await;
    let fhir = guarded_fhir(basic_config(&provider).with_expected_audience(FHIR_RS)).await;
    for (client, key_name) in [
        ("backend-rs384", "backend-rs384"),
        ("backend-es384", "backend-es384"),
    ] {
        let token = provider
            .token(client, key_name, "system/Patient.rs system/Observation.rs")
            .await;
        assert_eq!(
            token.scope.as_deref(),
            Some("system/Patient.rs system/Observation.rs")
        );
        assert_eq!(token.expires_in, Some(300));
        let before = provider.introspections().await;
        for i in 0..10 {
            let path = if i % 2 == 0 {
                "/Patient/example"
            } else {
                "/Observation?patient=example"
            };
            let answer = get(&fhir, path, token.access_token.as_str()).await;
            assert_eq!(answer.status, 200, "{client} {path}: {answer:?}");
            assert_eq!(
                answer.header("x-smart-client-id"),
                client,
                "claims from oidc-provider"
            );
        }
        assert_eq!(
            get(&fhir, "/Patient/example", token.access_token.as_str())
                .await
                .json()["id"],
            "example"
        );
        assert_eq!(
            provider.introspections().await - before,
            1,
            "{client}: 11 requests, 1 introspection"
        );
    }
    let stats = provider.stats().await;
    assert_eq!(stats["introspection_by_client"], json!({ "rs-basic": 2 }));
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn a_scope_too_narrow_is_403_insufficient_scope() {
    let provider = OidcProvider::start(AsOptions::default()).await;
    let fhir = guarded_fhir(basic_config(&provider)).await;
    // backend-es384 may have Observation too, but asks only for Patient.
    let token = provider
        .token("backend-es384", "backend-es384", "system/Patient.rs")
        .await;
    let token = token.access_token.as_str();
    assert_eq!(get(&fhir, "/Patient/example", token).await.status, 200);
    let denied = get(&fhir, "/Observation?patient=example", token).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let challenge = denied.header("www-authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="system/Observation.s""#),
        "a search needs s: {challenge}"
    );
    assert_eq!(denied.json()["resourceType"], "OperationOutcome");
    // backend-short is not allowed Observation at all: oidc-provider refuses the scope.
    let refused = smart_guard::client::request_token(
        &support::http(),
        &provider.token_url(),
        &smart_guard::client::AssertionSigner::new("backend-short", key("backend-es384").await),
        "system/Observation.rs",
    )
    .await
    .expect_err("scope not allowed for this client");
    assert!(refused.to_string().contains("invalid_scope"), "{refused}");
    assert_eq!(provider.introspections().await, 1);
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn a_revoked_token_is_401_once_its_cache_entry_is_gone_and_never_later_than_the_max_ttl() {
    let max_ttl = Duration::from_secs(2);
    let provider = OidcProvider::start(AsOptions::default()).await;
    let fhir = guarded_fhir(basic_config(&provider).with_max_ttl(max_ttl)).await;
    let token = provider
        .token("backend-es384", "backend-es384", "system/Patient.rs")
        .await;
    let token = token.access_token.as_str();
    assert_eq!(get(&fhir, "/Patient/example", token).await.status, 200);

    assert_eq!(
        provider
            .revoke("backend-es384", "backend-es384", token)
            .await,
        200
    );
    let revoked_at = Instant::now();
    // The cached answer still stands: that is the price of caching (docs/AUTHORIZATION.md §2.4).
    assert_eq!(get(&fhir, "/Patient/example", token).await.status, 200);
    assert_eq!(provider.introspections().await, 1);
    let answer = loop {
        let answer = get(&fhir, "/Patient/example", token).await;
        if answer.status != 200 {
            break answer;
        }
        assert!(
            revoked_at.elapsed() <= max_ttl + Duration::from_millis(500),
            "still 200 {:?} after revocation (max TTL {max_ttl:?})",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer
            .header("www-authenticate")
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(
        provider.introspections().await,
        2,
        "the expired entry was introspected again"
    );
    let stats = provider.stats().await;
    assert_eq!(stats["revocation"], 1);
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn a_short_lived_token_is_401_after_exp_even_while_cached() {
    let provider = OidcProvider::start(AsOptions {
        short_ttl_secs: 3,
        ..AsOptions::default()
    })
    .await;
    let fhir = guarded_fhir(
        basic_config(&provider)
            .with_max_ttl(Duration::from_secs(60))
            .with_clock_skew(Duration::ZERO),
    )
    .await;
    let token = provider
        .token("backend-short", "backend-es384", "system/Patient.rs")
        .await;
    assert_eq!(token.expires_in, Some(3));
    let token = token.access_token.as_str();
    // Learn the exact exp the way the guard does (one extra introspection, as rs-basic).
    let introspected = provider.introspect_as_rs_basic(token).await;
    let exp = introspected["exp"].as_f64().expect("exp");

    let mut ok_before_exp = 0;
    let mut first_401 = None;
    while now() < exp + 1.5 {
        let sent_at = now();
        let answer = get(&fhir, "/Patient/example", token).await;
        if sent_at >= exp {
            assert_eq!(
                answer.status,
                401,
                "at exp{:+.2}s: {answer:?}",
                sent_at - exp
            );
            first_401.get_or_insert(sent_at - exp);
        } else if answer.status == 200 {
            ok_before_exp += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(ok_before_exp >= 5, "served while valid ({ok_before_exp})");
    assert!(
        first_401.is_some_and(|late| late < 0.5),
        "401 right at exp: {first_401:?}"
    );
    // 1 by the guard, 1 by this test; at most one more if moka dropped the entry at exp
    // before the guard's own exp check refused it.
    let introspections = provider.introspections().await;
    assert!(
        (2..=3).contains(&introspections),
        "{introspections} introspections"
    );
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn a_token_for_another_resource_is_401_when_an_audience_is_configured() {
    let provider = OidcProvider::start(AsOptions::default()).await;
    let checked = guarded_fhir(basic_config(&provider).with_expected_audience(FHIR_RS)).await;
    let unchecked = guarded_fhir(basic_config(&provider)).await;
    let ours = provider
        .token("backend-es384", "backend-es384", "system/Patient.rs")
        .await;
    let other = provider
        .token("backend-other", "backend-es384", "system/Patient.rs")
        .await;
    let (ours, other) = (ours.access_token.as_str(), other.access_token.as_str());

    assert_eq!(get(&checked, "/Patient/example", ours).await.status, 200);
    let refused = get(&checked, "/Patient/example", other).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused
            .header("www-authenticate")
            .contains(r#"error="invalid_token""#)
    );
    // The same token passes a guard without an audience: the check is what refuses it.
    assert_eq!(get(&unchecked, "/Patient/example", other).await.status, 200);
}

/// One guard per introspection authentication method, each discovered from the issuer.
#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn every_introspection_authentication_method_works() {
    let provider = OidcProvider::start(AsOptions::default()).await;
    let issuer = provider.issuer.clone();
    let rs = |client: &str| {
        Config::for_issuer(&issuer, client)
            .expect("issuer")
            .with_http_client(guard_http())
    };
    let configs = [
        ("rs-basic", rs("rs-basic").with_client_secret(RS_SECRET)),
        (
            "rs-post",
            rs("rs-post")
                .with_client_secret(RS_SECRET)
                .with_client_auth(ClientAuth::ClientSecretPost),
        ),
        (
            "rs-jwt-es384",
            rs("rs-jwt-es384")
                .with_client_auth(ClientAuth::PrivateKeyJwt)
                .with_private_key(key("rs-jwt-es384").await),
        ),
        (
            "rs-jwt-rs384",
            rs("rs-jwt-rs384")
                .with_client_auth(ClientAuth::PrivateKeyJwt)
                .with_private_key(key("rs-jwt-rs384").await)
                .with_assertion_audience(AssertionAudience::Issuer),
        ),
        (
            "rs-jwt-es384",
            rs("rs-jwt-es384")
                .with_client_auth(ClientAuth::PrivateKeyJwt)
                .with_private_key(key("rs-jwt-es384").await)
                .with_assertion_audience(AssertionAudience::TokenEndpoint),
        ),
        (
            "bearer:rs-bearer",
            rs("rs-bearer")
                .with_client_auth(ClientAuth::Bearer)
                .with_private_key(key("rs-bearer").await)
                .with_token_scope(INTROSPECTION_SCOPE),
        ),
    ];
    let mut want = std::collections::BTreeMap::<&str, u64>::new();
    for (caller, config) in configs {
        let fhir = guarded_fhir(config).await;
        // Three fresh tokens: three introspections with this method.
        for _ in 0..3 {
            let token = provider
                .token("backend-es384", "backend-es384", "system/Patient.rs")
                .await;
            let answer = get(&fhir, "/Patient/example", token.access_token.as_str()).await;
            assert_eq!(answer.status, 200, "{caller}: {answer:?}");
        }
        *want.entry(caller).or_default() += 3;
    }
    let stats = provider.stats().await;
    assert_eq!(stats["introspection_by_client"], json!(want));
    // Bearer mode fetched its own token once and reused it.
    assert_eq!(stats["token_by_client"]["rs-bearer"], 1);
    assert_eq!(stats["introspection_bearer_refused"], 0);
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn configuration_from_env_with_only_an_issuer_discovers_and_signs() {
    let provider = OidcProvider::start(AsOptions::default()).await;
    let key_file = key_file("rs-jwt-rs384").await;
    let env = std::collections::HashMap::from([
        ("SMART_GUARD_ISSUER", provider.issuer.clone()),
        ("SMART_GUARD_CLIENT_ID", "rs-jwt-rs384".to_owned()),
        ("SMART_GUARD_CLIENT_AUTH", "private_key_jwt".to_owned()),
        ("SMART_GUARD_CLIENT_KEY_FILE", key_file),
        ("SMART_GUARD_CLIENT_KEY_ALG", "RS384".to_owned()),
        ("SMART_GUARD_EXPECTED_AUDIENCE", FHIR_RS.to_owned()),
    ]);
    let config = Config::from_lookup(|k| env.get(k).cloned())
        .expect("config")
        .with_http_client(guard_http());
    let fhir = guarded_fhir(config).await;
    let token = provider
        .token("backend-rs384", "backend-rs384", "system/Observation.rs")
        .await;
    let answer = get(
        &fhir,
        "/Observation?patient=example",
        token.access_token.as_str(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["total"], 2);
    assert_eq!(
        provider.stats().await["introspection_by_client"],
        json!({ "rs-jwt-rs384": 1 })
    );

    // A client that is not a registered resource server learns nothing (allowedPolicy), and
    // wrong credentials are a 503 for the FHIR client, never a 401 or 200.
    let outsider = Config::for_issuer(&provider.issuer, "backend-es384")
        .expect("issuer")
        .with_client_auth(ClientAuth::PrivateKeyJwt)
        .with_private_key(key("backend-es384").await)
        .with_http_client(guard_http());
    let outsider = guarded_fhir(outsider).await;
    let answer = get(&outsider, "/Observation", token.access_token.as_str()).await;
    assert_eq!(answer.status, 401, "policy says inactive: {answer:?}");
    let wrong = basic_config(&provider).with_client_secret("not the secret");
    let wrong = guarded_fhir(wrong).await;
    let answer = get(&wrong, "/Observation", token.access_token.as_str()).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!answer.body.contains("not the secret"));
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn the_as_stopped_is_503_with_retry_after_and_service_resumes_when_it_is_back() {
    let mut provider = OidcProvider::start(AsOptions {
        persistent: true,
        ..AsOptions::default()
    })
    .await;
    let fhir = guarded_fhir(
        basic_config(&provider)
            .with_max_ttl(Duration::from_secs(1))
            .with_retry_after(Duration::from_secs(7)),
    )
    .await;
    let token = provider
        .token("backend-es384", "backend-es384", "system/Patient.rs")
        .await;
    let token = token.access_token.as_str();
    assert_eq!(get(&fhir, "/Patient/example", token).await.status, 200);

    provider.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // the cache entry expires
    for attempt in 0..2 {
        let answer = get(&fhir, "/Patient/example", token).await;
        assert_eq!(answer.status, 503, "attempt {attempt}: {answer:?}");
        assert_eq!(answer.header("retry-after"), "7");
        assert!(answer.header("www-authenticate").is_empty());
    }

    provider.restart().await;
    // Same port, same tokens (persistent store): the guard resumes with no restart of its own.
    let answer = get(&fhir, "/Patient/example", token).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(provider.introspections().await, 1);
}

#[tokio::test]
#[ignore = "needs Node.js and `npm ci` in tests/interop"]
async fn the_as_restarted_without_its_tokens_is_401_and_bearer_mode_gets_a_new_token() {
    let mut provider = OidcProvider::start(AsOptions::default()).await;
    let basic = guarded_fhir(basic_config(&provider).with_max_ttl(Duration::from_secs(1))).await;
    let bearer = guarded_fhir(
        Config::for_issuer(&provider.issuer, "rs-bearer")
            .expect("issuer")
            .with_client_auth(ClientAuth::Bearer)
            .with_private_key(key("rs-bearer").await)
            .with_token_scope(INTROSPECTION_SCOPE)
            .with_max_ttl(Duration::from_secs(1))
            .with_http_client(guard_http()),
    )
    .await;
    let old = provider
        .token("backend-es384", "backend-es384", "system/Patient.rs")
        .await;
    let old = old.access_token.as_str();
    assert_eq!(get(&basic, "/Patient/example", old).await.status, 200);
    assert_eq!(get(&bearer, "/Patient/example", old).await.status, 200);
    assert_eq!(provider.stats().await["token_by_client"]["rs-bearer"], 1);

    provider.restart().await; // in-memory store: every token is forgotten
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for fhir in [&basic, &bearer] {
        let answer = get(fhir, "/Patient/example", old).await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(
            answer
                .header("www-authenticate")
                .contains(r#"error="invalid_token""#)
        );
    }
    // The bearer guard's own token was forgotten too: the AS refused it once, the guard got a
    // new one and retried.
    let stats = provider.stats().await;
    assert_eq!(stats["introspection_bearer_refused"], 1, "{stats}");
    assert_eq!(stats["token_by_client"]["rs-bearer"], 1, "{stats}");

    let new = provider
        .token("backend-es384", "backend-es384", "system/Patient.rs")
        .await;
    for fhir in [&basic, &bearer] {
        let answer = get(fhir, "/Patient/example", new.access_token.as_str()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
}
