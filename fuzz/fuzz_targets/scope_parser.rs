//! The scope grammar (docs/AUTHORIZATION.md §3): any string parses without panicking, every kept
//! scope has letters, prints in v2 syntax that parses back to the same letters, and the hint of any
//! denial is a valid RFC 6750 `scope` value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smart_guard::{Need, Permissions, ScopeSet, SmartScope, TypeScope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let set = ScopeSet::parse(text);
    for scope in set.scopes() {
        assert!(!scope.permissions().is_empty());
        if scope.constraints().is_empty() {
            let printed = scope.to_string();
            let again = SmartScope::parse(&printed).expect("a printed scope parses");
            assert_eq!(again.permissions(), scope.permissions(), "{printed}");
        }
    }
    let need = Need {
        resource: TypeScope::Wildcard,
        permissions: Permissions::ALL,
    };
    if let Err(missing) = set.permits(&[need]) {
        let hint = missing.scope_hint();
        assert!(hint.bytes().all(|b| matches!(b, 0x20 | 0x21 | 0x23..=0x5B | 0x5D..=0x7E)));
    }
});
