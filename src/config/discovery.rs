//! Authorization-server metadata discovery (`docs/AUTHORIZATION.md` §2.1; the documents are
//! SMART's `/.well-known/smart-configuration`, [RFC 8414](https://www.rfc-editor.org/rfc/rfc8414)
//! and OpenID Connect Discovery 1.0): with an issuer configured, [`Config::discover`] reads
//! `introspection_endpoint` (and `token_endpoint` for bearer mode) from the AS metadata and checks
//! that the metadata fits our configuration. It also keeps what the AS advertises about its token
//! endpoint ([`Advertised`]), which the served discovery documents (`crate::metadata`) repeat.

use bytes::BytesMut;
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    config::Config,
    error::{ConfigError, error_chain},
};

/// Metadata documents larger than this are refused (real ones are a few KiB).
const MAX_METADATA_BYTES: usize = 256 * 1024;

/// The HTTP client the guard uses to talk to the AS: the configured one, or one with the
/// configured timeouts and no redirects (a redirect would resend credentials elsewhere).
pub(crate) fn http_client(config: &Config) -> Result<reqwest::Client, ConfigError> {
    match &config.http_client {
        Some(http) => Ok(http.clone()),
        None => reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ConfigError::HttpClient),
    }
}

/// Which well-known document a URL names; SMART's may omit `issuer`, the others require it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `/.well-known/smart-configuration` (SMART App Launch "Conformance").
    Smart,
    /// `/.well-known/oauth-authorization-server` (RFC 8414).
    OAuth,
    /// `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0).
    OpenId,
}

/// The members of the metadata we use. Unknown members are ignored.
#[derive(Debug, Default, Deserialize)]
struct Metadata {
    issuer: Option<String>,
    introspection_endpoint: Option<String>,
    token_endpoint: Option<String>,
    introspection_endpoint_auth_methods_supported: Option<Vec<String>>,
    introspection_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    // Only repeated, never used by the guard: a malformed value is dropped, not an error.
    revocation_endpoint: Option<Value>,
    grant_types_supported: Option<Value>,
    scopes_supported: Option<Value>,
}

/// What the AS's metadata advertises for clients, kept as found (`None`: the document did not
/// say, or said it in a malformed way) so that the documents this server serves repeat it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Advertised {
    pub(crate) token_endpoint: Option<Url>,
    pub(crate) revocation_endpoint: Option<Url>,
    pub(crate) token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub(crate) token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    pub(crate) grant_types_supported: Option<Vec<String>>,
    pub(crate) scopes_supported: Option<Vec<String>>,
}

impl Advertised {
    /// The advertised values of one metadata document found at `source`.
    fn of(metadata: &Metadata, source: &Url) -> Self {
        let endpoint = |member: &str, value: Option<&str>| {
            let value = value?;
            endpoint_url(source, member, value)
                .map_err(|reason| tracing::warn!(%reason, "not repeated in discovery documents"))
                .ok()
        };
        let revocation = metadata
            .revocation_endpoint
            .as_ref()
            .and_then(Value::as_str);
        Self {
            token_endpoint: endpoint("token_endpoint", metadata.token_endpoint.as_deref()),
            revocation_endpoint: endpoint("revocation_endpoint", revocation),
            token_endpoint_auth_methods_supported: metadata
                .token_endpoint_auth_methods_supported
                .clone(),
            token_endpoint_auth_signing_alg_values_supported: metadata
                .token_endpoint_auth_signing_alg_values_supported
                .clone(),
            grant_types_supported: strings(metadata.grant_types_supported.as_ref()),
            scopes_supported: strings(metadata.scopes_supported.as_ref()),
        }
    }
}

/// A JSON array of strings, or `None`.
fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

