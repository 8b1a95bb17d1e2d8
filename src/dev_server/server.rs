//! `DevServer`: the running development authorization server, and its builder.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::assertion::AssertionVerifier;
use super::jwks::JwksResolver;
use super::registry::{ClientRegistration, ClientsFile, ResourceServerRegistration};
use super::state::{Counters, Shared, Urls};
use super::store::TokenStore;
use super::{introspect, metadata, revoke, token};
use crate::client::AccessToken;

/// The default access token lifetime (SMART Backend Services: SHOULD NOT exceed 300 s).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Endpoint paths, relative to the base URL.
pub const TOKEN_PATH: &str = "/token";
/// The introspection endpoint path.
pub const INTROSPECTION_PATH: &str = "/introspect";
/// The revocation endpoint path.
pub const REVOCATION_PATH: &str = "/revoke";
/// The SMART discovery document path.
pub const SMART_CONFIGURATION_PATH: &str = "/.well-known/smart-configuration";

/// Configures and starts a [`DevServer`].
#[derive(Debug, Default)]
#[must_use]
pub struct DevServerBuilder {
    clients: Vec<ClientRegistration>,
    resource_servers: Vec<ResourceServerRegistration>,
    token_lifetime: Option<Duration>,
    public_base_url: Option<String>,
    http: Option<reqwest::Client>,
}

impl DevServerBuilder {
    /// Registers a backend-services client (a later registration with the same id replaces it).
    pub fn with_client(mut self, client: ClientRegistration) -> Self {
        self.clients.push(client);
        self
    }

    /// Registers a resource server that may introspect and revoke tokens.
    pub fn with_resource_server(mut self, resource_server: ResourceServerRegistration) -> Self {
        self.resource_servers.push(resource_server);
        self
    }

    /// Registers everything in a clients file, including its token lifetime if it sets one.
    pub fn with_clients_file(mut self, file: ClientsFile) -> Self {
        self.clients.extend(file.clients);
        self.resource_servers.extend(file.resource_servers);
        if let Some(secs) = file.token_lifetime_secs {
            self.token_lifetime = Some(Duration::from_secs(secs));
        }
        self
    }

    /// Sets the access token lifetime (`expires_in`, whole seconds; default 300 s).
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = Some(lifetime);
        self
    }

    /// Sets the base URL announced in metadata and expected as assertion audience, instead of
    /// `http://<bound address>` (use this when binding `0.0.0.0` or behind a proxy).
    pub fn with_public_base_url(mut self, url: impl Into<String>) -> Self {
        self.public_base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Uses this `reqwest::Client` to fetch JWKS URLs.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Binds `addr` (e.g. `"127.0.0.1:0"`), and serves on a background tokio task.
    ///
    /// # Errors
    ///
    /// The I/O error if the address cannot be bound.
    pub async fn spawn(self, addr: impl ToSocketAddrs) -> io::Result<DevServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let base = self
            .public_base_url
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| io::Error::other(e.without_url()))?,
        };
        let shared = Arc::new(Shared {
            urls: Urls {
                token: format!("{base}{TOKEN_PATH}"),
                introspection: format!("{base}{INTROSPECTION_PATH}"),
                revocation: format!("{base}{REVOCATION_PATH}"),
                issuer: base,
            },
            clients: self
                .clients
                .into_iter()
                .map(|c| (c.client_id.clone(), c))
                .collect(),
            resource_servers: self
                .resource_servers
                .into_iter()
                .map(|r| (r.client_id.clone(), r))
                .collect(),
            token_lifetime: self.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME),
            tokens: TokenStore::new(),
            assertions: AssertionVerifier::new(JwksResolver::new(http)),
            counters: Counters::default(),
        });
        let router = Router::new()
            .route(TOKEN_PATH, post(token::token))
            .route(INTROSPECTION_PATH, post(introspect::introspect))
            .route(REVOCATION_PATH, post(revoke::revoke))
            .route(SMART_CONFIGURATION_PATH, get(metadata::smart_configuration))
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "dev-server stopped with an error");
            }
        });
        tracing::info!(base_url = %shared.urls.issuer, "dev-server listening");
        Ok(DevServer {
            local_addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A running development authorization server (for development and testing only).
///
/// Stops when dropped or on [`DevServer::shutdown`].
pub struct DevServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl DevServer {
    /// Starts configuring a server.
    pub fn builder() -> DevServerBuilder {
        DevServerBuilder::default()
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL, which is also the issuer (`iss`), without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.shared.urls.issuer
    }

    /// The token endpoint URL; client assertions must use it as `aud`.
    pub fn token_url(&self) -> &str {
        &self.shared.urls.token
    }

    /// The RFC 7662 introspection endpoint URL.
    pub fn introspection_url(&self) -> &str {
        &self.shared.urls.introspection
    }

    /// The RFC 7009 revocation endpoint URL.
    pub fn revocation_url(&self) -> &str {
        &self.shared.urls.revocation
    }

    /// The `/.well-known/smart-configuration` URL.
    pub fn smart_configuration_url(&self) -> String {
        format!("{}{SMART_CONFIGURATION_PATH}", self.shared.urls.issuer)
    }

    /// How many requests reached the introspection endpoint (including rejected ones).
    pub fn introspection_count(&self) -> usize {
        self.shared.counters.introspections.load(Ordering::Relaxed)
    }

    /// How many requests reached the token endpoint (including rejected ones).
    pub fn token_request_count(&self) -> usize {
        self.shared.counters.token_requests.load(Ordering::Relaxed)
    }

    /// How many access tokens were issued (through the endpoint or [`DevServer::issue_token`]).
    pub fn tokens_issued(&self) -> usize {
        self.shared.counters.tokens_issued.load(Ordering::Relaxed)
    }

    /// How many requests reached the revocation endpoint.
    pub fn revocation_count(&self) -> usize {
        self.shared.counters.revocations.load(Ordering::Relaxed)
    }

    /// Issues a token directly, without a token request (a test shortcut).
    ///
    /// `client_id` need not be registered and `scope` is granted as is.
    pub fn issue_token(&self, client_id: &str, scope: &str) -> AccessToken {
        let (token, _) =
            self.shared
                .tokens
                .issue(client_id, scope, self.shared.token_lifetime.as_secs());
        self.shared
            .counters
            .tokens_issued
            .fetch_add(1, Ordering::Relaxed);
        AccessToken::new(token)
    }

    /// Revokes a token directly (a test shortcut); true if it was active.
    pub fn revoke_token(&self, token: &str) -> bool {
        self.shared.tokens.revoke(token, |_| true)
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves until the process ends (used by the `smart-guard dev-server` command).
    pub async fn run_forever(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for DevServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevServer")
            .field("base_url", &self.shared.urls.issuer)
            .field("clients", &self.shared.clients.len())
            .field("resource_servers", &self.shared.resource_servers.len())
            .finish_non_exhaustive()
    }
}
