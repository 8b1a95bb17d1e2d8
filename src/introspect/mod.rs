//! Token introspection with a cache: one coalesced RFC 7662 call per token per TTL.

pub(crate) mod breaker;
mod cache;
mod client;
mod front;
mod intern;
pub(crate) mod response;
#[cfg(feature = "redis")]
mod shared;
mod stale;
pub(crate) mod status;
pub(crate) mod token_key;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use moka::future::Cache;
use tokio::sync::Semaphore;

use self::{
    breaker::{Breaker, Transition},
    cache::{ActiveTtl, cached_until_ms},
    client::IntrospectionClient,
    front::FrontCache,
    response::{Answer, Checks, TokenInfo},
    stale::StaleCache,
    token_key::{TokenKey, TokenKeyHash, TokenKeySecret},
};
use crate::{
    config::Config,
    error::{ConfigError, IntrospectError, IntrospectErrorKind},
    readiness::Readiness,
    stats::Stats,
    throttle::{LogEvery, OUTAGE_LOG_INTERVAL, Tally},
    time::{unix_now, unix_now_ms},
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
    /// The AS is out and stale-if-error served the token's last active answer.
    Stale,
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
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
    /// No call was made, or the request stopped waiting for one: the AS is being protected.
    Shed(Shed),
}

/// Why a request got 503 without an answer from the AS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The circuit breaker is open.
    BreakerOpen,
    /// `SMART_GUARD_MAX_IN_FLIGHT` calls are already out.
    InFlight,
    /// The request deadline passed while waiting for an answer.
    Deadline,
}

impl Miss {
    /// A short name of what went wrong, for logs.
    fn reason(&self) -> &'static str {
        match self {
            Self::Inactive { reason, .. } => reason,
            Self::Failed(error) => error.kind().as_str(),
            Self::Shed(Shed::BreakerOpen) => "breaker_open",
            Self::Shed(Shed::InFlight) => "in_flight_cap",
            Self::Shed(Shed::Deadline) => "deadline",
        }
    }
}

/// Whether a failed call says the AS is down or overloaded (what the breaker counts and what
/// stale-if-error covers), as opposed to an AS that answered something unusable.
fn is_outage(error: &IntrospectError) -> bool {
    match error.kind() {
        IntrospectErrorKind::Connect
        | IntrospectErrorKind::Timeout
        | IntrospectErrorKind::Transport => true,
        IntrospectErrorKind::Status => error.status().is_some_and(|s| s >= 500 || s == 429),
        _ => false,
    }
}

