//! The classifier and the scope check do bounded work on a bounded stack: generated deep and
//! wide inputs (`_has` nests, chains, parameter lists, includes, nested JSON, many Bundle
//! entries) in every position the guard reads (query, `POST _search` form, `If-None-Exist`,
//! batch entry url, conditional reference, `$export` `_typeFilter`) are classified on a thread
//! with a 256 KiB stack, which none of them may overflow.

use http::Method;
use proptest::prelude::*;
use serde_json::json;
use smart_guard::{ClassifyError, Incoming, Limit, Policy, ScopeSet};

/// The stack the classification runs on: an eighth of a tokio worker's.
const STACK: usize = 256 * 1024;

/// How one search parameter list is built.
#[derive(Clone, Debug)]
enum Shape {
    /// `_has:Observation:patient:` nested `n` deep, then `code=1`.
    Has(usize),
    /// A chain of `n` `patient.` links, then `name=x`.
    Chain(usize),
    /// `n` plain parameters.
    Wide(usize),
    /// `n` `_include`s.
    Includes(usize),
    /// `n` `_has` wrapped around a chain of `m` links.
    HasThenChain(usize, usize),
}

impl Shape {
    fn query(&self) -> String {
        match *self {
            Shape::Has(n) => format!("{}code=1", "_has:Observation:patient:".repeat(n)),
            Shape::Chain(n) => format!("{}name=x", "patient.".repeat(n)),
            Shape::Wide(n) => vec!["name=x"; n.max(1)].join("&"),
            Shape::Includes(n) => vec!["_include=Observation:patient"; n.max(1)].join("&"),
            Shape::HasThenChain(n, m) => format!(
                "{}{}name=x",
                "_has:Observation:patient:".repeat(n),
                "patient.".repeat(m)
            ),
        }
    }
}

/// Where the parameter list goes.
#[derive(Clone, Copy, Debug)]
enum Position {
    Query,
    Form,
    IfNoneExist,
    BatchEntryUrl,
    ConditionalReference,
    TypeFilter,
}

fn shape() -> impl Strategy<Value = Shape> {
    // Mostly past the limits, some within them; up to ~300 KB of text.
    let size = prop_oneof![0usize..8, 8usize..200, 200usize..25_000];
    prop_oneof![
        size.clone().prop_map(Shape::Has),
        size.clone().prop_map(Shape::Chain),
        size.clone().prop_map(Shape::Wide),
        size.clone().prop_map(Shape::Includes),
        (size.clone(), size).prop_map(|(n, m)| Shape::HasThenChain(n, m)),
    ]
}

fn position() -> impl Strategy<Value = Position> {
    prop_oneof![
        Just(Position::Query),
        Just(Position::Form),
        Just(Position::IfNoneExist),
        Just(Position::BatchEntryUrl),
        Just(Position::ConditionalReference),
        Just(Position::TypeFilter),
    ]
}

/// Classifies and authorizes under `system/*.cruds` on a small stack; returns the outcome.
fn on_small_stack(
    method: Method,
    path: &'static str,
    query: Option<String>,
    body: Option<(&'static str, Vec<u8>)>,
    condition: Option<String>,
) -> Result<bool, ClassifyError> {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let mut incoming = Incoming::new(&method, path);
            if let Some(query) = &query {
                incoming = incoming.with_query(query);
            }
            if let Some((content_type, body)) = &body {
                incoming = incoming.with_body(content_type, body);
            }
            if let Some(condition) = &condition {
                incoming = incoming.with_if_none_exist(condition);
            }
            let request = Policy::default().classify(&incoming)?;
            let scopes = ScopeSet::parse("system/*.cruds");
            Ok(scopes.authorize(&request, &incoming).is_ok())
        })
        .expect("spawn")
        .join()
        .expect("the classifier fits in 256 KiB of stack")
}

