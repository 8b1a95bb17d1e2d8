//! Runs fleet mode's read path a fixed number of times, for instruction counts under callgrind
//! (`scripts/fleet_instructions.sh`): `shared N` reads N distinct tokens through a fresh replica
//! (each a first-level miss answered by the shared cache), `hit N` reads one token N times (a
//! first-level hit). Both first fill the shared cache with the same 3,000 tokens, so the
//! difference between a run with N and one with 2N is N reads, setup cancelled out. Needs
//! `redis-server`; it starts its own on a loopback port.

#![allow(missing_docs)]

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../../tests/fleet/redis.rs"]
mod redis_server;

#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use common::{SCOPES, inner, request};
use support::{MockAs, active};
use tower::{Layer, ServiceExt, service_fn};

const FILLED: usize = 3_000;

fn replica(auth: &MockAs, redis: &str) -> smart_guard::SmartGuardLayer {
    common::fleet_replica(auth, redis, Duration::from_secs(5))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "shared".to_owned());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    assert!(n <= FILLED, "at most {FILLED} reads");
    let redis = redis_server::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let auth = MockAs::start().await;
        auth.answer_unknown(active(SCOPES));
        let tokens = common::fleet_tokens(FILLED);
        let writer = replica(&auth, &redis.url()).layer(service_fn(inner));
        for token in &tokens {
            let response = writer.clone().oneshot(request(token)).await.expect("send");
            assert_eq!(response.status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = auth.calls();
        let reader = replica(&auth, &redis.url()).layer(service_fn(inner));
        // The reader's connection and subscription are made before the counted reads.
        let warm = reader
            .clone()
            .oneshot(request("warm-up-token"))
            .await
            .expect("send");
        assert_eq!(warm.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls = calls + 1;
        for i in 0..n {
            let token = if mode == "hit" {
                &tokens[0]
            } else {
                &tokens[i]
            };
            let response = reader.clone().oneshot(request(token)).await.expect("send");
            std::hint::black_box(response.status());
        }
        let extra = usize::from(mode == "hit");
        assert_eq!(
            auth.calls(),
            calls + extra,
            "the reads were answered by the shared cache"
        );
    });
}
