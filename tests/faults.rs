//! The guard against a faulty authorization server, over loopback HTTP: refused connections,
//! hangs, slow answers, 5xx, rejected credentials, garbage, oversized and truncated bodies, a
//! flapping AS; and the protections: circuit breaker, in-flight cap, request deadline,
//! stale-if-error. Every scenario checks the status, `Retry-After`, the OperationOutcome and the
//! number of AS calls, and that nothing is ever wrongly allowed.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{Value, json};
use smart_guard::{Config, GuardStats, SmartGuardLayer};
use support::{Behaviour, Logs, MockAs, active, assert_denied, fhir_routes, http, now, serve};

const TOKEN: &str = "valid-token";

/// A guarded FHIR app and the layer (for its stats).
struct Fhir {
    base: String,
    layer: SmartGuardLayer,
    client: reqwest::Client,
    _task: tokio::task::JoinHandle<()>,
}

impl Fhir {
    async fn start(config: Config) -> Self {
        let layer = SmartGuardLayer::new(config).expect("layer");
        let (base, task) = serve(
            Router::new()
                .nest("/fhir", fhir_routes())
                .layer(layer.clone()),
        )
        .await;
        Self {
            base,
            layer,
            client: http(),
            _task: task,
        }
    }

    async fn get(&self, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/fhir/Patient/1", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the guard answers (no panic, no dropped connection)")
    }

    async fn status(&self, token: &str) -> u16 {
        self.get(token).await.status().as_u16()
    }

    fn stats(&self) -> GuardStats {
        self.layer.stats()
    }
}

/// Short timeouts, so failing calls end quickly.
fn config(auth: &MockAs) -> Config {
    auth.config()
        .with_timeouts(Duration::from_millis(300), Duration::from_millis(300))
        .with_retry_after(Duration::from_secs(3))
}

/// A 503 with `Retry-After: 3`, no challenge and a `transient` OperationOutcome.
async fn assert_unavailable(response: reqwest::Response, label: &str) {
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"3"[..]),
        "{label}: Retry-After"
    );
    let body = assert_denied(response, 503, None, "transient").await;
    assert!(
        !body.to_string().contains(TOKEN),
        "{label}: the body never echoes the token"
    );
}

#[tokio::test]
async fn a_refused_connection_is_503_and_service_resumes_when_the_as_is_back() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let fhir = Fhir::start(config(&auth)).await;
    auth.stop();
    let started = Instant::now();
    assert_unavailable(fhir.get(TOKEN).await, "refused").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal is fast"
    );
    assert_eq!(auth.calls(), 0);

    auth.restart().await;
    assert_eq!(
        fhir.status(TOKEN).await,
        200,
        "no restart of the guard needed"
    );
    assert_eq!(fhir.status(TOKEN).await, 200);
    assert_eq!(
        auth.calls(),
        1,
        "the failure was not cached; the success is"
    );
}

#[tokio::test]
async fn an_as_that_accepts_but_never_answers_is_503_at_the_timeout() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.behave(Behaviour::Hang);
    let fhir = Fhir::start(config(&auth)).await;
    let started = Instant::now();
    assert_unavailable(fhir.get(TOKEN).await, "hang").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(auth.calls(), 1);
    assert_eq!(
        fhir.stats().introspection_errors,
        [(smart_guard::IntrospectErrorKind::Timeout, 1)]
    );
    auth.behave(Behaviour::Normal);
    assert_eq!(fhir.status(TOKEN).await, 200);
}

#[tokio::test]
async fn a_slow_answer_within_the_timeout_is_used_and_one_beyond_it_is_503() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.answer("other", active("system/Patient.rs"));
    auth.behave(Behaviour::Delay(Duration::from_millis(100)));
    let fhir = Fhir::start(config(&auth)).await;
    assert_eq!(fhir.status(TOKEN).await, 200);
    auth.behave(Behaviour::Delay(Duration::from_millis(600)));
    assert_unavailable(fhir.get("other").await, "too slow").await;
    assert_eq!(fhir.status(TOKEN).await, 200, "still cached");
    assert_eq!(auth.calls(), 2);
}

