//! The proxy's own settings: the upstream, the listener, what crosses. The guard's settings stay
//! in [`Config`](crate::Config); both are read from the same environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use reqwest::Url;

use super::headers::IdentityPrefix;
use crate::{
    config::env::{
        ENV_ADMIN_ADDR, ENV_CLIENT_IDLE_TIMEOUT_MS, ENV_FORWARD_AUTHORIZATION,
        ENV_HEADER_READ_TIMEOUT_MS, ENV_IDENTITY_HEADER_PREFIX, ENV_LISTEN_ADDR,
        ENV_MAX_CLIENT_CONNECTIONS, ENV_MAX_REWRITE_BYTES, ENV_PUBLIC_BASE_URL,
        ENV_REVOCATION_SECRET_FILE, ENV_SHUTDOWN_GRACE_MS, ENV_TLS_CERT_FILE, ENV_TLS_KEY_FILE,
        ENV_UPSTREAM_CA_FILE, ENV_UPSTREAM_CONNECT_TIMEOUT_MS, ENV_UPSTREAM_MAX_CONNECTIONS,
        ENV_UPSTREAM_TIMEOUT_MS, ENV_UPSTREAM_URL, Env, boolean, millis, missing, positive, text,
    },
    error::ConfigError,
};

/// Settings of [`Proxy`](super::Proxy): the upstream FHIR base, the listener and what crosses.
///
/// ```
/// use std::time::Duration;
/// use smart_guard::proxy::ProxyConfig;
///
/// let proxy = ProxyConfig::new("http://127.0.0.1:8081/fhir".parse().unwrap())
///     .unwrap()
///     .with_listen_addr("0.0.0.0:8443".parse().unwrap())
///     .with_upstream_timeout(Duration::from_secs(30));
/// assert_eq!(proxy.upstream().as_str(), "http://127.0.0.1:8081/fhir");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ProxyConfig {
    pub(crate) upstream: Url,
    pub(crate) listen_addr: SocketAddr,
    pub(crate) public_base: Option<Url>,
    pub(crate) connect_timeout: Duration,
    pub(crate) upstream_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) identity_prefix: String,
    pub(crate) forward_authorization: bool,
    pub(crate) max_rewrite_bytes: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_client_connections: usize,
    pub(crate) client_idle_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    /// The admin listener (`POST /revoke`) and the secret it requires.
    pub(crate) admin: Option<(SocketAddr, crate::RevocationSecret)>,
}

impl ProxyConfig {
    /// A proxy to the FHIR base `upstream` with the defaults of the env-var table.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless `upstream` is an http(s) URL with a host and no
    /// credentials, query or fragment.
    pub fn new(upstream: Url) -> Result<Self, ConfigError> {
        Ok(Self {
            upstream: base_url(upstream.as_str()).map_err(|reason| ConfigError::Invalid {
                var: ENV_UPSTREAM_URL,
                reason,
            })?,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base: None,
            connect_timeout: Duration::from_millis(2_000),
            upstream_timeout: Duration::from_millis(60_000),
            max_connections: 256,
            ca_file: None,
            tls: None,
            identity_prefix: "X-Smart-".to_owned(),
            forward_authorization: true,
            max_rewrite_bytes: 8 * 1024 * 1024,
            header_read_timeout: Duration::from_millis(10_000),
            max_client_connections: 1024,
            client_idle_timeout: Duration::from_millis(10_000),
            shutdown_grace: Duration::from_millis(30_000),
            admin: None,
        })
    }

