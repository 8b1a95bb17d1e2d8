//! The RFC 7662 call: `POST` form `token` + `token_type_hint=access_token`, authenticated as this
//! resource server, with timeouts and an answer size limit.
//!
//! Four ways to authenticate (docs/AUTHORIZATION.md §2.1): `client_secret_basic`,
//! `client_secret_post`, `private_key_jwt` (a fresh RFC 7523 assertion per call) and SMART bearer
//! authorization (this resource server's own Backend Services token, refreshed before expiry and
//! once on a 401).

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use reqwest::Url;

#[cfg(feature = "client")]
use crate::client::{AccessToken, AssertionSigner, BackendServicesClient, ClientErrorKind};
#[cfg(feature = "client")]
use crate::config::AssertionAudience;
use crate::{
    config::{
        ClientAuth, Config, Secret,
        discovery::http_client,
        env::{ENV_CLIENT_ID, ENV_INTROSPECTION_URL},
    },
    error::{ConfigError, IntrospectError, IntrospectErrorKind},
};

/// This resource server's own access token (bearer mode only).
#[cfg(feature = "client")]
type OwnToken = AccessToken;
#[cfg(not(feature = "client"))]
type OwnToken = std::convert::Infallible;

/// Sends introspection requests over one shared connection pool.
#[derive(Debug)]
pub(crate) struct IntrospectionClient {
    http: reqwest::Client,
    url: Url,
    auth: Auth,
    max_answer_bytes: usize,
}

/// How this resource server proves itself to the introspection endpoint. `Debug` never shows a
/// secret: [`Secret`], `HeaderValue` (sensitive), `AssertionSigner` and `BackendServicesClient`
/// all redact themselves.
#[derive(Debug)]
enum Auth {
    /// Precomputed `Authorization: Basic …` value (marked sensitive).
    Basic(HeaderValue),
    Post {
        client_id: String,
        secret: Secret,
    },
    #[cfg(feature = "client")]
    PrivateKeyJwt {
        signer: AssertionSigner,
        audience: String,
    },
    #[cfg(feature = "client")]
    Bearer {
        tokens: BackendServicesClient,
        /// Serialises refreshes after a 401, so concurrent failures replace the token once.
        refresh: tokio::sync::Mutex<()>,
    },
}

impl IntrospectionClient {
    pub(crate) fn new(config: &Config, http: Option<reqwest::Client>) -> Result<Self, ConfigError> {
        config.check_client_auth(true)?;
        let http = match http {
            Some(http) => http,
            None => http_client(config)?,
        };
        let url = config
            .introspection_url
            .clone()
            .ok_or_else(|| ConfigError::Invalid {
                var: ENV_INTROSPECTION_URL,
                reason: "not set; with only SMART_GUARD_ISSUER, call Config::discover() first"
                    .to_owned(),
            })?;
        let secret = || {
            config.client_secret.clone().ok_or(ConfigError::Missing {
                var: crate::config::env::ENV_CLIENT_SECRET,
            })
        };
        let auth = match config.client_auth {
            ClientAuth::ClientSecretBasic => {
                Auth::Basic(basic_header(&config.client_id, &secret()?)?)
            }
            ClientAuth::ClientSecretPost => Auth::Post {
                client_id: config.client_id.clone(),
                secret: secret()?,
            },
            #[cfg(feature = "client")]
            ClientAuth::PrivateKeyJwt => Auth::PrivateKeyJwt {
                signer: signer(config)?,
                audience: assertion_audience(config, &url)?,
            },
            #[cfg(feature = "client")]
            ClientAuth::Bearer => {
                let (Some(token_url), Some(scope)) = (&config.token_url, &config.token_scope)
                else {
                    // check_client_auth(true) has already named the missing setting.
                    return Err(ConfigError::Missing {
                        var: crate::config::env::ENV_TOKEN_URL,
                    });
                };
                Auth::Bearer {
                    tokens: BackendServicesClient::new(
                        token_url.as_str(),
                        signer(config)?,
                        scope.as_str(),
                    )
                    .with_http_client(http.clone()),
                    refresh: tokio::sync::Mutex::new(()),
                }
            }
        };
        Ok(Self {
            http,
            url,
            auth,
            max_answer_bytes: config.max_response_bytes,
        })
    }

