//! Configuration: built in code with [`Config::new`] and `with_*` setters, or read from the
//! `SMART_GUARD_*` environment variables with [`Config::from_env`] (their names are in
//! [`env`](mod@env)).

mod client_auth;
pub(crate) mod discovery;
pub mod env;
mod resource;
mod settings;

pub(crate) use self::client_auth::Secret;
pub use self::{
    client_auth::{AssertionAudience, ClientAuth},
    settings::{Setting, Settings},
};

use std::{sync::Arc, time::Duration};

use reqwest::Url;

#[cfg(feature = "client")]
use self::env::{ENV_CLIENT_ASSERTION_AUD, ENV_CLIENT_KEY_FILE, ENV_TOKEN_SCOPE, ENV_TOKEN_URL};
use self::env::{ENV_CLIENT_SECRET, ENV_INTROSPECTION_URL};
use crate::{
    audit::{AuditEvent, AuditHook},
    classify::{
        BulkPath, DEFAULT_MAX_JSON_DEPTH, OperationRule, Policy, allowed_operations_of,
        bulk_paths_of,
    },
    error::ConfigError,
    limits::AnalysisLimits,
};

/// Everything the guard needs. `Debug` redacts the client secret and the private key.
///
/// ```
/// use std::time::Duration;
/// use smart_guard::Config;
///
/// let config = Config::new(
///     "https://as.example.org/introspect".parse().unwrap(),
///     "fhir-server",
///     "s3cret",
/// )
/// .with_base_path("/fhir")
/// .unwrap()
/// .with_max_ttl(Duration::from_secs(30));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Config {
    /// `None` until [`Config::discover`] finds it from the issuer's metadata.
    pub(crate) introspection_url: Option<Url>,
    /// The issuer exactly as configured (compared as a string, RFC 8414 §3.3).
    pub(crate) issuer: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<Secret>,
    pub(crate) client_auth: ClientAuth,
    #[cfg(feature = "client")]
    pub(crate) client_key: Option<Arc<crate::client::KeyPair>>,
    /// The file the key was read from (`SMART_GUARD_CLIENT_KEY_FILE`); `None` for a key set in
    /// code. Shown by [`Config::settings`]; the key itself never is.
    #[cfg(feature = "client")]
    pub(crate) client_key_file: Option<Arc<str>>,
    /// Where the secret was read from, for [`Config::settings`].
    pub(crate) client_secret_file: Option<Arc<str>>,
    pub(crate) assertion_audience: AssertionAudience,
    pub(crate) token_url: Option<Url>,
    pub(crate) token_scope: Option<String>,
    pub(crate) max_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) capacity: u64,
    pub(crate) negative_capacity: u64,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) expected_issuer: Option<String>,
    pub(crate) expected_audience: Option<String>,
    pub(crate) require_exp: bool,
    pub(crate) clock_skew: Duration,
    pub(crate) realm: String,
    pub(crate) base_path: String,
    pub(crate) max_token_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) retry_after: Duration,
    pub(crate) http_client: Option<reqwest::Client>,
    pub(crate) allowed_operations: Arc<[OperationRule]>,
    /// The rules as given, for [`Config::settings`].
    pub(crate) allowed_operations_text: Arc<str>,
    pub(crate) bulk_paths: Arc<[BulkPath]>,
    /// The rules as given, for [`Config::settings`].
    pub(crate) bulk_paths_text: Arc<str>,
    pub(crate) max_json_depth: usize,
    pub(crate) analysis_limits: AnalysisLimits,
    pub(crate) max_in_flight: usize,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cooldown: Duration,
    /// `None`: the introspection timeout.
    pub(crate) request_deadline: Option<Duration>,
    /// `None`: stale-if-error is off.
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) audit_log: bool,
    pub(crate) audit_hook: Option<AuditHook>,
    /// This FHIR server's resource identifier (RFC 9728), if set.
    pub(crate) resource: Option<resource::ResourceUrl>,
    pub(crate) resource_name: Option<String>,
    /// What the AS's metadata said, kept by [`Config::discover`] for the served documents.
    pub(crate) advertised: discovery::Advertised,
    /// Fleet mode: the shared cache on Redis.
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<crate::fleet::config::FleetConfig>,
}

impl Config {
    /// A configuration with the defaults of the env-var table.
    pub fn new(
        introspection_url: Url,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self::with_endpoint(Some(introspection_url), client_id.into())
            .with_client_secret(client_secret)
    }

