//! Batch and transaction bodies: parsing and per-entry checks never panic, whatever the JSON,
//! and a bundle allowed by `system/*.cruds` stays allowed while one denied by it stays denied
//! under a narrower grant.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use smart_guard::{Incoming, Policy, ScopeSet};

fuzz_target!(|data: &[u8]| {
    let incoming = Incoming::new(&Method::POST, "/").with_body("application/fhir+json", data);
    let policy = Policy::default()
        .with_base_url("https://fhir.example/r4")
        .with_max_json_depth(32);
    let Ok(request) = policy.classify(&incoming) else {
        return;
    };
    let wide = ScopeSet::parse("system/*.cruds");
    let narrow = ScopeSet::parse("system/Patient.rs system/Observation.cruds");
    let wide_ok = wide.authorize(&request, &incoming).is_ok();
    let narrow_ok = narrow.authorize(&request, &incoming).is_ok();
    assert!(wide_ok || !narrow_ok, "a narrower grant allowed what a wider one denied");
    for entry in request.entries() {
        let _ = entry.needs();
    }
});
