//! `smart-guard check`: does the guard's configuration work? It reads the environment as the
//! layer does, runs discovery if configured, builds the layer and makes one introspection call,
//! printing the effective settings (secrets redacted), the endpoints and the outcome.

use std::io::BufRead as _;

use base64::Engine as _;
use clap::Args;
use smart_guard::config::env::{
    ENV_CLIENT_AUTH, ENV_CLIENT_ID, ENV_CLIENT_KEY_FILE, ENV_CLIENT_SECRET, ENV_TOKEN_SCOPE,
};
use smart_guard::{Config, IntrospectError, IntrospectErrorKind, SmartGuardLayer, TokenStatus};

use crate::BoxError;

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Introspect the token on the first line of standard input (it is never printed) instead
    /// of a random one: reports whether it is active, and its client_id, scope and exp.
    #[arg(long)]
    token_stdin: bool,
}

pub(crate) async fn check(args: &CheckArgs) -> Result<(), BoxError> {
    let config = Config::from_env().map_err(|e| format!("configuration: {e}"))?;
    let settings = config.settings();
    println!("settings (from the SMART_GUARD_* environment; secrets redacted):");
    for line in format!("{settings:#}").lines() {
        println!("  {line}");
    }
    let auth = settings.get(ENV_CLIENT_AUTH).unwrap_or_default().to_owned();

    let config = match config.issuer() {
        Some(issuer) => {
            println!("discovery: reading the metadata of {issuer}");
            config
                .discover()
                .await
                .map_err(|e| format!("discovery failed: {e}"))?
        }
        None => {
            println!("discovery: not configured (SMART_GUARD_ISSUER is unset)");
            config
        }
    };
    let endpoint = |url: Option<&reqwest::Url>| url.map_or("not needed", |u| u.as_str()).to_owned();
    let introspection_url = endpoint(config.introspection_url());
    println!("  introspection_endpoint: {introspection_url}");
    println!("  token_endpoint: {}", endpoint(config.token_url()));

    let layer = SmartGuardLayer::new(config).map_err(|e| format!("configuration: {e}"))?;
    let token = if args.token_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let token = line.trim().to_owned();
        if token.is_empty() {
            return Err("--token-stdin: no token on the first line of standard input".into());
        }
        println!("introspection: the token from standard input");
        token
    } else {
        println!("introspection: a random token, to prove the AS accepts our credentials");
        random_token()
    };
    match layer.introspect_uncached(&token).await {
        Ok(TokenStatus::Active(active)) => {
            println!("  active: true");
            println!("  client_id: {}", active.client_id().unwrap_or("(none)"));
            println!("  scope: {}", active.scope());
            match active.exp() {
                Some(exp) => println!("  exp: {exp} (in {} s)", exp.saturating_sub(now())),
                None => println!("  exp: (none)"),
            }
        }
        Ok(TokenStatus::Inactive { reason }) => {
            println!("  active: false ({reason}): the AS accepted our credentials");
            if args.token_stdin {
                return Err(
                    format!("the token from standard input is not usable: {reason}").into(),
                );
            }
        }
        Ok(other) => return Err(format!("unexpected introspection outcome: {other:?}").into()),
        Err(e) => return Err(explain(&e, &auth, &introspection_url).into()),
    }
    println!("check: ok");
    Ok(())
}

/// What went wrong, which setting to look at, and the error's causes.
fn explain(error: &IntrospectError, auth: &str, url: &str) -> String {
    let what = match error.kind() {
        IntrospectErrorKind::CredentialsRejected => {
            let credentials = match auth {
                "private_key_jwt" => format!(
                    "{ENV_CLIENT_KEY_FILE} (is its public JWKS registered at the AS for {ENV_CLIENT_ID}?)"
                ),
                "bearer" => format!("{ENV_CLIENT_KEY_FILE} and {ENV_TOKEN_SCOPE}"),
                _ => ENV_CLIENT_SECRET.to_owned(),
            };
            format!("credentials rejected: check {ENV_CLIENT_ID} and {credentials}")
        }
        IntrospectErrorKind::Connect => format!("AS unreachable at {url}"),
        IntrospectErrorKind::Timeout => format!("AS too slow at {url}"),
        IntrospectErrorKind::OwnCredentials => {
            "could not produce this resource server's own credentials".to_owned()
        }
        _ => format!("the introspection endpoint {url} gave no usable answer"),
    };
    let mut text = format!("{what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// 256 random bits, base64url: a token no AS has issued.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "smart-guard-check-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
