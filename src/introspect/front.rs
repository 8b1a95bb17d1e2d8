//! A thin, direct-mapped front for the moka cache on the hit path.
//!
//! moka stays the cache of record (capacity, per-entry expiry, coalescing of misses). A moka read
//! costs a hash, an epoch pin, an expiry check and a read-log entry (~280 ns here, see
//! BENCHMARKS.md); a slot read here is one uncontended read lock, a 32-byte compare and an `Arc`
//! clone. An entry lives here no longer than in moka: both end at `TokenInfo::cached_until_ms`,
//! fixed when the answer arrived. A collision just replaces the slot; a miss falls through to moka.

use std::sync::{Arc, PoisonError, RwLock};

use super::{response::TokenInfo, token_key::TokenKey};

struct Slot {
    key: TokenKey,
    info: Arc<TokenInfo>,
}

pub(crate) struct FrontCache {
    slots: Box<[RwLock<Option<Slot>>]>,
    mask: usize,
}

impl std::fmt::Debug for FrontCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontCache")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl FrontCache {
    /// A front with `slots` rounded up to a power of two (at least 1).
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.max(1).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| RwLock::new(None)).collect(),
            mask: slots - 1,
        }
    }

    fn slot(&self, key: &TokenKey) -> &RwLock<Option<Slot>> {
        &self.slots[key.front_slot(self.mask)]
    }

    /// The entry for `key`, if present and not past its cache deadline.
    #[inline]
    pub(crate) fn get(&self, key: &TokenKey, now_ms: u64) -> Option<Arc<TokenInfo>> {
        let slot = self
            .slot(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(s) if s.key == *key && s.info.cached_until_ms > now_ms => {
                Some(Arc::clone(&s.info))
            }
            _ => None,
        }
    }

    pub(crate) fn put(&self, key: TokenKey, info: Arc<TokenInfo>) {
        let mut slot = self
            .slot(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Slot { key, info });
    }

    /// Empties every slot (fleet mode: a revocation, whose token the front cannot tell apart).
    #[cfg(feature = "redis")]
    pub(crate) fn clear(&self) {
        for slot in &*self.slots {
            *slot.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    pub(crate) fn remove(&self, key: &TokenKey) {
        let mut slot = self
            .slot(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|s| s.key == *key) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(until: u64) -> Arc<TokenInfo> {
        Arc::new(TokenInfo {
            cached_until_ms: until,
            ..TokenInfo::default()
        })
    }

    #[test]
    fn an_entry_is_served_until_its_deadline_only() {
        let front = FrontCache::new(8);
        let key = TokenKey::from_bytes([1u8; 32]);
        front.put(key, info(1_000));
        assert!(front.get(&key, 999).is_some());
        assert!(front.get(&key, 1_000).is_none());
    }

    #[test]
    fn a_colliding_key_replaces_the_slot_and_never_matches_the_other() {
        let front = FrontCache::new(1);
        let (a, b) = (
            TokenKey::from_bytes([1u8; 32]),
            TokenKey::from_bytes([2u8; 32]),
        );
        front.put(a, info(u64::MAX));
        assert!(front.get(&b, 0).is_none(), "same slot, different key");
        front.put(b, info(u64::MAX));
        assert!(front.get(&a, 0).is_none());
        assert!(front.get(&b, 0).is_some());
        front.remove(&a);
        assert!(
            front.get(&b, 0).is_some(),
            "removing another key leaves the slot"
        );
        front.remove(&b);
        assert!(front.get(&b, 0).is_none());
    }
}
