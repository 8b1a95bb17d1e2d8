//! The SMART configuration this FHIR server serves at `{base}/.well-known/smart-configuration`
//! ([SMART App Launch 2.x, "Conformance"](https://hl7.org/fhir/smart-app-launch/conformance.html)).

use serde::Serialize;

use crate::config::Config;

/// The SMART capabilities this server offers: Backend Services clients authenticate with
/// asymmetric keys, and the guard reads SMART v1 and v2 scopes.
const CAPABILITIES: [&str; 3] = [
    "client-confidential-asymmetric",
    "permission-v1",
    "permission-v2",
];

/// The SMART configuration document of this FHIR server: the AS's metadata as the guard knows
/// it, from [`Config::discover`] or from settings.
///
/// | Member | Value |
/// |---|---|
/// | `issuer` | `SMART_GUARD_ISSUER`, if set |
/// | `token_endpoint` | `SMART_GUARD_TOKEN_URL`, else the discovered one; left out when unknown |
/// | `introspection_endpoint` | `SMART_GUARD_INTROSPECTION_URL` or the discovered one |
/// | `revocation_endpoint` | the discovered one, if any |
/// | `token_endpoint_auth_methods_supported` | discovered, else `["private_key_jwt"]` (Backend Services) |
/// | `token_endpoint_auth_signing_alg_values_supported` | discovered, else `["RS384", "ES384"]` (the algorithms SMART requires servers to support) |
/// | `grant_types_supported` | discovered, else `["client_credentials"]` |
/// | `scopes_supported` | discovered; left out when the AS did not list them (the guard cannot know which scopes the AS issues) |
/// | `capabilities` | `client-confidential-asymmetric`, `permission-v1`, `permission-v2` |
///
/// ```
/// use smart_guard::{Config, metadata::SmartConfiguration};
///
/// let config = Config::new("https://as.example/introspect".parse().unwrap(), "rs", "s");
/// let document = SmartConfiguration::from_config(&config);
/// assert_eq!(document.grant_types_supported, ["client_credentials"]);
/// assert_eq!(document.token_endpoint, None); // set SMART_GUARD_TOKEN_URL, or discover
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SmartConfiguration {
    /// The AS's issuer identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Where clients get tokens. SMART requires it: without it the document is incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// The RFC 7662 introspection endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// The RFC 7009 revocation endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// How clients authenticate at the token endpoint.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms of their client assertions.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// The grant types of the token endpoint.
    pub grant_types_supported: Vec<String>,
    /// The scopes the AS issues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// The SMART capabilities.
    pub capabilities: Vec<String>,
}

impl SmartConfiguration {
    /// The document for this configuration (see the table above).
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let advertised = &config.advertised;
        let or = |found: &Option<Vec<String>>, default: &[&str]| {
            found
                .clone()
                .unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect())
        };
        Self {
            issuer: config.issuer.clone(),
            token_endpoint: config
                .token_url
                .as_ref()
                .or(advertised.token_endpoint.as_ref())
                .map(|url| url.as_str().to_owned()),
            introspection_endpoint: config
                .introspection_url
                .as_ref()
                .map(|url| url.as_str().to_owned()),
            revocation_endpoint: advertised
                .revocation_endpoint
                .as_ref()
                .map(|url| url.as_str().to_owned()),
            token_endpoint_auth_methods_supported: or(
                &advertised.token_endpoint_auth_methods_supported,
                &["private_key_jwt"],
            ),
            token_endpoint_auth_signing_alg_values_supported: or(
                &advertised.token_endpoint_auth_signing_alg_values_supported,
                &["RS384", "ES384"],
            ),
            grant_types_supported: or(&advertised.grant_types_supported, &["client_credentials"]),
            scopes_supported: advertised.scopes_supported.clone(),
            capabilities: CAPABILITIES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}
