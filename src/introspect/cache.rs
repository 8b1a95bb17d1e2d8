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

    pub(crate) fn key_of(&self, token: &str) -> TokenKey {
        *blake3::keyed_hash(&self.key, token.as_bytes()).as_bytes()
    }
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher(<redacted>)")
    }
}

/// The per-entry lifetime of active answers, computed once when the entry is created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveTtl {
    pub(crate) max_ttl: Duration,
}

impl Expiry<TokenKey, Arc<TokenInfo>> for ActiveTtl {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        info: &Arc<TokenInfo>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(ttl_for(info.exp, unix_now(), self.max_ttl))
    }
}

/// How long an active answer may be cached: until `exp`, and never longer than `cap`.
pub(crate) fn ttl_for(exp: Option<u64>, now: u64, cap: Duration) -> Duration {
    exp.map_or(cap, |exp| {
        cap.min(Duration::from_secs(exp.saturating_sub(now)))
    })
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_the_smaller_of_the_cap_and_the_time_left() {
        let cap = Duration::from_secs(60);
        for (exp, now, want) in [
            (Some(1_000), 900, 60),
            (Some(1_000), 970, 30),
            (Some(1_000), 1_000, 0),
            (Some(1_000), 2_000, 0),
            (None, 1_000, 60),
        ] {
            assert_eq!(
                ttl_for(exp, now, cap),
                Duration::from_secs(want),
                "{exp:?} {now}"
            );
        }
    }

    #[test]
    fn digests_are_keyed_per_hasher_and_stable_within_one() {
        let a = TokenHasher::random();
        let b = TokenHasher::random();
        assert_eq!(a.key_of("token"), a.key_of("token"));
        assert_ne!(a.key_of("token"), a.key_of("token2"));
        assert_ne!(a.key_of("token"), b.key_of("token"));
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.key)));
    }
}
