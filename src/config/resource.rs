//! This protected resource's own identity: its public base URL and name, and the URL of its
//! [RFC 9728](https://www.rfc-editor.org/rfc/rfc9728) protected resource metadata derived from
//! it (§3.1).

use std::sync::Arc;

use super::{Config, http_url};
use crate::error::ConfigError;

/// The well-known suffix of protected resource metadata (RFC 9728 §3).
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The resource identifier and where its metadata lives, computed once by
/// [`Config::with_resource_url`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourceUrl {
    /// The resource identifier: the URL as configured, without a trailing `/`.
    pub(crate) resource: Arc<str>,
    /// The absolute URL of its metadata document.
    pub(crate) metadata_url: Arc<str>,
    /// The path of that URL, which the guard lets through and the router serves.
    pub(crate) metadata_path: Arc<str>,
}

impl ResourceUrl {
    /// Checks `value` and derives the metadata URL, or says why not.
    ///
    /// The identifier must be an absolute http(s) URL with a host, no credentials, query or
    /// fragment (RFC 9728 §1.2 asks for `https`; `http` is allowed for loopback development),
    /// and path segments of RFC 3986 unreserved characters only (letters, digits, `-`, `.`,
    /// `_`, `~`), no dot segments: the FHIR base paths the guard serves, and a path that
    /// can be routed and compared byte for byte.
    fn parse(value: &str) -> Result<Self, String> {
        let url = http_url(value)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "a resource URL has no query or fragment (RFC 9728 §1.2), got {value:?}"
            ));
        }
        let path = url.path().trim_end_matches('/');
        let plain = |segment: &str| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        if !path.is_empty() && !path[1..].split('/').all(plain) {
            return Err(format!(
                "expected the FHIR server's base URL, like https://fhir.example.org/fhir (path \
                 segments of letters, digits, '-', '.', '_', '~'), got {value:?}"
            ));
        }
        let mut origin = url.clone();
        origin.set_path("");
        let origin = origin.as_str().trim_end_matches('/');
        let metadata_path = format!("{WELL_KNOWN}{path}");
        Ok(Self {
            resource: Arc::from(format!("{origin}{path}")),
            metadata_url: Arc::from(format!("{origin}{metadata_path}")),
            metadata_path: Arc::from(metadata_path),
        })
    }
}

impl Config {
    /// The public base URL of the FHIR server this guard protects (`https://fhir.example.org/fhir`),
    /// its resource identifier in the sense of [RFC 9728](https://www.rfc-editor.org/rfc/rfc9728).
    /// A trailing `/` is dropped.
    ///
    /// With it, the guard adds `resource_metadata="<url>"` (RFC 9728 §5.1) to every
    /// `WWW-Authenticate` challenge it sends and lets `GET`/`HEAD` of exactly the metadata path
    /// through without a token, and [`metadata::router`](crate::metadata) serves the metadata
    /// there. The metadata URL puts `/.well-known/oauth-protected-resource` between the host and
    /// the path (§3.1):
    ///
    /// ```
    /// use smart_guard::Config;
    ///
    /// let config = Config::new("https://as.example/introspect".parse().unwrap(), "rs", "s")
    ///     .with_resource_url("https://fhir.example/fhir/")
    ///     .unwrap();
    /// assert_eq!(config.resource_url(), Some("https://fhir.example/fhir"));
    /// assert_eq!(
    ///     config.resource_metadata_url(),
    ///     Some("https://fhir.example/.well-known/oauth-protected-resource/fhir")
    /// );
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the URL is http(s) with a host, has no credentials,
    /// query or fragment, and its path segments are letters, digits, `-`, `.`, `_` and `~`.
    pub fn with_resource_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let resource = ResourceUrl::parse(url).map_err(|reason| ConfigError::Invalid {
            var: "resource_url",
            reason,
        })?;
        self.resource = Some(resource);
        Ok(self)
    }

    /// A human-readable name of the FHIR server, the `resource_name` of its protected resource
    /// metadata (RFC 9728 §2). Without it, the document has no `resource_name`.
    pub fn with_resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// The resource identifier set by [`Config::with_resource_url`], without a trailing `/`.
    #[must_use]
    pub fn resource_url(&self) -> Option<&str> {
        self.resource.as_ref().map(|r| &*r.resource)
    }

    /// The URL of the RFC 9728 protected resource metadata (§3.1), when a resource URL is set.
    #[must_use]
    pub fn resource_metadata_url(&self) -> Option<&str> {
        self.resource.as_ref().map(|r| &*r.metadata_url)
    }

    /// The name set by [`Config::with_resource_name`].
    #[must_use]
    pub fn resource_name(&self) -> Option<&str> {
        self.resource_name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_goes_between_host_and_path_as_rfc_9728_section_3_1_says() {
        for (resource, want_resource, want_url, want_path) in [
            (
                "https://h/fhir",
                "https://h/fhir",
                "https://h/.well-known/oauth-protected-resource/fhir",
                "/.well-known/oauth-protected-resource/fhir",
            ),
            (
                "https://h/fhir/",
                "https://h/fhir",
                "https://h/.well-known/oauth-protected-resource/fhir",
                "/.well-known/oauth-protected-resource/fhir",
            ),
            (
                "https://h",
                "https://h",
                "https://h/.well-known/oauth-protected-resource",
                "/.well-known/oauth-protected-resource",
            ),
            (
                "https://h/",
                "https://h",
                "https://h/.well-known/oauth-protected-resource",
                "/.well-known/oauth-protected-resource",
            ),
            (
                "http://127.0.0.1:8080/api/fhir/r4",
                "http://127.0.0.1:8080/api/fhir/r4",
                "http://127.0.0.1:8080/.well-known/oauth-protected-resource/api/fhir/r4",
                "/.well-known/oauth-protected-resource/api/fhir/r4",
            ),
            (
                "HTTPS://FHIR.Example:443/R4",
                "https://fhir.example/R4",
                "https://fhir.example/.well-known/oauth-protected-resource/R4",
                "/.well-known/oauth-protected-resource/R4",
            ),
        ] {
            let parsed = ResourceUrl::parse(resource).expect(resource);
            assert_eq!(&*parsed.resource, want_resource, "{resource}");
            assert_eq!(&*parsed.metadata_url, want_url, "{resource}");
            assert_eq!(&*parsed.metadata_path, want_path, "{resource}");
        }
    }

    #[test]
    fn a_resource_url_that_is_no_plain_base_url_is_refused() {
        for (bad, why) in [
            ("fhir.example/fhir", "not a URL"),
            ("ftp://h/fhir", "http or https"),
            ("https://user:pw@h/fhir", "credentials"),
            ("https://h/fhir?x=1", "no query or fragment"),
            ("https://h/fhir#top", "no query or fragment"),
            ("https://h/fhir//r4", "path segments"),
            ("https://h/fhir%20r4", "path segments"),
            ("https://h/:fhir", "path segments"),
            ("https://h/{fhir}", "path segments"),
        ] {
            let reason = ResourceUrl::parse(bad).expect_err(bad);
            assert!(reason.contains(why), "{bad}: {reason}");
        }
    }
}
