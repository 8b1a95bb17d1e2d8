//! The classifier and the scope check never panic on any method, path, query, header or form
//! body, and a request is never allowed by an empty grant unless it needs nothing.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use smart_guard::{Grants, Incoming, Policy, ScopeSet};

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(4, '\n');
    let path = parts.next().unwrap_or_default();
    let query = parts.next();
    let if_none_exist = parts.next();
    let body = parts.next().unwrap_or_default();
    let method = &METHODS[usize::from(selector) % METHODS.len()];
    let policy = Policy::default()
        .with_allowed_operations("POST ValueSet/$expand=ValueSet.r; */[id]/$meta=[type].r")
        .expect("valid rules")
        .with_bulk_paths("/$export-poll-status; GET /bulk=*.rs")
        .expect("valid paths");
    let mut incoming = Incoming::new(method, path);
    if let Some(query) = query {
        incoming = incoming.with_query(query);
    }
    if selector & 0x80 != 0 {
        if let Some(condition) = if_none_exist {
            incoming = incoming.with_if_none_exist(condition);
        }
    }
    if selector & 0x40 != 0 {
        incoming = incoming.with_body("application/x-www-form-urlencoded", body.as_bytes());
    }
    let Ok(request) = policy.classify(&incoming) else {
        return;
    };
    let _ = Grants::none().audit(&request, &ScopeSet::default()).to_string();
    let nothing = ScopeSet::parse("");
    let allowed = nothing.authorize(&request, &incoming).is_ok();
    assert!(!allowed || request.needs().is_empty() && !request.is_never_allowed());
    let everything = ScopeSet::parse(
        "system/*.cruds system/Observation.rs?category=laboratory system/Patient.s?name=x",
    );
    if let Ok(grants) = everything.authorize(&request, &incoming) {
        let _ = grants.list(&request);
        let _ = grants.audit(&request, &everything).to_string();
    }
});
