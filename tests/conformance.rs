//! Conformance suite: one row per rule of docs/AUTHORIZATION.md (§3 scopes, §4 the interaction
//! table, §5 cross-type searches, §6 batches, §7 bulk export and operations, §8 traps, §10
//! decisions), run through the public pure API
//! (`Policy::classify` + `ScopeSet::authorize`). No network.
//!
//! Each row: the rule's name, the granted scope string, the request, and the outcome:
//! `allow`, `deny("hint")` (403 whose `scope=` hint is exactly that; `""` means no scope can
//! help), `malformed` (400 path), `bad_body` (400 body) or `undefined` (404).

use http::Method;
use smart_guard::{ClassifyError, Incoming, Interaction, Policy, ScopeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Allow,
    Deny(String),
    Malformed,
    BadBody,
    /// 400: a header the guard reads is not visible ASCII, or comes twice.
    BadHeader,
    /// 415: a body the guard must read comes in a form it does not read.
    Unsupported,
    /// 400: past an analysis limit.
    TooComplex,
    Undefined,
}

fn allow() -> Outcome {
    Outcome::Allow
}

fn deny(hint: &str) -> Outcome {
    Outcome::Deny(hint.to_owned())
}

const MALFORMED: Outcome = Outcome::Malformed;
const UNDEFINED: Outcome = Outcome::Undefined;
const UNSUPPORTED: Outcome = Outcome::Unsupported;
const BAD_HEADER: Outcome = Outcome::BadHeader;

/// A request line: `"GET /Observation?code=1"`, plus optional If-None-Exist and body.
#[derive(Clone, Copy, Default)]
struct Req<'a> {
    line: &'a str,
    if_none_exist: Option<&'a str>,
    body: Option<(&'a str, &'a str)>,
    content_encoding: Option<&'a str>,
    x_cascade: Option<&'a str>,
}

fn req(line: &str) -> Req<'_> {
    Req {
        line,
        ..Req::default()
    }
}

fn policy() -> Policy {
    Policy::default()
        .with_allowed_operations(
            "POST ValueSet/$expand=ValueSet.r; GET,POST */[id]/$meta=[type].r; POST $convert=*.r",
        )
        .expect("valid operations")
        .with_bulk_paths("/$export-poll-status; GET /bulk-files=*.rs")
        .expect("valid bulk paths")
        .with_base_url("https://fhir.example.org/r4")
}

fn decide(policy: &Policy, scopes: &str, r: Req<'_>) -> (Outcome, Option<Interaction>) {
    let (method, target) = r.line.split_once(' ').expect("METHOD target");
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut incoming = Incoming::new(&method, path);
    if let Some(query) = query {
        incoming = incoming.with_query(query);
    }
    if let Some(condition) = r.if_none_exist {
        incoming = incoming.with_if_none_exist(condition);
    }
    if let Some((content_type, body)) = r.body {
        incoming = incoming.with_body(content_type, body.as_bytes());
    }
    if let Some(encoding) = r.content_encoding {
        incoming = incoming.with_content_encoding(encoding);
    }
    if let Some(cascade) = r.x_cascade {
        incoming = incoming.with_x_cascade(cascade);
    }
    let request = match policy.classify(&incoming) {
        Ok(request) => request,
        Err(ClassifyError::MalformedPath) => return (Outcome::Malformed, None),
        Err(ClassifyError::MalformedBody) => return (Outcome::BadBody, None),
        Err(ClassifyError::UnreadableHeader) => return (Outcome::BadHeader, None),
        Err(ClassifyError::UnsupportedMediaType) => return (Outcome::Unsupported, None),
        Err(ClassifyError::TooComplex(_)) => return (Outcome::TooComplex, None),
        Err(_) => return (Outcome::Undefined, None),
    };
    let interaction = request.interaction();
    if interaction.is_public() {
        return (Outcome::Allow, Some(interaction));
    }
    let outcome = match ScopeSet::parse(scopes).authorize(&request, &incoming) {
        Ok(_) => Outcome::Allow,
        Err(missing) => Outcome::Deny(missing.scope_hint()),
    };
    (outcome, Some(interaction))
}

