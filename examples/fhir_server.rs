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
//!   which every `WWW-Authenticate` challenge names in `resource_metadata`.
//!
//! The FHIR base is `/fhir` (`SMART_GUARD_BASE_PATH` defaults to it here).
//! `FHIR_LISTEN_ADDR` sets the address (default `127.0.0.1:8080`). `SMART_GUARD_RESOURCE_URL`
//! defaults here to `http://{the listen address}/fhir`, so that both documents exist out of the
//! box; set it to the public URL behind a proxy. `RUST_LOG=smart_guard=debug` shows each
//! decision.

use axum::Router;
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
    // could equally sit on the outer router); the documents are merged beside it.
    let app = Router::new()
        .nest(
            "/fhir",
            store.router().layer(SmartGuardLayer::new(config.clone())?),
        )
        .merge(metadata::router(&config));

    tracing::info!(
        resource_metadata = config.resource_metadata_url(),
        "FHIR server on http://{local}/fhir"
    );
    axum::serve(listener, app).await?;
    Ok(())
}
