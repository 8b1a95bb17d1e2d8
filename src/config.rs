//! Configuration: built in code with [`Config::new`] and `with_*` setters, or read from
//! `SMART_GUARD_*` environment variables with [`Config::from_env`].

use std::{fmt, sync::Arc, time::Duration};

use reqwest::Url;

use crate::{
    error::ConfigError,
    fhir_path::{DEFAULT_MAX_JSON_DEPTH, allowed_operations_of, bulk_paths_of},
    operations::{BulkPath, OperationRule},
};

/// `SMART_GUARD_INTROSPECTION_URL`: the RFC 7662 introspection endpoint (required).
pub const ENV_INTROSPECTION_URL: &str = "SMART_GUARD_INTROSPECTION_URL";
/// `SMART_GUARD_CLIENT_ID`: this resource server's client id at the AS (required).
pub const ENV_CLIENT_ID: &str = "SMART_GUARD_CLIENT_ID";
/// `SMART_GUARD_CLIENT_SECRET`: this resource server's client secret at the AS (required).
pub const ENV_CLIENT_SECRET: &str = "SMART_GUARD_CLIENT_SECRET";
/// `SMART_GUARD_CLIENT_AUTH`: `client_secret_basic` (default) or `client_secret_post`.
pub const ENV_CLIENT_AUTH: &str = "SMART_GUARD_CLIENT_AUTH";
/// `SMART_GUARD_CACHE_MAX_TTL_SECS`: longest time an active answer is cached (default 60).
pub const ENV_CACHE_MAX_TTL_SECS: &str = "SMART_GUARD_CACHE_MAX_TTL_SECS";
/// `SMART_GUARD_NEGATIVE_TTL_SECS`: how long an inactive answer is cached (default 5).
pub const ENV_NEGATIVE_TTL_SECS: &str = "SMART_GUARD_NEGATIVE_TTL_SECS";
/// `SMART_GUARD_CACHE_CAPACITY`: most active entries cached (default 100000).
pub const ENV_CACHE_CAPACITY: &str = "SMART_GUARD_CACHE_CAPACITY";
/// `SMART_GUARD_NEGATIVE_CACHE_CAPACITY`: most inactive entries cached (default 10000).
pub const ENV_NEGATIVE_CACHE_CAPACITY: &str = "SMART_GUARD_NEGATIVE_CACHE_CAPACITY";
/// `SMART_GUARD_CONNECT_TIMEOUT_MS`: TCP/TLS connect timeout to the AS (default 2000).
pub const ENV_CONNECT_TIMEOUT_MS: &str = "SMART_GUARD_CONNECT_TIMEOUT_MS";
/// `SMART_GUARD_TIMEOUT_MS`: total timeout of one introspection call (default 5000).
pub const ENV_TIMEOUT_MS: &str = "SMART_GUARD_TIMEOUT_MS";
/// `SMART_GUARD_MAX_RESPONSE_BYTES`: largest introspection answer read (default 65536).
pub const ENV_MAX_RESPONSE_BYTES: &str = "SMART_GUARD_MAX_RESPONSE_BYTES";
/// `SMART_GUARD_EXPECTED_ISSUER`: if set, an `iss` in the answer must equal it.
pub const ENV_EXPECTED_ISSUER: &str = "SMART_GUARD_EXPECTED_ISSUER";
/// `SMART_GUARD_EXPECTED_AUDIENCE`: if set, an `aud` in the answer must contain it.
pub const ENV_EXPECTED_AUDIENCE: &str = "SMART_GUARD_EXPECTED_AUDIENCE";
/// `SMART_GUARD_REQUIRE_EXP`: whether an answer without `exp` is refused (default true).
pub const ENV_REQUIRE_EXP: &str = "SMART_GUARD_REQUIRE_EXP";
/// `SMART_GUARD_CLOCK_SKEW_SECS`: leeway for `exp` and `nbf` (default 5).
pub const ENV_CLOCK_SKEW_SECS: &str = "SMART_GUARD_CLOCK_SKEW_SECS";
/// `SMART_GUARD_REALM`: the `realm` of `WWW-Authenticate` challenges (default `fhir`).
pub const ENV_REALM: &str = "SMART_GUARD_REALM";
/// `SMART_GUARD_BASE_PATH`: the FHIR base path, e.g. `/fhir` (default: the root).
pub const ENV_BASE_PATH: &str = "SMART_GUARD_BASE_PATH";
/// `SMART_GUARD_MAX_TOKEN_BYTES`: longest bearer token accepted (default 8192).
pub const ENV_MAX_TOKEN_BYTES: &str = "SMART_GUARD_MAX_TOKEN_BYTES";
/// `SMART_GUARD_MAX_BODY_BYTES`: largest body the guard reads: a `POST _search` form, a batch or
/// transaction Bundle, a `$export` Parameters body (default 4194304).
pub const ENV_MAX_BODY_BYTES: &str = "SMART_GUARD_MAX_BODY_BYTES";
/// `SMART_GUARD_RETRY_AFTER_SECS`: `Retry-After` on 503 answers (default 5).
pub const ENV_RETRY_AFTER_SECS: &str = "SMART_GUARD_RETRY_AFTER_SECS";
/// `SMART_GUARD_ALLOWED_OPERATIONS`: `$operations` allowed besides `$export` and `$everything`,
/// with the scopes each needs, e.g. `POST ValueSet/$expand=ValueSet.r; */[id]/$meta=[type].r`
/// (default: none).
pub const ENV_ALLOWED_OPERATIONS: &str = "SMART_GUARD_ALLOWED_OPERATIONS";
/// `SMART_GUARD_BULK_PATHS`: bulk-data status and file URL prefixes and the scopes they need,
/// e.g. `/$export-poll-status; GET /bulk-files=*.rs` (default: none, so they are denied).
pub const ENV_BULK_PATHS: &str = "SMART_GUARD_BULK_PATHS";
/// `SMART_GUARD_MAX_JSON_DEPTH`: deepest nesting of a batch or `$export` JSON body (default 64).
pub const ENV_MAX_JSON_DEPTH: &str = "SMART_GUARD_MAX_JSON_DEPTH";

