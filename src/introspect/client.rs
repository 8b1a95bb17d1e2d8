//! The RFC 7662 call: `POST` form `token` + `token_type_hint=access_token`, authenticated as this
//! resource server, with timeouts and an answer size limit.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use reqwest::Url;

use crate::{
    config::{ClientAuth, Config, Secret},
    error::{ConfigError, IntrospectError, IntrospectErrorKind},
};

/// Sends introspection requests over one shared connection pool.
#[derive(Debug)]
pub(crate) struct IntrospectionClient {
    http: reqwest::Client,
    url: Url,
    auth: ClientAuth,
    client_id: String,
    client_secret: Secret,
    /// Precomputed `Authorization: Basic …` value (marked sensitive).
    basic: HeaderValue,
    max_answer_bytes: usize,
}

impl IntrospectionClient {
    pub(crate) fn new(config: &Config, http: Option<reqwest::Client>) -> Result<Self, ConfigError> {
        let http = match http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(config.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(ConfigError::HttpClient)?,
        };
        // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = format!(
            "{}:{}",
            encode(&config.client_id),
            encode(config.client_secret.expose())
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let mut basic = HeaderValue::try_from(basic).map_err(|_| ConfigError::Invalid {
            var: crate::config::ENV_CLIENT_ID,
            reason: "cannot be sent in an Authorization header".to_owned(),
        })?;
        basic.set_sensitive(true);
        Ok(Self {
            http,
            url: config.introspection_url.clone(),
            auth: config.client_auth,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            basic,
            max_answer_bytes: config.max_response_bytes,
        })
    }

    /// Asks the AS about `token` and returns the raw answer body of a 200.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Bytes, IntrospectError> {
        let body = {
            let mut form =
                form_urlencoded::Serializer::new(String::with_capacity(token.len() + 64));
            form.append_pair("token", token)
                .append_pair("token_type_hint", "access_token");
            if self.auth == ClientAuth::ClientSecretPost {
                form.append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", self.client_secret.expose());
            }
            form.finish()
        };
        let mut request = self
            .http
            .post(self.url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if self.auth == ClientAuth::ClientSecretBasic {
            request = request.header(header::AUTHORIZATION, self.basic.clone());
        }
        let response = request.body(body).send().await.map_err(transport_error)?;

        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(IntrospectError::new(
                IntrospectErrorKind::CredentialsRejected,
                "the AS rejected this resource server's credentials",
            )
            .with_status(status.as_u16()));
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
