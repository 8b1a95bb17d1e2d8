//! The RFC 7009 revocation endpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::auth::{Caller, authenticate_caller};
use super::error::OAuthErrorResponse;
use super::form::Form;
use super::state::Shared;

pub(crate) async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.counters.revocations.fetch_add(1, Ordering::Relaxed);
    match run(&shared, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(rejection) => {
            tracing::debug!(
                reason = rejection.description(),
                "revocation request rejected"
            );
            rejection.into_response()
        }
    }
}

async fn run(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<(), OAuthErrorResponse> {
    let form = Form::parse(headers, body)?;
    let caller = authenticate_caller(shared, headers, &form, &shared.urls.revocation, true).await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthErrorResponse::invalid_request("token is required"))?;
    // RFC 7009 §2.2: unknown tokens and tokens of other clients still get 200.
    let revoked = match &caller {
        Caller::ResourceServer(_) | Caller::Anonymous => shared.tokens.revoke(token, |_| true),
        Caller::Client(id) => shared
            .tokens
            .revoke(token, |record| &record.client_id == id),
    };
    if revoked {
        tracing::debug!(caller = ?caller, "token revoked");
    }
    Ok(())
}