fn run(cases: &[(&str, &str, Req<'_>, Outcome)]) {
    let policy = policy();
    let mut failures = Vec::new();
    for (rule, scopes, r, expected) in cases {
        let (got, interaction) = decide(&policy, scopes, *r);
        if got != *expected {
            failures.push(format!(
                "{rule}: [{scopes}] {} (ine {:?}, body {:?}) → {got:?} ({interaction:?}), expected {expected:?}",
                r.line, r.if_none_exist, r.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const ALL: &str = "system/*.cruds";
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/fhir+json";

#[test]
fn the_scope_grammar_decides_what_a_token_grants() {
    run(&[
        (
            "v1 read = rs",
            "system/Patient.read",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "v1 read = rs",
            "system/Patient.read",
            req("GET /Patient?name=x"),
            allow(),
        ),
        (
            "write does not imply read",
            "system/Patient.write",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "v1 write = cud",
            "system/Patient.write",
            req("PUT /Patient/1"),
            allow(),
        ),
        (
            "v1 write = cud",
            "system/Patient.write",
            req("DELETE /Patient/1"),
            allow(),
        ),
        (
            "v1 .* = cruds",
            "system/Patient.*",
            req("DELETE /Patient?identifier=x"),
            allow(),
        ),
        (
            "v1 system/*.read",
            "system/*.read",
            req("GET /Observation/1"),
            allow(),
        ),
        (
            "letters in order",
            "system/Patient.sr",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "repeated letters",
            "system/Patient.rr",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "out of order dus",
            "system/Patient.dus",
            req("DELETE /Patient/1"),
            deny("system/Patient.d"),
        ),
        (
            "empty perms invalid",
            "system/Patient.",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "context is case-sensitive",
            "System/Patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "type is case-sensitive",
            "system/patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "letters are case-sensitive",
            "system/Patient.RS",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "unknown type grants nothing",
            "system/Foo.rs system/Patient.r",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "trailing garbage",
            "system/Patient.readfoo",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "c is type create",
            "system/Patient.c",
            req("POST /Patient"),
            allow(),
        ),
        (
            "r covers vread",
            "system/Patient.r",
            req("GET /Patient/1/_history/2"),
            allow(),
        ),
        (
            "r covers instance history",
            "system/Patient.r",
            req("GET /Patient/1/_history"),
            allow(),
        ),
        (
            "s covers type history",
            "system/Patient.s",
            req("GET /Patient/_history"),
            allow(),
        ),
        (
            "r does not cover search",
            "system/Patient.r",
            req("GET /Patient?name=x"),
            deny("system/Patient.s"),
        ),
        (
            "u covers patch",
            "system/Patient.u",
            req("PATCH /Patient/1"),
            allow(),
        ),
        (
            "d is delete",
            "system/Patient.d",
            req("DELETE /Patient/1"),
            allow(),
        ),
        (
            "mixed v1 and v2",
            "system/Patient.read system/Observation.cu",
            req("POST /Observation"),
            allow(),
        ),
        (
            "resource wildcard",
            "system/*.r",
            req("GET /Condition/7"),
            allow(),
        ),
        (
            "no context wildcard",
            "*/Patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "no v2 permission wildcard mix",
            "system/Patient.c*",
            req("POST /Patient"),
            deny("system/Patient.c"),
        ),
        (
            "scopes add up",
            "system/Observation.r system/Observation.s",
            req("GET /Observation?_include=Observation:patient"),
            deny("system/Patient.s"),
        ),
        (
            "union across types",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include=Observation:patient"),
            allow(),
        ),
        (
            "patient/ grants nothing",
            "patient/*.cruds",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "user/ grants nothing",
            "user/Patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "launch and openid ignored",
            "openid launch fhirUser system/Patient.r",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "URI form does not match",
            "http://smarthealthit.org/fhir/scopes/system/*.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "tab is no separator",
            "system/Patient.r\tsystem/Observation.r",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "comma is no separator",
            "system/Patient.r,system/Observation.r",
            req("GET /Observation/1"),
            deny("system/Observation.r"),
        ),
        (
            "runs of spaces",
            "   system/Patient.r    system/Observation.r  ",
            req("GET /Observation/1"),
            allow(),
        ),
        (
            "no percent-decoding",
            "system%2FPatient.r",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
    ]);
}

#[test]
fn granular_scopes_only_help_searches_that_restate_them() {
    let lab = "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let simple = "system/Observation.rs?category=laboratory";
    let two = "system/Observation.s?category=laboratory&status=final";
    run(&[
        (
            "restated exactly",
            simple,
            req("GET /Observation?category=laboratory"),
            allow(),
        ),
        (
            "restated with extra params",
            simple,
            req("GET /Observation?category=laboratory&code=1&date=ge2020"),
            allow(),
        ),
        (
            "restated percent-encoded",
            lab,
            req(
                "GET /Observation?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory",
            ),
            allow(),
        ),
        (
            "restated with raw |",
            lab,
            req(
                "GET /Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            ),
            allow(),
        ),
        (
            "meaning is not compared",
            lab,
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "not restated",
            simple,
            req("GET /Observation?code=1"),
            deny("system/Observation.s"),
        ),
        (
            "other value",
            simple,
            req("GET /Observation?category=vital-signs"),
            deny("system/Observation.s"),
        ),
        (
            "modifier does not count",
            simple,
            req("GET /Observation?category:not=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            ":exact modifier does not count",
            simple,
            req("GET /Observation?category:text=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "comma-OR does not count",
            simple,
            req("GET /Observation?category=laboratory,vital-signs"),
            deny("system/Observation.s"),
        ),
        (
            "repeated AND still narrows",
            simple,
            req("GET /Observation?category=laboratory&category=x,y"),
            allow(),
        ),
        (
            "escaped comma is one value",
            "system/Observation.s?category=a%5C,b",
            req("GET /Observation?category=a%5C%2Cb"),
            allow(),
        ),
        (
            "every pair must be restated",
            two,
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "both pairs restated",
            two,
            req("GET /Observation?status=final&category=laboratory"),
            allow(),
        ),
        (
            "POST _search form body counts",
            simple,
            Req {
                body: Some((FORM, "category=laboratory")),
                ..req("POST /Observation/_search")
            },
            allow(),
        ),
        (
            "POST _search query counts",
            simple,
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search?category=laboratory")
            },
            allow(),
        ),
        (
            "POST _search body without it",
            simple,
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search")
            },
            deny("system/Observation.s"),
        ),
        (
            "compartment search restated",
            simple,
            req("GET /Patient/1/Observation?category=laboratory"),
            allow(),
        ),
        (
            "system search with one _type",
            simple,
            req("GET /?_type=Observation&category=laboratory"),
            allow(),
        ),
        (
            "system search without _type",
            simple,
            req("GET /?category=laboratory"),
            deny("system/*.s"),
        ),
        (
            "other type",
            simple,
            req("GET /Condition?category=laboratory"),
            deny("system/Condition.s"),
        ),
        (
            "read by id never",
            simple,
            req("GET /Observation/1"),
            deny("system/Observation.r"),
        ),
        (
            "vread never",
            simple,
            req("GET /Observation/1/_history/1?category=laboratory"),
            deny("system/Observation.r"),
        ),
        (
            "type history never",
            simple,
            req("GET /Observation/_history?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "create never",
            "system/Observation.cruds?category=laboratory",
            req("POST /Observation"),
            deny("system/Observation.c"),
        ),
        (
            "conditional delete never",
            "system/Observation.cruds?category=laboratory",
            req("DELETE /Observation?category=laboratory"),
            deny("system/Observation.ds"),
        ),
        (
            "$export never",
            "system/Observation.rs?category=laboratory system/Patient.rs",
            req("GET /$export?_type=Observation"),
            deny("system/Observation.rs"),
        ),
        (
            "included same type not covered",
            simple,
            req("GET /Observation?category=laboratory&_revinclude=Observation:has-member"),
            deny("system/Observation.s"),
        ),
        (
            "includes need their own scope",
            simple,
            req("GET /Observation?category=laboratory&_include=Observation:patient"),
            deny("system/Patient.s"),
        ),
        (
            "includes with their own scope",
            "system/Observation.rs?category=laboratory system/Patient.s",
            req("GET /Observation?category=laboratory&_include=Observation:patient"),
            allow(),
        ),
        (
            "patient/ granular grants nothing",
            "patient/Observation.rs?category=laboratory",
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "wildcard granular grants nothing",
            "system/*.rs?category=laboratory",
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "malformed constraint invalid",
            "system/Observation.rs?category",
            req("GET /Observation?category"),
            deny("system/Observation.s"),
        ),
        (
            "trailing ? invalid",
            "system/Observation.rs?",
            req("GET /Observation"),
            deny("system/Observation.s"),
        ),
        (
            "v1 with constraint invalid",
            "system/Observation.read?category=laboratory",
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "granular plus plain r",
            "system/Observation.rs?category=laboratory system/Observation.r",
            req("GET /Observation/1"),
            allow(),
        ),
    ]);
}

#[test]
fn the_interaction_table_maps_each_url_to_its_letters() {
    run(&[
        ("metadata public", "", req("GET /metadata"), allow()),
        (
            "metadata HEAD",
            "",
            req("HEAD /metadata?mode=full"),
            allow(),
        ),
        (
            "smart-configuration",
            "",
            req("GET /.well-known/smart-configuration"),
            allow(),
        ),
        ("read", "system/Patient.r", req("GET /Patient/123"), allow()),
        (
            "read needs r",
            "system/Patient.s",
            req("GET /Patient/123"),
            deny("system/Patient.r"),
        ),
        (
            "vread",
            "system/Patient.r",
            req("GET /Patient/123/_history/4"),
            allow(),
        ),
        (
            "instance history",
            "system/Patient.s",
            req("GET /Patient/123/_history"),
            deny("system/Patient.r"),
        ),
        (
            "type history",
            "system/Patient.r",
            req("GET /Patient/_history"),
            deny("system/Patient.s"),
        ),
        (
            "system history",
            "system/Patient.s system/Observation.s",
            req("GET /_history"),
            deny("system/*.s"),
        ),
        (
            "system history with *",
            "system/*.s",
            req("GET /_history"),
            allow(),
        ),
        (
            "search",
            "system/Observation.s",
            req("GET /Observation?code=1234"),
            allow(),
        ),
        (
            "search without params",
            "system/Observation.s",
            req("GET /Observation"),
            allow(),
        ),
        (
            "POST _search",
            "system/Observation.s",
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search")
            },
            allow(),
        ),
        (
            "POST _search is no create",
            "system/Observation.c",
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search")
            },
            deny("system/Observation.s"),
        ),
        (
            "_type list",
            "system/Patient.s system/Observation.s",
            req("GET /?_type=Patient,Observation&name=x"),
            allow(),
        ),
        (
            "_type list partly granted",
            "system/Patient.s",
            req("GET /?_type=Patient,Observation"),
            deny("system/Observation.s"),
        ),
        (
            "POST /_search _type",
            "system/Patient.s",
            Req {
                body: Some((FORM, "_type=Patient")),
                ..req("POST /_search")
            },
            allow(),
        ),
        (
            "unknown _type",
            ALL,
            req("GET /?_type=Patient,Nope"),
            UNDEFINED,
        ),
        (
            "no _type needs *",
            "system/Patient.s",
            req("GET /?name=x"),
            deny("system/*.s"),
        ),
        (
            "no _type with *",
            "system/*.s",
            req("GET /?name=x"),
            allow(),
        ),
        (
            "compartment search",
            "system/Observation.s",
            req("GET /Patient/1/Observation?code=x"),
            allow(),
        ),
        (
            "compartment needs no Patient",
            "system/Patient.rs",
            req("GET /Patient/1/Observation"),
            deny("system/Observation.s"),
        ),
        (
            "Encounter compartment",
            "system/Condition.s",
            req("GET /Encounter/9/Condition"),
            allow(),
        ),
        (
            "non-compartment type",
            ALL,
            req("GET /Observation/1/Patient"),
            UNDEFINED,
        ),
        (
            "compartment *",
            "system/Observation.s",
            req("GET /Patient/1/*"),
            deny("system/*.s"),
        ),
        (
            "compartment * with *",
            "system/*.s",
            req("GET /Patient/1/*"),
            allow(),
        ),
        ("create", "system/Patient.c", req("POST /Patient"), allow()),
        (
            "conditional create",
            "system/Patient.c",
            Req {
                if_none_exist: Some("identifier=x"),
                ..req("POST /Patient")
            },
            deny("system/Patient.s"),
        ),
        (
            "conditional create cs",
            "system/Patient.cs",
            Req {
                if_none_exist: Some("identifier=x"),
                ..req("POST /Patient")
            },
            allow(),
        ),
        ("update", "system/Patient.u", req("PUT /Patient/1"), allow()),
        (
            "conditional update",
            "system/Patient.u",
            req("PUT /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "conditional update us",
            "system/Patient.us",
            req("PUT /Patient?identifier=x"),
            allow(),
        ),
        (
            "patch",
            "system/Patient.u",
            req("PATCH /Patient/1"),
            allow(),
        ),
        (
            "conditional patch",
            "system/Patient.us",
            req("PATCH /Patient?identifier=x"),
            allow(),
        ),
        (
            "conditional patch needs s",
            "system/Patient.u",
            req("PATCH /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "delete",
            "system/Patient.d",
            req("DELETE /Patient/1"),
            allow(),
        ),
        (
            "conditional delete",
            "system/Patient.d",
            req("DELETE /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "conditional delete ds",
            "system/Patient.ds",
            req("DELETE /Patient?identifier=x"),
            allow(),
        ),
        ("POST / without a body", ALL, req("POST /"), UNSUPPORTED),
        (
            "POST / with XML",
            ALL,
            Req {
                body: Some(("application/fhir+xml", "<Bundle/>")),
                ..req("POST /")
            },
            UNSUPPORTED,
        ),
        (
            "collection bundle",
            ALL,
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"collection","entry":[]}"#,
                )),
                ..req("POST /")
            },
            deny(""),
        ),
        (
            "history bundle",
            ALL,
            Req {
                body: Some((JSON, r#"{"resourceType":"Bundle","type":"history"}"#)),
                ..req("POST /")
            },
            deny(""),
        ),
        (
            "not a bundle",
            ALL,
            Req {
                body: Some((JSON, r#"{"resourceType":"Patient"}"#)),
                ..req("POST /")
            },
            deny(""),
        ),
        ("unlisted operation", ALL, req("POST /$validate"), deny("")),
        (
            "unlisted type operation",
            ALL,
            req("POST /Patient/$validate"),
            deny(""),
        ),
        (
            "unlisted instance operation",
            ALL,
            req("GET /Patient/1/$validate"),
            deny(""),
        ),
        (
            "listed operation",
            "system/ValueSet.r",
            req("POST /ValueSet/$expand"),
            allow(),
        ),
        (
            "listed operation needs",
            "system/CodeSystem.r",
            req("POST /ValueSet/$expand"),
            deny("system/ValueSet.r"),
        ),
        (
            "listed operation method",
            "system/ValueSet.r",
            req("GET /ValueSet/$expand"),
            deny(""),
        ),
        (
            "listed operation other type",
            ALL,
            req("POST /CodeSystem/$expand"),
            deny(""),
        ),
        (
            "[type] needs",
            "system/Observation.r",
            req("GET /Observation/1/$meta"),
            allow(),
        ),
        (
            "[type] needs other type",
            "system/Observation.r",
            req("GET /Patient/1/$meta"),
            deny("system/Patient.r"),
        ),
        (
            "system operation",
            "system/*.r",
            req("POST /$convert"),
            allow(),
        ),
        (
            "$meta is not $validate",
            ALL,
            req("GET /Patient/$meta"),
            deny(""),
        ),
        (
            "$everything",
            "system/*.rs",
            req("GET /Patient/1/$everything"),
            allow(),
        ),
        (
            "$everything needs *",
            "system/Patient.rs system/Observation.rs",
            req("GET /Patient/1/$everything"),
            deny("system/*.rs"),
        ),
        (
            "$everything POST",
            "system/*.rs",
            req("POST /Patient/1/$everything"),
            allow(),
        ),
        (
            "$everything DELETE",
            ALL,
            req("DELETE /Patient/1/$everything"),
            deny(""),
        ),
        (
            "$everything on Observation",
            ALL,
            req("GET /Observation/1/$everything"),
            deny(""),
        ),
        ("GraphQL system", ALL, req("POST /$graphql"), deny("")),
        (
            "GraphQL instance",
            ALL,
            req("GET /Patient/1/$graphql?query=x"),
            deny(""),
        ),
        (
            "POST to an instance",
            ALL,
            req("POST /Patient/1"),
            UNDEFINED,
        ),
        ("GET _search", ALL, req("GET /Patient/_search"), UNDEFINED),
        (
            "type/id/type/id",
            ALL,
            req("GET /Patient/1/Observation/2"),
            UNDEFINED,
        ),
        (
            "unknown _segment",
            ALL,
            req("GET /Patient/_unknown"),
            UNDEFINED,
        ),
        (
            "PUT without id or query",
            ALL,
            req("PUT /Patient"),
            UNDEFINED,
        ),
        ("OPTIONS", ALL, req("OPTIONS /Patient"), UNDEFINED),
        ("unknown type", ALL, req("GET /Nope/1"), UNDEFINED),
    ]);
}

#[test]
fn bulk_export_needs_system_rs_on_everything_exported() {
    let params = r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Observation,Condition"}]}"#;
    let no_type = r#"{"resourceType":"Parameters","parameter":[{"name":"_since","valueInstant":"2020-01-01T00:00:00Z"}]}"#;
    run(&[
        (
            "no _type needs *.rs",
            "system/Patient.rs system/Observation.rs",
            req("GET /$export"),
            deny("system/*.rs"),
        ),
        (
            "no _type with *.rs",
            "system/*.rs",
            req("GET /$export"),
            allow(),
        ),
        (
            "SMART example system/*.read",
            "system/*.read",
            req("GET /$export"),
            allow(),
        ),
        (
            "r alone is not enough",
            "system/*.r",
            req("GET /$export"),
            deny("system/*.s"),
        ),
        (
            "each _type needs rs",
            "system/Observation.rs",
            req("GET /$export?_type=Observation"),
            allow(),
        ),
        (
            "each _type needs rs",
            "system/Observation.r",
            req("GET /$export?_type=Observation"),
            deny("system/Observation.s"),
        ),
        (
            "_type outside the grant fails",
            "system/Patient.rs",
            req("GET /$export?_type=Observation"),
            deny("system/Observation.rs"),
        ),
        (
            "_type list",
            "system/Observation.rs system/Condition.rs",
            req("GET /$export?_type=Observation,Condition"),
            allow(),
        ),
        (
            "repeated _type",
            "system/Observation.rs",
            req("GET /$export?_type=Observation&_type=Condition"),
            deny("system/Condition.rs"),
        ),
        (
            "unknown _type needs *",
            "system/Observation.rs",
            req("GET /$export?_type=Nope"),
            deny("system/*.rs"),
        ),
        (
            "patient/ never counts",
            "patient/*.rs",
            req("GET /$export"),
            deny("system/*.rs"),
        ),
        (
            "user/ never counts",
            "user/*.rs system/Observation.rs",
            req("GET /$export?_type=Observation"),
            allow(),
        ),
        (
            "Patient export needs Patient",
            "system/Observation.rs",
            req("GET /Patient/$export?_type=Observation"),
            deny("system/Patient.rs"),
        ),
        (
            "Patient export",
            "system/Observation.rs system/Patient.rs",
            req("GET /Patient/$export?_type=Observation"),
            allow(),
        ),
        (
            "Patient export no _type",
            "system/Patient.rs",
            req("GET /Patient/$export"),
            deny("system/*.rs"),
        ),
        (
            "Group export needs Group and Patient",
            "system/Observation.rs system/Patient.rs",
            req("GET /Group/7/$export?_type=Observation"),
            deny("system/Group.rs"),
        ),
        (
            "Group export",
            "system/Observation.rs system/Patient.rs system/Group.rs",
            req("GET /Group/7/$export?_type=Observation"),
            allow(),
        ),
        (
            "Group export needs Patient",
            "system/Observation.rs system/Group.rs",
            req("GET /Group/7/$export?_type=Observation"),
            deny("system/Patient.rs"),
        ),
        (
            "_typeFilter changes nothing",
            "system/Observation.rs",
            req("GET /$export?_type=Observation&_typeFilter=Observation%3Fcode%3D1"),
            allow(),
        ),
        (
            "POST Parameters _type",
            "system/Observation.rs system/Condition.rs",
            Req {
                body: Some((JSON, params)),
                ..req("POST /$export")
            },
            allow(),
        ),
        (
            "POST Parameters _type partly",
            "system/Observation.rs",
            Req {
                body: Some((JSON, params)),
                ..req("POST /$export")
            },
            deny("system/Condition.rs"),
        ),
        (
            "POST without _type needs *",
            "system/Observation.rs",
            Req {
                body: Some((JSON, no_type)),
                ..req("POST /$export?_type=Observation")
            },
            deny("system/*.rs"),
        ),
        (
            "POST without body needs *",
            "system/Observation.rs",
            req("POST /$export"),
            deny("system/*.rs"),
        ),
        (
            "export at Observation level",
            ALL,
            req("GET /Observation/$export"),
            deny(""),
        ),
        (
            "export at Patient instance",
            ALL,
            req("GET /Patient/1/$export"),
            deny(""),
        ),
        ("export with DELETE", ALL, req("DELETE /$export"), deny("")),
        (
            "status URL configured",
            "system/*.rs",
            req("GET /$export-poll-status?_jobId=1"),
            allow(),
        ),
        (
            "status URL re-checked",
            "system/Patient.rs",
            req("GET /$export-poll-status?_jobId=1"),
            deny("system/*.rs"),
        ),
        (
            "status cancel",
            "system/*.rs",
            req("DELETE /$export-poll-status?_jobId=1"),
            allow(),
        ),
        (
            "file URL configured",
            "system/*.rs",
            req("GET /bulk-files/job1/Observation.ndjson"),
            allow(),
        ),
        (
            "file URL method",
            "system/*.rs",
            req("DELETE /bulk-files/job1/Observation.ndjson"),
            UNDEFINED,
        ),
        (
            "unconfigured status URL",
            ALL,
            req("GET /_operations/export/1"),
            UNDEFINED,
        ),
        (
            "unconfigured poll operation",
            ALL,
            req("GET /$export-status"),
            deny(""),
        ),
        (
            "bulk path still path-checked",
            ALL,
            req("GET /bulk-files/../Patient/1"),
            MALFORMED,
        ),
    ]);
}

#[test]
fn traps_are_refused_or_need_the_right_scopes() {
    run(&[
        (
            "dot-dot segment",
            ALL,
            req("GET /Patient/../Observation/1"),
            MALFORMED,
        ),
        ("dot segment", ALL, req("GET /Patient/./1"), MALFORMED),
        (
            "encoded dot-dot",
            ALL,
            req("GET /Patient/%2e%2e"),
            MALFORMED,
        ),
        ("encoded slash", ALL, req("GET /Patient%2F1"), MALFORMED),
        ("encoded $", ALL, req("GET /Patient/%24export"), MALFORMED),
        ("encoded letter", ALL, req("GET /%50atient/1"), MALFORMED),
        ("backslash", ALL, req("GET /Patient\\1"), MALFORMED),
        (
            "servlet dot-dot behind ;",
            ALL,
            req("DELETE /Binary/..;/Patient/1"),
            MALFORMED,
        ),
        (
            "semicolon in a type",
            ALL,
            req("GET /Patient;/1"),
            MALFORMED,
        ),
        ("trailing slash", ALL, req("GET /Patient/"), MALFORMED),
        ("empty segment", ALL, req("GET /Patient//1"), MALFORMED),
        (
            "leading double slash",
            ALL,
            req("GET //Patient/1"),
            MALFORMED,
        ),
        (
            "R4 conditional delete form",
            ALL,
            req("DELETE /Patient/?identifier=x"),
            MALFORMED,
        ),
        ("lower-case type", ALL, req("GET /patient/1"), UNDEFINED),
        (
            "_summary=count still search",
            "system/Observation.s",
            req("GET /Observation?_summary=count&_format=json&_pretty=true&_elements=id"),
            allow(),
        ),
        (
            "POST _search body include",
            "system/Observation.s",
            Req {
                body: Some((FORM, "_include=Observation:patient")),
                ..req("POST /Observation/_search")
            },
            deny("system/Patient.s"),
        ),
        (
            "POST _search body non-UTF-8",
            ALL,
            Req {
                body: Some((FORM, "")),
                ..req("POST /Observation/_search?x=%ff")
            },
            allow(),
        ),
        (
            "_include single target",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include=Observation:patient"),
            allow(),
        ),
        (
            "_include explicit target",
            "system/Observation.s system/Group.s",
            req("GET /Observation?_include=Observation:subject:Group"),
            allow(),
        ),
        (
            "_include multi-target needs *",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include=Observation:subject"),
            deny("system/*.s"),
        ),
        (
            "_include=*",
            "system/Observation.s",
            req("GET /Observation?_include=*"),
            deny("system/*.s"),
        ),
        (
            "_include with *",
            "system/*.s",
            req("GET /Observation?_include=*"),
            allow(),
        ),
        (
            "_include:iterate",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include:iterate=Patient:general-practitioner"),
            deny("system/*.s"),
        ),
        (
            "_include:iterate explicit",
            "system/Observation.s system/Patient.s system/Practitioner.s",
            req("GET /Observation?_include:iterate=Patient:general-practitioner:Practitioner"),
            allow(),
        ),
        (
            "R3 :recurse",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include:recurse=Observation:patient"),
            allow(),
        ),
        (
            "_revinclude",
            "system/Patient.s",
            req("GET /Patient?_revinclude=Provenance:target"),
            deny("system/Provenance.s"),
        ),
        (
            "_revinclude granted",
            "system/Patient.s system/Provenance.s",
            req("GET /Patient?_revinclude=Provenance:target"),
            allow(),
        ),
        (
            "_revinclude:iterate",
            "system/Patient.s system/Observation.s",
            req("GET /Patient?_revinclude:iterate=Observation:subject"),
            allow(),
        ),
        (
            "_revinclude=*",
            "system/Patient.s system/Provenance.s",
            req("GET /Patient?_revinclude=*"),
            deny("system/*.s"),
        ),
        (
            "encoded _include",
            "system/Observation.s",
            req("GET /Observation?%5Finclude=Observation%3Apatient"),
            deny("system/Patient.s"),
        ),
        (
            "chain with type",
            "system/Observation.s",
            req("GET /Observation?subject:Patient.name=x"),
            deny("system/Patient.s"),
        ),
        (
            "chain with type granted",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?subject:Patient.name=x"),
            allow(),
        ),
        (
            "chain single target",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?patient.name=x"),
            allow(),
        ),
        (
            "chain multi-target",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?subject.name=x"),
            deny("system/*.s"),
        ),
        (
            "two-link chain",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?patient.organization.name=x"),
            deny("system/Organization.s"),
        ),
        (
            "_has",
            "system/Patient.s",
            req("GET /Patient?_has:Observation:patient:code=1234"),
            deny("system/Observation.s"),
        ),
        (
            "_has granted",
            "system/Patient.s system/Observation.s",
            req("GET /Patient?_has:Observation:patient:code=1234"),
            allow(),
        ),
        (
            "nested _has",
            "system/Patient.s system/Observation.s",
            req("GET /Patient?_has:Observation:patient:_has:AuditEvent:entity:agent=x"),
            deny("system/AuditEvent.s"),
        ),
        (
            "chain in POST body",
            "system/Observation.s",
            Req {
                body: Some((FORM, "subject%3APatient.name=x")),
                ..req("POST /Observation/_search")
            },
            deny("system/Patient.s"),
        ),
        (
            "chain in conditional update",
            "system/Observation.us",
            req("PUT /Observation?patient.identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "chain in If-None-Exist",
            "system/Observation.cs",
            Req {
                if_none_exist: Some("patient.identifier=x"),
                ..req("POST /Observation")
            },
            deny("system/Patient.s"),
        ),
        (
            "_filter needs *",
            "system/Observation.s",
            req("GET /Observation?_filter=code%20eq%201"),
            deny("system/*.s"),
        ),
        (
            "_list needs List",
            "system/Observation.s",
            req("GET /Observation?_list=42"),
            deny("system/List.s"),
        ),
        (
            "_type with chain",
            "system/Observation.s system/Patient.s",
            req("GET /?_type=Observation&patient.name=x"),
            allow(),
        ),
        (
            "_type with _include",
            "system/Observation.s",
            req("GET /?_type=Observation&_include=Observation:patient"),
            deny("system/Patient.s"),
        ),
        (
            "compartment * ",
            "system/Observation.s system/Condition.s",
            req("GET /Patient/1/*?code=x"),
            deny("system/*.s"),
        ),
        (
            "Device compartment",
            "system/Observation.s",
            req("GET /Device/d1/Observation"),
            allow(),
        ),
        (
            "conditional create needs s",
            "system/Observation.c",
            Req {
                if_none_exist: Some("identifier=x"),
                ..req("POST /Observation")
            },
            deny("system/Observation.s"),
        ),
        (
            "upsert needs u, not c",
            "system/Patient.c",
            req("PUT /Patient/new-id"),
            deny("system/Patient.u"),
        ),
        (
            "$validate denied by default",
            ALL,
            req("POST /Patient/$validate"),
            deny(""),
        ),
        (
            "$meta unlisted at type level",
            ALL,
            req("POST /Patient/$meta"),
            deny(""),
        ),
        (
            "$everything needs *",
            "system/Patient.rs",
            req("GET /Patient/1/$everything"),
            deny("system/*.rs"),
        ),
        (
            "system search no _type",
            "system/Observation.s",
            req("GET /?code=x"),
            deny("system/*.s"),
        ),
        (
            "_method override is an unknown parameter: the method is not taken from it, and the guard cannot tell what a server does with it",
            "system/Observation.s",
            req("GET /Observation?_method=DELETE"),
            deny("system/*.s"),
        ),
        (
            "POST to an instance",
            ALL,
            req("POST /Patient/1?_method=PUT"),
            UNDEFINED,
        ),
        ("POST /metadata", ALL, req("POST /metadata"), UNDEFINED),
        ("/Metadata", ALL, req("GET /Metadata"), UNDEFINED),
        (
            "/metadata/../Patient/1",
            ALL,
            req("GET /metadata/../Patient/1"),
            MALFORMED,
        ),
        (
            "id over 64",
            ALL,
            req("GET /Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            UNDEFINED,
        ),
        (
            "id exactly 64",
            "system/Patient.r",
            req("GET /Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            allow(),
        ),
        (
            "matrix parameter",
            ALL,
            req("GET /Patient/1;x=y"),
            MALFORMED,
        ),
        ("underscore id", ALL, req("GET /Patient/_1"), UNDEFINED),
        (
            "HEAD is GET",
            "system/Patient.r",
            req("HEAD /Patient/1"),
            allow(),
        ),
        (
            "HEAD search",
            "system/Patient.r",
            req("HEAD /Patient?name=x"),
            deny("system/Patient.s"),
        ),
    ]);
}

fn bundle(kind: &str, entries: &str) -> String {
    format!(r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{entries}]}}"#)
}

/// Runs rows whose request is `POST /` with this FHIR JSON body.
fn run_bundles(cases: &[(&str, &str, String, Outcome)]) {
    let borrowed: Vec<(&str, &str, Req<'_>, Outcome)> = cases
        .iter()
        .map(|(rule, scopes, body, outcome)| {
            (
                *rule,
                *scopes,
                Req {
                    body: Some((JSON, body.as_str())),
                    ..req("POST /")
                },
                outcome.clone(),
            )
        })
        .collect();
    run(&borrowed);
}

#[test]
fn batch_and_transaction_entries_are_checked_as_if_sent_alone() {
    let read = r#"{"request":{"method":"GET","url":"Patient/1"}}"#;
    let create = r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation"}}"#;
    let search = r#"{"request":{"method":"GET","url":"Observation?category=laboratory&_include=Observation:patient"}}"#;
    let cases: Vec<(&str, &str, String, Outcome)> = vec![
        (
            "batch read",
            "system/Patient.r",
            bundle("batch", read),
            allow(),
        ),
        (
            "transaction read+create",
            "system/Patient.r system/Observation.c",
            bundle("transaction", &format!("{read},{create}")),
            allow(),
        ),
        (
            "any denied entry denies all",
            "system/Patient.r",
            bundle("transaction", &format!("{read},{create}")),
            deny("system/Observation.c"),
        ),
        (
            "batch denied as a whole",
            "system/Observation.c",
            bundle("batch", &format!("{read},{create}")),
            deny("system/Patient.r"),
        ),
        (
            "hint is the union",
            "",
            bundle("batch", &format!("{read},{create}")),
            deny("system/Patient.r system/Observation.c"),
        ),
        (
            "entry search with include",
            "system/Observation.s",
            bundle("batch", search),
            deny("system/Patient.s"),
        ),
        (
            "entry granular search",
            "system/Observation.s?category=laboratory system/Patient.s",
            bundle("batch", search),
            allow(),
        ),
        (
            "ifNoneExist",
            "system/Observation.c",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=1"}}"#,
            ),
            deny("system/Observation.s"),
        ),
        (
            "ifNoneExist granted",
            "system/Observation.cs",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=1"}}"#,
            ),
            allow(),
        ),
        (
            "ifNoneExist on PUT",
            ALL,
            bundle(
                "transaction",
                r#"{"request":{"method":"PUT","url":"Observation/1","ifNoneExist":"identifier=1"}}"#,
            ),
            deny(""),
        ),
        (
            "ifMatch changes nothing",
            "system/Patient.u",
            bundle(
                "transaction",
                r#"{"request":{"method":"PUT","url":"Patient/1","ifMatch":"W/\"2\""}}"#,
            ),
            allow(),
        ),
        (
            "conditional url update",
            "system/Patient.u",
            bundle(
                "transaction",
                r#"{"request":{"method":"PUT","url":"Patient?identifier=x"}}"#,
            ),
            deny("system/Patient.s"),
        ),
        (
            "conditional url delete",
            "system/Patient.ds",
            bundle(
                "transaction",
                r#"{"request":{"method":"DELETE","url":"Patient?identifier=x"}}"#,
            ),
            allow(),
        ),
        (
            "conditional reference",
            "system/Observation.c",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"}}}"#,
            ),
            deny("system/Patient.s"),
        ),
        (
            "conditional reference granted",
            "system/Observation.c system/Patient.s",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"}}}"#,
            ),
            allow(),
        ),
        (
            "plain references are fine",
            "system/Observation.c",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient/1"},"performer":[{"reference":"urn:uuid:9"}]}}"#,
            ),
            allow(),
        ),
        (
            "entry dot segments",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient/../Observation/1"}}"#,
            ),
            deny(""),
        ),
        (
            "entry encoded slash",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient%2F1"}}"#,
            ),
            deny(""),
        ),
        (
            "absolute url to our base",
            "system/Patient.r",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"https://fhir.example.org/r4/Patient/1"}}"#,
            ),
            allow(),
        ),
        (
            "absolute url elsewhere",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"https://evil.example/r4/Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "absolute url prefix trick",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"https://fhir.example.org/r4x/Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "network-path url",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"//evil.example/Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "nested bundle resource",
            ALL,
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Bundle"},"resource":{"resourceType":"Bundle","type":"batch"}}"#,
            ),
            deny(""),
        ),
        (
            "nested batch url",
            ALL,
            bundle("batch", r#"{"request":{"method":"POST","url":""}}"#),
            deny(""),
        ),
        (
            "entry without request",
            ALL,
            bundle("batch", r#"{"resource":{"resourceType":"Patient"}}"#),
            deny(""),
        ),
        (
            "entry with odd method",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"TRACE","url":"Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "entry operation unlisted",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"POST","url":"Patient/$validate"}}"#,
            ),
            deny(""),
        ),
        (
            "entry $everything",
            "system/*.rs",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient/1/$everything"}}"#,
            ),
            allow(),
        ),
        (
            "entry GraphQL",
            ALL,
            bundle("batch", r#"{"request":{"method":"POST","url":"$graphql"}}"#),
            deny(""),
        ),
        (
            "entry metadata",
            ALL,
            bundle("batch", r#"{"request":{"method":"GET","url":"metadata"}}"#),
            deny(""),
        ),
        (
            "entry POST _search",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"POST","url":"Patient/_search"}}"#,
            ),
            deny(""),
        ),
        ("empty bundle", ALL, bundle("batch", ""), deny("")),
        (
            "leading slash entry url",
            "system/Patient.r",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"/Patient/1"}}"#,
            ),
            allow(),
        ),
        (
            "HEAD entry",
            "system/Patient.r",
            bundle(
                "batch",
                r#"{"request":{"method":"HEAD","url":"Patient/1"}}"#,
            ),
            allow(),
        ),
        (
            "entry compartment search",
            "system/Observation.s",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient/1/Observation"}}"#,
            ),
            allow(),
        ),
    ];
    run_bundles(&cases);
    run(&[
        (
            "not JSON",
            ALL,
            Req {
                body: Some((JSON, "{not json")),
                ..req("POST /")
            },
            Outcome::BadBody,
        ),
        (
            "too deep",
            ALL,
            Req {
                body: Some((JSON, &format!("{}{}", "[".repeat(100), "]".repeat(100)))),
                ..req("POST /")
            },
            Outcome::BadBody,
        ),
        (
            "application/json accepted",
            "system/Patient.r",
            Req {
                body: Some((
                    "application/json; charset=utf-8",
                    r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1"}}]}"#,
                )),
                ..req("POST /")
            },
            allow(),
        ),
        (
            "also at the empty path",
            "system/Patient.r",
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1"}}]}"#,
                )),
                ..req("POST ")
            },
            allow(),
        ),
    ]);
}