/// How the resource server authenticates to the introspection endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuth {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }
}

/// A secret string whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything the guard needs. `Debug` redacts the client secret.
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
    pub(crate) introspection_url: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) client_auth: ClientAuth,
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
    pub(crate) bulk_paths: Arc<[BulkPath]>,
    pub(crate) max_json_depth: usize,
}

impl Config {
    /// A configuration with the defaults of the env-var table.
    pub fn new(
        introspection_url: Url,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            introspection_url,
            client_id: client_id.into(),
            client_secret: Secret(client_secret.into()),
            client_auth: ClientAuth::default(),
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
            bulk_paths: Arc::new([]),
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
        }
    }

    /// Reads the `SMART_GUARD_*` environment variables.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (env-var name to value), so tests can pass a map.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use smart_guard::Config;
    ///
    /// let env = HashMap::from([
    ///     ("SMART_GUARD_INTROSPECTION_URL", "http://127.0.0.1:9000/introspect"),
    ///     ("SMART_GUARD_CLIENT_ID", "fhir"),
    ///     ("SMART_GUARD_CLIENT_SECRET", "s3cret"),
    ///     ("SMART_GUARD_CACHE_MAX_TTL_SECS", "soon"),
    /// ]);
    /// let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
    /// assert!(err.to_string().starts_with("SMART_GUARD_CACHE_MAX_TTL_SECS is invalid"));
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        let required = |var: &'static str| get(var).ok_or(ConfigError::Missing { var });

        let url = required(ENV_INTROSPECTION_URL)?;
        let url = parse_url(ENV_INTROSPECTION_URL, url.trim())?;
        let client_id = required(ENV_CLIENT_ID)?;
        let secret =
            lookup(ENV_CLIENT_SECRET)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing {
                    var: ENV_CLIENT_SECRET,
                })?;
        let mut config = Self::new(url, client_id.trim(), secret);

        if let Some(v) = get(ENV_CLIENT_AUTH) {
            config.client_auth =
                ClientAuth::parse(v.trim()).ok_or_else(|| ConfigError::Invalid {
                    var: ENV_CLIENT_AUTH,
                    reason: format!(
                        "expected client_secret_basic or client_secret_post, got {:?}",
                        v.trim()
                    ),
                })?;
        }
        if let Some(v) = get(ENV_CACHE_MAX_TTL_SECS) {
            config.max_ttl = Duration::from_secs(positive(ENV_CACHE_MAX_TTL_SECS, &v)?);
        }
        if let Some(v) = get(ENV_NEGATIVE_TTL_SECS) {
            config.negative_ttl = Duration::from_secs(positive(ENV_NEGATIVE_TTL_SECS, &v)?);
        }
        if let Some(v) = get(ENV_CACHE_CAPACITY) {
            config.capacity = positive(ENV_CACHE_CAPACITY, &v)?;
        }
        if let Some(v) = get(ENV_NEGATIVE_CACHE_CAPACITY) {
            config.negative_capacity = positive(ENV_NEGATIVE_CACHE_CAPACITY, &v)?;
        }
        if let Some(v) = get(ENV_CONNECT_TIMEOUT_MS) {
            config.connect_timeout = Duration::from_millis(positive(ENV_CONNECT_TIMEOUT_MS, &v)?);
        }
        if let Some(v) = get(ENV_TIMEOUT_MS) {
            config.timeout = Duration::from_millis(positive(ENV_TIMEOUT_MS, &v)?);
        }
        if let Some(v) = get(ENV_MAX_RESPONSE_BYTES) {
            config.max_response_bytes = usize_of(ENV_MAX_RESPONSE_BYTES, &v)?;
        }
        config.expected_issuer = get(ENV_EXPECTED_ISSUER).map(|v| v.trim().to_owned());
        config.expected_audience = get(ENV_EXPECTED_AUDIENCE).map(|v| v.trim().to_owned());
        if let Some(v) = get(ENV_REQUIRE_EXP) {
            config.require_exp = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ConfigError::Invalid {
                        var: ENV_REQUIRE_EXP,
                        reason: format!("expected true or false, got {other:?}"),
                    });
                }
            };
        }
        if let Some(v) = get(ENV_CLOCK_SKEW_SECS) {
            config.clock_skew = Duration::from_secs(number(ENV_CLOCK_SKEW_SECS, &v)?);
        }
        if let Some(v) = get(ENV_REALM) {
            config = config.with_realm_checked(ENV_REALM, v.trim())?;
        }
        if let Some(v) = get(ENV_BASE_PATH) {
            config = config.with_base_path_checked(ENV_BASE_PATH, v.trim())?;
        }
        if let Some(v) = get(ENV_MAX_TOKEN_BYTES) {
            config.max_token_bytes = usize_of(ENV_MAX_TOKEN_BYTES, &v)?;
        }
        if let Some(v) = get(ENV_MAX_BODY_BYTES) {
            config.max_body_bytes = usize_of(ENV_MAX_BODY_BYTES, &v)?;
        }
        if let Some(v) = get(ENV_RETRY_AFTER_SECS) {
            config.retry_after = Duration::from_secs(positive(ENV_RETRY_AFTER_SECS, &v)?);
        }
        if let Some(v) = get(ENV_ALLOWED_OPERATIONS) {
            config.allowed_operations = allowed_operations_of(ENV_ALLOWED_OPERATIONS, &v)?;
        }
        if let Some(v) = get(ENV_BULK_PATHS) {
            config.bulk_paths = bulk_paths_of(ENV_BULK_PATHS, &v)?;
        }
        if let Some(v) = get(ENV_MAX_JSON_DEPTH) {
            config.max_json_depth = usize_of(ENV_MAX_JSON_DEPTH, &v)?;
        }
        Ok(config)
    }

    /// How to authenticate to the introspection endpoint.
    pub fn with_client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
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
    pub fn with_realm(self, realm: &str) -> Result<Self, ConfigError> {
        self.with_realm_checked("realm", realm)
    }

    /// The FHIR base path (`/fhir`), or `""` for the root. Requests outside it are refused; a
    /// layer on a router nested at that path works too (see the crate docs).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the path is empty or starts with `/`, does not end with
    /// `/`, and has no empty, dot or percent-encoded segments.
    pub fn with_base_path(self, base_path: &str) -> Result<Self, ConfigError> {
        self.with_base_path_checked("base_path", base_path)
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
        Ok(self)
    }

    /// The deepest nesting of objects and arrays accepted in a batch or `$export` JSON body;
    /// deeper bodies are refused with 400.
    pub fn with_max_json_depth(mut self, depth: usize) -> Self {
        self.max_json_depth = depth;
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

    /// The introspection endpoint.
    pub fn introspection_url(&self) -> &Url {
        &self.introspection_url
    }

    /// The base path, `""` for the root.
    #[must_use]
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    fn with_realm_checked(mut self, var: &'static str, realm: &str) -> Result<Self, ConfigError> {
        if realm.is_empty()
            || realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            return Err(ConfigError::Invalid {
                var,
                reason: "a realm is printable ASCII without '\"' or '\\'".to_owned(),
            });
        }
        self.realm = realm.to_owned();
        Ok(self)
    }

    fn with_base_path_checked(
        mut self,
        var: &'static str,
        path: &str,
    ) -> Result<Self, ConfigError> {
        let valid = path.is_empty()
            || (path.starts_with('/')
                && path[1..].split('/').all(|s| {
                    !s.is_empty() && s != "." && s != ".." && !s.contains(['%', '?', '#'])
                }));
        if !valid {
            return Err(ConfigError::Invalid {
                var,
                reason: format!(
                    "expected a path like /fhir (leading '/', no trailing '/'), got {path:?}"
                ),
            });
        }
        self.base_path = path.to_owned();
        Ok(self)
    }
}

