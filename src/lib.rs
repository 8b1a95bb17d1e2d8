//! # smart-guard
//!
//! A [tower] layer that protects a FHIR R4 server for
//! [SMART Backend Services](https://hl7.org/fhir/smart-app-launch/backend-services.html).
//!
//! A backend client signs a JWT assertion with its private key, trades it at the authorization
//! server (AS) for an access token (`grant_type=client_credentials`), and calls the FHIR server
//! with `Authorization: Bearer <token>`. [`SmartGuardLayer`] is the resource-server side: for each
//! request it takes the bearer token, checks it by RFC 7662 introspection at the AS (cached, one
//! call per token per TTL), checks the token's SMART v1/v2 scopes against the FHIR interaction
//! and resource type the request asks for, and puts the [`VerifiedClaims`] into the request
//! extensions.
//!
//! ## Quick start
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use smart_guard::{SmartGuardLayer, VerifiedClaims};
//!
//! async fn read_patient(claims: VerifiedClaims) -> String {
//!     format!("read by {}", claims.client_id().unwrap_or("?"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new()
//!     .route("/Patient/{id}", get(read_patient))
//!     .layer(SmartGuardLayer::from_env()?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Configuration
//!
//! [`SmartGuardLayer::from_env`] reads these variables (their names are constants in
//! [`config::env`]); [`Config`] has a `with_*` setter for each.
//! A missing or bad value fails at startup with an error that names the variable.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `SMART_GUARD_INTROSPECTION_URL` | required unless discovered | RFC 7662 introspection endpoint |
//! | `SMART_GUARD_ISSUER` | unset | the AS issuer: [`Config::discover`] reads the endpoints from its metadata; default of `SMART_GUARD_EXPECTED_ISSUER` |
//! | `SMART_GUARD_CLIENT_ID` | required | this resource server's client id at the AS |
//! | `SMART_GUARD_CLIENT_AUTH` | `client_secret_basic` | `client_secret_post`, `private_key_jwt` or `bearer` (the last two: feature `client`) |
//! | `SMART_GUARD_CLIENT_SECRET` | required for `client_secret_*` | its client secret (never logged) |
//! | `SMART_GUARD_CLIENT_SECRET_FILE` | unset | a file holding the secret instead (one trailing newline trimmed); not both |
//! | `SMART_GUARD_CLIENT_KEY_FILE` | required for `private_key_jwt`, `bearer` | PKCS#8 PEM private key, RS384 or ES384 (`smart-guard keygen`); never logged |
//! | `SMART_GUARD_CLIENT_KEY_ALG` | the key's | `RS384` or `ES384`: the key must be of this algorithm |
//! | `SMART_GUARD_CLIENT_ASSERTION_AUD` | `introspection_endpoint` | `aud` of `private_key_jwt` assertions: or `issuer`, `token_endpoint`, an absolute URL |
//! | `SMART_GUARD_TOKEN_URL` | discovered | token endpoint where `bearer` mode gets its own token |
//! | `SMART_GUARD_TOKEN_SCOPE` | required for `bearer` | scope of that token (what the AS requires for introspection) |
//! | `SMART_GUARD_CACHE_MAX_TTL_SECS` | `60` | longest an active answer is cached (also capped by `exp`); `0`: none is (startup warning) |
//! | `SMART_GUARD_NEGATIVE_TTL_SECS` | `5` | how long an inactive answer is cached |
//! | `SMART_GUARD_CACHE_CAPACITY` | `100000` | most active entries |
//! | `SMART_GUARD_NEGATIVE_CACHE_CAPACITY` | `10000` | most inactive entries |
//! | `SMART_GUARD_CONNECT_TIMEOUT_MS` | `2000` | connect timeout to the AS |
//! | `SMART_GUARD_TIMEOUT_MS` | `5000` | total timeout of one introspection call |
//! | `SMART_GUARD_MAX_RESPONSE_BYTES` | `65536` | largest introspection answer read |
//! | `SMART_GUARD_EXPECTED_ISSUER` | unset | an `iss` in the answer must equal it |
//! | `SMART_GUARD_EXPECTED_AUDIENCE` | unset | an `aud` in the answer must contain it |
//! | `SMART_GUARD_REQUIRE_EXP` | `true` | refuse answers without `exp` |
//! | `SMART_GUARD_CLOCK_SKEW_SECS` | `5` | leeway for `exp` and `nbf` |
//! | `SMART_GUARD_REALM` | `fhir` | `realm` of `WWW-Authenticate` challenges |
//! | `SMART_GUARD_BASE_PATH` | root | FHIR base path, e.g. `/fhir` |
//! | `SMART_GUARD_MAX_TOKEN_BYTES` | `8192` | longest bearer token accepted |
//! | `SMART_GUARD_MAX_BODY_BYTES` | `4194304` | largest body the guard reads (`POST _search` form, batch/transaction Bundle, `$export` Parameters) |
//! | `SMART_GUARD_MAX_JSON_DEPTH` | `64` | deepest nesting of a JSON body the guard reads |
//! | `SMART_GUARD_MAX_SEARCH_PARAMS` | `100` | most search parameters in one list (query and form, `If-None-Exist`, batch entry url, conditional reference, `_typeFilter` query) |
//! | `SMART_GUARD_MAX_INCLUDES` | `32` | most `_include` and `_revinclude` parameters in one list |
//! | `SMART_GUARD_MAX_SEARCH_DEPTH` | `4` | most reference hops (chain links and `_has`) in one search parameter |
//! | `SMART_GUARD_MAX_BUNDLE_ENTRIES` | `10000` | most entries in a batch or transaction |
//! | `SMART_GUARD_MAX_ANALYSIS_STEPS` | `100000` | most analysis steps for one request (per parameter, hop, Bundle entry, conditional reference) |
//! | `SMART_GUARD_ALLOWED_OPERATIONS` | none | `$operations` allowed besides `$export`/`$everything`, see below |
//! | `SMART_GUARD_BULK_PATHS` | none | bulk-data status and file URL prefixes, see below |
//! | `SMART_GUARD_RETRY_AFTER_SECS` | `5` | `Retry-After` on 503 answers |
//! | `SMART_GUARD_MAX_IN_FLIGHT` | `64` | most introspection calls out at once; a miss beyond that gets 503 at once (coalesced requests do not count) |
//! | `SMART_GUARD_BREAKER_FAILURES` | `5` | consecutive AS outages (connect, timeout, transport, 5xx, 429) that open the circuit breaker |
//! | `SMART_GUARD_BREAKER_COOLDOWN_MS` | `5000` | an open breaker refuses calls this long, then lets one probe through |
//! | `SMART_GUARD_REQUEST_DEADLINE_MS` | `SMART_GUARD_TIMEOUT_MS` | longest a request waits for an introspection answer (its own call or one it joined) |
//! | `SMART_GUARD_STALE_IF_ERROR_SECS` | `0` (off) | during an AS outage, serve a token's last active answer this long past its cache TTL, never past `exp` |
//! | `SMART_GUARD_AUDIT` | `false` | one INFO [`AuditEvent`] line per decision (target `smart_guard::audit`); [`Config::with_audit_hook`] gives code the same record |
//! | `SMART_GUARD_RESOURCE_URL` | unset | public base URL of the FHIR server (RFC 9728 resource identifier): challenges get `resource_metadata`, [`metadata::router`](metadata) serves the metadata |
//! | `SMART_GUARD_RESOURCE_NAME` | unset | `resource_name` of that metadata |
//! | `SMART_GUARD_REDIS_URL` | unset | fleet mode (feature `redis`): the shared cache; see `fleet` and the README's "Running a fleet" for it, `SMART_GUARD_FLEET_KEY_FILE`, `SMART_GUARD_REDIS_TIMEOUT_MS`, `SMART_GUARD_REDIS_PREFIX` |
//! | `SMART_GUARD_REVOCATION_SECRET_FILE` | unset | the bearer secret of [`RevocationService`] (`POST /revoke`) |
//!
//! Any other `SMART_GUARD_*` variable is a startup warning naming it (a misspelt setting does not
//! pass in silence). [`SmartGuardLayer::readiness`] tells a readiness endpoint whether the AS
//! answers; merge such routes beside the guarded router, not under it.
//!
//! ## Operations and bulk-data URLs
//!
//! `SMART_GUARD_ALLOWED_OPERATIONS` and `SMART_GUARD_BULK_PATHS` (and
//! [`Config::with_allowed_operations`], [`Config::with_bulk_paths`]) take `;`-separated rules:
//!
//! ```text
//! rule  = [ METHODS " " ] target [ "=" needs ]      METHODS = GET,POST,PUT,PATCH,DELETE (HEAD = GET)
//! needs = need *( "," need )                        need    = ( Type / "*" / "[type]" ) "." cruds-letters
//! ```
//!
//! An operation target is `$op`, `Type/$op`, `*/$op`, `Type/[id]/$op` or `*/[id]/$op`; methods
//! default to `GET,POST`, needs are required, and `[type]` is the type in the request path:
//! `POST ValueSet/$expand=ValueSet.r; */[id]/$meta=[type].r`. A bulk target is a path prefix
//! under the base, matched on whole segments; methods default to `GET,DELETE` and needs to
//! `*.rs` (what an export without `_type` needs, since the guard does not know which export a
//! status URL belongs to): `/$export-poll-status; GET /bulk-files=*.rs`. Unconfigured status
//! and file URLs are refused.
//!
//! ### Discovery
//!
//! With `SMART_GUARD_ISSUER` and no `SMART_GUARD_INTROSPECTION_URL`, the endpoints come from the
//! AS metadata. Construction does no I/O, so discover first:
//! `SmartGuardLayer::new(Config::from_env()?.discover().await?)`. See [`Config::discover`] for
//! the documents tried and the checks made.
//!
//! ### Discovery documents
//!
//! [`metadata::router`](metadata) serves `{base}/.well-known/smart-configuration` (SMART App Launch) and,
//! with `SMART_GUARD_RESOURCE_URL`, the RFC 9728 protected resource metadata; merge it beside the
//! guarded FHIR routes. See [`metadata`].
//!
//! ## Responses
//!
//! | Situation | Status | `WWW-Authenticate` |
//! |---|---|---|
//! | `GET`/`HEAD` `/metadata`, `/.well-known/smart-configuration`; with `SMART_GUARD_RESOURCE_URL`, exactly its RFC 9728 metadata path | passed through, no token needed | — |
//! | no token, or another scheme | 401 | `Bearer realm="…"` (every challenge ends in `, resource_metadata="…"` with `SMART_GUARD_RESOURCE_URL`) |
//! | malformed `Authorization`, two headers, token over the limit, `access_token` in query or body next to the header | 400 | `error="invalid_request"` |
//! | malformed path (dot segments, percent-encoded path bytes, empty segments, `\`, `;`) | 400 | — |
//! | not a FHIR interaction, or outside the base path | 404 | — |
//! | a body the guard reads is over the limit | 413 | — |
//! | a batch body that is not JSON, nests too deeply or repeats a member name; a search form that is not UTF-8 (an unreadable `$export` body lists no `_type`, so it needs `system/*.rs`) | 400 | `error="invalid_request"` |
//! | past an [`AnalysisLimits`] limit (the diagnostics name its variable) | 400 | `error="invalid_request"` |
//! | a header the guard reads (`Content-Type`, `Content-Encoding`, `If-None-Exist`) not visible ASCII or sent twice | 400 | `error="invalid_request"` |
//! | a body the guard must read in another form (media type, parameter, `Content-Encoding`) | 415 | — |
//! | inactive, expired, unknown token; `iss`/`aud`/`nbf`/`token_type` checks fail | 401 | `error="invalid_token"` |
//! | scopes do not cover the request (for a batch: any entry; the diagnostics name each entry index) | 403 | `error="insufficient_scope", scope="system/Observation.rs"` |
//! | GraphQL, an operation that is not allow-listed, another Bundle type, a nested bundle | 403 | `error="insufficient_scope"` (no scope would help) |
//! | AS unreachable, slow, 5xx, garbage, or rejects our credentials; circuit breaker open; `SMART_GUARD_MAX_IN_FLIGHT` calls out; request deadline passed | 503 + `Retry-After` | — |
//! | the guard's own analysis panicked (a bug; logged at ERROR) | 500 | — |
//!
//! What the headers decide comes first; a body (`POST _search` form, Bundle, `$export`
//! Parameters) is read only once the token is known to be active, so a request without an
//! active token costs no more than its headers.
//!
//! Every denial has a FHIR `OperationOutcome` body (`application/fhir+json; charset=utf-8`) and carries its
//! [`AuthFailure`] in the response extensions.
//!
//! ## Base path and nesting
//!
//! With `SMART_GUARD_BASE_PATH=/fhir` the layer works both on the outer router and on a router
//! nested at `/fhir` (axum strips the prefix; the guard reads the original URI). Requests
//! outside the base path are refused with 404.
//!
//! # Security
//!
//! - Only `system/` scopes grant access (Backend Services). `patient/` and `user/` scopes are
//!   kept in the claims but grant nothing. A granular scope (`system/Observation.rs?category=x`)
//!   only meets the `s` of a search on its type that restates every constraint (same name, no
//!   modifier, same value after percent-decoding, no comma-OR); never reads, writes, history or
//!   `$export`.
//! - Searches need `s` on every type they reach: `_include`/`_revinclude` (with `:iterate`),
//!   chains, `_has`, `_type`, `_list`, conditional references. Where the type cannot be known
//!   (a multi-target parameter without an explicit type, `*`, `_filter`) they need `system/*.s`.
//!   Targets come from the R4 search parameter definitions (`tools/gen_r4_data.py`).
//! - `POST /` must carry a JSON `batch` or `transaction` Bundle; each entry is checked as if sent
//!   alone and one denied entry denies the request. Absolute entry urls are allowed only under
//!   `SMART_GUARD_EXPECTED_AUDIENCE` (this server's base URL); nested bundles are denied.
//! - `$export` (system, `Patient`, `Group/[id]`) needs `system/` `rs` on every `_type` (or
//!   `system/*.rs` without `_type`), plus Patient (and Group) `rs`. `$everything` needs
//!   `system/*.rs`. GraphQL is denied. Other operations are denied unless allow-listed.
//! - Method-override headers and `_method` are ignored: the real method is authorized.
//! - `.layer` guards every route, including the router's fallback, so unknown paths are refused
//!   before they reach a 404 handler. `.route_layer` keeps 404s as 404s but does not guard routes
//!   added after the call: prefer `.layer`.
//! - The token never appears in logs, `Debug` output or errors; the cache key is a keyed
//!   digest of the token under per-process random keys (BLAKE3; for tokens over 128 bytes,
//!   GHASH then BLAKE3).
//!
//! ## Features
//!
//! - `axum` (default): [`VerifiedClaims`] is an axum extractor.
//! - `client` (default): the client side of the flow (key pairs, JWKS, assertions, token
//!   requests), and with it the `private_key_jwt` and `bearer` introspection authentication. It
//!   costs little: the crypto library (aws-lc-rs) is already built for rustls. Without it
//!   (`default-features = false, features = ["axum"]`) the guard builds with the two
//!   `client_secret_*` methods only.
//! - `dev-server`: a development authorization server, for development and tests only.
//! - `proxy`: proxy mode, the guard in front of any FHIR server ([`proxy`]: `Proxy`, `Forward`,
//!   `ProxyConfig`), on hyper, hyper-util and rustls.
//! - `cli`: the `smart-guard` command-line tool (includes `dev-server` and `proxy`).
//! - `redis`: fleet mode ([`fleet`]): replicas share a cache on Redis or Valkey, make one AS call
//!   between them for a new token, and hear each other's revocations within a second.
//! - `metrics`: the guard's counters and introspection latency through the
//!   [`metrics`](https://docs.rs/metrics) facade ([`GuardStats`] is there without it). Install
//!   the recorder before building the layer: the layer registers its per-request counters once.
//!
//! `fuzzing` and `interop` are internal, for this repository's fuzz targets, benches and interop
//! tests: not public API and not covered by semver.
//!
//! [tower]: https://docs.rs/tower

