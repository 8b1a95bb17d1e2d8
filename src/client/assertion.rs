//! `AssertionSigner` and `ClientAssertion`: RFC 7523 `private_key_jwt` client assertions as SMART
//! asymmetric client authentication specifies them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::time::unix_now;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};

use super::error::{ClientError, ClientErrorKind};
use super::key::KeyPair;

/// The `client_assertion_type` value for JWT client assertions (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest assertion lifetime SMART allows: `exp` at most five minutes in the future.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// The default assertion lifetime: four minutes, leaving a minute for clock skew.
pub const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(240);

/// Signs client assertions for one `client_id` with one key.
///
/// Cheap to clone. The audience is a parameter of [`AssertionSigner::sign`], so the same signer
/// serves the token endpoint and, for a resource server using `private_key_jwt`, an introspection
/// endpoint.
///
/// ```
/// use smart_guard::client::{AssertionSigner, KeyPair, SigningAlg};
/// let key = KeyPair::generate(SigningAlg::Es384)?;
/// let signer = AssertionSigner::new("my-client", key);
/// let assertion = signer.sign("https://as.example/token")?;
/// assert_eq!(assertion.claims().iss, "my-client");
/// assert_eq!(assertion.header().kid.as_deref(), Some(signer.key().kid()));
/// # Ok::<(), smart_guard::client::ClientError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct AssertionSigner {
    client_id: Arc<str>,
    key: Arc<KeyPair>,
    lifetime: Duration,
}

impl AssertionSigner {
    /// A signer for `client_id` using `key`, with the default lifetime of four minutes.
    pub fn new(client_id: impl Into<String>, key: impl Into<Arc<KeyPair>>) -> Self {
        Self {
            client_id: Arc::from(client_id.into()),
            key: key.into(),
            lifetime: DEFAULT_ASSERTION_LIFETIME,
        }
    }

    /// Sets how far in the future `exp` lies; values above five minutes are clamped to five minutes.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.min(MAX_ASSERTION_LIFETIME);
        self
    }

    /// The `client_id` this signer asserts (`iss` and `sub`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The signing key.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The claims a fresh assertion for `audience` would carry: new random `jti`, `iat` now.
    pub fn claims_for(&self, audience: &str) -> AssertionClaims {
        let iat = unix_now();
        AssertionClaims {
            iss: self.client_id.to_string(),
            sub: self.client_id.to_string(),
            aud: audience.to_owned(),
            jti: random_jti(),
            iat,
            exp: iat + self.lifetime.as_secs(),
        }
    }

    /// Signs a fresh assertion for `audience` (the token endpoint URL, or for introspection the
    /// endpoint the authorization server documents).
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Signing`] if the crypto library fails to sign.
    pub fn sign(&self, audience: &str) -> Result<ClientAssertion, ClientError> {
        self.sign_claims(self.claims_for(audience))
    }

    /// Signs the given claims with this signer's key, `kid` and `typ: JWT`.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Signing`] if the crypto library fails to sign.
    pub fn sign_claims(&self, claims: AssertionClaims) -> Result<ClientAssertion, ClientError> {
        let mut header = Header::new(self.key.alg().jwt_algorithm());
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.key.kid().to_owned());
        let jwt = jsonwebtoken::encode(&header, &claims, self.key.encoding_key())
            .map_err(|e| ClientError::new(ClientErrorKind::Signing).with_source(e))?;
        Ok(ClientAssertion {
            jwt,
            header,
            claims,
        })
    }
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("client_id", &self.client_id)
            .field("key", &self.key)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// The claims of a SMART client assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// Issuer: the `client_id`.
    pub iss: String,
    /// Subject: the `client_id`.
    pub sub: String,
    /// Audience: the token endpoint URL.
    pub aud: String,
    /// Unique id: 128 random bits, base64url.
    pub jti: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: u64,
    /// Expiry (seconds since the Unix epoch), at most five minutes after `iat`.
    pub exp: u64,
}

/// A signed client assertion (a compact JWS), with its header and claims for display.
///
/// # Security
///
/// The JWT is a credential until it expires: `Debug` shows header and claims but not the JWT.
#[derive(Clone)]
pub struct ClientAssertion {
    jwt: String,
    header: Header,
    claims: AssertionClaims,
}

impl ClientAssertion {
    /// The compact JWT, to send as `client_assertion`.
    pub fn as_str(&self) -> &str {
        &self.jwt
    }

    /// The JOSE header that was signed.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The claims that were signed.
    pub fn claims(&self) -> &AssertionClaims {
        &self.claims
    }

    /// The two form parameters that carry this assertion: `client_assertion_type` and `client_assertion`.
    pub fn form_params(&self) -> [(&'static str, &str); 2] {
        [
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &self.jwt),
        ]
    }
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertion")
            .field("header", &self.header)
            .field("claims", &self.claims)
            .field("jwt", &"<redacted>")
            .finish()
    }
}

/// 128 random bits, base64url without padding.
pub(crate) fn random_jti() -> String {
    random_b64url::<16>()
}

/// `N` random bytes from the thread-local CSPRNG (ChaCha, seeded by the OS), base64url without padding.
pub(crate) fn random_b64url<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SigningAlg;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn assertion_carries_the_smart_header_and_claims() {
        let key = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
        let kid = key.kid().to_owned();
        let signer = AssertionSigner::new("client-1", key);
        let a = signer.sign("https://as.example/token").expect("sign");
        let header = jsonwebtoken::decode_header(a.as_str()).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS384);
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let c = a.claims();
        assert_eq!(
            (c.iss.as_str(), c.sub.as_str(), c.aud.as_str()),
            ("client-1", "client-1", "https://as.example/token")
        );
        assert_eq!(c.exp - c.iat, 240);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&c.jti).map(|b| b.len()).ok(),
            Some(16)
        );
    }

    #[test]
    fn assertion_verifies_with_the_public_jwk() {
        for alg in [SigningAlg::Rs384, SigningAlg::Es384] {
            let key = KeyPair::generate(alg).expect("keygen");
            let jwk = key.public_jwk().clone();
            let signer = AssertionSigner::new("c", key).with_lifetime(Duration::from_secs(3600));
            let a = signer.sign("aud").expect("sign");
            assert_eq!(a.claims().exp - a.claims().iat, 300, "lifetime is clamped");
            let dk = match alg {
                SigningAlg::Rs384 => DecodingKey::from_rsa_components(
                    jwk.n.as_deref().unwrap_or_default(),
                    jwk.e.as_deref().unwrap_or_default(),
                ),
                SigningAlg::Es384 => DecodingKey::from_ec_components(
                    jwk.x.as_deref().unwrap_or_default(),
                    jwk.y.as_deref().unwrap_or_default(),
                ),
            }
            .expect("decoding key");
            let mut v = Validation::new(alg.jwt_algorithm());
            v.set_audience(&["aud"]);
            let data =
                jsonwebtoken::decode::<AssertionClaims>(a.as_str(), &dk, &v).expect("verifies");
            assert_eq!(&data.claims, a.claims());
        }
    }

    #[test]
    fn jti_is_fresh_every_time_and_debug_hides_the_jwt() {
        let signer =
            AssertionSigner::new("c", KeyPair::generate(SigningAlg::Es384).expect("keygen"));
        let a = signer.sign("aud").expect("sign");
        let b = signer.sign("aud").expect("sign");
        assert_ne!(a.claims().jti, b.claims().jti);
        let debug = format!("{a:?}");
        assert!(!debug.contains(a.as_str()));
        assert!(debug.contains("<redacted>"));
    }
}
