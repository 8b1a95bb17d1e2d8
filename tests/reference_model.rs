//! The guard never requires less than a small reference model, written apart from the
//! classifier: generated search parameters (names × modifiers × encodings × chains × `_has` ×
//! positions) are mapped by the model to the types they reach, each needing `s`; for each such
//! type, a token granted everything else is refused (docs/AUTHORIZATION.md §5).

use http::Method;
use proptest::prelude::*;
use serde_json::json;
use smart_guard::{Incoming, Policy, ScopeSet};

/// Single-target reference parameters of R4, as (source type, parameter, target type).
const LINKS: &[(&str, &str, &str)] = &[
    ("Observation", "patient", "Patient"),
    ("Observation", "encounter", "Encounter"),
    ("Encounter", "patient", "Patient"),
    ("Encounter", "service-provider", "Organization"),
    ("Patient", "organization", "Organization"),
    ("Organization", "partof", "Organization"),
];

const TYPES: [&str; 4] = ["Observation", "Encounter", "Patient", "Organization"];

/// One generated parameter, before encoding.
#[derive(Clone, Debug)]
enum Param {
    /// A filter on the searched type, with a known modifier or none.
    Plain(&'static str, Option<&'static str>),
    /// A name the model cannot read: an unknown `_`-name or an unknown modifier.
    Unknown(&'static str),
    /// `_has:Type:param:` around another parameter.
    Has(&'static str, Box<Param>),
    /// A chain of links from the searched type, ending in a plain name or another parameter.
    Chain(Vec<usize>, Box<Param>),
    /// `_list`.
    List,
    /// `_filter`.
    Filter,
    /// `_include=Source:param`.
    Include(usize),
}

/// What the model says a parameter reaches from `base`: types, or `None` for "any type".
fn reaches(base: &str, param: &Param, out: &mut Vec<&'static str>) -> Option<()> {
    match param {
        Param::Plain(..) => Some(()),
        Param::Unknown(_) | Param::Filter => None,
        Param::List => {
            out.push("List");
            Some(())
        }
        Param::Include(link) => {
            out.push(LINKS[*link].2);
            Some(())
        }
        Param::Has(other, rest) => {
            out.push(other);
            reaches(other, rest, out)
        }
        Param::Chain(links, end) => {
            // Each link is followed by its name from the current type.
            let mut current = base;
            for link in links {
                let name = LINKS[*link].1;
                let (_, _, target) = LINKS
                    .iter()
                    .find(|(source, param, _)| *source == current && *param == name)?;
                out.push(target);
                current = target;
            }
            reaches(current, end, out)
        }
    }
}

/// The parameter's name (decoded) and value.
fn render(param: &Param) -> (String, String) {
    match param {
        Param::Plain(name, modifier) => (
            modifier.map_or_else(|| (*name).to_owned(), |m| format!("{name}:{m}")),
            "x".into(),
        ),
        Param::Unknown(name) => ((*name).to_owned(), "x".into()),
        Param::List => ("_list".into(), "42".into()),
        Param::Filter => ("_filter".into(), "name eq x".into()),
        Param::Include(link) => {
            let (source, param, _) = LINKS[*link];
            ("_include".into(), format!("{source}:{param}"))
        }
        Param::Has(other, rest) => {
            let (name, value) = render(rest);
            (format!("_has:{other}:subject:{name}"), value)
        }
        Param::Chain(links, end) => {
            let (name, value) = render(end);
            let path: Vec<&str> = links.iter().map(|l| LINKS[*l].1).collect();
            (format!("{}.{name}", path.join(".")), value)
        }
    }
}

fn leaf() -> impl Strategy<Value = Param> {
    prop_oneof![
        prop::sample::select(&["code", "status", "name", "my-filter"][..]).prop_flat_map(|name| {
            prop::option::of(prop::sample::select(
                &["not", "exact", "missing", "text"][..],
            ))
            .prop_map(move |m| Param::Plain(name, m))
        }),
        prop::sample::select(&["_reveal", "code:everything", "_secret:not"][..])
            .prop_map(Param::Unknown),
        Just(Param::List),
        Just(Param::Filter),
        (0..LINKS.len()).prop_map(Param::Include),
    ]
}

fn param() -> impl Strategy<Value = Param> {
    leaf().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (prop::sample::select(&TYPES[..]), inner.clone())
                .prop_map(|(t, rest)| Param::Has(t, Box::new(rest))),
            (prop::collection::vec(0..LINKS.len(), 1..3), inner)
                .prop_map(|(links, end)| Param::Chain(links, Box::new(end))),
        ]
    })
}

