//! Full validation of SMART client assertions (`private_key_jwt`): algorithm, key, signature,
//! claims and `jti` replay.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use super::error::OAuthErrorResponse;
use super::jwks::JwksResolver;
use super::registry::JwksSource;
use super::store::JtiCache;
use crate::{
    client::{Jwk, MAX_ASSERTION_LIFETIME, SigningAlg},
    time::unix_now,
};

/// Validates client assertions and remembers their `jti`s.
#[derive(Debug)]
pub(crate) struct AssertionVerifier {
    pub(crate) jwks: JwksResolver,
    jtis: JtiCache,
}

impl AssertionVerifier {
    pub(crate) fn new(jwks: JwksResolver) -> Self {
        Self {
            jwks,
            jtis: JtiCache::default(),
        }
    }

    /// Validates `jwt` completely and returns the authenticated `client_id`.
    ///
    /// `keys_for` maps an issuer to its registered keys; `audiences` are the accepted `aud` values.
    pub(crate) async fn verify(
        &self,
        jwt: &str,
        audiences: &[&str],
        keys_for: impl Fn(&str) -> Option<JwksSource>,
    ) -> Result<String, OAuthErrorResponse> {
        let reject = OAuthErrorResponse::invalid_client;
        // `none` and unknown algorithms fail to parse here.
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|_| reject("client assertion is not a well-formed jwt"))?;
        let alg = match header.alg {
            jsonwebtoken::Algorithm::RS384 => SigningAlg::Rs384,
            jsonwebtoken::Algorithm::ES384 => SigningAlg::Es384,
            _ => return Err(reject("client assertion alg must be RS384 or ES384")),
        };
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| reject("client assertion header has no kid"))?;
        let iss = unverified_iss(jwt).ok_or_else(|| reject("client assertion has no iss"))?;
        let source = keys_for(&iss).ok_or_else(|| reject("unknown client"))?;
        // SMART: an optional `jku` must be the JWKS URL registered for the client; never fetch it.
        if let Some(jku) = header.jku.as_deref()
            && !matches!(&source, JwksSource::Url(url) if url == jku)
        {
            return Err(reject(
                "client assertion jku is not the registered jwks url",
            ));
        }
        let jwks = self.jwks.resolve(&source).await.map_err(|e| {
            tracing::warn!(client_id = %iss, error = %e.0, "cannot resolve client jwks");
            reject("client keys are unavailable")
        })?;
        let jwk = jwks
            .find(kid)
            .ok_or_else(|| reject("no registered key has this kid"))?;
        let key = decoding_key(jwk, alg)
            .ok_or_else(|| reject("client assertion alg does not match the key"))?;

        let mut validation = Validation::new(alg.jwt_algorithm());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
            .map_err(|_| reject("client assertion signature is invalid"))?
            .claims;

        let str_claim = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if str_claim("iss") != Some(iss.as_str()) || str_claim("sub") != Some(iss.as_str()) {
            return Err(reject(
                "client assertion iss and sub must both be the client_id",
            ));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => audiences.contains(&a.as_str()),
            Some(Value::Array(all)) => all
                .iter()
                .filter_map(Value::as_str)
                .any(|a| audiences.contains(&a)),
            _ => false,
        };
        if !aud_ok {
            return Err(reject("client assertion aud is not this endpoint"));
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| reject("client assertion has no valid exp"))?;
        let now = unix_now();
        if exp <= now {
            return Err(reject("client assertion has expired"));
        }
        if exp > now + MAX_ASSERTION_LIFETIME.as_secs() {
            return Err(reject(
                "client assertion exp is more than five minutes ahead",
            ));
        }
        if claims
            .get("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|nbf| nbf > now)
        {
            return Err(reject("client assertion is not yet valid"));
        }
        let jti = str_claim("jti").ok_or_else(|| reject("client assertion has no jti"))?;
        if !self.jtis.first_use(&iss, jti, exp) {
            return Err(reject("client assertion jti was already used"));
        }
        Ok(iss)
    }
}

/// The `iss` claim, read before the signature is checked (only to find the client's keys).
fn unverified_iss(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("iss")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The verification key for `jwk`, if the key's type, curve, `alg` and `use` agree with `alg`.
fn decoding_key(jwk: &Jwk, alg: SigningAlg) -> Option<DecodingKey> {
    if jwk.alg.as_deref().is_some_and(|a| a != alg.as_str())
        || jwk.key_use.as_deref().is_some_and(|u| u != "sig")
    {
        return None;
    }
    match alg {
        SigningAlg::Rs384 if jwk.kty == "RSA" => {
            DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()
        }
        SigningAlg::Es384 if jwk.kty == "EC" && jwk.crv.as_deref() == Some("P-384") => {
            DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_usable_only_with_its_own_algorithm() {
        let rsa = crate::client::KeyPair::generate(SigningAlg::Rs384).expect("keygen");
        let ec = crate::client::KeyPair::generate(SigningAlg::Es384).expect("keygen");
        assert!(decoding_key(rsa.public_jwk(), SigningAlg::Rs384).is_some());
        assert!(decoding_key(rsa.public_jwk(), SigningAlg::Es384).is_none());
        assert!(decoding_key(ec.public_jwk(), SigningAlg::Es384).is_some());
        assert!(decoding_key(ec.public_jwk(), SigningAlg::Rs384).is_none());
        let enc = Jwk {
            key_use: Some("enc".into()),
            ..rsa.public_jwk().clone()
        };
        assert!(decoding_key(&enc, SigningAlg::Rs384).is_none());
    }
}
