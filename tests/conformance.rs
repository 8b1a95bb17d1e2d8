//! Conformance suite: one row per rule of `/work/shared/SMART-NOTES.md` (§3 scope grammar, §4
//! URL table, §5 bulk export, §6 traps, §7 decisions), run through the public pure API
//! (`Policy::classify` + `ScopeSet::authorize`). No network.
//!
//! Each row: the notes' section, the granted scope string, the request, and the outcome:
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

/// A request line: `"GET /Observation?code=1"`, plus optional If-None-Exist and body.
#[derive(Clone, Copy, Default)]
struct Req<'a> {
    line: &'a str,
    if_none_exist: Option<&'a str>,
    body: Option<(&'a str, &'a str)>,
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
    let request = match policy.classify(&incoming) {
        Ok(request) => request,
        Err(ClassifyError::MalformedPath) => return (Outcome::Malformed, None),
        Err(ClassifyError::MalformedBody) => return (Outcome::BadBody, None),
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
fn section_3_scope_grammar_decides_what_a_token_grants() {
    run(&[
        (
            "§3.2 v1 read = rs",
            "system/Patient.read",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "§3.2 v1 read = rs",
            "system/Patient.read",
            req("GET /Patient?name=x"),
            allow(),
        ),
        (
            "§3.2 write does not imply read",
            "system/Patient.write",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.2 v1 write = cud",
            "system/Patient.write",
            req("PUT /Patient/1"),
            allow(),
        ),
        (
            "§3.2 v1 write = cud",
            "system/Patient.write",
            req("DELETE /Patient/1"),
            allow(),
        ),
        (
            "§3.2 v1 .* = cruds",
            "system/Patient.*",
            req("DELETE /Patient?identifier=x"),
            allow(),
        ),
        (
            "§3.2 v1 system/*.read",
            "system/*.read",
            req("GET /Observation/1"),
            allow(),
        ),
        (
            "§3.3 letters in order",
            "system/Patient.sr",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.3 repeated letters",
            "system/Patient.rr",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.3 out of order dus",
            "system/Patient.dus",
            req("DELETE /Patient/1"),
            deny("system/Patient.d"),
        ),
        (
            "§3.3 empty perms invalid",
            "system/Patient.",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.3 context is case-sensitive",
            "System/Patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.3 type is case-sensitive",
            "system/patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.3 letters are case-sensitive",
            "system/Patient.RS",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.3 unknown type grants nothing",
            "system/Foo.rs system/Patient.r",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "§3.3 trailing garbage",
            "system/Patient.readfoo",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.4 c is type create",
            "system/Patient.c",
            req("POST /Patient"),
            allow(),
        ),
        (
            "§3.4 r covers vread",
            "system/Patient.r",
            req("GET /Patient/1/_history/2"),
            allow(),
        ),
        (
            "§3.4 r covers instance history",
            "system/Patient.r",
            req("GET /Patient/1/_history"),
            allow(),
        ),
        (
            "§3.4 s covers type history",
            "system/Patient.s",
            req("GET /Patient/_history"),
            allow(),
        ),
        (
            "§3.4 r does not cover search",
            "system/Patient.r",
            req("GET /Patient?name=x"),
            deny("system/Patient.s"),
        ),
        (
            "§3.4 u covers patch",
            "system/Patient.u",
            req("PATCH /Patient/1"),
            allow(),
        ),
        (
            "§3.4 d is delete",
            "system/Patient.d",
            req("DELETE /Patient/1"),
            allow(),
        ),
        (
            "§3.5 mixed v1 and v2",
            "system/Patient.read system/Observation.cu",
            req("POST /Observation"),
            allow(),
        ),
        (
            "§3.6 resource wildcard",
            "system/*.r",
            req("GET /Condition/7"),
            allow(),
        ),
        (
            "§3.6 no context wildcard",
            "*/Patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.6 no v2 permission wildcard mix",
            "system/Patient.c*",
            req("POST /Patient"),
            deny("system/Patient.c"),
        ),
        (
            "§3.7 scopes add up",
            "system/Observation.r system/Observation.s",
            req("GET /Observation?_include=Observation:patient"),
            deny("system/Patient.s"),
        ),
        (
            "§3.7 union across types",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include=Observation:patient"),
            allow(),
        ),
        (
            "§3.9 patient/ grants nothing",
            "patient/*.cruds",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.9 user/ grants nothing",
            "user/Patient.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.9 launch and openid ignored",
            "openid launch fhirUser system/Patient.r",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "§3.9 URI form does not match",
            "http://smarthealthit.org/fhir/scopes/system/*.rs",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.1 tab is no separator",
            "system/Patient.r\tsystem/Observation.r",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§3.1 comma is no separator",
            "system/Patient.r,system/Observation.r",
            req("GET /Observation/1"),
            deny("system/Observation.r"),
        ),
        (
            "§3.1 runs of spaces",
            "   system/Patient.r    system/Observation.r  ",
            req("GET /Observation/1"),
            allow(),
        ),
        (
            "§3.1 no percent-decoding",
            "system%2FPatient.r",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
    ]);
}

#[test]
fn section_3_8_granular_scopes_only_help_searches_that_restate_them() {
    let lab = "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let simple = "system/Observation.rs?category=laboratory";
    let two = "system/Observation.s?category=laboratory&status=final";
    run(&[
        (
            "§3.8 restated exactly",
            simple,
            req("GET /Observation?category=laboratory"),
            allow(),
        ),
        (
            "§3.8 restated with extra params",
            simple,
            req("GET /Observation?category=laboratory&code=1&date=ge2020"),
            allow(),
        ),
        (
            "§3.8 restated percent-encoded",
            lab,
            req(
                "GET /Observation?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory",
            ),
            allow(),
        ),
        (
            "§3.8 restated with raw |",
            lab,
            req(
                "GET /Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            ),
            allow(),
        ),
        (
            "§3.8 A4 meaning is not compared",
            lab,
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 not restated",
            simple,
            req("GET /Observation?code=1"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 other value",
            simple,
            req("GET /Observation?category=vital-signs"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 modifier does not count",
            simple,
            req("GET /Observation?category:not=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 :exact modifier does not count",
            simple,
            req("GET /Observation?category:text=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 comma-OR does not count",
            simple,
            req("GET /Observation?category=laboratory,vital-signs"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 repeated AND still narrows",
            simple,
            req("GET /Observation?category=laboratory&category=x,y"),
            allow(),
        ),
        (
            "§3.8 escaped comma is one value",
            "system/Observation.s?category=a%5C,b",
            req("GET /Observation?category=a%5C%2Cb"),
            allow(),
        ),
        (
            "§3.8 every pair must be restated",
            two,
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 both pairs restated",
            two,
            req("GET /Observation?status=final&category=laboratory"),
            allow(),
        ),
        (
            "§3.8 POST _search form body counts",
            simple,
            Req {
                body: Some((FORM, "category=laboratory")),
                ..req("POST /Observation/_search")
            },
            allow(),
        ),
        (
            "§3.8 POST _search query counts",
            simple,
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search?category=laboratory")
            },
            allow(),
        ),
        (
            "§3.8 POST _search body without it",
            simple,
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search")
            },
            deny("system/Observation.s"),
        ),
        (
            "§3.8 compartment search restated",
            simple,
            req("GET /Patient/1/Observation?category=laboratory"),
            allow(),
        ),
        (
            "§3.8 system search with one _type",
            simple,
            req("GET /?_type=Observation&category=laboratory"),
            allow(),
        ),
        (
            "§3.8 system search without _type",
            simple,
            req("GET /?category=laboratory"),
            deny("system/*.s"),
        ),
        (
            "§3.8 other type",
            simple,
            req("GET /Condition?category=laboratory"),
            deny("system/Condition.s"),
        ),
        (
            "§3.8 read by id never",
            simple,
            req("GET /Observation/1"),
            deny("system/Observation.r"),
        ),
        (
            "§3.8 vread never",
            simple,
            req("GET /Observation/1/_history/1?category=laboratory"),
            deny("system/Observation.r"),
        ),
        (
            "§3.8 type history never",
            simple,
            req("GET /Observation/_history?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 create never",
            "system/Observation.cruds?category=laboratory",
            req("POST /Observation"),
            deny("system/Observation.c"),
        ),
        (
            "§3.8 conditional delete never",
            "system/Observation.cruds?category=laboratory",
            req("DELETE /Observation?category=laboratory"),
            deny("system/Observation.ds"),
        ),
        (
            "§3.8 $export never",
            "system/Observation.rs?category=laboratory system/Patient.rs",
            req("GET /$export?_type=Observation"),
            deny("system/Observation.rs"),
        ),
        (
            "§3.8 included same type not covered",
            simple,
            req("GET /Observation?category=laboratory&_revinclude=Observation:has-member"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 includes need their own scope",
            simple,
            req("GET /Observation?category=laboratory&_include=Observation:patient"),
            deny("system/Patient.s"),
        ),
        (
            "§3.8 includes with their own scope",
            "system/Observation.rs?category=laboratory system/Patient.s",
            req("GET /Observation?category=laboratory&_include=Observation:patient"),
            allow(),
        ),
        (
            "§3.8 patient/ granular grants nothing",
            "patient/Observation.rs?category=laboratory",
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 wildcard granular grants nothing",
            "system/*.rs?category=laboratory",
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 malformed constraint invalid",
            "system/Observation.rs?category",
            req("GET /Observation?category"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 trailing ? invalid",
            "system/Observation.rs?",
            req("GET /Observation"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 v1 with constraint invalid",
            "system/Observation.read?category=laboratory",
            req("GET /Observation?category=laboratory"),
            deny("system/Observation.s"),
        ),
        (
            "§3.8 granular plus plain r",
            "system/Observation.rs?category=laboratory system/Observation.r",
            req("GET /Observation/1"),
            allow(),
        ),
    ]);
}

#[test]
fn section_4_url_table_maps_each_row_to_its_letters() {
    run(&[
        (
            "§4 row 1 metadata public",
            "",
            req("GET /metadata"),
            allow(),
        ),
        (
            "§4 row 1 metadata HEAD",
            "",
            req("HEAD /metadata?mode=full"),
            allow(),
        ),
        (
            "§4 row 2 smart-configuration",
            "",
            req("GET /.well-known/smart-configuration"),
            allow(),
        ),
        (
            "§4 row 3 read",
            "system/Patient.r",
            req("GET /Patient/123"),
            allow(),
        ),
        (
            "§4 row 3 read needs r",
            "system/Patient.s",
            req("GET /Patient/123"),
            deny("system/Patient.r"),
        ),
        (
            "§4 row 4 vread",
            "system/Patient.r",
            req("GET /Patient/123/_history/4"),
            allow(),
        ),
        (
            "§4 row 5 instance history",
            "system/Patient.s",
            req("GET /Patient/123/_history"),
            deny("system/Patient.r"),
        ),
        (
            "§4 row 6 type history",
            "system/Patient.r",
            req("GET /Patient/_history"),
            deny("system/Patient.s"),
        ),
        (
            "§4 row 7 system history",
            "system/Patient.s system/Observation.s",
            req("GET /_history"),
            deny("system/*.s"),
        ),
        (
            "§4 row 7 system history with *",
            "system/*.s",
            req("GET /_history"),
            allow(),
        ),
        (
            "§4 row 8 search",
            "system/Observation.s",
            req("GET /Observation?code=1234"),
            allow(),
        ),
        (
            "§4 row 8 search without params",
            "system/Observation.s",
            req("GET /Observation"),
            allow(),
        ),
        (
            "§4 row 9 POST _search",
            "system/Observation.s",
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search")
            },
            allow(),
        ),
        (
            "§4 row 9 POST _search is no create",
            "system/Observation.c",
            Req {
                body: Some((FORM, "code=1")),
                ..req("POST /Observation/_search")
            },
            deny("system/Observation.s"),
        ),
        (
            "§4 row 10 _type list",
            "system/Patient.s system/Observation.s",
            req("GET /?_type=Patient,Observation&name=x"),
            allow(),
        ),
        (
            "§4 row 10 _type list partly granted",
            "system/Patient.s",
            req("GET /?_type=Patient,Observation"),
            deny("system/Observation.s"),
        ),
        (
            "§4 row 10 POST /_search _type",
            "system/Patient.s",
            Req {
                body: Some((FORM, "_type=Patient")),
                ..req("POST /_search")
            },
            allow(),
        ),
        (
            "§4 row 10 unknown _type",
            ALL,
            req("GET /?_type=Patient,Nope"),
            UNDEFINED,
        ),
        (
            "§4 row 11 no _type needs *",
            "system/Patient.s",
            req("GET /?name=x"),
            deny("system/*.s"),
        ),
        (
            "§4 row 11 no _type with *",
            "system/*.s",
            req("GET /?name=x"),
            allow(),
        ),
        (
            "§4 row 12 compartment search",
            "system/Observation.s",
            req("GET /Patient/1/Observation?code=x"),
            allow(),
        ),
        (
            "§4 row 12 compartment needs no Patient",
            "system/Patient.rs",
            req("GET /Patient/1/Observation"),
            deny("system/Observation.s"),
        ),
        (
            "§4 row 12 Encounter compartment",
            "system/Condition.s",
            req("GET /Encounter/9/Condition"),
            allow(),
        ),
        (
            "§4 row 12 non-compartment type",
            ALL,
            req("GET /Observation/1/Patient"),
            UNDEFINED,
        ),
        (
            "§4 row 13 compartment *",
            "system/Observation.s",
            req("GET /Patient/1/*"),
            deny("system/*.s"),
        ),
        (
            "§4 row 13 compartment * with *",
            "system/*.s",
            req("GET /Patient/1/*"),
            allow(),
        ),
        (
            "§4 row 14 create",
            "system/Patient.c",
            req("POST /Patient"),
            allow(),
        ),
        (
            "§4 row 15 conditional create",
            "system/Patient.c",
            Req {
                if_none_exist: Some("identifier=x"),
                ..req("POST /Patient")
            },
            deny("system/Patient.s"),
        ),
        (
            "§4 row 15 conditional create cs",
            "system/Patient.cs",
            Req {
                if_none_exist: Some("identifier=x"),
                ..req("POST /Patient")
            },
            allow(),
        ),
        (
            "§4 row 16 update",
            "system/Patient.u",
            req("PUT /Patient/1"),
            allow(),
        ),
        (
            "§4 row 17 conditional update",
            "system/Patient.u",
            req("PUT /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "§4 row 17 conditional update us",
            "system/Patient.us",
            req("PUT /Patient?identifier=x"),
            allow(),
        ),
        (
            "§4 row 18 patch",
            "system/Patient.u",
            req("PATCH /Patient/1"),
            allow(),
        ),
        (
            "§4 row 19 conditional patch",
            "system/Patient.us",
            req("PATCH /Patient?identifier=x"),
            allow(),
        ),
        (
            "§4 row 19 conditional patch needs s",
            "system/Patient.u",
            req("PATCH /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "§4 row 20 delete",
            "system/Patient.d",
            req("DELETE /Patient/1"),
            allow(),
        ),
        (
            "§4 row 21 conditional delete",
            "system/Patient.d",
            req("DELETE /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "§4 row 21 conditional delete ds",
            "system/Patient.ds",
            req("DELETE /Patient?identifier=x"),
            allow(),
        ),
        (
            "§4 row 23 POST / without a body",
            ALL,
            req("POST /"),
            deny(""),
        ),
        (
            "§4 row 23 POST / with XML",
            ALL,
            Req {
                body: Some(("application/fhir+xml", "<Bundle/>")),
                ..req("POST /")
            },
            deny(""),
        ),
        (
            "§4 row 23 collection bundle",
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
            "§4 row 23 history bundle",
            ALL,
            Req {
                body: Some((JSON, r#"{"resourceType":"Bundle","type":"history"}"#)),
                ..req("POST /")
            },
            deny(""),
        ),
        (
            "§4 row 23 not a bundle",
            ALL,
            Req {
                body: Some((JSON, r#"{"resourceType":"Patient"}"#)),
                ..req("POST /")
            },
            deny(""),
        ),
        (
            "§4 row 24 unlisted operation",
            ALL,
            req("POST /$validate"),
            deny(""),
        ),
        (
            "§4 row 24 unlisted type operation",
            ALL,
            req("POST /Patient/$validate"),
            deny(""),
        ),
        (
            "§4 row 24 unlisted instance operation",
            ALL,
            req("GET /Patient/1/$validate"),
            deny(""),
        ),
        (
            "§4 row 24 listed operation",
            "system/ValueSet.r",
            req("POST /ValueSet/$expand"),
            allow(),
        ),
        (
            "§4 row 24 listed operation needs",
            "system/CodeSystem.r",
            req("POST /ValueSet/$expand"),
            deny("system/ValueSet.r"),
        ),
        (
            "§4 row 24 listed operation method",
            "system/ValueSet.r",
            req("GET /ValueSet/$expand"),
            deny(""),
        ),
        (
            "§4 row 24 listed operation other type",
            ALL,
            req("POST /CodeSystem/$expand"),
            deny(""),
        ),
        (
            "§4 row 24 [type] needs",
            "system/Observation.r",
            req("GET /Observation/1/$meta"),
            allow(),
        ),
        (
            "§4 row 24 [type] needs other type",
            "system/Observation.r",
            req("GET /Patient/1/$meta"),
            deny("system/Patient.r"),
        ),
        (
            "§4 row 24 system operation",
            "system/*.r",
            req("POST /$convert"),
            allow(),
        ),
        (
            "§4 row 24 $meta is not $validate",
            ALL,
            req("GET /Patient/$meta"),
            deny(""),
        ),
        (
            "§4 row 25 $everything",
            "system/*.rs",
            req("GET /Patient/1/$everything"),
            allow(),
        ),
        (
            "§4 row 25 $everything needs *",
            "system/Patient.rs system/Observation.rs",
            req("GET /Patient/1/$everything"),
            deny("system/*.rs"),
        ),
        (
            "§4 row 25 $everything POST",
            "system/*.rs",
            req("POST /Patient/1/$everything"),
            allow(),
        ),
        (
            "§4 row 25 $everything DELETE",
            ALL,
            req("DELETE /Patient/1/$everything"),
            deny(""),
        ),
        (
            "§4 row 25 $everything on Observation",
            ALL,
            req("GET /Observation/1/$everything"),
            deny(""),
        ),
        (
            "§4 row 27 GraphQL system",
            ALL,
            req("POST /$graphql"),
            deny(""),
        ),
        (
            "§4 row 27 GraphQL instance",
            ALL,
            req("GET /Patient/1/$graphql?query=x"),
            deny(""),
        ),
        (
            "§4 row 28 POST to an instance",
            ALL,
            req("POST /Patient/1"),
            UNDEFINED,
        ),
        (
            "§4 row 28 GET _search",
            ALL,
            req("GET /Patient/_search"),
            UNDEFINED,
        ),
        (
            "§4 row 28 type/id/type/id",
            ALL,
            req("GET /Patient/1/Observation/2"),
            UNDEFINED,
        ),
        (
            "§4 row 28 unknown _segment",
            ALL,
            req("GET /Patient/_unknown"),
            UNDEFINED,
        ),
        (
            "§4 row 28 PUT without id or query",
            ALL,
            req("PUT /Patient"),
            UNDEFINED,
        ),
        ("§4 row 28 OPTIONS", ALL, req("OPTIONS /Patient"), UNDEFINED),
        ("§4 row 28 unknown type", ALL, req("GET /Nope/1"), UNDEFINED),
    ]);
}

#[test]
fn section_5_bulk_export_needs_system_rs_on_everything_exported() {
    let params = r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Observation,Condition"}]}"#;
    let no_type = r#"{"resourceType":"Parameters","parameter":[{"name":"_since","valueInstant":"2020-01-01T00:00:00Z"}]}"#;
    run(&[
        (
            "§5.3 no _type needs *.rs",
            "system/Patient.rs system/Observation.rs",
            req("GET /$export"),
            deny("system/*.rs"),
        ),
        (
            "§5.3 no _type with *.rs",
            "system/*.rs",
            req("GET /$export"),
            allow(),
        ),
        (
            "§5 SMART example system/*.read",
            "system/*.read",
            req("GET /$export"),
            allow(),
        ),
        (
            "§5.2 r alone is not enough",
            "system/*.r",
            req("GET /$export"),
            deny("system/*.s"),
        ),
        (
            "§5.2 each _type needs rs",
            "system/Observation.rs",
            req("GET /$export?_type=Observation"),
            allow(),
        ),
        (
            "§5.2 each _type needs rs",
            "system/Observation.r",
            req("GET /$export?_type=Observation"),
            deny("system/Observation.s"),
        ),
        (
            "§5 _type outside the grant fails",
            "system/Patient.rs",
            req("GET /$export?_type=Observation"),
            deny("system/Observation.rs"),
        ),
        (
            "§5 _type list",
            "system/Observation.rs system/Condition.rs",
            req("GET /$export?_type=Observation,Condition"),
            allow(),
        ),
        (
            "§5 repeated _type",
            "system/Observation.rs",
            req("GET /$export?_type=Observation&_type=Condition"),
            deny("system/Condition.rs"),
        ),
        (
            "§5 unknown _type needs *",
            "system/Observation.rs",
            req("GET /$export?_type=Nope"),
            deny("system/*.rs"),
        ),
        (
            "§5.1 patient/ never counts",
            "patient/*.rs",
            req("GET /$export"),
            deny("system/*.rs"),
        ),
        (
            "§5.1 user/ never counts",
            "user/*.rs system/Observation.rs",
            req("GET /$export?_type=Observation"),
            allow(),
        ),
        (
            "§5.4 Patient export needs Patient",
            "system/Observation.rs",
            req("GET /Patient/$export?_type=Observation"),
            deny("system/Patient.rs"),
        ),
        (
            "§5.4 Patient export",
            "system/Observation.rs system/Patient.rs",
            req("GET /Patient/$export?_type=Observation"),
            allow(),
        ),
        (
            "§5.4 Patient export no _type",
            "system/Patient.rs",
            req("GET /Patient/$export"),
            deny("system/*.rs"),
        ),
        (
            "§5.4 Group export needs Group and Patient",
            "system/Observation.rs system/Patient.rs",
            req("GET /Group/7/$export?_type=Observation"),
            deny("system/Group.rs"),
        ),
        (
            "§5.4 Group export",
            "system/Observation.rs system/Patient.rs system/Group.rs",
            req("GET /Group/7/$export?_type=Observation"),
            allow(),
        ),
        (
            "§5.4 Group export needs Patient",
            "system/Observation.rs system/Group.rs",
            req("GET /Group/7/$export?_type=Observation"),
            deny("system/Patient.rs"),
        ),
        (
            "§5.5 _typeFilter changes nothing",
            "system/Observation.rs",
            req("GET /$export?_type=Observation&_typeFilter=Observation%3Fcode%3D1"),
            allow(),
        ),
        (
            "§5 POST Parameters _type",
            "system/Observation.rs system/Condition.rs",
            Req {
                body: Some((JSON, params)),
                ..req("POST /$export")
            },
            allow(),
        ),
        (
            "§5 POST Parameters _type partly",
            "system/Observation.rs",
            Req {
                body: Some((JSON, params)),
                ..req("POST /$export")
            },
            deny("system/Condition.rs"),
        ),
        (
            "§5 POST without _type needs *",
            "system/Observation.rs",
            Req {
                body: Some((JSON, no_type)),
                ..req("POST /$export?_type=Observation")
            },
            deny("system/*.rs"),
        ),
        (
            "§5 POST without body needs *",
            "system/Observation.rs",
            req("POST /$export"),
            deny("system/*.rs"),
        ),
        (
            "§5 export at Observation level",
            ALL,
            req("GET /Observation/$export"),
            deny(""),
        ),
        (
            "§5 export at Patient instance",
            ALL,
            req("GET /Patient/1/$export"),
            deny(""),
        ),
        (
            "§5 export with DELETE",
            ALL,
            req("DELETE /$export"),
            deny(""),
        ),
        (
            "§5.6 status URL configured",
            "system/*.rs",
            req("GET /$export-poll-status?_jobId=1"),
            allow(),
        ),
        (
            "§5.6 status URL re-checked",
            "system/Patient.rs",
            req("GET /$export-poll-status?_jobId=1"),
            deny("system/*.rs"),
        ),
        (
            "§5.6 status cancel",
            "system/*.rs",
            req("DELETE /$export-poll-status?_jobId=1"),
            allow(),
        ),
        (
            "§5.6 file URL configured",
            "system/*.rs",
            req("GET /bulk-files/job1/Observation.ndjson"),
            allow(),
        ),
        (
            "§5.6 file URL method",
            "system/*.rs",
            req("DELETE /bulk-files/job1/Observation.ndjson"),
            UNDEFINED,
        ),
        (
            "§5.6 unconfigured status URL",
            ALL,
            req("GET /_operations/export/1"),
            UNDEFINED,
        ),
        (
            "§5.6 unconfigured poll operation",
            ALL,
            req("GET /$export-status"),
            deny(""),
        ),
        (
            "§5.6 bulk path still path-checked",
            ALL,
            req("GET /bulk-files/../Patient/1"),
            MALFORMED,
        ),
    ]);
}

#[test]
fn section_6_traps_are_refused_or_need_the_right_scopes() {
    run(&[
        (
            "§6.1 dot-dot segment",
            ALL,
            req("GET /Patient/../Observation/1"),
            MALFORMED,
        ),
        ("§6.1 dot segment", ALL, req("GET /Patient/./1"), MALFORMED),
        (
            "§6.1 encoded dot-dot",
            ALL,
            req("GET /Patient/%2e%2e"),
            MALFORMED,
        ),
        (
            "§6.2 encoded slash",
            ALL,
            req("GET /Patient%2F1"),
            MALFORMED,
        ),
        (
            "§6.2 encoded $",
            ALL,
            req("GET /Patient/%24export"),
            MALFORMED,
        ),
        (
            "§6.2 encoded letter",
            ALL,
            req("GET /%50atient/1"),
            MALFORMED,
        ),
        ("§6.2 backslash", ALL, req("GET /Patient\\1"), MALFORMED),
        ("§6.3 trailing slash", ALL, req("GET /Patient/"), MALFORMED),
        ("§6.3 empty segment", ALL, req("GET /Patient//1"), MALFORMED),
        (
            "§6.3 leading double slash",
            ALL,
            req("GET //Patient/1"),
            MALFORMED,
        ),
        (
            "§6.3 A15 R4 conditional delete form",
            ALL,
            req("DELETE /Patient/?identifier=x"),
            MALFORMED,
        ),
        (
            "§6.4 lower-case type",
            ALL,
            req("GET /patient/1"),
            UNDEFINED,
        ),
        (
            "§6.5 _summary=count still search",
            "system/Observation.s",
            req("GET /Observation?_summary=count&_format=json&_pretty=true&_elements=id"),
            allow(),
        ),
        (
            "§6.6 POST _search body include",
            "system/Observation.s",
            Req {
                body: Some((FORM, "_include=Observation:patient")),
                ..req("POST /Observation/_search")
            },
            deny("system/Patient.s"),
        ),
        (
            "§6.6 POST _search body non-UTF-8",
            ALL,
            Req {
                body: Some((FORM, "")),
                ..req("POST /Observation/_search?x=%ff")
            },
            allow(),
        ),
        (
            "§6.7 _include single target",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include=Observation:patient"),
            allow(),
        ),
        (
            "§6.7 _include explicit target",
            "system/Observation.s system/Group.s",
            req("GET /Observation?_include=Observation:subject:Group"),
            allow(),
        ),
        (
            "§6.7 _include multi-target needs *",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include=Observation:subject"),
            deny("system/*.s"),
        ),
        (
            "§6.7 _include=*",
            "system/Observation.s",
            req("GET /Observation?_include=*"),
            deny("system/*.s"),
        ),
        (
            "§6.7 _include with *",
            "system/*.s",
            req("GET /Observation?_include=*"),
            allow(),
        ),
        (
            "§6.7 _include:iterate",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include:iterate=Patient:general-practitioner"),
            deny("system/*.s"),
        ),
        (
            "§6.7 _include:iterate explicit",
            "system/Observation.s system/Patient.s system/Practitioner.s",
            req("GET /Observation?_include:iterate=Patient:general-practitioner:Practitioner"),
            allow(),
        ),
        (
            "§6.7 R3 :recurse",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?_include:recurse=Observation:patient"),
            allow(),
        ),
        (
            "§6.7 _revinclude",
            "system/Patient.s",
            req("GET /Patient?_revinclude=Provenance:target"),
            deny("system/Provenance.s"),
        ),
        (
            "§6.7 _revinclude granted",
            "system/Patient.s system/Provenance.s",
            req("GET /Patient?_revinclude=Provenance:target"),
            allow(),
        ),
        (
            "§6.7 _revinclude:iterate",
            "system/Patient.s system/Observation.s",
            req("GET /Patient?_revinclude:iterate=Observation:subject"),
            allow(),
        ),
        (
            "§6.7 _revinclude=*",
            "system/Patient.s system/Provenance.s",
            req("GET /Patient?_revinclude=*"),
            deny("system/*.s"),
        ),
        (
            "§6.7 encoded _include",
            "system/Observation.s",
            req("GET /Observation?%5Finclude=Observation%3Apatient"),
            deny("system/Patient.s"),
        ),
        (
            "§6.8 chain with type",
            "system/Observation.s",
            req("GET /Observation?subject:Patient.name=x"),
            deny("system/Patient.s"),
        ),
        (
            "§6.8 chain with type granted",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?subject:Patient.name=x"),
            allow(),
        ),
        (
            "§6.8 chain single target",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?patient.name=x"),
            allow(),
        ),
        (
            "§6.8 chain multi-target",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?subject.name=x"),
            deny("system/*.s"),
        ),
        (
            "§6.8 two-link chain",
            "system/Observation.s system/Patient.s",
            req("GET /Observation?patient.organization.name=x"),
            deny("system/Organization.s"),
        ),
        (
            "§6.8 _has",
            "system/Patient.s",
            req("GET /Patient?_has:Observation:patient:code=1234"),
            deny("system/Observation.s"),
        ),
        (
            "§6.8 _has granted",
            "system/Patient.s system/Observation.s",
            req("GET /Patient?_has:Observation:patient:code=1234"),
            allow(),
        ),
        (
            "§6.8 nested _has",
            "system/Patient.s system/Observation.s",
            req("GET /Patient?_has:Observation:patient:_has:AuditEvent:entity:agent=x"),
            deny("system/AuditEvent.s"),
        ),
        (
            "§6.8 chain in POST body",
            "system/Observation.s",
            Req {
                body: Some((FORM, "subject%3APatient.name=x")),
                ..req("POST /Observation/_search")
            },
            deny("system/Patient.s"),
        ),
        (
            "§6.8 chain in conditional update",
            "system/Observation.us",
            req("PUT /Observation?patient.identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "§6.8 chain in If-None-Exist",
            "system/Observation.cs",
            Req {
                if_none_exist: Some("patient.identifier=x"),
                ..req("POST /Observation")
            },
            deny("system/Patient.s"),
        ),
        (
            "§6.8 _filter needs *",
            "system/Observation.s",
            req("GET /Observation?_filter=code%20eq%201"),
            deny("system/*.s"),
        ),
        (
            "§6.8 _list needs List",
            "system/Observation.s",
            req("GET /Observation?_list=42"),
            deny("system/List.s"),
        ),
        (
            "§6.9 _type with chain",
            "system/Observation.s system/Patient.s",
            req("GET /?_type=Observation&patient.name=x"),
            allow(),
        ),
        (
            "§6.9 _type with _include",
            "system/Observation.s",
            req("GET /?_type=Observation&_include=Observation:patient"),
            deny("system/Patient.s"),
        ),
        (
            "§6.10 compartment * ",
            "system/Observation.s system/Condition.s",
            req("GET /Patient/1/*?code=x"),
            deny("system/*.s"),
        ),
        (
            "§6.10 Device compartment",
            "system/Observation.s",
            req("GET /Device/d1/Observation"),
            allow(),
        ),
        (
            "§6.12 conditional create needs s",
            "system/Observation.c",
            Req {
                if_none_exist: Some("identifier=x"),
                ..req("POST /Observation")
            },
            deny("system/Observation.s"),
        ),
        (
            "§6.13 upsert needs u, not c",
            "system/Patient.c",
            req("PUT /Patient/new-id"),
            deny("system/Patient.u"),
        ),
        (
            "§6.14 $validate denied by default",
            ALL,
            req("POST /Patient/$validate"),
            deny(""),
        ),
        (
            "§6.14 $meta unlisted at type level",
            ALL,
            req("POST /Patient/$meta"),
            deny(""),
        ),
        (
            "§6.15 $everything needs *",
            "system/Patient.rs",
            req("GET /Patient/1/$everything"),
            deny("system/*.rs"),
        ),
        (
            "§6.16 system search no _type",
            "system/Observation.s",
            req("GET /?code=x"),
            deny("system/*.s"),
        ),
        (
            "§6.17 _method override is ignored",
            "system/Observation.s",
            req("GET /Observation?_method=DELETE"),
            allow(),
        ),
        (
            "§6.17 POST to an instance",
            ALL,
            req("POST /Patient/1?_method=PUT"),
            UNDEFINED,
        ),
        (
            "§6.18 POST /metadata",
            ALL,
            req("POST /metadata"),
            UNDEFINED,
        ),
        ("§6.18 /Metadata", ALL, req("GET /Metadata"), UNDEFINED),
        (
            "§6.18 /metadata/../Patient/1",
            ALL,
            req("GET /metadata/../Patient/1"),
            MALFORMED,
        ),
        (
            "§6.22 id over 64",
            ALL,
            req("GET /Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            UNDEFINED,
        ),
        (
            "§6.22 id exactly 64",
            "system/Patient.r",
            req("GET /Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            allow(),
        ),
        (
            "§6.22 matrix parameter",
            ALL,
            req("GET /Patient/1;x=y"),
            UNDEFINED,
        ),
        (
            "§6.22 underscore id",
            ALL,
            req("GET /Patient/_1"),
            UNDEFINED,
        ),
        (
            "§6.24 HEAD is GET",
            "system/Patient.r",
            req("HEAD /Patient/1"),
            allow(),
        ),
        (
            "§6.24 HEAD search",
            "system/Patient.r",
            req("HEAD /Patient?name=x"),
            deny("system/Patient.s"),
        ),
    ]);
}

fn bundle(kind: &str, entries: &str) -> String {
    format!(r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{entries}]}}"#)
}

#[test]
fn section_6_11_batch_and_transaction_entries_are_checked_as_if_sent_alone() {
    let read = r#"{"request":{"method":"GET","url":"Patient/1"}}"#;
    let create = r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation"}}"#;
    let search = r#"{"request":{"method":"GET","url":"Observation?category=laboratory&_include=Observation:patient"}}"#;
    let cases: Vec<(&str, &str, String, Outcome)> = vec![
        (
            "§6.11 batch read",
            "system/Patient.r",
            bundle("batch", read),
            allow(),
        ),
        (
            "§6.11 transaction read+create",
            "system/Patient.r system/Observation.c",
            bundle("transaction", &format!("{read},{create}")),
            allow(),
        ),
        (
            "§6.11 any denied entry denies all",
            "system/Patient.r",
            bundle("transaction", &format!("{read},{create}")),
            deny("system/Observation.c"),
        ),
        (
            "§6.11 A19 batch denied as a whole",
            "system/Observation.c",
            bundle("batch", &format!("{read},{create}")),
            deny("system/Patient.r"),
        ),
        (
            "§6.11 hint is the union",
            "",
            bundle("batch", &format!("{read},{create}")),
            deny("system/Patient.r system/Observation.c"),
        ),
        (
            "§6.11 entry search with include",
            "system/Observation.s",
            bundle("batch", search),
            deny("system/Patient.s"),
        ),
        (
            "§6.11 entry granular search",
            "system/Observation.s?category=laboratory system/Patient.s",
            bundle("batch", search),
            allow(),
        ),
        (
            "§6.11 ifNoneExist",
            "system/Observation.c",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=1"}}"#,
            ),
            deny("system/Observation.s"),
        ),
        (
            "§6.11 ifNoneExist granted",
            "system/Observation.cs",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=1"}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 ifNoneExist on PUT",
            ALL,
            bundle(
                "transaction",
                r#"{"request":{"method":"PUT","url":"Observation/1","ifNoneExist":"identifier=1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 ifMatch changes nothing",
            "system/Patient.u",
            bundle(
                "transaction",
                r#"{"request":{"method":"PUT","url":"Patient/1","ifMatch":"W/\"2\""}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 conditional url update",
            "system/Patient.u",
            bundle(
                "transaction",
                r#"{"request":{"method":"PUT","url":"Patient?identifier=x"}}"#,
            ),
            deny("system/Patient.s"),
        ),
        (
            "§6.11 conditional url delete",
            "system/Patient.ds",
            bundle(
                "transaction",
                r#"{"request":{"method":"DELETE","url":"Patient?identifier=x"}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 conditional reference",
            "system/Observation.c",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"}}}"#,
            ),
            deny("system/Patient.s"),
        ),
        (
            "§6.11 conditional reference granted",
            "system/Observation.c system/Patient.s",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"}}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 plain references are fine",
            "system/Observation.c",
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient/1"},"performer":[{"reference":"urn:uuid:9"}]}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 entry dot segments",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient/../Observation/1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 entry encoded slash",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient%2F1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 absolute url to our base",
            "system/Patient.r",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"https://fhir.example.org/r4/Patient/1"}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 absolute url elsewhere",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"https://evil.example/r4/Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 absolute url prefix trick",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"https://fhir.example.org/r4x/Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 network-path url",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"//evil.example/Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 nested bundle resource",
            ALL,
            bundle(
                "transaction",
                r#"{"request":{"method":"POST","url":"Bundle"},"resource":{"resourceType":"Bundle","type":"batch"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 nested batch url",
            ALL,
            bundle("batch", r#"{"request":{"method":"POST","url":""}}"#),
            deny(""),
        ),
        (
            "§6.11 entry without request",
            ALL,
            bundle("batch", r#"{"resource":{"resourceType":"Patient"}}"#),
            deny(""),
        ),
        (
            "§6.11 entry with odd method",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"TRACE","url":"Patient/1"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 entry operation unlisted",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"POST","url":"Patient/$validate"}}"#,
            ),
            deny(""),
        ),
        (
            "§6.11 entry $everything",
            "system/*.rs",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient/1/$everything"}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 entry GraphQL",
            ALL,
            bundle("batch", r#"{"request":{"method":"POST","url":"$graphql"}}"#),
            deny(""),
        ),
        (
            "§6.11 entry metadata",
            ALL,
            bundle("batch", r#"{"request":{"method":"GET","url":"metadata"}}"#),
            deny(""),
        ),
        (
            "§6.11 entry POST _search",
            ALL,
            bundle(
                "batch",
                r#"{"request":{"method":"POST","url":"Patient/_search"}}"#,
            ),
            deny(""),
        ),
        ("§6.11 empty bundle", ALL, bundle("batch", ""), deny("")),
        (
            "§6.11 leading slash entry url",
            "system/Patient.r",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"/Patient/1"}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 HEAD entry",
            "system/Patient.r",
            bundle(
                "batch",
                r#"{"request":{"method":"HEAD","url":"Patient/1"}}"#,
            ),
            allow(),
        ),
        (
            "§6.11 entry compartment search",
            "system/Observation.s",
            bundle(
                "batch",
                r#"{"request":{"method":"GET","url":"Patient/1/Observation"}}"#,
            ),
            allow(),
        ),
    ];
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
    run(&[
        (
            "§6.11 not JSON",
            ALL,
            Req {
                body: Some((JSON, "{not json")),
                ..req("POST /")
            },
            Outcome::BadBody,
        ),
        (
            "§6.11 too deep",
            ALL,
            Req {
                body: Some((JSON, &format!("{}{}", "[".repeat(100), "]".repeat(100)))),
                ..req("POST /")
            },
            Outcome::BadBody,
        ),
        (
            "§6.11 application/json accepted",
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
            "§6.11 also at the empty path",
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
fn section_7_decisions_hold() {
    run(&[
        (
            "§7 A1 system search per _type",
            "system/Patient.s",
            req("GET /?_type=Patient"),
            allow(),
        ),
        (
            "§7 A1 no _type needs *",
            "system/Patient.s",
            req("GET /"),
            deny("system/*.s"),
        ),
        (
            "§7 A2 bad scope grants nothing, others stay",
            "system/Patient.sr system/Patient.r",
            req("GET /Patient/1"),
            allow(),
        ),
        (
            "§7 A3 granular never helps a read",
            "system/Patient.rs?name=x",
            req("GET /Patient/1"),
            deny("system/Patient.r"),
        ),
        (
            "§7 A4 exact string equality",
            "system/Patient.s?gender=male",
            req("GET /Patient?gender=Male"),
            deny("system/Patient.s"),
        ),
        (
            "§7 A5 patient/ grants nothing",
            "patient/Patient.rs",
            req("GET /Patient?name=x"),
            deny("system/Patient.s"),
        ),
        (
            "§7 A6 conditional update needs s",
            "system/Patient.cud",
            req("PUT /Patient?identifier=x"),
            deny("system/Patient.s"),
        ),
        (
            "§7 A7 upsert with c only",
            "system/Patient.c",
            req("PUT /Patient/1"),
            deny("system/Patient.u"),
        ),
        (
            "§7 A8 include needs *",
            "system/Observation.s",
            req("GET /Observation?_include=Observation:performer"),
            deny("system/*.s"),
        ),
        (
            "§7 A9 unknown operation",
            ALL,
            req("GET /Patient/$lastn"),
            deny(""),
        ),
        (
            "§7 A10 export no _type",
            "system/Observation.rs",
            req("GET /$export"),
            deny("system/*.rs"),
        ),
        (
            "§7 A11 Group export",
            "system/*.rs",
            req("GET /Group/1/$export"),
            allow(),
        ),
        (
            "§7 A15 no trailing slash",
            ALL,
            req("DELETE /Patient/?identifier=1"),
            MALFORMED,
        ),
        (
            "§7 A16 encoded unreserved",
            ALL,
            req("GET /Patient/%31"),
            MALFORMED,
        ),
        (
            "§7 A17 v1 and v2 together",
            "system/Patient.read system/Patient.u",
            req("PUT /Patient/1"),
            allow(),
        ),
        (
            "§7 A18 runs of spaces",
            "system/Patient.r  system/Patient.s",
            req("GET /Patient?name=x"),
            allow(),
        ),
        (
            "§7 A20 Binary needs its own scope",
            "system/Patient.rs",
            req("GET /Binary/1"),
            deny("system/Binary.r"),
        ),
        (
            "§7 A21 hint is v2 without suffix",
            "system/Observation.read?category=x",
            req("GET /Observation"),
            deny("system/Observation.s"),
        ),
        (
            "§7 A21 hint leaves out what * covers",
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
