//! [`Link`]: this replica's subscription to the fleet's revocations, kept up by a background
//! task, and the evictions it leaves for the first level to apply.
//!
//! The task holds only a `Weak` reference: it ends when the guard is dropped. While the link is
//! down, the replica cannot hear revocations, so its first level keeps active answers no longer
//! than the negative TTL; when the link goes down or comes back, the first level is emptied
//! (revocations may have been missed in between).

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;

use super::key::SharedKey;
use crate::{
    error::error_chain,
    stats::{FleetEvent, Stats},
    throttle::LogEvery,
};

/// What the first level must forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// One token, revoked.
    Key(SharedKey),
    /// Everything: the link went down or came back.
    All,
}

/// The subscription's state, shared by the task and the introspector.
#[derive(Debug, Default)]
pub(crate) struct Link {
    up: AtomicBool,
    /// The epoch: bumped with each eviction queued. `applied` catches up when they are taken.
    queued: AtomicU64,
    applied: AtomicU64,
    /// The last evictions with the epoch each made: what [`Link::take`] hands out, and what a
    /// fill that ran across them checks ([`Link::evicted_since`]).
    log: Mutex<Log>,
}

/// The last [`KEPT`] evictions, oldest first.
#[derive(Debug, Default)]
struct Log {
    list: std::collections::VecDeque<(u64, Eviction)>,
    /// The epoch of the newest eviction that fell off the list.
    dropped: u64,
}

/// Evictions kept; past them, forgetting everything is cheaper than forgetting each.
const KEPT: usize = 256;

impl Log {
    /// The evictions after `epoch`, or `All` alone when some of them fell off the list.
    fn since(&self, epoch: u64) -> Vec<Eviction> {
        if epoch < self.dropped {
            return vec![Eviction::All];
        }
        self.list
            .iter()
            .filter(|(e, _)| *e > epoch)
            .map(|(_, eviction)| *eviction)
            .collect()
    }
}

impl Link {
    /// Whether revocations are heard now.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A counter that moves with every eviction queued: a fill that saw it move while it ran
    /// may hold an answer older than a revocation.
    pub(crate) fn epoch(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether evictions wait: two relaxed loads, for the hit path.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.queued.load(Ordering::Relaxed) != self.applied.load(Ordering::Relaxed)
    }

    pub(crate) fn queue(&self, eviction: Eviction) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock, so the list is in epoch order.
        let epoch = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if log.list.len() >= KEPT
            && let Some((dropped, _)) = log.list.pop_front()
        {
            log.dropped = dropped;
        }
        log.list.push_back((epoch, eviction));
    }

    /// Whether an eviction queued after `epoch` covers `shared` (or may have: the log only
    /// keeps the last few hundred). For a fill that ran while evictions arrived: what it put in
    /// the caches may predate a revocation.
    pub(crate) fn evicted_since(&self, epoch: u64, shared: Option<SharedKey>) -> bool {
        if self.epoch() == epoch {
            return false;
        }
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.since(epoch).into_iter().any(|eviction| match eviction {
            Eviction::All => true,
            Eviction::Key(key) => Some(key) == shared,
        })
    }

    /// The evictions queued since the last call.
    pub(crate) fn take(&self) -> Vec<Eviction> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let from = self
            .applied
            .swap(self.queued.load(Ordering::Acquire), Ordering::AcqRel);
        log.since(from)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.queue(Eviction::All);
        }
    }
}

/// How the subscriber finds Redis: the URLs to try in turn (for a cluster, any node hears every
/// PUBLISH), the channel, and the timeout of a ping.
pub(crate) struct Subscriber {
    pub(crate) urls: Vec<redis::ConnectionInfo>,
    pub(crate) channel: String,
    /// This replica's fleet-key fingerprint: messages carry the sender's.
    pub(crate) fingerprint: [u8; 8],
    pub(crate) timeout: Duration,
    pub(crate) stats: Arc<Stats>,
    /// A revocation from another fleet key is logged at most once a minute.
    pub(crate) mismatch_log: LogEvery,
}