    /// Reads the `SMART_GUARD_*` proxy variables (the guard's own are read by
    /// [`Config::from_env`](crate::Config::from_env)).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ProxyConfig::from_env`] through `lookup` (env-var name to value).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable.
    #[rustfmt::skip] // one line per variable
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let upstream = env.read(ENV_UPSTREAM_URL, base_url)?.ok_or(missing(ENV_UPSTREAM_URL))?;
        let mut c = Self::new(upstream)?;
        c = env.set(c, ENV_LISTEN_ADDR, socket_addr, Self::with_listen_addr)?;
        c = env.set(c, ENV_PUBLIC_BASE_URL, base_url, Self::with_public_base_url)?;
        c = env.set(c, ENV_UPSTREAM_CONNECT_TIMEOUT_MS, millis, Self::with_connect_timeout)?;
        c = env.set(c, ENV_UPSTREAM_TIMEOUT_MS, millis, Self::with_upstream_timeout)?;
        c = env.set(c, ENV_UPSTREAM_MAX_CONNECTIONS, positive, Self::with_max_connections)?;
        c = env.set(c, ENV_UPSTREAM_CA_FILE, path, Self::with_upstream_ca_file)?;
        c = env.set(c, ENV_IDENTITY_HEADER_PREFIX, prefix, |c, p| c.with_identity_prefix_unchecked(p))?;
        c = env.set(c, ENV_FORWARD_AUTHORIZATION, boolean, Self::with_forward_authorization)?;
        c = env.set(c, ENV_MAX_REWRITE_BYTES, positive, Self::with_max_rewrite_bytes)?;
        c = env.set(c, ENV_HEADER_READ_TIMEOUT_MS, millis, Self::with_header_read_timeout)?;
        c = env.set(c, ENV_MAX_CLIENT_CONNECTIONS, positive, Self::with_max_client_connections)?;
        c = env.set(c, ENV_CLIENT_IDLE_TIMEOUT_MS, millis, Self::with_client_idle_timeout)?;
        c = env.set(c, ENV_SHUTDOWN_GRACE_MS, millis, Self::with_shutdown_grace)?;
        if let Some(addr) = env.read(ENV_ADMIN_ADDR, socket_addr)? {
            let file = env.read(ENV_REVOCATION_SECRET_FILE, path)?
                .ok_or(missing(ENV_REVOCATION_SECRET_FILE))?;
            c = c.with_admin(addr, crate::RevocationSecret::from_file(file)?);
        }
        match (env.read(ENV_TLS_CERT_FILE, path)?, env.read(ENV_TLS_KEY_FILE, path)?) {
            (Some(cert), Some(key)) => c = c.with_tls(cert, key),
            (None, None) => {}
            (Some(_), None) => return Err(missing(ENV_TLS_KEY_FILE)),
            (None, Some(_)) => return Err(missing(ENV_TLS_CERT_FILE)),
        }
        Ok(c)
    }

    /// An admin listener on `addr`, apart from the FHIR listener, serving
    /// [`RevocationService`](crate::RevocationService) at `POST /revoke` to callers presenting
    /// `secret` (default: none).
    pub fn with_admin(mut self, addr: SocketAddr, secret: crate::RevocationSecret) -> Self {
        self.admin = Some((addr, secret));
        self
    }

    /// The address the proxy listens on (default `127.0.0.1:8080`).
    pub fn with_listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen_addr = addr;
        self
    }

    /// The FHIR base URL clients use; its path must be the guard's base path (default: from
    /// the bound address, the listener's scheme and the base path).
    pub fn with_public_base_url(mut self, url: Url) -> Self {
        self.public_base = Some(url);
        self
    }

    /// Connect timeout to the upstream (default 2 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for the upstream's response headers, then 504 (default 60 s). A response
    /// body that makes no progress this long (a client that stopped reading) is cut, which
    /// frees its upstream slot and connection; a body that moves has no deadline.
    pub fn with_upstream_timeout(mut self, timeout: Duration) -> Self {
        self.upstream_timeout = timeout;
        self
    }

    /// Most requests out to the upstream at once, each holding its slot until its response
    /// body ends (default 256); a request that finds none within the upstream timeout gets 503.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// A PEM file of CA certificates trusted for an https upstream, besides the system's.
    pub fn with_upstream_ca_file(mut self, path: PathBuf) -> Self {
        self.ca_file = Some(path);
        self
    }

    /// TLS on the listener, from a PEM certificate chain and a PEM private key.
    pub fn with_tls(mut self, cert: PathBuf, key: PathBuf) -> Self {
        self.tls = Some((cert, key));
        self
    }

    /// The prefix of the identity headers sent upstream (default `X-Smart-`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless it is a header-name token of at least two characters.
    pub fn with_identity_prefix(self, prefix: &str) -> Result<Self, ConfigError> {
        let prefix = self::prefix(prefix).map_err(|reason| ConfigError::Invalid {
            var: ENV_IDENTITY_HEADER_PREFIX,
            reason,
        })?;
        Ok(self.with_identity_prefix_unchecked(prefix))
    }

    fn with_identity_prefix_unchecked(mut self, prefix: String) -> Self {
        self.identity_prefix = prefix;
        self
    }

    /// Whether the client's `Authorization` header goes upstream (default `true`).
    pub fn with_forward_authorization(mut self, forward: bool) -> Self {
        self.forward_authorization = forward;
        self
    }

    /// Largest JSON Bundle whose URLs are rewritten (default 8 MiB); larger ones pass through
    /// unchanged.
    pub fn with_max_rewrite_bytes(mut self, max: usize) -> Self {
        self.max_rewrite_bytes = max;
        self
    }

    /// Longest a client may take to send its request headers (default 10 s): its first request
    /// from the connection's opening, each later one (HTTP/1) from its first bytes. A client
    /// that sends them a byte at a time is cut off without holding anyone else up.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Most client connections kept open (default 1024); further ones wait in the listen
    /// backlog until one closes. Each takes a file descriptor: raise `ulimit -n` with it.
    pub fn with_max_client_connections(mut self, max: usize) -> Self {
        self.max_client_connections = max.max(1);
        self
    }

    /// A client connection with no request in progress for this long is closed (default
    /// 10 s: every idle connection holds one of `with_max_client_connections`' slots),
    /// whatever the header deadline. Before its first request, a connection has
    /// `with_header_read_timeout` instead: one that never completes a request head (HTTP/1 or
    /// the HTTP/2 preface) is cut off then.
    pub fn with_client_idle_timeout(mut self, timeout: Duration) -> Self {
        self.client_idle_timeout = timeout;
        self
    }

    /// On SIGTERM or SIGINT, how long requests in flight may finish (default 30 s).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The upstream FHIR base.
    #[must_use]
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    /// The listening address.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The effective settings, one `NAME=value` pair each, for the one startup line (nothing
    /// here is secret: files are named, never read out).
    #[must_use]
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let opt = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("unset".to_owned(), |p| p.display().to_string())
        };
        vec![
            (ENV_UPSTREAM_URL, self.upstream.to_string()),
            (ENV_LISTEN_ADDR, self.listen_addr.to_string()),
            (
                ENV_PUBLIC_BASE_URL,
                self.public_base
                    .as_ref()
                    .map_or("derived".to_owned(), Url::to_string),
            ),
            (
                ENV_UPSTREAM_CONNECT_TIMEOUT_MS,
                self.connect_timeout.as_millis().to_string(),
            ),
            (
                ENV_UPSTREAM_TIMEOUT_MS,
                self.upstream_timeout.as_millis().to_string(),
            ),
            (
                ENV_UPSTREAM_MAX_CONNECTIONS,
                self.max_connections.to_string(),
            ),
            (ENV_UPSTREAM_CA_FILE, opt(&self.ca_file)),
            (
                ENV_TLS_CERT_FILE,
                opt(&self.tls.as_ref().map(|t| t.0.clone())),
            ),
            (
                ENV_TLS_KEY_FILE,
                opt(&self.tls.as_ref().map(|t| t.1.clone())),
            ),
            (ENV_IDENTITY_HEADER_PREFIX, self.identity_prefix.clone()),
            (
                ENV_FORWARD_AUTHORIZATION,
                self.forward_authorization.to_string(),
            ),
            (ENV_MAX_REWRITE_BYTES, self.max_rewrite_bytes.to_string()),
            (
                ENV_HEADER_READ_TIMEOUT_MS,
                self.header_read_timeout.as_millis().to_string(),
            ),
            (
                ENV_MAX_CLIENT_CONNECTIONS,
                self.max_client_connections.to_string(),
            ),
            (
                ENV_CLIENT_IDLE_TIMEOUT_MS,
                self.client_idle_timeout.as_millis().to_string(),
            ),
            (
                ENV_ADMIN_ADDR,
                self.admin
                    .as_ref()
                    .map_or("unset".to_owned(), |(addr, _)| addr.to_string()),
            ),
            (
                ENV_SHUTDOWN_GRACE_MS,
                self.shutdown_grace.as_millis().to_string(),
            ),
        ]
    }
}

