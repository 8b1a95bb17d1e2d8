//! Runs the cache-hit path a fixed number of times, for instruction counts under callgrind.
//!
//! `scripts/hit_instructions.sh` runs this twice per mode (N and 2N iterations) and divides the
//! difference by N: the setup (AS, TLS roots, runtime) cancels out and what remains is the exact
//! instruction count of one request, repeatable to the instruction.
//!
//! ```text
//! cargo build --release --example hit_instructions
//! valgrind --tool=callgrind target/release/examples/hit_instructions 43B 10000
//! ```
//!
//! Modes: `bare` and `bare_1KB` (the inner service alone, with the 43-byte and the 1 KB token
//! request), `43B` and `1KB` (the whole guard on a cache hit), and the same over an axum router
//! with a FHIR read route (`axum_bare`, `axum_bare_1KB`, `axum_43B`, `axum_1KB`, the guard as a
//! route layer; `axum_noop` is the router with a layer that does nothing), with the same
//! requests as `benches/cache_hit.rs`.

#![allow(missing_docs)]

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../common/mod.rs"]
mod common;

use std::{
    convert::Infallible,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use common::{Body, fhir_router, guard_layer, inner, request, start_as};
use http::{Request, Response};
use tower::{Layer, ServiceExt, service_fn};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "43B".to_owned());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    // Optional: KiB of memory to walk before every request, which evicts the CPU caches as a
    // server's network stack does between two requests (for callgrind's cache simulation).
    let cool_kib: usize = args.next().and_then(|k| k.parse().ok()).unwrap_or(0);
    let mut cooler = vec![0u8; cool_kib * 1024];
    let (router, rest) = match mode.strip_prefix("axum_") {
        Some(rest) => (true, rest),
        None => (false, mode.as_str()),
    };
    // `bare_1KB` is the inner service alone with the 1 KB request.
    let (size, token_size) = match rest {
        "bare_1KB" => ("bare", "1KB"),
        other => (other, other),
    };
    assert!(
        matches!(size, "bare" | "noop" | "43B" | "1KB"),
        "mode: [axum_]bare, [axum_]bare_1KB, axum_noop, [axum_]43B or [axum_]1KB"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (auth, short, long) = rt.block_on(start_as());
    let token = if token_size == "1KB" { long } else { short };
    let layer = guard_layer(&auth);
    let guard = layer.layer(service_fn(inner));
    let bare = service_fn(inner);
    let guarded_router = fhir_router().layer(layer);
    let bare_router = fhir_router();
    // The cost of any route layer: axum boxes the layered route and its future.
    let noop_router = fhir_router().layer(tower::layer::util::Identity::new());
    // Warm: one miss fills the cache (in every mode, so the setup is the same).
    let response = rt.block_on(guard.clone().oneshot(request(&token)));
    assert_eq!(response.expect("infallible").status(), 200);
    let services = Services {
        guard,
        bare,
        guarded_router,
        bare_router,
        noop_router,
    };
    let _runtime = rt.enter();
    timed_requests(&services, (router, size), &token, n, &mut cooler);
    assert_eq!(auth.calls(), 1, "every timed request was a cache hit");
}

struct Services<G, B> {
    guard: G,
    bare: B,
    guarded_router: axum::Router,
    bare_router: axum::Router,
    noop_router: axum::Router,
}

/// The measured loop, in a function of its own so that callgrind can collect it alone
/// (`--toggle-collect='hit_instructions::timed_requests*'`). Every request is a cache hit over services that never wait, so one poll completes it.
#[inline(never)]
fn timed_requests<G, B>(
    services: &Services<G, B>,
    mode: (bool, &str),
    token: &str,
    n: usize,
    cooler: &mut [u8],
) where
    G: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
    B: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    for _ in 0..n {
        for line in cooler.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        black_box(&mut *cooler);
        let ok = match mode {
            (false, "bare") => poll_once(services.bare.clone().oneshot(request(token))).is_ok(),
            (false, _) => poll_once(services.guard.clone().oneshot(request(token))).is_ok(),
            (true, "bare") => {
                poll_once(services.bare_router.clone().oneshot(request(token))).is_ok()
            }
            (true, "noop") => {
                poll_once(services.noop_router.clone().oneshot(request(token))).is_ok()
            }
            (true, _) => poll_once(services.guarded_router.clone().oneshot(request(token))).is_ok(),
        };
        black_box(ok);
    }
}

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit completes without waiting"),
    }
}