#[test]
fn the_answers_to_ambiguities_hold() {
    run(&[
        (
            "system search per _type",
            "system/Patient.s",
            req("GET /?_type=Patient"),
            allow(),
        ),
        (
            "no _type needs *",
            "system/Patient.s",
            req("GET /"),
            deny("system/*.s"),
        ),
        (
            "bad scope grants nothing, others stay",
            "system/Patient.sr system/Patient.r",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "granular never helps a read",
            "system/Patient.rs?name=x",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "exact string equality",
            "system/Patient.s?gender=male",
            req("GET /Patient?gender=Male"),
            deny("system/Patient.s"),
        ),
        (
            "patient/ grants nothing",
            "patient/Patient.rs",
            req("GET /Patient?name=x"),
            deny("system/Patient.s"),
        ),
        (
            "conditional update needs s",
            "system/Patient.cud",
            req("PUT /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "upsert with c only",
            "system/Patient.c",
            req("PUT /Patient/1"),
            deny("system/Patient.u"),
        ),
        (
            "include needs *",
            "system/Observation.s",
            req("GET /Observation?_include=Observation:performer"),
            deny("system/*.s"),
        ),
        (
            "unknown operation",
            ALL,
            req("GET /Patient/$lastn"),
            deny(""),
        ),
        (
            "export no _type",
            "system/Observation.rs",
            req("GET /$export"),
            deny("system/*.rs"),
        ),
        (
            "Group export",
            "system/*.rs",
            req("GET /Group/1/$export"),
            allow(),
        ),
        (
            "no trailing slash",
            ALL,
            req("DELETE /Patient/?identifier=1"),
            MALFORMED,
        ),
        (
            "encoded unreserved",
            ALL,
            req("GET /Patient/%31"),
            MALFORMED,
        ),
        (
            "v1 and v2 together",
            "system/Patient.read system/Patient.u",
            req("PUT /Patient/1"),
            allow(),
        ),
        (
            "runs of spaces",
            "system/Patient.r  system/Patient.s",
            req("GET /Patient?name=x"),
            allow(),
        ),
        (
            "Binary needs its own scope",
            "system/Patient.rs",
            req("GET /Binary/1"),
            deny("system/Binary.r"),
        ),
        (
            "hint is v2 without suffix",
            "system/Observation.read?category=x",
            req("GET /Observation"),
            deny("system/Observation.s"),
        ),
        (
            "hint leaves out what * covers",
            "",
            req("GET /Patient/1/$everything"),
            deny("system/*.rs"),
        ),
    ]);
}

#[test]
fn a_denied_batch_names_each_entry_index_in_its_diagnostics() {
    let body = bundle(
        "batch",
        r#"{"request":{"method":"GET","url":"Patient/1"}},{"request":{"method":"GET","url":"Observation/2"}},{"request":{"method":"POST","url":"$graphql"}}"#,
    );
    let incoming = Incoming::new(&Method::POST, "/").with_body(JSON, body.as_bytes());
    let request = policy().classify(&incoming).expect("a batch");
    assert_eq!(request.interaction(), Interaction::BatchOrTransaction);
    assert_eq!(request.entries().len(), 3);
    let denial = ScopeSet::parse("system/Patient.r")
        .authorize(&request, &incoming)
        .expect_err("entries 1 and 2 are denied");
    let indices: Vec<usize> = denial.denied_entries().iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [1, 2]);
    let text = denial.to_string();
    assert!(
        text.contains("entry 1: ") && text.contains("system/Observation.r"),
        "{text}"
    );
    assert!(text.contains("entry 2: GraphQL"), "{text}");
    assert_eq!(
        denial.scope_hint(),
        "",
        "GraphQL cannot be granted, so no hint"
    );
}

