//! [`TokenKey`]: what the caches know a token by (docs/AUTHORIZATION.md §2.4: a keyed 256-bit
//! digest with random keys per process; the token is never stored).
//!
//! One type owns the three uses of the key, so they are documented and tested here only:
//!
//! - the digest ([`TokenKey::of`]), under the per-process keys of a [`TokenKeySecret`];
//! - the front-cache slot ([`TokenKey::front_slot`]): bytes 0..8;
//! - the moka hash ([`TokenKey`]'s `Hash`, read back by [`TokenKeyHash`]): bytes 8..16.
//!
//! The digest is uniform and clients cannot steer it without the keys, so its bytes serve as
//! slot and hash as they are: no second hash runs on the hit path.
//!
//! # The digest
//!
//! - A token of at most [`SHORT_TOKEN`] bytes (opaque tokens): keyed BLAKE3 of the token.
//! - A longer one (a JWT is often 1 KB): keyed BLAKE3, under a second key, of the token's length
//!   (8 bytes, little-endian) and its GHASH under a third, secret key (the tag of AES-256-GCM with
//!   the token as associated data, nothing encrypted, and a fixed all-zero nonce). BLAKE3 on one
//!   1 KB chunk is sequential, ~1.2 µs here; GHASH runs at a fraction of a cycle per byte
//!   (carry-less multiply), ~0.2 µs for 1 KB.
//!
//! The long-token construction is the classic "universal hash, then PRF": GHASH is
//! ε-almost-universal with ε ≤ (len/16 + 1) / 2^128 for two distinct inputs under a key nobody
//! outside sees (the tag never leaves the process, and neither do the digests), so two tokens of
//! up to 8 KiB share a digest with probability below 2^-118, and BLAKE3 on top keeps the digest
//! one-way even to someone holding the keys. The separate BLAKE3 keys keep the two constructions
//! apart. A 256-bit digest means no 64-bit collision can serve someone else's claims, and a heap
//! dump yields no live token.

use std::hash::{BuildHasher, Hash, Hasher};

use aws_lc_rs::aead;

/// Tokens up to this long are digested by keyed BLAKE3 alone (at most two compressions).
const SHORT_TOKEN: usize = 128;

/// A token's cache key: its keyed 256-bit digest (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenKey([u8; 32]);

impl TokenKey {
    /// The key of `token` under `secret`.
    pub(crate) fn of(secret: &TokenKeySecret, token: &[u8]) -> Self {
        if token.len() <= SHORT_TOKEN {
            return Self(*blake3::keyed_hash(&secret.short, token).as_bytes());
        }
        // A fixed nonce on purpose: the tag is used as a keyed hash of the associated data, not
        // as an authenticator, and nothing is ever encrypted under this key.
        let nonce = aead::Nonce::assume_unique_for_key([0; aead::NONCE_LEN]);
        let Ok(tag) =
            secret
                .ghash
                .seal_in_place_separate_tag(nonce, aead::Aad::from(token), &mut [0u8; 0])
        else {
            // Only inputs beyond GCM's 2^61-byte limit fail; the bearer limit is far below.
            return Self(*blake3::keyed_hash(&secret.short, token).as_bytes());
        };
        let mut input = [0u8; 8 + 16];
        input[..8].copy_from_slice(&(token.len() as u64).to_le_bytes());
        input[8..].copy_from_slice(tag.as_ref());
        Self(*blake3::keyed_hash(&secret.long, &input).as_bytes())
    }

    /// The key's front-cache slot among `mask + 1` slots (a power of two): the low bits of
    /// bytes 0..8.
    #[inline]
    pub(crate) fn front_slot(&self, mask: usize) -> usize {
        // Truncation is the point: the low bits pick the slot.
        #[allow(clippy::cast_possible_truncation)]
        let bits = self.word(0) as usize;
        bits & mask
    }

    /// A key with these bytes (for the caches' tests).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Bytes `at..at + 8`, little-endian.
    #[inline]
    fn word(&self, at: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(word)
    }
}

/// The moka hash: bytes 8..16 (bytes 0..8 pick the front slot), one `write_u64` that
/// [`TokenKeyHash`] keeps as it is.
impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.word(8));
    }
}

/// moka's hasher for [`TokenKey`]s: the hash is the `u64` the key writes (see its `Hash`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokenKeyHash(u64);

impl BuildHasher for TokenKeyHash {
    type Hasher = Self;

    fn build_hasher(&self) -> Self {
        Self(0)
    }
}