#[tokio::test]
async fn broken_answers_are_503_never_cached_and_never_an_allow() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    // Enough failures in a row to open the default breaker: keep it out of this test.
    let fhir = Fhir::start(
        config(&auth)
            .with_max_response_bytes(4096)
            .with_breaker(100, Duration::from_secs(5)),
    )
    .await;
    for (behaviour, label) in [
        (Behaviour::Status(500), "500"),
        (Behaviour::Status(502), "502"),
        (Behaviour::Status(503), "503"),
        (Behaviour::Status(429), "429"),
        (Behaviour::Status(400), "400"),
        (Behaviour::Raw("<html>busy</html>"), "not JSON"),
        (Behaviour::Raw(r#"["active", true]"#), "not an object"),
        (
            Behaviour::Raw(r#"{"active":true,"exp":"tomorrow"}"#),
            "exp a string",
        ),
        (Behaviour::TruncatedBody, "truncated body"),
        (Behaviour::HugeBody(10_000), "huge body with Content-Length"),
        (Behaviour::HugeChunked(1_000_000), "huge chunked body"),
        (
            Behaviour::ConnectionClose,
            "connection closed without an answer",
        ),
    ] {
        auth.behave(behaviour);
        let before = auth.calls();
        assert_unavailable(fhir.get(TOKEN).await, label).await;
        assert_eq!(
            auth.calls(),
            before + 1,
            "{label}: one call, nothing cached"
        );
    }
    let errors: std::collections::HashMap<_, _> =
        fhir.stats().introspection_errors.into_iter().collect();
    use smart_guard::IntrospectErrorKind as K;
    assert_eq!(errors.get(&K::Status), Some(&5));
    assert_eq!(errors.get(&K::MalformedAnswer), Some(&3));
    assert_eq!(errors.get(&K::AnswerTooLarge), Some(&2));
    assert_eq!(errors.get(&K::Transport), Some(&2), "{errors:?}");
    assert_eq!(fhir.stats().allowed, 0);

    // Just under the limit is read (and, having no exp, refused as a token).
    auth.behave(Behaviour::HugeBody(4000));
    assert_eq!(fhir.status(TOKEN).await, 401);
    auth.behave(Behaviour::Normal);
    assert_eq!(fhir.status(TOKEN).await, 200, "recovers without restart");
}

/// docs/AUTHORIZATION.md §2.3: a missing or non-boolean `active` counts as inactive (401
/// `invalid_token`), never cached; not a 503.
#[tokio::test]
async fn answers_without_a_boolean_active_are_inactive_and_never_cached() {
    let auth = MockAs::start().await;
    let fhir = Fhir::start(config(&auth)).await;
    let exp = now() + 300;
    for (answer, label) in [
        (
            json!({ "scope": "system/*.cruds", "exp": exp }),
            "no active",
        ),
        (
            json!({ "active": "true", "scope": "system/*.cruds", "exp": exp }),
            "a string",
        ),
        (
            json!({ "active": 1, "scope": "system/*.cruds", "exp": exp }),
            "a number",
        ),
    ] {
        auth.answer(TOKEN, answer);
        for _ in 0..2 {
            let before = auth.calls();
            let response = fhir.get(TOKEN).await;
            assert_denied(
                response,
                401,
                Some(r#"Bearer realm="fhir", error="invalid_token""#),
                "login",
            )
            .await;
            assert_eq!(auth.calls(), before + 1, "{label}: asked again every time");
        }
    }
}

#[tokio::test]
async fn rejected_credentials_are_503_and_logged_as_an_error_once_per_interval() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let wrong = Config::new(
        auth.url().parse().expect("url"),
        support::RS_CLIENT_ID,
        "wrong",
    )
    .with_base_path("/fhir")
    .expect("base")
    .with_retry_after(Duration::from_secs(3));
    let fhir = Fhir::start(wrong).await;
    for i in 0..8 {
        assert_unavailable(fhir.get(&format!("{TOKEN}-{i}")).await, "credentials").await;
    }
    assert_eq!(
        auth.calls(),
        8,
        "a misconfiguration never opens the breaker"
    );
    let errors = logs.lines_with("ERROR");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("rejected our credentials"),
        "{}",
        errors[0]
    );
    assert!(!logs.text().contains("wrong"), "the secret is never logged");
    assert_eq!(fhir.stats().breaker_openings, 0);
}

#[tokio::test]
async fn cached_tokens_keep_working_during_an_outage_until_their_ttl() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let fhir = Fhir::start(config(&auth).with_max_ttl(Duration::from_secs(1))).await;
    assert_eq!(fhir.status(TOKEN).await, 200);
    auth.stop();
    for _ in 0..3 {
        assert_eq!(fhir.status(TOKEN).await, 200, "cached");
    }
    assert_unavailable(fhir.get("uncached").await, "uncached during the outage").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_unavailable(fhir.get(TOKEN).await, "after its TTL").await;
    auth.restart().await;
    assert_eq!(fhir.status(TOKEN).await, 200);
    assert_eq!(auth.calls(), 2);
}

