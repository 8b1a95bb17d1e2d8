//! `BackendServicesClient`: a token source that reuses its access token and refreshes it shortly
//! before it expires; concurrent callers share one fetch.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::assertion::AssertionSigner;
use super::error::ClientError;
use super::token::{AccessToken, TokenResponse, request_token};

/// How long before expiry a token is replaced, by default.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// A SMART Backend Services client: holds a signer, a token URL and a scope, and hands out a
/// current access token.
///
/// Cheap to clone; clones share the cached token. A token is reused until `expires_in - margin`
/// (or half its lifetime when that is shorter than twice the margin). While one caller fetches,
/// other callers wait for that fetch instead of starting their own. Failed fetches are not cached.
/// A token response without `expires_in` is used once and not cached.
///
/// ```no_run
/// use smart_guard::client::{AssertionSigner, BackendServicesClient, KeyPair};
/// # async fn run() -> Result<(), smart_guard::client::ClientError> {
/// let key = KeyPair::from_pkcs8_pem(&std::fs::read_to_string("key.pem").unwrap_or_default())?;
/// let client = BackendServicesClient::new(
///     "https://as.example/token",
///     AssertionSigner::new("my-client", key),
///     "system/Patient.rs",
/// );
/// let token = client.access_token().await?;
/// let _header = format!("Bearer {}", token.as_str());
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct BackendServicesClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    token_url: String,
    signer: AssertionSigner,
    scope: String,
    refresh_margin: Duration,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    response: TokenResponse,
    refresh_at: Instant,
}

impl BackendServicesClient {
    /// A client that requests `scope` from `token_url`, authenticating with `signer`.
    pub fn new(
        token_url: impl Into<String>,
        signer: AssertionSigner,
        scope: impl Into<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http: reqwest::Client::new(),
                token_url: token_url.into(),
                signer,
                scope: scope.into(),
                refresh_margin: DEFAULT_REFRESH_MARGIN,
                cached: Mutex::new(None),
            }),
        }
    }

    fn map_inner(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            http: shared.http.clone(),
            token_url: shared.token_url.clone(),
            signer: shared.signer.clone(),
            scope: shared.scope.clone(),
            refresh_margin: shared.refresh_margin,
            cached: Mutex::new(None),
        });
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Uses the given `reqwest::Client` (to share a connection pool or set timeouts).
    pub fn with_http_client(self, http: reqwest::Client) -> Self {
        self.map_inner(|i| i.http = http)
    }

    /// Sets how long before expiry a token is replaced (default 30 s).
    pub fn with_refresh_margin(self, margin: Duration) -> Self {
        self.map_inner(|i| i.refresh_margin = margin)
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> &str {
        &self.inner.token_url
    }

    /// The current access token, fetched if there is none or it is about to expire.
    ///
    /// # Errors
    ///
    /// The [`ClientError`] of the token request when a fetch was needed and failed.
    pub async fn access_token(&self) -> Result<AccessToken, ClientError> {
        self.token_response().await.map(|r| r.access_token)
    }

    /// The current token response (token, type, lifetime as first granted, granted scope).
    ///
    /// # Errors
    ///
    /// The [`ClientError`] of the token request when a fetch was needed and failed.
    pub async fn token_response(&self) -> Result<TokenResponse, ClientError> {
        // A tokio mutex held across the fetch: waiting callers reuse the fetched token.
        let mut cached = self.inner.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.response.clone());
        }
        *cached = None;
        let response = request_token(
            &self.inner.http,
            &self.inner.token_url,
            &self.inner.signer,
            &self.inner.scope,
        )
        .await?;
        if let Some(expires_in) = response.expires_in {
            let lifetime = Duration::from_secs(expires_in);
            let margin = self.inner.refresh_margin;
            let reuse_for = if lifetime > margin * 2 {
                lifetime - margin
            } else {
                lifetime / 2
            };
            *cached = Some(Cached {
                response: response.clone(),
                refresh_at: Instant::now() + reuse_for,
            });
        }
        tracing::debug!(
            client_id = self.inner.signer.client_id(),
            scope = response.scope.as_deref(),
            "fetched access token"
        );
        Ok(response)
    }

    /// Forgets the cached token, e.g. after a resource server answered 401 with it.
    pub async fn invalidate(&self) {
        *self.inner.cached.lock().await = None;
    }
}

impl fmt::Debug for BackendServicesClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendServicesClient")
            .field("token_url", &self.inner.token_url)
            .field("client_id", &self.inner.signer.client_id())
            .field("scope", &self.inner.scope)
            .field("refresh_margin", &self.inner.refresh_margin)
            .finish_non_exhaustive()
    }
}
