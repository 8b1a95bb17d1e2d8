//! The effective settings of a [`Config`], by environment variable, with secrets redacted: what
//! `smart-guard check` prints and what a startup log line can show.

use std::{fmt, time::Duration};

use super::{AssertionAudience, Config, env::*};

/// What [`Settings`] shows instead of a secret that is set.
const REDACTED: &str = "<redacted>";
/// What [`Settings`] shows for an optional setting that is not set.
const UNSET: &str = "unset";

/// One effective setting: the environment variable that sets it and its value as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    var: &'static str,
    value: String,
}

impl Setting {
    /// The `SMART_GUARD_*` variable that sets it.
    #[must_use]
    pub fn var(&self) -> &'static str {
        self.var
    }

    /// The effective value, defaults included: `unset` for an optional setting that is not set,
    /// `<redacted>` for a secret that is set.
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// The effective settings of a [`Config`] (see [`Config::settings`]): every setting the
/// `SMART_GUARD_*` environment can set, in the order of the crate docs' table, with its effective
/// value. The client secret and the private key are never shown; the key file's path and the
/// key's algorithm and `kid` (its public RFC 7638 thumbprint) are.
///
/// `Display` writes one line of `VAR=value` pairs (values with spaces or quotes quoted, as for a
/// startup log line); the alternate form (`{:#}`) writes one setting per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    list: Vec<Setting>,
}

impl Settings {
    /// The settings, in table order.
    pub fn iter(&self) -> std::slice::Iter<'_, Setting> {
        self.list.iter()
    }

    /// The value shown for `var`, if it is one of the settings.
    #[must_use]
    pub fn get(&self, var: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|s| s.var == var)
            .map(|s| s.value.as_str())
    }
}

