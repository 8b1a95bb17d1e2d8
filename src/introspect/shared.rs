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
    /// Half the time to the deadline or the lock's lifetime passed, or Redis failed.
    GaveUp,
}

/// What to do with the shared entry once the AS has answered.
enum Write {
    /// Write it unless an entry is there (a revocation's, say).
    IfAbsent,
    /// Replace this unreadable value, and only it.
    Replace(Vec<u8>),
}

impl Introspector {
    /// Applies the evictions the revocation link queued (two relaxed loads when there are none).
    #[inline]
    pub(super) fn apply_evictions(&self) {
        let Some(fleet) = &self.fleet else { return };
        if !fleet.link.has_pending() {
            return;
        }
        let evictions = fleet.link.take();
        // The front cannot tell one token's slot without the token: it is emptied, once.
        self.front.clear();
        if evictions.contains(&Eviction::All) {
            self.active.invalidate_all();
            if let Some(stale) = &self.stale {
                stale.forget_all();
            }
            return;
        }
        let keys: Vec<SharedKey> = evictions
            .into_iter()
            .filter_map(|eviction| match eviction {
                Eviction::Key(key) => Some(key),
                Eviction::All => None,
            })
            .collect();
        let keys: Arc<[SharedKey]> = keys.into();
        let revoked = Arc::clone(&keys);
        // One predicate for the batch. Only fails when invalidation closures are off, which
        // fleet mode turns on.
        let _ = self.active.invalidate_entries_if(move |_, info| {
            info.shared.is_some_and(|shared| revoked.contains(&shared))
        });
        if let Some(stale) = &self.stale {
            stale.forget_shared(keys);
        }
    }

    /// The link's epoch now (0 without a fleet): [`Introspector::forget_if_evicted`] tells from
    /// it whether a revocation arrived while a lookup ran.
    #[inline]
    pub(super) fn fleet_epoch(&self) -> u64 {
        self.fleet.as_ref().map_or(0, |fleet| fleet.link.epoch())
    }

    /// After a lookup that started at `epoch` put `info` in this process's caches: if an
    /// eviction arrived meanwhile that covers it, take it out again (moka's invalidation only
    /// reaches entries inserted before it). The answer still serves the request that fetched it.
    pub(super) async fn forget_if_evicted(&self, epoch: u64, key: &TokenKey, info: &TokenInfo) {
        let Some(fleet) = &self.fleet else { return };
        if fleet.link.evicted_since(epoch, info.shared) {
            self.front.remove(key);
            self.active.invalidate(key).await;
            if let Some(stale) = &self.stale {
                stale.remove(key).await;
            }
        }
    }

    /// [`Introspector::call`] in fleet mode: the shared entry if there is one; else the fleet
    /// lock's holder asks the AS and writes the entry, and the others wait for it (never past
    /// half the time left to `deadline`) or ask the AS themselves.
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
        let mut write = Write::IfAbsent;
        match fleet.store.get(&shared).await {
            Found::Entry(entry) => {
                if let Some(result) = self.answer_in(fleet, key, shared, entry, epoch).await {
                    return result;
                }
            }
            Found::Missing => match fleet.store.lock(&shared, lock_ttl).await {
                Some(true) => match Self::recheck_as_holder(fleet, &shared).await {
                    Some(entry) => {
                        if let Some(result) = self.answer_in(fleet, key, shared, entry, epoch).await
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
                                self.answer_in(fleet, key, shared, entry, epoch).await
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
            Found::Unreadable(old) => write = Write::Replace(old),
            Found::Unavailable => {}
        }
        let result = self.ask_as(token, deadline).await;
        self.share(fleet, shared, &result, write, holder);
        let (answer, _body) = result?;
        self.settle_shared(fleet, key, shared, answer, None, epoch)
            .await
    }

    /// Writes the AS's answer for the fleet and releases the lock, in the background: the
    /// request does not wait for Redis once it has its answer. Errors and uncacheable answers
    /// are not written.
    fn share(
        &self,
        fleet: &Fleet,
        shared: SharedKey,
        result: &Result<(Answer, bytes::Bytes), Miss>,
        write: Write,
        holder: bool,
    ) {
        let now_ms = unix_now_ms();
        let entry = match result {
            Ok((Answer::Active(info), body)) => {
                let until_ms = cached_until_ms(info.exp, now_ms, self.max_ttl);
                let ttl = Duration::from_millis(until_ms.saturating_sub(now_ms));
                (!ttl.is_zero()).then(|| {
                    let entry = Entry::Active {
                        answer: body.to_vec(),
                        until_ms,
                    };
                    (entry, ttl)
                })
            }
            Ok((
                Answer::Inactive {
                    cacheable: true, ..
                },
                _,
            )) => Some((Entry::Inactive, self.negative_ttl)),
            _ => None,
        };
        if entry.is_none() && !holder {
            return;
        }
        let store = Arc::clone(&fleet.store);
        tokio::spawn(async move {
            if let Some((entry, ttl)) = entry {
                match write {
                    Write::IfAbsent => {
                        store.put(&shared, &entry, ttl, true).await;
                    }
                    Write::Replace(old) => {
                        store.replace_unreadable(&shared, &old, &entry, ttl).await;
                    }
                }
            }
            if holder {
                // The others find the entry, or (none written) stop waiting and take a turn.
                store.unlock(&shared).await;
            }
        });
    }

    /// The answer a shared entry holds; `None` when an active one no longer reads as active
    /// (it is checked again like a fresh answer), so the AS is asked.
    async fn answer_in(
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
            if fleet.link.evicted_since(epoch, Some(shared)) {
                info.cached_until_ms = now_ms;
            }
            info.shared = Some(shared);
        })
        .await
    }

    /// Waits for the lock holder's entry: polls Redis, backing off from 2 to 25 ms, until the
    /// entry appears, the lock comes free, or the lock's lifetime passes, and never past half
    /// the time left to `deadline` (the other half is for asking the AS itself).
    async fn wait_for_entry(
        &self,
        fleet: &Fleet,
        shared: &SharedKey,
        deadline: Instant,
        lock_ttl: Duration,
    ) -> Waited {
        let now = Instant::now();
        let until = (now + deadline.saturating_duration_since(now) / 2).min(now + lock_ttl);
        let mut pause = Duration::from_millis(2);
        loop {
            if Instant::now() + pause >= until {
                return Waited::GaveUp;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            match fleet.store.get(shared).await {
                Found::Entry(entry) => return Waited::Entry(entry),
                Found::Unavailable | Found::Unreadable(_) => return Waited::GaveUp,
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
            Found::Missing | Found::Unreadable(_) | Found::Unavailable => None,
        }
    }

    /// The token's name in the shared cache, in fleet mode.
    pub(super) fn shared_key(&self, token: &str) -> Option<SharedKey> {
        self.fleet
            .as_ref()
            .map(|fleet| fleet.store.key().digest(token.as_bytes()))
    }

    /// Forgets the token named `shared` here, marks it revoked in the shared cache for the
    /// longest any replica may cache an answer, and tells every replica. Returns whether the
    /// fleet was told.
    pub(crate) async fn invalidate_shared(&self, shared: SharedKey) -> bool {
        let Some(fleet) = &self.fleet else {
            return true;
        };
        // Queued here too: a fill of this process already under way is caught by it.
        fleet.link.queue(Eviction::Key(shared));
        self.apply_evictions();
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
