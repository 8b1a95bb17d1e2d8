//! The `SMART_GUARD_*` environment variables: their names, and [`Config::from_env`] and
//! [`Config::from_lookup`], which read them.
//!
//! Each variable is parsed to the input type of its [`Config`] setter and handed to that public
//! setter, so a value from the environment and the same value set in code are checked once, in
//! one place; a checking setter's error is reported under the variable's name. Where a variable
//! refuses what its setter accepts, the choice is:
//!
//! - `0` for [`ENV_MAX_IN_FLIGHT`] and [`ENV_BREAKER_FAILURES`] goes to
//!   [`Config::try_with_max_in_flight`] and [`Config::try_with_breaker`], which refuse it;
//!   [`Config::with_max_in_flight`] and [`Config::with_breaker`] keep taking it as 1.
//! - `0` for the other counts, sizes and durations (all but [`ENV_CLOCK_SKEW_SECS`] and
//!   [`ENV_STALE_IF_ERROR_SECS`], where `0` means none and off) is refused by the variable, as
//!   it always was, while their setters store it as given; they never rewrite it.
//! - URLs must be `http` or `https` with a host and no credentials; the setters take any
//!   [`Url`](reqwest::Url). [`ENV_CLIENT_ASSERTION_AUD`] must be a keyword or an absolute URL;
//!   [`AssertionAudience::Value`] is sent as given. An empty [`ENV_CLIENT_SECRET`] is missing.

use std::time::Duration;

use super::{AssertionAudience, ClientAuth, Config, http_url};
use crate::{
    error::ConfigError,
    limits::{AnalysisLimits as Limits, Limit},
};

/// `SMART_GUARD_INTROSPECTION_URL`: the RFC 7662 introspection endpoint (required unless
/// [`ENV_ISSUER`] is set and the endpoint is discovered with [`Config::discover`]).
pub const ENV_INTROSPECTION_URL: &str = "SMART_GUARD_INTROSPECTION_URL";
/// `SMART_GUARD_ISSUER`: the authorization server's issuer identifier. With no introspection URL,
/// [`Config::discover`] reads the endpoints from its metadata; it is also the default of
/// [`ENV_EXPECTED_ISSUER`].
pub const ENV_ISSUER: &str = "SMART_GUARD_ISSUER";
/// `SMART_GUARD_CLIENT_ID`: this resource server's client id at the AS (required).
pub const ENV_CLIENT_ID: &str = "SMART_GUARD_CLIENT_ID";
/// `SMART_GUARD_CLIENT_SECRET`: this resource server's client secret at the AS (required for
/// `client_secret_basic` and `client_secret_post`, unused otherwise).
pub const ENV_CLIENT_SECRET: &str = "SMART_GUARD_CLIENT_SECRET";
/// `SMART_GUARD_CLIENT_SECRET_FILE`: path of a file holding the client secret instead (one
/// trailing newline is trimmed); setting it together with [`ENV_CLIENT_SECRET`] is an error.
pub const ENV_CLIENT_SECRET_FILE: &str = "SMART_GUARD_CLIENT_SECRET_FILE";
/// `SMART_GUARD_CLIENT_AUTH`: how the resource server authenticates to the introspection endpoint:
/// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt` or `bearer`
/// (the last two need the `client` feature).
pub const ENV_CLIENT_AUTH: &str = "SMART_GUARD_CLIENT_AUTH";
/// `SMART_GUARD_CLIENT_KEY_FILE`: path of this resource server's PKCS#8 PEM private key (RS384 or
/// ES384), for `private_key_jwt` and `bearer`.
pub const ENV_CLIENT_KEY_FILE: &str = "SMART_GUARD_CLIENT_KEY_FILE";
/// `SMART_GUARD_CLIENT_KEY_ALG`: `RS384` or `ES384`; if set, the key file must hold a key of
/// this algorithm (default: whatever the key is).
pub const ENV_CLIENT_KEY_ALG: &str = "SMART_GUARD_CLIENT_KEY_ALG";
/// `SMART_GUARD_CLIENT_ASSERTION_AUD`: the `aud` of `private_key_jwt` assertions sent to the
/// introspection endpoint: `introspection_endpoint` (default), `issuer`, `token_endpoint`, or an
/// absolute URL.
pub const ENV_CLIENT_ASSERTION_AUD: &str = "SMART_GUARD_CLIENT_ASSERTION_AUD";
/// `SMART_GUARD_TOKEN_URL`: the AS token endpoint, where `bearer` mode gets this resource
/// server's own access token (default: discovered from [`ENV_ISSUER`]).
pub const ENV_TOKEN_URL: &str = "SMART_GUARD_TOKEN_URL";
/// `SMART_GUARD_TOKEN_SCOPE`: the scope `bearer` mode requests for this resource server's own
/// access token, i.e. whatever scope the AS requires for introspection (required for `bearer`).
pub const ENV_TOKEN_SCOPE: &str = "SMART_GUARD_TOKEN_SCOPE";
/// `SMART_GUARD_CACHE_MAX_TTL_SECS`: longest time an active answer is cached (default 60); `0`
/// caches no active answer, so a revocation takes effect at once (every request then makes an
/// introspection call; concurrent ones for one token still share it).
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
/// `SMART_GUARD_MAX_SEARCH_PARAMS`: most search parameters in one list (query and form together,
/// `If-None-Exist`, a batch entry url, a conditional reference, a `_typeFilter` query; default 100).
pub const ENV_MAX_SEARCH_PARAMS: &str = Limit::SearchParams.env_var();
/// `SMART_GUARD_MAX_INCLUDES`: most `_include` and `_revinclude` parameters in one list
/// (default 32).
pub const ENV_MAX_INCLUDES: &str = Limit::Includes.env_var();
/// `SMART_GUARD_MAX_SEARCH_DEPTH`: most reference hops (chain links and `_has`) in one search
/// parameter (default 4).
pub const ENV_MAX_SEARCH_DEPTH: &str = Limit::SearchDepth.env_var();
/// `SMART_GUARD_MAX_BUNDLE_ENTRIES`: most entries in a batch or transaction (default 10000).
pub const ENV_MAX_BUNDLE_ENTRIES: &str = Limit::BundleEntries.env_var();
/// `SMART_GUARD_MAX_ANALYSIS_STEPS`: most analysis steps for one request: one per search
/// parameter, reference hop, Bundle entry and conditional reference (default 100000).
pub const ENV_MAX_ANALYSIS_STEPS: &str = Limit::AnalysisSteps.env_var();
/// `SMART_GUARD_MAX_IN_FLIGHT`: most introspection calls out at once (default 64). A miss beyond
/// that gets 503 at once instead of queueing; requests coalesced onto a call already out do
/// not count.
pub const ENV_MAX_IN_FLIGHT: &str = "SMART_GUARD_MAX_IN_FLIGHT";
/// `SMART_GUARD_BREAKER_FAILURES`: consecutive AS outages (connect, timeout, transport, 5xx, 429)
/// that open the circuit breaker (default 5).
pub const ENV_BREAKER_FAILURES: &str = "SMART_GUARD_BREAKER_FAILURES";
/// `SMART_GUARD_BREAKER_COOLDOWN_MS`: how long an open breaker refuses calls before it lets one
/// probe through (default 5000).
pub const ENV_BREAKER_COOLDOWN_MS: &str = "SMART_GUARD_BREAKER_COOLDOWN_MS";
/// `SMART_GUARD_REQUEST_DEADLINE_MS`: longest a request waits for an introspection answer, its
/// own call or one it joined (default: `SMART_GUARD_TIMEOUT_MS`).
pub const ENV_REQUEST_DEADLINE_MS: &str = "SMART_GUARD_REQUEST_DEADLINE_MS";
/// `SMART_GUARD_STALE_IF_ERROR_SECS`: during an AS outage, serve a token's last active answer for
/// at most this long past its cache TTL, never past its `exp` (default 0: off).
pub const ENV_STALE_IF_ERROR_SECS: &str = "SMART_GUARD_STALE_IF_ERROR_SECS";
/// `SMART_GUARD_RESOURCE_URL`: the public base URL of the FHIR server, e.g.
/// `https://fhir.example.org/fhir`, its RFC 9728 resource identifier. With it, challenges carry
/// `resource_metadata` and the protected resource metadata is served (default: unset, neither).
pub const ENV_RESOURCE_URL: &str = "SMART_GUARD_RESOURCE_URL";
/// `SMART_GUARD_RESOURCE_NAME`: the `resource_name` of the protected resource metadata
/// (default: unset, left out).
pub const ENV_RESOURCE_NAME: &str = "SMART_GUARD_RESOURCE_NAME";
/// `SMART_GUARD_AUDIT`: `true` logs one INFO event per decision under the `smart_guard::audit`
/// target (default `false`); see [`Config::with_audit_log`].
pub const ENV_AUDIT: &str = "SMART_GUARD_AUDIT";

