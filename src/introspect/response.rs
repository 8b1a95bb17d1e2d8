//! The RFC 7662 answer: parsed once, checked per docs/AUTHORIZATION.md §2.2, kept as the token's
//! claims.

use std::{sync::Arc, time::Duration};

use std::borrow::Cow;

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, Visitor},
};
use serde_json::{Map, Value};

use super::intern;

use crate::{
    error::{IntrospectError, IntrospectErrorKind},
    scope::ScopeSet,
};

/// What the introspection endpoint said about an active token, after the local checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenInfo {
    /// Interned: tokens of one client share the string and its parsed scopes.
    pub(crate) scope: Arc<str>,
    pub(crate) scopes: Arc<ScopeSet>,
    pub(crate) client_id: Option<Arc<str>>,
    pub(crate) sub: Option<Arc<str>>,
    pub(crate) exp: Option<u64>,
    pub(crate) iat: Option<u64>,
    pub(crate) nbf: Option<u64>,
    pub(crate) iss: Option<Arc<str>>,
    pub(crate) aud: Box<[Box<str>]>,
    pub(crate) token_type: Option<Arc<str>>,
    pub(crate) jti: Option<Box<str>>,
    pub(crate) patient: Option<Box<str>>,
    pub(crate) encounter: Option<Box<str>>,
    pub(crate) fhir_user: Option<Box<str>>,
    pub(crate) extra: Map<String, Value>,
    /// Unix milliseconds until which this answer may be served from a cache: min(`exp`, arrival
    /// + max TTL). Set once when the answer arrives; every cache layer ends the entry then.
    pub(crate) cached_until_ms: u64,
    /// Fleet mode: the token's name in the shared cache, by which a revocation finds it.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<crate::fleet::key::SharedKey>,
}

/// The local checks applied to every answer (and `exp` again on every cache hit).
#[derive(Clone, Debug)]
pub(crate) struct Checks {
    pub(crate) require_exp: bool,
    pub(crate) clock_skew: Duration,
    pub(crate) expected_issuer: Option<String>,
    pub(crate) expected_audience: Option<String>,
}

/// The verdict on a well-formed answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Active and passing every local check.
    Active(Box<TokenInfo>),
    /// `active:false`, or a local check failed. `cacheable` is false for answers the AS should
    /// not have given (no `exp`, non-boolean `active`), which are never cached.
    Inactive {
        cacheable: bool,
        reason: &'static str,
    },
}

impl Checks {
    /// Whether a token with this `exp` is still usable at `now` (unix seconds).
    pub(crate) fn exp_ok(&self, exp: Option<u64>, now: u64) -> bool {
        match exp {
            Some(exp) => exp.saturating_add(self.clock_skew.as_secs()) > now,
            None => !self.require_exp,
        }
    }
}

