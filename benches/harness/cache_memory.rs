//! Memory per cached entry: fills the guard's cache with 100 000 tokens carrying typical SMART
//! claims (10 scopes, client_id, sub, iss, jti, exp, iat, token_type) and reports the growth of
//! the process's resident set per entry.
//!
//! ```sh
//! cargo run --release --example cache_memory -- 100000
//! ```

use std::{convert::Infallible, time::Duration};

use axum::{Json, Router, body::Body, extract::Form, routing::post};
use http::{Request, Response};
use serde_json::json;
use smart_guard::{Config, SmartGuardLayer};
use tower::{Layer, ServiceExt, service_fn};

const SCOPES: &str = "system/Patient.rs system/Observation.rs system/Condition.rs \
    system/Encounter.rs system/MedicationRequest.rs system/AllergyIntolerance.rs \
    system/Procedure.rs system/Immunization.rs system/DiagnosticReport.rs system/Practitioner.read";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let entries: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);

    let introspection = Router::new().route(
        "/introspect",
        post(|Form(form): Form<Vec<(String, String)>>| async move {
            let token = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()).unwrap_or_default();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
            Json(json!({ "active": true, "scope": SCOPES, "client_id": "backend-app-0042",
                "sub": "backend-app-0042", "iss": "https://as.example.org", "jti": format!("jti-{token}"),
                "exp": now + 3600, "iat": now, "token_type": "bearer" }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, introspection).await });

    let config = Config::new(
        format!("http://{addr}/introspect").parse()?,
        "fhir-rs",
        "secret",
    )
    .with_max_ttl(Duration::from_secs(3600))
    .with_capacity(entries as u64 + 10_000, 10_000)
    .with_http_client(reqwest::Client::builder().no_proxy().build()?);
    let layer = SmartGuardLayer::new(config)?;
    let guard = layer.layer(service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));

    let fill = |from: usize, to: usize| {
        let guard = guard.clone();
        async move {
            let mut in_flight = tokio::task::JoinSet::new();
            for i in from..to {
                let guard = guard.clone();
                in_flight.spawn(async move {
                    let request = Request::builder()
                        .uri("/Patient/1")
                        .header(
                            "authorization",
                            format!("Bearer tok-{i:08}-aGVsbG8td29ybGQtdG9rZW4tMjU2Yml0"),
                        )
                        .body(Body::empty())
                        .expect("request");
                    let status = guard.oneshot(request).await.expect("infallible").status();
                    assert_eq!(status, 200);
                });
                if in_flight.len() >= 64 {
                    in_flight.join_next().await;
                }
            }
            while in_flight.join_next().await.is_some() {}
        }
    };
    fill(0, 1_000).await; // warm up the pool, allocator and cache structures
    let before = rss_kib();
    fill(1_000, 1_000 + entries).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let stats = layer.stats();
    println!(
        "entries {entries}: RSS {before} KiB -> {after} KiB, {:.0} bytes per entry ({} AS calls)",
        (after.saturating_sub(before) as f64 * 1024.0) / entries as f64,
        stats.introspection_calls
    );
    Ok(())
}
