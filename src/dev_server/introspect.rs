//! The RFC 7662 introspection endpoint, for authenticated resource servers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::auth::{Caller, authenticate_caller};
use super::error::OAuthErrorResponse;
use super::form::Form;
use super::state::Shared;

pub(crate) async fn introspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .counters
        .introspections
        .fetch_add(1, Ordering::Relaxed);
    match answer(&shared, &headers, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Json(answer),
        )
            .into_response(),
        Err(rejection) => {
            tracing::debug!(
                reason = rejection.description(),
                "introspection request rejected"
            );
            rejection.into_response()
        }
    }
}

async fn answer(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthErrorResponse> {
    let form = Form::parse(headers, body)?;
    match authenticate_caller(shared, headers, &form, &shared.urls.introspection, false).await? {
        Caller::ResourceServer(_) => {}
        Caller::Client(_) | Caller::Anonymous => {
            return Err(OAuthErrorResponse::invalid_client(
                "resource server authentication is required",
            ));
        }
    }
    let token = form
        .get("token")
        .ok_or_else(|| OAuthErrorResponse::invalid_request("token is required"))?;
    // `token_type_hint` needs no handling: this server issues access tokens only.
    Ok(match shared.tokens.active(token) {
        Some(record) => json!({
            "active": true,
            "scope": record.scope,
            "client_id": record.client_id,
            "sub": record.client_id,
            "exp": record.exp,
            "iat": record.iat,
            "iss": shared.urls.issuer,
            "token_type": "bearer",
        }),
        None => json!({ "active": false }),
    })
}
