//! `smart-guard introspect`: ask an RFC 7662 introspection endpoint about a token.

use std::io::Read as _;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::{BoxError, http, pretty};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum IntrospectAuth {
    /// `client_secret_basic`: HTTP Basic.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    Post,
}

#[derive(Debug, Args)]
pub(crate) struct IntrospectArgs {
    /// Introspection endpoint URL.
    #[arg(long, env = "SMART_GUARD_INTROSPECTION_URL")]
    url: String,
    /// The resource server's `client_id` at the authorization server.
    #[arg(long, env = "SMART_GUARD_CLIENT_ID")]
    client_id: String,
    /// Its client secret; prefer the environment variable over the command line.
    #[arg(long, env = "SMART_GUARD_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// How to send the secret.
    #[arg(long, value_enum, default_value = "basic")]
    auth: IntrospectAuth,
    /// The token to introspect; `-` reads it from standard input. A token may begin with `-`
    /// (base64url), so this argument takes hyphen values.
    #[arg(allow_hyphen_values = true)]
    token: String,
}

pub(crate) async fn introspect(args: IntrospectArgs) -> Result<(), BoxError> {
    let token = if args.token == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        buf.trim().to_owned()
    } else {
        args.token
    };
    let form = [
        ("token", token.as_str()),
        ("token_type_hint", "access_token"),
    ];
    let request = http()?
        .post(&args.url)
        .header(reqwest::header::ACCEPT, "application/json");
    let request = match args.auth {
        IntrospectAuth::Basic => {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request
                .basic_auth(enc(&args.client_id), Some(enc(&args.client_secret)))
                .form(&form)
        }
        IntrospectAuth::Post => request.form(&[
            form[0],
            form[1],
            ("client_id", args.client_id.as_str()),
            ("client_secret", args.client_secret.as_str()),
        ]),
    };
    let response = request.send().await.map_err(reqwest::Error::without_url)?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|_| format!("introspection endpoint answered {status} without a JSON body"))?;
    if status.is_success() {
        println!("{}", pretty(&body));
        Ok(())
    } else {
        eprintln!("{}", pretty(&body));
        Err(format!("introspection endpoint answered {status}").into())
    }
}