/// Parses and checks an answer body. `now` is unix seconds.
///
/// Parsing streams the JSON object once, borrowing strings from the body where it can; only what
/// the cache keeps is allocated (and the shared parts are interned), so 100 000 cached answers do
/// not leave 100 000 parse leftovers behind in the heap.
///
/// # Errors
///
/// A malformed answer (not a JSON object, a known field of the wrong type or given twice) is an
/// [`IntrospectError`] of kind `MalformedAnswer`: the AS is broken, not the client's token.
pub(crate) fn parse_answer(
    body: &[u8],
    checks: &Checks,
    now: u64,
) -> Result<Answer, IntrospectError> {
    let raw: RawAnswer<'_> = serde_json::from_slice(body).map_err(|_| {
        IntrospectError::new(
            IntrospectErrorKind::MalformedAnswer,
            "answer is not a valid introspection response",
        )
    })?;

    match raw.active {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Ok(Answer::Inactive {
                cacheable: true,
                reason: "inactive",
            });
        }
        // docs/AUTHORIZATION.md §2.2: a missing or non-boolean `active` counts as inactive; never
        // cached.
        _ => {
            return Ok(Answer::Inactive {
                cacheable: false,
                reason: "active is missing or not a boolean",
            });
        }
    }

    let reject = |reason| {
        Ok(Answer::Inactive {
            cacheable: true,
            reason,
        })
    };
    if raw.exp.is_none() && checks.require_exp {
        return Ok(Answer::Inactive {
            cacheable: false,
            reason: "answer has no exp",
        });
    }
    if !checks.exp_ok(raw.exp, now) {
        return reject("token expired");
    }
    if raw
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(checks.clock_skew.as_secs()))
    {
        return reject("token not yet valid (nbf)");
    }
    if let (Some(expected), Some(iss)) = (&checks.expected_issuer, &raw.iss)
        && **iss != **expected
    {
        return reject("issuer mismatch");
    }
    // An `aud` that is present must name us, even when it is an empty list; only an absent (or
    // null) `aud` is not checked (docs/AUTHORIZATION.md §2.2).
    if let (Some(expected), Some(aud)) = (&checks.expected_audience, &raw.aud)
        && !aud.iter().any(|a| **a == **expected)
    {
        return reject("audience mismatch");
    }
    if raw
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return reject("token_type is not bearer");
    }

    let (scope, scopes) = intern::scopes(raw.scope.as_deref().unwrap_or_default());
    let shared = |s: &Option<Cow<'_, str>>| s.as_deref().map(intern::string);
    let owned = |s: Option<Cow<'_, str>>| s.map(|s| Box::<str>::from(s.as_ref()));
    Ok(Answer::Active(Box::new(TokenInfo {
        scope,
        scopes,
        client_id: shared(&raw.client_id),
        sub: shared(&raw.sub),
        exp: raw.exp,
        iat: raw.iat,
        nbf: raw.nbf,
        iss: shared(&raw.iss),
        aud: raw
            .aud
            .iter()
            .flatten()
            .map(|a| Box::<str>::from(a.as_ref()))
            .collect(),
        token_type: shared(&raw.token_type),
        jti: owned(raw.jti),
        patient: owned(raw.patient),
        encounter: owned(raw.encounter),
        fhir_user: owned(raw.fhir_user),
        extra: raw.extra,
        cached_until_ms: 0,
        #[cfg(feature = "redis")]
        shared: None,
    })))
}

/// A string borrowed from the answer body when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The answer as read, before checks: known fields typed, the rest kept as JSON.
#[derive(Default)]
struct RawAnswer<'a> {
    active: Option<Value>,
    scope: Option<Cow<'a, str>>,
    client_id: Option<Cow<'a, str>>,
    sub: Option<Cow<'a, str>>,
    iss: Option<Cow<'a, str>>,
    token_type: Option<Cow<'a, str>>,
    jti: Option<Cow<'a, str>>,
    patient: Option<Cow<'a, str>>,
    encounter: Option<Cow<'a, str>>,
    fhir_user: Option<Cow<'a, str>>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    /// `None` when the answer has no `aud` (or `null`).
    aud: Option<Vec<Cow<'a, str>>>,
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for RawAnswer<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawAnswerVisitor)
    }
}

struct RawAnswerVisitor;

