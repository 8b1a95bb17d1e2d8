//! A FHIR server guarded by smart-guard: Patient and Observation (read, search, create) under
//! `/fhir`, in memory, with its discovery documents.
//!
//! ```sh
//! SMART_GUARD_INTROSPECTION_URL=http://127.0.0.1:9000/introspect \
//! SMART_GUARD_TOKEN_URL=http://127.0.0.1:9000/token \
//! SMART_GUARD_CLIENT_ID=fhir-server SMART_GUARD_CLIENT_SECRET=s3cret \
//! cargo run --example fhir_server --features dev-server
//! ```
//!
//! With `SMART_GUARD_ISSUER` instead of the URLs, the endpoints are discovered at startup.
//!
//! It serves, without a token:
//!
//! - `GET /fhir/metadata`: the CapabilityStatement, with SMART-on-FHIR `security` naming the AS
//!   endpoints the guard knows;
//! - `GET /fhir/.well-known/smart-configuration`: the SMART configuration;
//! - `GET /.well-known/oauth-protected-resource/fhir`: the RFC 9728 protected resource metadata,
//!   which every `WWW-Authenticate` challenge names in `resource_metadata`;
//! - `GET /healthz` (the process serves) and `GET /readyz` (the guard can authenticate new
//!   tokens: its circuit breaker is closed), beside the FHIR base and outside the guard.
//!
//! The FHIR base is `/fhir` (`SMART_GUARD_BASE_PATH` defaults to it here).
//! `FHIR_LISTEN_ADDR` sets the address (default `127.0.0.1:8080`). `SMART_GUARD_RESOURCE_URL`
//! defaults here to `http://{the listen address}/fhir`, so that both documents exist out of the
//! box; set it to the public URL behind a proxy. `RUST_LOG=smart_guard=debug` shows each
//! decision.

use axum::{Json, Router, http::StatusCode, routing::get};
use smart_guard::{
    Config, SmartGuardLayer,
    dev_server::fhir_store::FhirStore,
    metadata::{self, SmartConfiguration},
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let addr = std::env::var("FHIR_LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;

    // A bad or missing SMART_GUARD_* variable stops the server here, naming the variable.
    let mut config = Config::from_env()?.discover().await?;
    if config.base_path().is_empty() {
        config = config.with_base_path("/fhir")?;
    }
    if config.resource_url().is_none() {
        config = config.with_resource_url(&format!("http://{local}/fhir"))?;
    }

    // The CapabilityStatement names the AS endpoints the SMART configuration lists.
    let smart = SmartConfiguration::from_config(&config);
    let mut store = FhirStore::with_samples();
    if let Some(url) = smart.token_endpoint {
        store = store.with_token_url(url);
    }
    if let Some(url) = smart.introspection_endpoint {
        store = store.with_introspection_url(url);
    }
    if let Some(url) = smart.revocation_endpoint {
        store = store.with_revocation_url(url);
    }

    // The guard sits on the FHIR router nested at /fhir (with SMART_GUARD_BASE_PATH=/fhir it
    // could equally sit on the outer router); the documents and the health routes are merged
    // beside it, where the guard does not refuse them as "not FHIR".
    let guard = SmartGuardLayer::new(config.clone())?;
    let ready = guard.clone();
    let app = Router::new()
        .nest("/fhir", store.router().layer(guard))
        .merge(metadata::router(&config))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route(
            "/readyz",
            get(move || async move {
                let readiness = ready.readiness();
                let status = if readiness.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = serde_json::json!({
                    "breaker": readiness.breaker.as_str(),
                    "since_last_answer_ms": readiness.since_last_answer.map(|d| d.as_millis() as u64),
                });
                (status, Json(body))
            }),
        );

    tracing::info!(
        resource_metadata = config.resource_metadata_url(),
        "FHIR server on http://{local}/fhir"
    );
    axum::serve(listener, app).await?;
    Ok(())
}
