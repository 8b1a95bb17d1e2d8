//! What one uncached introspection call found: the public result of
//! [`SmartGuardLayer::introspect_uncached`](crate::SmartGuardLayer::introspect_uncached).

use std::sync::Arc;

use super::response::{Answer, TokenInfo};
use crate::scope::ScopeSet;

/// The verdict on a token after one introspection call and the guard's own checks of the answer
/// (`exp`, `nbf`, `iss`, `aud`, `token_type`; `docs/AUTHORIZATION.md` §2.2).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TokenStatus {
    /// The AS said `active: true` and the answer passed every check.
    Active(ActiveToken),
    /// The AS said `active: false` (`reason` is `"inactive"`), or a check failed (`reason`
    /// names it, e.g. `"token expired"`). Either way the AS accepted this resource server's
    /// credentials: it answered.
    Inactive {
        /// Why the token is not usable, in words.
        reason: &'static str,
    },
}

impl TokenStatus {
    pub(crate) fn from_answer(answer: Answer) -> Self {
        match answer {
            Answer::Active(info) => Self::Active(ActiveToken {
                info: Arc::from(info),
            }),
            Answer::Inactive { reason, .. } => Self::Inactive { reason },
        }
    }

    /// Whether the token is active.
    #[must_use]
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active(_))
    }
}

/// The non-secret fields of an active introspection answer. It never holds the token.
#[derive(Clone, Debug)]
pub struct ActiveToken {
    info: Arc<TokenInfo>,
}

impl ActiveToken {
    /// The granted scope string, as the AS sent it.
    #[must_use]
    pub fn scope(&self) -> &str {
        &self.info.scope
    }

    /// The granted scopes, parsed.
    #[must_use]
    pub fn scopes(&self) -> &ScopeSet {
        &self.info.scopes
    }

    /// `client_id`: the client the token was issued to.
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.info.client_id.as_deref()
    }

    /// `sub`.
    #[must_use]
    pub fn sub(&self) -> Option<&str> {
        self.info.sub.as_deref()
    }

    /// `exp`, seconds since the epoch.
    #[must_use]
    pub fn exp(&self) -> Option<u64> {
        self.info.exp
    }

    /// `iat`, seconds since the epoch.
    #[must_use]
    pub fn iat(&self) -> Option<u64> {
        self.info.iat
    }

    /// `iss`.
    #[must_use]
    pub fn iss(&self) -> Option<&str> {
        self.info.iss.as_deref()
    }

    /// `aud` (a single string becomes one entry).
    #[must_use]
    pub fn aud(&self) -> &[Box<str>] {
        &self.info.aud
    }

    /// `token_type`.
    #[must_use]
    pub fn token_type(&self) -> Option<&str> {
        self.info.token_type.as_deref()
    }

    /// `jti`.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.info.jti.as_deref()
    }
}