    /// A configuration for the AS with this issuer identifier, whose endpoints
    /// [`Config::discover`] reads from the AS metadata. No secret is set: add one with
    /// [`Config::with_client_secret`], or a key with `with_private_key` (feature `client`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the issuer is an http(s) URL with a host and no
    /// credentials, query or fragment.
    pub fn for_issuer(issuer: &str, client_id: impl Into<String>) -> Result<Self, ConfigError> {
        Self::with_endpoint(None, client_id.into()).with_issuer(issuer)
    }

    fn with_endpoint(introspection_url: Option<Url>, client_id: String) -> Self {
        Self {
            introspection_url,
            issuer: None,
            client_id,
            client_secret: None,
            client_auth: ClientAuth::default(),
            #[cfg(feature = "client")]
            client_key: None,
            #[cfg(feature = "client")]
            client_key_file: None,
            client_secret_file: None,
            assertion_audience: AssertionAudience::default(),
            token_url: None,
            token_scope: None,
            max_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            capacity: 100_000,
            negative_capacity: 10_000,
            connect_timeout: Duration::from_millis(2_000),
            timeout: Duration::from_millis(5_000),
            max_response_bytes: 64 * 1024,
            expected_issuer: None,
            expected_audience: None,
            require_exp: true,
            clock_skew: Duration::from_secs(5),
            realm: "fhir".to_owned(),
            base_path: String::new(),
            max_token_bytes: 8 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            retry_after: Duration::from_secs(5),
            http_client: None,
            allowed_operations: Arc::new([]),
            allowed_operations_text: Arc::from(""),
            bulk_paths: Arc::new([]),
            bulk_paths_text: Arc::from(""),
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            analysis_limits: AnalysisLimits::default(),
            max_in_flight: 64,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_millis(5_000),
            request_deadline: None,
            stale_if_error: None,
            audit_log: false,
            audit_hook: None,
            resource: None,
            resource_name: None,
            advertised: discovery::Advertised::default(),
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// Checks that the chosen introspection authentication has what it needs. Before discovery
    /// (`resolved == false`) endpoints may still come from the issuer's metadata.
    pub(crate) fn check_client_auth(&self, resolved: bool) -> Result<(), ConfigError> {
        let discoverable = !resolved && self.issuer.is_some();
        if self.introspection_url.is_none() && !discoverable {
            return Err(ConfigError::Invalid {
                var: ENV_INTROSPECTION_URL,
                reason: "not set; set it, or set SMART_GUARD_ISSUER and call Config::discover()"
                    .to_owned(),
            });
        }
        if self.client_auth.uses_secret() && self.client_secret.is_none() {
            return Err(ConfigError::Missing {
                var: ENV_CLIENT_SECRET,
            });
        }
        #[cfg(feature = "client")]
        if self.client_auth.uses_key() && self.client_key.is_none() {
            return Err(ConfigError::Missing {
                var: ENV_CLIENT_KEY_FILE,
            });
        }
        #[cfg(feature = "client")]
        if self.client_auth == ClientAuth::Bearer {
            if self.token_scope.is_none() {
                return Err(ConfigError::Missing {
                    var: ENV_TOKEN_SCOPE,
                });
            }
            if self.token_url.is_none() && !discoverable {
                return Err(ConfigError::Invalid {
                    var: ENV_TOKEN_URL,
                    reason: "bearer needs a token endpoint; set it, or set SMART_GUARD_ISSUER and call Config::discover()".to_owned(),
                });
            }
        }
        #[cfg(feature = "client")]
        if self.client_auth == ClientAuth::PrivateKeyJwt {
            match self.assertion_audience {
                AssertionAudience::Issuer if self.issuer.is_none() => {
                    return Err(ConfigError::Invalid {
                        var: ENV_CLIENT_ASSERTION_AUD,
                        reason: "is issuer, but SMART_GUARD_ISSUER is not set".to_owned(),
                    });
                }
                AssertionAudience::TokenEndpoint if self.token_url.is_none() && !discoverable => {
                    return Err(ConfigError::Invalid {
                        var: ENV_CLIENT_ASSERTION_AUD,
                        reason: "is token_endpoint, but no token endpoint is set or discoverable"
                            .to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How to authenticate to the introspection endpoint.
    pub fn with_client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// The client secret for `client_secret_basic` and `client_secret_post` (never logged).
    pub fn with_client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(Secret(secret.into()));
        self.client_secret_file = None;
        self
    }

    /// The introspection endpoint (instead of discovering it).
    pub fn with_introspection_url(mut self, url: Url) -> Self {
        self.introspection_url = Some(url);
        self
    }

    /// The AS issuer identifier: [`Config::discover`] reads the AS metadata from it, and an `iss`
    /// in introspection answers must equal it unless [`Config::with_expected_issuer`] says
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the issuer is an http(s) URL with a host and no
    /// credentials, query or fragment.
    pub fn with_issuer(mut self, issuer: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::Invalid {
            var: "issuer",
            reason,
        };
        let url = http_url(issuer).map_err(invalid)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "an issuer has no query or fragment (RFC 8414 §2)".to_owned(),
            ));
        }
        if self.expected_issuer.is_none() {
            self.expected_issuer = Some(issuer.to_owned());
        }
        self.issuer = Some(issuer.to_owned());
        Ok(self)
    }

    /// This resource server's private key (RS384 or ES384), for [`ClientAuth::PrivateKeyJwt`]
    /// and [`ClientAuth::Bearer`]. Its `kid` is its RFC 7638 thumbprint, as in the JWKS that
    /// `smart-guard keygen` writes: register that JWKS at the AS.
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn with_private_key(mut self, key: impl Into<Arc<crate::client::KeyPair>>) -> Self {
        self.client_key = Some(key.into());
        self.client_key_file = None;
        self
    }

    /// The `aud` of `private_key_jwt` assertions sent to the introspection endpoint.
    pub fn with_assertion_audience(mut self, audience: AssertionAudience) -> Self {
        self.assertion_audience = audience;
        self
    }

    /// The token endpoint where [`ClientAuth::Bearer`] gets this resource server's own token,
    /// and the `token_endpoint` of the served SMART configuration (`crate::metadata`).
    pub fn with_token_url(mut self, url: Url) -> Self {
        self.token_url = Some(url);
        self
    }

    /// The scope [`ClientAuth::Bearer`] requests for this resource server's own token.
    pub fn with_token_scope(mut self, scope: impl Into<String>) -> Self {
        self.token_scope = Some(scope.into());
        self
    }

    /// The longest time an active answer stays cached (also capped by the token's `exp`).
    pub fn with_max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// How long an inactive answer stays cached.
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Capacities of the active and inactive caches.
    pub fn with_capacity(mut self, active: u64, inactive: u64) -> Self {
        self.capacity = active;
        self.negative_capacity = inactive;
        self
    }

    /// Connect and total timeouts of one introspection call.
    pub fn with_timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.connect_timeout = connect;
        self.timeout = total;
        self
    }

    /// The largest introspection answer read, in bytes.
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// An `iss` in the answer must equal this.
    pub fn with_expected_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.expected_issuer = Some(issuer.into());
        self
    }

    /// An `aud` in the answer must contain this (usually this server's FHIR base URL).
    pub fn with_expected_audience(mut self, audience: impl Into<String>) -> Self {
        self.expected_audience = Some(audience.into());
        self
    }

    /// Whether answers without `exp` are refused (the default; SMART requires `exp`).
    pub fn with_require_exp(mut self, require: bool) -> Self {
        self.require_exp = require;
        self
    }

    /// Leeway for `exp` and `nbf`.
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// The `realm` of challenges.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the realm holds `"`, `\` or control characters.
    pub fn with_realm(mut self, realm: &str) -> Result<Self, ConfigError> {
        if realm.is_empty()
            || realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            return Err(ConfigError::Invalid {
                var: "realm",
                reason: "a realm is printable ASCII without '\"' or '\\'".to_owned(),
            });
        }
        self.realm = realm.to_owned();
        Ok(self)
    }

    /// The FHIR base path (`/fhir`), or `""` for the root. Requests outside it are refused; a
    /// layer on a router nested at that path works too (see the crate docs).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the path is empty or starts with `/`, does not end with
    /// `/`, and has no empty, dot or percent-encoded segments.
    pub fn with_base_path(mut self, path: &str) -> Result<Self, ConfigError> {
        let valid = path.is_empty()
            || (path.starts_with('/')
                && path[1..].split('/').all(|s| {
                    !s.is_empty() && s != "." && s != ".." && !s.contains(['%', '?', '#'])
                }));
        if !valid {
            return Err(ConfigError::Invalid {
                var: "base_path",
                reason: format!(
                    "expected a path like /fhir (leading '/', no trailing '/'), got {path:?}"
                ),
            });
        }
        self.base_path = path.to_owned();
        Ok(self)
    }

    /// The longest bearer token accepted, in bytes.
    pub fn with_max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// The largest body the guard reads (`POST _search` form, batch or transaction Bundle,
    /// `$export` Parameters), in bytes; larger bodies are refused with 413.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Allow-lists `$operations` with the scopes each needs (the `SMART_GUARD_ALLOWED_OPERATIONS`
    /// syntax, see the crate docs), replacing the current list. `$export`, `$everything` and
    /// `$graphql` have fixed rules and cannot be listed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad rule.
    pub fn with_allowed_operations(mut self, rules: &str) -> Result<Self, ConfigError> {
        self.allowed_operations = allowed_operations_of("allowed_operations", rules)?;
        self.allowed_operations_text = Arc::from(rules.trim());
        Ok(self)
    }

    /// Configures bulk-data status and file URL prefixes and the scopes they need (the
    /// `SMART_GUARD_BULK_PATHS` syntax), replacing the current list. Unconfigured ones are denied.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad rule.
    pub fn with_bulk_paths(mut self, rules: &str) -> Result<Self, ConfigError> {
        self.bulk_paths = bulk_paths_of("bulk_paths", rules)?;
        self.bulk_paths_text = Arc::from(rules.trim());
        Ok(self)
    }

    /// The deepest nesting of objects and arrays accepted in a batch or `$export` JSON body;
    /// deeper bodies are refused with 400.
    pub fn with_max_json_depth(mut self, depth: usize) -> Self {
        self.max_json_depth = depth;
        self
    }

    /// The classification [`Policy`] these settings describe: allow-listed operations, bulk
    /// paths, this server's base URL (`SMART_GUARD_EXPECTED_AUDIENCE`) for absolute batch urls,
    /// the JSON nesting limit and the analysis limits.
    pub fn policy(&self) -> Policy {
        Policy::new(
            self.allowed_operations.clone(),
            self.bulk_paths.clone(),
            self.expected_audience.as_deref(),
            self.max_json_depth,
            self.analysis_limits,
        )
    }

    /// How much analysis one request may ask of the guard: parameters, includes, chain and
    /// `_has` depth, Bundle entries, steps in all (400 beyond). See [`AnalysisLimits`].
    pub fn with_analysis_limits(mut self, limits: AnalysisLimits) -> Self {
        self.analysis_limits = limits;
        self
    }

    /// The most introspection calls out at once (default 64). A miss beyond that gets 503 at
    /// once, not a place in a queue; requests coalesced onto a call already out do not count.
    /// `0` is taken as 1; [`Config::try_with_max_in_flight`] refuses it.
    pub fn with_max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// [`Config::with_max_in_flight`], refusing `0` instead of taking it as 1 (the check of
    /// `SMART_GUARD_MAX_IN_FLIGHT`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `0`.
    pub fn try_with_max_in_flight(self, calls: usize) -> Result<Self, ConfigError> {
        match calls {
            0 => Err(greater_than_0("max_in_flight")),
            calls => Ok(self.with_max_in_flight(calls)),
        }
    }

    /// The circuit breaker: `failures` consecutive AS outages (connect, timeout, transport, 5xx,
    /// 429) open it (default 5); while open, uncached tokens get 503 without an AS call; after
    /// `cooldown` (default 5 s) one probe call goes through and its success closes it. `0`
    /// failures is taken as 1; [`Config::try_with_breaker`] refuses it.
    pub fn with_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_failures = failures.max(1);
        self.breaker_cooldown = cooldown;
        self
    }