impl Config {
    /// Reads the authorization server's metadata and fills in the endpoints that are not set.
    ///
    /// With an issuer ([`ENV_ISSUER`](super::env::ENV_ISSUER) or [`Config::with_issuer`]), this
    /// fetches `{issuer}/.well-known/smart-configuration`, falling back to the RFC 8414
    /// `/.well-known/oauth-authorization-server` and then to
    /// `{issuer}/.well-known/openid-configuration` when a document is absent (any status other
    /// than 200, or not a JSON object). From the first document found it takes
    /// `introspection_endpoint` (unless one is configured) and, in bearer mode or with
    /// `SMART_GUARD_CLIENT_ASSERTION_AUD=token_endpoint`, `token_endpoint` (unless configured).
    /// It keeps what the document advertises to clients (`token_endpoint`,
    /// `revocation_endpoint`, `token_endpoint_auth_methods_supported`,
    /// `token_endpoint_auth_signing_alg_values_supported`, `grant_types_supported`,
    /// `scopes_supported`) for the documents [`metadata::router`](crate::metadata) serves; a
    /// malformed one of these is left out with a warning, never an error.
    /// Without an issuer, it returns the configuration unchanged and does no I/O.
    ///
    /// [`SmartGuardLayer::new`](crate::SmartGuardLayer::new) and
    /// [`SmartGuardLayer::from_env`](crate::SmartGuardLayer::from_env) do no I/O, so call this
    /// first at startup:
    ///
    /// ```no_run
    /// use smart_guard::{Config, SmartGuardLayer};
    /// # async fn run() -> Result<(), smart_guard::ConfigError> {
    /// // SMART_GUARD_ISSUER=https://as.example.org, no SMART_GUARD_INTROSPECTION_URL
    /// let layer = SmartGuardLayer::new(Config::from_env()?.discover().await?)?;
    /// # let _ = layer; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Discovery`] when the AS is unreachable, no document is found, or the
    /// document is inconsistent: its `issuer` differs from the configured one (exact string
    /// comparison, RFC 8414 §3.3), a needed endpoint is missing or not an http(s) URL, or it lists
    /// `introspection_endpoint_auth_methods_supported` (or, in bearer mode,
    /// `token_endpoint_auth_methods_supported`) without our method, or the matching
    /// `…_auth_signing_alg_values_supported` without our key's algorithm. Bearer mode is not
    /// checked against `introspection_endpoint_auth_methods_supported`: metadata has no name for
    /// it. [`ConfigError::HttpClient`] if the HTTP client cannot be built.
    pub async fn discover(mut self) -> Result<Self, ConfigError> {
        let Some(issuer) = self.issuer.clone() else {
            return Ok(self);
        };
        let fail = |reason: String| ConfigError::Discovery {
            issuer: issuer.clone(),
            reason,
        };
        let http = http_client(&self)?;
        let mut absent = Vec::new();
        for (url, kind) in well_known_urls(&issuer).map_err(fail)? {
            match fetch(&http, &url).await.map_err(fail)? {
                Fetched::Document(metadata) => {
                    self.apply(&metadata, kind, &url).map_err(fail)?;
                    tracing::info!(
                        metadata = %url,
                        introspection_endpoint = self.introspection_url.as_ref().map(Url::as_str),
                        token_endpoint = self.token_url.as_ref().map(Url::as_str),
                        "discovered the authorization server's endpoints"
                    );
                    self.check_client_auth(true)?;
                    return Ok(self);
                }
                Fetched::Absent(why) => absent.push(format!("{url} ({why})")),
            }
        }
        Err(fail(format!("no metadata found: {}", absent.join(", "))))
    }