/// How often the subscriber pings Redis (a dead link is noticed within about this, plus the
/// ping's timeout), and the longest pause between reconnection attempts.
const PING_EVERY: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Subscriber {
    /// Keeps the subscription up until `link` is dropped.
    pub(crate) async fn run(self, link: Weak<Link>) {
        let mut backoff = Duration::from_millis(50);
        let mut next = 0usize;
        loop {
            let info = self.urls[next % self.urls.len()].clone();
            next = next.wrapping_add(1);
            match self.listen(info, &link).await {
                Listened::Dropped => return,
                Listened::Lost(why, was_up) => {
                    if was_up {
                        backoff = Duration::from_millis(50);
                    }
                    let Some(live) = link.upgrade() else { return };
                    if live.is_up() {
                        tracing::warn!(
                            error = %why,
                            "revocation subscription lost: first-level cache emptied, active answers kept no longer than the negative TTL until it is back"
                        );
                    } else {
                        tracing::debug!(error = %why, "revocation subscription still down");
                    }
                    live.set_up(false);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if link.strong_count() == 0 {
                return;
            }
        }
    }

    async fn listen(&self, info: redis::ConnectionInfo, link: &Weak<Link>) -> Listened {
        let connect = async {
            let client = redis::Client::open(info)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub =
            match tokio::time::timeout(self.timeout.max(Duration::from_millis(500)), connect).await
            {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(error)) => return Listened::Lost(error_chain(&error), false),
                Err(_) => return Listened::Lost("no answer while subscribing".to_owned(), false),
            };
        let Some(live) = link.upgrade() else {
            return Listened::Dropped;
        };
        if !live.is_up() {
            tracing::info!(
                "revocation subscription up: first-level cache emptied (revocations may have been missed)"
            );
        }
        live.set_up(true);
        drop(live);
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Listened::Lost("the connection closed".to_owned(), true);
                    };
                    let Some(live) = link.upgrade() else { return Listened::Dropped };
                    let payload = message.get_payload_bytes();
                    let key = payload
                        .split_at_checked(8)
                        .filter(|(fingerprint, _)| *fingerprint == self.fingerprint)
                        .and_then(|(_, key)| <[u8; 32]>::try_from(key).ok());
                    match key {
                        Some(bytes) => {
                            self.stats.fleet(FleetEvent::RevocationReceived);
                            live.queue(Eviction::Key(SharedKey::from_bytes(bytes)));
                        }
                        // Another fleet key (a replica misconfigured, a rotation half done) or
                        // not ours to read: forget everything rather than miss a revocation.
                        None => {
                            if self.mismatch_log.due() {
                                tracing::warn!(
                                    "a revocation came from a replica with another SMART_GUARD_FLEET_KEY_FILE (or is unreadable): first-level cache emptied; check the fleet key on every replica (logged once a minute)"
                                );
                            }
                            live.queue(Eviction::All);
                        }
                    }
                }
                _ = ping.tick() => {
                    if link.strong_count() == 0 {
                        return Listened::Dropped;
                    }
                    let pinged = tokio::time::timeout(
                        (self.timeout * 2).max(Duration::from_millis(200)),
                        sink.ping::<redis::Value>(),
                    ).await;
                    match pinged {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Listened::Lost(error_chain(&error), true),
                        Err(_) => return Listened::Lost("no answer to a ping".to_owned(), true),
                    }
                }
            }
        }
    }
}

enum Listened {
    /// The guard was dropped: the task ends.
    Dropped,
    /// The link went down, for this reason; whether it had been up.
    Lost(String, bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_taken_once_and_many_become_all() {
        let link = Link::default();
        assert!(!link.has_pending());
        let key = SharedKey::from_bytes([1; 32]);
        link.queue(Eviction::Key(key));
        assert!(link.has_pending());
        assert_eq!(link.take(), [Eviction::Key(key)]);
        assert!(!link.has_pending());
        for _ in 0..300 {
            link.queue(Eviction::Key(key));
        }
        let taken = link.take();
        assert!(
            taken.contains(&Eviction::All) && taken.len() < 100,
            "{}",
            taken.len()
        );
    }

    #[test]
    fn going_down_or_up_empties_the_first_level() {
        let link = Link::default();
        link.set_up(true);
        assert_eq!(link.take(), [Eviction::All]);
        link.set_up(true);
        assert!(!link.has_pending(), "no change, nothing to forget");
        link.set_up(false);
        assert_eq!(link.take(), [Eviction::All]);
        assert!(!link.is_up());
    }
}
