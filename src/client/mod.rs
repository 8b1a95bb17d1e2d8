//! Client side of SMART Backend Services (feature `client`): key pairs, JWKS, client assertions and
//! token requests.
//!
//! The pieces, in the order a backend service uses them:
//!
//! 1. [`KeyPair::generate`] makes an RS384 (RSA 2048) or ES384 (P-384) key; store
//!    [`KeyPair::private_key_pem`] (PKCS#8) privately and register [`KeyPair::jwks`] with the
//!    authorization server. The `kid` is the RFC 7638 thumbprint ([`Jwk::thumbprint`]).
//! 2. [`AssertionSigner::sign`] makes a client assertion (`iss` = `sub` = `client_id`, `aud` = the
//!    token URL, random 128-bit `jti`, `exp` at most five minutes ahead, header `kid` and `typ: JWT`).
//!    The audience is a parameter, so a resource server can reuse the signer for `private_key_jwt`
//!    authentication at an introspection endpoint.
//! 3. [`request_token`] sends `grant_type=client_credentials` with the assertion and parses the
//!    answer into a [`TokenResponse`] or an RFC 6749 §5.2 [`OAuthError`].
//! 4. [`BackendServicesClient`] wraps 2 and 3: it reuses its token and refreshes it before expiry.
//!
//! # Security
//!
//! Private keys, assertions and access tokens never appear in `Debug`, `Display`, errors or logs.
//!
//! ```
//! use smart_guard::client::{AssertionSigner, KeyPair, SigningAlg};
//! let key = KeyPair::generate(SigningAlg::Rs384)?;
//! let jwks = serde_json::to_string(&key.jwks()).expect("serializable");
//! assert!(jwks.contains(key.kid()));
//! let assertion = AssertionSigner::new("my-client", key).sign("https://as.example/token")?;
//! assert_eq!(assertion.claims().aud, "https://as.example/token");
//! # Ok::<(), smart_guard::client::ClientError>(())
//! ```

mod assertion;
mod backend;
mod error;
mod jwk;
mod key;
mod token;

pub use assertion::{
    AssertionClaims, AssertionSigner, CLIENT_ASSERTION_TYPE, ClientAssertion,
    DEFAULT_ASSERTION_LIFETIME, MAX_ASSERTION_LIFETIME,
};
pub use backend::{BackendServicesClient, DEFAULT_REFRESH_MARGIN};
pub use error::{ClientError, ClientErrorKind, OAuthError, OAuthErrorCode};
pub use jwk::{Jwk, Jwks};
pub use key::{KeyPair, SigningAlg};
pub use token::{AccessToken, GRANT_TYPE_CLIENT_CREDENTIALS, TokenResponse, request_token};

#[cfg(feature = "dev-server")]
pub(crate) use assertion::random_b64url;
