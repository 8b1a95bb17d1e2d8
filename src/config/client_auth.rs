//! How the resource server authenticates to the introspection endpoint: the method, the
//! `aud` of its assertions, and the secret (whose `Debug` is redacted).

use std::fmt;

use reqwest::Url;

/// How the resource server authenticates to the introspection endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A fresh RFC 7523 client assertion (new `jti`) signed with this resource server's key,
    /// on every call (SMART asymmetric client authentication).
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    PrivateKeyJwt,
    /// SMART bearer authorization (SMART Token Introspection): this resource server gets its own
    /// Backend Services access token (`client_credentials` + `private_key_jwt` at the token
    /// endpoint), sends it as `Authorization: Bearer`, refreshes it before it expires, and on a
    /// 401 from the introspection endpoint refreshes it once and retries.
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    Bearer,
}

impl ClientAuth {
    pub(super) fn parse(value: &str) -> Result<Self, &'static str> {
        match value {
            "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            #[cfg(feature = "client")]
            "private_key_jwt" => Ok(Self::PrivateKeyJwt),
            #[cfg(feature = "client")]
            "bearer" => Ok(Self::Bearer),
            #[cfg(not(feature = "client"))]
            "private_key_jwt" | "bearer" => Err("needs smart-guard's `client` feature"),
            _ => Err("expected client_secret_basic, client_secret_post, private_key_jwt or bearer"),
        }
    }

    /// The method's name, as in `SMART_GUARD_CLIENT_AUTH` and in AS metadata
    /// (`introspection_endpoint_auth_methods_supported`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            #[cfg(feature = "client")]
            Self::PrivateKeyJwt => "private_key_jwt",
            #[cfg(feature = "client")]
            Self::Bearer => "bearer",
        }
    }

    /// Whether this method sends the client secret.
    pub(crate) fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }

    /// Whether this method signs with a private key.
    #[cfg(feature = "client")]
    pub(crate) fn uses_key(self) -> bool {
        matches!(self, Self::PrivateKeyJwt | Self::Bearer)
    }
}

/// The `aud` of the `private_key_jwt` assertions sent to the introspection endpoint.
///
/// RFC 7523 lets the AS decide which values identify it; SMART uses the token endpoint URL at the
/// token endpoint. Most servers accept the endpoint being called (oidc-provider accepts that, its
/// issuer and its token endpoint); some accept only the issuer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The introspection endpoint URL (the default).
    #[default]
    IntrospectionEndpoint,
    /// The issuer identifier ([`SMART_GUARD_ISSUER`](super::env::ENV_ISSUER), required).
    Issuer,
    /// The token endpoint URL ([`SMART_GUARD_TOKEN_URL`](super::env::ENV_TOKEN_URL) or discovered).
    TokenEndpoint,
    /// This exact value.
    Value(String),
}

impl AssertionAudience {
    pub(super) fn parse(value: &str) -> Result<Self, String> {
        match value {
            "introspection_endpoint" => Ok(Self::IntrospectionEndpoint),
            "issuer" => Ok(Self::Issuer),
            "token_endpoint" => Ok(Self::TokenEndpoint),
            other => match Url::parse(other) {
                Ok(_) => Ok(Self::Value(other.to_owned())),
                Err(_) => Err(format!(
                    "expected introspection_endpoint, issuer, token_endpoint or an absolute URL, got {other:?}"
                )),
            },
        }
    }
}

/// A secret string whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(super) String);

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