#[test]
fn an_allowed_request_records_which_scope_met_each_need() {
    let scopes = ScopeSet::parse(
        "openid system/Observation.rs?category=laboratory system/Patient.r system/*.s",
    );
    let incoming = Incoming::new(&Method::GET, "/Observation")
        .with_query("category=laboratory&_include=Observation:patient");
    let request = policy().classify(&incoming).expect("a search");
    let granted = scopes.authorize(&request, &incoming).expect("allowed");
    let grants: Vec<String> = granted
        .list(&request)
        .iter()
        .map(|g| {
            format!(
                "{}.{}<-{}",
                g.need.resource,
                g.need.permissions,
                scopes.scopes()[g.scope]
            )
        })
        .collect();
    assert_eq!(
        grants,
        ["Observation.s<-system/*.s", "Patient.s<-system/*.s"]
    );
    let types: Vec<String> = request.resource_types().map(|t| t.to_string()).collect();
    assert_eq!(types, ["Observation", "Patient"]);
    let audit = granted.audit(&request, &scopes).to_string();
    assert_eq!(
        audit,
        "search-type needs [Observation.s Patient.s] granted [Observation.s<-system/*.s Patient.s<-system/*.s]"
    );

    let granular = ScopeSet::parse("system/Observation.rs?category=laboratory");
    let incoming = Incoming::new(&Method::GET, "/Observation").with_query("category=laboratory");
    let request = policy().classify(&incoming).expect("a search");
    let granted = granular
        .authorize(&request, &incoming)
        .expect("allowed by the granular scope");
    assert_eq!(granted.list(&request)[0].scope, 0);
}