    /// [`Config::with_breaker`], refusing `0` failures instead of taking it as 1 (the check of
    /// `SMART_GUARD_BREAKER_FAILURES`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `0` failures.
    pub fn try_with_breaker(self, failures: u32, cooldown: Duration) -> Result<Self, ConfigError> {
        match failures {
            0 => Err(greater_than_0("breaker_failures")),
            failures => Ok(self.with_breaker(failures, cooldown)),
        }
    }

    /// The longest a request waits for an introspection answer, whether it made the call or
    /// joined one (default: the introspection timeout of [`Config::with_timeouts`]).
    pub fn with_request_deadline(mut self, deadline: Duration) -> Self {
        self.request_deadline = Some(deadline);
        self
    }

    /// Stale-if-error (default off; [`Duration::ZERO`] turns it off): while the AS is out
    /// (transport error, timeout, 5xx, breaker open, in-flight cap, deadline), a token's last
    /// active answer is served for at most `window` past its cache TTL, and never past its
    /// `exp`. Each use is counted and logged at warn.
    ///
    /// # Security
    ///
    /// A token revoked during the outage keeps working for up to `window` longer than the cache
    /// TTL alone would allow (RFC 7662 §4). Inactive answers are never served stale, and an
    /// inactive answer ends a token's stale entry.
    pub fn with_stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = (!window.is_zero()).then_some(window);
        self
    }

    /// Logs one INFO event per decision under the `smart_guard::audit` target (default off):
    /// outcome, status of a denial, `client_id`, `jti`, method, path (no query), interaction,
    /// resource types, the scopes that granted it or the scope that was missing. Never a token.
    /// Route it apart with a target filter, e.g. `RUST_LOG=info,smart_guard::audit=info`.
    pub fn with_audit_log(mut self, on: bool) -> Self {
        self.audit_log = on;
        self
    }

    /// Calls `hook` with the [`AuditEvent`] of every decision (allowed, public, denied), on the
    /// request path and inline: keep it short and send heavy work elsewhere (a channel). A
    /// panic in the hook is caught and logged at ERROR (once a minute); the decision stands.
    pub fn with_audit_hook(
        mut self,
        hook: impl Fn(&AuditEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.audit_hook = Some(AuditHook(Arc::new(hook)));
        self
    }

    /// The `Retry-After` of 503 answers.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Uses this HTTP client (and its connection pool) for introspection. Its own timeouts
    /// then apply instead of [`Config::with_timeouts`]; configure them on the client.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// The introspection endpoint; `None` before [`Config::discover`] when only an issuer is set.
    #[must_use]
    pub fn introspection_url(&self) -> Option<&Url> {
        self.introspection_url.as_ref()
    }

    /// The AS issuer identifier, if one is set.
    #[must_use]
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The token endpoint used by [`ClientAuth::Bearer`], if set or discovered.
    #[must_use]
    pub fn token_url(&self) -> Option<&Url> {
        self.token_url.as_ref()
    }

    /// The base path, `""` for the root.
    #[must_use]
    pub fn base_path(&self) -> &str {
        &self.base_path
    }
}