    /// Checks one metadata document against our configuration and takes its endpoints.
    fn apply(&mut self, metadata: &Metadata, kind: Kind, url: &Url) -> Result<(), String> {
        let issuer = self.issuer.as_deref().unwrap_or_default();
        match (&metadata.issuer, kind) {
            (Some(theirs), _) if theirs != issuer => {
                return Err(format!(
                    "{url} names the issuer {theirs:?}, expected {issuer:?}"
                ));
            }
            (None, Kind::OAuth | Kind::OpenId) => {
                return Err(format!("{url} has no issuer"));
            }
            _ => {}
        }
        if self.introspection_url.is_none() {
            let endpoint = metadata
                .introspection_endpoint
                .as_deref()
                .ok_or_else(|| format!("{url} has no introspection_endpoint"))?;
            self.introspection_url = Some(endpoint_url(url, "introspection_endpoint", endpoint)?);
        }
        let method = self.client_auth.as_str();
        let KeyUse {
            bearer,
            needs_token_endpoint,
            alg,
        } = key_use(self);
        if bearer {
            // Our own token comes from the token endpoint with private_key_jwt.
            supported(
                url,
                "token_endpoint_auth_methods_supported",
                &metadata.token_endpoint_auth_methods_supported,
                "private_key_jwt",
            )?;
            if let Some(alg) = alg {
                supported(
                    url,
                    "token_endpoint_auth_signing_alg_values_supported",
                    &metadata.token_endpoint_auth_signing_alg_values_supported,
                    alg,
                )?;
            }
        } else {
            supported(
                url,
                "introspection_endpoint_auth_methods_supported",
                &metadata.introspection_endpoint_auth_methods_supported,
                method,
            )?;
            if let Some(alg) = alg {
                supported(
                    url,
                    "introspection_endpoint_auth_signing_alg_values_supported",
                    &metadata.introspection_endpoint_auth_signing_alg_values_supported,
                    alg,
                )?;
            }
        }
        if needs_token_endpoint && self.token_url.is_none() {
            let endpoint = metadata
                .token_endpoint
                .as_deref()
                .ok_or_else(|| format!("{url} has no token_endpoint"))?;
            self.token_url = Some(endpoint_url(url, "token_endpoint", endpoint)?);
        }
        self.advertised = Advertised::of(metadata, url);
        Ok(())
    }
}

/// What the private-key methods need from the metadata.
struct KeyUse {
    /// Bearer mode: our own token comes from the token endpoint with `private_key_jwt`.
    bearer: bool,
    /// The token endpoint is needed (bearer mode, or it is the assertion audience).
    needs_token_endpoint: bool,
    /// Our key's algorithm, if we sign.
    alg: Option<&'static str>,
}

#[cfg(feature = "client")]
fn key_use(config: &Config) -> KeyUse {
    use crate::config::{AssertionAudience, ClientAuth};
    let bearer = config.client_auth == ClientAuth::Bearer;
    KeyUse {
        bearer,
        needs_token_endpoint: bearer
            || (config.client_auth == ClientAuth::PrivateKeyJwt
                && config.assertion_audience == AssertionAudience::TokenEndpoint),
        alg: config
            .client_key
            .as_ref()
            .filter(|_| config.client_auth.uses_key())
            .map(|k| k.alg().as_str()),
    }
}

#[cfg(not(feature = "client"))]
fn key_use(_: &Config) -> KeyUse {
    KeyUse {
        bearer: false,
        needs_token_endpoint: false,
        alg: None,
    }
}

/// The documents to try, in order. SMART and OpenID documents are appended to the issuer; the
/// RFC 8414 one is inserted between host and path (§3.1), and for an issuer with a path also
/// tried appended, as many servers publish it there.
fn well_known_urls(issuer: &str) -> Result<Vec<(Url, Kind)>, String> {
    let parsed = Url::parse(issuer).map_err(|e| format!("the issuer is not a URL ({e})"))?;
    let base = issuer.trim_end_matches('/');
    let path = parsed.path().trim_end_matches('/');
    let mut origin = parsed.clone();
    origin.set_path("");
    let origin = origin.as_str().trim_end_matches('/').to_owned();
    let mut urls = vec![
        (
            format!("{base}/.well-known/smart-configuration"),
            Kind::Smart,
        ),
        (
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            Kind::OAuth,
        ),
    ];
    if !path.is_empty() {
        urls.push((
            format!("{base}/.well-known/oauth-authorization-server"),
            Kind::OAuth,
        ));
    }
    urls.push((
        format!("{base}/.well-known/openid-configuration"),
        Kind::OpenId,
    ));
    urls.into_iter()
        .map(|(url, kind)| {
            Url::parse(&url)
                .map(|url| (url, kind))
                .map_err(|e| format!("cannot build {url:?} ({e})"))
        })
        .collect()
}

enum Fetched {
    Document(Box<Metadata>),
    /// Not there: a status other than 200, or not a JSON object; the reason, for the error.
    Absent(String),
}