/// Spellings an attacker uses to hide a parameter or a conditional search (docs/AUTHORIZATION.md
/// §5): each is read the way servers read it.
#[test]
fn parameters_and_conditions_are_read_in_every_spelling_servers_accept() {
    let os = "system/Observation.s system/Patient.s";
    let ine = |condition| Req {
        if_none_exist: Some(condition),
        ..req("POST /Patient")
    };
    run(&[
        // `_sort` is decided on its decoded value, with or without a modifier.
        (
            "_sort chain",
            os,
            req("GET /Observation?_sort=patient.name"),
            deny("system/*.s"),
        ),
        (
            "_sort chain percent-encoded",
            os,
            req("GET /Observation?_sort=patient%2Ename"),
            deny("system/*.s"),
        ),
        (
            "_sort chain second in the list",
            os,
            req("GET /Observation?_sort=-date,patient%2Ename"),
            deny("system/*.s"),
        ),
        (
            "_sort name percent-encoded",
            os,
            req("GET /Observation?%5Fsort=patient.name"),
            deny("system/*.s"),
        ),
        (
            "_sort with a modifier",
            os,
            req("GET /Observation?_sort:desc=patient.name"),
            deny("system/*.s"),
        ),
        (
            "_sort with a modifier on a plain field",
            os,
            req("GET /Observation?_sort:desc=date"),
            deny("system/*.s"),
        ),
        (
            "_sort chain in a form body",
            os,
            Req {
                body: Some((FORM, "_sort=patient%2Ename")),
                ..req("POST /Observation/_search")
            },
            deny("system/*.s"),
        ),
        (
            "_sort chain in a batch entry",
            os,
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation?_sort=patient%2Ename"}}]}"#,
                )),
                ..req("POST /")
            },
            deny("system/*.s"),
        ),
        (
            "_sort on plain fields",
            "system/Observation.s",
            req("GET /Observation?_sort=-date,status"),
            allow(),
        ),
        (
            "_sort chain with *.s",
            "system/*.s",
            req("GET /Observation?_sort=patient%2Ename"),
            allow(),
        ),
        // If-None-Exist written as `Type?query` or `?query`: servers run what follows the `?`.
        (
            "If-None-Exist Type? hides a _has",
            "system/Patient.cs",
            ine("Patient?_has:Observation:patient:code=1"),
            deny("system/Observation.s"),
        ),
        (
            "If-None-Exist ? hides a _has",
            "system/Patient.cs",
            ine("?_has:Observation:patient:code=1"),
            deny("system/Observation.s"),
        ),
        (
            "If-None-Exist Type? with an encoded _has",
            "system/Patient.cs",
            ine("Patient?%5Fhas:Observation:patient:code=1"),
            deny("system/Observation.s"),
        ),
        (
            "If-None-Exist Type? hides a chain",
            "system/Patient.cs",
            ine("Patient?organization.name=x"),
            deny("system/Organization.s"),
        ),
        (
            "If-None-Exist of another type's spelling still runs on Patient",
            "system/Patient.cs",
            ine("Observation?_include=Patient:organization"),
            deny("system/Organization.s"),
        ),
        (
            "If-None-Exist Type? plain",
            "system/Patient.cs",
            ine("Patient?identifier=x"),
            allow(),
        ),
        (
            "If-None-Exist ? plain",
            "system/Patient.cs",
            ine("?identifier=x"),
            allow(),
        ),
        (
            "ifNoneExist Type? in a transaction",
            "system/Patient.cs",
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient","ifNoneExist":"Patient?_has:Observation:patient:code=1"},"resource":{"resourceType":"Patient"}}]}"#,
                )),
                ..req("POST /")
            },
            deny("system/Observation.s"),
        ),
        (
            "ifNoneExist ? in a transaction",
            "system/Patient.cs",
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient","ifNoneExist":"?_has:Observation:patient:code=1"},"resource":{"resourceType":"Patient"}}]}"#,
                )),
                ..req("POST /")
            },
            deny("system/Observation.s"),
        ),
    ]);
}

