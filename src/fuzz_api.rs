//! Entry points for the cargo-fuzz targets in `fuzz/` and the benches into parts that are
//! crate-private. Only with the internal feature `fuzzing`; hidden from the docs and not covered
//! by semver: do not use.

use std::time::Duration;

use crate::{
    error::IntrospectErrorKind,
    introspect::{
        response::{self, Answer, Checks},
        token_key::{TokenKey, TokenKeySecret},
    },
};

/// The guard's cache-key digest of a token, with fresh random keys (for `benches/`).
#[derive(Debug)]
pub struct TokenDigest(TokenKeySecret);

impl TokenDigest {
    /// A digest with fresh random keys.
    #[must_use]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(TokenKeySecret::random())
    }

    /// The 256-bit cache key of `token`.
    #[must_use]
    pub fn digest(&self, token: &[u8]) -> [u8; 32] {
        TokenKey::of(&self.0, token).to_bytes()
    }
}

/// What [`parse_introspection_answer`] made of an answer body.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnswerVerdict {
    /// Active and passing every local check.
    Active {
        /// The `exp` kept.
        exp: Option<u64>,
        /// The `nbf` kept.
        nbf: Option<u64>,
        /// The `iss` kept.
        iss: Option<String>,
        /// The `aud` values kept.
        aud: Vec<String>,
        /// The `token_type` kept.
        token_type: Option<String>,
        /// The raw `scope` string.
        scope: String,
        /// How many SMART scopes were recognized in it.
        scopes: usize,
    },
    /// Inactive (or failing a local check); `cacheable` as the guard would cache it.
    Inactive {
        /// Whether the guard would cache this verdict.
        cacheable: bool,
    },
    /// Not a usable answer: the request would get 503.
    Error(IntrospectErrorKind),
}

/// Runs the guard's RFC 7662 answer parser and checks on `body` at unix time `now`.
#[must_use]
pub fn parse_introspection_answer(
    body: &[u8],
    now: u64,
    require_exp: bool,
    clock_skew_secs: u64,
    expected_issuer: Option<&str>,
    expected_audience: Option<&str>,
) -> AnswerVerdict {
    let checks = Checks {
        require_exp,
        clock_skew: Duration::from_secs(clock_skew_secs),
        expected_issuer: expected_issuer.map(str::to_owned),
        expected_audience: expected_audience.map(str::to_owned),
    };
    match response::parse_answer(body, &checks, now) {
        Ok(Answer::Active(info)) => AnswerVerdict::Active {
            exp: info.exp,
            nbf: info.nbf,
            iss: info.iss.as_deref().map(str::to_owned),
            aud: info.aud.iter().map(|a| a.to_string()).collect(),
            token_type: info.token_type.as_deref().map(str::to_owned),
            scope: info.scope.to_string(),
            scopes: info.scopes.scopes().len(),
        },
        Ok(Answer::Inactive { cacheable, .. }) => AnswerVerdict::Inactive { cacheable },
        Err(error) => AnswerVerdict::Error(error.kind()),
    }
}