/// An `http` or `https` URL with a host and no credentials, or why not.
fn http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http or https URL with a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials belong in SMART_GUARD_CLIENT_ID/SECRET, not in the URL".to_owned(),
        );
    }
    Ok(url)
}

fn greater_than_0(var: &'static str) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: "must be greater than 0".to_owned(),
    }
}

/// Fleet mode's settings on a [`Config`].
#[cfg(feature = "redis")]
impl Config {
    /// Fleet mode: a shared cache on Redis, fleet-wide single-flight and revocation (see
    /// [`crate::fleet`]). [`Config::from_env`] sets it from `SMART_GUARD_REDIS_URL` and
    /// `SMART_GUARD_FLEET_KEY_FILE`.
    pub fn with_fleet(mut self, fleet: crate::fleet::config::FleetConfig) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The fleet settings read through `lookup`, when a Redis URL is set.
    pub(crate) fn with_fleet_from(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Ok(
            match crate::fleet::config::FleetConfig::from_lookup(lookup)? {
                Some(fleet) => self.with_fleet(fleet),
                None => self,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            "http://127.0.0.1:9/introspect".parse().expect("url"),
            "fhir-server",
            "s3cret",
        )
    }

    #[test]
    fn the_checked_setters_refuse_the_zero_the_plain_ones_take_as_1() {
        let err = config().try_with_max_in_flight(0).expect_err("0 calls");
        assert_eq!(
            err.to_string(),
            "max_in_flight is invalid: must be greater than 0"
        );
        let err = config()
            .try_with_breaker(0, Duration::from_millis(10))
            .expect_err("0 failures");
        assert_eq!(
            err.to_string(),
            "breaker_failures is invalid: must be greater than 0"
        );
        let checked = config()
            .try_with_max_in_flight(8)
            .expect("8 calls")
            .try_with_breaker(3, Duration::from_millis(250))
            .expect("3 failures");
        assert_eq!((checked.max_in_flight, checked.breaker_failures), (8, 3));
        assert_eq!(checked.breaker_cooldown, Duration::from_millis(250));
        let plain = config()
            .with_max_in_flight(0)
            .with_breaker(0, Duration::ZERO);
        assert_eq!((plain.max_in_flight, plain.breaker_failures), (1, 1));
    }

    #[test]
    fn checking_setters_name_their_setting() {
        for (err, setting) in [
            (config().with_issuer("http://as/?q=1").err(), "issuer"),
            (config().with_realm("a\"b").err(), "realm"),
            (config().with_base_path("/fhir/").err(), "base_path"),
            (
                config().with_allowed_operations("ValueSet/$expand").err(),
                "allowed_operations",
            ),
            (config().with_bulk_paths("bulk-files").err(), "bulk_paths"),
            (
                config().with_resource_url("https://h/fhir?x").err(),
                "resource_url",
            ),
        ] {
            let text = err.expect(setting).to_string();
            assert!(
                text.starts_with(&format!("{setting} is invalid: ")),
                "{text}"
            );
        }
    }
}
