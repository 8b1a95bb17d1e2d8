//! `Jwk` and `Jwks`: public keys as JSON Web Keys (RFC 7517) with RFC 7638 thumbprints.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// A public JSON Web Key (RFC 7517) as SMART clients publish it.
///
/// RSA keys carry `n` and `e`; EC keys carry `crv`, `x` and `y`. Private members (`d`, `p`, ...) are
/// not modelled, so deserializing a private JWK silently drops them and never stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `"RSA"` or `"EC"`.
    pub kty: String,
    /// Key id; for keys generated here, the RFC 7638 thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm, e.g. `"RS384"` or `"ES384"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Public key use; `"sig"` for signing keys.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve name, e.g. `"P-384"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl Jwk {
    /// Builds an RSA signing JWK from big-endian modulus and exponent bytes; `kid` is the thumbprint.
    pub fn rsa(modulus: &[u8], exponent: &[u8], alg: &str) -> Self {
        let mut jwk = Self {
            kty: "RSA".to_owned(),
            alg: Some(alg.to_owned()),
            key_use: Some("sig".to_owned()),
            n: Some(URL_SAFE_NO_PAD.encode(modulus)),
            e: Some(URL_SAFE_NO_PAD.encode(exponent)),
            ..Self::default()
        };
        jwk.kid = jwk.thumbprint();
        jwk
    }

    /// Builds an EC signing JWK from the curve name and big-endian coordinates; `kid` is the thumbprint.
    pub fn ec(crv: &str, x: &[u8], y: &[u8], alg: &str) -> Self {
        let mut jwk = Self {
            kty: "EC".to_owned(),
            alg: Some(alg.to_owned()),
            key_use: Some("sig".to_owned()),
            crv: Some(crv.to_owned()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: Some(URL_SAFE_NO_PAD.encode(y)),
            ..Self::default()
        };
        jwk.kid = jwk.thumbprint();
        jwk
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url without padding.
    ///
    /// Hashes the canonical JSON of the required members only (RSA: `e`, `kty`, `n`; EC: `crv`, `kty`,
    /// `x`, `y`, in that order, no whitespace). `None` for other key types or when a member is missing.
    pub fn thumbprint(&self) -> Option<String> {
        let members: Vec<(&str, &str)> = match self.kty.as_str() {
            "RSA" => vec![
                ("e", self.e.as_deref()?),
                ("kty", "RSA"),
                ("n", self.n.as_deref()?),
            ],
            "EC" => vec![
                ("crv", self.crv.as_deref()?),
                ("kty", "EC"),
                ("x", self.x.as_deref()?),
                ("y", self.y.as_deref()?),
            ],
            _ => return None,
        };
        let mut canonical = String::from("{");
        for (i, (name, value)) in members.iter().enumerate() {
            if i > 0 {
                canonical.push(',');
            }
            // serde_json escapes exactly as RFC 7159 requires; names are plain ASCII.
            canonical.push_str(&serde_json::to_string(name).ok()?);
            canonical.push(':');
            canonical.push_str(&serde_json::to_string(value).ok()?);
        }
        canonical.push('}');
        let hash = digest::digest(&digest::SHA256, canonical.as_bytes());
        Some(URL_SAFE_NO_PAD.encode(hash.as_ref()))
    }
}

/// A JSON Web Key Set: `{"keys": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys in the set.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// A set holding the given keys.
    pub fn new(keys: Vec<Jwk>) -> Self {
        Self { keys }
    }

    /// The key whose `kid` equals `kid`, if exactly one such key exists.
    ///
    /// Returns `None` when the `kid` is ambiguous, because SMART requires `kid` to be unique in a JWKS.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        let mut matches = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
        match (matches.next(), matches.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7638 §3.1 example key and its expected thumbprint.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn thumbprint_matches_the_rfc7638_example() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": RFC7638_N,
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .expect("valid jwk");
        assert_eq!(
            jwk.thumbprint().as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn thumbprint_ignores_optional_members_and_needs_required_ones() {
        let base = Jwk {
            kty: "EC".into(),
            crv: Some("P-384".into()),
            x: Some("AA".into()),
            y: Some("AQ".into()),
            ..Jwk::default()
        };
        let decorated = Jwk {
            kid: Some("k".into()),
            alg: Some("ES384".into()),
            key_use: Some("sig".into()),
            ..base.clone()
        };
        assert!(base.thumbprint().is_some());
        assert_eq!(base.thumbprint(), decorated.thumbprint());
        assert_eq!(
            Jwk {
                y: None,
                ..base.clone()
            }
            .thumbprint(),
            None
        );
        assert_eq!(
            Jwk {
                kty: "oct".into(),
                ..base
            }
            .thumbprint(),
            None
        );
    }

    #[test]
    fn find_refuses_an_ambiguous_kid() {
        let k = Jwk {
            kty: "RSA".into(),
            kid: Some("a".into()),
            ..Jwk::default()
        };
        assert!(Jwks::new(vec![k.clone()]).find("a").is_some());
        assert!(Jwks::new(vec![k.clone()]).find("b").is_none());
        assert!(Jwks::new(vec![k.clone(), k]).find("a").is_none());
    }

    #[test]
    fn jwk_serializes_use_and_skips_absent_members() {
        let jwk = Jwk::rsa(&[1, 0, 1], &[1, 0, 1], "RS384");
        let v = serde_json::to_value(&jwk).expect("serializable");
        assert_eq!(v["use"], "sig");
        assert_eq!(v["alg"], "RS384");
        assert!(v.get("crv").is_none());
        assert_eq!(v["kid"].as_str(), jwk.thumbprint().as_deref());
    }
}
