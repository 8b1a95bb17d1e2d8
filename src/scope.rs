//! SMART v1 and v2 resource scopes, parsed once per introspection answer.
//!
//! Grammar and decisions: SMART-NOTES §3. A granted scope that does not parse grants nothing and never
//! invalidates the others; only `system/` scopes grant access (Backend Services, §3.9).

use std::fmt;

use crate::resource_type::ResourceType;

/// A set of SMART permission letters, a subset of `cruds`.
///
/// ```
/// use smart_guard::Permissions;
///
/// let rs = Permissions::READ | Permissions::SEARCH;
/// assert_eq!(rs.to_string(), "rs");
/// assert!(Permissions::ALL.contains(rs));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No letters.
    pub const NONE: Self = Self(0);
    /// `c`: type-level create.
    pub const CREATE: Self = Self(1);
    /// `r`: read, vread, instance history.
    pub const READ: Self = Self(2);
    /// `u`: update (also update-as-create) and patch.
    pub const UPDATE: Self = Self(4);
    /// `d`: delete.
    pub const DELETE: Self = Self(8);
    /// `s`: type, system and compartment search; type and system history.
    pub const SEARCH: Self = Self(16);
    /// `cruds`, which v1 `.*` also means.
    pub const ALL: Self = Self(31);

    const LETTERS: [(u8, Self); 5] = [
        (b'c', Self::CREATE),
        (b'r', Self::READ),
        (b'u', Self::UPDATE),
        (b'd', Self::DELETE),
        (b's', Self::SEARCH),
    ];

    /// Whether every letter of `other` is in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no letter is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The letters of `self` that `other` lacks.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Parses v2 letters: a non-empty subset of `cruds`, in that order, each at most once.
    fn parse_v2(letters: &str) -> Option<Self> {
        let mut next = 0; // index into LETTERS of the earliest letter still allowed
        let mut set = Self::NONE;
        for byte in letters.bytes() {
            let offset = Self::LETTERS[next..].iter().position(|(l, _)| *l == byte)?;
            set = set | Self::LETTERS[next + offset].1;
            next += offset + 1;
        }
        (!set.is_empty()).then_some(set)
    }
}

impl std::ops::BitOr for Permissions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Permissions {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (letter, flag) in Self::LETTERS {
            if self.contains(flag) {
                fmt::Write::write_char(f, char::from(letter))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({self})")
    }
}

/// The context part of a scope: whose data it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeContext {
    /// `patient/`: data about the patient in context.
    Patient,
    /// `user/`: data the user may see.
    User,
    /// `system/`: data the client itself may see (Backend Services).
    System,
}

/// Which resource types a scope, or a requirement, is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeScope {
    /// `*`: every type, now and in the future. As a requirement: only a `*` scope will do.
    Wildcard,
    /// One resource type.
    Type(ResourceType),
}

impl fmt::Display for TypeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wildcard => f.write_str("*"),
            Self::Type(ty) => f.write_str(ty.as_str()),
        }
    }
}

/// Whether a scope was written in SMART v1 (`.read`/`.write`/`.*`) or v2 (`.cruds`) syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeSyntax {
    /// `.read`, `.write` or `.*`.
    V1,
    /// A subset of `.cruds`, in order.
    V2,
}

/// One valid SMART resource scope, e.g. `system/Observation.rs` or `system/*.read`.
///
/// ```
/// use smart_guard::{Permissions, ScopeContext, SmartScope};
///
/// let scope = SmartScope::parse("system/Observation.read").unwrap();
/// assert_eq!(scope.context(), ScopeContext::System);
/// assert_eq!(scope.permissions(), Permissions::READ | Permissions::SEARCH);
/// assert!(SmartScope::parse("system/Observation.sr").is_none(), "letters must be in cruds order");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SmartScope {
    context: ScopeContext,
    resource: TypeScope,
    permissions: Permissions,
    syntax: ScopeSyntax,
    constraints: Box<[(Box<str>, Box<str>)]>,
}

impl SmartScope {
    /// Parses one scope token; `None` when it is not a valid SMART resource scope (that includes
    /// non-resource scopes such as `openid` or `launch`).
    #[must_use]
    pub fn parse(token: &str) -> Option<Self> {
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        {
            return None;
        }
        let (context, rest) = token.split_once('/')?;
        let context = match context {
            "patient" => ScopeContext::Patient,
            "user" => ScopeContext::User,
            "system" => ScopeContext::System,
            _ => return None,
        };
        let (resource, rest) = rest.split_once('.')?;
        let resource = match resource {
            "*" => TypeScope::Wildcard,
            name => TypeScope::Type(ResourceType::parse(name)?),
        };
        let (letters, query) = match rest.split_once('?') {
            Some((letters, query)) => (letters, Some(query)),
            None => (rest, None),
        };
        let (permissions, syntax) = match letters {
            "read" => (Permissions::READ | Permissions::SEARCH, ScopeSyntax::V1),
            "write" => (
                Permissions::CREATE | Permissions::UPDATE | Permissions::DELETE,
                ScopeSyntax::V1,
            ),
            "*" => (Permissions::ALL, ScopeSyntax::V1),
            letters => (Permissions::parse_v2(letters)?, ScopeSyntax::V2),
        };
        let constraints = match query {
            None => Box::default(),
            // Granular constraints are a v2 feature.
            Some(_) if syntax == ScopeSyntax::V1 => return None,
            Some(query) => parse_constraints(query)?,
        };
        Some(Self {
            context,
            resource,
            permissions,
            syntax,
            constraints,
        })
    }