// The library has no unsafe code, and keeps it so (the crate-wide lint is `deny`, which the
// binary's allocator module allows for itself).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod audit;
mod bearer;
mod claims;
mod classify;
mod error;
mod fhir;
mod future;
mod grant;
mod guard;
mod introspect;
mod layer;
mod limits;
mod need;
mod readiness;
mod rejection;
mod revocation;
mod scope;
mod service;
mod stats;
mod throttle;
mod time;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz_api.rs"]
pub mod __fuzz;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod config;
#[cfg(feature = "dev-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "dev-server")))]
pub mod dev_server;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;
pub mod metadata;
#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
pub mod proxy;

pub use self::{
    audit::{AuditEvent, AuditOutcome},
    bearer::{BearerError, BearerToken, extract_bearer},
    claims::VerifiedClaims,
    classify::{ClassifyError, FhirRequest, Incoming, Interaction, Policy, classify},
    config::{AssertionAudience, ClientAuth, Config, Setting, Settings},
    error::{ConfigError, IntrospectError, IntrospectErrorKind, RevocationNotShared},
    fhir::ResourceType,
    future::ResponseFuture,
    grant::{Audit, Grant, Grants},
    introspect::status::{ActiveToken, TokenStatus},
    layer::SmartGuardLayer,
    limits::{AnalysisLimits, Limit},
    need::{Need, Permissions, TypeScope},
    readiness::{BreakerState, Readiness},
    rejection::AuthFailure,
    revocation::{RevocationSecret, RevocationService},
    scope::{InsufficientScope, ScopeContext, ScopeSet, ScopeSyntax, SmartScope},
    service::SmartGuard,
    stats::GuardStats,
};
