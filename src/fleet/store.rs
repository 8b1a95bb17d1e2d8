//! [`Store`]: the shared cache's commands on Redis (one server or a cluster), each bounded by
//! the fleet's timeout and guarded by a breaker of its own. A failure is never an error for a
//! request: it is [`Found::Unavailable`] (or `false`), and the request takes the AS path.
//!
//! Keys: `{prefix}t:{digest}` for a token's sealed entry, `{prefix}l:{digest}` for its fleet
//! lock; revocations go out on the channel `{prefix}revoked`.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use redis::{
    Cmd, FromRedisValue,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use super::{
    config::FleetConfig,
    key::{FleetKey, SharedKey},
    seal::{self, Entry},
};
use crate::{
    error::error_chain,
    introspect::breaker::{Breaker, Transition},
    stats::{FleetEvent, Stats},
    throttle::{LogEvery, OUTAGE_LOG_INTERVAL, Tally},
    time::unix_now_ms,
};

/// Consecutive Redis failures that open its breaker, and how long it then stays open.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

/// How often a value that does not open is logged.
const TAMPERED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What the shared cache holds for a token.
#[derive(Debug)]
pub(crate) enum Found {
    Entry(Entry),
    Missing,
    /// A value that does not open (changed, or sealed under another fleet key): its bytes, so
    /// that only this value is replaced.
    Unreadable(Vec<u8>),
    /// Redis failed, timed out, or its breaker is open.
    Unavailable,
}

/// A connection handle: both kinds are cheap clones of one multiplexed connection.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The shared cache's commands.
pub(crate) struct Store {
    config: FleetConfig,
    conn: OnceLock<Conn>,
    breaker: Breaker,
    stats: Arc<Stats>,
    failures: Tally,
    tampered_log: LogEvery,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(config: FleetConfig, stats: Arc<Stats>) -> Self {
        Self {
            config,
            conn: OnceLock::new(),
            breaker: Breaker::new(BREAKER_FAILURES, BREAKER_COOLDOWN),
            stats,
            failures: Tally::new(OUTAGE_LOG_INTERVAL),
            tampered_log: LogEvery::new(TAMPERED_LOG_INTERVAL),
        }
    }

    pub(crate) fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub(crate) fn key(&self) -> &FleetKey {
        &self.config.key
    }

    /// The channel revocations go out on.
    pub(crate) fn channel(&self) -> String {
        format!("{}revoked", self.config.prefix)
    }

    fn entry_key(&self, key: &SharedKey) -> String {
        format!("{}t:{}", self.config.prefix, key.to_hex())
    }

    fn lock_key(&self, key: &SharedKey) -> String {
        format!("{}l:{}", self.config.prefix, key.to_hex())
    }

    /// The token's shared entry. A value that does not open is never used (counted, logged at
    /// most once a minute).
    pub(crate) async fn get(&self, key: &SharedKey) -> Found {
        let value: Option<Vec<u8>> =
            match self.query(redis::cmd("GET").arg(self.entry_key(key))).await {
                Some(value) => value,
                None => return Found::Unavailable,
            };
        let Some(value) = value else {
            self.stats.fleet(FleetEvent::SharedMiss);
            return Found::Missing;
        };
        match seal::open(self.key(), &self.config.prefix, key, &value) {
            Some(entry) => {
                self.stats.fleet(FleetEvent::SharedHit);
                Found::Entry(entry)
            }
            None => {
                self.stats.fleet(FleetEvent::Tampered);
                if self.tampered_log.due() {
                    tracing::warn!(
                        "a shared cache value did not open (changed, or sealed under another SMART_GUARD_FLEET_KEY_FILE): not used, the AS is asked (logged once a minute)"
                    );
                }
                Found::Unreadable(value)
            }
        }
    }

    /// Writes the token's entry for `ttl`; `only_if_absent` leaves an entry already there (a
    /// revocation's, say) alone. Returns whether Redis took the command.
    pub(crate) async fn put(
        &self,
        key: &SharedKey,
        entry: &Entry,
        ttl: Duration,
        only_if_absent: bool,
    ) -> bool {
        let Ok(value) = seal::seal(self.key(), &self.config.prefix, key, entry) else {
            return false;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.entry_key(key)).arg(value).arg("PX").arg(ms);
        if only_if_absent {
            cmd.arg("NX");
        }
        self.query::<redis::Value>(&cmd).await.is_some()
    }

    /// Replaces the unreadable value `old` with `entry` for `ttl`, only if `old` is still there
    /// (so a revocation written since is never overwritten).
    pub(crate) async fn replace_unreadable(
        &self,
        key: &SharedKey,
        old: &[u8],
        entry: &Entry,
        ttl: Duration,
    ) -> bool {
        const REPLACE_IF_EQUAL: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
            return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else return 0 end";
        let Ok(value) = seal::seal(self.key(), &self.config.prefix, key, entry) else {
            return false;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REPLACE_IF_EQUAL)
            .arg(1)
            .arg(self.entry_key(key))
            .arg(old)
            .arg(value)
            .arg(ms);
        self.query::<redis::Value>(&cmd).await.is_some()
    }

