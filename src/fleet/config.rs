//! [`FleetConfig`]: where the shared cache is and the fleet key, from code or from
//! `SMART_GUARD_REDIS_*` and `SMART_GUARD_FLEET_KEY_FILE`.

use std::{fmt, time::Duration};

use super::key::FleetKey;
use crate::{
    config::env::{
        ENV_FLEET_KEY_FILE, ENV_REDIS_PREFIX, ENV_REDIS_TIMEOUT_MS, ENV_REDIS_URL, Env, millis,
        missing,
    },
    error::ConfigError,
};

/// Fleet mode's settings: the Redis server (or cluster seed nodes), the fleet key, the command
/// timeout and the key prefix. Add it to a [`Config`](crate::Config) with
/// [`Config::with_fleet`](crate::Config::with_fleet).
///
/// ```
/// use smart_guard::fleet::{FleetConfig, FleetKey};
///
/// let fleet = FleetConfig::new(["redis://127.0.0.1:6379"], FleetKey::new(&[7; 32]).unwrap())
///     .unwrap()
///     .with_timeout(std::time::Duration::from_millis(30));
/// assert_eq!(fleet.is_cluster(), false);
/// ```
#[derive(Clone)]
pub struct FleetConfig {
    pub(crate) urls: Vec<redis::ConnectionInfo>,
    /// The URLs with their password replaced, for logs.
    shown: Vec<String>,
    pub(crate) key: FleetKey,
    pub(crate) timeout: Duration,
    pub(crate) prefix: String,
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("urls", &self.shown)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl FleetConfig {
    /// A fleet on the Redis server at `urls` (`redis://` or `rediss://`; several: the seed
    /// nodes of a Redis Cluster), sharing `key`. Defaults: 50 ms per command, prefix
    /// `smart-guard:`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `SMART_GUARD_REDIS_URL` when a URL is not a Redis URL
    /// (the reason never quotes it: it may hold a password), or there is none.
    pub fn new<U: AsRef<str>>(
        urls: impl IntoIterator<Item = U>,
        key: FleetKey,
    ) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            var: ENV_REDIS_URL,
            reason,
        };
        let mut parsed = Vec::new();
        let mut shown = Vec::new();
        for (i, url) in urls.into_iter().enumerate() {
            let url = url.as_ref().trim();
            let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| {
                invalid(format!("URL {} is not a redis:// or rediss:// URL", i + 1))
            })?;
            if !matches!(
                info.addr(),
                redis::ConnectionAddr::Tcp(..) | redis::ConnectionAddr::TcpTls { .. }
            ) {
                return Err(invalid(format!("URL {} is not a TCP address", i + 1)));
            }
            shown.push(redacted(url));
            parsed.push(info);
        }
        if parsed.is_empty() {
            return Err(invalid("holds no URL".to_owned()));
        }
        Ok(Self {
            urls: parsed,
            shown,
            key,
            timeout: Duration::from_millis(50),
            prefix: "smart-guard:".to_owned(),
        })
    }

    /// Reads [`ENV_REDIS_URL`] (comma-separated for a cluster), [`ENV_FLEET_KEY_FILE`],
    /// [`ENV_REDIS_TIMEOUT_MS`] and [`ENV_REDIS_PREFIX`]; `None` when no Redis URL is set.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the variable: a bad URL, a missing, unreadable or short fleet key
    /// file, a bad timeout or prefix.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`FleetConfig::from_env`] through `lookup` (env-var name to value).
    ///
    /// # Errors
    ///
    /// As [`FleetConfig::from_env`].
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = Env(lookup);
        let Some(urls) = env.get(ENV_REDIS_URL) else {
            return Ok(None);
        };
        let path = env
            .get(ENV_FLEET_KEY_FILE)
            .ok_or(missing(ENV_FLEET_KEY_FILE))?;
        let invalid_key = |reason: String| ConfigError::Invalid {
            var: ENV_FLEET_KEY_FILE,
            reason,
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| invalid_key(format!("cannot read {path:?}: {}", e.kind())))?;
        let key = FleetKey::new(&bytes).map_err(|e| invalid_key(format!("{path:?}: {e}")))?;
        let mut fleet = Self::new(urls.split(','), key)?;
        if let Some(timeout) = env.read(ENV_REDIS_TIMEOUT_MS, millis)? {
            if timeout.is_zero() {
                return Err(ConfigError::Invalid {
                    var: ENV_REDIS_TIMEOUT_MS,
                    reason: "must be at least 1".to_owned(),
                });
            }
            fleet = fleet.with_timeout(timeout);
        }
        if let Some(prefix) = env.get(ENV_REDIS_PREFIX) {
            fleet = fleet.with_prefix(prefix);
        }
        Ok(Some(fleet))
    }

    /// Longest wait for one Redis command (default 50 ms); past it, the request takes the AS
    /// path and the failure counts towards Redis's breaker.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The prefix of every key and channel (default `smart-guard:`), so fleets can share a
    /// Redis.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether the URLs name a Redis Cluster (more than one) rather than one server.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.urls.len() > 1
    }

    /// The settings, redacted, as `(variable, value)` pairs for a startup line.
    pub(crate) fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_REDIS_URL, self.shown.join(",")),
            (ENV_FLEET_KEY_FILE, "(set)".to_owned()),
            (ENV_REDIS_TIMEOUT_MS, self.timeout.as_millis().to_string()),
            (ENV_REDIS_PREFIX, self.prefix.clone()),
        ]
    }
}

