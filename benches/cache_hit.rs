//! The cache-hit path: the whole layer on a hit next to the inner service alone (a trivial
//! service, and an axum router with a FHIR read route), the parts of the hit path alone, a
//! batch of 20 000 reads, the miss path against a loopback AS, and a burst of concurrent first
//! requests.
//!
//! `cargo bench --bench cache_hit --features fuzzing` (the internal feature gives it the guard's
//! token digest, `smart_guard::__fuzz`); see BENCHMARKS.md for figures.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    Body, SCOPES, fhir_router, guard_layer, inner, long_token, request, send, short_token, start_as,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Request, header::AUTHORIZATION};
use smart_guard::{ScopeSet, classify};
use support::{MockAs, active};
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt, service_fn};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Whether the CPU caches are cooled before each timed request.
#[derive(Clone, Copy)]
enum Caches {
    /// As a tight loop leaves them.
    Warm,
    /// Cooled by a pass over 4 MiB before every request (outside the timed part), as a
    /// server's network stack cools them between two requests.
    Cold,
}

/// Times `bare` and `guarded` in alternating chunks (64 requests warm, 1 cold) and returns the
/// difference: the guard's overhead for `iters` requests. Both sides build the same request,
/// and a drift of the shared VM (±15 % between runs here) hits both halves of every sample alike.
async fn overhead<S, G>(bare: &S, guarded: &G, token: &str, iters: u64, caches: Caches) -> Duration
where
    S: tower::Service<Request<Body>> + Clone,
    S::Error: std::fmt::Debug,
    G: tower::Service<Request<Body>> + Clone,
    G::Error: std::fmt::Debug,
{
    let (chunk_len, mut scratch) = match caches {
        Caches::Warm => (64, Vec::new()),
        Caches::Cold => (1, vec![0u8; 4 << 20]),
    };
    let mut cool = || {
        for line in scratch.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        black_box(&scratch);
    };
    let (mut bare_time, mut guarded_time) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(chunk_len);
        cool();
        let started = Instant::now();
        for _ in 0..chunk {
            black_box(send(bare, token).await);
        }
        bare_time += started.elapsed();
        cool();
        let started = Instant::now();
        for _ in 0..chunk {
            black_box(send(guarded, token).await);
        }
        guarded_time += started.elapsed();
        left -= chunk;
    }
    guarded_time.saturating_sub(bare_time)
}

/// The inner service alone, the whole layer on a cache hit, and the overhead measured
/// interleaved (`overhead_*`: the figure the targets are about), for both token sizes.
fn bench_hit_path<S, G>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    (bare, guarded): (S, G),
    tokens: [&str; 2],
) where
    S: tower::Service<Request<Body>> + Clone,
    S::Error: std::fmt::Debug,
    G: tower::Service<Request<Body>> + Clone,
    G::Error: std::fmt::Debug,
{
    let mut group = c.benchmark_group(name);
    for (size, token) in ["43B", "1KB"].into_iter().zip(tokens) {
        group.bench_function(format!("inner_only_{size}"), |b| {
            b.to_async(rt).iter(|| send(&bare, token));
        });
        group.bench_function(format!("layer_hit_{size}"), |b| {
            b.to_async(rt).iter(|| send(&guarded, token));
        });
        group.bench_function(format!("overhead_cold_{size}"), |b| {
            b.to_async(rt)
                .iter_custom(|iters| overhead(&bare, &guarded, token, iters, Caches::Cold));
        });
        group.bench_function(format!("overhead_{size}"), |b| {
            b.to_async(rt)
                .iter_custom(|iters| overhead(&bare, &guarded, token, iters, Caches::Warm));
        });
    }
    group.finish();
}

/// Sends each token once: after this the timed loops never reach the AS.
fn warm<G>(rt: &Runtime, auth: &MockAs, guarded: &G, tokens: [&str; 2])
where
    G: tower::Service<Request<Body>> + Clone,
    G::Error: std::fmt::Debug,
{
    rt.block_on(async {
        for token in tokens {
            send(guarded, token).await;
        }
    });
    assert_eq!(auth.calls(), 2, "warm: the timed loops never reach the AS");
}

