//! A bounded soak under faults, loopback only, NOT part of CI (`#[ignore]`):
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! SOAK_SECS=20 SOAK_CONNECTIONS=64 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_CONNECTIONS` client tasks (default 256, each its own keep-alive connection) send a mix
//! of requests for `SOAK_SECS` seconds (default 60; each task also stops after 1 000 000
//! requests) to a guarded app on 127.0.0.1 while the mock AS flaps through outages: refused
//! connections, 503s, answers slower than the timeout, hangs, dropped connections and truncated
//! bodies. The guard runs with stale-if-error (30 s), a 2 s cache TTL, the breaker and the
//! in-flight cap. Mix: 70 % valid tokens (warmed first), 10 % a valid token whose scopes do not
//! cover the request (403), 10 % a revoked token (401), 10 % a fresh unknown token (401).
//!
//! It reports requests, statuses by kind of token, 5xx for cached-valid tokens (goal 0), wrong
//! allows (must be 0), AS calls, guard stats and peak RSS (of the whole process: guard, mock AS
//! and clients), and fails on any wrong allow or any 5xx for a cached-valid token.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::Router;
use serde_json::json;
use support::{Behaviour, MockAs, active, fhir_routes, serve};

const VALID_TOKENS: usize = 50;
const MAX_REQUESTS_PER_CONNECTION: u64 = 1_000_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts per kind of token: [2xx, 401, 403, 5xx, other].
#[derive(Default)]
struct Tally {
    valid: [AtomicU64; 5],
    narrow: [AtomicU64; 5],
    revoked: [AtomicU64; 5],
    unknown: [AtomicU64; 5],
    errors: AtomicU64,
    max_latency_us: AtomicU64,
}

fn slot(status: u16) -> usize {
    match status {
        200..=299 => 0,
        401 => 1,
        403 => 2,
        500..=599 => 3,
        _ => 4,
    }
}

fn load(counts: &[AtomicU64; 5]) -> [u64; 5] {
    std::array::from_fn(|i| counts[i].load(Ordering::Relaxed))
}

/// Peak resident set size of this process, in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: minutes of load, run by hand (see the file docs and README)"]
async fn soak_with_a_flapping_as() {
    let secs = env_or("SOAK_SECS", 60);
    let connections = env_or("SOAK_CONNECTIONS", 256);

    let auth = MockAs::start().await;
    let valid: Vec<String> = (0..VALID_TOKENS).map(|i| format!("valid-{i:04}")).collect();
    for token in &valid {
        auth.answer(token, active("system/Patient.rs"));
    }
    auth.answer("narrow", active("system/Observation.rs"));
    auth.answer("revoked", json!({ "active": false }));
    let config = auth
        .config()
        .with_timeouts(Duration::from_millis(300), Duration::from_millis(300))
        .with_max_ttl(Duration::from_secs(2))
        .with_negative_ttl(Duration::from_secs(1))
        .with_stale_if_error(Duration::from_secs(30))
        .with_breaker(5, Duration::from_millis(500))
        .with_max_in_flight(64)
        .with_retry_after(Duration::from_secs(1));
    let layer = smart_guard::SmartGuardLayer::new(config).expect("layer");
    let (base, _app) = serve(
        Router::new()
            .nest("/fhir", fhir_routes())
            .layer(layer.clone()),
    )
    .await;

    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(usize::try_from(connections).unwrap_or(256))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("{base}/fhir/Patient/1");

    // Warm every valid token while the AS is up: from here on they are "cached-valid".
    for token in &valid {
        let status = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("warm")
            .status();
        assert_eq!(status, 200, "warm-up");
    }
    let warm_calls = auth.calls();

    let auth = Arc::new(auth);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    // The AS flaps through outage phases (every one an outage kind: stale-if-error covers it).
    let flapper = {
        let auth = Arc::clone(&auth);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let phases: [(&str, u64); 10] = [
                ("up", 3000),
                ("down", 1000),
                ("up", 1500),
                ("503", 1000),
                ("up", 1500),
                ("slow", 1000),
                ("up", 1000),
                ("flap", 1500),
                ("close", 700),
                ("truncated", 700),
            ];
            let mut log = Vec::new();
            'outer: loop {
                for (phase, millis) in phases {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    log.push(phase);
                    auth.restart().await;
                    match phase {
                        "down" => auth.stop(),
                        "503" => auth.behave(Behaviour::Status(503)),
                        "slow" => auth.behave(Behaviour::Delay(Duration::from_millis(400))),
                        "close" => auth.behave(Behaviour::ConnectionClose),
                        "truncated" => auth.behave(Behaviour::TruncatedBody),
                        "flap" => {
                            auth.behave(Behaviour::Normal);
                            let until = Instant::now() + Duration::from_millis(millis);
                            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                                auth.stop();
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                auth.restart().await;
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                            continue;
                        }
                        _ => auth.behave(Behaviour::Normal),
                    }
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                }
            }
            auth.restart().await;
            auth.behave(Behaviour::Normal);
            log.len()
        })
    };

    let tally = Arc::new(Tally::default());
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..connections {
        let client = client.clone();
        let url = url.clone();
        let valid = valid.clone();
        let tally = Arc::clone(&tally);
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = 0;
            while n < MAX_REQUESTS_PER_CONNECTION && Instant::now() < deadline {
                n += 1;
                let pick = (n + task) % 10;
                let unknown = format!("unknown-{task}-{n}");
                let (token, counts) = match pick {
                    0 => ("narrow", &tally.narrow),
                    1 => ("revoked", &tally.revoked),
                    2 => (unknown.as_str(), &tally.unknown),
                    _ => {
                        let i = usize::try_from((n * 7 + task) % VALID_TOKENS as u64).unwrap_or(0);
                        (valid[i].as_str(), &tally.valid)
                    }
                };
                let t0 = Instant::now();
                match client.get(&url).bearer_auth(token).send().await {
                    Ok(response) => {
                        counts[slot(response.status().as_u16())].fetch_add(1, Ordering::Relaxed);
                        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        tally.max_latency_us.fetch_max(us, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            sent.fetch_add(n, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    stop.store(true, Ordering::Relaxed);
    let phases = flapper.await.expect("flapper");
    let elapsed = started.elapsed();

    let requests = sent.load(Ordering::Relaxed);
    let [v_ok, v_401, v_403, v_5xx, v_other] = load(&tally.valid);
    let narrow = load(&tally.narrow);
    let revoked = load(&tally.revoked);
    let unknown = load(&tally.unknown);
    let wrong_allows = narrow[0] + revoked[0] + unknown[0];
    let errors = tally.errors.load(Ordering::Relaxed);
    println!(
        "soak: {connections} connections, {:.1} s, {phases} AS phases",
        elapsed.as_secs_f64()
    );
    println!(
        "requests: {requests} ({:.0}/s), client errors: {errors}, max latency: {} ms",
        requests as f64 / elapsed.as_secs_f64(),
        tally.max_latency_us.load(Ordering::Relaxed) / 1000
    );
    println!(
        "valid   [2xx 401 403 5xx other]: {:?}",
        [v_ok, v_401, v_403, v_5xx, v_other]
    );
    println!("narrow  [2xx 401 403 5xx other]: {narrow:?}");
    println!("revoked [2xx 401 403 5xx other]: {revoked:?}");
    println!("unknown [2xx 401 403 5xx other]: {unknown:?}");
    println!("5xx for cached-valid tokens: {v_5xx}");
    println!("wrong allows: {wrong_allows}");
    println!("AS calls: {} (warm-up {warm_calls})", auth.calls());
    println!("guard stats: {:#?}", layer.stats());
    println!("peak RSS (whole process): {:.1} MiB", peak_rss_mib());

    assert_eq!(wrong_allows, 0, "never allow what should be denied");
    assert_eq!(
        v_401 + v_403 + v_other,
        0,
        "a valid token is never refused as invalid"
    );
    assert_eq!(
        v_5xx, 0,
        "cached-valid tokens ride out outages (cache or stale-if-error)"
    );
    assert_eq!(errors, 0, "every request was answered");
}
