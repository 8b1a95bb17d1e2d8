//! The introspector's fleet path (feature `redis`; docs/AUTHORIZATION.md §12): the shared
//! cache between this process's caches and the AS, the fleet lock, and revocations.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    Introspector, Miss,
    response::{self, Answer, TokenInfo},
    token_key::TokenKey,
};
use crate::{
    fleet::{Fleet, SharedKey, link::Eviction, seal::Entry, store::Found},
    introspect::cache::cached_until_ms,
    stats::FleetEvent,
    time::{unix_now, unix_now_ms},
};

/// How a wait for another replica's answer ended.
enum Waited {
    Entry(Entry),
    /// The lock came free with no entry (the holder failed, or its lock expired): ours now.
    Holder,
    /// The deadline or the lock's lifetime passed, or Redis failed.
    GaveUp,
}

impl Introspector {
    /// Applies the evictions the revocation link queued (two relaxed loads when there are none).
    #[inline]
    pub(super) fn apply_evictions(&self) {
        let Some(fleet) = &self.fleet else { return };
        if !fleet.link.has_pending() {
            return;
        }
        for eviction in fleet.link.take() {
            // The front cannot tell one token's slot without the token: it is emptied.
            self.front.clear();
            match eviction {
                Eviction::All => {
                    self.active.invalidate_all();
                    if let Some(stale) = &self.stale {
                        stale.forget_all();
                    }
                }
                Eviction::Key(shared) => {
                    // Only fails when invalidation closures are off, which fleet mode turns on.
                    let _ = self
                        .active
                        .invalidate_entries_if(move |_, info| info.shared == Some(shared));
                    if let Some(stale) = &self.stale {
                        stale.forget_shared(shared);
                    }
                }
            }
        }
    }

    /// [`Introspector::call`] in fleet mode: the shared entry if there is one; else the fleet
    /// lock's holder asks the AS and writes the entry, and the others wait for it (never past
    /// `deadline`) or ask the AS themselves.
    pub(super) async fn call_through_fleet(
        &self,
        fleet: &Fleet,
        token: &str,
        key: TokenKey,
        deadline: Instant,
    ) -> Result<Arc<TokenInfo>, Miss> {
        fleet.start(&self.stats);
        let epoch = fleet.link.epoch();
        let shared = fleet.store.key().digest(token.as_bytes());
        let lock_ttl = Fleet::lock_ttl(self.as_timeout);
        let mut holder = false;
        // An unreadable value is replaced by the AS's answer.
        let mut replace = false;
        match fleet.store.get(&shared).await {
            Found::Entry(entry) => {
                if let Some(result) = self.from_entry(fleet, key, shared, entry, epoch).await {
                    return result;
                }
            }
            Found::Missing => match fleet.store.lock(&shared, lock_ttl).await {
                Some(true) => match Self::recheck_as_holder(fleet, &shared).await {
                    Some(entry) => {
                        if let Some(result) =
                            self.from_entry(fleet, key, shared, entry, epoch).await
                        {
                            return result;
                        }
                    }
                    None => holder = true,
                },
                Some(false) => {
                    self.stats.fleet(FleetEvent::LockWait);
                    match self
                        .wait_for_entry(fleet, &shared, deadline, lock_ttl)
                        .await
                    {
                        Waited::Entry(entry) => {
                            if let Some(result) =
                                self.from_entry(fleet, key, shared, entry, epoch).await
                            {
                                return result;
                            }
                        }
                        Waited::Holder => holder = true,
                        Waited::GaveUp => {}
                    }
                }
                None => {}
            },
            Found::Unreadable => replace = true,
            Found::Unavailable => {}
        }
        let result = self.ask_as(token, deadline).await;
        // The entry for the fleet (an unreadable one is replaced; any other left alone: it may
        // be a revocation's).
        match &result {
            Ok((Answer::Active(info), body)) => {
                let now_ms = unix_now_ms();
                let until_ms = cached_until_ms(info.exp, now_ms, self.max_ttl);
                let ttl = Duration::from_millis(until_ms.saturating_sub(now_ms));
                if !ttl.is_zero() {
                    let entry = Entry::Active {
                        answer: body.to_vec(),
                        until_ms,
                    };
                    fleet.store.put(&shared, &entry, ttl, !replace).await;
                }
            }
            Ok((
                Answer::Inactive {
                    cacheable: true, ..
                },
                _,
            )) => {
                let ttl = self.negative_ttl;
                fleet
                    .store
                    .put(&shared, &Entry::Inactive, ttl, !replace)
                    .await;
            }
            _ => {}
        }
        if holder {
            // The others find the entry, or (none written) stop waiting and take their turn.
            fleet.store.unlock(&shared).await;
        }
        let (answer, _body) = result?;
        self.settle_shared(fleet, key, shared, answer, None, epoch)
            .await
    }

