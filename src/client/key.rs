//! `KeyPair` and `SigningAlg`: RS384 / ES384 signing keys as PKCS#8 PEM, with their public JWK.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey};

use super::error::{ClientError, ClientErrorKind};
use super::jwk::{Jwk, Jwks};

/// The signature algorithms SMART asymmetric client authentication uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-384, RSA key of at least 2048 bits.
    Rs384,
    /// ECDSA on P-384 with SHA-384.
    Es384,
}

impl SigningAlg {
    /// The JOSE name: `"RS384"` or `"ES384"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rs384 => "RS384",
            Self::Es384 => "ES384",
        }
    }

    /// Parses a JOSE name; only `RS384` and `ES384` are accepted.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS384" => Some(Self::Rs384),
            "ES384" => Some(Self::Es384),
            _ => None,
        }
    }

    pub(crate) const fn jwt_algorithm(self) -> Algorithm {
        match self {
            Self::Rs384 => Algorithm::RS384,
            Self::Es384 => Algorithm::ES384,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| {
            ClientError::new(ClientErrorKind::Key).with_source(format!(
                "unsupported algorithm {s:?}, expected RS384 or ES384"
            ))
        })
    }
}

/// A private signing key with its public JWK.
///
/// # Security
///
/// `Debug` prints only the algorithm and `kid`. The private key leaves this type only through
/// [`KeyPair::private_key_pem`]; write it to a file readable by its owner alone.
pub struct KeyPair {
    alg: SigningAlg,
    pkcs8_der: Vec<u8>,
    encoding_key: EncodingKey,
    jwk: Jwk,
    public_spki_der: Vec<u8>,
}

const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

