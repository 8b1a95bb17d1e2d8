//! Registered clients: backend-services clients (JWKS + allowed scopes) and resource servers allowed
//! to introspect (secret or JWKS), plus the JSON clients file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::client::Jwks;

/// Where a client's public keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksSource {
    /// Keys registered by value.
    Inline(Arc<Jwks>),
    /// A JWKS URL, fetched on use and cached as its `Cache-Control` allows (`max-age`; `no-store`,
    /// `no-cache` or no header mean no caching).
    Url(String),
}

impl JwksSource {
    /// Keys registered by value.
    pub fn inline(jwks: Jwks) -> Self {
        Self::Inline(Arc::new(jwks))
    }

    /// Keys fetched from `url`.
    pub fn url(url: impl Into<String>) -> Self {
        Self::Url(url.into())
    }
}

/// A SMART Backend Services client: `client_id`, public keys and the scopes it may be granted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ClientRegistration {
    pub(crate) client_id: String,
    pub(crate) jwks: JwksSource,
    pub(crate) scopes: Vec<String>,
}

impl ClientRegistration {
    /// A client with no allowed scopes yet.
    pub fn new(client_id: impl Into<String>, jwks: JwksSource) -> Self {
        Self {
            client_id: client_id.into(),
            jwks,
            scopes: Vec::new(),
        }
    }

    /// Adds allowed scopes (each an exact scope string such as `system/Patient.rs`).
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds allowed scopes from a space-separated scope string.
    pub fn with_scope_string(self, scope: &str) -> Self {
        self.with_scopes(scope.split(' ').filter(|s| !s.is_empty()))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The scopes this client may be granted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// How a resource server authenticates to the introspection (and revocation) endpoint.
#[derive(Clone)]
pub(crate) enum ResourceServerAuth {
    /// A shared secret, sent with `client_secret_basic` or `client_secret_post`; only its BLAKE3
    /// digest is kept.
    Secret(blake3::Hash),
    /// `private_key_jwt`: a client assertion signed with one of these keys.
    PrivateKeyJwt(JwksSource),
}

impl fmt::Debug for ResourceServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::PrivateKeyJwt(jwks) => f.debug_tuple("PrivateKeyJwt").field(jwks).finish(),
        }
    }
}

/// A resource server (e.g. a FHIR server running the guard) allowed to introspect any token.
#[derive(Clone, Debug)]
#[must_use]
pub struct ResourceServerRegistration {
    pub(crate) client_id: String,
    pub(crate) auth: ResourceServerAuth,
}

impl ResourceServerRegistration {
    /// A resource server authenticating with `client_secret_basic` or `client_secret_post`.
    pub fn with_secret(client_id: impl Into<String>, secret: &str) -> Self {
        Self {
            client_id: client_id.into(),
            auth: ResourceServerAuth::Secret(blake3::hash(secret.as_bytes())),
        }
    }

