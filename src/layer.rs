//! The layer: one `.layer(SmartGuardLayer::from_env()?)` protects a FHIR router.

use std::sync::Arc;

use tower_layer::Layer;

use crate::{
    config::Config,
    error::{ConfigError, IntrospectError},
    guard::Shared,
    introspect::status::TokenStatus,
    service::SmartGuard,
};

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

    /// What the layer's services share: the guard itself (the proxy checks requests with it).
    #[cfg(feature = "proxy")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A layer configured from the `SMART_GUARD_*` environment variables (see the crate docs).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable; never a secret's value.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(Config::from_env()?)
    }

    /// Makes one introspection call for `token` through this layer's own client (same endpoint,
    /// same client authentication, same timeouts and answer limit) and checks the answer as a
    /// request would, but uncached: no cache is read or written, and the circuit breaker, the
    /// in-flight cap and [`SmartGuardLayer::stats`] are left alone. For diagnostics such as
    /// `smart-guard check`, e.g. at startup; requests never go through it.
    ///
    /// A [`TokenStatus::Inactive`] answer proves the AS accepted this resource server's
    /// credentials, so a made-up token is enough to test them.
    ///
    /// ```no_run
    /// use smart_guard::{IntrospectErrorKind, SmartGuardLayer, TokenStatus};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = SmartGuardLayer::from_env()?;
    /// match layer.introspect_uncached("not-a-real-token").await {
    ///     Ok(TokenStatus::Inactive { .. }) => println!("the AS accepts our credentials"),
    ///     Ok(status) => println!("unexpected: {status:?}"),
    ///     Err(e) if e.kind() == IntrospectErrorKind::CredentialsRejected => {
    ///         eprintln!("check SMART_GUARD_CLIENT_ID and its secret or key: {e}")
    ///     }
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`IntrospectError`]: its [`kind`](IntrospectError::kind) tells a refused connection
    /// (`Connect`), a timeout, rejected credentials (`CredentialsRejected`, HTTP 401/403), our own
    /// credentials failing (`OwnCredentials`: signing, or bearer mode's own token), another
    /// status, or an unreadable answer apart.
    ///
    /// # Security
    ///
    /// The token is sent to the introspection endpoint only; neither it nor a secret appears in
    /// the result or the error.
    pub async fn introspect_uncached(&self, token: &str) -> Result<TokenStatus, IntrospectError> {
        self.shared.introspect_uncached(token).await
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

impl SmartGuardLayer {
    /// Forgets `token`'s cached answers, so its next request asks again: in this process and,
    /// in fleet mode, on every replica (the shared entry is marked revoked for the cache's max
    /// TTL and the revocation published; every replica forgets it on receipt, within a second).
    /// Call it after revoking the token at the AS, which stays the authority: once the mark
    /// expires, the AS's answer decides. [`RevocationService`](crate::RevocationService) is
    /// this behind an HTTP endpoint.
    ///
    /// ```no_run
    /// # async fn f(layer: smart_guard::SmartGuardLayer) {
    /// if let Err(e) = layer.invalidate("the-revoked-token").await {
    ///     eprintln!("{e}: retry");
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RevocationNotShared`](crate::RevocationNotShared) when the shared cache could not be
    /// told (this process has forgotten the token all the same).
    pub async fn invalidate(&self, token: &str) -> Result<(), crate::RevocationNotShared> {
        if self.shared.invalidate(token).await {
            Ok(())
        } else {
            Err(crate::RevocationNotShared)
        }
    }

    /// [`SmartGuardLayer::invalidate`] by the token's name in the shared cache (fleet mode):
    /// for an operator who has the name, from a Redis key, but not the token.
    ///
    /// # Errors
    ///
    /// As [`SmartGuardLayer::invalidate`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn invalidate_shared_key(
        &self,
        key: crate::fleet::SharedKey,
    ) -> Result<(), crate::RevocationNotShared> {
        if self.shared.invalidate_shared(key).await {
            Ok(())
        } else {
            Err(crate::RevocationNotShared)
        }
    }
}

impl<S> Layer<S> for SmartGuardLayer {
    type Service = SmartGuard<S>;

    fn layer(&self, inner: S) -> SmartGuard<S> {
        SmartGuard::new(inner, Arc::clone(&self.shared))
    }
}
