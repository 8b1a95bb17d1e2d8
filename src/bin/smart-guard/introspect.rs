//! `smart-guard introspect`: ask an RFC 7662 introspection endpoint about a token, as the guard
//! does: the same `Config` (from these flags, else the same `SMART_GUARD_*` variables), the same
//! client authentication (`client_secret_basic`, `client_secret_post`, `private_key_jwt`,
//! `bearer`) and the same checks of the answer, through
//! [`SmartGuardLayer::introspect_uncached`].

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use smart_guard::config::env::{
    ENV_CLIENT_AUTH, ENV_CLIENT_ID, ENV_CLIENT_KEY_FILE, ENV_CLIENT_SECRET, ENV_INTROSPECTION_URL,
    ENV_ISSUER, ENV_TOKEN_SCOPE, ENV_TOKEN_URL,
};
use smart_guard::{Config, SmartGuardLayer, TokenStatus};

use crate::{BoxError, pretty};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum IntrospectAuth {
    /// `client_secret_basic`: HTTP Basic with the client secret.
    #[value(alias = "client_secret_basic")]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    #[value(alias = "client_secret_post")]
    Post,
    /// `private_key_jwt`: a fresh client assertion signed with `--key`.
    #[value(name = "private_key_jwt", alias = "private-key-jwt")]
    PrivateKeyJwt,
    /// SMART bearer: our own Backend Services token (`--key`, `--token-url`, `--token-scope`).
    Bearer,
}

impl IntrospectAuth {
    fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "client_secret_basic",
            Self::Post => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::Bearer => "bearer",
        }
    }
}

/// Each flag overrides its `SMART_GUARD_*` variable; every other variable the guard reads
/// (`SMART_GUARD_CLIENT_ASSERTION_AUD`, timeouts, `SMART_GUARD_EXPECTED_ISSUER`, …) applies too.
#[derive(Debug, Args)]
pub(crate) struct IntrospectArgs {
    /// Introspection endpoint URL (or SMART_GUARD_INTROSPECTION_URL).
    #[arg(long)]
    url: Option<String>,
    /// The AS issuer, to discover the endpoints from its metadata (or SMART_GUARD_ISSUER).
    #[arg(long)]
    issuer: Option<String>,
    /// The resource server's `client_id` at the AS (or SMART_GUARD_CLIENT_ID).
    #[arg(long)]
    client_id: Option<String>,
    /// Its client secret (or SMART_GUARD_CLIENT_SECRET, preferred: the command line is visible
    /// to other users).
    #[arg(long)]
    client_secret: Option<String>,
    /// How to authenticate (or SMART_GUARD_CLIENT_AUTH; default basic).
    #[arg(long, value_enum)]
    auth: Option<IntrospectAuth>,
    /// Private key file (PKCS#8 PEM, as `keygen` writes it) for private_key_jwt and bearer
    /// (or SMART_GUARD_CLIENT_KEY_FILE).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Token endpoint for bearer mode's own token (or SMART_GUARD_TOKEN_URL, or discovered).
    #[arg(long)]
    token_url: Option<String>,
    /// Scope of bearer mode's own token (or SMART_GUARD_TOKEN_SCOPE).
    #[arg(long)]
    token_scope: Option<String>,
    /// The token to introspect; `-` reads it from standard input. A token may begin with `-`
    /// (base64url), so this argument takes hyphen values.
    #[arg(allow_hyphen_values = true)]
    token: String,
}

impl IntrospectArgs {
    /// The flags given, by the variable each overrides.
    fn overrides(&self) -> Result<HashMap<&'static str, String>, BoxError> {
        let key = match &self.key {
            Some(path) => Some(
                path.to_str()
                    .ok_or("--key: the path is not UTF-8")?
                    .to_owned(),
            ),
            None => None,
        };
        Ok([
            (ENV_INTROSPECTION_URL, self.url.clone()),
            (ENV_ISSUER, self.issuer.clone()),
            (ENV_CLIENT_ID, self.client_id.clone()),
            (ENV_CLIENT_SECRET, self.client_secret.clone()),
            (ENV_CLIENT_AUTH, self.auth.map(|a| a.as_str().to_owned())),
            (ENV_CLIENT_KEY_FILE, key),
            (ENV_TOKEN_URL, self.token_url.clone()),
            (ENV_TOKEN_SCOPE, self.token_scope.clone()),
        ]
        .into_iter()
        .filter_map(|(var, value)| Some((var, value?)))
        .collect())
    }
}

pub(crate) async fn introspect(args: IntrospectArgs) -> Result<(), BoxError> {
    let overrides = args.overrides()?;
    let config = Config::from_lookup(|var| {
        overrides
            .get(var)
            .cloned()
            .or_else(|| std::env::var(var).ok())
    })?;
    let layer = SmartGuardLayer::new(config.discover().await?)?;
    let token = if args.token == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        buf.trim().to_owned()
    } else {
        args.token
    };
    match layer.introspect_uncached(&token).await? {
        TokenStatus::Active(active) => {
            let mut answer = Map::new();
            answer.insert("active".to_owned(), json!(true));
            answer.insert("scope".to_owned(), json!(active.scope()));
            for (name, value) in [
                ("client_id", json!(active.client_id())),
                ("sub", json!(active.sub())),
                ("exp", json!(active.exp())),
                ("iat", json!(active.iat())),
                ("iss", json!(active.iss())),
                ("token_type", json!(active.token_type())),
                ("jti", json!(active.jti())),
            ] {
                if !value.is_null() {
                    answer.insert(name.to_owned(), value);
                }
            }
            if !active.aud().is_empty() {
                answer.insert("aud".to_owned(), json!(active.aud()));
            }
            println!("{}", pretty(&Value::Object(answer)));
        }
        TokenStatus::Inactive { reason } => {
            println!("{}", pretty(&json!({ "active": false })));
            if reason != "inactive" {
                eprintln!("the AS said active, but the guard would refuse the token: {reason}");
            }
        }
        other => return Err(format!("unexpected introspection outcome: {other:?}").into()),
    }
    Ok(())
}
