//! The token endpoint: `client_credentials` with a fully validated client assertion.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::error::OAuthErrorResponse;
use super::form::Form;
use super::state::Shared;
use crate::client::{CLIENT_ASSERTION_TYPE, GRANT_TYPE_CLIENT_CREDENTIALS};

pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .counters
        .token_requests
        .fetch_add(1, Ordering::Relaxed);
    match issue(&shared, &headers, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(answer),
        )
            .into_response(),
        Err(rejection) => {
            tracing::debug!(reason = rejection.description(), "token request rejected");
            rejection.into_response()
        }
    }
}

async fn issue(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthErrorResponse> {
    let form = Form::parse(headers, body)?;
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(OAuthErrorResponse::invalid_client(
            "the token endpoint accepts only private_key_jwt",
        )
        .with_basic_challenge());
    }
    match form.get("grant_type") {
        None => {
            return Err(OAuthErrorResponse::invalid_request(
                "grant_type is required",
            ));
        }
        Some(GRANT_TYPE_CLIENT_CREDENTIALS) => {}
        Some(_) => {
            return Err(OAuthErrorResponse::unsupported_grant_type(
                "only client_credentials is supported",
            ));
        }
    }
    let jwt = form.get("client_assertion").ok_or_else(|| {
        OAuthErrorResponse::invalid_client("client authentication (private_key_jwt) is required")
    })?;
    if form.get("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
        return Err(OAuthErrorResponse::invalid_client(
            "unsupported client_assertion_type",
        ));
    }
    let client_id = shared
        .assertions
        .verify(jwt, &[shared.urls.token.as_str()], |iss| {
            shared.clients.get(iss).map(|c| c.jwks.clone())
        })
        .await?;
    if form.get("client_id").is_some_and(|id| id != client_id) {
        return Err(OAuthErrorResponse::invalid_client(
            "client_id does not match the assertion",
        ));
    }
    let client = shared
        .clients
        .get(&client_id)
        .ok_or_else(|| OAuthErrorResponse::invalid_client("unknown client"))?;
    let requested = form
        .get("scope")
        .ok_or_else(|| OAuthErrorResponse::invalid_scope("scope is required"))?;
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if client.scopes.iter().any(|allowed| allowed == scope) && !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    if granted.is_empty() {
        return Err(OAuthErrorResponse::invalid_scope(
            "none of the requested scopes is allowed for this client",
        ));
    }
    let scope = granted.join(" ");
    let lifetime = shared.token_lifetime.as_secs();
    let (access_token, _) = shared.tokens.issue(&client_id, &scope, lifetime);
    shared
        .counters
        .tokens_issued
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(client_id = %client_id, scope = %scope, "issued access token");
    Ok(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": lifetime,
        "scope": scope,
    }))
}