/// An http(s) base URL with a host, no credentials, query or fragment; a trailing `/` dropped.
fn base_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http or https URL with a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a base URL carries no credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".to_owned());
    }
    let trimmed = url.as_str().trim_end_matches('/').to_owned();
    Url::parse(&trimmed).map_err(|e| format!("not a URL ({e})"))
}

fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("expected an address such as 127.0.0.1:8080, got {value:?}"))
}

fn path(value: &str) -> Result<PathBuf, String> {
    text(value).map(PathBuf::from)
}

/// A prefix [`IdentityPrefix`] accepts: a field-name start that names no header the guard
/// reads or the proxy sets.
fn prefix(value: &str) -> Result<String, String> {
    IdentityPrefix::new(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("{e}, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<ProxyConfig, ConfigError> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        ProxyConfig::from_lookup(|k| env.get(k).map(|v| (*v).to_owned()))
    }

    #[test]
    fn the_upstream_is_required_and_everything_else_has_a_default() {
        assert_eq!(
            from(&[]).expect_err("missing").to_string(),
            "SMART_GUARD_UPSTREAM_URL is required but not set"
        );
        let c = from(&[(ENV_UPSTREAM_URL, "http://127.0.0.1:9000/fhir/")]).expect("valid");
        assert_eq!(c.upstream.as_str(), "http://127.0.0.1:9000/fhir");
        assert_eq!(c.listen_addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.identity_prefix, "X-Smart-");
        assert!(c.forward_authorization && c.tls.is_none() && c.public_base.is_none());
    }

    #[test]
    fn every_proxy_variable_is_read() {
        let c = from(&[
            (ENV_UPSTREAM_URL, "https://fhir.internal/r4"),
            (ENV_LISTEN_ADDR, "0.0.0.0:9443"),
            (ENV_PUBLIC_BASE_URL, "https://fhir.example.org/fhir"),
            (ENV_UPSTREAM_CONNECT_TIMEOUT_MS, "100"),
            (ENV_UPSTREAM_TIMEOUT_MS, "2000"),
            (ENV_UPSTREAM_MAX_CONNECTIONS, "8"),
            (ENV_UPSTREAM_CA_FILE, "/etc/ca.pem"),
            (ENV_TLS_CERT_FILE, "/etc/cert.pem"),
            (ENV_TLS_KEY_FILE, "/etc/key.pem"),
            (ENV_IDENTITY_HEADER_PREFIX, "X-Auth-"),
            (ENV_FORWARD_AUTHORIZATION, "false"),
            (ENV_MAX_REWRITE_BYTES, "1024"),
            (ENV_HEADER_READ_TIMEOUT_MS, "500"),
            (ENV_MAX_CLIENT_CONNECTIONS, "9"),
            (ENV_CLIENT_IDLE_TIMEOUT_MS, "1500"),
            (ENV_SHUTDOWN_GRACE_MS, "700"),
        ])
        .expect("valid");
        assert_eq!(c.listen_addr.port(), 9443);
        assert_eq!(
            c.public_base.as_ref().map(Url::as_str),
            Some("https://fhir.example.org/fhir")
        );
        assert_eq!(c.connect_timeout, Duration::from_millis(100));
        assert_eq!(c.upstream_timeout, Duration::from_millis(2000));
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            c.tls,
            Some((
                PathBuf::from("/etc/cert.pem"),
                PathBuf::from("/etc/key.pem")
            ))
        );
        assert_eq!(c.identity_prefix, "X-Auth-");
        assert!(!c.forward_authorization);
        assert_eq!(c.max_rewrite_bytes, 1024);
        assert_eq!(c.header_read_timeout, Duration::from_millis(500));
        assert_eq!(c.max_client_connections, 9);
        assert_eq!(c.client_idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.shutdown_grace, Duration::from_millis(700));
        assert_eq!(c.settings().len(), crate::config::env::PROXY.len());
    }

    #[test]
    fn bad_values_are_named() {
        let up = (ENV_UPSTREAM_URL, "http://up/fhir");
        for (pair, want) in [
            (
                (ENV_UPSTREAM_URL, "ftp://up/"),
                "SMART_GUARD_UPSTREAM_URL is invalid: expected an http or https URL with a host",
            ),
            (
                (ENV_UPSTREAM_URL, "http://up/fhir?x=1"),
                "SMART_GUARD_UPSTREAM_URL is invalid: a base URL has no query or fragment",
            ),
            (
                (ENV_UPSTREAM_URL, "http://u:p@up/fhir"),
                "SMART_GUARD_UPSTREAM_URL is invalid: a base URL carries no credentials",
            ),
            (
                (ENV_LISTEN_ADDR, "localhost"),
                "SMART_GUARD_LISTEN_ADDR is invalid: expected an address such as 127.0.0.1:8080, got \"localhost\"",
            ),
            (
                (ENV_IDENTITY_HEADER_PREFIX, "X Smart"),
                "SMART_GUARD_IDENTITY_HEADER_PREFIX is invalid: the identity header prefix is not a field name, got \"X Smart\"",
            ),
            (
                (ENV_IDENTITY_HEADER_PREFIX, "Content-"),
                "SMART_GUARD_IDENTITY_HEADER_PREFIX is invalid: the identity header prefix matches content-type, got \"Content-\"",
            ),
            (
                (ENV_UPSTREAM_MAX_CONNECTIONS, "0"),
                "SMART_GUARD_UPSTREAM_MAX_CONNECTIONS is invalid: must be greater than 0",
            ),
            (
                (ENV_TLS_CERT_FILE, "/c.pem"),
                "SMART_GUARD_TLS_KEY_FILE is required but not set",
            ),
            (
                (ENV_FORWARD_AUTHORIZATION, "no"),
                "SMART_GUARD_FORWARD_AUTHORIZATION is invalid: expected true or false, got \"no\"",
            ),
        ] {
            let pairs = if pair.0 == ENV_UPSTREAM_URL {
                vec![pair]
            } else {
                vec![up, pair]
            };
            assert_eq!(from(&pairs).expect_err(want).to_string(), want);
        }
    }
}