impl<'de> Visitor<'de> for RawAnswerVisitor {
    type Value = RawAnswer<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 7662 introspection response object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawAnswer<'de>, M::Error> {
        fn once<T, E: de::Error>(
            slot: &mut Option<T>,
            value: Option<T>,
            name: &str,
        ) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::custom(format_args!("duplicate field {name}")));
            }
            *slot = value;
            Ok(())
        }
        let mut raw = RawAnswer::default();
        let mut seen_aud = false;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let text = |v: Option<Text<'de>>| v.map(|Text(t)| t);
            match key.as_ref() {
                "active" => {
                    let value = map.next_value::<Value>()?;
                    once(&mut raw.active, Some(value), "active")?;
                }
                "scope" => once(&mut raw.scope, text(map.next_value()?), "scope")?,
                "client_id" => once(&mut raw.client_id, text(map.next_value()?), "client_id")?,
                "sub" => once(&mut raw.sub, text(map.next_value()?), "sub")?,
                "iss" => once(&mut raw.iss, text(map.next_value()?), "iss")?,
                "token_type" => once(&mut raw.token_type, text(map.next_value()?), "token_type")?,
                "jti" => once(&mut raw.jti, text(map.next_value()?), "jti")?,
                "patient" => once(&mut raw.patient, text(map.next_value()?), "patient")?,
                "encounter" => once(&mut raw.encounter, text(map.next_value()?), "encounter")?,
                "fhirUser" => once(&mut raw.fhir_user, text(map.next_value()?), "fhirUser")?,
                "exp" => once(&mut raw.exp, numeric_date(map.next_value()?)?, "exp")?,
                "iat" => once(&mut raw.iat, numeric_date(map.next_value()?)?, "iat")?,
                "nbf" => once(&mut raw.nbf, numeric_date(map.next_value()?)?, "nbf")?,
                "aud" => {
                    if std::mem::replace(&mut seen_aud, true) {
                        return Err(de::Error::custom("duplicate field aud"));
                    }
                    raw.aud = match map.next_value::<Option<OneOrMany<'de>>>()? {
                        None => None,
                        Some(OneOrMany::One(Text(one))) => Some(vec![one]),
                        Some(OneOrMany::Many(many)) => {
                            Some(many.into_iter().map(|Text(t)| t).collect())
                        }
                    };
                }
                _ => {
                    let value = map.next_value::<Value>()?;
                    if raw.extra.insert(key.into_owned(), value).is_some() {
                        return Err(de::Error::custom("duplicate field"));
                    }
                }
            }
        }
        Ok(raw)
    }
}

/// `aud`: a string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(#[serde(borrow)] Text<'a>),
    Many(#[serde(borrow)] Vec<Text<'a>>),
}

