//! What the hit-path benchmarks share (`benches/cache_hit.rs` and
//! `benches/harness/hit_instructions.rs`): the tokens, the scopes, the request, the inner services and
//! the guard's configuration, so both measure the same thing.
#![allow(dead_code, unreachable_pub)]

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response, header::AUTHORIZATION};
use http_body_util::Full;
use smart_guard::SmartGuardLayer;
use tower::ServiceExt;

use crate::support::{self, MockAs, active};

/// Ten granted scopes, as a typical backend client has.
pub const SCOPES: &str = "system/Patient.rs system/Observation.rs system/Condition.rs \
    system/Encounter.rs system/MedicationRequest.rs system/AllergyIntolerance.rs \
    system/Procedure.rs system/Immunization.rs system/DiagnosticReport.rs system/Practitioner.read";

/// An opaque 43-byte token (256 random bits, base64url).
pub fn short_token() -> String {
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo".to_owned()
}

/// A 1 KB (1024-byte) JWT-shaped token.
pub fn long_token() -> String {
    let part = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
    let token = format!("eyJhbGciOiJSUzM4NCJ9.{}.{}", part(600, 'a'), part(402, 'b'));
    assert_eq!(token.len(), 1024, "1 KB");
    token
}

pub type Body = Full<Bytes>;

/// The trivial inner service: answers `{}`.
pub async fn inner(_request: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
}

/// `GET /Patient/123` with the token.
pub fn request(token: &str) -> Request<Body> {
    Request::builder()
        .uri("/Patient/123")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .expect("request")
}

/// A FHIR read route on an axum router, as the crate is used.
pub fn fhir_router() -> axum::Router {
    axum::Router::new().route(
        "/Patient/{id}",
        axum::routing::get(|| async { Bytes::from_static(b"{}") }),
    )
}

/// A loopback AS that answers both tokens active with [`SCOPES`].
pub async fn start_as() -> (MockAs, String, String) {
    let auth = MockAs::start().await;
    let (short, long) = (short_token(), long_token());
    auth.answer(&short, active(SCOPES));
    auth.answer(&long, active(SCOPES));
    (auth, short, long)
}

/// The guard (root base path, entries cached for an hour).
pub fn guard_layer(auth: &MockAs) -> SmartGuardLayer {
    let config = smart_guard::Config::new(
        auth.url().parse().expect("url"),
        support::RS_CLIENT_ID,
        support::RS_SECRET,
    )
    .with_max_ttl(Duration::from_secs(3600));
    SmartGuardLayer::new(config).expect("layer")
}

/// One request through a clone of `service` (as a server clones its service per request).
pub async fn send<S>(service: &S, token: &str) -> S::Response
where
    S: tower::Service<Request<Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    service
        .clone()
        .oneshot(request(token))
        .await
        .expect("infallible")
}

/// A replica of a fleet on the Redis at `redis` (its own first level), against `auth`.
#[cfg(feature = "redis")]
pub fn fleet_replica(auth: &MockAs, redis: &str, timeout: Duration) -> SmartGuardLayer {
    use smart_guard::fleet::{FleetConfig, FleetKey};
    let fleet = FleetConfig::new([redis], FleetKey::new(&[7; 32]).expect("key"))
        .expect("fleet")
        .with_timeout(timeout);
    let config = smart_guard::Config::new(
        auth.url().parse().expect("url"),
        support::RS_CLIENT_ID,
        support::RS_SECRET,
    )
    .with_max_ttl(Duration::from_secs(3600))
    .with_fleet(fleet);
    SmartGuardLayer::new(config).expect("layer")
}

/// `n` distinct opaque tokens for the fleet benches.
#[cfg(feature = "redis")]
pub fn fleet_tokens(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("fleet-bench-token-{i:06}-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFi"))
        .collect()
}
