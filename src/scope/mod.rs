//! SMART v1 and v2 resource scopes, parsed once per introspection answer.
//!
//! Grammar and decisions: docs/AUTHORIZATION.md §3. A granted scope that does not parse grants
//! nothing and never invalidates the others; only `system/` scopes grant access (Backend
//! Services).

mod insufficient;
mod smart_scope;

use std::fmt;

pub use self::{
    insufficient::InsufficientScope,
    smart_scope::{ScopeContext, ScopeSyntax, SmartScope},
};
use crate::need::{Need, Permissions, TypeScope};

/// The scopes an access token was granted, parsed once per introspection answer.
///
/// Scopes add up (SMART "Scope Equivalence"): `Observation.r` and `Observation.s` together are
/// `Observation.rs`. Only `system/` scopes grant access; `patient/` and `user/` scopes are kept for
/// handlers but grant nothing here. A granular scope (`system/Observation.rs?category=laboratory`)
/// only meets the `s` of a search on its type that restates every constraint (see
/// [`ScopeSet::authorize`](crate::ScopeSet::authorize)).
///
/// ```
/// use smart_guard::{Need, Permissions, ResourceType, ScopeSet, TypeScope};
///
/// let scopes = ScopeSet::parse("openid system/Patient.read system/Observation.s");
/// let observation = ResourceType::parse("Observation").unwrap();
/// let search = Need { resource: TypeScope::Type(observation), permissions: Permissions::SEARCH };
/// assert!(scopes.permits(&[search]).is_ok());
/// let create = Need { resource: TypeScope::Type(observation), permissions: Permissions::CREATE };
/// assert!(scopes.permits(&[create]).is_err());
/// ```
#[derive(Clone, Default)]
pub struct ScopeSet {
    scopes: Box<[SmartScope]>,
    ignored: usize,
    /// Indices of the `system/` type scopes with constraints and an `s`.
    pub(crate) granular: Box<[u16]>,
    /// The unconstrained `system/` scopes, in grant order: what `granted` and the per-request
    /// scan read.
    pub(crate) plain: Box<[PlainScope]>,
}

/// An unconstrained `system/` scope as the per-request scan reads it: six bytes, so ten of them
/// share one cache line (a [`SmartScope`] with its constraints is several times larger).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlainScope {
    pub(crate) resource: TypeScope,
    pub(crate) permissions: Permissions,
    /// Its index in [`ScopeSet::scopes`], for the audit record.
    pub(crate) index: u16,
}

impl ScopeSet {
    /// Splits a space-separated scope string (runs of spaces tolerated, tabs and commas are not
    /// separators) and keeps every valid resource scope.
    #[must_use]
    pub fn parse(scope: &str) -> Self {
        let mut scopes = Vec::new();
        let mut ignored = 0;
        for token in scope.split(' ').filter(|t| !t.is_empty()) {
            match SmartScope::parse(token) {
                Some(parsed) => scopes.push(parsed),
                None => ignored += 1,
            }
        }
        let mut granular = Vec::new();
        let mut plain = Vec::new();
        for (index, scope) in scopes.iter().enumerate() {
            if scope.context() != ScopeContext::System {
                continue;
            }
            if !scope.constraints().is_empty() {
                if matches!(scope.resource(), TypeScope::Type(_))
                    && scope.permissions().contains(Permissions::SEARCH)
                    && let Ok(index) = u16::try_from(index)
                {
                    granular.push(index);
                }
                continue;
            }
            plain.push(PlainScope {
                resource: scope.resource(),
                permissions: scope.permissions(),
                // Past `u16` (never, for a 64 KiB answer): an index that names no scope.
                index: u16::try_from(index).unwrap_or(u16::MAX - 1),
            });
        }
        Self {
            scopes: scopes.into_boxed_slice(),
            ignored,
            granular: granular.into_boxed_slice(),
            plain: plain.into_boxed_slice(),
        }
    }

    /// The valid resource scopes, in the order granted.
    #[must_use]
    pub fn scopes(&self) -> &[SmartScope] {
        &self.scopes
    }

    /// How many space-separated tokens were not valid resource scopes (`openid`, `launch`,
    /// malformed or unknown-type scopes).
    #[must_use]
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The letters granted on a type by unconstrained `system/` scopes, `*` included.
    #[must_use]
    pub fn granted(&self, resource: TypeScope) -> Permissions {
        self.plain
            .iter()
            .filter(|scope| scope.resource == TypeScope::Wildcard || scope.resource == resource)
            .fold(Permissions::NONE, |letters, scope| {
                letters | scope.permissions
            })
    }