/// GETs one well-known URL. Unreachable is an error (trying other paths on the same host is
/// pointless); a missing or non-JSON document means "try the next one".
async fn fetch(http: &reqwest::Client, url: &Url) -> Result<Fetched, String> {
    let mut response = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{url} is unreachable: {}", error_chain(&e.without_url())))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        return Ok(Fetched::Absent(format!("HTTP {}", status.as_u16())));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading {url} failed: {}", error_chain(&e.without_url())))?
    {
        if body.len() + chunk.len() > MAX_METADATA_BYTES {
            return Err(format!("{url} is larger than {MAX_METADATA_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    match serde_json::from_slice::<Metadata>(&body) {
        Ok(metadata) => Ok(Fetched::Document(Box::new(metadata))),
        Err(e) if e.is_data() => Err(format!("{url} is not valid metadata ({e})")),
        Err(_) => Ok(Fetched::Absent("not a JSON object".to_owned())),
    }
}

/// An endpoint from the metadata must be an absolute http(s) URL.
fn endpoint_url(source: &Url, member: &str, value: &str) -> Result<Url, String> {
    Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| format!("{source} has a {member} that is not an http(s) URL: {value:?}"))
}

/// When the metadata lists `member`, it must contain `ours`; an absent list is not checked
/// (RFC 8414 §2: then the methods are "determined by other means").
fn supported(
    source: &Url,
    member: &str,
    list: &Option<Vec<String>>,
    ours: &str,
) -> Result<(), String> {
    match list {
        Some(list) if !list.iter().any(|m| m == ours) => Err(format!(
            "{source} lists {member} {list:?}, which lacks our {ours:?}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use axum::{Router, extract::State, http::Uri, response::IntoResponse};
    use serde_json::{Value, json};

    use super::*;
    use crate::config::ClientAuth;

    #[test]
    fn well_known_urls_follow_each_spec() {
        let urls = |issuer| -> Vec<String> {
            well_known_urls(issuer)
                .expect("urls")
                .into_iter()
                .map(|(u, _)| u.to_string())
                .collect()
        };
        assert_eq!(
            urls("https://as.example"),
            [
                "https://as.example/.well-known/smart-configuration",
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://as.example:8443/tenant/a/"),
            [
                "https://as.example:8443/tenant/a/.well-known/smart-configuration",
                "https://as.example:8443/.well-known/oauth-authorization-server/tenant/a",
                "https://as.example:8443/tenant/a/.well-known/oauth-authorization-server",
                "https://as.example:8443/tenant/a/.well-known/openid-configuration",
            ]
        );
    }

    type Docs = Arc<HashMap<&'static str, Value>>;
    type Asked = Arc<Mutex<Vec<String>>>;

    /// Serves the documents `documents(issuer)` returns (path → JSON, 404 otherwise) on
    /// loopback; returns the issuer URL and the paths asked for.
    async fn metadata_server(
        documents: impl FnOnce(&str) -> HashMap<&'static str, Value>,
    ) -> (String, Asked) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let docs: Docs = Arc::new(documents(&issuer));
        let asked: Asked = Arc::default();
        let app = Router::new()
            .fallback(
                |State((docs, asked)): State<(Docs, Asked)>, uri: Uri| async move {
                    asked.lock().expect("lock").push(uri.path().to_owned());
                    match docs.get(uri.path()) {
                        Some(doc) => axum::Json(doc.clone()).into_response(),
                        None => http::StatusCode::NOT_FOUND.into_response(),
                    }
                },
            )
            .with_state((docs, Arc::clone(&asked)));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (issuer, asked)
    }

    fn config(issuer: &str) -> Config {
        Config::for_issuer(issuer, "fhir-rs")
            .expect("issuer")
            .with_client_secret("s3cret")
    }

    fn reason(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Discovery { reason, .. }) => reason,
            other => panic!("expected a discovery error, got {other:?}"),
        }
    }

    const OPENID: &str = "/.well-known/openid-configuration";
    const SMART: &str = "/.well-known/smart-configuration";
    const OAUTH: &str = "/.well-known/oauth-authorization-server";

    #[tokio::test]
    async fn falls_back_to_openid_configuration_and_takes_its_endpoint() {
        let (issuer, asked) = metadata_server(|issuer| {
            HashMap::from([(
                OPENID,
                json!({
                    "issuer": issuer,
                    "introspection_endpoint": format!("{issuer}/token/introspection"),
                    "token_endpoint": format!("{issuer}/token"),
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                }),
            )])
        })
        .await;
        let config = config(&issuer).discover().await.expect("discovered");
        let want = format!("{issuer}/token/introspection");
        assert_eq!(config.introspection_url().map(Url::as_str), Some(&*want));
        assert_eq!(config.token_url(), None, "not needed with a secret");
        assert_eq!(config.expected_issuer.as_deref(), Some(&*issuer));
        assert_eq!(*asked.lock().expect("lock"), [SMART, OAUTH, OPENID]);
    }

    #[tokio::test]
    async fn what_the_as_advertises_to_clients_is_kept_and_malformed_values_are_dropped() {
        let (issuer, _) = metadata_server(|issuer| {
            HashMap::from([(
                SMART,
                json!({
                    "issuer": issuer,
                    "introspection_endpoint": format!("{issuer}/introspect"),
                    "token_endpoint": format!("{issuer}/token"),
                    "revocation_endpoint": format!("{issuer}/revoke"),
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["ES384"],
                    "grant_types_supported": ["client_credentials", "authorization_code"],
                    "scopes_supported": ["system/*.rs", "openid"],
                }),
            )])
        })
        .await;
        let found = config(&issuer).discover().await.expect("discovered");
        let url = |path: &str| Some(Url::parse(&format!("{issuer}{path}")).expect("url"));
        let strings = |list: &[&str]| Some(list.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            found.advertised,
            Advertised {
                token_endpoint: url("/token"),
                revocation_endpoint: url("/revoke"),
                token_endpoint_auth_methods_supported: strings(&["private_key_jwt"]),
                token_endpoint_auth_signing_alg_values_supported: strings(&["ES384"]),
                grant_types_supported: strings(&["client_credentials", "authorization_code"]),
                scopes_supported: strings(&["system/*.rs", "openid"]),
            }
        );
        assert_eq!(
            found.token_url(),
            None,
            "the guard itself still does not use it"
        );

        let (issuer, _) = metadata_server(|issuer| {
            HashMap::from([(
                SMART,
                json!({
                    "introspection_endpoint": format!("{issuer}/introspect"),
                    "token_endpoint": "not a url",
                    "revocation_endpoint": 7,
                    "grant_types_supported": "client_credentials",
                    "scopes_supported": ["system/*.rs", 1],
                }),
            )])
        })
        .await;
        let found = config(&issuer).discover().await.expect("still discovered");
        assert_eq!(found.advertised, Advertised::default());
    }

    #[tokio::test]
    async fn smart_configuration_comes_first_and_may_omit_the_issuer() {
        let (issuer, asked) = metadata_server(|issuer| {
            HashMap::from([
                (
                    SMART,
                    json!({ "introspection_endpoint": format!("{issuer}/smart-introspect") }),
                ),
                (
                    OPENID,
                    json!({ "issuer": issuer, "introspection_endpoint": "http://wrong/" }),
                ),
            ])
        })
        .await;
        let config = config(&issuer).discover().await.expect("discovered");
        let want = format!("{issuer}/smart-introspect");
        assert_eq!(config.introspection_url().map(Url::as_str), Some(&*want));
        assert_eq!(*asked.lock().expect("lock"), [SMART]);
    }

    #[tokio::test]
    async fn inconsistent_metadata_is_a_startup_error() {
        for (doc, expect) in [
            (
                json!({ "issuer": "http://elsewhere", "introspection_endpoint": "http://x/i" }),
                "names the issuer \"http://elsewhere\"",
            ),
            (
                json!({ "introspection_endpoint": "http://x/i" }),
                "has no issuer",
            ),
            (json!({ "issuer": "SELF" }), "has no introspection_endpoint"),
            (
                json!({ "issuer": "SELF", "introspection_endpoint": "ftp://x/i" }),
                "not an http(s) URL",
            ),
            (
                json!({ "issuer": "SELF", "introspection_endpoint": "http://x/i",
                        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"] }),
                "lacks our \"client_secret_basic\"",
            ),
            (
                json!({ "issuer": 7, "introspection_endpoint": "http://x/i" }),
                "is not valid metadata",
            ),
        ] {
            let (issuer, _) = metadata_server(|issuer| {
                let text = doc.to_string().replace("SELF", issuer);
                HashMap::from([(OAUTH, serde_json::from_str(&text).expect("json"))])
            })
            .await;
            let text = reason(config(&issuer).discover().await);
            assert!(text.contains(expect), "{doc}: {text}");
        }
    }

    #[tokio::test]
    async fn a_listed_method_passes_and_a_configured_endpoint_wins() {
        let (issuer, _) = metadata_server(|issuer| {
            HashMap::from([(
                OAUTH,
                json!({ "issuer": issuer, "introspection_endpoint": format!("{issuer}/i"),
                        "introspection_endpoint_auth_methods_supported":
                            ["client_secret_basic", "client_secret_post"] }),
            )])
        })
        .await;
        let configured: Url = "http://127.0.0.1:9/introspect".parse().expect("url");
        let config = config(&issuer)
            .with_introspection_url(configured.clone())
            .with_client_auth(ClientAuth::ClientSecretPost)
            .discover()
            .await
            .expect("discovered");
        assert_eq!(config.introspection_url(), Some(&configured));
    }

    #[tokio::test]
    async fn no_document_or_no_server_are_errors_naming_what_was_tried() {
        let (issuer, _) = metadata_server(|_| HashMap::new()).await;
        let text = reason(config(&issuer).discover().await);
        assert!(text.starts_with("no metadata found: "), "{text}");
        for path in [SMART, OAUTH, OPENID] {
            assert!(
                text.contains(&format!("{issuer}{path} (HTTP 404)")),
                "{text}"
            );
        }

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let err = config(&issuer).discover().await.expect_err("unreachable");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "discovery of the authorization server {issuer} failed: "
            )),
            "{text}"
        );
        assert!(text.contains("is unreachable"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[tokio::test]
    async fn without_an_issuer_discover_does_nothing() {
        let url: Url = "http://127.0.0.1:9/introspect".parse().expect("url");
        let config = Config::new(url.clone(), "rs", "s")
            .discover()
            .await
            .expect("no I/O");
        assert_eq!(config.introspection_url(), Some(&url));
    }

    #[cfg(feature = "client")]
    #[tokio::test]
    async fn bearer_mode_takes_the_token_endpoint_and_checks_private_key_jwt_and_alg() {
        use crate::client::{KeyPair, SigningAlg};
        let key = Arc::new(KeyPair::generate(SigningAlg::Es384).expect("key"));
        for (methods, algs, ok) in [
            (json!(["private_key_jwt"]), json!(["ES384"]), true),
            (json!(null), json!(null), true),
            (json!(["client_secret_basic"]), json!(null), false),
            (json!(["private_key_jwt"]), json!(["RS256"]), false),
        ] {
            let (issuer, _) = metadata_server(|issuer| {
                HashMap::from([(
                    OPENID,
                    json!({ "issuer": issuer, "introspection_endpoint": format!("{issuer}/i"),
                            "token_endpoint": format!("{issuer}/token"),
                            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
                            "token_endpoint_auth_methods_supported": methods,
                            "token_endpoint_auth_signing_alg_values_supported": algs }),
                )])
            })
            .await;
            let result = Config::for_issuer(&issuer, "rs")
                .expect("issuer")
                .with_client_auth(ClientAuth::Bearer)
                .with_private_key(Arc::clone(&key))
                .with_token_scope("introspection")
                .discover()
                .await;
            match result {
                Ok(config) if ok => {
                    let want = format!("{issuer}/token");
                    assert_eq!(config.token_url().map(Url::as_str), Some(&*want));
                }
                Err(ConfigError::Discovery { reason, .. }) if !ok => {
                    assert!(reason.contains("lacks our"), "{reason}");
                }
                other => panic!("{methods} {algs}: {other:?}"),
            }
        }
    }
}
