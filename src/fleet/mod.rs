//! Fleet mode (feature `redis`): replicas of the guard share a second cache level on Redis (or
//! Valkey), make one AS call between them for a new token, and hear each other's revocations
//! within a second. docs/AUTHORIZATION.md §12 has the rules; README "Running a fleet" the setup.
//!
//! - Each replica keeps its own first level (moka, under its per-process key).
//! - On a first-level miss it reads the token's shared entry: a keyed digest of the token under
//!   the [`FleetKey`] names it, and its value is sealed (AES-256-GCM).
//! - With no entry, one replica takes the token's fleet lock (`SET NX PX`) and asks the AS; the
//!   others wait for the entry, never past their request deadline, and otherwise ask the AS
//!   themselves.
//! - [`SmartGuardLayer::invalidate`](crate::SmartGuardLayer::invalidate) marks a token revoked
//!   in the shared cache and publishes its digest; every replica forgets it on receipt.
//! - Redis failing never fails a request: its commands have a timeout and a breaker of their
//!   own, and a request then takes the AS path.

pub(crate) mod config;
pub(crate) mod key;
pub(crate) mod link;
pub(crate) mod seal;
pub(crate) mod store;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

pub use self::{
    config::FleetConfig,
    key::{FleetKey, MIN_FLEET_KEY_BYTES, SharedKey, ShortFleetKey},
};
use self::{
    link::{Link, Subscriber},
    store::Store,
};
use crate::stats::Stats;

/// One replica's part of the fleet: the shared cache's commands and the revocation link.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) store: Arc<Store>,
    pub(crate) link: Arc<Link>,
    started: OnceLock<()>,
}

impl Fleet {
    pub(crate) fn new(config: FleetConfig, stats: Arc<Stats>) -> Self {
        Self {
            store: Arc::new(Store::new(config, stats)),
            link: Arc::new(Link::default()),
            started: OnceLock::new(),
        }
    }

    /// Starts the revocation subscriber (and, for a cluster, the connection), once, from
    /// inside the runtime (on the first lookup: building the guard does no I/O).
    pub(crate) fn start(&self, stats: &Arc<Stats>) {
        self.started.get_or_init(|| {
            let config = self.store.config();
            let subscriber = Subscriber {
                urls: config.urls.clone(),
                channel: self.store.channel(),
                fingerprint: self.store.key().fingerprint(),
                timeout: config.timeout,
                stats: Arc::clone(stats),
                mismatch_log: crate::throttle::LogEvery::new(Duration::from_secs(60)),
            };
            tokio::spawn(subscriber.run(Arc::downgrade(&self.link)));
            tokio::spawn(Arc::clone(&self.store).connect());
        });
    }

    /// How long a waiting replica looks for the lock holder's entry, and the lock's lifetime:
    /// the holder's AS call ends within the AS timeout.
    pub(crate) fn lock_ttl(as_timeout: Duration) -> Duration {
        as_timeout.max(Duration::from_millis(100))
    }
}
