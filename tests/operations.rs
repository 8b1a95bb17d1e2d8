//! What an operator relies on: a TTL of 0, the client secret from a file, the warning for a
//! misspelt variable, logs that stay short during an outage, the audit record and hook, and
//! readiness. Over loopback HTTP against the scripted AS of `tests/support`.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use smart_guard::{
    AuditOutcome, AuthFailure, BreakerState, ClientAuth, Config, SmartGuardLayer,
    config::env::{
        ENV_CACHE_MAX_TTL_SECS, ENV_CLIENT_AUTH, ENV_CLIENT_ID, ENV_CLIENT_SECRET,
        ENV_CLIENT_SECRET_FILE, ENV_INTROSPECTION_URL,
    },
};
use support::{
    Behaviour, Logs, MockAs, RS_CLIENT_ID, RS_SECRET, active, fhir_routes, get_with_token, http,
};

const TOKEN: &str = "operations-token-7Qx2";

async fn serve_layer(layer: &SmartGuardLayer) -> String {
    let (base, task) = support::serve(
        Router::new()
            .nest("/fhir", fhir_routes())
            .layer(layer.clone()),
    )
    .await;
    std::mem::forget(task);
    base
}

async fn status(base: &str, path: &str, token: Option<&str>) -> u16 {
    let request = http().get(format!("{base}{path}"));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("send").status().as_u16()
}

#[tokio::test]
async fn a_ttl_of_zero_caches_no_active_answer_and_warns_at_startup() {
    let logs = Logs::default();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let layer = SmartGuardLayer::new(auth.config().with_max_ttl(Duration::ZERO)).expect("layer");
    assert_eq!(
        logs.lines_with("SMART_GUARD_CACHE_MAX_TTL_SECS is 0").len(),
        1,
        "{}",
        logs.text()
    );
    let base = serve_layer(&layer).await;
    for _ in 0..3 {
        assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 200);
    }
    assert_eq!(auth.calls(), 3, "every request asks the AS");
    // Revocation takes effect at the next request.
    auth.answer(TOKEN, serde_json::json!({ "active": false }));
    assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 401);
    assert_eq!(auth.calls(), 4);
}

#[tokio::test]
async fn a_ttl_of_zero_is_accepted_from_the_environment() {
    let env = [
        (ENV_INTROSPECTION_URL, "http://127.0.0.1:9/introspect"),
        (ENV_CLIENT_ID, "fhir"),
        (ENV_CLIENT_SECRET, "s3cret"),
        (ENV_CACHE_MAX_TTL_SECS, "0"),
    ];
    let config = Config::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| (*v).to_owned())
    });
    assert!(config.is_ok(), "{config:?}");
}

/// A configuration from `pairs` over the scripted AS's address, through the env reader.
fn config_from(auth: &MockAs, pairs: &[(&str, &str)]) -> Result<Config, smart_guard::ConfigError> {
    let url = auth.url();
    let mut env = vec![
        (ENV_INTROSPECTION_URL, url.as_str()),
        (ENV_CLIENT_ID, RS_CLIENT_ID),
    ];
    env.extend_from_slice(pairs);
    Config::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| (*v).to_owned())
    })
}

#[tokio::test]
async fn the_client_secret_file_less_one_trailing_newline_is_what_the_as_receives() {
    let dir = tempdir("secret-file");
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    // (Which bytes count as the secret, for more odd files, is in the unit tests.)
    for content in [
        format!("{RS_SECRET}\n"),
        format!("{RS_SECRET}\r\n"),
        RS_SECRET.to_owned(),
    ] {
        let path = dir.join("secret");
        std::fs::write(&path, &content).expect("write");
        let config = config_from(
            &auth,
            &[
                (ENV_CLIENT_AUTH, "client_secret_post"),
                (ENV_CLIENT_SECRET_FILE, path.to_str().expect("utf-8 path")),
            ],
        )
        .expect("config")
        .with_base_path("/fhir")
        .expect("base");
        let layer = SmartGuardLayer::new(config).expect("layer");
        let base = serve_layer(&layer).await;
        let response = get_with_token(&http(), format!("{base}/fhir/Patient/1"), TOKEN).await;
        assert_eq!(response.status(), 200);
        assert!(
            auth.last_form()
                .contains(&("client_secret".into(), RS_SECRET.into())),
            "{content:?}: {:?}",
            auth.last_form()
        );
    }
}

