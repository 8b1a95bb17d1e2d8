//! Property tests: the classifier and the scope check never panic on arbitrary input, and the
//! decision is monotone in the grant (scopes only ever add access, docs/AUTHORIZATION.md §3.5).

use http::Method;
use proptest::prelude::*;
use smart_guard::{Incoming, Policy, ScopeSet};

fn policy() -> Policy {
    Policy::default()
        .with_allowed_operations("POST ValueSet/$expand=ValueSet.r; */[id]/$meta=[type].r")
        .expect("valid operations")
        .with_bulk_paths("/$export-poll-status")
        .expect("valid bulk paths")
        .with_base_url("https://fhir.example/r4")
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
    ]
}

const PATHS: &[&str] = &[
    "/",
    "",
    "/_history",
    "/_search",
    "/Patient",
    "/Observation",
    "/Patient/1",
    "/Observation/2/_history",
    "/Observation/2/_history/3",
    "/Patient/1/Observation",
    "/Patient/1/*",
    "/Patient/_history",
    "/Observation/_search",
    "/$export",
    "/Patient/$export",
    "/Group/1/$export",
    "/Patient/1/$everything",
    "/ValueSet/$expand",
    "/Observation/1/$meta",
    "/$graphql",
    "/$export-poll-status",
    "/Patient/../Observation/1",
];

const PARAMS: &[&str] = &[
    "category=laboratory",
    "category=laboratory,vital-signs",
    "category:not=laboratory",
    "code=1",
    "_include=Observation:patient",
    "_include=Observation:subject",
    "_include:iterate=Patient:organization",
    "_revinclude=Provenance:target",
    "subject:Patient.name=x",
    "patient.name=x",
    "_has:Observation:patient:code=1",
    "_type=Patient,Observation",
    "_type=Observation",
    "_filter=x",
    "_list=1",
];

const ENTRIES: &[&str] = &[
    r#"{"request":{"method":"GET","url":"Patient/1"}}"#,
    r#"{"request":{"method":"GET","url":"Observation?category=laboratory"}}"#,
    r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=1"}}}"#,
    r#"{"request":{"method":"PUT","url":"Patient?identifier=1"}}"#,
    r#"{"request":{"method":"DELETE","url":"Observation/1"}}"#,
    r#"{"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=1"}}"#,
    r#"{"request":{"method":"GET","url":"https://fhir.example/r4/Group/1"}}"#,
];

/// A structured request: method, path, query, If-None-Exist, JSON body.
fn request() -> impl Strategy<Value = (Method, String, String, Option<String>, Option<String>)> {
    (
        method(),
        prop::sample::select(PATHS),
        prop::collection::vec(prop::sample::select(PARAMS), 0..4),
        prop::option::of(prop::sample::select(PARAMS)),
        prop::option::of((
            prop::sample::select(&["batch", "transaction", "collection"][..]),
            prop::collection::vec(prop::sample::select(ENTRIES), 0..4),
        )),
    )
        .prop_map(|(method, path, params, ine, bundle)| {
            let body = bundle.map(|(kind, entries)| {
                format!(
                    r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{}]}}"#,
                    entries.join(",")
                )
            });
            (
                method,
                path.to_owned(),
                params.join("&"),
                ine.map(str::to_owned),
                body,
            )
        })
}

fn scope() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["system", "system", "system", "patient", "user"][..]),
        prop::sample::select(
            &[
                "*",
                "Patient",
                "Observation",
                "Group",
                "Provenance",
                "Organization",
                "ValueSet",
            ][..],
        ),
        prop::sample::select(
            &[
                "c", "r", "s", "rs", "cu", "cruds", "ds", "us", "cs", "read", "write", "*",
            ][..],
        ),
        prop::option::of(prop::sample::select(
            &[
                "category=laboratory",
                "code=1",
                "category=laboratory&code=1",
            ][..],
        )),
    )
        .prop_map(|(context, ty, letters, constraint)| match constraint {
            Some(c) => format!("{context}/{ty}.{letters}?{c}"),
            None => format!("{context}/{ty}.{letters}"),
        })
}

/// `Some(allowed)` when the request classifies; `None` when it is refused before scopes matter.
fn allowed(
    scopes: &[String],
    (method, path, query, ine, body): &(Method, String, String, Option<String>, Option<String>),
) -> Option<bool> {
    let mut incoming = Incoming::new(method, path).with_query(query);
    if let Some(ine) = ine {
        incoming = incoming.with_if_none_exist(ine);
    }
    if let Some(body) = body {
        let content_type = if path.ends_with("_search") {
            "application/x-www-form-urlencoded"
        } else {
            "application/fhir+json"
        };
        incoming = incoming.with_body(content_type, body.as_bytes());
    }
    let mut request = policy().classify(&incoming).ok()?;
    Some(
        ScopeSet::parse(&scopes.join(" "))
            .authorize(&mut request, &incoming)
            .is_ok(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_classifier_never_panics_on_arbitrary_input(
        method in "[A-Z]{1,8}",
        path in "(/[\\PC]{0,12}){0,6}",
        query in proptest::option::of("[\\PC]{0,80}"),
        ine in proptest::option::of("[\\PC]{0,40}"),
        content_type in proptest::option::of(prop::sample::select(&[
            "application/x-www-form-urlencoded",
            "application/fhir+json",
            "application/json; charset=utf-8",
            "text/plain",
        ][..])),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let method = Method::from_bytes(method.as_bytes()).expect("token chars");
        let mut incoming = Incoming::new(&method, &path);
        if let Some(query) = &query {
            incoming = incoming.with_query(query);
        }
        if let Some(ine) = &ine {
            incoming = incoming.with_if_none_exist(ine);
        }
        if let Some(content_type) = content_type {
            incoming = incoming.with_body(content_type, &body);
        }
        if let Ok(mut request) = policy().classify(&incoming) {
            let scopes = ScopeSet::parse("system/*.cruds system/Observation.rs?category=laboratory");
            let _ = scopes.authorize(&mut request, &incoming);
            let _ = request.audit(&scopes).to_string();
        }
    }

    #[test]
    fn arbitrary_bundles_never_panic(body in "[\\PC]{0,400}") {
        let incoming = Incoming::new(&Method::POST, "/")
            .with_body("application/fhir+json", body.as_bytes());
        if let Ok(mut request) = policy().classify(&incoming) {
            let _ = ScopeSet::parse("system/*.cruds").authorize(&mut request, &incoming);
        }
    }

    #[test]
    fn adding_a_scope_never_turns_an_allow_into_a_deny(
        scopes in prop::collection::vec(scope(), 0..5),
        extra in scope(),
        request in request(),
    ) {
        if let Some(true) = allowed(&scopes, &request) {
            let mut more = scopes.clone();
            more.push(extra);
            prop_assert_eq!(allowed(&more, &request), Some(true));
        }
    }

    #[test]
    fn removing_a_scope_never_turns_a_deny_into_an_allow(
        scopes in prop::collection::vec(scope(), 1..6),
        index in any::<prop::sample::Index>(),
        request in request(),
    ) {
        if let Some(false) = allowed(&scopes, &request) {
            let mut fewer = scopes.clone();
            fewer.remove(index.index(fewer.len()));
            prop_assert_eq!(allowed(&fewer, &request), Some(false));
        }
    }

    #[test]
    fn scope_order_does_not_matter(
        scopes in prop::collection::vec(scope(), 0..5),
        request in request(),
    ) {
        let mut reversed = scopes.clone();
        reversed.reverse();
        prop_assert_eq!(allowed(&scopes, &request), allowed(&reversed, &request));
    }
}