fn classify_at(position: Position, query: String) -> Result<bool, ClassifyError> {
    let form = "application/x-www-form-urlencoded";
    let fhir = "application/fhir+json";
    match position {
        Position::Query => on_small_stack(Method::GET, "/Observation", Some(query), None, None),
        Position::Form => on_small_stack(
            Method::POST,
            "/Observation/_search",
            None,
            Some((form, query.into_bytes())),
            None,
        ),
        Position::IfNoneExist => {
            on_small_stack(Method::POST, "/Observation", None, None, Some(query))
        }
        Position::BatchEntryUrl => {
            let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": format!("Observation?{query}")}}]});
            let body = bundle.to_string().into_bytes();
            on_small_stack(Method::POST, "/", None, Some((fhir, body)), None)
        }
        Position::ConditionalReference => {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
                "request": {"method": "POST", "url": "Encounter"},
                "resource": {"resourceType": "Encounter",
                             "subject": {"reference": format!("Observation?{query}")}}}]});
            let body = bundle.to_string().into_bytes();
            on_small_stack(Method::POST, "/", None, Some((fhir, body)), None)
        }
        Position::TypeFilter => {
            let filter: String =
                form_urlencoded::byte_serialize(format!("Observation?{query}").as_bytes())
                    .collect();
            let query = format!("_type=Observation&_typeFilter={filter}");
            on_small_stack(Method::GET, "/$export", Some(query), None, None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn deep_and_wide_searches_are_classified_on_a_small_stack(shape in shape(), position in position()) {
        let outcome = classify_at(position, shape.query());
        // Past a limit, the refusal names it; within the limits, `system/*.cruds` allows it.
        match outcome {
            Ok(allowed) => prop_assert!(allowed, "{shape:?} at {position:?}"),
            Err(ClassifyError::TooComplex(_)) => {}
            Err(other) => prop_assert!(false, "{shape:?} at {position:?}: {other}"),
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn deeply_nested_json_and_many_entries_are_bounded_on_a_small_stack(
        depth in 0usize..200_000,
        entries in 9_000usize..11_000,
    ) {
        let nested = format!(
            r#"{{"resourceType":"Bundle","type":"batch","entry":[{{"resource":{}1{}}}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let fhir = "application/fhir+json";
        let outcome = on_small_stack(Method::POST, "/", None, Some((fhir, nested.into_bytes())), None);
        prop_assert!(matches!(outcome, Ok(_) | Err(ClassifyError::MalformedBody)));
        let entry = json!({"request": {"method": "GET", "url": "Patient/1"}});
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": vec![entry; entries]});
        let outcome = on_small_stack(Method::POST, "/", None, Some((fhir, bundle.to_string().into_bytes())), None);
        if entries > 10_000 {
            prop_assert_eq!(outcome, Err(ClassifyError::TooComplex(Limit::BundleEntries)));
        } else {
            prop_assert!(outcome.is_ok());
        }
    }
}

#[test]
fn the_request_that_took_the_server_down_is_refused_on_a_small_stack() {
    let body = "_has:Flag:x:".repeat(12_000).into_bytes();
    let outcome = on_small_stack(
        Method::POST,
        "/Patient/_search",
        None,
        Some(("application/x-www-form-urlencoded", body)),
        None,
    );
    assert_eq!(outcome, Err(ClassifyError::TooComplex(Limit::SearchDepth)));
}

#[test]
fn long_type_lists_and_long_names_over_many_types_run_out_of_steps() {
    let steps = Err(ClassifyError::TooComplex(Limit::AnalysisSteps));
    // 120,000 `_type` entries: each costs a step, in every place `_type` is read.
    let types = vec!["Patient"; 120_000].join(",");
    let system = on_small_stack(Method::GET, "/", Some(format!("_type={types}")), None, None);
    assert_eq!(system, steps);
    let typed = on_small_stack(
        Method::GET,
        "/Observation",
        Some(format!("_type={types}")),
        None,
        None,
    );
    assert_eq!(typed, steps);
    let export = on_small_stack(
        Method::GET,
        "/$export",
        Some(format!("_type={types}")),
        None,
        None,
    );
    assert_eq!(export, steps);
    // A 400 KB parameter name with one link, searched over ten types: each type rescans it,
    // so its length is charged per type.
    let ten = "Patient,Observation,Encounter,Condition,Procedure,Group,Device,Location,Flag,List";
    let query = format!("_type={ten}&{}.name=x", "a".repeat(400_000));
    let long = on_small_stack(Method::GET, "/", Some(query), None, None);
    assert_eq!(long, steps);
}