// Proxy mode (feature `proxy`, `smart-guard proxy`): read by `ProxyConfig::from_env`.

/// `SMART_GUARD_UPSTREAM_URL`: the upstream FHIR base URL, http or https (proxy mode; required).
pub const ENV_UPSTREAM_URL: &str = "SMART_GUARD_UPSTREAM_URL";
/// `SMART_GUARD_LISTEN_ADDR`: the proxy's listening address (default `127.0.0.1:8080`).
pub const ENV_LISTEN_ADDR: &str = "SMART_GUARD_LISTEN_ADDR";
/// `SMART_GUARD_PUBLIC_BASE_URL`: the FHIR base URL clients use (default: from the listen
/// address, the listener's scheme and [`ENV_BASE_PATH`]); its path must be the base path.
pub const ENV_PUBLIC_BASE_URL: &str = "SMART_GUARD_PUBLIC_BASE_URL";
/// `SMART_GUARD_UPSTREAM_CONNECT_TIMEOUT_MS`: connect timeout to the upstream (default 2000).
pub const ENV_UPSTREAM_CONNECT_TIMEOUT_MS: &str = "SMART_GUARD_UPSTREAM_CONNECT_TIMEOUT_MS";
/// `SMART_GUARD_UPSTREAM_TIMEOUT_MS`: longest wait for the upstream's response headers; past
/// it, 504 (default 60000).
pub const ENV_UPSTREAM_TIMEOUT_MS: &str = "SMART_GUARD_UPSTREAM_TIMEOUT_MS";
/// `SMART_GUARD_UPSTREAM_MAX_CONNECTIONS`: most requests out to the upstream at once (default 256).
pub const ENV_UPSTREAM_MAX_CONNECTIONS: &str = "SMART_GUARD_UPSTREAM_MAX_CONNECTIONS";
/// `SMART_GUARD_UPSTREAM_CA_FILE`: PEM file of CA certificates trusted for an https upstream,
/// besides the system's.
pub const ENV_UPSTREAM_CA_FILE: &str = "SMART_GUARD_UPSTREAM_CA_FILE";
/// `SMART_GUARD_TLS_CERT_FILE`: PEM certificate chain for TLS on the proxy's listener.
pub const ENV_TLS_CERT_FILE: &str = "SMART_GUARD_TLS_CERT_FILE";
/// `SMART_GUARD_TLS_KEY_FILE`: PEM private key for TLS on the proxy's listener.
pub const ENV_TLS_KEY_FILE: &str = "SMART_GUARD_TLS_KEY_FILE";
/// `SMART_GUARD_IDENTITY_HEADER_PREFIX`: prefix of the identity headers sent upstream (default
/// `X-Smart-`); inbound headers with it are removed.
pub const ENV_IDENTITY_HEADER_PREFIX: &str = "SMART_GUARD_IDENTITY_HEADER_PREFIX";
/// `SMART_GUARD_FORWARD_AUTHORIZATION`: forward the client's `Authorization` header upstream
/// (default `true`).
pub const ENV_FORWARD_AUTHORIZATION: &str = "SMART_GUARD_FORWARD_AUTHORIZATION";
/// `SMART_GUARD_MAX_REWRITE_BYTES`: largest JSON Bundle whose URLs are rewritten; larger ones
/// pass unchanged and are counted (default 8388608).
pub const ENV_MAX_REWRITE_BYTES: &str = "SMART_GUARD_MAX_REWRITE_BYTES";
/// `SMART_GUARD_HEADER_READ_TIMEOUT_MS`: longest a client may take to send its request headers
/// (default 10000).
pub const ENV_HEADER_READ_TIMEOUT_MS: &str = "SMART_GUARD_HEADER_READ_TIMEOUT_MS";
/// `SMART_GUARD_MAX_CLIENT_CONNECTIONS`: most client connections the proxy keeps open; more wait
/// in the listen backlog (default 1024; raise `ulimit -n` with it).
pub const ENV_MAX_CLIENT_CONNECTIONS: &str = "SMART_GUARD_MAX_CLIENT_CONNECTIONS";
/// `SMART_GUARD_CLIENT_IDLE_TIMEOUT_MS`: a client connection with no request in progress for this
/// long is closed (default 10000).
pub const ENV_CLIENT_IDLE_TIMEOUT_MS: &str = "SMART_GUARD_CLIENT_IDLE_TIMEOUT_MS";
/// `SMART_GUARD_SHUTDOWN_GRACE_MS`: on SIGTERM or SIGINT, how long requests in flight may finish
/// (default 30000).
pub const ENV_SHUTDOWN_GRACE_MS: &str = "SMART_GUARD_SHUTDOWN_GRACE_MS";

/// `SMART_GUARD_REDIS_URL`: fleet mode (feature `redis`): the shared cache, `redis://` or
/// `rediss://` (user and password allowed, never logged); several URLs separated by commas are
/// the seed nodes of a Redis Cluster.
pub const ENV_REDIS_URL: &str = "SMART_GUARD_REDIS_URL";
/// `SMART_GUARD_REDIS_TIMEOUT_MS`: longest wait for one Redis command; past it, the AS path
/// (default 50).
pub const ENV_REDIS_TIMEOUT_MS: &str = "SMART_GUARD_REDIS_TIMEOUT_MS";
/// `SMART_GUARD_REDIS_PREFIX`: prefix of every Redis key and channel the fleet uses (default
/// `smart-guard:`).
pub const ENV_REDIS_PREFIX: &str = "SMART_GUARD_REDIS_PREFIX";
/// `SMART_GUARD_FLEET_KEY_FILE`: file of the fleet's shared secret (at least 32 random bytes,
/// the same on every replica); required with [`ENV_REDIS_URL`].
pub const ENV_FLEET_KEY_FILE: &str = "SMART_GUARD_FLEET_KEY_FILE";
/// `SMART_GUARD_REVOCATION_SECRET_FILE`: file of the bearer secret the revocation endpoint
/// requires (at least 16 bytes; one trailing newline is trimmed).
pub const ENV_REVOCATION_SECRET_FILE: &str = "SMART_GUARD_REVOCATION_SECRET_FILE";
/// `SMART_GUARD_ADMIN_ADDR`: the proxy's admin listener (`POST /revoke`), apart from the FHIR
/// listener; unset: none.
pub const ENV_ADMIN_ADDR: &str = "SMART_GUARD_ADMIN_ADDR";