fn parse_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid {
        var,
        reason: format!("not a URL ({e})"),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::Invalid {
            var,
            reason: "expected an http or https URL with a host".to_owned(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::Invalid {
            var,
            reason: "credentials belong in SMART_GUARD_CLIENT_ID/SECRET, not in the URL".to_owned(),
        });
    }
    Ok(url)
}

fn number(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Invalid {
        var,
        reason: format!("expected a whole number, got {:?}", value.trim()),
    })
}

fn positive(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    match number(var, value)? {
        0 => Err(ConfigError::Invalid {
            var,
            reason: "must be greater than 0".to_owned(),
        }),
        n => Ok(n),
    }
}

fn usize_of(var: &'static str, value: &str) -> Result<usize, ConfigError> {
    usize::try_from(positive(var, value)?).map_err(|_| ConfigError::Invalid {
        var,
        reason: "too large".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut env: HashMap<&str, &str> = HashMap::from([
            (ENV_INTROSPECTION_URL, "http://127.0.0.1:9/introspect"),
            (ENV_CLIENT_ID, "fhir-server"),
            (ENV_CLIENT_SECRET, "top-s3cret"),
        ]);
        for (k, v) in pairs {
            if v.is_empty() {
                env.remove(k);
            } else {
                env.insert(k, v);
            }
        }
        Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned()))
    }

    #[test]
    fn the_three_required_variables_are_enough() {
        let config = config_from(&[]).expect("valid");
        assert_eq!(config.client_auth, ClientAuth::ClientSecretBasic);
        assert_eq!(config.max_ttl, Duration::from_secs(60));
        assert_eq!(config.negative_ttl, Duration::from_secs(5));
        assert_eq!(config.capacity, 100_000);
        assert_eq!(config.negative_capacity, 10_000);
        assert_eq!(config.max_token_bytes, 8192);
        assert!(config.require_exp);
        assert_eq!(config.base_path, "");
    }

    #[test]
    fn every_variable_is_read() {
        let config = config_from(&[
            (ENV_CLIENT_AUTH, "client_secret_post"),
            (ENV_CACHE_MAX_TTL_SECS, "30"),
            (ENV_NEGATIVE_TTL_SECS, "2"),
            (ENV_CACHE_CAPACITY, "10"),
            (ENV_NEGATIVE_CACHE_CAPACITY, "3"),
            (ENV_CONNECT_TIMEOUT_MS, "100"),
            (ENV_TIMEOUT_MS, "200"),
            (ENV_MAX_RESPONSE_BYTES, "1000"),
            (ENV_EXPECTED_ISSUER, "https://as.example"),
            (ENV_EXPECTED_AUDIENCE, "https://fhir.example/fhir"),
            (ENV_REQUIRE_EXP, "false"),
            (ENV_CLOCK_SKEW_SECS, "0"),
            (ENV_REALM, "my fhir"),
            (ENV_BASE_PATH, "/api/fhir"),
            (ENV_MAX_TOKEN_BYTES, "100"),
            (ENV_MAX_BODY_BYTES, "2048"),
            (ENV_RETRY_AFTER_SECS, "9"),
        ])
        .expect("valid");
        assert_eq!(config.client_auth, ClientAuth::ClientSecretPost);
        assert_eq!(config.max_ttl, Duration::from_secs(30));
        assert_eq!(config.negative_ttl, Duration::from_secs(2));
        assert_eq!((config.capacity, config.negative_capacity), (10, 3));
        assert_eq!(config.connect_timeout, Duration::from_millis(100));
        assert_eq!(config.timeout, Duration::from_millis(200));
        assert_eq!(config.max_response_bytes, 1000);
        assert_eq!(
            config.expected_issuer.as_deref(),
            Some("https://as.example")
        );
        assert_eq!(
            config.expected_audience.as_deref(),
            Some("https://fhir.example/fhir")
        );
        assert!(!config.require_exp);
        assert_eq!(config.clock_skew, Duration::ZERO);
        assert_eq!(config.realm, "my fhir");
        assert_eq!(config.base_path, "/api/fhir");
        assert_eq!(config.max_token_bytes, 100);
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.retry_after, Duration::from_secs(9));
    }

    #[test]
    fn missing_required_variables_are_named() {
        for var in [ENV_INTROSPECTION_URL, ENV_CLIENT_ID, ENV_CLIENT_SECRET] {
            let err = config_from(&[(var, "")]).expect_err(var);
            assert_eq!(err.to_string(), format!("{var} is required but not set"));
        }
    }

    #[test]
    fn invalid_values_are_named_and_explained() {
        for (var, value) in [
            (ENV_INTROSPECTION_URL, "not a url"),
            (ENV_INTROSPECTION_URL, "ftp://as.example/introspect"),
            (
                ENV_INTROSPECTION_URL,
                "https://user:pw@as.example/introspect",
            ),
            (ENV_CLIENT_AUTH, "private_key_jwt_typo"),
            (ENV_CACHE_MAX_TTL_SECS, "sixty"),
            (ENV_CACHE_MAX_TTL_SECS, "0"),
            (ENV_CACHE_MAX_TTL_SECS, "-1"),
            (ENV_NEGATIVE_TTL_SECS, "1.5"),
            (ENV_CACHE_CAPACITY, "0"),
            (ENV_TIMEOUT_MS, "x"),
            (ENV_REQUIRE_EXP, "yes"),
            (ENV_REALM, "a\"b"),
            (ENV_BASE_PATH, "fhir"),
            (ENV_BASE_PATH, "/fhir/"),
            (ENV_BASE_PATH, "/a//b"),
            (ENV_BASE_PATH, "/a/../b"),
            (ENV_MAX_TOKEN_BYTES, "0"),
        ] {
            let err = config_from(&[(var, value)]).expect_err(var);
            let text = err.to_string();
            assert!(text.starts_with(&format!("{var} is invalid: ")), "{text}");
        }
    }

    #[test]
    fn authorization_policy_variables_are_read_and_checked() {
        let config = config_from(&[
            (
                ENV_ALLOWED_OPERATIONS,
                "POST ValueSet/$expand=ValueSet.r; */[id]/$meta=[type].r",
            ),
            (ENV_BULK_PATHS, "/$export-poll-status; GET /bulk-files=*.rs"),
            (ENV_MAX_JSON_DEPTH, "32"),
        ])
        .expect("valid");
        assert_eq!(config.allowed_operations.len(), 2);
        assert_eq!(config.bulk_paths.len(), 2);
        assert_eq!(config.max_json_depth, 32);
        let defaults = config_from(&[]).expect("valid");
        assert!(defaults.allowed_operations.is_empty() && defaults.bulk_paths.is_empty());
        assert_eq!(defaults.max_json_depth, 64);
        for (var, value) in [
            (ENV_ALLOWED_OPERATIONS, "ValueSet/$expand"),
            (ENV_ALLOWED_OPERATIONS, "$export=*.rs"),
            (ENV_BULK_PATHS, "bulk-files"),
            (ENV_MAX_JSON_DEPTH, "0"),
        ] {
            let text = config_from(&[(var, value)]).expect_err(var).to_string();
            assert!(text.starts_with(&format!("{var} is invalid: ")), "{text}");
        }
        let built = config_from(&[])
            .expect("valid")
            .with_allowed_operations("$convert=*.r")
            .expect("valid rule")
            .with_bulk_paths("/status")
            .expect("valid path")
            .with_max_json_depth(8);
        assert_eq!(built.allowed_operations.len(), 1);
        assert_eq!(built.max_json_depth, 8);
        assert!(
            config_from(&[])
                .expect("valid")
                .with_bulk_paths("nope")
                .is_err()
        );
    }

    #[test]
    fn no_error_or_debug_output_shows_the_secret() {
        let config = config_from(&[]).expect("valid");
        assert!(!format!("{config:?}").contains("top-s3cret"));
        let err =
            config_from(&[(ENV_CLIENT_SECRET, ""), (ENV_CLIENT_ID, "")]).expect_err("missing");
        assert!(!format!("{err} {err:?}").contains("top-s3cret"));
    }
}