    /// Takes the token's fleet lock for `ttl` (`SET NX PX`): `Some(true)` when this replica
    /// holds it, `Some(false)` when another does, `None` when Redis is unavailable.
    pub(crate) async fn lock(&self, key: &SharedKey, ttl: Duration) -> Option<bool> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let taken: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.lock_key(key))
                    .arg(b"1")
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Some(taken.is_some())
    }

    /// Releases the token's fleet lock once its holder is done (the entry written, or none to
    /// write, so the others stop waiting). At worst it releases a later holder's lock: one
    /// more AS call.
    pub(crate) async fn unlock(&self, key: &SharedKey) {
        let _: Option<redis::Value> = self.query(redis::cmd("DEL").arg(self.lock_key(key))).await;
    }

    /// Marks the token revoked for `ttl` (overwriting any entry, so no replica fills the
    /// shared cache from an answer older than the revocation) and tells every replica.
    /// Returns whether both commands went through.
    pub(crate) async fn revoke(&self, key: &SharedKey, ttl: Duration) -> bool {
        let written = self.put(key, &Entry::Revoked, ttl, false).await;
        // The message: this replica's fleet-key fingerprint, then the digest.
        let mut message = Vec::with_capacity(40);
        message.extend_from_slice(&self.key().fingerprint());
        message.extend_from_slice(key.as_bytes());
        let published: Option<redis::Value> = self
            .query(redis::cmd("PUBLISH").arg(self.channel()).arg(message))
            .await;
        written && published.is_some()
    }

    /// One command, within the timeout, through the breaker. `None`: unavailable.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Option<T> {
        // A cluster connection is made by `connect` in the background, not on a request.
        let Some(mut conn) = self.conn() else {
            self.stats.fleet(FleetEvent::SharedError);
            return None;
        };
        let Some(ticket) = self.breaker.admit(unix_now_ms()) else {
            self.stats.fleet(FleetEvent::SharedError);
            return None;
        };
        let result = tokio::time::timeout(self.config.timeout, async {
            match &mut conn {
                Conn::Single(c) => cmd.query_async::<T>(c).await,
                Conn::Cluster(c) => cmd.query_async::<T>(c).await,
            }
        })
        .await;
        let error = match result {
            Ok(Ok(value)) => {
                if ticket.finish(false, unix_now_ms()) == Transition::Closed {
                    tracing::warn!("Redis answers again: the shared cache is back in use");
                }
                return Some(value);
            }
            Ok(Err(error)) => error_chain(&error),
            Err(_elapsed) => "no answer within SMART_GUARD_REDIS_TIMEOUT_MS".to_owned(),
        };
        self.stats.fleet(FleetEvent::SharedError);
        if ticket.finish(true, unix_now_ms()) == Transition::Opened {
            tracing::warn!(
                error = %error,
                "Redis breaker opened: the shared cache is skipped (AS path) for a second at a time"
            );
        } else if let Some(failed) = self.failures.count() {
            tracing::warn!(
                error = %error,
                failed,
                "Redis command failed, the request took the AS path ({failed} failures since the last such line; at most one line every 10 s)"
            );
        }
        None
    }

    /// The connection: for one server, a reconnecting manager made on first use (no I/O until
    /// a command); for a cluster, the one [`Store::connect`] made, if it has.
    fn conn(&self) -> Option<Conn> {
        if let Some(conn) = self.conn.get() {
            return Some(conn.clone());
        }
        if self.config.is_cluster() {
            return None;
        }
        let timeout = self.config.timeout;
        let manager = redis::Client::open(self.config.urls[0].clone())
            .and_then(|client| {
                ConnectionManager::new_lazy_with_config(
                    client,
                    ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
                        .set_response_timeout(Some(timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_secs(1)),
                )
            })
            .ok()?;
        Some(self.conn.get_or_init(|| Conn::Single(manager)).clone())
    }

    /// Connects to the cluster (slot map, every node), retrying with a backoff until it works;
    /// run once in the background. Each attempt may take longer than a command.
    pub(crate) async fn connect(self: Arc<Self>) {
        if !self.config.is_cluster() {
            return;
        }
        let attempt = self.config.timeout.max(Duration::from_secs(2));
        let mut backoff = Duration::from_millis(50);
        loop {
            let client = ClusterClientBuilder::new(self.config.urls.clone())
                .connection_timeout(attempt)
                .response_timeout(self.config.timeout)
                // MOVED and ASK redirections (resharding, a fresh slot map) take a retry
                // each; the fleet's timeout bounds every command anyway.
                .retries(3)
                .min_retry_wait(2)
                .max_retry_wait(20)
                .build();
            let connected = match client {
                Ok(client) => tokio::time::timeout(attempt, client.get_async_connection())
                    .await
                    .map_err(|_| "no answer while connecting".to_owned())
                    .and_then(|c| c.map_err(|e| error_chain(&e))),
                Err(e) => Err(error_chain(&e)),
            };
            match connected {
                Ok(conn) => {
                    let _ = self.conn.set(Conn::Cluster(conn));
                    return;
                }
                Err(error) => {
                    if self.failures.count().is_some() {
                        tracing::warn!(error = %error, "Redis Cluster not reached yet: the AS path meanwhile");
                    }
                }
            }
            if Arc::strong_count(&self) == 1 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