/// Every variable the crate reads. [`Config::from_env`] warns about any other `SMART_GUARD_*`
/// variable in the environment, so a misspelt name does not pass silently.
pub const ALL: &[&str] = &[
    ENV_INTROSPECTION_URL,
    ENV_ISSUER,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_CLIENT_SECRET_FILE,
    ENV_CLIENT_AUTH,
    ENV_CLIENT_KEY_FILE,
    ENV_CLIENT_KEY_ALG,
    ENV_CLIENT_ASSERTION_AUD,
    ENV_TOKEN_URL,
    ENV_TOKEN_SCOPE,
    ENV_CACHE_MAX_TTL_SECS,
    ENV_NEGATIVE_TTL_SECS,
    ENV_CACHE_CAPACITY,
    ENV_NEGATIVE_CACHE_CAPACITY,
    ENV_CONNECT_TIMEOUT_MS,
    ENV_TIMEOUT_MS,
    ENV_MAX_RESPONSE_BYTES,
    ENV_EXPECTED_ISSUER,
    ENV_EXPECTED_AUDIENCE,
    ENV_REQUIRE_EXP,
    ENV_CLOCK_SKEW_SECS,
    ENV_REALM,
    ENV_BASE_PATH,
    ENV_MAX_TOKEN_BYTES,
    ENV_MAX_BODY_BYTES,
    ENV_RETRY_AFTER_SECS,
    ENV_ALLOWED_OPERATIONS,
    ENV_BULK_PATHS,
    ENV_MAX_JSON_DEPTH,
    ENV_MAX_SEARCH_PARAMS,
    ENV_MAX_INCLUDES,
    ENV_MAX_SEARCH_DEPTH,
    ENV_MAX_BUNDLE_ENTRIES,
    ENV_MAX_ANALYSIS_STEPS,
    ENV_MAX_IN_FLIGHT,
    ENV_BREAKER_FAILURES,
    ENV_BREAKER_COOLDOWN_MS,
    ENV_REQUEST_DEADLINE_MS,
    ENV_STALE_IF_ERROR_SECS,
    ENV_AUDIT,
    ENV_RESOURCE_URL,
    ENV_RESOURCE_NAME,
];

/// Every variable proxy mode reads besides [`ALL`] (`smart_guard::proxy::ProxyConfig`, feature
/// `proxy`). [`Config::from_env`] knows them too.
pub const PROXY: &[&str] = &[
    ENV_UPSTREAM_URL,
    ENV_LISTEN_ADDR,
    ENV_PUBLIC_BASE_URL,
    ENV_UPSTREAM_CONNECT_TIMEOUT_MS,
    ENV_UPSTREAM_TIMEOUT_MS,
    ENV_UPSTREAM_MAX_CONNECTIONS,
    ENV_UPSTREAM_CA_FILE,
    ENV_TLS_CERT_FILE,
    ENV_TLS_KEY_FILE,
    ENV_IDENTITY_HEADER_PREFIX,
    ENV_FORWARD_AUTHORIZATION,
    ENV_MAX_REWRITE_BYTES,
    ENV_HEADER_READ_TIMEOUT_MS,
    ENV_MAX_CLIENT_CONNECTIONS,
    ENV_CLIENT_IDLE_TIMEOUT_MS,
    ENV_SHUTDOWN_GRACE_MS,
    ENV_ADMIN_ADDR,
];

/// Every variable fleet mode reads (feature `redis`; [`ENV_REVOCATION_SECRET_FILE`] also without
/// it). [`Config::from_env`] knows them too.
pub const FLEET: &[&str] = &[
    ENV_REDIS_URL,
    ENV_REDIS_TIMEOUT_MS,
    ENV_REDIS_PREFIX,
    ENV_FLEET_KEY_FILE,
    ENV_REVOCATION_SECRET_FILE,
];

impl Config {
    /// Reads the `SMART_GUARD_*` environment variables.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or invalid variable.
    ///
    /// Any other `SMART_GUARD_*` variable in the environment is logged as a warning that names
    /// it (and the known variable it most resembles), since a misspelt setting would otherwise
    /// be ignored in silence.
    pub fn from_env() -> Result<Self, ConfigError> {
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        for unknown in unknown_variables(names.iter().map(String::as_str)) {
            match unknown.resembles {
                Some(known) => tracing::warn!(
                    "{} is not a smart-guard setting and is ignored (did you mean {known}?)",
                    unknown.name
                ),
                None => tracing::warn!(
                    "{} is not a smart-guard setting and is ignored",
                    unknown.name
                ),
            }
        }
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
    #[rustfmt::skip] // one line per variable
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let url = env.read(ENV_INTROSPECTION_URL, http_url)?;
        if url.is_none() && env.get(ENV_ISSUER).is_none() {
            return Err(missing(ENV_INTROSPECTION_URL));
        }
        let client_id = env.get(ENV_CLIENT_ID).ok_or(missing(ENV_CLIENT_ID))?;
        let mut c = Self::with_endpoint(url, client_id);
        c = env.try_set_str(c, ENV_ISSUER, Self::with_issuer)?;
        c = env.set(c, ENV_CLIENT_AUTH, client_auth, Self::with_client_auth)?;
        // The secret is read as is (no trim) and only when the method sends it.
        if c.client_auth.uses_secret() {
            c = c.with_client_secret(client_secret(&env)?);
            c.client_secret_file = env.get(ENV_CLIENT_SECRET_FILE).map(Into::into);
        }
        #[cfg(feature = "client")]
        if c.client_auth.uses_key() {
            let path = env.get(ENV_CLIENT_KEY_FILE).ok_or(missing(ENV_CLIENT_KEY_FILE))?;
            c = c.with_private_key(read_key(&path, env.get(ENV_CLIENT_KEY_ALG))?);
            c.client_key_file = Some(path.into());
        }
        c = env.set(c, ENV_CLIENT_ASSERTION_AUD, audience, Self::with_assertion_audience)?;
        c = env.set(c, ENV_TOKEN_URL, http_url, Self::with_token_url)?;
        c = env.set(c, ENV_TOKEN_SCOPE, text, Self::with_token_scope)?;
        c = env.set(c, ENV_CACHE_MAX_TTL_SECS, whole_secs, Self::with_max_ttl)?;
        c = env.set(c, ENV_NEGATIVE_TTL_SECS, secs, Self::with_negative_ttl)?;
        c = env.set(c, ENV_CACHE_CAPACITY, positive, active_capacity)?;
        c = env.set(c, ENV_NEGATIVE_CACHE_CAPACITY, positive, inactive_capacity)?;
        c = env.set(c, ENV_CONNECT_TIMEOUT_MS, millis, connect_timeout)?;
        c = env.set(c, ENV_TIMEOUT_MS, millis, total_timeout)?;
        c = env.set(c, ENV_MAX_RESPONSE_BYTES, positive, Self::with_max_response_bytes)?;
        c = env.set(c, ENV_EXPECTED_ISSUER, text, Self::with_expected_issuer)?;
        c = env.set(c, ENV_EXPECTED_AUDIENCE, text, Self::with_expected_audience)?;
        c = env.set(c, ENV_REQUIRE_EXP, boolean, Self::with_require_exp)?;
        c = env.set(c, ENV_CLOCK_SKEW_SECS, whole_secs, Self::with_clock_skew)?;
        c = env.try_set_str(c, ENV_REALM, Self::with_realm)?;
        c = env.try_set_str(c, ENV_BASE_PATH, Self::with_base_path)?;
        c = env.set(c, ENV_MAX_TOKEN_BYTES, positive, Self::with_max_token_bytes)?;
        c = env.set(c, ENV_MAX_BODY_BYTES, positive, Self::with_max_body_bytes)?;
        c = env.set(c, ENV_RETRY_AFTER_SECS, secs, Self::with_retry_after)?;
        c = env.try_set_str(c, ENV_ALLOWED_OPERATIONS, Self::with_allowed_operations)?;
        c = env.try_set_str(c, ENV_BULK_PATHS, Self::with_bulk_paths)?;
        c = env.set(c, ENV_MAX_JSON_DEPTH, positive, Self::with_max_json_depth)?;
        c = env.set(c, ENV_MAX_SEARCH_PARAMS, positive, limit(Limits::with_max_search_params))?;
        c = env.set(c, ENV_MAX_INCLUDES, positive, limit(Limits::with_max_includes))?;
        c = env.set(c, ENV_MAX_SEARCH_DEPTH, positive, limit(Limits::with_max_search_depth))?;
        c = env.set(c, ENV_MAX_BUNDLE_ENTRIES, positive, limit(Limits::with_max_bundle_entries))?;
        c = env.set(c, ENV_MAX_ANALYSIS_STEPS, positive, limit(Limits::with_max_analysis_steps))?;
        c = env.try_set(c, ENV_MAX_IN_FLIGHT, whole, Self::try_with_max_in_flight)?;
        c = env.try_set(c, ENV_BREAKER_FAILURES, whole, breaker_failures)?;
        c = env.set(c, ENV_BREAKER_COOLDOWN_MS, millis, breaker_cooldown)?;
        c = env.set(c, ENV_REQUEST_DEADLINE_MS, millis, Self::with_request_deadline)?;
        c = env.set(c, ENV_STALE_IF_ERROR_SECS, whole_secs, Self::with_stale_if_error)?;
        c = env.set(c, ENV_AUDIT, boolean, Self::with_audit_log)?;
        c = env.try_set_str(c, ENV_RESOURCE_URL, Self::with_resource_url)?;
        c = env.set(c, ENV_RESOURCE_NAME, text, Self::with_resource_name)?;
        #[cfg(feature = "redis")]
        {
            c = c.with_fleet_from(&env.0)?;
        }
        // Never run as a lone replica when a fleet was asked for.
        #[cfg(not(feature = "redis"))]
        if env.get(ENV_REDIS_URL).is_some() {
            return Err(ConfigError::Invalid {
                var: ENV_REDIS_URL,
                reason: "this build has no fleet mode (feature `redis`)".to_owned(),
            });
        }
        c.check_client_auth(false)?;
        Ok(c)
    }
}

