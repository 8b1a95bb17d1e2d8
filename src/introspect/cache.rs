//! Cache keys and lifetimes (SMART-NOTES §2.6): a keyed digest of the token, never the token;
//! TTL = min(exp - now, max TTL).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lc_rs::aead;
use moka::Expiry;

use crate::{introspect::response::TokenInfo, time::unix_now_ms};

/// A keyed 256-bit digest of a token, with per-process random keys: a heap dump yields no live
/// token, and no 64-bit collision can serve someone else's claims. See [`TokenHasher`].
pub(crate) type TokenKey = [u8; 32];

/// Tokens up to this long are digested by keyed BLAKE3 alone (at most two compressions).
const SHORT_TOKEN: usize = 128;

/// Digests tokens with random keys drawn once per [`TokenHasher`].
///
/// - A token of at most [`SHORT_TOKEN`] bytes (opaque tokens): keyed BLAKE3 of the token.
/// - A longer one (a JWT is often 1 KB): keyed BLAKE3, under a second key, of the token's
///   length and its GHASH under a third, secret key (the tag of AES-256-GCM with the token as
///   associated data and a fixed nonce). BLAKE3 on one 1 KB chunk is sequential, ~1.2 µs here;
///   GHASH runs at a fraction of a cycle per byte (carry-less multiply), ~0.2 µs for 1 KB.
///
/// The long-token construction is the classic "universal hash, then PRF": GHASH is
/// ε-almost-universal with ε ≤ (len/16 + 1) / 2^128 for two distinct inputs under a key
/// nobody outside sees (the tag never leaves the process, and neither do the digests), so two
/// tokens of up to 8 KiB share a digest with probability below 2^-118, and BLAKE3 on top keeps
/// the digest one-way even to someone holding the keys. The separate BLAKE3 keys keep the two
/// constructions apart.
pub(crate) struct TokenHasher {
    short: [u8; 32],
    long: [u8; 32],
    ghash: aead::LessSafeKey,
}

impl TokenHasher {
    pub(crate) fn random() -> Self {
        let ghash_key: [u8; 32] = rand::random();
        // AES-256-GCM takes any 32-byte key: this cannot fail.
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &ghash_key)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM accepts a 32-byte key"));
        Self {
            short: rand::random(),
            long: rand::random(),
            ghash: aead::LessSafeKey::new(unbound),
        }
    }

    pub(crate) fn key_of(&self, token: &[u8]) -> TokenKey {
        if token.len() <= SHORT_TOKEN {
            return *blake3::keyed_hash(&self.short, token).as_bytes();
        }
        // A fixed nonce on purpose: the tag is used as a keyed hash of the associated data, not
        // as an authenticator, and nothing is ever encrypted under this key.
        let nonce = aead::Nonce::assume_unique_for_key([0; aead::NONCE_LEN]);
        let Ok(tag) =
            self.ghash
                .seal_in_place_separate_tag(nonce, aead::Aad::from(token), &mut [0u8; 0])
        else {
            // Only inputs beyond GCM's 2^61-byte limit fail; the bearer limit is far below.
            return *blake3::keyed_hash(&self.short, token).as_bytes();
        };
        let mut input = [0u8; 8 + 16];
        input[..8].copy_from_slice(&(token.len() as u64).to_le_bytes());
        input[8..].copy_from_slice(tag.as_ref());
        *blake3::keyed_hash(&self.long, &input).as_bytes()
    }
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher(<redacted>)")
    }
}

/// The per-entry lifetime of active answers: until `TokenInfo::cached_until_ms`, fixed when the
/// answer arrived (see [`cached_until_ms`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveTtl;

impl Expiry<TokenKey, Arc<TokenInfo>> for ActiveTtl {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        info: &Arc<TokenInfo>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            info.cached_until_ms.saturating_sub(unix_now_ms()),
        ))
    }
}

/// Until when (unix ms) an answer that arrived at `now_ms` may be cached: until `exp`, and
/// never longer than `cap` (SMART-NOTES §2.6: TTL = min(exp - now, max TTL)).
pub(crate) fn cached_until_ms(exp: Option<u64>, now_ms: u64, cap: Duration) -> u64 {
    let by_cap = now_ms.saturating_add(u64::try_from(cap.as_millis()).unwrap_or(u64::MAX));
    exp.map_or(by_cap, |exp| by_cap.min(exp.saturating_mul(1000)))
}

/// moka's hasher for [`TokenKey`]s: the key is already a uniform keyed digest that clients
/// cannot steer, so bytes 8..16 serve as the hash (bytes 0..8 pick the front slot).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length (usize) then its bytes; keep bytes 8..16 of the key.
        if bytes.len() == 32 {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[8..16]);
            self.0 = u64::from_le_bytes(word);
        }
    }
}

/// Builds [`DigestHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DigestHasherBuilder;

impl std::hash::BuildHasher for DigestHasherBuilder {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_deadline_is_the_sooner_of_exp_and_arrival_plus_the_cap() {
        let cap = Duration::from_secs(60);
        for (exp, now_ms, want) in [
            (Some(1_100), 1_000_500, 1_060_500), // the cap is sooner
            (Some(1_030), 1_000_500, 1_030_000), // exp is sooner: never cached past exp
            (Some(1_000), 1_000_500, 1_000_000), // already past exp: nothing to cache
            (None, 1_000_500, 1_060_500),
        ] {
            assert_eq!(cached_until_ms(exp, now_ms, cap), want, "{exp:?} {now_ms}");
        }
    }

    #[test]
    fn the_moka_hash_is_taken_from_the_digest_bytes() {
        use std::hash::BuildHasher;
        let mut key = [0u8; 32];
        key[8] = 7;
        assert_eq!(DigestHasherBuilder.hash_one(key), 7);
    }

    #[test]
    fn digests_are_keyed_per_hasher_and_stable_within_one() {
        let a = TokenHasher::random();
        let b = TokenHasher::random();
        let long = |c: u8| vec![c; 1024];
        for (one, other) in [
            (b"token".to_vec(), b"token2".to_vec()),
            (long(b'a'), long(b'b')),
            (vec![b'a'; SHORT_TOKEN], vec![b'a'; SHORT_TOKEN + 1]),
            (long(b'a'), long(b'a')[..1023].to_vec()),
        ] {
            assert_eq!(a.key_of(&one), a.key_of(&one));
            assert_ne!(a.key_of(&one), a.key_of(&other));
            assert_ne!(a.key_of(&one), b.key_of(&one));
        }
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.short)));
    }

    #[test]
    fn a_long_token_differing_in_any_single_byte_gets_another_digest() {
        let hasher = TokenHasher::random();
        let token = vec![b'x'; 700];
        let digest = hasher.key_of(&token);
        for at in [0, 1, 15, 16, 17, 350, 683, 698, 699] {
            let mut other = token.clone();
            other[at] = b'y';
            assert_ne!(hasher.key_of(&other), digest, "byte {at}");
        }
    }
}