/// A reference with a `?` is a conditional search in every spelling servers resolve
/// (docs/AUTHORIZATION.md §5.4).
#[test]
fn conditional_references_are_searches_in_every_spelling() {
    let entry = |reference: &str| {
        bundle(
            "transaction",
            &format!(
                r#"{{"request":{{"method":"POST","url":"Observation"}},"resource":{{"resourceType":"Observation","subject":{{"reference":"{reference}"}}}}}}"#
            ),
        )
    };
    let cases: Vec<(&str, &str, String, Outcome)> = vec![
        (
            "Type?query",
            "system/Observation.c",
            entry("Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "Type/?query",
            "system/Observation.c",
            entry("Patient/?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "/Type?query",
            "system/Observation.c",
            entry("/Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "this server's absolute base",
            "system/Observation.c",
            entry("https://fhir.example.org/r4/Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "another absolute base",
            "system/Observation.c",
            entry("http://other.example/fhir/Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "Type/id?query: no type to search",
            "system/Observation.c system/Patient.s",
            entry("Patient/1?_format=json"),
            deny("system/*.s"),
        ),
        (
            "a query hiding a _has",
            "system/Observation.c system/Patient.s",
            entry("Patient/?_has:Group:member:_id=1"),
            deny("system/Group.s"),
        ),
        (
            "a plain reference is no search",
            "system/Observation.c",
            entry("Patient/1"),
            allow(),
        ),
        (
            "Type/?query with s granted",
            "system/Observation.c system/Patient.s",
            entry("Patient/?identifier=x"),
            allow(),
        ),
    ];
    run_bundles(&cases);
}

/// A `$export` Parameters body the guard cannot read in full, a repeated member included, is
/// refused, never read as "no `_type`" (docs/AUTHORIZATION.md §7.1).
#[test]
fn an_unreadable_export_parameters_body_is_refused() {
    let bad = Outcome::BadBody;
    let post = |body| Req {
        body: Some((JSON, body)),
        ..req("POST /$export")
    };
    run(&[
        (
            "repeated name",
            ALL,
            post(
                r#"{"resourceType":"Parameters","parameter":[{"name":"_type","name":"_since","valueString":"Patient"}]}"#,
            ),
            bad.clone(),
        ),
        (
            "repeated valueString",
            ALL,
            post(
                r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient","valueString":"Observation"}]}"#,
            ),
            bad.clone(),
        ),
        (
            "repeated parameter list",
            ALL,
            post(
                r#"{"resourceType":"Parameters","parameter":[],"parameter":[{"name":"_type","valueString":"Patient"}]}"#,
            ),
            bad.clone(),
        ),
        (
            "repeated resourceType",
            ALL,
            post(r#"{"resourceType":"Patient","resourceType":"Parameters"}"#),
            bad.clone(),
        ),
        ("not JSON", ALL, post("_type=Patient"), bad.clone()),
        (
            "parameters that are not objects",
            ALL,
            post(r#"{"resourceType":"Parameters","parameter":[0,1]}"#),
            bad,
        ),
        (
            "a readable body still reads",
            "system/Patient.rs",
            post(
                r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}"#,
            ),
            allow(),
        ),
    ]);
}

/// A body the guard must read is read only in the one form it reads; any other form, and any
/// header it cannot read, is refused (docs/AUTHORIZATION.md §8.4).
#[test]
fn bodies_are_read_only_in_the_form_the_guard_reads() {
    let hidden = "_has:Group:member:_id=1";
    let search = |content_type| Req {
        body: Some((content_type, hidden)),
        ..req("POST /Patient/_search")
    };
    let encoded = |encoding| Req {
        content_encoding: Some(encoding),
        ..search(FORM)
    };
    let batch = r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1"}}]}"#;
    let export =
        r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}"#;
    let ps = "system/Patient.s";
    run(&[
        // A search form: read as the server's framework reads it, or refused.
        ("form", ps, search(FORM), deny("system/Group.s")),
        (
            "form, type in upper case",
            ps,
            search("APPLICATION/X-WWW-FORM-URLENCODED"),
            deny("system/Group.s"),
        ),
        (
            "form with charset=utf-8",
            ps,
            search("application/x-www-form-urlencoded; charset=utf-8"),
            deny("system/Group.s"),
        ),
        (
            "form with a quoted charset",
            ps,
            search("application/x-www-form-urlencoded;charset=\"UTF-8\""),
            deny("system/Group.s"),
        ),
        (
            "form, then a comma and another type",
            ps,
            search("application/x-www-form-urlencoded, text/plain"),
            UNSUPPORTED,
        ),
        (
            "form, then a space and another type",
            ps,
            search("application/x-www-form-urlencoded text/plain"),
            UNSUPPORTED,
        ),
        (
            "form, then a tab and another type",
            ps,
            search("application/x-www-form-urlencoded\ttext/plain"),
            UNSUPPORTED,
        ),
        (
            "form with a suffix",
            ps,
            search("application/x-www-form-urlencodedx"),
            UNSUPPORTED,
        ),
        (
            "form in another charset",
            ps,
            search("application/x-www-form-urlencoded; charset=iso-8859-1"),
            UNSUPPORTED,
        ),
        (
            "form with another parameter",
            ps,
            search("application/x-www-form-urlencoded; boundary=x"),
            UNSUPPORTED,
        ),
        ("JSON on a search", ps, search(JSON), UNSUPPORTED),
        (
            "multipart on a search",
            ps,
            search("multipart/form-data; boundary=x"),
            UNSUPPORTED,
        ),
        ("text on a search", ps, search("text/plain"), UNSUPPORTED),
        (
            "a search without a body",
            ps,
            req("POST /Patient/_search?name=x"),
            allow(),
        ),
        // Content codings: the guard reads the bytes as sent, so only `identity` will do.
        ("deflate", ps, encoded("deflate"), UNSUPPORTED),
        ("gzip", ps, encoded("gzip"), UNSUPPORTED),
        ("br", ps, encoded("br"), UNSUPPORTED),
        (
            "identity then gzip",
            ps,
            encoded("identity, gzip"),
            UNSUPPORTED,
        ),
        ("identity", ps, encoded("identity"), deny("system/Group.s")),
        (
            "a batch in gzip",
            "system/Patient.r",
            Req {
                body: Some((JSON, batch)),
                content_encoding: Some("gzip"),
                ..req("POST /")
            },
            UNSUPPORTED,
        ),
        (
            "a kick-off in deflate",
            "system/Patient.rs",
            Req {
                body: Some((JSON, export)),
                content_encoding: Some("deflate"),
                ..req("POST /$export")
            },
            UNSUPPORTED,
        ),
        (
            "a create the guard does not read may be encoded",
            "system/Patient.c",
            Req {
                body: Some((JSON, "{}")),
                content_encoding: Some("gzip"),
                ..req("POST /Patient")
            },
            allow(),
        ),
        // Batches and kick-offs: FHIR JSON (a kick-off also as a form), nothing else.
        (
            "a batch with fhirVersion",
            "system/Patient.r",
            Req {
                body: Some(("application/fhir+json; fhirVersion=4.0", batch)),
                ..req("POST /")
            },
            allow(),
        ),
        (
            "a batch with a foreign fhirVersion",
            "system/Patient.r",
            Req {
                body: Some(("application/fhir+json; fhirVersion=5.0", batch)),
                ..req("POST /")
            },
            UNSUPPORTED,
        ),
        (
            "a batch as text",
            "system/Patient.r",
            Req {
                body: Some(("text/plain", batch)),
                ..req("POST /")
            },
            UNSUPPORTED,
        ),
        (
            "a batch as a form",
            "system/Patient.r",
            Req {
                body: Some((FORM, batch)),
                ..req("POST /")
            },
            UNSUPPORTED,
        ),
        (
            "a kick-off as text",
            "system/Patient.rs",
            Req {
                body: Some(("text/plain", export)),
                ..req("POST /$export")
            },
            UNSUPPORTED,
        ),
        (
            "a kick-off as a form",
            "system/Patient.rs",
            Req {
                body: Some((FORM, "_type=Patient")),
                ..req("POST /$export")
            },
            allow(),
        ),
        (
            "a kick-off as a form, a type not granted",
            "system/Patient.rs",
            Req {
                body: Some((FORM, "_type=Patient,Observation")),
                ..req("POST /$export")
            },
            deny("system/Observation.rs"),
        ),
        // Headers the guard cannot read are refused, never taken as harmless.
        (
            "If-None-Exist not ASCII",
            "system/Patient.cs",
            Req {
                if_none_exist: Some("identifier=\u{e9}&_has:Group:member:_id=1"),
                ..req("POST /Patient")
            },
            BAD_HEADER,
        ),
        (
            "If-None-Exist that arrived unreadable",
            "system/Patient.cs",
            Req {
                if_none_exist: Some("\u{fffd}"),
                ..req("POST /Patient")
            },
            BAD_HEADER,
        ),
        (
            "Content-Type not ASCII",
            ps,
            search("application/x-www-form-urlencoded; charset=\u{e9}"),
            BAD_HEADER,
        ),
        (
            "Content-Encoding not ASCII",
            ps,
            encoded("identit\u{e9}"),
            BAD_HEADER,
        ),
    ]);
}

/// What known servers do beyond FHIR is priced by what it reads or changes
/// (docs/AUTHORIZATION.md §7.5).
#[test]
fn what_servers_do_beyond_fhir_needs_scopes_for_all_it_touches() {
    let subscription = r#"{"resourceType":"Subscription","status":"requested","criteria":"Observation?_has:Group:member:_id=1","channel":{"type":"rest-hook"}}"#;
    let write = |line| Req {
        body: Some((JSON, subscription)),
        ..req(line)
    };
    let cascade = |line, header| Req {
        x_cascade: Some(header),
        ..req(line)
    };
    let in_transaction = format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"request":{{"method":"POST","url":"Subscription"}},"resource":{subscription}}}]}}"#
    );
    run(&[
        // Cascading deletes also delete whatever references the target.
        (
            "delete with _cascade",
            "system/Patient.d",
            req("DELETE /Patient/1?_cascade=delete"),
            deny("system/*.d"),
        ),
        (
            "delete with an encoded _cascade",
            "system/Patient.d",
            req("DELETE /Patient/1?%5Fcascade=delete"),
            deny("system/*.d"),
        ),
        (
            "delete with X-Cascade",
            "system/Patient.d",
            cascade("DELETE /Patient/1", "delete"),
            deny("system/*.d"),
        ),
        (
            "delete with an unreadable X-Cascade",
            "system/Patient.d system/*.d",
            cascade("DELETE /Patient/1", "d\u{e9}lete"),
            BAD_HEADER,
        ),
        (
            "delete with an unknown X-Cascade value",
            "system/Patient.d",
            cascade("DELETE /Patient/1", "maybe"),
            deny("system/*.d"),
        ),
        (
            "conditional delete with _cascade",
            "system/Patient.ds",
            req("DELETE /Patient?identifier=x&_cascade=delete"),
            deny("system/*.d"),
        ),
        (
            "cascading delete with *.d",
            "system/Patient.d system/*.d",
            req("DELETE /Patient/1?_cascade=delete"),
            allow(),
        ),
        (
            "a plain delete",
            "system/Patient.d",
            req("DELETE /Patient/1"),
            allow(),
        ),
        // HAPI's paging continuation re-reads any stored search.
        (
            "_getpages with a _type",
            "system/Patient.s",
            req("GET /?_type=Patient&_getpages=abc"),
            deny("system/*.s"),
        ),
        (
            "_getpages on a type",
            "system/Patient.s",
            req("GET /Patient?_getpages=abc"),
            deny("system/*.s"),
        ),
        (
            "_getpages encoded",
            "system/Patient.s",
            req("GET /Patient?%5Fgetpages=abc"),
            deny("system/*.s"),
        ),
        (
            "_getpages with *.s",
            "system/*.s",
            req("GET /?_getpages=abc"),
            allow(),
        ),
        // A Subscription is a standing search whose notifications carry resources.
        (
            "create a Subscription",
            "system/Subscription.c",
            write("POST /Subscription"),
            deny("system/*.rs"),
        ),
        (
            "update a Subscription",
            "system/Subscription.u",
            write("PUT /Subscription/1"),
            deny("system/*.rs"),
        ),
        (
            "patch a Subscription",
            "system/Subscription.u",
            req("PATCH /Subscription/1"),
            deny("system/*.rs"),
        ),
        (
            "conditionally update a Subscription",
            "system/Subscription.us",
            write("PUT /Subscription?identifier=x"),
            deny("system/*.rs"),
        ),
        (
            "create a Subscription in a transaction",
            "system/Subscription.c",
            Req {
                body: Some((JSON, in_transaction.as_str())),
                ..req("POST /")
            },
            deny("system/*.rs"),
        ),
        (
            "create a Subscription with *.rs",
            "system/Subscription.c system/*.rs",
            write("POST /Subscription"),
            allow(),
        ),
        (
            "read a Subscription",
            "system/Subscription.r",
            req("GET /Subscription/1"),
            allow(),
        ),
        (
            "delete a Subscription",
            "system/Subscription.d",
            req("DELETE /Subscription/1"),
            allow(),
        ),
    ]);
}

