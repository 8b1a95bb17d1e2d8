//! `smart-guard token`: a signed client assertion traded for an access token.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use smart_guard::client::{AssertionSigner, KeyPair, TokenResponse, request_token};

use crate::{BoxError, http, pretty};

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// Token endpoint URL (also the assertion's `aud`).
    #[arg(long, env = "SMART_GUARD_TOKEN_URL")]
    token_url: String,
    /// The backend client's `client_id`.
    #[arg(long)]
    client_id: String,
    /// Private key file (PKCS#8 PEM), as written by `keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Space-separated scopes to request.
    #[arg(long)]
    scope: String,
    /// Print only the access token (for scripts: `TOKEN=$(smart-guard token … --token-only)`).
    #[arg(long)]
    token_only: bool,
}

pub(crate) fn load_key(path: &Path) -> Result<KeyPair, BoxError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(KeyPair::from_pkcs8_pem(&pem)?)
}

pub(crate) fn token_json(token: &TokenResponse) -> Value {
    json!({
        "access_token": token.access_token.as_str(),
        "token_type": token.token_type,
        "expires_in": token.expires_in,
        "scope": token.scope,
    })
}

pub(crate) async fn token(args: TokenArgs) -> Result<(), BoxError> {
    let signer = AssertionSigner::new(args.client_id, load_key(&args.key)?);
    let answer = request_token(&http()?, &args.token_url, &signer, &args.scope).await;
    match answer {
        Ok(token) => {
            if args.token_only {
                println!("{}", token.access_token.as_str());
            } else {
                println!("{}", pretty(&token_json(&token)));
            }
            Ok(())
        }
        Err(e) => {
            if let Some(oauth) = e.oauth_error() {
                eprintln!("{}", pretty(&serde_json::to_value(oauth)?));
            }
            Err(Box::new(e))
        }
    }
}