fn hit_path(c: &mut Criterion) {
    let rt = runtime();
    let (auth, short, long) = rt.block_on(start_as());
    let guarded = guard_layer(&auth).layer(service_fn(inner));
    let tokens = [short.as_str(), long.as_str()];
    warm(&rt, &auth, &guarded, tokens);
    bench_hit_path(c, &rt, "hit_path", (service_fn(inner), guarded), tokens);
    assert_eq!(auth.calls(), 2, "no AS call while timing");
}

/// The guard as a route layer on an axum router (it runs after routing, as `Router::layer`
/// places it), next to the router alone.
fn hit_path_axum(c: &mut Criterion) {
    let rt = runtime();
    let (auth, short, long) = rt.block_on(start_as());
    let guarded = fhir_router().layer(guard_layer(&auth));
    let tokens = [short.as_str(), long.as_str()];
    warm(&rt, &auth, &guarded, tokens);
    bench_hit_path(c, &rt, "hit_path_axum", (fhir_router(), guarded), tokens);
    assert_eq!(auth.calls(), 2, "no AS call while timing");
    // What any route layer costs: axum boxes a layered route and its future.
    let identity = fhir_router().layer(tower::layer::util::Identity::new());
    let bare = fhir_router();
    c.bench_function("hit_path_axum/overhead_identity_layer_43B", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| overhead(&bare, &identity, tokens[0], iters, Caches::Warm));
    });
}

fn parts(c: &mut Criterion) {
    let (short, long) = (short_token(), long_token());
    let mut group = c.benchmark_group("parts");
    for (name, token) in [("43B", &short), ("1KB", &long)] {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {token}")).expect("value"),
        );
        group.bench_function(format!("bearer_extract_{name}"), |b| {
            b.iter(|| {
                black_box(smart_guard::extract_bearer(black_box(&headers), None, 8192).is_ok())
            });
        });
        let digest = smart_guard::__fuzz::TokenDigest::new();
        group.bench_function(format!("token_digest_{name}"), |b| {
            b.iter(|| black_box(digest.digest(black_box(token.as_bytes()))));
        });
        // What the digest of long tokens replaced: keyed BLAKE3 over the whole token.
        let key: [u8; 32] = rand::random();
        group.bench_function(format!("blake3_keyed_whole_{name}"), |b| {
            b.iter(|| black_box(blake3::keyed_hash(&key, black_box(token.as_bytes()))));
        });
    }
    // The hit path reads the wall clock once (front-cache deadline and `exp`).
    group.bench_function("clock_system_time_now", |b| {
        b.iter(|| black_box(std::time::SystemTime::now()));
    });
    group.bench_function("classify_read", |b| {
        b.iter(|| {
            black_box(classify(
                &Method::GET,
                black_box("/Patient/123"),
                None,
                None,
            ))
        });
    });
    group.bench_function("classify_search", |b| {
        b.iter(|| {
            black_box(classify(
                &Method::GET,
                black_box("/Observation"),
                Some("patient=123&code=8867-4&_count=50"),
                None,
            ))
        });
    });
    let scopes = ScopeSet::parse(SCOPES);
    let read = classify(&Method::GET, "/Practitioner/1", None, None).expect("read");
    group.bench_function("permits_10_scopes", |b| {
        b.iter(|| black_box(scopes.permits(black_box(read.needs())).is_ok()));
    });
    group.bench_function("scope_parse_10", |b| {
        b.iter(|| black_box(ScopeSet::parse(black_box(SCOPES))));
    });
    let rt = runtime();
    let cache: moka::future::Cache<[u8; 32], Arc<String>> =
        moka::future::Cache::builder().max_capacity(100_000).build();
    let key: [u8; 32] = rand::random();
    rt.block_on(cache.insert(key, Arc::new("claims".into())));
    group.bench_function("moka_get_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache.get(black_box(&key)).await) });
    });
    group.finish();
}

