//! Opt-in stale-if-error: the last active answer for a token, kept for a window past its normal
//! cache deadline, served only while the AS is out (transport error, timeout, 5xx, breaker open,
//! in-flight cap, request deadline) and never past the token's `exp`.
//!
//! A separate moka cache keyed like the active one: an entry is written when an active answer is
//! cached, removed when the AS later calls the token inactive, and ends at
//! min(`cached_until_ms` + window, `exp`).

use std::{sync::Arc, time::Duration, time::Instant};

use moka::{Expiry, future::Cache};

use super::{
    response::TokenInfo,
    token_key::{TokenKey, TokenKeyHash},
};
use crate::time::unix_now_ms;

/// Recently active answers, for serving during an AS outage.
pub(crate) struct StaleCache {
    entries: Cache<TokenKey, Arc<TokenInfo>, TokenKeyHash>,
    window_ms: u64,
}

impl std::fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleCache")
            .field("window_ms", &self.window_ms)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// Until when (unix ms) an answer may be served stale: `window` past its cache deadline, and
/// never at or past `exp`.
pub(crate) fn stale_until_ms(info: &TokenInfo, window_ms: u64) -> u64 {
    let by_window = info.cached_until_ms.saturating_add(window_ms);
    info.exp
        .map_or(by_window, |exp| by_window.min(exp.saturating_mul(1000)))
}

struct StaleTtl {
    window_ms: u64,
}

impl StaleTtl {
    fn ttl(&self, info: &TokenInfo) -> Option<Duration> {
        Some(Duration::from_millis(
            stale_until_ms(info, self.window_ms).saturating_sub(unix_now_ms()),
        ))
    }
}

impl Expiry<TokenKey, Arc<TokenInfo>> for StaleTtl {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        info: &Arc<TokenInfo>,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.ttl(info)
    }

    /// A fresh answer for a token already here starts a new window (moka's default would keep
    /// the old entry's deadline, so a token refreshed every TTL would lose its stale answer one
    /// window after it was first cached).
    fn expire_after_update(
        &self,
        _key: &TokenKey,
        info: &Arc<TokenInfo>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(info)
    }
}

impl StaleCache {
    pub(crate) fn new(capacity: u64, window: Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let builder = Cache::builder()
            .max_capacity(capacity)
            .expire_after(StaleTtl { window_ms });
        // A fleet revocation forgets the entries of one shared key.
        #[cfg(feature = "redis")]
        let builder = builder.support_invalidation_closures();
        Self {
            entries: builder.build_with_hasher(TokenKeyHash::default()),
            window_ms,
        }
    }

    /// Forgets every entry (fleet mode: the revocation link went down or came back).
    #[cfg(feature = "redis")]
    pub(crate) fn forget_all(&self) {
        self.entries.invalidate_all();
    }

    /// Forgets the entries of the tokens named `keys` in the fleet (revocations).
    #[cfg(feature = "redis")]
    pub(crate) fn forget_shared(&self, keys: std::sync::Arc<[crate::fleet::key::SharedKey]>) {
        // Only fails when invalidation closures are off, which `new` turns on.
        let _ = self.entries.invalidate_entries_if(move |_, info| {
            info.shared.is_some_and(|shared| keys.contains(&shared))
        });
    }

    /// Remembers an active answer just cached.
    pub(crate) async fn put(&self, key: TokenKey, info: Arc<TokenInfo>) {
        self.entries.insert(key, info).await;
    }

    /// The last active answer for `key`, if it may still be served at `now_ms`.
    pub(crate) async fn get(&self, key: &TokenKey, now_ms: u64) -> Option<Arc<TokenInfo>> {
        let info = self.entries.get(key).await?;
        (now_ms < stale_until_ms(&info, self.window_ms)).then_some(info)
    }

    /// Forgets `key`: the AS called the token inactive, or it expired.
    pub(crate) async fn remove(&self, key: &TokenKey) {
        self.entries.invalidate(key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(cached_until_ms: u64, exp: Option<u64>) -> TokenInfo {
        TokenInfo {
            cached_until_ms,
            exp,
            ..TokenInfo::default()
        }
    }

    #[test]
    fn stale_ends_at_the_window_or_exp_whichever_is_sooner() {
        for (cached_until_ms, exp, window_ms, want) in [
            (10_000, Some(100), 5_000, 15_000),    // the window is sooner
            (10_000, Some(12), 5_000, 12_000),     // exp is sooner: never past exp
            (10_000, Some(10), 5_000, 10_000),     // exp at the cache deadline: no stale at all
            (10_000, None, 5_000, 15_000),         // no exp (REQUIRE_EXP=false): the window
            (u64::MAX - 1, None, 5_000, u64::MAX), // saturates
        ] {
            assert_eq!(
                stale_until_ms(&info(cached_until_ms, exp), window_ms),
                want,
                "{cached_until_ms} {exp:?} {window_ms}"
            );
        }
    }

    #[tokio::test]
    async fn an_entry_is_served_within_its_window_and_forgotten_on_remove() {
        let now = unix_now_ms();
        let cache = StaleCache::new(10, Duration::from_secs(30));
        let key = TokenKey::from_bytes([3u8; 32]);
        cache
            .put(key, Arc::new(info(now, Some(now / 1000 + 60))))
            .await;
        assert!(cache.get(&key, now + 1_000).await.is_some());
        assert!(cache.get(&key, now + 31_000).await.is_none(), "window over");
        cache.remove(&key).await;
        assert!(cache.get(&key, now + 1_000).await.is_none());
    }

    #[tokio::test]
    async fn a_fresh_answer_starts_a_new_window() {
        let now = unix_now_ms();
        let cache = StaleCache::new(10, Duration::from_millis(300));
        let key = TokenKey::from_bytes([4u8; 32]);
        let exp = Some(now / 1000 + 60);
        cache.put(key, Arc::new(info(now, exp))).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Refreshed: cached again until now + 200 ms, so stale until now + 500 ms.
        cache.put(key, Arc::new(info(now + 200, exp))).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let later = unix_now_ms();
        assert!(
            cache.get(&key, later).await.is_some(),
            "the first window is over, the second is not"
        );
    }
}
