//! Proxy mode (feature `proxy`): the same guard in front of any FHIR server, over HTTP.
//!
//! [`Proxy`] listens, authorizes each request with [`SmartGuardLayer`] exactly as the layer
//! does, and forwards what is allowed to the upstream FHIR base with [`Forward`]: bodies
//! streamed both ways, hop-by-hop headers removed, the client's identity sent upstream in
//! headers no client can forge, the upstream base rewritten to the public one in `Location`,
//! `Content-Location` and Bundles. `/healthz` and `/readyz` sit beside the FHIR base.
//!
//! ```no_run
//! use smart_guard::{Config, proxy::{Proxy, ProxyConfig}};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Config::from_env()?.discover().await?;
//! let proxy = Proxy::bind(ProxyConfig::from_env()?, guard).await?;
//! proxy.run_until_signal().await; // SIGTERM or SIGINT: drains, then returns
//! # Ok(()) }
//! ```
//!
//! [`SmartGuardLayer`]: crate::SmartGuardLayer

mod bodies;
mod client_fields;
mod config;
mod dispatch;
mod failure;
mod forward;
mod headers;
mod identity;
mod recent;
mod rewrite;
mod server;
mod stall;
mod tls;
mod upstream;
mod watchdog;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Json, Router, http::StatusCode, routing::get};
use reqwest::Url;
use serde_json::json;
use tokio::net::TcpListener;

pub use self::{
    config::ProxyConfig,
    forward::{ClientAddr, Forward, ForwardFuture, ForwardStats},
};
use self::{dispatch::Dispatch, server::ServeOptions};

use crate::{Config, SmartGuardLayer, config::env::ENV_PUBLIC_BASE_URL, error::ConfigError};

/// A bound proxy: the guard and the forwarder behind a listener. Build it with
/// [`Proxy::bind`], then [`Proxy::serve`] or [`Proxy::run_until_signal`].
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    service: Dispatch,
    guard: SmartGuardLayer,
    forward: Forward,
    public_base: Url,
    options: ServeOptions,
    /// The admin listener and its routes (`POST /revoke`), when `SMART_GUARD_ADMIN_ADDR` is set.
    admin: Option<(TcpListener, Router)>,
}

/// Why the proxy could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// A setting is missing or invalid (the error names the variable).
    Config(ConfigError),
    /// The listen address cannot be bound.
    Bind(std::io::Error),
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(error) => error.fmt(f),
            Self::Bind(error) => write!(f, "cannot listen: {error}"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(error) => Some(error),
            Self::Bind(error) => Some(error),
        }
    }
}

impl From<ConfigError> for ProxyError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

impl Proxy {
    /// Binds the listen address and builds the guard and the forwarder.
    ///
    /// The public base URL is `SMART_GUARD_PUBLIC_BASE_URL`, or the listener's scheme and
    /// bound address with the guard's base path. Its path is the guard's base path: without
    /// `SMART_GUARD_BASE_PATH`, the public base's path becomes it; with both, they must agree.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Config`] naming the variable at fault, [`ProxyError::Bind`].
    pub async fn bind(proxy: ProxyConfig, guard: Config) -> Result<Self, ProxyError> {
        let tls = match &proxy.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let (public_base, guard) = public_base(&proxy, guard)?;
        let listener = TcpListener::bind(proxy.listen_addr).await.map_err(|e| {
            ProxyError::Bind(std::io::Error::new(
                e.kind(),
                format!("SMART_GUARD_LISTEN_ADDR {}: {e}", proxy.listen_addr),
            ))
        })?;
        let public_base = match public_base {
            Some(url) => url,
            None => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                let addr = listener.local_addr().map_err(ProxyError::Bind)?;
                Url::parse(&format!("{scheme}://{addr}{}", guard.base_path))
                    .map_err(|e| invalid_public_base(e.to_string()))?
            }
        };
        // The public base is this FHIR server's resource identifier (RFC 9728) unless set.
        let guard = match guard.resource_url() {
            Some(_) => guard,
            None => guard.with_resource_url(public_base.as_str())?,
        };
        let documents = crate::metadata::router(&guard);
        let mut side_paths = vec![
            "/healthz".to_owned(),
            "/readyz".to_owned(),
            format!("{}/.well-known/smart-configuration", guard.base_path()),
        ];
        if let Some(url) = guard
            .resource_metadata_url()
            .and_then(|u| Url::parse(u).ok())
        {
            side_paths.push(url.path().to_owned());
        }
        let layer = SmartGuardLayer::new(guard)?;
        let forward = Forward::new(&proxy, public_base.clone())?;
        let admin = match &proxy.admin {
            Some((addr, secret)) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    ProxyError::Bind(std::io::Error::new(
                        e.kind(),
                        format!("SMART_GUARD_ADMIN_ADDR {addr}: {e}"),
                    ))
                })?;
                let routes = Router::new().route_service(
                    "/revoke",
                    crate::RevocationService::new(layer.clone(), secret.clone()),
                );
                Some((listener, routes))
            }
            None => None,
        };
        let side = side_routes(&layer, &proxy).merge(documents);
        let service = Dispatch::new(
            side,
            side_paths,
            Arc::clone(layer.shared()),
            forward.clone(),
        );
        Ok(Self {
            listener,
            service,
            guard: layer,
            forward,
            public_base,
            admin,
            options: ServeOptions {
                header_read_timeout: proxy.header_read_timeout,
                client_idle_timeout: proxy.client_idle_timeout,
                max_client_connections: proxy.max_client_connections,
                shutdown_grace: proxy.shutdown_grace,
                tls,
            },
        })
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The FHIR base URL clients use.
    #[must_use]
    pub fn public_base(&self) -> &Url {
        &self.public_base
    }

    /// The guard in front of the forwarder (its stats and readiness).
    pub fn guard(&self) -> &SmartGuardLayer {
        &self.guard
    }

    /// The forwarder (its stats).
    #[must_use]
    pub fn forward(&self) -> &Forward {
        &self.forward
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish for up to
    /// `SMART_GUARD_SHUTDOWN_GRACE_MS`. Returns whether they all finished in time.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> bool {
        let Some((listener, routes)) = self.admin else {
            return server::serve(self.listener, self.service, self.options, shutdown).await;
        };
        // The admin listener is served like the FHIR one (TLS, connection cap, deadlines,
        // graceful shutdown within the grace period) and stops with it.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let admin = server::serve(listener, routes, self.options.clone(), async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        let fhir = server::serve(self.listener, self.service, self.options, async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let (fhir, admin) = tokio::join!(fhir, admin);
        fhir && admin
    }

    /// The admin listener's address, when `SMART_GUARD_ADMIN_ADDR` is set.
    ///
    /// # Errors
    ///
    /// The socket's error.
    pub fn admin_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.admin
            .as_ref()
            .map(|(listener, _)| listener.local_addr())
    }

    /// [`Proxy::serve`] until SIGTERM or SIGINT (Ctrl-C).
    pub async fn run_until_signal(self) -> bool {
        self.serve(signal()).await
    }
}