/// The variables, read through a lookup function (the process environment, or a test's map).
pub(crate) struct Env<L>(pub(crate) L);

impl<L: Fn(&str) -> Option<String>> Env<L> {
    /// The value of `var`, trimmed; `None` when it is unset or blank.
    pub(crate) fn get(&self, var: &'static str) -> Option<String> {
        (self.0)(var)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// `var` parsed by `parse` (`None` when unset or blank); a parse error names `var`.
    pub(crate) fn read<T>(
        &self,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(var)
            .map(|value| parse(&value).map_err(|reason| ConfigError::Invalid { var, reason }))
            .transpose()
    }

    /// Hands `var`, parsed, to `setter`; an unset `var` leaves `config` as it is.
    pub(crate) fn set<C, T>(
        &self,
        config: C,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        setter: impl FnOnce(C, T) -> C,
    ) -> Result<C, ConfigError> {
        Ok(match self.read(var, parse)? {
            Some(value) => setter(config, value),
            None => config,
        })
    }

    /// [`Self::set`] with a setter that checks its input: its error names `var`, not the
    /// setting.
    pub(crate) fn try_set<C, T>(
        &self,
        config: C,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        setter: impl FnOnce(C, T) -> Result<C, ConfigError>,
    ) -> Result<C, ConfigError> {
        match self.read(var, parse)? {
            Some(value) => setter(config, value).map_err(|error| named(var, error)),
            None => Ok(config),
        }
    }

    /// [`Self::try_set`] with a setter of text.
    pub(crate) fn try_set_str<C>(
        &self,
        config: C,
        var: &'static str,
        setter: impl FnOnce(C, &str) -> Result<C, ConfigError>,
    ) -> Result<C, ConfigError> {
        self.try_set(config, var, text, |config, value| setter(config, &value))
    }
}

/// The client secret: [`ENV_CLIENT_SECRET`] as is, or the content of [`ENV_CLIENT_SECRET_FILE`]
/// less one trailing newline (what `echo` and most editors add); never both.
fn client_secret<L: Fn(&str) -> Option<String>>(env: &Env<L>) -> Result<String, ConfigError> {
    let value = (env.0)(ENV_CLIENT_SECRET).filter(|v| !v.is_empty());
    let file = env.get(ENV_CLIENT_SECRET_FILE);
    let invalid = |reason: String| ConfigError::Invalid {
        var: ENV_CLIENT_SECRET_FILE,
        reason,
    };
    match (value, file) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "is set together with {ENV_CLIENT_SECRET}: set one of them"
        ))),
        (Some(value), None) => Ok(value),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(format!("cannot read {path:?}: {}", e.kind())))?;
            let secret = text
                .strip_suffix('\n')
                .map_or(text.as_str(), |s| s.strip_suffix('\r').unwrap_or(s));
            if secret.is_empty() {
                return Err(invalid(format!("{path:?} is empty")));
            }
            Ok(secret.to_owned())
        }
        (None, None) => Err(missing(ENV_CLIENT_SECRET)),
    }
}

/// A `SMART_GUARD_*` variable the crate does not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownVariable<'a> {
    pub(crate) name: &'a str,
    /// The known variable within a small edit distance, if any: the likely intent.
    pub(crate) resembles: Option<&'static str>,
}

/// The `SMART_GUARD_*` names among `names` that are not in [`ALL`].
pub(crate) fn unknown_variables<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<UnknownVariable<'a>> {
    names
        .into_iter()
        .filter(|name| {
            name.starts_with("SMART_GUARD_")
                && !ALL.contains(name)
                && !PROXY.contains(name)
                && !FLEET.contains(name)
        })
        .map(|name| UnknownVariable {
            name,
            resembles: ALL
                .iter()
                .chain(PROXY)
                .chain(FLEET)
                .map(|known| (edit_distance(name, known), *known))
                .filter(|(distance, _)| *distance <= 3)
                .min()
                .map(|(_, known)| known),
        })
        .collect()
}

/// Levenshtein distance of two short ASCII names (one row of the table at a time).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

pub(crate) fn missing(var: &'static str) -> ConfigError {
    ConfigError::Missing { var }
}

/// A setter's error, naming the variable instead of the setting.
fn named(var: &'static str, error: ConfigError) -> ConfigError {
    match error {
        ConfigError::Invalid { reason, .. } => ConfigError::Invalid { var, reason },
        ConfigError::Missing { .. } => missing(var),
        other => other,
    }
}

