//! Client authentication: full validation of SMART client assertions (`private_key_jwt`) and
//! resource-server secrets (`client_secret_basic`, `client_secret_post`).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use super::error::OAuthErrorResponse;
use super::form::Form;
use super::jwks::JwksResolver;
use super::registry::{JwksSource, ResourceServerAuth};
use super::server::Shared;
use super::store::JtiCache;
use crate::{
    client::{CLIENT_ASSERTION_TYPE, Jwk, MAX_ASSERTION_LIFETIME, SigningAlg},
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

/// Who called an introspection or revocation endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A registered resource server (may introspect and revoke any token).
    ResourceServer(String),
    /// A backend-services client (may revoke its own tokens).
    Client(String),
    /// No credentials were presented.
    Anonymous,
}

/// Authenticates the caller of the introspection or revocation endpoint at `endpoint_url`.
///
/// Exactly one method may be used: `client_secret_basic`, `client_secret_post`, or `private_key_jwt`.
/// Presented but wrong credentials are always `invalid_client`.
pub(crate) async fn authenticate_caller(
    shared: &Shared,
    headers: &HeaderMap,
    form: &Form,
    endpoint_url: &str,
    allow_clients: bool,
) -> Result<Caller, OAuthErrorResponse> {
    let authorization = headers.get(http::header::AUTHORIZATION);
    let basic = match authorization {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                OAuthErrorResponse::invalid_client("malformed authorization header")
            })?;
            match v.split_once(' ') {
                Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => Some(creds.trim()),
                _ => {
                    return Err(OAuthErrorResponse::invalid_client(
                        "only basic client authentication is accepted in the header",
                    )
                    .with_basic_challenge());
                }
            }
        }
    };
    let post = form.get("client_secret");
    let jwt = form.get("client_assertion");
    if [basic.is_some(), post.is_some(), jwt.is_some()]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(OAuthErrorResponse::invalid_request(
            "more than one client authentication method",
        ));
    }
    if let Some(creds) = basic {
        let (decoded, raw) = parse_basic(creds).ok_or_else(|| {
            OAuthErrorResponse::invalid_client("malformed basic credentials").with_basic_challenge()
        })?;
        // RFC 6749 §2.3.1 form-encodes id and secret; many clients do not, so accept both forms.
        return check_secret(shared, &decoded.0, &decoded.1)
            .or_else(|_| check_secret(shared, &raw.0, &raw.1))
            .map_err(OAuthErrorResponse::with_basic_challenge);
    }
    if let Some(secret) = post {
        let id = form
            .get("client_id")
            .ok_or_else(|| OAuthErrorResponse::invalid_client("client_id is required"))?;
        return check_secret(shared, id, secret);
    }
    if let Some(jwt) = jwt {
        if form.get("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
            return Err(OAuthErrorResponse::invalid_client(
                "unsupported client_assertion_type",
            ));
        }
        let audiences = [
            shared.urls.issuer.as_str(),
            shared.urls.token.as_str(),
            endpoint_url,
        ];
        let client_id = shared
            .assertions
            .verify(jwt, &audiences, |iss| {
                if let Some(rs) = shared.resource_servers.get(iss) {
                    return match &rs.auth {
                        ResourceServerAuth::PrivateKeyJwt(jwks) => Some(jwks.clone()),
                        ResourceServerAuth::Secret(_) => None,
                    };
                }
                allow_clients
                    .then(|| shared.clients.get(iss).map(|c| c.jwks.clone()))
                    .flatten()
            })
            .await?;
        if form.get("client_id").is_some_and(|id| id != client_id) {
            return Err(OAuthErrorResponse::invalid_client(
                "client_id does not match the assertion",
            ));
        }
        return Ok(if shared.resource_servers.contains_key(&client_id) {
            Caller::ResourceServer(client_id)
        } else {
            Caller::Client(client_id)
        });
    }
    Ok(Caller::Anonymous)
}

fn check_secret(
    shared: &Shared,
    client_id: &str,
    secret: &str,
) -> Result<Caller, OAuthErrorResponse> {
    let presented = blake3::hash(secret.as_bytes());
    match shared.resource_servers.get(client_id).map(|rs| &rs.auth) {
        // blake3::Hash equality is constant-time.
        Some(ResourceServerAuth::Secret(expected)) if *expected == presented => {
            Ok(Caller::ResourceServer(client_id.to_owned()))
        }
        _ => Err(OAuthErrorResponse::invalid_client(
            "resource server authentication failed",
        )),
    }
}

type Credentials = (String, String);

/// `base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1): the form-decoded pair and the
/// raw pair.
fn parse_basic(creds: &str) -> Option<(Credentials, Credentials)> {
    let decoded = String::from_utf8(STANDARD.decode(creds).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| s.to_owned())
    };
    let raw = (id.to_owned(), secret.to_owned());
    (!id.is_empty()).then(|| ((unescape(id), unescape(secret)), raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let creds = STANDARD.encode("fhir%3Aserver:s%20e+c");
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            parse_basic(&creds),
            Some((
                pair("fhir:server", "s e c"),
                pair("fhir%3Aserver", "s%20e+c")
            ))
        );
        let raw = STANDARD.encode("rs:a&b=c:d");
        assert_eq!(
            parse_basic(&raw),
            Some((pair("rs", "a&b=c:d"), pair("rs", "a&b=c:d")))
        );
        assert_eq!(parse_basic("!!"), None);
        assert_eq!(parse_basic(&STANDARD.encode("no-colon")), None);
    }

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