/// A NumericDate: seconds since the epoch, possibly fractional (RFC 7519 §2); floored.
fn numeric_date<E: de::Error>(value: Option<serde_json::Number>) -> Result<Option<u64>, E> {
    let Some(n) = value else { return Ok(None) };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| E::custom("not a NumericDate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn checks() -> Checks {
        Checks {
            require_exp: true,
            clock_skew: Duration::from_secs(5),
            expected_issuer: None,
            expected_audience: None,
        }
    }

    fn verdict(body: &str, checks: &Checks) -> Result<Answer, IntrospectErrorKind> {
        parse_answer(body.as_bytes(), checks, NOW).map_err(|e| e.kind())
    }

    fn is_active(body: &str, checks: &Checks) -> bool {
        matches!(verdict(body, checks), Ok(Answer::Active(_)))
    }

    fn inactive(body: &str, checks: &Checks) -> Option<bool> {
        match verdict(body, checks) {
            Ok(Answer::Inactive { cacheable, .. }) => Some(cacheable),
            _ => None,
        }
    }

    #[test]
    fn an_active_answer_keeps_every_field() {
        let body = format!(
            r#"{{"active":true,"scope":"system/Patient.rs openid","client_id":"app","sub":"app",
            "exp":{},"iat":{NOW},"iss":"https://as","aud":["a","b"],"token_type":"Bearer",
            "jti":"j1","patient":"p1","fhirUser":"Practitioner/1","encounter":"e1","tenant":"t1"}}"#,
            NOW + 300
        );
        let Ok(Answer::Active(info)) = verdict(&body, &checks()) else {
            panic!("active expected")
        };
        assert_eq!(&*info.scope, "system/Patient.rs openid");
        assert_eq!(info.scopes.scopes().len(), 1);
        assert_eq!(info.client_id.as_deref(), Some("app"));
        assert_eq!(info.exp, Some(NOW + 300));
        assert_eq!(info.iat, Some(NOW));
        assert_eq!(info.aud.len(), 2);
        assert_eq!(info.patient.as_deref(), Some("p1"));
        assert_eq!(info.fhir_user.as_deref(), Some("Practitioner/1"));
        assert_eq!(info.extra.get("tenant"), Some(&Value::String("t1".into())));
        assert!(!info.extra.contains_key("active"));
    }

    #[test]
    fn only_boolean_true_is_active() {
        let exp = NOW + 60;
        assert_eq!(inactive(r#"{"active":false}"#, &checks()), Some(true));
        for body in [
            format!(r#"{{"active":"true","exp":{exp}}}"#),
            format!(r#"{{"active":1,"exp":{exp}}}"#),
            format!(r#"{{"exp":{exp}}}"#),
            format!(r#"{{"active":null,"exp":{exp}}}"#),
        ] {
            assert_eq!(inactive(&body, &checks()), Some(false), "{body}");
        }
    }

    #[test]
    fn exp_is_required_by_default_and_never_cached_when_missing() {
        assert_eq!(inactive(r#"{"active":true}"#, &checks()), Some(false));
        let lenient = Checks {
            require_exp: false,
            ..checks()
        };
        assert!(is_active(r#"{"active":true}"#, &lenient));
    }

    #[test]
    fn exp_and_nbf_are_checked_with_the_skew() {
        let c = checks();
        assert!(is_active(
            &format!(r#"{{"active":true,"exp":{}}}"#, NOW + 1),
            &c
        ));
        assert!(is_active(
            &format!(r#"{{"active":true,"exp":{}}}"#, NOW - 4),
            &c
        ));
        assert_eq!(
            inactive(&format!(r#"{{"active":true,"exp":{}}}"#, NOW - 5), &c),
            Some(true)
        );
        let exp = NOW + 60;
        assert!(is_active(
            &format!(r#"{{"active":true,"exp":{exp},"nbf":{}}}"#, NOW + 5),
            &c
        ));
        assert_eq!(
            inactive(
                &format!(r#"{{"active":true,"exp":{exp},"nbf":{}}}"#, NOW + 6),
                &c
            ),
            Some(true)
        );
        assert!(is_active(
            &format!(r#"{{"active":true,"exp":{}.75}}"#, NOW + 60),
            &c
        ));
    }

    #[test]
    fn issuer_audience_and_token_type_are_checked_when_configured_and_present() {
        let c = Checks {
            expected_issuer: Some("https://as".into()),
            expected_audience: Some("https://fhir/base".into()),
            ..checks()
        };
        let exp = NOW + 60;
        for (fields, active) in [
            ("", true),
            (r#","iss":"https://as""#, true),
            (r#","iss":"https://evil""#, false),
            (r#","iss":"https://as/""#, false),
            (r#","aud":"https://fhir/base""#, true),
            (r#","aud":["x","https://fhir/base"]"#, true),
            (r#","aud":"https://other""#, false),
            (r#","aud":[]"#, false),
            (r#","aud":null"#, true),
            (r#","token_type":"bearer""#, true),
            (r#","token_type":"BEARER""#, true),
            (r#","token_type":"refresh_token""#, false),
            (r#","token_type":"DPoP""#, false),
        ] {
            let body = format!(r#"{{"active":true,"exp":{exp}{fields}}}"#);
            assert_eq!(is_active(&body, &c), active, "{body}");
        }
    }

    #[test]
    fn malformed_answers_are_errors_not_verdicts() {
        for body in [
            "",
            "not json",
            "[]",
            r#""active""#,
            r#"{"active":true,"exp":"soon"}"#,
            r#"{"active":true,"exp":-1}"#,
            r#"{"active":true,"exp":1,"scope":["a"]}"#,
            r#"{"active":true,"exp":1,"client_id":7}"#,
            r#"{"active":true,"exp":1,"aud":[1]}"#,
            r#"{"active":true,"exp":1,"aud":{}}"#,
            r#"{"active":true,"exp":1e300}"#,
            r#"{"active":true"#,
        ] {
            assert_eq!(
                verdict(body, &checks()).err(),
                Some(IntrospectErrorKind::MalformedAnswer),
                "{body}"
            );
        }
    }

    #[test]
    fn a_missing_scope_is_an_empty_grant() {
        let body = format!(r#"{{"active":true,"exp":{}}}"#, NOW + 60);
        let Ok(Answer::Active(info)) = verdict(&body, &checks()) else {
            panic!("active expected")
        };
        assert!(info.scopes.scopes().is_empty());
    }
}