impl Hasher for TokenKeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `TokenKey` is hashed here, through `write_u64`; mix anything else in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// The per-process random keys of [`TokenKey::of`]: two BLAKE3 keys (short and long tokens)
/// and the GHASH key of long tokens.
pub(crate) struct TokenKeySecret {
    short: [u8; 32],
    long: [u8; 32],
    ghash: aead::LessSafeKey,
}

impl TokenKeySecret {
    /// Fresh random keys.
    pub(crate) fn random() -> Self {
        Self::from_keys(rand::random(), rand::random(), rand::random())
    }

    fn from_keys(short: [u8; 32], long: [u8; 32], ghash: [u8; 32]) -> Self {
        // AES-256-GCM takes any 32-byte key: this cannot fail.
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &ghash)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM accepts a 32-byte key"));
        Self {
            short,
            long,
            ghash: aead::LessSafeKey::new(unbound),
        }
    }
}

impl std::fmt::Debug for TokenKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeySecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1 KB JWT-shaped token of the benches.
    fn long_token() -> Vec<u8> {
        format!(
            "eyJhbGciOiJSUzM4NCJ9.{}.{}",
            "a".repeat(600),
            "b".repeat(402)
        )
        .into_bytes()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_long_token_digest_is_blake3_of_the_length_and_the_ghash_tag() {
        // Known answer, computed once and pinned; it was checked independently (Python:
        // `cryptography`'s AESGCM for the tag, a reference BLAKE3 for the keyed hash).
        let secret = TokenKeySecret::from_keys([0x11; 32], [0x22; 32], [0x33; 32]);
        let token = long_token();
        assert_eq!(token.len(), 1024);
        let key = TokenKey::of(&secret, &token).to_bytes();
        assert_eq!(
            hex(&key),
            "2b737b1c2db668e189be430b60783aa731d11a6c1669bf218406d2aa055152c9",
            "GHASH-then-BLAKE3 of a 1 KB token"
        );
        // Not plain keyed BLAKE3 of the whole token, under either BLAKE3 key.
        assert_ne!(key, *blake3::keyed_hash(&[0x11; 32], &token).as_bytes());
        assert_ne!(key, *blake3::keyed_hash(&[0x22; 32], &token).as_bytes());
        // One byte past the short limit takes the long construction; at the limit, the short one.
        let at_limit = vec![b'x'; SHORT_TOKEN];
        assert_eq!(
            TokenKey::of(&secret, &at_limit).to_bytes(),
            *blake3::keyed_hash(&[0x11; 32], &at_limit).as_bytes()
        );
        let past_limit = vec![b'x'; SHORT_TOKEN + 1];
        assert_ne!(
            TokenKey::of(&secret, &past_limit).to_bytes(),
            *blake3::keyed_hash(&[0x11; 32], &past_limit).as_bytes()
        );
    }

    #[test]
    fn the_moka_hash_and_the_front_slot_are_taken_from_the_digest_bytes() {
        let mut bytes = [0u8; 32];
        bytes[8] = 7;
        bytes[0] = 0b1011;
        let key = TokenKey(bytes);
        assert_eq!(TokenKeyHash::default().hash_one(key), 7);
        assert_eq!(key.front_slot(0b11), 0b11);
        assert_eq!(key.front_slot(0b111), 0b011);
        assert_eq!(key.front_slot(0), 0);
    }

    #[test]
    fn digests_are_keyed_per_secret_and_stable_within_one() {
        let a = TokenKeySecret::random();
        let b = TokenKeySecret::random();
        let long = |c: u8| vec![c; 1024];
        for (one, other) in [
            (b"token".to_vec(), b"token2".to_vec()),
            (long(b'a'), long(b'b')),
            (vec![b'a'; SHORT_TOKEN], vec![b'a'; SHORT_TOKEN + 1]),
            (long(b'a'), long(b'a')[..1023].to_vec()),
        ] {
            assert_eq!(TokenKey::of(&a, &one), TokenKey::of(&a, &one));
            assert_ne!(TokenKey::of(&a, &one), TokenKey::of(&a, &other));
            assert_ne!(TokenKey::of(&a, &one), TokenKey::of(&b, &one));
        }
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.short)));
    }

    #[test]
    fn a_long_token_differing_in_any_single_byte_gets_another_digest() {
        let secret = TokenKeySecret::random();
        let token = vec![b'x'; 700];
        let digest = TokenKey::of(&secret, &token);
        for at in [0, 1, 15, 16, 17, 350, 683, 698, 699] {
            let mut other = token.clone();
            other[at] = b'y';
            assert_ne!(TokenKey::of(&secret, &other), digest, "byte {at}");
        }
    }
}