/// A batch Bundle of 20 000 reads through the layer (the body read, parsed and every entry
/// classified and checked): linear in the entries, which `tests/hostile.rs` no longer times.
fn batch_bundle(c: &mut Criterion) {
    let rt = runtime();
    let (auth, short, _) = rt.block_on(start_as());
    let config = smart_guard::Config::new(
        auth.url().parse().expect("url"),
        support::RS_CLIENT_ID,
        support::RS_SECRET,
    )
    .with_max_ttl(Duration::from_secs(3600))
    .with_max_body_bytes(4 * 1024 * 1024)
    .with_analysis_limits(smart_guard::AnalysisLimits::default().with_max_bundle_entries(20_001));
    let guarded = smart_guard::SmartGuardLayer::new(config)
        .expect("layer")
        .layer(service_fn(inner));
    let entries: Vec<serde_json::Value> = (0..20_000)
        .map(|i| serde_json::json!({ "request": { "method": "GET", "url": format!("Patient/{i}") } }))
        .collect();
    let body = bytes::Bytes::from(
        serde_json::json!({ "resourceType": "Bundle", "type": "batch", "entry": entries })
            .to_string(),
    );
    let batch = || {
        Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(AUTHORIZATION, format!("Bearer {short}"))
            .header("content-type", "application/fhir+json")
            .body(Body::new(body.clone()))
            .expect("request")
    };
    let status = rt
        .block_on(guarded.clone().oneshot(batch()))
        .expect("infallible")
        .status();
    assert_eq!(status, 200, "the batch is allowed");
    c.bench_function("batch_bundle_20000_reads", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(guarded.clone().oneshot(batch()).await.expect("infallible"))
        });
    });
    assert_eq!(auth.calls(), 1, "no AS call while timing");
}

fn miss_path(c: &mut Criterion) {
    let rt = runtime();
    let auth = rt.block_on(MockAs::start());
    auth.answer_unknown(active(SCOPES));
    let guard = guard_layer(&auth).layer(service_fn(inner));
    let mut counter = 0u64;
    let mut group = c.benchmark_group("miss_path");
    group.bench_function("loopback_introspection", |b| {
        b.to_async(&rt).iter_batched(
            || {
                counter += 1;
                request(&format!("fresh-token-{counter}"))
            },
            |req| {
                let guard = guard.clone();
                async move { black_box(guard.oneshot(req).await.expect("infallible")) }
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
    assert_eq!(
        auth.calls() as u64,
        counter,
        "every timed request was a miss"
    );
}

fn burst(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let auth = rt.block_on(MockAs::start());
    auth.answer_unknown(active(SCOPES));
    let guard = guard_layer(&auth).layer(service_fn(inner));
    let fire = |token: String| {
        let guard = guard.clone();
        async move {
            let handles: Vec<_> = (0..100)
                .map(|_| tokio::spawn(guard.clone().oneshot(request(&token))))
                .collect();
            for handle in handles {
                let response = handle.await.expect("join").expect("infallible");
                assert_eq!(response.status(), 200);
            }
        }
    };
    // Setup check: 100 concurrent first requests with one token make one AS call.
    rt.block_on(fire("burst-check".into()));
    assert_eq!(
        auth.calls(),
        1,
        "100 concurrent misses coalesce into one call"
    );
    let mut counter = 0u64;
    c.bench_function("burst_100_concurrent_first_requests", |b| {
        b.to_async(&rt).iter_batched(
            || {
                counter += 1;
                format!("burst-{counter}")
            },
            &fire,
            BatchSize::SmallInput,
        );
    });
    assert_eq!(auth.calls() as u64, counter + 1, "one call per burst");
}

criterion_group!(
    benches,
    hit_path,
    hit_path_axum,
    parts,
    batch_bundle,
    miss_path,
    burst
);
criterion_main!(benches);
