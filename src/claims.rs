//! The verified claims a handler sees: the introspection answer and the classified request.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::{
    classify::FhirRequest,
    grant::{Grant, Grants},
    introspect::response::TokenInfo,
    scope::{ScopeSet, SmartScope},
};

/// What the guard verified about a request, put into its extensions. Cheap to clone (one `Arc`).
///
/// With the `axum` feature it is also an extractor:
///
/// ```
/// use smart_guard::VerifiedClaims;
///
/// async fn handler(claims: VerifiedClaims) -> String {
///     format!("hello {}", claims.client_id().unwrap_or("unknown client"))
/// }
/// # let _: axum::routing::MethodRouter = axum::routing::get(handler);
/// ```
///
/// Handlers may tighten access further (for example per `client_id`); they never widen it.
#[derive(Clone, Debug)]
pub struct VerifiedClaims {
    token: Arc<TokenInfo>,
    request: FhirRequest,
    grants: Grants,
}

impl VerifiedClaims {
    pub(crate) fn new(token: Arc<TokenInfo>, request: FhirRequest, grants: Grants) -> Self {
        Self {
            token,
            request,
            grants,
        }
    }

    /// The introspection answer.
    pub(crate) fn token(&self) -> &TokenInfo {
        &self.token
    }

    /// The introspection answer as shared by every request with the same cached token.
    #[cfg(feature = "proxy")]
    pub(crate) fn shared_token(&self) -> &Arc<TokenInfo> {
        &self.token
    }

    /// The classified FHIR request (interaction, type, needs).
    #[must_use]
    pub fn request(&self) -> &FhirRequest {
        &self.request
    }

    /// Which granted scope met each need of the request (the audit trail), with the batch entry
    /// index for batches and transactions.
    pub fn grants(&self) -> impl Iterator<Item = (Grant, &SmartScope)> + '_ {
        let scopes = self.token.scopes.scopes();
        self.grants
            .list(&self.request)
            .into_iter()
            .filter_map(move |grant| scopes.get(grant.scope).map(|scope| (grant, scope)))
    }

    /// The granted scopes, parsed.
    #[must_use]
    pub fn scopes(&self) -> &ScopeSet {
        &self.token.scopes
    }

    /// The granted scope string, as the AS sent it.
    #[must_use]
    pub fn scope(&self) -> &str {
        &self.token.scope
    }

    /// `client_id`: the client the token was issued to.
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.token.client_id.as_deref()
    }

    /// `sub`.
    #[must_use]
    pub fn sub(&self) -> Option<&str> {
        self.token.sub.as_deref()
    }

    /// `exp`, seconds since the epoch.
    #[must_use]
    pub fn exp(&self) -> Option<u64> {
        self.token.exp
    }

    /// `iat`, seconds since the epoch.
    #[must_use]
    pub fn iat(&self) -> Option<u64> {
        self.token.iat
    }

    /// `nbf`, seconds since the epoch.
    #[must_use]
    pub fn nbf(&self) -> Option<u64> {
        self.token.nbf
    }

    /// `iss`.
    #[must_use]
    pub fn iss(&self) -> Option<&str> {
        self.token.iss.as_deref()
    }

    /// `aud` (a single string becomes one entry).
    #[must_use]
    pub fn aud(&self) -> &[Box<str>] {
        &self.token.aud
    }

    /// `token_type`.
    #[must_use]
    pub fn token_type(&self) -> Option<&str> {
        self.token.token_type.as_deref()
    }

    /// `jti`.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.token.jti.as_deref()
    }

    /// SMART `patient` launch context.
    #[must_use]
    pub fn patient(&self) -> Option<&str> {
        self.token.patient.as_deref()
    }

    /// SMART `encounter` launch context.
    #[must_use]
    pub fn encounter(&self) -> Option<&str> {
        self.token.encounter.as_deref()
    }

    /// SMART `fhirUser`.
    #[must_use]
    pub fn fhir_user(&self) -> Option<&str> {
        self.token.fhir_user.as_deref()
    }

    /// Every other field of the introspection answer (`fhirContext`, `tenant`, `username`, …).
    #[must_use]
    pub fn extra(&self) -> &Map<String, Value> {
        &self.token.extra
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for VerifiedClaims {
    type Rejection = (http::StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or((
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "no VerifiedClaims in the request: is SmartGuardLayer installed on this route?",
        ))
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for VerifiedClaims {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