#[tokio::test]
async fn a_flapping_as_never_causes_a_wrong_allow() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.answer("narrow", active("system/Observation.rs"));
    auth.answer("revoked", json!({ "active": false }));
    let fhir = Fhir::start(
        config(&auth)
            .with_max_ttl(Duration::from_secs(1))
            .with_negative_ttl(Duration::from_secs(1))
            .with_breaker(3, Duration::from_millis(100)),
    )
    .await;
    let mut seen = std::collections::HashMap::<(&str, u16), usize>::new();
    // Phases of ~150 ms (longer than the cool-down): down, back, 5xx, back.
    for phase in 0..8 {
        match phase % 4 {
            0 => auth.stop(),
            1 | 3 => {
                auth.restart().await;
                auth.behave(Behaviour::Normal);
            }
            _ => auth.behave(Behaviour::Status(503)),
        }
        for _ in 0..3 {
            for token in [TOKEN, "narrow", "revoked", "unknown"] {
                let status = fhir.status(token).await;
                *seen.entry((token, status)).or_default() += 1;
                match token {
                    TOKEN => assert!(matches!(status, 200 | 503), "{token} {status}"),
                    "narrow" => assert!(matches!(status, 403 | 503), "{token} {status}"),
                    _ => assert!(matches!(status, 401 | 503), "{token} {status}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    auth.behave(Behaviour::Normal);
    // After the flapping, a probe (once the cool-down is over) closes the breaker.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(fhir.status("fresh-unknown").await, 401);
    assert_eq!(fhir.status(TOKEN).await, 200, "{seen:?}");
    for key in [
        (TOKEN, 200),
        (TOKEN, 503),
        ("narrow", 403),
        ("revoked", 401),
    ] {
        assert!(seen.contains_key(&key), "{key:?} in {seen:?}");
    }
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_outages_and_one_probe_closes_it() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.answer_unknown(json!({ "active": false }));
    let fhir = Fhir::start(
        config(&auth)
            .with_timeouts(Duration::from_millis(300), Duration::from_secs(2))
            .with_breaker(3, Duration::from_millis(1000)),
    )
    .await;
    assert_eq!(fhir.status(TOKEN).await, 200, "warm");

    auth.behave(Behaviour::Status(500));
    for i in 0..3 {
        assert_unavailable(fhir.get(&format!("miss-{i}")).await, "outage").await;
    }
    assert_eq!(auth.calls(), 4);
    let started = Instant::now();
    for i in 0..5 {
        assert_unavailable(fhir.get(&format!("open-{i}")).await, "breaker open").await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "refused at once"
    );
    assert_eq!(auth.calls(), 4, "no AS call while open");
    assert_eq!(fhir.status(TOKEN).await, 200, "cached tokens still work");
    let stats = fhir.stats();
    assert_eq!(
        (stats.breaker_openings, stats.breaker_open_rejections),
        (1, 5)
    );
    assert_eq!(stats.cache_misses, 4, "refused calls are not misses");

    // After the cool-down: exactly one probe, even with many uncached tokens at once.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    auth.behave(Behaviour::Delay(Duration::from_millis(400)));
    let statuses = futures_join(&fhir, 6).await;
    assert_eq!(auth.calls(), 5, "one probe: {statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        5,
        "{statuses:?}"
    );
    // The probe's answer closed it.
    assert_eq!(fhir.status("after-probe").await, 401);
    assert_eq!(auth.calls(), 6);
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_for_another_cool_down() {
    let auth = MockAs::start().await;
    let fhir = Fhir::start(config(&auth).with_breaker(2, Duration::from_millis(200))).await;
    auth.stop();
    for i in 0..2 {
        assert_unavailable(fhir.get(&format!("a-{i}")).await, "refused").await;
    }
    assert_unavailable(fhir.get("open").await, "open").await;
    tokio::time::sleep(Duration::from_millis(220)).await;
    auth.restart().await;
    auth.behave(Behaviour::Status(503));
    assert_unavailable(fhir.get("probe").await, "failed probe").await;
    assert_eq!(auth.calls(), 1, "only the probe reached the AS");
    assert_unavailable(fhir.get("open-again").await, "open again").await;
    assert_eq!(auth.calls(), 1);
    assert_eq!(fhir.stats().breaker_openings, 2);
}

/// `n` concurrent requests with distinct uncached tokens; their statuses.
async fn futures_join(fhir: &Fhir, n: usize) -> Vec<u16> {
    let requests = (0..n).map(|i| {
        let url = format!("{}/fhir/Patient/1", fhir.base);
        let client = fhir.client.clone();
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(format!("concurrent-{i}"))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        })
    });
    let mut statuses = Vec::new();
    for handle in requests.collect::<Vec<_>>() {
        statuses.push(handle.await.expect("join"));
    }
    statuses
}

#[tokio::test]
async fn misses_beyond_the_in_flight_cap_get_503_at_once() {
    let auth = MockAs::start().await;
    auth.answer_unknown(active("system/Patient.rs"));
    auth.behave(Behaviour::Delay(Duration::from_millis(400)));
    let fhir = Fhir::start(
        config(&auth)
            .with_timeouts(Duration::from_millis(500), Duration::from_secs(2))
            .with_max_in_flight(2),
    )
    .await;
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..6 {
        let url = format!("{}/fhir/Patient/1", fhir.base);
        let client = fhir.client.clone();
        handles.push(tokio::spawn(async move {
            let response = client
                .get(url)
                .bearer_auth(format!("t-{i}"))
                .send()
                .await
                .expect("send");
            (response.status().as_u16(), started.elapsed())
        }));
        // Let the first two take the permits.
        if i < 2 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("join"));
    }
    assert_eq!(auth.calls(), 2, "{results:?}");
    let ok: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    let shed: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!((ok.len(), shed.len()), (2, 4), "{results:?}");
    assert!(
        shed.iter().all(|(_, t)| *t < Duration::from_millis(300)),
        "refused without queueing: {results:?}"
    );
    assert_eq!(fhir.stats().in_flight_rejections, 4);
    assert_eq!(
        fhir.stats().breaker_openings,
        0,
        "shedding is not an outage"
    );

    // Requests coalesced onto one call take one permit between them.
    let same = (0..10).map(|_| {
        let url = format!("{}/fhir/Patient/1", fhir.base);
        let client = fhir.client.clone();
        tokio::spawn(async move {
            let r = client.get(url).bearer_auth("shared").send().await;
            r.expect("send").status().as_u16()
        })
    });
    for handle in same.collect::<Vec<_>>() {
        assert_eq!(handle.await.expect("join"), 200);
    }
    assert_eq!(auth.calls(), 3);
}

#[tokio::test]
async fn no_request_waits_past_its_deadline_even_without_a_client_timeout() {
    let auth = MockAs::start().await;
    auth.behave(Behaviour::Hang);
    // A caller-supplied client with no timeout at all: the deadline still bounds the wait.
    let patient = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let fhir = Fhir::start(
        config(&auth)
            .with_http_client(patient)
            .with_request_deadline(Duration::from_millis(300)),
    )
    .await;
    let first = async {
        let started = Instant::now();
        let status = fhir.status(TOKEN).await;
        (status, started.elapsed())
    };
    let joined = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let status = fhir.status(TOKEN).await;
        (status, started.elapsed())
    };
    let (first, joined) = tokio::join!(first, joined);
    for (status, took) in [first, joined] {
        assert_eq!(status, 503);
        assert!(took < Duration::from_millis(700), "{took:?}");
    }
    assert_eq!(auth.calls(), 1, "the second request joined the first call");
    let stats = fhir.stats();
    assert_eq!(
        stats.introspection_errors,
        [(smart_guard::IntrospectErrorKind::Timeout, 1)]
    );
}

#[tokio::test]
async fn stale_if_error_serves_the_last_active_answer_during_an_outage_only() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    auth.answer("narrow", active("system/Observation.rs"));
    auth.answer("revoked", json!({ "active": false }));
    let short = json!({
        "active": true, "scope": "system/Patient.rs", "exp": now() + 1, "token_type": "bearer"
    });
    auth.answer("short-lived", short);
    let fhir = Fhir::start(
        config(&auth)
            .with_max_ttl(Duration::from_secs(1))
            .with_negative_ttl(Duration::from_secs(1))
            .with_stale_if_error(Duration::from_secs(30))
            .with_breaker(100, Duration::from_secs(5)),
    )
    .await;
    for (token, status) in [
        (TOKEN, 200),
        ("narrow", 403),
        ("revoked", 401),
        ("short-lived", 200),
    ] {
        assert_eq!(fhir.status(token).await, status, "{token}");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // every cache entry is gone

    auth.behave(Behaviour::Status(503));
    let response = fhir.get(TOKEN).await;
    assert_eq!(response.status(), 200, "stale during a 5xx outage");
    let seen: Value = response.json().await.expect("claims");
    assert_eq!(seen["client_id"], "backend-app");
    assert_eq!(
        fhir.status("narrow").await,
        403,
        "stale claims are still scope-checked"
    );
    assert_unavailable(
        fhir.get("revoked").await,
        "inactive answers are never stale",
    )
    .await;
    assert_unavailable(fhir.get("short-lived").await, "never past exp").await;
    assert_unavailable(fhir.get("unknown").await, "nothing to serve").await;
    auth.stop();
    assert_eq!(fhir.status(TOKEN).await, 200, "stale when refused too");
    auth.restart().await;
    auth.behave(Behaviour::Raw("garbage"));
    assert_unavailable(
        fhir.get(TOKEN).await,
        "an AS that answers garbage is no outage",
    )
    .await;
    assert_eq!(fhir.stats().stale_served, 3);
    assert_eq!(
        logs.lines_with("stale introspection answer")
            .iter()
            .filter(|l| l.contains("WARN"))
            .count(),
        1,
        "warned once per interval"
    );

    // The AS answers again and says the token is no longer active: no stale after that.
    auth.answer(TOKEN, json!({ "active": "no" })); // inactive, and not cached
    auth.behave(Behaviour::Normal);
    assert_eq!(fhir.status(TOKEN).await, 401);
    auth.behave(Behaviour::Status(503));
    assert_unavailable(fhir.get(TOKEN).await, "after an inactive answer").await;
    assert_eq!(fhir.stats().stale_served, 3);
}

#[tokio::test]
async fn stale_if_error_keeps_its_answer_when_nothing_is_cached() {
    // A TTL of 0 (every request asks the AS) with stale-if-error: the last active answer is
    // still there for an outage.
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let fhir = Fhir::start(
        config(&auth)
            .with_max_ttl(Duration::ZERO)
            .with_stale_if_error(Duration::from_secs(30))
            .with_breaker(100, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(fhir.status(TOKEN).await, 200);
    assert_eq!(fhir.status(TOKEN).await, 200);
    assert_eq!(auth.calls(), 2, "nothing cached");
    auth.behave(Behaviour::Status(503));
    assert_eq!(fhir.status(TOKEN).await, 200, "stale during the outage");
    assert_eq!(fhir.stats().stale_served, 1);
}

#[tokio::test]
async fn stale_if_error_is_off_by_default() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let fhir = Fhir::start(config(&auth).with_max_ttl(Duration::from_secs(1))).await;
    assert_eq!(fhir.status(TOKEN).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    auth.behave(Behaviour::Status(503));
    assert_unavailable(fhir.get(TOKEN).await, "no stale by default").await;
    assert_eq!(fhir.stats().stale_served, 0);
}
