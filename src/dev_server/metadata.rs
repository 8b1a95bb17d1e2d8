//! `/.well-known/smart-configuration`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::state::Shared;

pub(crate) async fn smart_configuration(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let scopes: BTreeSet<&str> = shared
        .clients
        .values()
        .flat_map(|c| c.scopes.iter().map(String::as_str))
        .collect();
    Json(json!({
        "issuer": shared.urls.issuer,
        "token_endpoint": shared.urls.token,
        "introspection_endpoint": shared.urls.introspection,
        "revocation_endpoint": shared.urls.revocation,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": scopes,
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }))
}