#[tokio::test]
async fn a_secret_file_that_is_unreadable_empty_or_set_beside_the_secret_is_a_startup_error() {
    let dir = tempdir("secret-errors");
    let auth = MockAs::start().await;
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let good = dir.join("good");
    std::fs::write(&good, "s3cret").expect("write");
    let missing = dir.join("missing");
    let (empty, good, missing) = (
        empty.to_str().expect("utf-8"),
        good.to_str().expect("utf-8"),
        missing.to_str().expect("utf-8"),
    );
    for (pairs, want) in [
        (
            vec![(ENV_CLIENT_SECRET_FILE, missing)],
            format!("SMART_GUARD_CLIENT_SECRET_FILE is invalid: cannot read {missing:?}: entity not found"),
        ),
        (
            vec![(ENV_CLIENT_SECRET_FILE, empty)],
            format!("SMART_GUARD_CLIENT_SECRET_FILE is invalid: {empty:?} is empty"),
        ),
        (
            vec![(ENV_CLIENT_SECRET_FILE, good), (ENV_CLIENT_SECRET, "other")],
            "SMART_GUARD_CLIENT_SECRET_FILE is invalid: is set together with SMART_GUARD_CLIENT_SECRET: set one of them".to_owned(),
        ),
        (
            vec![],
            "SMART_GUARD_CLIENT_SECRET is required but not set".to_owned(),
        ),
    ] {
        let error = config_from(&auth, &pairs).expect_err(&want);
        assert_eq!(error.to_string(), want);
        assert!(!error.to_string().contains("s3cret"));
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smart-guard-ops-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The environment variable that makes this test binary, re-executed, read its environment
/// with `Config::from_env` (not a `SMART_GUARD_*` name: it would be warned about itself).
const CHILD_ENV: &str = "OPERATIONS_TEST_CHILD";

/// Run in a child process by the next test: reads the environment as the layer does and
/// prints the log lines.
#[test]
#[ignore = "run by a_misspelt_variable_is_a_startup_warning_that_names_it"]
fn child_reads_its_environment() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let logs = Logs::default();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let config = Config::from_env();
    println!("config ok: {}", config.is_ok());
    println!("{}", logs.text());
}

#[test]
fn a_misspelt_variable_is_a_startup_warning_that_names_it() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_reads_its_environment",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env(ENV_INTROSPECTION_URL, "http://127.0.0.1:9/introspect")
        .env(ENV_CLIENT_ID, "fhir")
        .env(ENV_CLIENT_SECRET, "s3cret")
        .env("SMART_GUARD_CACHE_MAX_TTL_SEC", "30")
        .env("SMART_GUARD_NOT_A_SETTING_AT_ALL", "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("config ok: true"), "{stdout}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    assert!(
        warnings.iter().any(|l| l.contains(
            "SMART_GUARD_CACHE_MAX_TTL_SEC is not a smart-guard setting and is ignored (did you mean SMART_GUARD_CACHE_MAX_TTL_SECS?)"
        )),
        "{stdout}"
    );
    assert!(
        warnings.iter().any(|l| l.contains(
            "SMART_GUARD_NOT_A_SETTING_AT_ALL is not a smart-guard setting and is ignored"
        ) && !l.contains("did you mean")),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

/// 10,000 requests with an unknown token while the AS answers garbage (every one a call, a
/// failure and a 503; the breaker stays closed since the AS does answer): a handful of lines.
#[tokio::test]
async fn a_burst_of_ten_thousand_503s_logs_a_few_summary_lines() {
    let logs = Logs::default();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let auth = MockAs::start().await;
    auth.behave(Behaviour::Raw("garbage"));
    let layer = SmartGuardLayer::new(auth.config()).expect("layer");
    let base = serve_layer(&layer).await;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (client, base, sent) = (http(), base.clone(), Arc::clone(&sent));
        workers.spawn(async move {
            while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10_000 {
                let url = format!("{base}/fhir/Patient/1");
                let response = get_with_token(&client, url, TOKEN).await;
                assert_eq!(response.status(), 503);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    let stats = layer.stats();
    assert_eq!(
        stats.denied,
        [(AuthFailure::Unavailable, 10_000)],
        "{stats:?}"
    );
    assert!(auth.calls() >= 1);
    let warn_lines = |needle: &str| {
        logs.lines_with(needle)
            .into_iter()
            .filter(|l| l.contains(" WARN "))
            .count()
    };
    // The first of each is logged at once; the next at the earliest 10 s later.
    let answered = warn_lines("denied with 503");
    let failed = warn_lines("introspection failed");
    assert!((1..=2).contains(&answered), "{answered} lines of 503s");
    assert!((1..=2).contains(&failed), "{failed} lines of failed calls");
    let total = logs.text().lines().filter(|l| l.contains(" WARN ")).count();
    assert!(total <= 4, "{total} WARN lines:\n{}", logs.text());
}

/// What the hook saw of one decision.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    outcome: AuditOutcome,
    status: Option<u16>,
    path: String,
    client_id: Option<String>,
    interaction: Option<String>,
    types: Vec<String>,
    granted_by: Vec<String>,
    missing: Option<String>,
}

#[tokio::test]
async fn the_audit_hook_receives_every_decision_with_client_interaction_types_and_scopes() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs system/Observation.r"));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let config = auth.config().with_audit_hook(move |event| {
        sink.lock().expect("lock").push(Seen {
            outcome: event.outcome(),
            status: event.status().map(|s| s.as_u16()),
            path: event.path().to_owned(),
            client_id: event.client_id().map(str::to_owned),
            interaction: event.interaction().map(|i| i.to_string()),
            types: event.resource_types().map(|t| t.to_string()).collect(),
            granted_by: event.granted_by().iter().map(|s| s.to_string()).collect(),
            missing: event.missing_scope().map(|m| m.scope_hint()),
        });
    });
    let layer = SmartGuardLayer::new(config).expect("layer");
    let base = serve_layer(&layer).await;
    assert_eq!(
        status(
            &base,
            "/fhir/Patient?_revinclude=Observation:subject",
            Some(TOKEN)
        )
        .await,
        403
    );
    assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 200);
    assert_eq!(status(&base, "/fhir/Patient/1", None).await, 401);
    assert_eq!(status(&base, "/fhir/metadata", None).await, 200);
    let seen = seen.lock().expect("lock").clone();
    let string = |s: &str| s.to_owned();
    assert_eq!(
        seen,
        [
            Seen {
                outcome: AuditOutcome::Denied(AuthFailure::InsufficientScope),
                status: Some(403),
                path: string("/fhir/Patient"),
                client_id: Some(string("backend-app")),
                interaction: Some(string("search-type")),
                types: vec![string("Patient"), string("Observation")],
                granted_by: vec![],
                missing: Some(string("system/Observation.s")),
            },
            Seen {
                outcome: AuditOutcome::Allowed,
                status: None,
                path: string("/fhir/Patient/1"),
                client_id: Some(string("backend-app")),
                interaction: Some(string("read")),
                types: vec![string("Patient")],
                granted_by: vec![string("system/Patient.rs")],
                missing: None,
            },
            Seen {
                outcome: AuditOutcome::Denied(AuthFailure::MissingToken),
                status: Some(401),
                path: string("/fhir/Patient/1"),
                client_id: None,
                interaction: None,
                types: vec![],
                granted_by: vec![],
                missing: None,
            },
            Seen {
                outcome: AuditOutcome::Public,
                status: None,
                path: string("/fhir/metadata"),
                client_id: None,
                interaction: None,
                types: vec![],
                granted_by: vec![],
                missing: None,
            },
        ]
    );
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn the_audit_log_is_one_info_line_per_decision_without_the_token_and_off_by_default() {
    let logs = Logs::default();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let quiet = SmartGuardLayer::new(auth.config()).expect("layer");
    let base = serve_layer(&quiet).await;
    assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 200);
    assert!(
        logs.lines_with("smart_guard::audit").is_empty(),
        "off by default"
    );

    let env = [
        (ENV_INTROSPECTION_URL, auth.url()),
        (ENV_CLIENT_ID, RS_CLIENT_ID.to_owned()),
        (ENV_CLIENT_SECRET, support::RS_SECRET.to_owned()),
        ("SMART_GUARD_AUDIT", "true".to_owned()),
        ("SMART_GUARD_BASE_PATH", "/fhir".to_owned()),
    ];
    let config = Config::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    let layer = SmartGuardLayer::new(config).expect("layer");
    let base = serve_layer(&layer).await;
    assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 200);
    assert_eq!(status(&base, "/fhir/Observation", Some(TOKEN)).await, 403);
    let lines = logs.lines_with("smart_guard::audit");
    assert_eq!(lines.len(), 2, "{}", logs.text());
    assert!(lines.iter().all(|l| l.contains(" INFO ")), "{lines:?}");
    for field in [
        "outcome=\"allowed\"",
        "client_id=\"backend-app\"",
        "jti=\"jti-1\"",
        "method=GET",
        "path=\"/fhir/Patient/1\"",
        "interaction=\"read\"",
        "types=Patient",
        "granted_by=system/Patient.rs",
    ] {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
    for field in [
        "outcome=\"insufficient_scope\"",
        "status=403",
        "interaction=\"search-type\"",
        "missing=\"system/Observation.s\"",
    ] {
        assert!(lines[1].contains(field), "{field} in {}", lines[1]);
    }
    assert!(!logs.text().contains(TOKEN), "the token is never logged");
}

#[tokio::test]
async fn readiness_follows_the_breaker_and_the_last_answer() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let layer = SmartGuardLayer::new(
        auth.config()
            .with_breaker(1, Duration::from_millis(300))
            .with_client_auth(ClientAuth::ClientSecretBasic),
    )
    .expect("layer");
    let fresh = layer.readiness();
    assert!(fresh.is_ready());
    assert_eq!(fresh.since_last_answer, None);
    let base = serve_layer(&layer).await;
    assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 200);
    let answered = layer.readiness();
    assert!(answered.is_ready());
    assert!(
        answered
            .since_last_answer
            .is_some_and(|d| d < Duration::from_secs(5))
    );

    auth.behave(Behaviour::Status(503));
    assert_eq!(
        status(&base, "/fhir/Patient/2", Some("another-token")).await,
        503
    );
    let open = layer.readiness();
    assert_eq!(open.breaker, BreakerState::Open);
    assert!(!open.is_ready());

    auth.behave(Behaviour::Normal);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(layer.readiness().breaker, BreakerState::Probing);
    assert_eq!(
        status(&base, "/fhir/Patient/3", Some(TOKEN)).await,
        200,
        "cached"
    );
    assert_eq!(
        status(&base, "/fhir/Patient/4", Some("third-token")).await,
        401
    );
    assert!(layer.readiness().is_ready(), "the probe's answer closed it");
}

