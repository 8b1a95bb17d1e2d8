//! Token introspection with a cache: one coalesced RFC 7662 call per token per TTL.

mod cache;
mod client;
mod front;
pub(crate) mod response;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::future::Cache;

pub(crate) use self::cache::unix_now;
use self::{
    cache::{ActiveTtl, DigestHasherBuilder, TokenHasher, TokenKey, cached_until_ms, unix_now_ms},
    client::IntrospectionClient,
    front::FrontCache,
    response::{Answer, Checks, TokenInfo},
};
use crate::{
    config::Config,
    error::{ConfigError, IntrospectError, IntrospectErrorKind},
    stats::Stats,
};

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    /// Served from a cache.
    Hit,
    /// This request made the introspection call.
    Miss,
    /// Another request's concurrent call answered this one.
    Coalesced,
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }
}

/// The outcome of looking a token up.
#[derive(Debug)]
pub(crate) enum Lookup {
    Active(Arc<TokenInfo>, CacheStatus),
    Inactive(CacheStatus, &'static str),
    /// The AS could not give an answer: 503. The error is shared by the requests that joined the call.
    Unavailable(Arc<Miss>),
}

/// Why the coalesced call produced no cacheable active answer.
#[derive(Debug)]
pub(crate) enum Miss {
    Inactive {
        cacheable: bool,
        reason: &'static str,
    },
    Failed(IntrospectError),
}

/// Introspects tokens through two caches: active answers (bounded, TTL per entry) and inactive
/// ones (smaller, short TTL), so a flood of bad tokens cannot evict good entries.
pub(crate) struct Introspector {
    client: IntrospectionClient,
    front: FrontCache,
    active: Cache<TokenKey, Arc<TokenInfo>, DigestHasherBuilder>,
    inactive: Cache<TokenKey, (), DigestHasherBuilder>,
    hasher: TokenHasher,
    checks: Checks,
    max_ttl: Duration,
    stats: Arc<Stats>,
    credentials_logged_at: AtomicU64,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("client", &self.client)
            .field("active_entries", &self.active.entry_count())
            .field("inactive_entries", &self.inactive.entry_count())
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub(crate) fn new(
        config: &Config,
        http: Option<reqwest::Client>,
        stats: Arc<Stats>,
    ) -> Result<Self, ConfigError> {
        // The front holds the hottest tokens; moka holds them all.
        let front_slots = usize::try_from(config.capacity.min(4096)).unwrap_or(4096);
        Ok(Self {
            front: FrontCache::new(front_slots),
            client: IntrospectionClient::new(config, http)?,
            active: Cache::builder()
                .max_capacity(config.capacity)
                .expire_after(ActiveTtl)
                .build_with_hasher(DigestHasherBuilder),
            inactive: Cache::builder()
                .max_capacity(config.negative_capacity)
                .time_to_live(config.negative_ttl)
                .build_with_hasher(DigestHasherBuilder),
            hasher: TokenHasher::random(),
            checks: Checks {
                require_exp: config.require_exp,
                clock_skew: config.clock_skew,
                expected_issuer: config.expected_issuer.clone(),
                expected_audience: config.expected_audience.clone(),
            },
            max_ttl: config.max_ttl,
            stats,
            credentials_logged_at: AtomicU64::new(0),
        })
    }

    /// Looks `token` up: a cache hit (with `exp` checked again), or one coalesced call.
    ///
    /// The front-cache hit is synchronous and small; everything else (moka reads, the coalesced
    /// call) runs in a boxed future, so the request future every hit carries stays small.
    pub(crate) async fn lookup(&self, token: &str) -> Lookup {
        let key = self.hasher.key_of(token);
        let now_ms = unix_now_ms();
        if let Some(info) = self.front.get(&key, now_ms)
            && self.checks.exp_ok(info.exp, now_ms / 1000)
        {
            self.stats.cache_hit();
            return Lookup::Active(info, CacheStatus::Hit);
        }
        Box::pin(self.lookup_slow(token, key, now_ms)).await
    }

    async fn lookup_slow(&self, token: &str, key: TokenKey, now_ms: u64) -> Lookup {
        if let Some(info) = self.active.get(&key).await {
            self.stats.cache_hit();
            self.front.put(key, Arc::clone(&info));
            return self.recheck(&key, info, CacheStatus::Hit, now_ms).await;
        }
        if self.inactive.contains_key(&key) {
            self.stats.cache_hit();
            self.stats.inactive_hit();
            tracing::trace!("inactive cache hit");
            return Lookup::Inactive(CacheStatus::Hit, "inactive (cached)");
        }

        let ran = AtomicBool::new(false);
        let call = async {
            ran.store(true, Ordering::Relaxed);
            self.call(token).await
        };
        let result = self.active.try_get_with(key, call).await;
        let status = if ran.load(Ordering::Relaxed) {
            self.stats.cache_miss();
            CacheStatus::Miss
        } else {
            self.stats.coalesced_wait();
            CacheStatus::Coalesced
        };
        match result {
            Ok(info) => {
                self.front.put(key, Arc::clone(&info));
                self.recheck(&key, info, status, unix_now_ms()).await
            }
            Err(miss) => match &*miss {
                Miss::Inactive { cacheable, reason } => {
                    if *cacheable && status == CacheStatus::Miss {
                        self.inactive.insert(key, ()).await;
                    }
                    Lookup::Inactive(status, reason)
                }
                Miss::Failed(_) => Lookup::Unavailable(miss),
            },
        }
    }

    /// `exp` is checked again on every use, cached or not; an expired entry leaves both caches.
    async fn recheck(
        &self,
        key: &TokenKey,
        info: Arc<TokenInfo>,
        status: CacheStatus,
        now_ms: u64,
    ) -> Lookup {
        if self.checks.exp_ok(info.exp, now_ms / 1000) {
            Lookup::Active(info, status)
        } else {
            self.front.remove(key);
            self.active.invalidate(key).await;
            Lookup::Inactive(status, "token expired")
        }
    }

    async fn call(&self, token: &str) -> Result<Arc<TokenInfo>, Miss> {
        let started = std::time::Instant::now();
        let answer = match self.client.introspect(token).await {
            Ok(body) => response::parse_answer(&body, &self.checks, unix_now()),
            Err(error) => Err(error),
        };
        let elapsed = started.elapsed();
        self.stats
            .as_call(elapsed, answer.as_ref().err().map(IntrospectError::kind));
        let answer = answer.map_err(|e| {
            self.log_failure(&e);
            Miss::Failed(e)
        })?;
        tracing::trace!(
            elapsed_us = elapsed.as_micros() as u64,
            "introspection answered"
        );
        match answer {
            Answer::Active(mut info) => {
                info.cached_until_ms = cached_until_ms(info.exp, unix_now_ms(), self.max_ttl);
                Ok(Arc::from(info))
            }
            Answer::Inactive { cacheable, reason } => Err(Miss::Inactive { cacheable, reason }),
        }
    }

    /// AS failures are warnings; rejected credentials are a misconfiguration, logged as an error
    /// at most once a minute.
    fn log_failure(&self, error: &IntrospectError) {
        if error.kind() == IntrospectErrorKind::CredentialsRejected {
            let now = unix_now();
            let last = self.credentials_logged_at.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= Duration::from_secs(60).as_secs()
                && self
                    .credentials_logged_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::error!(error = %error, "introspection endpoint rejected our credentials: check SMART_GUARD_CLIENT_ID/SECRET");
            }
        } else {
            tracing::warn!(error = %error, kind = ?error.kind(), "introspection failed");
        }
    }
}