/// A create or update entry's resource must be what its url names: servers write the resource
/// in the body (docs/AUTHORIZATION.md §6.2).
#[test]
fn an_entry_writes_only_the_resource_its_url_names() {
    let entry = |method: &str, url: &str, resource: &str| {
        bundle(
            "transaction",
            &format!(
                r#"{{"request":{{"method":"{method}","url":"{url}"}},"resource":{resource}}}"#
            ),
        )
    };
    let patient_scopes = "system/Patient.cus";
    let cases: Vec<(&str, &str, String, Outcome)> = vec![
        (
            "POST Patient carrying an Observation",
            patient_scopes,
            entry("POST", "Patient", r#"{"resourceType":"Observation"}"#),
            deny(""),
        ),
        (
            "POST Patient carrying no resourceType",
            patient_scopes,
            entry("POST", "Patient", r#"{"id":"1"}"#),
            deny(""),
        ),
        (
            "POST Patient carrying patient (case)",
            patient_scopes,
            entry("POST", "Patient", r#"{"resourceType":"patient"}"#),
            deny(""),
        ),
        (
            "PUT Patient/1 carrying an Observation",
            patient_scopes,
            entry(
                "PUT",
                "Patient/1",
                r#"{"resourceType":"Observation","id":"1"}"#,
            ),
            deny(""),
        ),
        (
            "PUT Patient/1 carrying Patient/2",
            patient_scopes,
            entry("PUT", "Patient/1", r#"{"resourceType":"Patient","id":"2"}"#),
            deny(""),
        ),
        (
            "PUT Patient/1 carrying a Patient without id",
            patient_scopes,
            entry("PUT", "Patient/1", r#"{"resourceType":"Patient"}"#),
            deny(""),
        ),
        (
            "conditional PUT Patient carrying an Observation",
            patient_scopes,
            entry(
                "PUT",
                "Patient?identifier=x",
                r#"{"resourceType":"Observation"}"#,
            ),
            deny(""),
        ),
        (
            "the resourceType spelled twice",
            patient_scopes,
            entry(
                "POST",
                "Patient",
                r#"{"resourceType":"Patient","resourceType":"Observation"}"#,
            ),
            Outcome::BadBody,
        ),
        (
            "POST Patient carrying a Patient",
            patient_scopes,
            entry("POST", "Patient", r#"{"resourceType":"Patient"}"#),
            allow(),
        ),
        (
            "PUT Patient/1 carrying Patient/1",
            patient_scopes,
            entry("PUT", "Patient/1", r#"{"resourceType":"Patient","id":"1"}"#),
            allow(),
        ),
        (
            "conditional PUT carrying a Patient",
            patient_scopes,
            entry(
                "PUT",
                "Patient?identifier=x",
                r#"{"resourceType":"Patient"}"#,
            ),
            allow(),
        ),
    ];
    run_bundles(&cases);
}

/// A chain whose last link reaches another type (`_has`, `_list`, `_filter`) is followed to
/// its end, in every position (docs/AUTHORIZATION.md §5.2).
#[test]
fn a_chain_ending_in_a_cross_type_parameter_is_followed_to_its_end() {
    let ep = "system/Encounter.rs system/Patient.rs";
    let group_hint = deny("system/Group.s");
    let has = "patient._has:Group:member:_id=102";
    let export_body =
        "_type=Encounter&_typeFilter=Encounter%3Fpatient._has%3AGroup%3Amember%3A_id%3D102";
    run(&[
        (
            "query",
            ep,
            req("GET /Encounter?patient._has:Group:member:_id=102"),
            group_hint.clone(),
        ),
        (
            "query, typed link",
            ep,
            req("GET /Encounter?patient:Patient._has:Group:member:_id=102"),
            group_hint.clone(),
        ),
        (
            "query, encoded",
            ep,
            req("GET /Encounter?patient.%5Fhas%3AGroup%3Amember%3A_id=102"),
            group_hint.clone(),
        ),
        (
            "query, ending in _list",
            ep,
            req("GET /Encounter?patient._list=42"),
            deny("system/List.s"),
        ),
        (
            "query, ending in _filter",
            ep,
            req("GET /Encounter?patient._filter=name%20eq%20x"),
            deny("system/*.s"),
        ),
        (
            "query, a two-link chain then _has",
            "system/Observation.s system/Patient.s system/Organization.s",
            req("GET /Observation?patient.organization._has:Group:member:_id=1"),
            group_hint.clone(),
        ),
        (
            "form body",
            ep,
            Req {
                body: Some((FORM, has)),
                ..req("POST /Encounter/_search")
            },
            group_hint.clone(),
        ),
        (
            "If-None-Exist",
            "system/Encounter.cs system/Patient.s",
            Req {
                if_none_exist: Some(has),
                ..req("POST /Encounter")
            },
            group_hint.clone(),
        ),
        (
            "conditional delete",
            "system/Encounter.ds system/Patient.s",
            req("DELETE /Encounter?patient._has:Group:member:_id=102"),
            group_hint.clone(),
        ),
        (
            "batch entry",
            ep,
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Encounter?patient._has:Group:member:_id=102"}}]}"#,
                )),
                ..req("POST /")
            },
            group_hint.clone(),
        ),
        (
            "_typeFilter",
            "system/Encounter.rs system/Patient.rs",
            Req {
                body: Some((FORM, export_body)),
                ..req("POST /$export")
            },
            group_hint.clone(),
        ),
        (
            "with Group.s granted",
            "system/Encounter.rs system/Patient.rs system/Group.s",
            req("GET /Encounter?patient._has:Group:member:_id=102"),
            allow(),
        ),
    ]);
}

/// Every `$export` kick-off parameter of Bulk Data 2.0 is classified, in the query, a form or
/// Parameters; an unknown one is refused (docs/AUTHORIZATION.md §7.1).
#[test]
fn every_export_kick_off_parameter_is_classified() {
    let patient_obs = "system/Patient.rs system/Observation.rs";
    let parameters = |name: &str, value: &str| {
        format!(
            r#"{{"resourceType":"Parameters","parameter":[{{"name":"_type","valueString":"Observation"}},{{"name":"{name}","valueString":"{value}"}}]}}"#
        )
    };
    let latest = parameters("includeAssociatedData", "LatestProvenanceResources");
    let custom = parameters("includeAssociatedData", "_serverSet");
    let unknown = parameters("_withEverything", "true");
    fn json(body: &str) -> Req<'_> {
        Req {
            body: Some((JSON, body)),
            ..req("POST /Patient/$export")
        }
    }
    run(&[
        (
            "includeAssociatedData: Provenance",
            patient_obs,
            req(
                "GET /Patient/$export?_type=Observation&includeAssociatedData=LatestProvenanceResources",
            ),
            deny("system/Provenance.rs"),
        ),
        (
            "includeAssociatedData: the other Provenance code",
            patient_obs,
            req(
                "GET /Patient/$export?_type=Observation&includeAssociatedData=RelevantProvenanceResources",
            ),
            deny("system/Provenance.rs"),
        ),
        (
            "includeAssociatedData: a server's own set",
            patient_obs,
            req("GET /Patient/$export?_type=Observation&includeAssociatedData=_serverSet"),
            deny("system/*.rs"),
        ),
        (
            "includeAssociatedData, encoded name",
            patient_obs,
            req(
                "GET /Patient/$export?_type=Observation&%69ncludeAssociatedData=LatestProvenanceResources",
            ),
            deny("system/Provenance.rs"),
        ),
        (
            "includeAssociatedData in a form",
            patient_obs,
            Req {
                body: Some((
                    FORM,
                    "_type=Observation&includeAssociatedData=LatestProvenanceResources",
                )),
                ..req("POST /Patient/$export")
            },
            deny("system/Provenance.rs"),
        ),
        (
            "includeAssociatedData in Parameters",
            patient_obs,
            json(&latest),
            deny("system/Provenance.rs"),
        ),
        (
            "includeAssociatedData: a server's set in Parameters",
            patient_obs,
            json(&custom),
            deny("system/*.rs"),
        ),
        (
            "includeAssociatedData with Provenance granted",
            "system/Patient.rs system/Observation.rs system/Provenance.rs",
            req(
                "GET /Patient/$export?_type=Observation&includeAssociatedData=LatestProvenanceResources",
            ),
            allow(),
        ),
        (
            "patient at system level",
            "system/Observation.rs",
            req("GET /$export?_type=Observation&patient=Patient/1"),
            deny("system/Patient.rs"),
        ),
        (
            "the other known parameters change nothing",
            patient_obs,
            req(
                "GET /Patient/$export?_type=Observation&_since=2020-01-01&_until=2021-01-01&_outputFormat=application/fhir%2Bndjson&_elements=id&organizeOutputBy=Patient&allowPartialManifests=true",
            ),
            allow(),
        ),
        (
            "an unknown parameter",
            ALL,
            req("GET /Patient/$export?_type=Observation&_withEverything=true"),
            deny(""),
        ),
        (
            "an unknown parameter in a form",
            ALL,
            Req {
                body: Some((FORM, "_type=Observation&everything=true")),
                ..req("POST /Patient/$export")
            },
            deny(""),
        ),
        (
            "an unknown parameter in Parameters",
            ALL,
            json(&unknown),
            deny(""),
        ),
    ]);
}

/// Parameters of an interaction that is not a search are still read as servers may act on
/// them (docs/AUTHORIZATION.md §5.1).
#[test]
fn parameters_of_reads_histories_and_writes_are_analysed_too() {
    let ps = "system/Patient.rs";
    let too_many = format!("GET /Patient/1?{}", vec!["_format=json"; 101].join("&"));
    run(&[
        (
            "type history with _list",
            "system/Patient.s",
            req("GET /Patient/_history?_list=42"),
            deny("system/List.s"),
        ),
        (
            "type history with _has",
            "system/Patient.s",
            req("GET /Patient/_history?_has:Group:member:_id=1"),
            deny("system/Group.s"),
        ),
        (
            "instance history with _include",
            ps,
            req("GET /Patient/1/_history?_include=Patient:organization"),
            deny("system/Organization.s"),
        ),
        (
            "read with _list",
            ps,
            req("GET /Patient/1?_list=42"),
            deny("system/List.s"),
        ),
        (
            "read with a chain",
            ps,
            req("GET /Patient/1?organization.name=x"),
            deny("system/Organization.s"),
        ),
        (
            "vread with _revinclude",
            ps,
            req("GET /Patient/1/_history/2?_revinclude=Provenance:target"),
            deny("system/Provenance.s"),
        ),
        (
            "update with _has",
            "system/Patient.u",
            req("PUT /Patient/1?_has:Group:member:_id=1"),
            deny("system/Group.s"),
        ),
        (
            "delete with _list",
            "system/Patient.d",
            req("DELETE /Patient/1?_list=42"),
            deny("system/List.s"),
        ),
        (
            "read with general parameters",
            ps,
            req("GET /Patient/1?_format=json&_pretty=true&_summary=true&_elements=id"),
            allow(),
        ),
        (
            "type history with _since and _count",
            "system/Patient.s",
            req("GET /Patient/_history?_since=2020-01-01&_count=10"),
            allow(),
        ),
        (
            "too many parameters on a read",
            ps,
            req(&too_many),
            Outcome::TooComplex,
        ),
    ]);
}

/// Every parameter falls in one class: a filter on the searched type, a known control, a
/// cross-type parameter, or unknown; an unknown `_`-name or modifier needs `*`
/// (docs/AUTHORIZATION.md §5.2).
#[test]
fn unknown_parameters_and_modifiers_need_the_wildcard() {
    let os = "system/Observation.s";
    run(&[
        (
            "a custom filter",
            os,
            req("GET /Observation?my-param=x"),
            allow(),
        ),
        (
            "known modifiers",
            os,
            req(
                "GET /Observation?code:not=1&code:text=x&subject:missing=true&value-string:exact=a&category:in=http%3A%2F%2Fvs&code:below=1&subject:Patient=1&identifier:of-type=a%7Cb%7Cc",
            ),
            allow(),
        ),
        (
            "known controls",
            os,
            req(
                "GET /Observation?_id=1&_lastUpdated=gt2020&_tag=a&_profile=p&_security=s&_source=x&_count=5&_summary=count&_elements=id&_format=json&_pretty=true&_total=accurate&_text=x&_content=y",
            ),
            allow(),
        ),
        (
            "a known control with a modifier",
            os,
            req("GET /Observation?_id:missing=false&_tag:not=a"),
            allow(),
        ),
        (
            "an unknown _-name",
            os,
            req("GET /Observation?_reveal=all"),
            deny("system/*.s"),
        ),
        (
            "an unknown _-name, encoded",
            os,
            req("GET /Observation?%5Freveal=all"),
            deny("system/*.s"),
        ),
        (
            "an unknown modifier",
            os,
            req("GET /Observation?code:everything=1"),
            deny("system/*.s"),
        ),
        (
            "an unknown modifier, encoded colon",
            os,
            req("GET /Observation?code%3Aeverything=1"),
            deny("system/*.s"),
        ),
        (
            "a modifier on _type",
            os,
            req("GET /Observation?_type:not=Patient"),
            deny("system/*.s"),
        ),
        (
            "a modifier on _list",
            os,
            req("GET /Observation?_list:x=42"),
            deny("system/*.s"),
        ),
        (
            "an unknown _-name in a form",
            os,
            Req {
                body: Some((FORM, "_reveal=all")),
                ..req("POST /Observation/_search")
            },
            deny("system/*.s"),
        ),
        (
            "an unknown _-name in If-None-Exist",
            "system/Observation.cs",
            Req {
                if_none_exist: Some("_reveal=all"),
                ..req("POST /Observation")
            },
            deny("system/*.s"),
        ),
        (
            "an unknown modifier in a batch entry",
            os,
            Req {
                body: Some((
                    JSON,
                    r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation?code:everything=1"}}]}"#,
                )),
                ..req("POST /")
            },
            deny("system/*.s"),
        ),
        (
            "an unknown _-name with *.s",
            "system/*.s",
            req("GET /Observation?_reveal=all"),
            allow(),
        ),
    ]);
}