    /// Checks every need against the unconstrained `system/` scopes; on failure returns the
    /// needs (reduced to their missing letters) that no granted scope covers. Granular scopes
    /// need the request's parameters: use [`ScopeSet::authorize`](crate::ScopeSet::authorize) for them.
    ///
    /// # Errors
    ///
    /// [`InsufficientScope`] listing what is missing.
    pub fn permits(&self, needs: &[Need]) -> Result<(), InsufficientScope> {
        if needs
            .iter()
            .all(|need| self.granted(need.resource).contains(need.permissions))
        {
            return Ok(());
        }
        let missing = needs
            .iter()
            .filter_map(|need| {
                let lacking = need.permissions.without(self.granted(need.resource));
                (!lacking.is_empty()).then_some(Need {
                    resource: need.resource,
                    permissions: lacking,
                })
            })
            .collect();
        Err(InsufficientScope::missing_needs(missing))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeSet")
            .field("scopes", &self.scopes)
            .field("ignored", &self.ignored)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::ResourceType;

    fn ty(name: &str) -> TypeScope {
        TypeScope::Type(ResourceType::parse(name).expect("known type"))
    }

    fn letters(s: &str) -> Permissions {
        Permissions::parse_v2(s).expect("valid letters")
    }

    #[test]
    fn v2_letters_must_be_a_nonempty_in_order_subset_of_cruds() {
        for (input, valid) in [
            ("c", true),
            ("r", true),
            ("rs", true),
            ("cu", true),
            ("cruds", true),
            ("crs", true),
            ("ds", true),
            ("", false),
            ("sr", false),
            ("rr", false),
            ("dus", false),
            ("cruds ", false),
            ("x", false),
            ("R", false),
            ("rd s", false),
            ("crudss", false),
        ] {
            assert_eq!(Permissions::parse_v2(input).is_some(), valid, "{input:?}");
        }
    }

    #[test]
    fn v1_scopes_map_to_their_v2_equivalents() {
        for (v1, v2) in [
            ("system/Patient.read", "system/Patient.rs"),
            ("system/Patient.write", "system/Patient.cud"),
            ("system/Patient.*", "system/Patient.cruds"),
            ("system/*.read", "system/*.rs"),
            ("patient/Observation.read", "patient/Observation.rs"),
        ] {
            let old = SmartScope::parse(v1).expect(v1);
            let new = SmartScope::parse(v2).expect(v2);
            assert_eq!(old.syntax(), ScopeSyntax::V1);
            assert_eq!(new.syntax(), ScopeSyntax::V2);
            assert_eq!(old.permissions(), new.permissions(), "{v1} vs {v2}");
            assert_eq!(old.to_string(), v2);
        }
    }

    #[test]
    fn write_does_not_imply_read() {
        let scopes = ScopeSet::parse("system/Patient.write");
        assert!(!scopes.granted(ty("Patient")).contains(Permissions::READ));
        assert!(!scopes.granted(ty("Patient")).contains(Permissions::SEARCH));
    }

    #[test]
    fn malformed_and_non_resource_scopes_are_not_resource_scopes() {
        for token in [
            "openid",
            "fhirUser",
            "launch",
            "launch/patient",
            "offline_access",
            "system/Patient",
            "system/Patient.",
            "system/patient.read",
            "System/Patient.read",
            "*/Patient.read",
            "system/Unknown.read",
            "system/Patient.readfoo",
            "system/Patient.sr",
            "system/Patient.read?category=x",
            "system/Observation.rs?",
            "system/Observation.rs?category",
            "system/Observation.rs?=x",
            "system/Observation.rs?category=",
            "system%2FPatient.rs",
            "system/Patient.r\ts",
            "system/Patient.rs,system/Observation.rs",
            "system$Patient.rs",
            "system.Patient.rs",
            "system/all.read",
            "http://smarthealthit.org/fhir/scopes/system/*.r",
            "__custom",
            "system/Patient.\"r\"",
        ] {
            assert_eq!(SmartScope::parse(token), None, "{token:?}");
        }
    }

    #[test]
    fn granular_constraints_are_parsed_and_percent_decoded() {
        let scope = SmartScope::parse(
            "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category%7Claboratory&status=final",
        )
        .expect("valid granular scope");
        assert_eq!(
            scope.constraints(),
            [
                (
                    "category".into(),
                    "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".into()
                ),
                ("status".into(), "final".into())
            ]
        );
    }

    #[test]
    fn invalid_scopes_do_not_poison_valid_ones() {
        let scopes = ScopeSet::parse("system/Patient.sr openid system/Observation.rs launch bogus");
        assert_eq!(scopes.scopes().len(), 1);
        assert_eq!(scopes.ignored(), 4);
        assert_eq!(scopes.granted(ty("Observation")), letters("rs"));
        assert_eq!(scopes.granted(ty("Patient")), Permissions::NONE);
    }

    #[test]
    fn runs_of_spaces_separate_but_tabs_and_commas_do_not() {
        let scopes = ScopeSet::parse("  system/Patient.rs    system/Observation.c  ");
        assert_eq!(scopes.scopes().len(), 2);
        let tabbed = ScopeSet::parse("system/Patient.rs\tsystem/Observation.c");
        assert_eq!(tabbed.scopes().len(), 0);
        let commas = ScopeSet::parse("system/Patient.rs,system/Observation.c");
        assert_eq!(commas.scopes().len(), 0);
    }

    #[test]
    fn scopes_add_up_per_type_and_with_the_wildcard() {
        let scopes = ScopeSet::parse("system/Observation.r system/Observation.s system/*.c");
        assert_eq!(scopes.granted(ty("Observation")), letters("crs"));
        assert_eq!(scopes.granted(ty("Patient")), letters("c"));
        assert_eq!(scopes.granted(TypeScope::Wildcard), letters("c"));
    }

    #[test]
    fn mixed_v1_and_v2_scopes_are_each_honoured() {
        let scopes = ScopeSet::parse("system/Patient.read system/Observation.cu");
        assert_eq!(scopes.granted(ty("Patient")), letters("rs"));
        assert_eq!(scopes.granted(ty("Observation")), letters("cu"));
    }

    #[test]
    fn only_unconstrained_system_scopes_grant() {
        let scopes = ScopeSet::parse(
            "patient/Patient.rs user/*.cruds patient/*.* system/Observation.rs?category=laboratory",
        );
        assert_eq!(scopes.scopes().len(), 4, "all kept for handlers");
        for t in ["Patient", "Observation", "Condition"] {
            assert_eq!(scopes.granted(ty(t)), Permissions::NONE, "{t}");
        }
        assert_eq!(scopes.granted(TypeScope::Wildcard), Permissions::NONE);
    }

    #[test]
    fn a_wildcard_need_is_only_met_by_a_wildcard_scope() {
        let need = Need {
            resource: TypeScope::Wildcard,
            permissions: Permissions::SEARCH,
        };
        assert!(
            ScopeSet::parse("system/Patient.s system/Observation.s")
                .permits(&[need])
                .is_err()
        );
        assert!(ScopeSet::parse("system/*.s").permits(&[need]).is_ok());
        assert!(ScopeSet::parse("system/*.read").permits(&[need]).is_ok());
    }

    #[test]
    fn permits_table() {
        for (granted, t, needed, allowed) in [
            ("system/Patient.read", "Patient", "r", true),
            ("system/Patient.read", "Patient", "s", true),
            ("system/Patient.read", "Patient", "c", false),
            ("system/Patient.rs", "Patient", "c", false),
            ("system/Patient.write", "Patient", "u", true),
            ("system/Patient.write", "Patient", "d", true),
            ("system/Patient.c", "Patient", "u", false),
            ("system/Patient.cs", "Patient", "cs", true),
            ("system/Patient.c", "Patient", "cs", false),
            ("system/Patient.*", "Patient", "cruds", true),
            ("system/*.*", "Observation", "cruds", true),
            ("system/*.rs", "Observation", "rs", true),
            ("system/Patient.rs", "Observation", "r", false),
            ("", "Patient", "r", false),
            ("openid fhirUser", "Patient", "r", false),
        ] {
            let need = Need {
                resource: ty(t),
                permissions: letters(needed),
            };
            assert_eq!(
                ScopeSet::parse(granted).permits(&[need]).is_ok(),
                allowed,
                "{granted:?} {t} {needed}"
            );
        }
    }

    #[test]
    fn the_hint_names_the_missing_letters_in_v2() {
        let scopes = ScopeSet::parse("system/Patient.r");
        let err = scopes
            .permits(&[
                Need {
                    resource: ty("Patient"),
                    permissions: letters("rs"),
                },
                Need {
                    resource: ty("Observation"),
                    permissions: letters("c"),
                },
            ])
            .expect_err("lacks s and Observation.c");
        assert_eq!(err.scope_hint(), "system/Patient.s system/Observation.c");
    }

    #[test]
    fn the_diagnostics_of_a_bundle_name_twenty_denied_entries_and_count_the_rest() {
        let denial = |i: usize| {
            (
                i,
                InsufficientScope::never("nested bundles are not allowed"),
            )
        };
        let many = InsufficientScope::entries((0..1_000).map(denial).collect());
        let text = many.to_string();
        assert!(text.starts_with("entry 0: nested bundles are not allowed; entry 1: "));
        assert!(
            text.contains("entry 19: ") && !text.contains("entry 20: "),
            "{text}"
        );
        assert!(text.ends_with("; and 980 more denied entries"), "{text}");
        assert_eq!(many.denied_entries().len(), 1_000);
        let few = InsufficientScope::entries((0..2).map(denial).collect()).to_string();
        assert!(!few.contains("more"), "{few}");
    }
}