/// How often a rejected-credentials error is logged.
const CREDENTIALS_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Introspects tokens through two caches: active answers (bounded, TTL per entry) and inactive
/// ones (smaller, short TTL), so a flood of bad tokens cannot evict good entries.
pub(crate) struct Introspector {
    client: IntrospectionClient,
    front: FrontCache,
    active: Cache<TokenKey, Arc<TokenInfo>, TokenKeyHash>,
    inactive: Cache<TokenKey, (), TokenKeyHash>,
    secret: TokenKeySecret,
    checks: Checks,
    max_ttl: Duration,
    stats: Arc<Stats>,
    breaker: Breaker,
    in_flight: Semaphore,
    deadline: Duration,
    stale: Option<StaleCache>,
    credentials_log: LogEvery,
    stale_log: LogEvery,
    shed_log: LogEvery,
    failure_log: Tally,
    max_in_flight: usize,
    /// Unix ms of the AS's last answer (0: none yet), for readiness.
    last_answer_ms: AtomicU64,
    /// Fleet mode: the lifetime of a shared inactive entry, and of active answers while
    /// revocations cannot be heard.
    #[cfg(feature = "redis")]
    negative_ttl: Duration,
    /// The AS call's own timeout (`SMART_GUARD_TIMEOUT_MS`): the fleet lock's lifetime.
    #[cfg(feature = "redis")]
    as_timeout: Duration,
    /// Fleet mode: the shared cache and the revocation link.
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::Fleet>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("client", &self.client)
            .field("active_entries", &self.active.entry_count())
            .field("inactive_entries", &self.inactive.entry_count())
            .field("breaker", &self.breaker)
            .field("in_flight_available", &self.in_flight.available_permits())
            .field("deadline", &self.deadline)
            .field("stale", &self.stale)
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
            active: {
                let builder = Cache::builder()
                    .max_capacity(config.capacity)
                    .expire_after(ActiveTtl);
                // A fleet revocation forgets the entries of one shared key.
                #[cfg(feature = "redis")]
                let builder = if config.fleet.is_some() {
                    builder.support_invalidation_closures()
                } else {
                    builder
                };
                builder.build_with_hasher(TokenKeyHash::default())
            },
            inactive: Cache::builder()
                .max_capacity(config.negative_capacity)
                .time_to_live(config.negative_ttl)
                .build_with_hasher(TokenKeyHash::default()),
            secret: TokenKeySecret::random(),
            checks: Checks {
                require_exp: config.require_exp,
                clock_skew: config.clock_skew,
                expected_issuer: config.expected_issuer.clone(),
                expected_audience: config.expected_audience.clone(),
            },
            max_ttl: config.max_ttl,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            in_flight: Semaphore::new(config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
            deadline: config.request_deadline.unwrap_or(config.timeout),
            stale: config
                .stale_if_error
                .map(|window| StaleCache::new(config.capacity, window)),
            credentials_log: LogEvery::new(CREDENTIALS_LOG_INTERVAL),
            stale_log: LogEvery::new(OUTAGE_LOG_INTERVAL),
            shed_log: LogEvery::new(OUTAGE_LOG_INTERVAL),
            failure_log: Tally::new(OUTAGE_LOG_INTERVAL),
            max_in_flight: config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
            last_answer_ms: AtomicU64::new(0),
            #[cfg(feature = "redis")]
            negative_ttl: config.negative_ttl,
            #[cfg(feature = "redis")]
            as_timeout: config.timeout,
            #[cfg(feature = "redis")]
            fleet: config
                .fleet
                .clone()
                .map(|fleet| crate::fleet::Fleet::new(fleet, Arc::clone(&stats))),
            stats,
        })
    }

    /// What readiness reports: the breaker, the AS's last answer, the calls out. No I/O.
    pub(crate) fn readiness(&self) -> Readiness {
        let now_ms = unix_now_ms();
        let last = self.last_answer_ms.load(Ordering::Relaxed);
        Readiness {
            breaker: self.breaker.current(now_ms),
            since_last_answer: (last != 0)
                .then(|| Duration::from_millis(now_ms.saturating_sub(last))),
            in_flight: self
                .max_in_flight
                .saturating_sub(self.in_flight.available_permits()),
        }
    }

    /// Looks `token` up: a cache hit (with `exp` checked again), or one coalesced call.
    ///
    /// The front-cache hit is synchronous and small; everything else (moka reads, the coalesced
    /// call) runs in a boxed future, so the request future every hit carries stays small.
    pub(crate) async fn lookup(&self, token: &str) -> Lookup {
        #[cfg(feature = "redis")]
        self.apply_evictions();
        let key = TokenKey::of(&self.secret, token.as_bytes());
        let now_ms = unix_now_ms();
        if let Some(info) = self.front_hit(&key, now_ms) {
            return Lookup::Active(info, CacheStatus::Hit);
        }
        Box::pin(self.lookup_slow(token, key, now_ms)).await
    }

    /// The synchronous part of [`Self::lookup`]: the token's active answer if the front cache
    /// holds it (fresh, `exp` checked). `None` means "ask [`Self::lookup`]", not "inactive".
    #[inline]
    pub(crate) fn cached(&self, token: &[u8]) -> Option<Arc<TokenInfo>> {
        #[cfg(feature = "redis")]
        self.apply_evictions();
        self.front_hit(&TokenKey::of(&self.secret, token), unix_now_ms())
    }

    #[inline]
    fn front_hit(&self, key: &TokenKey, now_ms: u64) -> Option<Arc<TokenInfo>> {
        let info = self.front.get(key, now_ms)?;
        if !self.checks.exp_ok(info.exp, now_ms / 1000) {
            return None;
        }
        self.stats.cache_hit();
        Some(info)
    }

    async fn lookup_slow(&self, token: &str, key: TokenKey, now_ms: u64) -> Lookup {
        #[cfg(feature = "redis")]
        let epoch = self.fleet_epoch();
        if let Some(info) = self.active.get(&key).await {
            self.stats.cache_hit();
            self.front.put(key, Arc::clone(&info));
            #[cfg(feature = "redis")]
            self.forget_if_evicted(epoch, &key, &info).await;
            return self.recheck(&key, info, CacheStatus::Hit, now_ms).await;
        }
        if self.inactive.contains_key(&key) {
            self.stats.cache_hit();
            self.stats.inactive_hit();
            tracing::trace!("inactive cache hit");
            return Lookup::Inactive(CacheStatus::Hit, "inactive (cached)");
        }

        // The whole wait, for a call of our own or one we joined, ends at the deadline.
        let deadline = tokio::time::Instant::now() + self.deadline;
        let ran = AtomicBool::new(false);
        let call = async {
            ran.store(true, Ordering::Relaxed);
            self.call(token, key, deadline).await
        };
        let result =
            match tokio::time::timeout_at(deadline, self.active.try_get_with(key, call)).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    self.stats.deadline_rejection();
                    tracing::debug!("request deadline passed waiting for introspection");
                    Err(Arc::new(Miss::Shed(Shed::Deadline)))
                }
            };
        let status = if ran.load(Ordering::Relaxed) {
            // A call refused by the breaker or the in-flight cap is counted as that, not a miss.
            let refused = matches!(&result, Err(miss)
                if matches!(**miss, Miss::Shed(Shed::BreakerOpen | Shed::InFlight)));
            if !refused {
                self.stats.cache_miss();
            }
            CacheStatus::Miss
        } else {
            self.stats.coalesced_wait();
            CacheStatus::Coalesced
        };
        match result {
            Ok(info) => {
                self.front.put(key, Arc::clone(&info));
                #[cfg(feature = "redis")]
                self.forget_if_evicted(epoch, &key, &info).await;
                self.recheck(&key, info, status, unix_now_ms()).await
            }
            Err(miss) => match &*miss {
                Miss::Inactive { cacheable, reason } => {
                    if *cacheable && status == CacheStatus::Miss {
                        self.inactive.insert(key, ()).await;
                    }
                    Lookup::Inactive(status, reason)
                }
                Miss::Failed(error) if !is_outage(error) => Lookup::Unavailable(miss),
                Miss::Failed(_) | Miss::Shed(_) => self.stale_or_unavailable(&key, miss).await,
            },
        }
    }

    /// The AS is out: the token's last active answer if stale-if-error is on and it is still
    /// within its window (and before its `exp`), else 503.
    async fn stale_or_unavailable(&self, key: &TokenKey, miss: Arc<Miss>) -> Lookup {
        let info = match &self.stale {
            Some(stale) => stale.get(key, unix_now_ms()).await,
            None => None,
        };
        let Some(info) = info else {
            tracing::debug!(why = miss.reason(), "AS unavailable");
            return Lookup::Unavailable(miss);
        };
        self.stats.stale_served();
        if self.stale_log.due() {
            tracing::warn!(
                client_id = info.client_id.as_deref(),
                jti = info.jti.as_deref(),
                why = miss.reason(),
                "AS unavailable: serving a stale introspection answer (stale-if-error; further ones for 10 s at debug)"
            );
        } else {
            tracing::debug!(
                client_id = info.client_id.as_deref(),
                "serving a stale introspection answer"
            );
        }
        Lookup::Active(info, CacheStatus::Stale)
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

    /// One introspection call for `token`, its answer parsed and checked like any other, that
    /// bypasses everything else: no cache is read or written, the breaker, the in-flight cap and
    /// the stats are left alone. For diagnostics (`smart-guard check`), not for requests.
    pub(crate) async fn introspect_uncached(
        &self,
        token: &str,
    ) -> Result<status::TokenStatus, IntrospectError> {
        let body = self.client.introspect(token).await?;
        response::parse_answer(&body, &self.checks, unix_now())
            .map(status::TokenStatus::from_answer)
    }

    /// The answer for a token no cache of this process holds: through the fleet's shared cache
    /// in fleet mode, else one introspection call. Runs once per coalesced group of requests.
    async fn call(
        &self,
        token: &str,
        key: TokenKey,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<TokenInfo>, Miss> {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            return self.call_through_fleet(fleet, token, key, deadline).await;
        }
        let (answer, _body) = self.ask_as(token, deadline).await?;
        self.settle(key, answer, |_| {}).await
    }

    /// One introspection call, unless the breaker is open or the in-flight cap is reached; it
    /// ends at `deadline` at the latest. The checked answer, and the body as the AS sent it.
    async fn ask_as(
        &self,
        token: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(Answer, Bytes), Miss> {
        let Some(ticket) = self.breaker.admit(unix_now_ms()) else {
            self.stats.breaker_open_rejection();
            self.stats
                .breaker_state(self.breaker.current(unix_now_ms()));
            tracing::debug!("circuit breaker open: no introspection call");
            return Err(Miss::Shed(Shed::BreakerOpen));
        };
        let Ok(_permit) = self.in_flight.try_acquire() else {
            // Dropping the ticket unreported hands a probe's turn to the next caller.
            drop(ticket);
            self.stats.in_flight_rejection();
            if self.shed_log.due() {
                tracing::warn!(
                    "introspection calls at SMART_GUARD_MAX_IN_FLIGHT: refusing misses with 503 (further ones for 10 s at debug)"
                );
            } else {
                tracing::debug!("in-flight cap reached: no introspection call");
            }
            return Err(Miss::Shed(Shed::InFlight));
        };
        let _in_flight = self.stats.call_out();
        let started = std::time::Instant::now();
        let answer = match tokio::time::timeout_at(deadline, self.client.introspect(token)).await {
            Ok(Ok(body)) => {
                response::parse_answer(&body, &self.checks, unix_now()).map(|answer| (answer, body))
            }
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => Err(IntrospectError::new(
                IntrospectErrorKind::Timeout,
                "the AS did not answer within the request deadline",
            )),
        };
        let elapsed = started.elapsed();
        self.stats
            .as_call(elapsed, answer.as_ref().err().map(IntrospectError::kind));
        let outage = answer.as_ref().err().is_some_and(is_outage);
        let now_ms = unix_now_ms();
        if !outage {
            self.last_answer_ms.store(now_ms, Ordering::Relaxed);
        }
        let transition = ticket.finish(outage, now_ms);
        self.stats.breaker_state(self.breaker.current(now_ms));
        match transition {
            Transition::Opened => {
                self.stats.breaker_opened();
                tracing::warn!(
                    cooldown_ms = self.breaker.cooldown_ms(),
                    "circuit breaker opened: introspection calls refused until the cool-down ends"
                );
            }
            Transition::Closed => tracing::warn!("circuit breaker closed: the AS answers again"),
            Transition::None => {}
        }
        let answer = answer.map_err(|e| {
            self.log_failure(&e);
            Miss::Failed(e)
        })?;
        tracing::trace!(
            elapsed_us = elapsed.as_micros() as u64,
            "introspection answered"
        );
        Ok(answer)
    }

    /// A checked answer as this process caches it: an active one until min(`exp`, now + max
    /// TTL) as `adjust` leaves it (and for stale-if-error), an inactive one as a miss.
    async fn settle(
        &self,
        key: TokenKey,
        answer: Answer,
        adjust: impl FnOnce(&mut TokenInfo),
    ) -> Result<Arc<TokenInfo>, Miss> {
        match answer {
            Answer::Active(mut info) => {
                info.cached_until_ms = cached_until_ms(info.exp, unix_now_ms(), self.max_ttl);
                adjust(&mut info);
                let info: Arc<TokenInfo> = Arc::from(info);
                // Also with nothing cached (a TTL of 0): stale-if-error keeps its own window. A
                // fleet fill that crossed a revocation leaves it again (`forget_if_evicted`).
                if let Some(stale) = &self.stale {
                    stale.put(key, Arc::clone(&info)).await;
                }
                Ok(info)
            }
            Answer::Inactive { cacheable, reason } => {
                if let Some(stale) = &self.stale {
                    // Never serve stale after the AS said no.
                    stale.remove(&key).await;
                }
                Err(Miss::Inactive { cacheable, reason })
            }
        }
    }

    /// Forgets `token` in every cache of this process and, in fleet mode, marks it revoked in
    /// the shared cache and tells every replica. Returns whether the fleet was told (always
    /// true without a fleet).
    pub(crate) async fn invalidate(&self, token: &str) -> bool {
        let key = TokenKey::of(&self.secret, token.as_bytes());
        self.front.remove(&key);
        self.active.invalidate(&key).await;
        self.inactive.invalidate(&key).await;
        if let Some(stale) = &self.stale {
            stale.remove(&key).await;
        }
        #[cfg(feature = "redis")]
        if let Some(shared) = self.shared_key(token) {
            return self.invalidate_shared(shared).await;
        }
        true
    }

    /// AS failures are warnings, summarised at most every 10 s; rejected credentials are a misconfiguration, logged as an error
    /// at most once a minute (the calls themselves are still counted in the stats).
    fn log_failure(&self, error: &IntrospectError) {
        if error.kind() == IntrospectErrorKind::CredentialsRejected {
            if self.credentials_log.due() {
                tracing::error!(error = %error, "introspection endpoint rejected our credentials: check SMART_GUARD_CLIENT_ID/SECRET (logged once a minute)");
            } else {
                tracing::debug!(error = %error, "introspection endpoint rejected our credentials");
            }
        } else if let Some(failed) = self.failure_log.count() {
            tracing::warn!(
                error = %error,
                kind = error.kind().as_str(),
                failed,
                "introspection failed ({failed} failed calls since the last such line; at most one line every 10 s)"
            );
        } else {
            tracing::debug!(error = %error, kind = error.kind().as_str(), "introspection failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_say_the_as_is_out_count_as_outages() {
        let error = |kind, status: Option<u16>| {
            let e = IntrospectError::new(kind, "test");
            match status {
                Some(s) => e.with_status(s),
                None => e,
            }
        };
        for (kind, status, outage) in [
            (IntrospectErrorKind::Connect, None, true),
            (IntrospectErrorKind::Timeout, None, true),
            (IntrospectErrorKind::Transport, None, true),
            (IntrospectErrorKind::Status, Some(500), true),
            (IntrospectErrorKind::Status, Some(503), true),
            (IntrospectErrorKind::Status, Some(429), true),
            (IntrospectErrorKind::Status, Some(404), false),
            (IntrospectErrorKind::Status, Some(302), false),
            (IntrospectErrorKind::CredentialsRejected, Some(401), false),
            (IntrospectErrorKind::MalformedAnswer, None, false),
            (IntrospectErrorKind::AnswerTooLarge, None, false),
            (IntrospectErrorKind::OwnCredentials, None, false),
        ] {
            assert_eq!(
                is_outage(&error(kind, status)),
                outage,
                "{kind:?} {status:?}"
            );
        }
    }

    /// A one-shot HTTP server on loopback that answers every request with `response`.
    async fn fixed_as(response: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response).await;
            }
        });
        format!("http://{addr}/introspect")
    }

    #[tokio::test]
    async fn failures_never_carry_the_token_or_the_secret() {
        const TOKEN: &str = "the-token-value-0xdeadbeef";
        const SECRET: &str = "s3cret-value-0xfeedface";
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}/introspect", listener.local_addr().expect("addr"))
        };
        let urls = [
            closed,
            fixed_as(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\n{}").await,
            fixed_as(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n").await,
            fixed_as(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\ngarbage").await,
            fixed_as(b"HTTP/1.1 200 OK\r\ncontent-length: 90\r\n\r\n{\"active\":true").await,
        ];
        for url in urls {
            let config = Config::new(url.parse().expect("url"), "rs", SECRET)
                .with_timeouts(Duration::from_millis(300), Duration::from_millis(300));
            let introspector =
                Introspector::new(&config, None, Arc::new(Stats::default())).expect("introspector");
            let lookup = introspector.lookup(TOKEN).await;
            let Lookup::Unavailable(miss) = &lookup else {
                panic!("{url}: {lookup:?}");
            };
            let mut text = format!("{lookup:?} {introspector:?}");
            if let Miss::Failed(error) = &**miss {
                text.push_str(&format!("{error} {error:?}"));
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    text.push_str(&format!(" {cause} {cause:?}"));
                    source = cause.source();
                }
            }
            assert!(!text.contains(TOKEN), "{url}: {text}");
            assert!(!text.contains(SECRET), "{url}: {text}");
        }
    }
}
