//! [`FleetKey`]: the secret every replica of a fleet shares, and what is derived from it: the
//! name a token's entry has in Redis ([`SharedKey`], a keyed digest) and the key that seals the
//! entry's value (`seal.rs`). docs/AUTHORIZATION.md §12 gives the argument.
//!
//! Two independent keys come out of the fleet key with BLAKE3's key derivation (a context string
//! each), so the digest and the sealing key never share key material.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};

/// Fewest bytes a fleet key may have: 256 bits.
pub const MIN_FLEET_KEY_BYTES: usize = 32;

const DIGEST_CONTEXT: &str = "smart-guard 2026-11 fleet: token digest";
const SEAL_CONTEXT: &str = "smart-guard 2026-11 fleet: entry sealing key";
const FINGERPRINT_CONTEXT: &str = "smart-guard 2026-11 fleet: key fingerprint";

/// The fleet's shared secret (`SMART_GUARD_FLEET_KEY_FILE`): at least 32 random bytes, the same
/// on every replica. Never printed: its `Debug` says only that it is there.
#[derive(Clone)]
pub struct FleetKey {
    digest: [u8; 32],
    seal: std::sync::Arc<LessSafeKey>,
    fingerprint: [u8; 8],
}

/// Why bytes cannot be a fleet key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortFleetKey {
    /// How many bytes there were.
    pub len: usize,
}

impl fmt::Display for ShortFleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a fleet key needs at least {MIN_FLEET_KEY_BYTES} bytes, this one has {}",
            self.len
        )
    }
}

impl std::error::Error for ShortFleetKey {}

impl FleetKey {
    /// A fleet key from `secret` (the whole content of the key file: use 32 or more random
    /// bytes, e.g. `head -c 32 /dev/urandom > fleet.key`).
    ///
    /// ```
    /// use smart_guard::fleet::FleetKey;
    ///
    /// assert!(FleetKey::new(&[7; 32]).is_ok());
    /// assert!(FleetKey::new(b"too short").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ShortFleetKey`] when `secret` has fewer than [`MIN_FLEET_KEY_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, ShortFleetKey> {
        if secret.len() < MIN_FLEET_KEY_BYTES {
            return Err(ShortFleetKey { len: secret.len() });
        }
        let digest = blake3::derive_key(DIGEST_CONTEXT, secret);
        let seal_bytes = blake3::derive_key(SEAL_CONTEXT, secret);
        let unbound = UnboundKey::new(&AES_256_GCM, &seal_bytes)
            .map_err(|_| ShortFleetKey { len: secret.len() })?;
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&blake3::derive_key(FINGERPRINT_CONTEXT, secret)[..8]);
        Ok(Self {
            digest,
            seal: std::sync::Arc::new(LessSafeKey::new(unbound)),
            fingerprint,
        })
    }

    /// The name of `token`'s entry: its keyed digest under this fleet key.
    pub(crate) fn digest(&self, token: &[u8]) -> SharedKey {
        SharedKey(*blake3::keyed_hash(&self.digest, token).as_bytes())
    }

    pub(crate) fn sealing_key(&self) -> &LessSafeKey {
        &self.seal
    }

    /// Eight bytes that tell fleet keys apart without revealing them: revocation messages carry
    /// them, so a replica with another key notices instead of matching nothing in silence.
    pub(crate) fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetKey(<redacted>)")
    }
}

/// A token's name in the shared cache: its 256-bit keyed digest under the fleet key. It tells
/// nothing of the token without the fleet key, and the same token has the same name on every
/// replica.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedKey([u8; 32]);

impl SharedKey {
    /// A key from its 32 bytes (as a revocation message carries it).
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes (the associated data of the sealed value).
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits, as in Redis key names and revocation messages.
    #[must_use]
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// A digest from 64 hex digits (either case), as [`SharedKey::to_hex`] writes it.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let nibble = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedKey({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_shorter_than_32_bytes_are_refused() {
        assert_eq!(
            FleetKey::new(&[1; 31]).err(),
            Some(ShortFleetKey { len: 31 })
        );
        assert!(FleetKey::new(&[1; 32]).is_ok());
        assert!(FleetKey::new(&[1; 64]).is_ok());
    }

    #[test]
    fn the_digest_depends_on_the_token_and_the_fleet_key_only() {
        let a = FleetKey::new(&[1; 32]).unwrap();
        let a_again = FleetKey::new(&[1; 32]).unwrap();
        let b = FleetKey::new(&[2; 32]).unwrap();
        assert_eq!(
            a.digest(b"token"),
            a_again.digest(b"token"),
            "same on every replica"
        );
        assert_ne!(a.digest(b"token"), a.digest(b"token2"));
        assert_ne!(
            a.digest(b"token"),
            b.digest(b"token"),
            "another fleet, another name"
        );
        assert!(
            !a.digest(b"token").to_hex().contains("746f6b656e"),
            "no token bytes"
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_64_hex_digits() {
        let key = FleetKey::new(&[3; 32]).unwrap().digest(b"t");
        assert_eq!(SharedKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(SharedKey::from_hex(&key.to_hex().to_uppercase()), Some(key));
        for bad in [
            "",
            "ab",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            &"é".repeat(32),
        ] {
            assert_eq!(SharedKey::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let text = format!("{:?}", FleetKey::new(&[0x41; 32]).unwrap());
        assert_eq!(text, "FleetKey(<redacted>)");
    }
}