/// Percent-encodes `_`, `.` and `:` in a name where `mask` says so, byte by byte.
fn encode(name: &str, mask: u64) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        let encoded = mask >> (i % 64) & 1 == 1;
        match c {
            '_' if encoded => out.push_str("%5F"),
            '.' if encoded => out.push_str("%2E"),
            ':' if encoded => out.push_str("%3A"),
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out
}

/// Classifies the search of `base` with `query` in one of five positions and checks it against
/// `scopes`: `Some(allowed)`, or `None` when the guard refuses it outright (a limit).
fn allowed(position: u8, base: &str, query: &str, scopes: &str) -> Option<bool> {
    let scopes = ScopeSet::parse(scopes);
    let decide = |incoming: &Incoming<'_>| {
        let request = Policy::default().classify(incoming).ok()?;
        Some(scopes.authorize(&request, incoming).is_ok())
    };
    match position % 5 {
        0 => {
            let path = format!("/{base}");
            decide(&Incoming::new(&Method::GET, &path).with_query(query))
        }
        1 => {
            let path = format!("/{base}/_search");
            decide(
                &Incoming::new(&Method::POST, &path)
                    .with_body("application/x-www-form-urlencoded", query.as_bytes()),
            )
        }
        2 => {
            let path = format!("/{base}");
            decide(&Incoming::new(&Method::POST, &path).with_if_none_exist(query))
        }
        3 => {
            let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": format!("{base}?{query}")}}]})
            .to_string();
            decide(
                &Incoming::new(&Method::POST, "/")
                    .with_body("application/fhir+json", body.as_bytes()),
            )
        }
        _ => {
            let filter: String =
                form_urlencoded::byte_serialize(format!("{base}?{query}").as_bytes()).collect();
            let kick_off = format!("_type={base}&_typeFilter={filter}");
            decide(&Incoming::new(&Method::GET, "/$export").with_query(&kick_off))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn the_guard_never_requires_less_than_the_reference_model(
        base in prop::sample::select(&TYPES[..]),
        param in param(),
        mask in any::<u64>(),
        position in any::<u8>(),
    ) {
        let (name, value) = render(&param);
        let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let query = format!("{}={value}", encode(&name, mask));
        let mut reached = Vec::new();
        let known = reaches(base, &param, &mut reached).is_some();
        // The searched type itself, with every letter its position needs.
        let own = format!("system/{base}.cruds");
        let granted = |except: Option<&str>| {
            let mut scopes = vec![own.clone()];
            for ty in TYPES.iter().chain(["List"].iter()) {
                if Some(*ty) != except && (reached.contains(ty) || !known) {
                    scopes.push(format!("system/{ty}.rs"));
                }
            }
            scopes.join(" ")
        };
        if known {
            for ty in reached.iter().filter(|ty| **ty != base) {
                let outcome = allowed(position, base, &query, &granted(Some(ty)));
                prop_assert_ne!(outcome, Some(true), "{} reaches {} ({:?}); allowed without it", query, ty, param);
            }
        } else {
            // The model cannot tell what it reaches: only `*` will do.
            let outcome = allowed(position, base, &query, &granted(None));
            prop_assert_ne!(outcome, Some(true), "{} ({:?}) reaches unknown types; allowed without *", query, param);
        }
    }
}