    /// A resource server authenticating with `private_key_jwt`.
    pub fn with_jwks(client_id: impl Into<String>, jwks: JwksSource) -> Self {
        Self {
            client_id: client_id.into(),
            auth: ResourceServerAuth::PrivateKeyJwt(jwks),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// The parsed clients file the `smart-guard dev-server` command reads.
///
/// Format (JSON). Each client has exactly one of `jwks`, `jwks_uri` and `jwks_file`; each resource
/// server exactly one of `client_secret`, `jwks`, `jwks_uri` and `jwks_file`. `jwks_file` names a
/// JWKS file (such as the `jwks.json` that `smart-guard keygen` writes), read once at startup; a
/// relative path is relative to the clients file's directory ([`ClientsFile::from_path`]) or to
/// the working directory ([`ClientsFile::from_json`]). `scope` is space-separated.
/// `token_lifetime_secs` is optional (default 300).
///
/// ```json
/// {
///   "token_lifetime_secs": 300,
///   "clients": [
///     { "client_id": "bulk-exporter",
///       "scope": "system/Patient.rs system/Observation.rs",
///       "jwks": { "keys": [ { "kty": "EC", "crv": "P-384", "x": "...", "y": "...",
///                             "kid": "...", "alg": "ES384", "use": "sig" } ] } },
///     { "client_id": "other-service", "scope": "system/*.rs",
///       "jwks_uri": "https://other.example/.well-known/jwks.json" },
///     { "client_id": "local-service", "scope": "system/Patient.rs",
///       "jwks_file": "keys/local-service/jwks.json" }
///   ],
///   "resource_servers": [
///     { "client_id": "fhir-server", "client_secret": "change-me" }
///   ]
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ClientsFile {
    /// Backend-services clients.
    pub clients: Vec<ClientRegistration>,
    /// Resource servers allowed to introspect.
    pub resource_servers: Vec<ResourceServerRegistration>,
    /// Access token lifetime in seconds, if set.
    pub token_lifetime_secs: Option<u64>,
}

/// A clients file could not be read or is invalid.
#[derive(Debug)]
pub struct ClientsFileError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for ClientsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientsFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    #[serde(default)]
    token_lifetime_secs: Option<u64>,
    #[serde(default)]
    clients: Vec<ClientRepr>,
    #[serde(default)]
    resource_servers: Vec<ResourceServerRepr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientRepr {
    client_id: String,
    #[serde(default)]
    scope: String,
    jwks: Option<Jwks>,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceServerRepr {
    client_id: String,
    client_secret: Option<String>,
    jwks: Option<Jwks>,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
}

/// The one key source of an entry, or `None` when it has none or several.
fn key_source(
    jwks: Option<Jwks>,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    base: &Path,
) -> Option<Result<JwksSource, ClientsFileError>> {
    match (jwks, jwks_uri, jwks_file) {
        (Some(j), None, None) => Some(Ok(JwksSource::inline(j))),
        (None, Some(u), None) => Some(Ok(JwksSource::url(u))),
        (None, None, Some(f)) => Some(read_jwks_file(&base.join(f)).map(JwksSource::inline)),
        _ => None,
    }
}

/// A JWKS file, e.g. the `jwks.json` of `smart-guard keygen`.
fn read_jwks_file(path: &Path) -> Result<Jwks, ClientsFileError> {
    let json = std::fs::read_to_string(path).map_err(|e| ClientsFileError {
        message: format!("cannot read jwks_file {}", path.display()),
        source: Some(Box::new(e)),
    })?;
    serde_json::from_str(&json).map_err(|e| ClientsFileError {
        message: format!(
            "jwks_file {} is not a JWKS (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        ),
        source: None,
    })
}

impl ClientsFile {
    /// Parses the JSON clients file format described on [`ClientsFile`].
    ///
    /// # Errors
    ///
    /// [`ClientsFileError`] for invalid JSON, unknown fields, a client without exactly one key
    /// source, or a `jwks_file` that cannot be read.
    pub fn from_json(json: &str) -> Result<Self, ClientsFileError> {
        Self::parse(json, Path::new(""))
    }

    /// [`Self::from_json`], with `jwks_file` paths relative to `base`.
    fn parse(json: &str, base: &Path) -> Result<Self, ClientsFileError> {
        // Only the position is reported: serde_json messages can quote values, and values may be secrets.
        let repr: FileRepr = serde_json::from_str(json).map_err(|e| ClientsFileError {
            message: format!(
                "clients file does not match the documented format (line {}, column {})",
                e.line(),
                e.column()
            ),
            source: None,
        })?;
        let invalid = |message: String| ClientsFileError {
            message,
            source: None,
        };
        let mut clients = Vec::new();
        for c in repr.clients {
            let Some(jwks) = key_source(c.jwks, c.jwks_uri, c.jwks_file, base) else {
                return Err(invalid(format!(
                    "client {:?} needs exactly one of jwks, jwks_uri and jwks_file",
                    c.client_id
                )));
            };
            let jwks = jwks?;
            clients.push(ClientRegistration::new(c.client_id, jwks).with_scope_string(&c.scope));
        }
        let mut resource_servers = Vec::new();
        for rs in repr.resource_servers {
            let keys = key_source(rs.jwks, rs.jwks_uri, rs.jwks_file, base);
            let reg = match (rs.client_secret, keys) {
                (Some(s), None) => ResourceServerRegistration::with_secret(rs.client_id, &s),
                (None, Some(jwks)) => ResourceServerRegistration::with_jwks(rs.client_id, jwks?),
                _ => {
                    return Err(invalid(format!(
                        "resource server {:?} needs exactly one of client_secret, jwks, jwks_uri and jwks_file",
                        rs.client_id
                    )));
                }
            };
            resource_servers.push(reg);
        }
        Ok(Self {
            clients,
            resource_servers,
            token_lifetime_secs: repr.token_lifetime_secs,
        })
    }

    /// Reads and parses a clients file.
    ///
    /// # Errors
    ///
    /// [`ClientsFileError`] if the file cannot be read or is invalid.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ClientsFileError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| ClientsFileError {
            message: format!("cannot read clients file {}", path.display()),
            source: Some(Box::new(e)),
        })?;
        Self::parse(&json, path.parent().unwrap_or(Path::new("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_file_parses_inline_and_url_keys_and_secrets() {
        let file = ClientsFile::from_json(
            r#"{"token_lifetime_secs": 60,
                "clients": [
                  {"client_id": "a", "scope": "system/Patient.rs  system/Observation.rs", "jwks": {"keys": []}},
                  {"client_id": "b", "jwks_uri": "http://127.0.0.1:1/jwks"}],
                "resource_servers": [{"client_id": "rs", "client_secret": "s3cr3t"}]}"#,
        )
        .expect("valid file");
        assert_eq!(file.token_lifetime_secs, Some(60));
        assert_eq!(
            file.clients[0].scopes(),
            ["system/Patient.rs", "system/Observation.rs"]
        );
        assert_eq!(
            file.clients[1].jwks,
            JwksSource::url("http://127.0.0.1:1/jwks")
        );
        assert!(file.clients[1].scopes().is_empty());
        let debug = format!("{:?}", file.resource_servers[0]);
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn a_jwks_file_is_read_relative_to_the_clients_file() {
        let dir = std::env::temp_dir().join(format!("smart-guard-registry-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).expect("mkdir");
        std::fs::write(dir.join("keys/jwks.json"), r#"{"keys": []}"#).expect("write jwks");
        let clients = dir.join("clients.json");
        std::fs::write(
            &clients,
            r#"{"clients": [{"client_id": "a", "jwks_file": "keys/jwks.json"}],
                "resource_servers": [{"client_id": "rs", "jwks_file": "keys/jwks.json"}]}"#,
        )
        .expect("write clients");
        let file = ClientsFile::from_path(&clients);
        std::fs::write(
            &clients,
            r#"{"clients": [{"client_id": "a", "jwks_file": "nope.json"}]}"#,
        )
        .expect("write clients");
        let missing = ClientsFile::from_path(&clients);
        let _ = std::fs::remove_dir_all(&dir);
        let file = file.expect("valid file");
        assert_eq!(
            file.clients[0].jwks,
            JwksSource::inline(Jwks { keys: vec![] })
        );
        assert_eq!(file.resource_servers.len(), 1);
        let err = missing.expect_err("missing jwks_file").to_string();
        assert!(
            err.contains("cannot read jwks_file") && err.contains("nope.json"),
            "{err}"
        );
    }

    #[test]
    fn clients_file_rejects_ambiguous_or_unknown_entries() {
        for json in [
            r#"{"clients": [{"client_id": "a"}]}"#,
            r#"{"clients": [{"client_id": "a", "jwks": {"keys": []}, "jwks_uri": "http://x"}]}"#,
            r#"{"clients": [{"client_id": "a", "jwks": {"keys": []}, "jwks_file": "x.json"}]}"#,
            r#"{"resource_servers": [{"client_id": "rs", "client_secret": "s", "jwks_file": "x"}]}"#,
            r#"{"resource_servers": [{"client_id": "rs"}]}"#,
            r#"{"clients": [], "client": []}"#,
            "not json",
        ] {
            assert!(ClientsFile::from_json(json).is_err(), "{json}");
        }
    }
}
