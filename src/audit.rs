//! Audit: one record per decision, for an INFO log line (`SMART_GUARD_AUDIT=true`) and for code
//! ([`Config::with_audit_hook`](crate::Config::with_audit_hook)). A record never holds the token.

use std::{fmt, sync::Arc, time::Duration};

use http::{Method, StatusCode};

use crate::{
    claims::VerifiedClaims,
    classify::{FhirRequest, Interaction},
    introspect::response::TokenInfo,
    need::TypeScope,
    rejection::AuthFailure,
    scope::{InsufficientScope, SmartScope},
    throttle::LogEvery,
};

/// What the guard decided for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditOutcome {
    /// Authenticated and authorized: passed to the inner service with its claims.
    Allowed,
    /// A public endpoint (`/metadata`, the discovery documents): passed without a token.
    Public,
    /// Refused with this failure's status.
    Denied(AuthFailure),
}

impl AuditOutcome {
    /// `allowed`, `public`, or the failure's name (`invalid_token`, `insufficient_scope`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Public => "public",
            Self::Denied(kind) => kind.as_str(),
        }
    }
}

/// One decision of the guard, as the audit log line and the audit hook see it.
///
/// It holds what the guard knew when it decided: the client (once the token was found active),
/// the classified request (once it was classified), the scopes that granted it or the scope
/// that was missing. It never holds the token, and the query string is left out (search values
/// may name patients).
///
/// ```
/// use smart_guard::{AuditEvent, AuditOutcome, Config};
///
/// let config = Config::new(
///     "https://as.example.org/introspect".parse().unwrap(),
///     "fhir-server",
///     "s3cret",
/// )
/// .with_audit_hook(|event: &AuditEvent<'_>| {
///     if let AuditOutcome::Denied(kind) = event.outcome() {
///         eprintln!("{} {} denied ({kind:?}) for {:?}", event.method(), event.path(), event.client_id());
///     }
/// });
/// # let _ = config;
/// ```
#[derive(Debug)]
pub struct AuditEvent<'a> {
    outcome: AuditOutcome,
    method: &'a Method,
    path: &'a str,
    token: Option<&'a TokenInfo>,
    request: Option<&'a FhirRequest>,
    claims: Option<&'a VerifiedClaims>,
    missing: Option<&'a InsufficientScope>,
}

impl<'a> AuditEvent<'a> {
    pub(crate) fn allowed(method: &'a Method, path: &'a str, claims: &'a VerifiedClaims) -> Self {
        Self {
            outcome: AuditOutcome::Allowed,
            method,
            path,
            token: Some(claims.token()),
            request: Some(claims.request()),
            claims: Some(claims),
            missing: None,
        }
    }

    pub(crate) fn public(method: &'a Method, path: &'a str) -> Self {
        Self {
            outcome: AuditOutcome::Public,
            method,
            path,
            token: None,
            request: None,
            claims: None,
            missing: None,
        }
    }

    pub(crate) fn denied(
        method: &'a Method,
        path: &'a str,
        kind: AuthFailure,
        token: Option<&'a TokenInfo>,
        request: Option<&'a FhirRequest>,
        missing: Option<&'a InsufficientScope>,
    ) -> Self {
        Self {
            outcome: AuditOutcome::Denied(kind),
            method,
            path,
            token,
            request,
            claims: None,
            missing,
        }
    }

    /// What was decided.
    #[must_use]
    pub fn outcome(&self) -> AuditOutcome {
        self.outcome
    }

    /// The status of a denial; `None` when the request went on to the inner service.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self.outcome {
            AuditOutcome::Denied(kind) => Some(kind.status()),
            AuditOutcome::Allowed | AuditOutcome::Public => None,
        }
    }

    /// The request method.
    #[must_use]
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The request path, without the query.
    #[must_use]
    pub fn path(&self) -> &str {
        self.path
    }

    /// The token's `client_id`, once the token was found active.
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.token.and_then(|t| t.client_id.as_deref())
    }

    /// The token's `jti`, once the token was found active.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.token.and_then(|t| t.jti.as_deref())
    }

    /// The FHIR interaction, once the request was classified.
    #[must_use]
    pub fn interaction(&self) -> Option<Interaction> {
        self.request.map(FhirRequest::interaction)
    }

    /// The classified request (interaction, every type it reaches and the letters each needs).
    #[must_use]
    pub fn request(&self) -> Option<&FhirRequest> {
        self.request
    }

    /// Every resource type the request reaches (empty when it was not classified).
    pub fn resource_types(&self) -> impl Iterator<Item = TypeScope> + '_ {
        self.request
            .into_iter()
            .flat_map(FhirRequest::resource_types)
    }

    /// The scopes that granted an allowed request, each once.
    #[must_use]
    pub fn granted_by(&self) -> Vec<&SmartScope> {
        let mut scopes: Vec<&SmartScope> = Vec::new();
        if let Some(claims) = self.claims {
            for (_, scope) in claims.grants() {
                if !scopes.iter().any(|s| std::ptr::eq(*s, scope)) {
                    scopes.push(scope);
                }
            }
        }
        scopes
    }

    /// What a 403 missed (the scope hint of the challenge, or why nothing could help).
    #[must_use]
    pub fn missing_scope(&self) -> Option<&InsufficientScope> {
        self.missing
    }
}

/// Code that receives every [`AuditEvent`], set with
/// [`Config::with_audit_hook`](crate::Config::with_audit_hook). It runs on the request path,
/// inline: keep it short and hand heavy work to a channel. A panic in it is caught and logged.
#[derive(Clone)]
pub(crate) struct AuditHook(pub(crate) Arc<dyn Fn(&AuditEvent<'_>) + Send + Sync>);

impl fmt::Debug for AuditHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditHook(..)")
    }
}

/// Where audit events go: the log, the hook, or both. `None` in the guard when neither is on,
/// so a request pays one branch for auditing being off.
#[derive(Debug)]
pub(crate) struct Auditor {
    log: bool,
    hook: Option<AuditHook>,
    hook_panics: LogEvery,
}

impl Auditor {
    pub(crate) fn new(log: bool, hook: Option<AuditHook>) -> Option<Self> {
        (log || hook.is_some()).then_some(Self {
            log,
            hook,
            hook_panics: LogEvery::new(Duration::from_secs(60)),
        })
    }

    pub(crate) fn record(&self, event: &AuditEvent<'_>) {
        if self.log {
            log(event);
        }
        if let Some(hook) = &self.hook {
            // A panicking hook must not take the connection (and every HTTP/2 stream on it)
            // down with it: the decision stands, the panic is logged.
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(event)));
            if called.is_err() && self.hook_panics.due() {
                tracing::error!("the audit hook panicked (logged at most once a minute)");
            }
        }
    }
}

/// The INFO line, under the `smart_guard::audit` target so it can be routed on its own.
fn log(event: &AuditEvent<'_>) {
    let types = Joined(event.resource_types().collect::<Vec<_>>(), ",");
    let granted = Joined(event.granted_by(), " ");
    let missing = event.missing.map(InsufficientScope::scope_hint);
    tracing::info!(
        target: "smart_guard::audit",
        outcome = event.outcome.as_str(),
        status = event.status().map(|s| s.as_u16()),
        client_id = event.client_id(),
        jti = event.jti(),
        method = %event.method,
        path = event.path,
        interaction = event.interaction().map(Interaction::as_str),
        types = %types,
        granted_by = %granted,
        missing = missing.as_deref(),
        "decision"
    );
}

/// Items joined by a separator, formatted lazily.
struct Joined<T>(Vec<T>, &'static str);

impl<T: fmt::Display> fmt::Display for Joined<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
