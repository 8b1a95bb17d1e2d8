//! Fleet mode's read path: a first-level miss answered by the shared cache on Redis (a GET,
//! the value opened with AES-256-GCM, the AS's answer parsed and checked again, the first level
//! filled), beside a first-level hit of the same fleet layer. Needs `redis-server` (Debian's
//! package); the bench starts its own on a loopback port.
//!
//! `cargo bench --bench fleet --features redis`; figures in BENCHMARKS.md. Instruction counts:
//! `scripts/fleet_instructions.sh`.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/fleet/redis.rs"]
mod redis_server;

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Body, SCOPES, inner};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use support::{MockAs, active};
use tower::{Layer, service_fn};

/// Distinct tokens written to the shared cache before timing; each is read once per fresh
/// replica, so every timed read is a first-level miss.
const TOKENS: usize = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn replica(auth: &MockAs, redis: &str) -> smart_guard::SmartGuardLayer {
    common::fleet_replica(auth, redis, Duration::from_millis(500))
}

/// The status of one request through `service`.
async fn status<S>(service: &S, token: &str) -> u16
where
    S: tower::Service<Request<Body>, Response = http::Response<Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    common::send(service, token).await.status().as_u16()
}

fn tokens() -> Vec<String> {
    common::fleet_tokens(TOKENS)
}

fn fleet(c: &mut Criterion) {
    let redis = redis_server::RedisServer::start();
    let rt = runtime();
    let auth = rt.block_on(async {
        let auth = MockAs::start().await;
        auth.answer_unknown(active(SCOPES));
        auth
    });
    let tokens = Arc::new(tokens());
    // One replica asks the AS for every token and fills the shared cache.
    rt.block_on(async {
        let writer = replica(&auth, &redis.url()).layer(service_fn(inner));
        for token in tokens.iter() {
            assert_eq!(status(&writer, token).await, 200);
        }
        // The entries are written in the background just after each answer.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let calls = auth.calls();

    let mut group = c.benchmark_group("fleet");
    group.bench_function("first-level miss, shared hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    // A fresh replica: an empty first level (made outside the timing).
                    let reader = replica(&auth, &redis.url()).layer(service_fn(inner));
                    let n = (iters - done).min(TOKENS as u64) as usize;
                    let start = Instant::now();
                    for token in &tokens[..n] {
                        std::hint::black_box(status(&reader, token).await);
                    }
                    total += start.elapsed();
                    done += n as u64;
                }
                total
            })
        });
    });
    group.bench_function("first-level hit", |b| {
        let reader = replica(&auth, &redis.url()).layer(service_fn(inner));
        let token = tokens[0].clone();
        rt.block_on(async { assert_eq!(status(&reader, &token).await, 200) });
        b.iter(|| rt.block_on(status(&reader, &token)));
    });
    group.finish();
    assert_eq!(
        auth.calls(),
        calls,
        "every timed read was answered by the shared cache"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = fleet
}
criterion_main!(benches);
