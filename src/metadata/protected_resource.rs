//! The [RFC 9728](https://www.rfc-editor.org/rfc/rfc9728) protected resource metadata of this
//! FHIR server.

use serde::Serialize;

use crate::config::Config;

/// The protected resource metadata (RFC 9728 §2) of this FHIR server, served at the URL
/// [`Config::resource_metadata_url`] derives from `SMART_GUARD_RESOURCE_URL` (§3.1).
///
/// | Member | Value |
/// |---|---|
/// | `resource` | `SMART_GUARD_RESOURCE_URL`, without a trailing `/` |
/// | `authorization_servers` | `[SMART_GUARD_ISSUER]`; left out without an issuer |
/// | `scopes_supported` | the `system/` scopes among the AS's discovered `scopes_supported` (only `system/` scopes grant access here); left out when there are none |
/// | `bearer_methods_supported` | `["header"]`: the guard reads the token from `Authorization` only |
/// | `resource_name` | `SMART_GUARD_RESOURCE_NAME`; left out when unset |
///
/// ```
/// use smart_guard::{Config, metadata::ProtectedResourceMetadata};
///
/// let config = Config::for_issuer("https://as.example", "rs")
///     .unwrap()
///     .with_resource_url("https://fhir.example/fhir")
///     .unwrap();
/// let document = ProtectedResourceMetadata::from_config(&config).unwrap();
/// assert_eq!(document.resource, "https://fhir.example/fhir");
/// assert_eq!(document.authorization_servers, Some(vec!["https://as.example".to_owned()]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProtectedResourceMetadata {
    /// The resource identifier.
    pub resource: String,
    /// Issuer identifiers of the authorization servers that issue tokens for this resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_servers: Option<Vec<String>>,
    /// Scopes used to request access to this resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// How the access token may be sent: `header` only.
    pub bearer_methods_supported: Vec<String>,
    /// A human-readable name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
}

impl ProtectedResourceMetadata {
    /// The document for this configuration, or `None` without a resource URL
    /// ([`Config::with_resource_url`]).
    #[must_use]
    pub fn from_config(config: &Config) -> Option<Self> {
        let resource = config.resource_url()?;
        let scopes: Vec<String> = config
            .advertised
            .scopes_supported
            .iter()
            .flatten()
            .filter(|scope| scope.starts_with("system/"))
            .cloned()
            .collect();
        Some(Self {
            resource: resource.to_owned(),
            authorization_servers: config.issuer.clone().map(|issuer| vec![issuer]),
            scopes_supported: (!scopes.is_empty()).then_some(scopes),
            bearer_methods_supported: vec!["header".to_owned()],
            resource_name: config.resource_name.clone(),
        })
    }
}