impl KeyPair {
    /// Generates a fresh key pair: RSA 2048 for RS384, P-384 for ES384.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Key`] if the crypto library fails to generate the key.
    pub fn generate(alg: SigningAlg) -> Result<Self, ClientError> {
        let key_err = |e: aws_lc_rs::error::Unspecified| {
            ClientError::new(ClientErrorKind::Key).with_source(e.to_string())
        };
        let der = match alg {
            SigningAlg::Rs384 => {
                let kp = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).map_err(key_err)?;
                kp.as_der().map_err(key_err)?.as_ref().to_vec()
            }
            SigningAlg::Es384 => {
                let kp =
                    EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(key_err)?;
                kp.to_pkcs8v1().map_err(key_err)?.as_ref().to_vec()
            }
        };
        Self::from_pkcs8_der(&der)
    }

    /// Loads an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) holding an RSA (>= 2048 bit)
    /// or P-384 key.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Key`] if the PEM is malformed or the key is of another type or size.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, ClientError> {
        let der = pem_decode(pem, PRIVATE_KEY_LABEL)?;
        Self::from_pkcs8_der(&der)
    }

    /// Loads an unencrypted PKCS#8 DER private key (RSA >= 2048 bit, or P-384).
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Key`] if the key is malformed or of another type or size.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, ClientError> {
        let key_err = |msg: &'static str| ClientError::new(ClientErrorKind::Key).with_source(msg);
        let pem = pem_encode(der, PRIVATE_KEY_LABEL);
        if let Ok(kp) = rsa::KeyPair::from_pkcs8(der) {
            if kp.public_modulus_len() < 256 {
                return Err(key_err("rsa key is shorter than 2048 bits"));
            }
            let public = kp.public_key();
            let jwk = Jwk::rsa(
                public.modulus().big_endian_without_leading_zero(),
                public.exponent().big_endian_without_leading_zero(),
                SigningAlg::Rs384.as_str(),
            );
            let spki: PublicKeyX509Der<'static> = public
                .as_der()
                .map_err(|_| key_err("cannot encode the public key"))?;
            let encoding_key = EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| ClientError::new(ClientErrorKind::Key).with_source(e))?;
            return Ok(Self {
                alg: SigningAlg::Rs384,
                pkcs8_der: der.to_vec(),
                encoding_key,
                jwk,
                public_spki_der: spki.as_ref().to_vec(),
            });
        }
        if let Ok(kp) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der) {
            let public = kp.public_key();
            let point = public.as_ref();
            // Uncompressed SEC1 point: 0x04 || x (48 bytes) || y (48 bytes).
            if point.len() != 97 || point[0] != 0x04 {
                return Err(key_err("unexpected p-384 public point encoding"));
            }
            let jwk = Jwk::ec(
                "P-384",
                &point[1..49],
                &point[49..97],
                SigningAlg::Es384.as_str(),
            );
            let spki: PublicKeyX509Der<'static> = public
                .as_der()
                .map_err(|_| key_err("cannot encode the public key"))?;
            let encoding_key = EncodingKey::from_ec_der(der);
            return Ok(Self {
                alg: SigningAlg::Es384,
                pkcs8_der: der.to_vec(),
                encoding_key,
                jwk,
                public_spki_der: spki.as_ref().to_vec(),
            });
        }
        Err(key_err(
            "not a pkcs#8 rsa (>= 2048 bit) or p-384 private key",
        ))
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        self.jwk.kid.as_deref().unwrap_or_default()
    }

    /// The public key as a JWK with `kid`, `alg` and `use: "sig"`.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// A JWKS holding only this key's public JWK, ready to register with an authorization server.
    pub fn jwks(&self) -> Jwks {
        Jwks::new(vec![self.jwk.clone()])
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        pem_encode(&self.public_spki_der, PUBLIC_KEY_LABEL)
    }

    /// The private key as an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Security
    ///
    /// This is the only way the private key leaves this type. Never log it; store it with mode 0600.
    pub fn private_key_pem(&self) -> String {
        pem_encode(&self.pkcs8_der, PRIVATE_KEY_LABEL)
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("alg", &self.alg)
            .field("kid", &self.kid())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        // Best effort: do not leave the PKCS#8 bytes behind in freed memory.
        self.pkcs8_der.iter_mut().for_each(|b| *b = 0);
    }
}

fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &str, label: &str) -> Result<Vec<u8>, ClientError> {
    let err = |msg: &'static str| ClientError::new(ClientErrorKind::Key).with_source(msg);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| err("no -----BEGIN PRIVATE KEY----- line (pkcs#8 pem expected)"))?;
    let body = &pem[start + begin.len()..];
    let stop = body
        .find(&end)
        .ok_or_else(|| err("no -----END PRIVATE KEY----- line"))?;
    let b64: String = body[..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|_| err("pem body is not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem() {
        for alg in [SigningAlg::Rs384, SigningAlg::Es384] {
            let key = KeyPair::generate(alg).expect("keygen");
            let pem = key.private_key_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
            let again = KeyPair::from_pkcs8_pem(&pem).expect("reload");
            assert_eq!(again.alg(), alg);
            assert_eq!(again.public_jwk(), key.public_jwk());
            assert_eq!(
                key.kid(),
                key.public_jwk().thumbprint().expect("thumbprint")
            );
            assert!(
                key.public_key_pem()
                    .starts_with("-----BEGIN PUBLIC KEY-----\n")
            );
        }
    }

    #[test]
    fn jwk_members_match_the_key_type() {
        let rsa = KeyPair::generate(SigningAlg::Rs384).expect("keygen");
        let j = rsa.public_jwk();
        assert_eq!(
            (j.kty.as_str(), j.alg.as_deref(), j.key_use.as_deref()),
            ("RSA", Some("RS384"), Some("sig"))
        );
        assert_eq!(j.e.as_deref(), Some("AQAB"));
        assert!(
            j.n.as_ref().is_some_and(|n| n.len() >= 342),
            "2048-bit modulus is 342 base64url chars"
        );
        let ec = KeyPair::generate(SigningAlg::Es384).expect("keygen");
        let j = ec.public_jwk();
        assert_eq!(
            (j.kty.as_str(), j.crv.as_deref(), j.alg.as_deref()),
            ("EC", Some("P-384"), Some("ES384"))
        );
        assert_eq!(j.x.as_ref().map(String::len), Some(64));
        assert_eq!(j.y.as_ref().map(String::len), Some(64));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = KeyPair::generate(SigningAlg::Es384).expect("keygen");
        let pem = key.private_key_pem();
        let body_line = pem.lines().nth(1).expect("pem body");
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(body_line));
    }

    #[test]
    fn garbage_pem_is_a_key_error() {
        for pem in [
            "",
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = KeyPair::from_pkcs8_pem(pem).expect_err("must fail");
            assert_eq!(err.kind(), ClientErrorKind::Key);
        }
    }

    #[test]
    fn alg_names_parse_strictly() {
        assert_eq!("RS384".parse::<SigningAlg>().ok(), Some(SigningAlg::Rs384));
        assert_eq!("ES384".parse::<SigningAlg>().ok(), Some(SigningAlg::Es384));
        assert!("RS256".parse::<SigningAlg>().is_err());
        assert!("es384".parse::<SigningAlg>().is_err());
    }
}