/// The public base URL, if known before binding, and the guard config with its base path.
fn public_base(proxy: &ProxyConfig, guard: Config) -> Result<(Option<Url>, Config), ConfigError> {
    let Some(url) = proxy.public_base.clone() else {
        return Ok((None, guard));
    };
    let path = url.path().trim_end_matches('/').to_owned();
    let guard = if guard.base_path.is_empty() && !path.is_empty() {
        guard.with_base_path(&path)?
    } else {
        guard
    };
    if guard.base_path != path {
        return Err(invalid_public_base(format!(
            "its path {path:?} differs from SMART_GUARD_BASE_PATH {:?}",
            guard.base_path
        )));
    }
    Ok((Some(url), guard))
}

fn invalid_public_base(reason: String) -> ConfigError {
    ConfigError::Invalid {
        var: ENV_PUBLIC_BASE_URL,
        reason,
    }
}

/// `/healthz` and `/readyz`, beside the guarded forwarder (the discovery documents are merged
/// in by [`Proxy::bind`]).
fn side_routes(guard: &SmartGuardLayer, proxy: &ProxyConfig) -> Router {
    let ready_guard = guard.clone();
    let probe = Arc::new(UpstreamProbe::new(
        upstream_socket(proxy),
        proxy.connect_timeout,
    ));
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let readiness = ready_guard.readiness();
                let probe = Arc::clone(&probe);
                async move {
                    let upstream_up = probe.accepts().await;
                    let ready = readiness.is_ready() && upstream_up;
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = json!({
                        "status": if ready { "ready" } else { "not ready" },
                        "authorization_server": { "breaker": readiness.breaker.as_str() },
                        "upstream": if upstream_up { "accepts connections" } else { "unreachable" },
                    });
                    (status, Json(body))
                }
            }),
        )
}

/// Whether the upstream accepts TCP connections, probed at most once a second whatever the rate
/// of `/readyz` requests (an unauthenticated endpoint must not turn into connections to the
/// upstream), and by one probe at a time.
struct UpstreamProbe {
    upstream: String,
    timeout: Duration,
    last: std::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
    probing: tokio::sync::Mutex<()>,
}

/// How long a probe's result answers `/readyz`.
const PROBE_FOR: Duration = Duration::from_secs(1);

impl UpstreamProbe {
    fn new(upstream: String, timeout: Duration) -> Self {
        Self {
            upstream,
            timeout,
            last: std::sync::Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    fn recent(&self) -> Option<bool> {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.filter(|(at, _)| at.elapsed() < PROBE_FOR)
            .map(|(_, up)| up)
    }

    async fn accepts(&self) -> bool {
        if let Some(up) = self.recent() {
            return up;
        }
        let _one_at_a_time = self.probing.lock().await;
        // Another request may have probed while this one waited.
        if let Some(up) = self.recent() {
            return up;
        }
        let up = accepts(&self.upstream, self.timeout).await;
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((tokio::time::Instant::now(), up));
        up
    }
}

/// `host:port` of the upstream, for the readiness connect.
fn upstream_socket(proxy: &ProxyConfig) -> String {
    let url = &proxy.upstream;
    let port = url.port_or_known_default().unwrap_or(80);
    format!("{}:{port}", url.host_str().unwrap_or_default())
}

/// Whether the upstream accepts a TCP connection within the connect timeout.
async fn accepts(upstream: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(upstream)).await,
        Ok(Ok(_))
    )
}

/// Resolves at SIGTERM or SIGINT.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
