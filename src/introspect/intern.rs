//! Sharing what many cached answers repeat: the scope string and its parsed [`ScopeSet`], and
//! short identity strings (`client_id`, `sub`, `iss`, `token_type`).
//!
//! A backend client's tokens all carry the same scope string (often 200+ bytes, 10+ scopes);
//! parsing and storing it once per client instead of once per token is most of what keeps a
//! cached entry under 1 KiB (BENCHMARKS.md). Only the miss path touches these tables; both are
//! bounded moka caches, so an AS that mints unique strings cannot grow them without end.

use std::sync::{Arc, LazyLock};

use crate::scope::ScopeSet;

const CAPACITY: u64 = 10_000;

struct Interner {
    strings: moka::sync::Cache<Arc<str>, Arc<str>>,
    scopes: moka::sync::Cache<Arc<str>, (Arc<str>, Arc<ScopeSet>)>,
}

static INTERNER: LazyLock<Interner> = LazyLock::new(|| Interner {
    strings: moka::sync::Cache::new(CAPACITY),
    scopes: moka::sync::Cache::new(CAPACITY),
});

/// The shared copy of `s`.
pub(crate) fn string(s: &str) -> Arc<str> {
    if let Some(shared) = INTERNER.strings.get(s) {
        return shared;
    }
    let shared: Arc<str> = Arc::from(s);
    INTERNER
        .strings
        .insert(Arc::clone(&shared), Arc::clone(&shared));
    shared
}

/// The shared copy of a scope string and its parsed scopes (parsed once per distinct string).
pub(crate) fn scopes(scope: &str) -> (Arc<str>, Arc<ScopeSet>) {
    if let Some(shared) = INTERNER.scopes.get(scope) {
        return shared;
    }
    let raw: Arc<str> = Arc::from(scope);
    let shared = (Arc::clone(&raw), Arc::new(ScopeSet::parse(scope)));
    INTERNER.scopes.insert(raw, shared.clone());
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let a = string("backend-app-interned");
        let b = string(&String::from("backend-app-interned"));
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_scope_string_is_parsed_once_and_shared() {
        let (raw_a, set_a) = scopes("system/Patient.rs system/Observation.read interned");
        let (raw_b, set_b) = scopes("system/Patient.rs system/Observation.read interned");
        assert!(Arc::ptr_eq(&set_a, &set_b));
        assert!(Arc::ptr_eq(&raw_a, &raw_b));
        assert_eq!(set_a.scopes().len(), 2);
    }
}