    /// Asks the AS about `token` and returns the raw answer body of a 200.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Bytes, IntrospectError> {
        #[cfg(feature = "client")]
        if let Auth::Bearer { tokens, refresh } = &self.auth {
            return self.introspect_with_bearer(token, tokens, refresh).await;
        }
        let response = self.send(token, None).await?;
        self.read_answer(response).await
    }

    /// Bearer mode: on a 401 the AS no longer accepts our token (revoked, AS restarted): replace
    /// it once and retry once. A second 401 is a real credentials problem.
    #[cfg(feature = "client")]
    async fn introspect_with_bearer(
        &self,
        token: &str,
        tokens: &BackendServicesClient,
        refresh: &tokio::sync::Mutex<()>,
    ) -> Result<Bytes, IntrospectError> {
        let ours = tokens.access_token().await.map_err(own_token_error)?;
        let response = self.send(token, Some(&ours)).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return self.read_answer(response).await;
        }
        tracing::debug!("introspection endpoint refused our access token; refreshing it once");
        let fresh = {
            let _one_refresh_at_a_time = refresh.lock().await;
            let current = tokens.access_token().await.map_err(own_token_error)?;
            if current == ours {
                tokens.invalidate().await;
                tokens.access_token().await.map_err(own_token_error)?
            } else {
                // Another request already replaced the refused token.
                current
            }
        };
        let response = self.send(token, Some(&fresh)).await?;
        self.read_answer(response).await
    }

    /// Sends one introspection request for `token`; `bearer` is our own token in bearer mode.
    async fn send(
        &self,
        token: &str,
        bearer: Option<&OwnToken>,
    ) -> Result<reqwest::Response, IntrospectError> {
        let request = self.request(token, bearer)?;
        request.send().await.map_err(transport_error)
    }

    /// Builds the request; synchronous, so the (non-`Send`) form serializer never lives across
    /// an await.
    fn request(
        &self,
        token: &str,
        bearer: Option<&OwnToken>,
    ) -> Result<reqwest::RequestBuilder, IntrospectError> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(token.len() + 64));
        form.append_pair("token", token)
            .append_pair("token_type_hint", "access_token");
        match &self.auth {
            Auth::Basic(basic) => {
                request = request.header(header::AUTHORIZATION, basic.clone());
            }
            Auth::Post { client_id, secret } => {
                form.append_pair("client_id", client_id)
                    .append_pair("client_secret", secret.expose());
            }
            #[cfg(feature = "client")]
            Auth::PrivateKeyJwt { signer, audience } => {
                // A fresh assertion (new jti) per call: ASes reject a replayed jti.
                let assertion = signer.sign(audience).map_err(|e| {
                    IntrospectError::new(
                        IntrospectErrorKind::OwnCredentials,
                        "could not sign the client assertion",
                    )
                    .with_source(e)
                })?;
                form.extend_pairs(assertion.form_params());
            }
            #[cfg(feature = "client")]
            Auth::Bearer { .. } => {
                if let Some(ours) = bearer {
                    // The token is sent only here and never logged; the header is sensitive.
                    let mut value = HeaderValue::try_from(format!("Bearer {}", ours.as_str()))
                        .map_err(|_| {
                            IntrospectError::new(
                                IntrospectErrorKind::OwnCredentials,
                                "our access token cannot be sent in a header",
                            )
                        })?;
                    value.set_sensitive(true);
                    request = request.header(header::AUTHORIZATION, value);
                }
            }
        }
        #[cfg(not(feature = "client"))]
        let _ = bearer;
        Ok(request.body(form.finish()))
    }

    /// Maps the status, then reads the body of a 200 within the size limit.
    async fn read_answer(&self, response: reqwest::Response) -> Result<Bytes, IntrospectError> {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let refused = IntrospectError::new(
                IntrospectErrorKind::CredentialsRejected,
                "the AS rejected this resource server's credentials",
            )
            .with_status(status.as_u16());
            // The RFC 6749 §5.2 error code, if the body has one within a small limit.
            let code = match self.read_limited(response).await {
                Ok(body) if body.len() <= 4096 => serde_json::from_slice::<OAuthError>(&body)
                    .ok()
                    .and_then(|e| e.error),
                _ => None,
            };
            return Err(match code {
                Some(code) => refused.with_oauth_error(&code),
                None => refused,
            });
        }
        if status != StatusCode::OK {
            return Err(
                IntrospectError::new(IntrospectErrorKind::Status, "unexpected status")
                    .with_status(status.as_u16()),
            );
        }
        self.read_limited(response).await
    }

    async fn read_limited(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Bytes, IntrospectError> {
        let too_large = || {
            IntrospectError::new(
                IntrospectErrorKind::AnswerTooLarge,
                "the answer is larger than the configured limit",
            )
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_answer_bytes as u64)
        {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > self.max_answer_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// The `error` member of an RFC 6749 §5.2 error answer.
#[derive(serde::Deserialize)]
struct OAuthError {
    error: Option<String>,
}

/// `Authorization: Basic` with id and secret form-urlencoded first (RFC 6749 §2.3.1).
fn basic_header(client_id: &str, secret: &Secret) -> Result<HeaderValue, ConfigError> {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = format!("{}:{}", encode(client_id), encode(secret.expose()));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    let mut basic = HeaderValue::try_from(basic).map_err(|_| ConfigError::Invalid {
        var: ENV_CLIENT_ID,
        reason: "cannot be sent in an Authorization header".to_owned(),
    })?;
    basic.set_sensitive(true);
    Ok(basic)
}

#[cfg(feature = "client")]
fn signer(config: &Config) -> Result<AssertionSigner, ConfigError> {
    let key = config.client_key.clone().ok_or(ConfigError::Missing {
        var: crate::config::env::ENV_CLIENT_KEY_FILE,
    })?;
    Ok(AssertionSigner::new(config.client_id.clone(), key))
}

/// The `aud` of our assertions at the introspection endpoint.
#[cfg(feature = "client")]
fn assertion_audience(config: &Config, introspection_url: &Url) -> Result<String, ConfigError> {
    let missing = |what: &str| ConfigError::Invalid {
        var: crate::config::env::ENV_CLIENT_ASSERTION_AUD,
        reason: format!("is {what}, but no {what} is set or discovered"),
    };
    Ok(match &config.assertion_audience {
        AssertionAudience::IntrospectionEndpoint => introspection_url.to_string(),
        AssertionAudience::Issuer => config.issuer.clone().ok_or_else(|| missing("issuer"))?,
        AssertionAudience::TokenEndpoint => config
            .token_url
            .as_ref()
            .map(Url::to_string)
            .ok_or_else(|| missing("token_endpoint"))?,
        AssertionAudience::Value(value) => value.clone(),
    })
}

/// Our own token could not be had: the AS is down (503 for the client, like any AS failure), or
/// it refuses our key or scope (a misconfiguration, logged as such).
#[cfg(feature = "client")]
fn own_token_error(error: crate::client::ClientError) -> IntrospectError {
    let (kind, detail) = match error.kind() {
        ClientErrorKind::Transport => (
            IntrospectErrorKind::Connect,
            "could not reach the token endpoint for our own access token",
        ),
        ClientErrorKind::OAuth => (
            IntrospectErrorKind::CredentialsRejected,
            "the token endpoint refused this resource server's own token request",
        ),
        _ => (
            IntrospectErrorKind::OwnCredentials,
            "could not obtain this resource server's own access token",
        ),
    };
    let status = error.status();
    let mut error = IntrospectError::new(kind, detail).with_source(error);
    if let Some(status) = status {
        error = error.with_status(status);
    }
    error
}

fn transport_error(error: reqwest::Error) -> IntrospectError {
    let (kind, detail) = if error.is_timeout() {
        (
            IntrospectErrorKind::Timeout,
            "the AS did not answer in time",
        )
    } else if error.is_connect() {
        (IntrospectErrorKind::Connect, "could not connect to the AS")
    } else {
        (
            IntrospectErrorKind::Transport,
            "transport error talking to the AS",
        )
    };
    // reqwest errors carry the URL (the introspection endpoint), never the token: it is in the body.
    IntrospectError::new(kind, detail).with_source(error.without_url())
}

#[cfg(all(test, feature = "client"))]
mod tests {
    use std::{
        collections::HashMap,
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use axum::{
        Form, Json, Router,
        extract::State,
        http::HeaderMap,
        response::{IntoResponse, Response},
        routing::post,
    };
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    use super::*;
    use crate::client::{KeyPair, SigningAlg};

    #[derive(Default)]
    struct Mock {
        token_calls: AtomicUsize,
        introspect_calls: AtomicUsize,
        /// The bearer token the introspection endpoint currently accepts.
        accepted: Mutex<String>,
        forms: Mutex<Vec<HashMap<String, String>>>,
        authorizations: Mutex<Vec<Option<String>>>,
    }

    async fn token(State(mock): State<Arc<Mock>>) -> Json<Value> {
        let n = mock.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
        Json(
            json!({ "access_token": format!("tok-{n}"), "token_type": "bearer", "expires_in": 300 }),
        )
    }

    async fn introspect(
        State(mock): State<Arc<Mock>>,
        headers: HeaderMap,
        Form(form): Form<HashMap<String, String>>,
    ) -> Response {
        mock.introspect_calls.fetch_add(1, Ordering::SeqCst);
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        mock.forms.lock().expect("lock").push(form);
        mock.authorizations
            .lock()
            .expect("lock")
            .push(authorization.clone());
        let accepted = format!("Bearer {}", mock.accepted.lock().expect("lock"));
        if authorization.is_some_and(|a| a.starts_with("Bearer ") && a != accepted) {
            return http::StatusCode::UNAUTHORIZED.into_response();
        }
        Json(json!({ "active": false })).into_response()
    }

    async fn mock_as() -> (String, Arc<Mock>) {
        let mock = Arc::new(Mock::default());
        let app = Router::new()
            .route("/token", post(token))
            .route("/introspect", post(introspect))
            .with_state(Arc::clone(&mock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, mock)
    }

    fn config(base: &str, auth: ClientAuth) -> Config {
        Config::for_issuer(base, "fhir-rs")
            .expect("issuer")
            .with_introspection_url(format!("{base}/introspect").parse().expect("url"))
            .with_client_auth(auth)
            .with_private_key(KeyPair::generate(SigningAlg::Es384).expect("key"))
    }

    fn claims(jwt: &str) -> Value {
        let payload = jwt.split('.').nth(1).expect("payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
    }

    #[tokio::test]
    async fn private_key_jwt_sends_a_fresh_assertion_for_the_configured_audience() {
        let (base, mock) = mock_as().await;
        for (audience, want) in [
            (
                AssertionAudience::IntrospectionEndpoint,
                format!("{base}/introspect"),
            ),
            (AssertionAudience::Issuer, base.clone()),
            (
                AssertionAudience::Value("urn:as".to_owned()),
                "urn:as".to_owned(),
            ),
        ] {
            mock.forms.lock().expect("lock").clear();
            let client = IntrospectionClient::new(
                &config(&base, ClientAuth::PrivateKeyJwt).with_assertion_audience(audience),
                None,
            )
            .expect("client");
            for _ in 0..2 {
                let body = client.introspect("the-token").await.expect("answer");
                assert_eq!(&body[..], br#"{"active":false}"#);
            }
            let forms = mock.forms.lock().expect("lock").clone();
            let jtis: Vec<Value> = forms
                .iter()
                .map(|form| {
                    assert_eq!(form["token"], "the-token");
                    assert_eq!(
                        form["client_assertion_type"],
                        crate::client::CLIENT_ASSERTION_TYPE
                    );
                    assert!(!form.contains_key("client_secret"));
                    let c = claims(&form["client_assertion"]);
                    assert_eq!(
                        (&c["iss"], &c["sub"]),
                        (&json!("fhir-rs"), &json!("fhir-rs"))
                    );
                    assert_eq!(c["aud"], json!(want));
                    c["jti"].clone()
                })
                .collect();
            assert_eq!(jtis.len(), 2);
            assert_ne!(jtis[0], jtis[1], "a new jti per call");
        }
        assert!(
            mock.authorizations
                .lock()
                .expect("lock")
                .iter()
                .all(Option::is_none)
        );
    }

    #[tokio::test]
    async fn bearer_reuses_its_token_and_refreshes_it_once_on_a_401() {
        let (base, mock) = mock_as().await;
        let config = config(&base, ClientAuth::Bearer)
            .with_token_url(format!("{base}/token").parse().expect("url"))
            .with_token_scope("introspection");
        let client = Arc::new(IntrospectionClient::new(&config, None).expect("client"));
        *mock.accepted.lock().expect("lock") = "tok-1".to_owned();
        for _ in 0..3 {
            client.introspect("t").await.expect("answer");
        }
        assert_eq!(mock.token_calls.load(Ordering::SeqCst), 1, "token reused");
        assert_eq!(
            mock.authorizations
                .lock()
                .expect("lock")
                .last()
                .cloned()
                .flatten()
                .as_deref(),
            Some("Bearer tok-1")
        );

        // The AS forgot tok-1: concurrent calls all see a 401, and the token is replaced once.
        *mock.accepted.lock().expect("lock") = "tok-2".to_owned();
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let client = Arc::clone(&client);
                tokio::spawn(async move { client.introspect("t").await.map(|_| ()) })
            })
            .collect();
        for call in calls {
            call.await.expect("join").expect("answer after the refresh");
        }
        assert_eq!(mock.token_calls.load(Ordering::SeqCst), 2, "one refresh");

        // A token the AS refuses right after issuing it: one refresh, one retry, then an error.
        *mock.accepted.lock().expect("lock") = "never".to_owned();
        let before = mock.introspect_calls.load(Ordering::SeqCst);
        let err = client.introspect("t").await.expect_err("refused");
        assert_eq!(err.kind(), IntrospectErrorKind::CredentialsRejected);
        assert_eq!(err.status(), Some(401));
        assert_eq!(mock.token_calls.load(Ordering::SeqCst), 3);
        assert_eq!(mock.introspect_calls.load(Ordering::SeqCst) - before, 2);
        assert!(
            !format!("{err} {err:?} {client:?}").contains("tok-"),
            "no token in output"
        );
    }

    #[tokio::test]
    async fn bearer_without_a_token_endpoint_is_an_unavailable_as_not_a_panic() {
        let (base, _mock) = mock_as().await;
        let config = config(&base, ClientAuth::Bearer)
            .with_token_url("http://127.0.0.1:9/token".parse().expect("url"))
            .with_token_scope("introspection");
        let client = IntrospectionClient::new(&config, None).expect("client");
        let err = client.introspect("t").await.expect_err("no token endpoint");
        assert_eq!(err.kind(), IntrospectErrorKind::Connect);
    }
}
