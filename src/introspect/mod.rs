//! Token introspection with a cache: one coalesced RFC 7662 call per token per TTL.

mod cache;
mod client;
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
    cache::{ActiveTtl, TokenHasher, TokenKey},
    client::IntrospectionClient,
    response::{Answer, Checks, TokenInfo},
};
use crate::{
    config::Config,
    error::{ConfigError, IntrospectError, IntrospectErrorKind},
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
    active: Cache<TokenKey, Arc<TokenInfo>>,
    inactive: Cache<TokenKey, ()>,
    hasher: TokenHasher,
    checks: Checks,
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
    pub(crate) fn new(config: &Config, http: Option<reqwest::Client>) -> Result<Self, ConfigError> {
        Ok(Self {
            client: IntrospectionClient::new(config, http)?,
            active: Cache::builder()
                .max_capacity(config.capacity)
                .expire_after(ActiveTtl {
                    max_ttl: config.max_ttl,
                })
                .build(),
            inactive: Cache::builder()
                .max_capacity(config.negative_capacity)
                .time_to_live(config.negative_ttl)
                .build(),
            hasher: TokenHasher::random(),
            checks: Checks {
                require_exp: config.require_exp,
                clock_skew: config.clock_skew,
                expected_issuer: config.expected_issuer.clone(),
                expected_audience: config.expected_audience.clone(),
            },
            credentials_logged_at: AtomicU64::new(0),
        })
    }

    /// Looks `token` up: a cache hit (with `exp` checked again), or one coalesced call.
    pub(crate) async fn lookup(&self, token: &str) -> Lookup {
        let key = self.hasher.key_of(token);
        if let Some(info) = self.active.get(&key).await {
            return self.recheck(&key, info, CacheStatus::Hit).await;
        }
        if self.inactive.contains_key(&key) {
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
            CacheStatus::Miss
        } else {
            CacheStatus::Coalesced
        };
        match result {
            Ok(info) => self.recheck(&key, info, status).await,
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

    /// `exp` is checked again on every use, cached or not.
    async fn recheck(&self, key: &TokenKey, info: Arc<TokenInfo>, status: CacheStatus) -> Lookup {
        if self.checks.exp_ok(info.exp, unix_now()) {
            Lookup::Active(info, status)
        } else {
            self.active.invalidate(key).await;
            Lookup::Inactive(status, "token expired")
        }
    }

    async fn call(&self, token: &str) -> Result<Arc<TokenInfo>, Miss> {
        let started = std::time::Instant::now();
        let body = self.client.introspect(token).await.map_err(|e| {
            self.log_failure(&e);
            Miss::Failed(e)
        })?;
        let answer = response::parse_answer(&body, &self.checks, unix_now()).map_err(|e| {
            self.log_failure(&e);
            Miss::Failed(e)
        })?;
        tracing::trace!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "introspection answered"
        );
        match answer {
            Answer::Active(info) => Ok(Arc::new(info)),
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