impl<'a> IntoIterator for &'a Settings {
    type Item = &'a Setting;
    type IntoIter = std::slice::Iter<'a, Setting>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.list.iter().map(|s| s.var.len()).max().unwrap_or(0);
        for (i, Setting { var, value }) in self.list.iter().enumerate() {
            let quote = value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"');
            match (f.alternate(), quote) {
                (true, _) => {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{var:width$}  {value}")?;
                    if value.is_empty() {
                        f.write_str("\"\"")?;
                    }
                }
                (false, quote) => {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    if quote {
                        write!(f, "{var}={value:?}")?;
                    } else {
                        write!(f, "{var}={value}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The effective settings, by environment variable, with secrets redacted; see [`Settings`].
    ///
    /// ```
    /// use smart_guard::Config;
    ///
    /// let config = Config::new(
    ///     "https://as.example.org/introspect".parse().unwrap(),
    ///     "fhir-server",
    ///     "s3cret",
    /// );
    /// let settings = config.settings();
    /// assert_eq!(settings.get("SMART_GUARD_CLIENT_SECRET"), Some("<redacted>"));
    /// assert_eq!(settings.get("SMART_GUARD_CACHE_MAX_TTL_SECS"), Some("60"));
    /// assert!(!settings.to_string().contains("s3cret"));
    /// ```
    pub fn settings(&self) -> Settings {
        let text = |value: Option<&str>| value.unwrap_or(UNSET).to_owned();
        let limits = &self.analysis_limits;
        let mut list = vec![
            (
                ENV_INTROSPECTION_URL,
                text(self.introspection_url.as_ref().map(|u| u.as_str())),
            ),
            (ENV_ISSUER, text(self.issuer.as_deref())),
            (ENV_CLIENT_ID, self.client_id.clone()),
            (ENV_CLIENT_AUTH, self.client_auth.as_str().to_owned()),
            (
                ENV_CLIENT_SECRET,
                text(self.client_secret.as_ref().map(|_| REDACTED)),
            ),
            (
                ENV_CLIENT_SECRET_FILE,
                text(self.client_secret_file.as_deref()),
            ),
        ];
        #[cfg(feature = "client")]
        {
            let key_file = match (&self.client_key, &self.client_key_file) {
                (Some(_), Some(path)) => path.to_string(),
                (Some(_), None) => "set in code".to_owned(),
                (None, _) => UNSET.to_owned(),
            };
            let key_alg = match &self.client_key {
                Some(key) => format!("{} (kid {})", key.alg(), key.kid()),
                None => UNSET.to_owned(),
            };
            list.push((ENV_CLIENT_KEY_FILE, key_file));
            list.push((ENV_CLIENT_KEY_ALG, key_alg));
        }
        let audience = match &self.assertion_audience {
            AssertionAudience::IntrospectionEndpoint => "introspection_endpoint",
            AssertionAudience::Issuer => "issuer",
            AssertionAudience::TokenEndpoint => "token_endpoint",
            AssertionAudience::Value(value) => value.as_str(),
        };
        let rules = |text: &str| if text.is_empty() { "none" } else { text }.to_owned();
        list.extend([
            (ENV_CLIENT_ASSERTION_AUD, audience.to_owned()),
            (
                ENV_TOKEN_URL,
                text(self.token_url.as_ref().map(|u| u.as_str())),
            ),
            (ENV_TOKEN_SCOPE, text(self.token_scope.as_deref())),
            (ENV_CACHE_MAX_TTL_SECS, secs(self.max_ttl)),
            (ENV_NEGATIVE_TTL_SECS, secs(self.negative_ttl)),
            (ENV_CACHE_CAPACITY, self.capacity.to_string()),
            (
                ENV_NEGATIVE_CACHE_CAPACITY,
                self.negative_capacity.to_string(),
            ),
            (ENV_CONNECT_TIMEOUT_MS, millis(self.connect_timeout)),
            (ENV_TIMEOUT_MS, millis(self.timeout)),
            (ENV_MAX_RESPONSE_BYTES, self.max_response_bytes.to_string()),
            (ENV_EXPECTED_ISSUER, text(self.expected_issuer.as_deref())),
            (
                ENV_EXPECTED_AUDIENCE,
                text(self.expected_audience.as_deref()),
            ),
            (ENV_REQUIRE_EXP, self.require_exp.to_string()),
            (ENV_CLOCK_SKEW_SECS, secs(self.clock_skew)),
            (ENV_REALM, self.realm.clone()),
            (ENV_BASE_PATH, self.base_path.clone()),
            (ENV_MAX_TOKEN_BYTES, self.max_token_bytes.to_string()),
            (ENV_MAX_BODY_BYTES, self.max_body_bytes.to_string()),
            (ENV_MAX_JSON_DEPTH, self.max_json_depth.to_string()),
            (
                ENV_MAX_SEARCH_PARAMS,
                limits.max_search_params().to_string(),
            ),
            (ENV_MAX_INCLUDES, limits.max_includes().to_string()),
            (ENV_MAX_SEARCH_DEPTH, limits.max_search_depth().to_string()),
            (
                ENV_MAX_BUNDLE_ENTRIES,
                limits.max_bundle_entries().to_string(),
            ),
            (
                ENV_MAX_ANALYSIS_STEPS,
                limits.max_analysis_steps().to_string(),
            ),
            (ENV_ALLOWED_OPERATIONS, rules(&self.allowed_operations_text)),
            (ENV_BULK_PATHS, rules(&self.bulk_paths_text)),
            (ENV_RETRY_AFTER_SECS, secs(self.retry_after)),
            (ENV_MAX_IN_FLIGHT, self.max_in_flight.to_string()),
            (ENV_BREAKER_FAILURES, self.breaker_failures.to_string()),
            (ENV_BREAKER_COOLDOWN_MS, millis(self.breaker_cooldown)),
            (
                ENV_REQUEST_DEADLINE_MS,
                millis(self.request_deadline.unwrap_or(self.timeout)),
            ),
            (
                ENV_STALE_IF_ERROR_SECS,
                secs(self.stale_if_error.unwrap_or_default()),
            ),
            (ENV_RESOURCE_URL, text(self.resource_url())),
            (ENV_RESOURCE_NAME, text(self.resource_name.as_deref())),
            (ENV_AUDIT, self.audit_log.to_string()),
        ]);
        // Fleet mode's settings, when it is on (the URL's password and the key redacted).
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            list.extend(fleet.settings());
        }
        Settings {
            list: list
                .into_iter()
                .map(|(var, value)| Setting { var, value })
                .collect(),
        }
    }
}

/// Whole seconds as a number; a duration set in code with a fraction keeps it.
fn secs(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        duration.as_secs_f64().to_string()
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Config {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).expect("valid env")
    }

    #[test]
    fn every_variable_the_env_reads_is_shown_once_with_its_effective_value() {
        let config = from(&[
            (ENV_INTROSPECTION_URL, "http://127.0.0.1:9/introspect"),
            (ENV_CLIENT_ID, "fhir-server"),
            (ENV_CLIENT_SECRET, "top-s3cret"),
            (ENV_TIMEOUT_MS, "1500"),
            (ENV_BASE_PATH, "/fhir"),
            (ENV_ALLOWED_OPERATIONS, " POST ValueSet/$expand=ValueSet.r "),
        ]);
        let settings = config.settings();
        let vars: Vec<&str> = settings.iter().map(Setting::var).collect();
        // Every variable of the guard (proxy mode's own are in `ProxyConfig::settings`).
        let env_rs = include_str!("env.rs");
        let declared = env_rs.matches("pub const ENV_").count() - PROXY.len() - FLEET.len();
        assert_eq!(declared, ALL.len(), "ALL lists every guard variable");
        #[cfg(not(feature = "client"))]
        let declared = declared - 2; // the key file and its algorithm need `client`
        assert_eq!(vars.len(), declared, "{vars:?}");
        let mut unique = vars.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), vars.len(), "each once: {vars:?}");
        for (var, value) in [
            (ENV_INTROSPECTION_URL, "http://127.0.0.1:9/introspect"),
            (ENV_ISSUER, "unset"),
            (ENV_CLIENT_AUTH, "client_secret_basic"),
            (ENV_CLIENT_SECRET, "<redacted>"),
            (ENV_TIMEOUT_MS, "1500"),
            (ENV_REQUEST_DEADLINE_MS, "1500"),
            (ENV_BASE_PATH, "/fhir"),
            (ENV_ALLOWED_OPERATIONS, "POST ValueSet/$expand=ValueSet.r"),
            (ENV_BULK_PATHS, "none"),
            (ENV_STALE_IF_ERROR_SECS, "0"),
            (ENV_MAX_SEARCH_DEPTH, "4"),
        ] {
            assert_eq!(settings.get(var), Some(value), "{var}");
        }
        let line = settings.to_string();
        assert!(!line.contains("top-s3cret"), "{line}");
        assert!(!format!("{settings:#} {settings:?}").contains("top-s3cret"));
        assert!(
            line.contains(" SMART_GUARD_ALLOWED_OPERATIONS=\"POST ValueSet/$expand=ValueSet.r\" "),
            "{line}"
        );
        assert_eq!(format!("{settings:#}").lines().count(), vars.len());
    }

    #[cfg(feature = "client")]
    #[test]
    fn the_key_file_path_and_kid_are_shown_never_the_key() {
        let key = crate::client::KeyPair::generate(crate::client::SigningAlg::Es384).expect("key");
        let dir = std::env::temp_dir().join(format!("smart-guard-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("private-key.pem");
        std::fs::write(&path, key.private_key_pem()).expect("write key");
        let path_text = path.to_str().expect("utf-8 path");
        let config = from(&[
            (ENV_INTROSPECTION_URL, "http://127.0.0.1:9/introspect"),
            (ENV_CLIENT_ID, "fhir-server"),
            (ENV_CLIENT_AUTH, "private_key_jwt"),
            (ENV_CLIENT_KEY_FILE, path_text),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        let settings = config.settings();
        assert_eq!(settings.get(ENV_CLIENT_KEY_FILE), Some(path_text));
        assert_eq!(
            settings.get(ENV_CLIENT_KEY_ALG),
            Some(format!("ES384 (kid {})", key.kid()).as_str())
        );
        assert_eq!(settings.get(ENV_CLIENT_SECRET), Some("unset"));
        let pem = key.private_key_pem();
        let body = pem.lines().nth(1).expect("a line of key material");
        assert!(!format!("{settings} {settings:#}").contains(body));
        let in_code = config.with_private_key(key).settings();
        assert_eq!(in_code.get(ENV_CLIENT_KEY_FILE), Some("set in code"));
    }
}
