//! The layer: one `.layer(SmartGuardLayer::from_env()?)` protects a FHIR router.

use std::sync::Arc;

use tower_layer::Layer;

use crate::{config::Config, error::ConfigError, guard::Shared, service::SmartGuard};

/// Applies [`SmartGuard`] to a service: bearer token → cached introspection → SMART scopes →
/// [`VerifiedClaims`](crate::VerifiedClaims) in the request extensions.
///
/// Cloning is cheap (one `Arc`); every clone shares one cache and one connection pool.
/// Construction does no I/O.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use smart_guard::SmartGuardLayer;
///
/// # fn main() -> Result<(), smart_guard::ConfigError> {
/// let app: Router = Router::new()
///     .route("/Patient/{id}", get(|| async { "{}" }))
///     .layer(SmartGuardLayer::from_env()?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SmartGuardLayer {
    shared: Arc<Shared>,
}

impl SmartGuardLayer {
    /// A layer from code-built configuration.
    ///
    /// With the `metrics` feature, the per-request counters are registered here with the
    /// `metrics` recorder installed at this moment: install the recorder first.
    ///
    /// # Errors
    ///
    /// [`ConfigError::HttpClient`] if the HTTP client cannot be built; [`ConfigError::Invalid`]
    /// if the client id or secret cannot be sent in a header.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
        })
    }

    /// A layer configured from the `SMART_GUARD_*` environment variables (see the crate docs).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable; never a secret's value.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(Config::from_env()?)
    }

    /// A snapshot of the counters shared by this layer and every service it built: cache hits
    /// and misses, introspection calls, errors and time, decisions by outcome.
    #[must_use]
    pub fn stats(&self) -> crate::GuardStats {
        self.shared.stats.snapshot()
    }

    /// Whether the guard can authenticate new tokens now: the circuit breaker's state, how long
    /// ago the AS last answered, the calls out. For a readiness endpoint beside the FHIR routes;
    /// it does no I/O.
    ///
    /// ```
    /// use axum::{Router, http::StatusCode, routing::get};
    /// use smart_guard::SmartGuardLayer;
    ///
    /// fn health(guard: SmartGuardLayer) -> Router {
    ///     Router::new()
    ///         .route("/healthz", get(|| async { StatusCode::OK }))
    ///         .route("/readyz", get(move || async move {
    ///             if guard.readiness().is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
    ///         }))
    /// }
    /// ```
    #[must_use]
    pub fn readiness(&self) -> crate::Readiness {
        self.shared.readiness()
    }
}

impl<S> Layer<S> for SmartGuardLayer {
    type Service = SmartGuard<S>;

    fn layer(&self, inner: S) -> SmartGuard<S> {
        SmartGuard::new(inner, Arc::clone(&self.shared))
    }
}