    /// `patient`, `user` or `system`.
    #[must_use]
    pub fn context(&self) -> ScopeContext {
        self.context
    }

    /// The resource type, or `*`.
    #[must_use]
    pub fn resource(&self) -> TypeScope {
        self.resource
    }

    /// The letters granted, with v1 mapped to v2 (`read` = `rs`, `write` = `cud`, `*` = `cruds`).
    #[must_use]
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    /// v1 or v2 syntax.
    #[must_use]
    pub fn syntax(&self) -> ScopeSyntax {
        self.syntax
    }

    /// The granular `?name=value` constraints, percent-decoded; empty for an unconstrained scope.
    #[must_use]
    pub fn constraints(&self) -> &[(Box<str>, Box<str>)] {
        &self.constraints
    }
}

impl fmt::Display for SmartScope {
    /// The scope in v2 syntax (a v1 scope prints as its v2 equivalent).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = match self.context {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        };
        write!(f, "{context}/{}.{}", self.resource, self.permissions)?;
        for (index, (name, value)) in self.constraints.iter().enumerate() {
            let sep = if index == 0 { '?' } else { '&' };
            write!(f, "{sep}{name}={value}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SmartScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmartScope({self})")
    }
}

fn parse_constraints(query: &str) -> Option<Box<[(Box<str>, Box<str>)]>> {
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=')?;
        if name.is_empty() || value.is_empty() {
            return None;
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|d| Box::<str>::from(d.as_ref()))
        };
        pairs.push((decode(name)?, decode(value)?));
    }
    Some(pairs.into_boxed_slice())
}

/// One need of a request: these letters on this type (or on `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Need {
    /// The type the letters are needed on; [`TypeScope::Wildcard`] means only a `*` scope will do.
    pub resource: TypeScope,
    /// The letters needed.
    pub permissions: Permissions,
}

impl Need {
    /// The smallest v2 `system/` scope that meets this need, e.g. `system/Observation.rs`.
    #[must_use]
    pub fn as_scope_hint(&self) -> String {
        format!("system/{}.{}", self.resource, self.permissions)
    }
}

/// The scopes an access token was granted, parsed once per introspection answer.
///
/// Scopes add up (SMART "Scope Equivalence"): `Observation.r` and `Observation.s` together are
/// `Observation.rs`. Only unconstrained `system/` scopes grant access; `patient/` and `user/`
/// scopes and granular scopes are kept for handlers but grant nothing here.
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
    wildcard: Permissions,
    by_type: Box<[(ResourceType, Permissions)]>,
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
        let mut wildcard = Permissions::NONE;
        let mut by_type: Vec<(ResourceType, Permissions)> = Vec::new();
        for scope in &scopes {
            if scope.context != ScopeContext::System || !scope.constraints.is_empty() {
                continue;
            }
            match scope.resource {
                TypeScope::Wildcard => wildcard |= scope.permissions,
                TypeScope::Type(ty) => match by_type.iter_mut().find(|(t, _)| *t == ty) {
                    Some((_, letters)) => *letters |= scope.permissions,
                    None => by_type.push((ty, scope.permissions)),
                },
            }
        }
        by_type.sort_unstable_by_key(|(ty, _)| *ty);
        Self {
            scopes: scopes.into_boxed_slice(),
            ignored,
            wildcard,
            by_type: by_type.into_boxed_slice(),
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
        match resource {
            TypeScope::Wildcard => self.wildcard,
            TypeScope::Type(ty) => {
                let specific = self
                    .by_type
                    .binary_search_by_key(&ty, |(t, _)| *t)
                    .map_or(Permissions::NONE, |i| self.by_type[i].1);
                self.wildcard | specific
            }
        }
    }

    /// Checks every need; on failure returns the needs (reduced to their missing letters) that
    /// no granted scope covers.
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
        Err(InsufficientScope { missing })
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

/// What a token lacks for a request: the needs no granted scope covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsufficientScope {
    missing: Vec<Need>,
}

impl InsufficientScope {
    /// A denial that no scope can lift (an interaction this guard never allows).
    #[must_use]
    pub fn unconditional() -> Self {
        Self {
            missing: Vec::new(),
        }
    }

    /// The unmet needs, each reduced to its missing letters; empty when no scope would help.
    #[must_use]
    pub fn missing(&self) -> &[Need] {
        &self.missing
    }

    /// The space-separated v2 scopes that would have sufficed (the 403 `scope=` hint).
    #[must_use]
    pub fn scope_hint(&self) -> String {
        self.missing
            .iter()
            .map(Need::as_scope_hint)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
