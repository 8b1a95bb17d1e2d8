//! `JwksResolver`: resolves a client's keys, fetching JWKS URLs and caching them no longer than
//! their `Cache-Control` allows.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::registry::JwksSource;
use crate::client::Jwks;

/// The longest a fetched JWKS is cached, whatever `max-age` says.
const MAX_JWKS_CACHE: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct JwksResolver {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Arc<Jwks>, Instant)>>,
}

/// Why a JWKS URL could not be used; never shown to the client in detail.
#[derive(Debug)]
pub(crate) struct JwksFetchError(pub(crate) String);

impl JwksResolver {
    pub(crate) fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn resolve(&self, source: &JwksSource) -> Result<Arc<Jwks>, JwksFetchError> {
        match source {
            JwksSource::Inline(jwks) => Ok(Arc::clone(jwks)),
            JwksSource::Url(url) => self.fetch_cached(url).await,
        }
    }

    async fn fetch_cached(&self, url: &str) -> Result<Arc<Jwks>, JwksFetchError> {
        if let Some(hit) = self.cached(url) {
            return Ok(hit);
        }
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| JwksFetchError(format!("jwks fetch failed: {e}")))?;
        if !response.status().is_success() {
            return Err(JwksFetchError(format!(
                "jwks url answered {}",
                response.status()
            )));
        }
        let max_age = response
            .headers()
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let max_age = cache_lifetime(&max_age);
        let jwks: Jwks = response
            .json()
            .await
            .map_err(|e| JwksFetchError(format!("jwks is not valid: {e}")))?;
        let jwks = Arc::new(jwks);
        if let Some(ttl) = max_age {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(url.to_owned(), (Arc::clone(&jwks), Instant::now() + ttl));
        }
        Ok(jwks)
    }

    fn cached(&self, url: &str) -> Option<Arc<Jwks>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(url) {
            Some((jwks, until)) if Instant::now() < *until => Some(Arc::clone(jwks)),
            Some(_) => {
                cache.remove(url);
                None
            }
            None => None,
        }
    }
}

impl fmt::Debug for JwksResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksResolver").finish_non_exhaustive()
    }
}

/// How long a response with this `Cache-Control` value may be cached: `None` for `no-store`,
/// `no-cache`, `max-age=0`, or no `max-age` at all.
pub(crate) fn cache_lifetime(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            let secs: u64 = v.trim_matches('"').parse().ok()?;
            max_age = Some(Duration::from_secs(secs).min(MAX_JWKS_CACHE));
        }
    }
    max_age.filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_follows_cache_control() {
        for (header, expected) in [
            ("max-age=60", Some(60)),
            ("public, max-age=5", Some(5)),
            ("Max-Age=7", Some(7)),
            ("max-age=\"9\"", Some(9)),
            ("max-age=0", None),
            ("no-store", None),
            ("max-age=60, no-store", None),
            ("no-cache, max-age=60", None),
            ("", None),
            ("public", None),
            ("max-age=abc", None),
            ("max-age=999999999", Some(24 * 3600)),
        ] {
            assert_eq!(
                cache_lifetime(header),
                expected.map(Duration::from_secs),
                "{header}"
            );
        }
    }
}