    /// The answer a shared entry holds; `None` when an active one no longer reads as active
    /// (it is checked again like a fresh answer), so the AS is asked.
    async fn from_entry(
        &self,
        fleet: &Fleet,
        key: TokenKey,
        shared: SharedKey,
        entry: Entry,
        epoch: u64,
    ) -> Option<Result<Arc<TokenInfo>, Miss>> {
        let (answer, until_ms) = match entry {
            Entry::Active { answer, until_ms } => {
                let Ok(answer) = response::parse_answer(&answer, &self.checks, unix_now()) else {
                    return None;
                };
                (answer, Some(until_ms))
            }
            Entry::Inactive => (
                Answer::Inactive {
                    cacheable: true,
                    reason: "inactive (shared cache)",
                },
                None,
            ),
            Entry::Revoked => (
                Answer::Inactive {
                    cacheable: true,
                    reason: "revoked",
                },
                None,
            ),
        };
        Some(
            self.settle_shared(fleet, key, shared, answer, until_ms, epoch)
                .await,
        )
    }

    /// [`Introspector::settle`] with the fleet's limits on how long an active answer stays in
    /// this process: no longer than the shared entry (`until_ms`), no longer than the negative
    /// TTL while revocations cannot be heard, and not at all when an eviction arrived while it
    /// was fetched (it may predate a revocation).
    async fn settle_shared(
        &self,
        fleet: &Fleet,
        key: TokenKey,
        shared: SharedKey,
        answer: Answer,
        until_ms: Option<u64>,
        epoch: u64,
    ) -> Result<Arc<TokenInfo>, Miss> {
        let negative_ms = u64::try_from(self.negative_ttl.as_millis()).unwrap_or(u64::MAX);
        self.settle(key, answer, |info| {
            let now_ms = unix_now_ms();
            if let Some(until_ms) = until_ms {
                info.cached_until_ms = info.cached_until_ms.min(until_ms);
            }
            if !fleet.link.is_up() {
                info.cached_until_ms = info.cached_until_ms.min(now_ms.saturating_add(negative_ms));
            }
            if fleet.link.epoch() != epoch {
                info.cached_until_ms = now_ms;
            }
            info.shared = Some(shared);
        })
        .await
    }

    /// Waits for the lock holder's entry: polls Redis, backing off from 2 to 25 ms, until the
    /// entry appears, the lock comes free, or `min(now + lock_ttl, deadline)`.
    async fn wait_for_entry(
        &self,
        fleet: &Fleet,
        shared: &SharedKey,
        deadline: Instant,
        lock_ttl: Duration,
    ) -> Waited {
        let until = deadline.min(Instant::now() + lock_ttl);
        let mut pause = Duration::from_millis(2);
        loop {
            if Instant::now() + pause >= until {
                return Waited::GaveUp;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            match fleet.store.get(shared).await {
                Found::Entry(entry) => return Waited::Entry(entry),
                Found::Unavailable | Found::Unreadable => return Waited::GaveUp,
                Found::Missing => match fleet.store.lock(shared, lock_ttl).await {
                    Some(true) => {
                        return match Self::recheck_as_holder(fleet, shared).await {
                            Some(entry) => Waited::Entry(entry),
                            None => Waited::Holder,
                        };
                    }
                    Some(false) => {}
                    None => return Waited::GaveUp,
                },
            }
        }
    }

    /// Just after taking the lock: the entry, if the previous holder wrote it between our read
    /// and our lock (then the lock is released again); `None`: ours to fetch.
    async fn recheck_as_holder(fleet: &Fleet, shared: &SharedKey) -> Option<Entry> {
        match fleet.store.get(shared).await {
            Found::Entry(entry) => {
                fleet.store.unlock(shared).await;
                Some(entry)
            }
            Found::Missing | Found::Unreadable | Found::Unavailable => None,
        }
    }

    /// Forgets the token named `shared` here, marks it revoked in the shared cache for the
    /// longest any replica may cache an answer, and tells every replica. Returns whether the
    /// fleet was told.
    pub(crate) async fn invalidate_shared(&self, shared: SharedKey) -> bool {
        let Some(fleet) = &self.fleet else {
            return true;
        };
        fleet.link.queue(Eviction::Key(shared));
        self.apply_evictions();
        self.revoke_shared(fleet, shared).await
    }

    pub(super) async fn revoke_shared(&self, fleet: &Fleet, shared: SharedKey) -> bool {
        fleet.start(&self.stats);
        let told = fleet
            .store
            .revoke(&shared, self.max_ttl.max(Duration::from_secs(1)))
            .await;
        if told {
            self.stats.fleet(FleetEvent::RevocationSent);
        } else {
            tracing::warn!(
                "revocation not sent to the fleet (Redis unavailable): only this replica forgot the token"
            );
        }
        told
    }
}
