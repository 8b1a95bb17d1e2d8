//! The RFC 7662 answer parser and local checks (docs/AUTHORIZATION.md §2.2) on any bytes: never
//! panics; "active" only for a JSON object whose `active` is the boolean `true` and that passes
//! every check (exp required and in the future with the skew, nbf not in the future, iss and aud as
//! configured, token_type bearer), and the values kept are those of the JSON (no duplicate field
//! read one way here and another way there); anything that is not a JSON object is an error (503),
//! never a verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use smart_guard::{
    __fuzz::{AnswerVerdict, parse_introspection_answer},
    IntrospectErrorKind,
};

const NOW: u64 = 1_700_000_000;
const SKEW: u64 = 5;
const ISSUER: &str = "https://as.example";
const AUDIENCE: &str = "https://fhir.example/r4";

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let require_exp = control & 1 == 0;
    let issuer = (control & 2 != 0).then_some(ISSUER);
    let audience = (control & 4 != 0).then_some(AUDIENCE);
    let verdict = parse_introspection_answer(body, NOW, require_exp, SKEW, issuer, audience);
    let json: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    match verdict {
        AnswerVerdict::Active {
            exp,
            nbf,
            iss,
            aud,
            token_type,
            scope,
            scopes,
        } => {
            let object = json.expect("active only for a JSON object");
            assert_eq!(object.get("active"), Some(&Value::Bool(true)));
            assert!(exp.is_some() || !require_exp, "no exp accepted");
            if let Some(exp) = exp {
                assert!(exp + SKEW > NOW, "expired accepted: {exp}");
            }
            assert_eq!(exp, numeric_date(object.get("exp")), "exp as in the JSON");
            assert_eq!(nbf, numeric_date(object.get("nbf")), "nbf as in the JSON");
            assert_eq!(iss.as_deref(), object.get("iss").and_then(Value::as_str));
            if let Some(nbf) = nbf {
                assert!(nbf <= NOW + SKEW, "not yet valid accepted: {nbf}");
            }
            if let (Some(want), Some(iss)) = (issuer, &iss) {
                assert_eq!(iss, want);
            }
            if let Some(want) = audience {
                assert!(aud.is_empty() || aud.iter().any(|a| a == want), "{aud:?}");
            }
            if let Some(t) = &token_type {
                assert!(t.eq_ignore_ascii_case("bearer"), "{t}");
            }
            assert_eq!(
                object.get("scope").and_then(Value::as_str).unwrap_or(""),
                scope
            );
            assert!(scopes <= scope.split(' ').filter(|s| !s.is_empty()).count());
        }
        AnswerVerdict::Inactive { cacheable } => {
            let object = json.expect("a verdict only for a JSON object");
            if object.get("active") != Some(&Value::Bool(true)) {
                // active:false is cacheable; a missing or non-boolean active never is.
                assert_eq!(cacheable, object.get("active") == Some(&Value::Bool(false)));
            }
        }
        AnswerVerdict::Error(kind) => {
            // Not JSON, not an object, a known field mistyped or given twice: the AS is broken.
            assert_eq!(kind, IntrospectErrorKind::MalformedAnswer);
            // A bare {"active":false} or {"active":true,"exp":…} is never an error.
            if let Some(object) = json
                && object.len() == 1
            {
                assert!(
                    !object.get("active").is_some_and(Value::is_boolean),
                    "{object:?}"
                );
            }
        }
        other => panic!("unknown verdict {other:?}"),
    }
});

/// A NumericDate as RFC 7519 reads it (floored), or `None` when absent or null.
fn numeric_date(value: Option<&Value>) -> Option<u64> {
    let n = value?.as_number()?;
    n.as_u64().or_else(|| n.as_f64().map(|f| f as u64))
}