/// The gauges of the breaker's state and of the calls in flight reach the recorder.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn the_breaker_state_and_calls_in_flight_are_gauges() {
    use metrics_util::{
        CompositeKey, MetricKind,
        debugging::{DebugValue, DebuggingRecorder},
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A current-thread runtime: every task of this test records here.
    let _recorder = metrics::set_default_local_recorder(&recorder);
    // The debugging recorder hands out each gauge's change since the last snapshot (it resets
    // them), so the levels are summed here.
    let levels = std::cell::RefCell::new(std::collections::HashMap::<String, f64>::new());
    let gauge = |name: &str| {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let (kind, key): (MetricKind, _) = CompositeKey::into_parts(key);
            if let (MetricKind::Gauge, DebugValue::Gauge(v)) = (kind, value) {
                let mut levels = levels.borrow_mut();
                let level = levels.entry(key.name().to_owned()).or_default();
                if key.name() == "smart_guard_breaker_state" {
                    *level = v.into_inner(); // set, not summed
                } else {
                    *level += v.into_inner();
                }
            }
        }
        levels.borrow().get(name).copied()
    };
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let layer = SmartGuardLayer::new(auth.config().with_breaker(1, Duration::from_secs(60)))
        .expect("layer");
    let base = serve_layer(&layer).await;
    assert_eq!(status(&base, "/fhir/Patient/1", Some(TOKEN)).await, 200);
    assert_eq!(gauge("smart_guard_breaker_state"), Some(0.0));
    assert_eq!(gauge("smart_guard_introspection_in_flight"), Some(0.0));

    auth.behave(Behaviour::Delay(Duration::from_millis(300)));
    let slow = tokio::spawn({
        let base = base.clone();
        async move { status(&base, "/fhir/Patient/1", Some("slow-token")).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(gauge("smart_guard_introspection_in_flight"), Some(1.0));
    assert_eq!(slow.await.expect("slow"), 401);
    assert_eq!(gauge("smart_guard_introspection_in_flight"), Some(0.0));

    auth.behave(Behaviour::Status(500));
    assert_eq!(status(&base, "/fhir/Patient/2", Some("other")).await, 503);
    assert_eq!(gauge("smart_guard_breaker_state"), Some(1.0), "open");
}

#[tokio::test]
async fn a_panicking_audit_hook_changes_no_decision_and_keeps_the_connection() {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/Patient.rs"));
    let config = auth
        .config()
        .with_audit_hook(|_event| panic!("a bug in the hook"));
    let layer = SmartGuardLayer::new(config).expect("layer");
    let base = serve_layer(&layer).await;
    let client = http();
    for _ in 0..3 {
        let response = get_with_token(&client, format!("{base}/fhir/Patient/1"), TOKEN).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(status(&base, "/fhir/Observation", Some(TOKEN)).await, 403);
    assert_eq!(status(&base, "/fhir/Patient/1", None).await, 401);
}
