//! [`RevocationService`]: `POST` a revoked token to the guard (an RFC 7009-style form,
//! `token=…`), so that every cached answer for it is forgotten, on every replica in fleet mode.
//! For an AS hook or an operator; docs/AUTHORIZATION.md §12.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower_service::Service;

use crate::{
    config::env::{ENV_REVOCATION_SECRET_FILE, Env, missing},
    error::ConfigError,
    layer::SmartGuardLayer,
};

/// Fewest bytes a revocation secret may have.
const MIN_SECRET_BYTES: usize = 16;
/// Largest request body read: a form with one token (the guard's own token limit is smaller).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The bearer secret [`RevocationService`] requires. Never printed.
#[derive(Clone)]
pub struct RevocationSecret(Arc<[u8]>);

impl fmt::Debug for RevocationSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevocationSecret(<redacted>)")
    }
}

impl RevocationSecret {
    /// A secret of at least 16 bytes of visible ASCII (it travels in a header).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `SMART_GUARD_REVOCATION_SECRET_FILE` when it is shorter
    /// or holds other bytes (the reason never quotes it).
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        let invalid = |reason: &str| ConfigError::Invalid {
            var: ENV_REVOCATION_SECRET_FILE,
            reason: reason.to_owned(),
        };
        if secret.len() < MIN_SECRET_BYTES {
            return Err(invalid("the secret needs at least 16 bytes"));
        }
        if !secret.iter().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("the secret must be visible ASCII, without spaces"));
        }
        Ok(Self(secret.into()))
    }

    /// The secret in the file at `path`, one trailing `\n` or `\r\n` trimmed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] when the file cannot be read or the secret is unusable.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let mut bytes = std::fs::read(path).map_err(|e| ConfigError::Invalid {
            var: ENV_REVOCATION_SECRET_FILE,
            reason: format!("cannot read {path:?}: {}", e.kind()),
        })?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self::new(bytes)
    }

    /// The secret in the file `SMART_GUARD_REVOCATION_SECRET_FILE` names.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] when it is unset, else as [`RevocationSecret::from_file`].
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env(|name: &str| std::env::var(name).ok());
        let path = env
            .get(ENV_REVOCATION_SECRET_FILE)
            .ok_or(missing(ENV_REVOCATION_SECRET_FILE))?;
        Self::from_file(path)
    }

    /// Whether `presented` is the secret, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, presented).is_ok()
    }
}

/// Receives revocations: `POST` with `Authorization: Bearer <secret>` and a form body
/// `token=<the revoked token>` (RFC 7009 §2.1's shape). It calls
/// [`SmartGuardLayer::invalidate`] and answers as RFC 7009 §2.2 does:
///
/// - `200` once the token is forgotten (also for a token the guard never saw);
/// - `401` (`invalid_client`) without the secret, in constant time;
/// - `400` (`invalid_request`) without exactly one `token`, for a token that is not an RFC 6750
///   `b64token` once decoded (a `+` sent unencoded reads as a space), or for another content
///   type or a body over 16 KiB; `405` for another method;
/// - `503` (`temporarily_unavailable`, `Retry-After: 1`) when the fleet could not be told:
///   this replica forgot the token; retry.
///
/// Mount it on its own path, apart from the FHIR routes (`smart-guard proxy` serves it on
/// `SMART_GUARD_ADMIN_ADDR`):
///
/// ```no_run
/// use axum::Router;
/// use smart_guard::{RevocationSecret, RevocationService, SmartGuardLayer};
///
/// # fn f() -> Result<(), smart_guard::ConfigError> {
/// let guard = SmartGuardLayer::from_env()?;
/// let admin: Router = Router::new().route_service(
///     "/revoke",
///     RevocationService::new(guard.clone(), RevocationSecret::from_env()?),
/// );
/// # let _ = admin; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RevocationService {
    layer: SmartGuardLayer,
    secret: RevocationSecret,
}

impl RevocationService {
    /// The service for the guard `layer`, open to callers presenting `secret`.
    pub fn new(layer: SmartGuardLayer, secret: RevocationSecret) -> Self {
        Self { layer, secret }
    }
}

impl<B> Service<Request<B>> for RevocationService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.revoke(request).await) })
    }
}

impl RevocationService {
    async fn revoke<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.method() != Method::POST {
            let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, None);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        if !self.authorized(request.headers()) {
            let mut response = answer(StatusCode::UNAUTHORIZED, Some("invalid_client"));
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"revocation\""),
            );
            return response;
        }
        let form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return answer(StatusCode::BAD_REQUEST, Some("invalid_request"));
        }
        let Ok(body) = Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        else {
            return answer(StatusCode::BAD_REQUEST, Some("invalid_request"));
        };
        let body = body.to_bytes();
        let mut tokens = form_urlencoded::parse(&body).filter(|(name, _)| name == "token");
        let (Some((_, token)), None) = (tokens.next(), tokens.next()) else {
            return answer(StatusCode::BAD_REQUEST, Some("invalid_request"));
        };
        // A bearer token is a b64token: a space here is a `+` the caller sent unencoded, and
        // forgetting another token than the one meant would answer 200 for nothing.
        if !crate::bearer::is_b64token(token.as_bytes()) {
            return answer(StatusCode::BAD_REQUEST, Some("invalid_request"));
        }
        match self.layer.invalidate(&token).await {
            Ok(()) => answer(StatusCode::OK, None),
            Err(_) => {
                let mut response = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("temporarily_unavailable"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
        }
    }

    /// Whether `Authorization` is `Bearer <the secret>` (the scheme case-insensitive).
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let value = value.as_bytes();
        let Some((scheme, secret)) = value
            .iter()
            .position(|&b| b == b' ')
            .map(|i| (&value[..i], &value[i + 1..]))
        else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer") && self.secret.matches(secret)
    }
}

/// An empty 200 or an RFC 6749 §5.2-style JSON error.
fn answer(status: StatusCode, error: Option<&'static str>) -> Response<Full<Bytes>> {
    let body = error.map_or_else(Bytes::new, |error| {
        Bytes::from(format!("{{\"error\":\"{error}\"}}"))
    });
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if error.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert!(RevocationSecret::new(b"short".to_vec()).is_err());
        assert!(
            RevocationSecret::new(b"sixteen bytes..!".to_vec()).is_err(),
            "a space"
        );
        let secret = RevocationSecret::new(b"0123456789abcdef".to_vec()).unwrap();
        assert_eq!(format!("{secret:?}"), "RevocationSecret(<redacted>)");
        assert!(secret.matches(b"0123456789abcdef"));
        assert!(!secret.matches(b"0123456789abcdeF"));
        assert!(!secret.matches(b"0123456789abcde"));
        let err = RevocationSecret::new(b"tiny-secret".to_vec())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SMART_GUARD_REVOCATION_SECRET_FILE") && !err.contains("tiny"));
    }

    #[test]
    fn a_secret_file_loses_one_trailing_newline() {
        let path = std::env::temp_dir().join(format!("revocation-secret-{}", std::process::id()));
        std::fs::write(&path, b"0123456789abcdef\r\n").unwrap();
        let secret = RevocationSecret::from_file(&path).unwrap();
        assert!(secret.matches(b"0123456789abcdef"));
        std::fs::remove_file(&path).unwrap();
        assert!(RevocationSecret::from_file(&path).is_err());
    }
}
