//! A FHIR server guarded by smart-guard: Patient and Observation (read, search, create) under
//! `/fhir`, in memory.
//!
//! ```sh
//! SMART_GUARD_INTROSPECTION_URL=http://127.0.0.1:9000/introspect \
//! SMART_GUARD_CLIENT_ID=fhir-server SMART_GUARD_CLIENT_SECRET=s3cret \
//! SMART_GUARD_BASE_PATH=/fhir \
//! cargo run --example fhir_server --features dev-server
//! ```
//!
//! `FHIR_LISTEN_ADDR` sets the address (default `127.0.0.1:8080`); `RUST_LOG=smart_guard=debug`
//! shows each decision.

use axum::Router;
use smart_guard::{SmartGuardLayer, dev_server::fhir_store::FhirStore};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    // A bad or missing SMART_GUARD_* variable stops the server here, naming the variable.
    let guard = SmartGuardLayer::from_env()?;

    // The guard sits on the FHIR router nested at /fhir; with SMART_GUARD_BASE_PATH=/fhir it
    // could equally sit on the outer router.
    let app = Router::new().nest("/fhir", FhirStore::with_samples().router().layer(guard));

    let addr = std::env::var("FHIR_LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("FHIR server on http://{}/fhir", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
