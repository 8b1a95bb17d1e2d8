//! The axum router that serves the discovery documents: plumbing only, the documents are built
//! in `smart_configuration.rs` and `protected_resource.rs`.

use std::future::{Ready, ready};

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use serde::Serialize;

use super::{ProtectedResourceMetadata, SmartConfiguration};
use crate::config::Config;

/// `Cache-Control` of both documents. Their content is fixed for the life of the process
/// (settings and discovery are read once, at startup), so clients and caches may keep them; one
/// hour bounds how long a client goes on using an old endpoint after a redeployment moves it,
/// and is what large providers use for their own discovery documents.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// A router serving, without a token, `GET` and `HEAD` of:
///
/// - `{base}/.well-known/smart-configuration`: the [`SmartConfiguration`], which SMART App
///   Launch requires of a FHIR endpoint that needs authorization;
/// - with a resource URL ([`Config::with_resource_url`]), the [`ProtectedResourceMetadata`] at
///   the path of [`Config::resource_metadata_url`] (RFC 9728 §3.1; with the resource
///   `https://h/fhir`, `/.well-known/oauth-protected-resource/fhir`).
///
/// Both are `application/json` with `Cache-Control: public, max-age=3600`, serialized once here.
/// Its paths are absolute: merge it into the outer router, beside the guarded FHIR routes. The
/// guard lets both paths through, so it may also sit on the outer router after the merge.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use smart_guard::{Config, SmartGuardLayer, metadata};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // SMART_GUARD_BASE_PATH=/fhir, SMART_GUARD_RESOURCE_URL=https://fhir.example/fhir
/// let config = Config::from_env()?.discover().await?;
/// let fhir = Router::new().route("/Patient/{id}", get(|| async { "{}" }));
/// let app = Router::new()
///     .nest("/fhir", fhir.layer(SmartGuardLayer::new(config.clone())?))
///     .merge(metadata::router(&config));
/// # let _: Router = app; Ok(()) }
/// ```
///
/// A configuration without a known token endpoint (no `SMART_GUARD_TOKEN_URL`, nothing
/// discovered) gives a SMART configuration without `token_endpoint`, which SMART requires;
/// this is logged at WARN here.
///
/// # Panics
///
/// If the base path is not a valid axum route path (a segment starting with `:` or `*`, or
/// holding `{` or `}`).
pub fn router<S: Clone + Send + Sync + 'static>(config: &Config) -> Router<S> {
    let smart = SmartConfiguration::from_config(config);
    if smart.token_endpoint.is_none() {
        tracing::warn!(
            "the SMART configuration has no token_endpoint: set SMART_GUARD_TOKEN_URL, or \
             SMART_GUARD_ISSUER and discover"
        );
    }
    let path = format!("{}/.well-known/smart-configuration", config.base_path());
    let router = Router::new().route(&path, get(serve(&smart)));
    match (
        &config.resource,
        ProtectedResourceMetadata::from_config(config),
    ) {
        (Some(resource), Some(document)) => {
            router.route(&resource.metadata_path, get(serve(&document)))
        }
        _ => router,
    }
}

/// A handler answering with `document`, serialized once.
fn serve<D: Serialize>(
    document: &D,
) -> impl Fn() -> Ready<Response> + Clone + Send + Sync + 'static {
    let body = Bytes::from(serde_json::to_vec(document).expect("the documents are plain JSON"));
    move || {
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            ),
        ];
        ready((headers, body.clone()).into_response())
    }
}
