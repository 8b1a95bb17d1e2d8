//! Cache lifetimes (docs/AUTHORIZATION.md §2.4): TTL = min(exp - now, max TTL). The keys are
//! [`TokenKey`]s.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::Expiry;

use super::{response::TokenInfo, token_key::TokenKey};
use crate::time::unix_now_ms;

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
/// never longer than `cap` (docs/AUTHORIZATION.md §2.4: TTL = min(exp - now, max TTL)).
pub(crate) fn cached_until_ms(exp: Option<u64>, now_ms: u64, cap: Duration) -> u64 {
    let by_cap = now_ms.saturating_add(u64::try_from(cap.as_millis()).unwrap_or(u64::MAX));
    exp.map_or(by_cap, |exp| by_cap.min(exp.saturating_mul(1000)))
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
}
