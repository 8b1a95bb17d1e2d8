//! Cache keys and lifetimes (SMART-NOTES §2.6): a keyed digest of the token, never the token;
//! TTL = min(exp - now, max TTL).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use moka::Expiry;

use crate::introspect::response::TokenInfo;

/// A keyed BLAKE3 digest (256 bits) of a token, with a per-process random key: a heap dump
/// yields no live token, and no 64-bit collision can serve someone else's claims.
pub(crate) type TokenKey = [u8; 32];

/// Digests tokens with a random key drawn once per [`TokenHasher`].
#[derive(Clone)]
pub(crate) struct TokenHasher {
    key: [u8; 32],
}

impl TokenHasher {
    pub(crate) fn random() -> Self {
        Self {
            key: rand::random(),
        }
    }

    pub(crate) fn key_of(&self, token: &[u8]) -> TokenKey {
        *blake3::keyed_hash(&self.key, token).as_bytes()
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

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        assert_eq!(a.key_of(b"token"), a.key_of(b"token"));
        assert_ne!(a.key_of(b"token"), a.key_of(b"token2"));
        assert_ne!(a.key_of(b"token"), b.key_of(b"token"));
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.key)));
    }
}