/// `url` with any password replaced by `***` (the user name is kept).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unreadable>".to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let user = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FleetKey {
        FleetKey::new(&[9; 32]).unwrap()
    }

    #[test]
    fn passwords_never_show_in_settings_or_debug() {
        for (url, shown) in [
            (
                "redis://:s3cret@10.0.0.1:6379/0",
                "redis://:***@10.0.0.1:6379/0",
            ),
            (
                "rediss://guard:s3cret@cache.example:6380",
                "rediss://guard:***@cache.example:6380",
            ),
            ("redis://s3cret@10.0.0.1", "redis://***@10.0.0.1"),
            ("redis://10.0.0.1:6379", "redis://10.0.0.1:6379"),
        ] {
            let fleet = FleetConfig::new([url], key()).unwrap();
            let text = format!("{fleet:?} {:?}", fleet.settings());
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains(shown), "{text}");
        }
    }

    #[test]
    fn bad_urls_are_named_by_the_variable_without_their_text() {
        for urls in [
            vec!["http://:s3cret@x"],
            vec![],
            vec!["redis://ok:6379", "nope s3cret"],
        ] {
            let err = FleetConfig::new(urls.clone(), key()).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("SMART_GUARD_REDIS_URL"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        assert!(
            FleetConfig::new(["redis://a:1", "redis://b:2"], key())
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn the_environment_needs_a_readable_long_enough_fleet_key() {
        let dir = std::env::temp_dir().join(format!("fleet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short.key");
        std::fs::write(&short, [1u8; 16]).unwrap();
        let good = dir.join("good.key");
        std::fs::write(&good, [1u8; 32]).unwrap();
        let read = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            FleetConfig::from_lookup(move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        assert!(read(&[]).unwrap().is_none(), "no URL, no fleet");
        let url = (ENV_REDIS_URL, "redis://127.0.0.1:6379");
        let err = |vars: &[(&str, &str)]| read(vars).unwrap_err().to_string();
        assert!(err(&[url]).starts_with("SMART_GUARD_FLEET_KEY_FILE is required"));
        let short_path = short.to_str().unwrap();
        assert!(err(&[url, (ENV_FLEET_KEY_FILE, short_path)]).contains("at least 32 bytes"));
        assert!(err(&[url, (ENV_FLEET_KEY_FILE, "/nonexistent")]).contains("cannot read"));
        let good_path = good.to_str().unwrap();
        let fleet = read(&[
            url,
            (ENV_FLEET_KEY_FILE, good_path),
            (ENV_REDIS_TIMEOUT_MS, "20"),
            (ENV_REDIS_PREFIX, "fleet-a:"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(fleet.timeout, Duration::from_millis(20));
        assert_eq!(fleet.prefix, "fleet-a:");
        assert!(
            err(&[
                url,
                (ENV_FLEET_KEY_FILE, good_path),
                (ENV_REDIS_TIMEOUT_MS, "0")
            ])
            .starts_with("SMART_GUARD_REDIS_TIMEOUT_MS")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