// Parsers: the trimmed, non-blank value to the setter's input type, or why not.

pub(crate) fn text(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

pub(crate) fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// A whole number that fits `T`; `0` is left to the setter.
fn whole<T: TryFrom<u64>>(value: &str) -> Result<T, String> {
    fits(number(value)?)
}

/// A whole number above 0 that fits `T`: the variable refuses the `0` its setter would take.
pub(crate) fn positive<T: TryFrom<u64>>(value: &str) -> Result<T, String> {
    match number(value)? {
        0 => Err("must be greater than 0".to_owned()),
        n => fits(n),
    }
}

fn number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("expected a whole number, got {value:?}"))
}

fn fits<T: TryFrom<u64>>(n: u64) -> Result<T, String> {
    T::try_from(n).map_err(|_| "too large".to_owned())
}

fn secs(value: &str) -> Result<Duration, String> {
    positive(value).map(Duration::from_secs)
}

fn whole_secs(value: &str) -> Result<Duration, String> {
    whole(value).map(Duration::from_secs)
}

pub(crate) fn millis(value: &str) -> Result<Duration, String> {
    positive(value).map(Duration::from_millis)
}

fn client_auth(value: &str) -> Result<ClientAuth, String> {
    ClientAuth::parse(value).map_err(|reason| format!("{reason}, got {value:?}"))
}

fn audience(value: &str) -> Result<AssertionAudience, String> {
    AssertionAudience::parse(value)
}

// One variable of a setter that takes two values, or of the analysis limits.

fn active_capacity(config: Config, active: u64) -> Config {
    let inactive = config.negative_capacity;
    config.with_capacity(active, inactive)
}

fn inactive_capacity(config: Config, inactive: u64) -> Config {
    let active = config.capacity;
    config.with_capacity(active, inactive)
}

fn connect_timeout(config: Config, connect: Duration) -> Config {
    let total = config.timeout;
    config.with_timeouts(connect, total)
}

fn total_timeout(config: Config, total: Duration) -> Config {
    let connect = config.connect_timeout;
    config.with_timeouts(connect, total)
}

fn breaker_failures(config: Config, failures: u32) -> Result<Config, ConfigError> {
    let cooldown = config.breaker_cooldown;
    config.try_with_breaker(failures, cooldown)
}

fn breaker_cooldown(config: Config, cooldown: Duration) -> Config {
    let failures = config.breaker_failures;
    config.with_breaker(failures, cooldown)
}

/// One analysis limit, through [`Config::with_analysis_limits`].
fn limit(setter: fn(Limits, usize) -> Limits) -> impl FnOnce(Config, usize) -> Config {
    move |config, n| {
        let limits = setter(config.analysis_limits, n);
        config.with_analysis_limits(limits)
    }
}

/// Reads and parses the private key file; errors name the variable and never show key bytes.
#[cfg(feature = "client")]
fn read_key(path: &str, alg: Option<String>) -> Result<crate::client::KeyPair, ConfigError> {
    use crate::client::{KeyPair, SigningAlg};
    let pem = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        var: ENV_CLIENT_KEY_FILE,
        reason: format!("cannot read {path:?}: {}", e.kind()),
    })?;
    let key = KeyPair::from_pkcs8_pem(&pem).map_err(|_| ConfigError::Invalid {
        var: ENV_CLIENT_KEY_FILE,
        reason: format!(
            "{path:?} is not an unencrypted PKCS#8 PEM holding an RSA (>= 2048 bit) or P-384 key"
        ),
    })?;
    if let Some(alg) = alg {
        let want = SigningAlg::from_name(alg.trim()).ok_or_else(|| ConfigError::Invalid {
            var: ENV_CLIENT_KEY_ALG,
            reason: format!("expected RS384 or ES384, got {:?}", alg.trim()),
        })?;
        if want != key.alg() {
            return Err(ConfigError::Invalid {
                var: ENV_CLIENT_KEY_ALG,
                reason: format!("is {want}, but {path:?} holds an {} key", key.alg()),
            });
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{config::Secret, limits::AnalysisLimits};

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
    fn the_secret_file_loses_exactly_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("smart-guard-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        let file = path.to_str().expect("utf-8");
        for (content, secret) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("two-lines\n\n", "two-lines\n"),
            (" spaced \n", " spaced "),
            ("\r", "\r"),
        ] {
            std::fs::write(&path, content).expect("write");
            let config = config_from(&[(ENV_CLIENT_SECRET, ""), (ENV_CLIENT_SECRET_FILE, file)])
                .expect(content);
            let read = config.client_secret.as_ref().map(Secret::expose);
            assert_eq!(read, Some(secret), "{content:?}");
        }
        let key_auth = config_from(&[
            (ENV_CLIENT_SECRET, ""),
            (ENV_CLIENT_SECRET_FILE, "/nonexistent"),
            (ENV_CLIENT_AUTH, "private_key_jwt"),
        ]);
        assert!(
            key_auth.is_err_and(|e| e.to_string().contains(ENV_CLIENT_KEY_FILE)),
            "a method without a secret does not read the file"
        );
    }

    #[test]
    fn unknown_variables_are_named_with_the_setting_they_resemble() {
        let found = unknown_variables([
            "SMART_GUARD_CACHE_MAX_TTL_SEC",
            "SMART_GUARD_CLIENT_SECRET",
            "SMART_GUARD_CLIENTSECRET_FILE",
            "SMART_GUARD_WHATEVER",
            "PATH",
            "smart_guard_realm",
        ]);
        assert_eq!(
            found,
            [
                UnknownVariable {
                    name: "SMART_GUARD_CACHE_MAX_TTL_SEC",
                    resembles: Some(ENV_CACHE_MAX_TTL_SECS),
                },
                UnknownVariable {
                    name: "SMART_GUARD_CLIENTSECRET_FILE",
                    resembles: Some(ENV_CLIENT_SECRET_FILE),
                },
                UnknownVariable {
                    name: "SMART_GUARD_WHATEVER",
                    resembles: None,
                },
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "each variable listed once");
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

    /// Every variable's error, word for word, and which of two bad variables is named first.
    #[test]
    fn error_messages_are_exact() {
        #[cfg_attr(not(feature = "client"), allow(unused_mut))]
        let mut cases: Vec<(&[(&str, &str)], &str)> = vec![
            (
                &[(ENV_INTROSPECTION_URL, "not a url")][..],
                "SMART_GUARD_INTROSPECTION_URL is invalid: not a URL (relative URL without a base)",
            ),
            (
                &[(ENV_INTROSPECTION_URL, "ftp://as.example/introspect")][..],
                "SMART_GUARD_INTROSPECTION_URL is invalid: expected an http or https URL with a host",
            ),
            (
                &[(
                    ENV_INTROSPECTION_URL,
                    "https://user:pw@as.example/introspect",
                )][..],
                "SMART_GUARD_INTROSPECTION_URL is invalid: credentials belong in SMART_GUARD_CLIENT_ID/SECRET, not in the URL",
            ),
            (
                &[(ENV_INTROSPECTION_URL, " ")][..],
                "SMART_GUARD_INTROSPECTION_URL is required but not set",
            ),
            (
                &[(ENV_CLIENT_ID, "")][..],
                "SMART_GUARD_CLIENT_ID is required but not set",
            ),
            (
                &[(ENV_ISSUER, "http://as/?q=1")][..],
                "SMART_GUARD_ISSUER is invalid: an issuer has no query or fragment (RFC 8414 §2)",
            ),
            (
                &[(ENV_ISSUER, "not a url")][..],
                "SMART_GUARD_ISSUER is invalid: not a URL (relative URL without a base)",
            ),
            (
                &[(ENV_CLIENT_AUTH, " nope ")][..],
                "SMART_GUARD_CLIENT_AUTH is invalid: expected client_secret_basic, client_secret_post, private_key_jwt or bearer, got \"nope\"",
            ),
            (
                &[(ENV_CLIENT_SECRET, "")][..],
                "SMART_GUARD_CLIENT_SECRET is required but not set",
            ),
            (
                &[(ENV_CLIENT_ASSERTION_AUD, "nope")][..],
                "SMART_GUARD_CLIENT_ASSERTION_AUD is invalid: expected introspection_endpoint, issuer, token_endpoint or an absolute URL, got \"nope\"",
            ),
            (
                &[(ENV_TOKEN_URL, "ftp://x/")][..],
                "SMART_GUARD_TOKEN_URL is invalid: expected an http or https URL with a host",
            ),
            (
                &[(ENV_CACHE_MAX_TTL_SECS, " sixty ")][..],
                "SMART_GUARD_CACHE_MAX_TTL_SECS is invalid: expected a whole number, got \"sixty\"",
            ),
            (
                &[(ENV_NEGATIVE_TTL_SECS, "1.5")][..],
                "SMART_GUARD_NEGATIVE_TTL_SECS is invalid: expected a whole number, got \"1.5\"",
            ),
            (
                &[(ENV_CACHE_CAPACITY, "0")][..],
                "SMART_GUARD_CACHE_CAPACITY is invalid: must be greater than 0",
            ),
            (
                &[(ENV_NEGATIVE_CACHE_CAPACITY, "-1")][..],
                "SMART_GUARD_NEGATIVE_CACHE_CAPACITY is invalid: expected a whole number, got \"-1\"",
            ),
            (
                &[(ENV_CONNECT_TIMEOUT_MS, "0")][..],
                "SMART_GUARD_CONNECT_TIMEOUT_MS is invalid: must be greater than 0",
            ),
            (
                &[(ENV_TIMEOUT_MS, "x")][..],
                "SMART_GUARD_TIMEOUT_MS is invalid: expected a whole number, got \"x\"",
            ),
            (
                &[(ENV_MAX_RESPONSE_BYTES, "0")][..],
                "SMART_GUARD_MAX_RESPONSE_BYTES is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_RESPONSE_BYTES, "18446744073709551616")][..],
                "SMART_GUARD_MAX_RESPONSE_BYTES is invalid: expected a whole number, got \"18446744073709551616\"",
            ),
            (
                &[(ENV_REQUIRE_EXP, "yes")][..],
                "SMART_GUARD_REQUIRE_EXP is invalid: expected true or false, got \"yes\"",
            ),
            (
                &[(ENV_CLOCK_SKEW_SECS, "-1")][..],
                "SMART_GUARD_CLOCK_SKEW_SECS is invalid: expected a whole number, got \"-1\"",
            ),
            (
                &[(ENV_REALM, "a\"b")][..],
                "SMART_GUARD_REALM is invalid: a realm is printable ASCII without '\"' or '\\'",
            ),
            (
                &[(ENV_BASE_PATH, "/fhir/")][..],
                "SMART_GUARD_BASE_PATH is invalid: expected a path like /fhir (leading '/', no trailing '/'), got \"/fhir/\"",
            ),
            (
                &[(ENV_MAX_TOKEN_BYTES, "0")][..],
                "SMART_GUARD_MAX_TOKEN_BYTES is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_BODY_BYTES, "x")][..],
                "SMART_GUARD_MAX_BODY_BYTES is invalid: expected a whole number, got \"x\"",
            ),
            (
                &[(ENV_RETRY_AFTER_SECS, "0")][..],
                "SMART_GUARD_RETRY_AFTER_SECS is invalid: must be greater than 0",
            ),
            (
                &[(ENV_ALLOWED_OPERATIONS, "ValueSet/$expand")][..],
                "SMART_GUARD_ALLOWED_OPERATIONS is invalid: \"ValueSet/$expand\" needs \"=Type.letters\"",
            ),
            (
                &[(ENV_BULK_PATHS, "bulk-files")][..],
                "SMART_GUARD_BULK_PATHS is invalid: \"bulk-files\" is not a path like /_operations/export",
            ),
            (
                &[(ENV_MAX_JSON_DEPTH, "0")][..],
                "SMART_GUARD_MAX_JSON_DEPTH is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_SEARCH_PARAMS, "0")][..],
                "SMART_GUARD_MAX_SEARCH_PARAMS is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_INCLUDES, "many")][..],
                "SMART_GUARD_MAX_INCLUDES is invalid: expected a whole number, got \"many\"",
            ),
            (
                &[(ENV_MAX_SEARCH_DEPTH, "-1")][..],
                "SMART_GUARD_MAX_SEARCH_DEPTH is invalid: expected a whole number, got \"-1\"",
            ),
            (
                &[(ENV_MAX_BUNDLE_ENTRIES, "0")][..],
                "SMART_GUARD_MAX_BUNDLE_ENTRIES is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_ANALYSIS_STEPS, "1e3")][..],
                "SMART_GUARD_MAX_ANALYSIS_STEPS is invalid: expected a whole number, got \"1e3\"",
            ),
            (
                &[(ENV_MAX_IN_FLIGHT, "0")][..],
                "SMART_GUARD_MAX_IN_FLIGHT is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_IN_FLIGHT, "many")][..],
                "SMART_GUARD_MAX_IN_FLIGHT is invalid: expected a whole number, got \"many\"",
            ),
            (
                &[(ENV_BREAKER_FAILURES, "0")][..],
                "SMART_GUARD_BREAKER_FAILURES is invalid: must be greater than 0",
            ),
            (
                &[(ENV_BREAKER_FAILURES, "99999999999")][..],
                "SMART_GUARD_BREAKER_FAILURES is invalid: too large",
            ),
            (
                &[(ENV_BREAKER_COOLDOWN_MS, "0")][..],
                "SMART_GUARD_BREAKER_COOLDOWN_MS is invalid: must be greater than 0",
            ),
            (
                &[(ENV_REQUEST_DEADLINE_MS, "1s")][..],
                "SMART_GUARD_REQUEST_DEADLINE_MS is invalid: expected a whole number, got \"1s\"",
            ),
            (
                &[(ENV_STALE_IF_ERROR_SECS, "-1")][..],
                "SMART_GUARD_STALE_IF_ERROR_SECS is invalid: expected a whole number, got \"-1\"",
            ),
            (
                &[(ENV_BREAKER_FAILURES, "0"), (ENV_BREAKER_COOLDOWN_MS, "0")][..],
                "SMART_GUARD_BREAKER_FAILURES is invalid: must be greater than 0",
            ),
            (
                &[(ENV_MAX_IN_FLIGHT, "0"), (ENV_CACHE_CAPACITY, "0")][..],
                "SMART_GUARD_CACHE_CAPACITY is invalid: must be greater than 0",
            ),
            (
                &[(ENV_CLIENT_ID, ""), (ENV_INTROSPECTION_URL, "x")][..],
                "SMART_GUARD_INTROSPECTION_URL is invalid: not a URL (relative URL without a base)",
            ),
            (
                &[(ENV_CLIENT_ID, ""), (ENV_ISSUER, "x")][..],
                "SMART_GUARD_CLIENT_ID is required but not set",
            ),
            (
                &[
                    (ENV_REALM, "a\"b"),
                    (ENV_BASE_PATH, "x"),
                    (ENV_REQUIRE_EXP, "x"),
                ][..],
                "SMART_GUARD_REQUIRE_EXP is invalid: expected true or false, got \"x\"",
            ),
        ];
        #[cfg(feature = "client")]
        cases.extend([
            (
                &[(ENV_CLIENT_AUTH, "private_key_jwt")][..],
                "SMART_GUARD_CLIENT_KEY_FILE is required but not set",
            ),
            (
                &[
                    (ENV_CLIENT_AUTH, "private_key_jwt"),
                    (ENV_CLIENT_KEY_FILE, "/nonexistent/key.pem"),
                ][..],
                "SMART_GUARD_CLIENT_KEY_FILE is invalid: cannot read \"/nonexistent/key.pem\": entity not found",
            ),
        ]);
        for (pairs, message) in cases {
            let err = config_from(pairs).expect_err(message);
            assert_eq!(err.to_string(), message, "{pairs:?}");
        }
    }

    #[test]
    fn analysis_limit_variables_are_read_and_zero_is_refused() {
        let config = config_from(&[
            (ENV_MAX_SEARCH_PARAMS, "10"),
            (ENV_MAX_INCLUDES, "2"),
            (ENV_MAX_SEARCH_DEPTH, "1"),
            (ENV_MAX_BUNDLE_ENTRIES, "50"),
            (ENV_MAX_ANALYSIS_STEPS, "500"),
        ])
        .expect("valid");
        let limits = config.analysis_limits;
        assert_eq!(
            (
                limits.max_search_params(),
                limits.max_includes(),
                limits.max_search_depth(),
                limits.max_bundle_entries(),
                limits.max_analysis_steps()
            ),
            (10, 2, 1, 50, 500)
        );
        assert_eq!(
            config_from(&[]).expect("valid").analysis_limits,
            AnalysisLimits::default()
        );
        for var in [
            ENV_MAX_SEARCH_PARAMS,
            ENV_MAX_INCLUDES,
            ENV_MAX_SEARCH_DEPTH,
            ENV_MAX_BUNDLE_ENTRIES,
            ENV_MAX_ANALYSIS_STEPS,
        ] {
            for value in ["0", "-1", "many"] {
                let text = config_from(&[(var, value)]).expect_err(var).to_string();
                assert!(text.starts_with(&format!("{var} is invalid: ")), "{text}");
            }
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
        let limits = AnalysisLimits::default().with_max_includes(3);
        assert_eq!(
            config_from(&[])
                .expect("valid")
                .with_analysis_limits(limits)
                .analysis_limits,
            limits
        );
        assert!(
            config_from(&[])
                .expect("valid")
                .with_bulk_paths("nope")
                .is_err()
        );
    }

    #[test]
    fn fault_tolerance_variables_are_read_and_checked() {
        let defaults = config_from(&[]).expect("valid");
        assert_eq!(defaults.max_in_flight, 64);
        assert_eq!(defaults.breaker_failures, 5);
        assert_eq!(defaults.breaker_cooldown, Duration::from_secs(5));
        assert_eq!(defaults.request_deadline, None, "the timeout");
        assert_eq!(defaults.stale_if_error, None, "off");
        let config = config_from(&[
            (ENV_MAX_IN_FLIGHT, "8"),
            (ENV_BREAKER_FAILURES, "3"),
            (ENV_BREAKER_COOLDOWN_MS, "250"),
            (ENV_REQUEST_DEADLINE_MS, "1500"),
            (ENV_STALE_IF_ERROR_SECS, "120"),
        ])
        .expect("valid");
        assert_eq!(config.max_in_flight, 8);
        assert_eq!(config.breaker_failures, 3);
        assert_eq!(config.breaker_cooldown, Duration::from_millis(250));
        assert_eq!(config.request_deadline, Some(Duration::from_millis(1500)));
        assert_eq!(config.stale_if_error, Some(Duration::from_secs(120)));
        let off = config_from(&[(ENV_STALE_IF_ERROR_SECS, "0")]).expect("valid");
        assert_eq!(off.stale_if_error, None);
        for (var, value) in [
            (ENV_MAX_IN_FLIGHT, "0"),
            (ENV_MAX_IN_FLIGHT, "many"),
            (ENV_BREAKER_FAILURES, "0"),
            (ENV_BREAKER_FAILURES, "99999999999"),
            (ENV_BREAKER_COOLDOWN_MS, "0"),
            (ENV_REQUEST_DEADLINE_MS, "0"),
            (ENV_REQUEST_DEADLINE_MS, "1s"),
            (ENV_STALE_IF_ERROR_SECS, "-1"),
        ] {
            let text = config_from(&[(var, value)]).expect_err(var).to_string();
            assert!(text.starts_with(&format!("{var} is invalid: ")), "{text}");
        }
        let built = config_from(&[])
            .expect("valid")
            .with_max_in_flight(0)
            .with_breaker(0, Duration::from_millis(10))
            .with_request_deadline(Duration::from_millis(20))
            .with_stale_if_error(Duration::from_secs(30));
        assert_eq!((built.max_in_flight, built.breaker_failures), (1, 1));
        assert_eq!(built.breaker_cooldown, Duration::from_millis(10));
        assert_eq!(built.request_deadline, Some(Duration::from_millis(20)));
        assert_eq!(built.stale_if_error, Some(Duration::from_secs(30)));
        assert_eq!(
            built.with_stale_if_error(Duration::ZERO).stale_if_error,
            None
        );
    }

    #[test]
    fn the_resource_url_is_read_normalised_and_checked() {
        let config = config_from(&[]).expect("valid");
        assert_eq!(config.resource_url(), None, "unset by default");
        assert_eq!(config.resource_metadata_url(), None);
        assert_eq!(config.resource_name(), None);

        let config = config_from(&[
            (ENV_RESOURCE_URL, " https://fhir.example/fhir/ "),
            (ENV_RESOURCE_NAME, "Example FHIR"),
        ])
        .expect("valid");
        assert_eq!(config.resource_url(), Some("https://fhir.example/fhir"));
        assert_eq!(
            config.resource_metadata_url(),
            Some("https://fhir.example/.well-known/oauth-protected-resource/fhir")
        );
        assert_eq!(config.resource_name(), Some("Example FHIR"));

        for (value, reason) in [
            ("fhir.example/fhir", "not a URL"),
            ("ftp://fhir.example/fhir", "expected an http or https URL"),
            ("https://fhir.example/fhir?tenant=1", "no query or fragment"),
            ("https://fhir.example/fhir#x", "no query or fragment"),
            ("https://fhir.example/fhir%2Fr4", "path segments"),
        ] {
            let err = config_from(&[(ENV_RESOURCE_URL, value)]).expect_err(value);
            let text = err.to_string();
            assert!(
                text.starts_with("SMART_GUARD_RESOURCE_URL is invalid: ") && text.contains(reason),
                "{value}: {text}"
            );
        }
    }

    #[test]
    fn no_error_or_debug_output_shows_the_secret() {
        let config = config_from(&[]).expect("valid");
        assert!(!format!("{config:?}").contains("top-s3cret"));
        let err =
            config_from(&[(ENV_CLIENT_SECRET, ""), (ENV_CLIENT_ID, "")]).expect_err("missing");
        assert!(!format!("{err} {err:?}").contains("top-s3cret"));
    }

    #[test]
    fn an_issuer_replaces_the_introspection_url_until_discovery() {
        let config = config_from(&[
            (ENV_INTROSPECTION_URL, ""),
            (ENV_ISSUER, "http://127.0.0.1:9"),
        ])
        .expect("valid");
        assert_eq!(config.introspection_url(), None);
        assert_eq!(config.issuer(), Some("http://127.0.0.1:9"));
        assert_eq!(
            config.expected_issuer.as_deref(),
            Some("http://127.0.0.1:9"),
            "the issuer is the default expected iss"
        );
        let explicit = config_from(&[
            (ENV_ISSUER, "http://127.0.0.1:9"),
            (ENV_EXPECTED_ISSUER, "http://other"),
        ])
        .expect("valid");
        assert_eq!(explicit.expected_issuer.as_deref(), Some("http://other"));
        for value in [
            "not a url",
            "http://as/?q=1",
            "http://as/#f",
            "http://u:p@as/",
        ] {
            let err = config_from(&[(ENV_ISSUER, value)]).expect_err(value);
            assert!(
                err.to_string()
                    .starts_with("SMART_GUARD_ISSUER is invalid: "),
                "{err}"
            );
        }
        // Without discovery the layer refuses to start, naming what is missing.
        let err = crate::SmartGuardLayer::new(config).expect_err("not discovered");
        assert!(err.to_string().contains("Config::discover()"), "{err}");
    }

    #[test]
    fn the_secret_is_needed_only_by_the_secret_methods() {
        let err = config_from(&[
            (ENV_CLIENT_SECRET, ""),
            (ENV_CLIENT_AUTH, "client_secret_post"),
        ])
        .expect_err("secret needed");
        assert_eq!(
            err.to_string(),
            "SMART_GUARD_CLIENT_SECRET is required but not set"
        );
        #[cfg(not(feature = "client"))]
        for method in ["private_key_jwt", "bearer"] {
            let err = config_from(&[(ENV_CLIENT_AUTH, method)]).expect_err(method);
            assert!(err.to_string().contains("`client` feature"), "{err}");
        }
    }

    #[cfg(feature = "client")]
    fn key_file(alg: crate::client::SigningAlg) -> std::path::PathBuf {
        let key = crate::client::KeyPair::generate(alg).expect("keygen");
        let path = std::env::temp_dir().join(format!(
            "smart-guard-config-{}-{}-{alg}.pem",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, key.private_key_pem()).expect("write key");
        path
    }

    #[cfg(feature = "client")]
    #[test]
    fn private_key_jwt_reads_the_key_file_and_checks_its_algorithm() {
        use crate::client::SigningAlg;
        let path = key_file(SigningAlg::Es384);
        let file = path.to_str().expect("utf-8 path");
        let config = config_from(&[
            (ENV_CLIENT_SECRET, ""),
            (ENV_CLIENT_AUTH, "private_key_jwt"),
            (ENV_CLIENT_KEY_FILE, file),
            (ENV_CLIENT_KEY_ALG, "ES384"),
            (ENV_CLIENT_ASSERTION_AUD, "https://as.example/token"),
        ])
        .expect("valid");
        assert_eq!(config.client_auth, ClientAuth::PrivateKeyJwt);
        assert_eq!(config.client_secret, None);
        assert_eq!(
            config.assertion_audience,
            AssertionAudience::Value("https://as.example/token".to_owned())
        );
        let pem = std::fs::read_to_string(&path).expect("read");
        let body_line = pem.lines().nth(1).expect("pem body");
        assert!(
            !format!("{config:?}").contains(body_line),
            "Debug shows no key"
        );

        for (pairs, var) in [
            (vec![(ENV_CLIENT_KEY_FILE, "")], ENV_CLIENT_KEY_FILE),
            (
                vec![(ENV_CLIENT_KEY_FILE, "/nonexistent/key.pem")],
                ENV_CLIENT_KEY_FILE,
            ),
            (
                vec![(ENV_CLIENT_KEY_FILE, "/etc/hostname")],
                ENV_CLIENT_KEY_FILE,
            ),
            (
                vec![(ENV_CLIENT_KEY_FILE, file), (ENV_CLIENT_KEY_ALG, "RS384")],
                ENV_CLIENT_KEY_ALG,
            ),
            (
                vec![(ENV_CLIENT_KEY_FILE, file), (ENV_CLIENT_KEY_ALG, "HS256")],
                ENV_CLIENT_KEY_ALG,
            ),
            (
                vec![
                    (ENV_CLIENT_KEY_FILE, file),
                    (ENV_CLIENT_ASSERTION_AUD, "nope"),
                ],
                ENV_CLIENT_ASSERTION_AUD,
            ),
            (
                vec![
                    (ENV_CLIENT_KEY_FILE, file),
                    (ENV_CLIENT_ASSERTION_AUD, "issuer"),
                ],
                ENV_CLIENT_ASSERTION_AUD,
            ),
            (
                vec![
                    (ENV_CLIENT_KEY_FILE, file),
                    (ENV_CLIENT_ASSERTION_AUD, "token_endpoint"),
                ],
                ENV_CLIENT_ASSERTION_AUD,
            ),
        ] {
            let mut pairs = pairs;
            pairs.push((ENV_CLIENT_AUTH, "private_key_jwt"));
            let err = config_from(&pairs).expect_err(var);
            let text = err.to_string();
            assert!(text.starts_with(var), "{text}");
            assert!(
                !text.contains(body_line) && !text.contains("top-s3cret"),
                "{text}"
            );
        }
        let _ = std::fs::remove_file(path);
    }

    #[cfg(feature = "client")]
    #[test]
    fn bearer_needs_a_key_a_scope_and_a_token_endpoint() {
        use crate::client::SigningAlg;
        let path = key_file(SigningAlg::Rs384);
        let file = path.to_str().expect("utf-8 path");
        let base = [
            (ENV_CLIENT_SECRET, ""),
            (ENV_CLIENT_AUTH, "bearer"),
            (ENV_CLIENT_KEY_FILE, file),
        ];
        let config = config_from(
            &[
                &base[..],
                &[
                    (ENV_TOKEN_URL, "http://127.0.0.1:9/token"),
                    (ENV_TOKEN_SCOPE, " introspection "),
                ],
            ]
            .concat(),
        )
        .expect("valid");
        assert_eq!(config.client_auth, ClientAuth::Bearer);
        assert_eq!(config.token_scope.as_deref(), Some("introspection"));
        assert_eq!(
            config.token_url().map(reqwest::Url::as_str),
            Some("http://127.0.0.1:9/token")
        );
        let with_issuer = config_from(
            &[
                &base[..],
                &[(ENV_TOKEN_SCOPE, "x"), (ENV_ISSUER, "http://127.0.0.1:9")],
            ]
            .concat(),
        )
        .expect("the token endpoint may be discovered");
        assert_eq!(with_issuer.token_url(), None);
        for (extra, var) in [
            (
                vec![(ENV_TOKEN_URL, "http://127.0.0.1:9/token")],
                ENV_TOKEN_SCOPE,
            ),
            (vec![(ENV_TOKEN_SCOPE, "x")], ENV_TOKEN_URL),
            (
                vec![(ENV_TOKEN_SCOPE, "x"), (ENV_TOKEN_URL, "ftp://x/")],
                ENV_TOKEN_URL,
            ),
        ] {
            let err = config_from(&[&base[..], &extra[..]].concat()).expect_err(var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
        let _ = std::fs::remove_file(path);
    }
}
