//! SMART v1 and v2 resource scopes, parsed once per introspection answer.
//!
//! Grammar and decisions: SMART-NOTES §3. A granted scope that does not parse grants nothing and never
//! invalidates the others; only `system/` scopes grant access (Backend Services, §3.9).

use std::fmt;

use crate::{
    fhir_path::{
        BundleEntry, FhirRequest, Grants, Incoming, LetterGrants, NO_GRANT, Needs, Params,
    },
    resource_type::ResourceType,
    search_params,
};

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

    /// The five letters, one flag each, in `cruds` order.
    pub(crate) const EACH: [Self; 5] = [
        Self::CREATE,
        Self::READ,
        Self::UPDATE,
        Self::DELETE,
        Self::SEARCH,
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
    pub(crate) fn parse_v2(letters: &str) -> Option<Self> {
        let mut next = 0; // index into LETTERS of the earliest letter still allowed
        let mut set = Self::NONE;
        for byte in letters.bytes() {
            let offset = Self::LETTERS[next..].iter().position(|(l, _)| *l == byte)?;
            set |= Self::LETTERS[next + offset].1;
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
    constraints: Constraints,
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

/// Granular `name=value` pairs, percent-decoded.
type Constraints = Box<[(Box<str>, Box<str>)]>;

fn parse_constraints(query: &str) -> Option<Constraints> {
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
/// `Observation.rs`. Only `system/` scopes grant access; `patient/` and `user/` scopes are kept for
/// handlers but grant nothing here. A granular scope (`system/Observation.rs?category=laboratory`)
/// only meets the `s` of a search on its type that restates every constraint (see
/// [`ScopeSet::authorize`]).
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
    granular: Box<[u16]>,
    /// The unconstrained `system/` scopes, in grant order: what `granted` and the per-request
    /// scan read.
    plain: Box<[PlainScope]>,
}

/// An unconstrained `system/` scope as the per-request scan reads it: six bytes, so ten of them
/// share one cache line (a [`SmartScope`] with its constraints is several times larger).
#[derive(Clone, Copy, Debug)]
struct PlainScope {
    resource: TypeScope,
    permissions: Permissions,
    /// Its index in [`ScopeSet::scopes`], for the audit record.
    index: u16,
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
            if scope.context != ScopeContext::System {
                continue;
            }
            if !scope.constraints.is_empty() {
                if matches!(scope.resource, TypeScope::Type(_))
                    && scope.permissions.contains(Permissions::SEARCH)
                    && let Ok(index) = u16::try_from(index)
                {
                    granular.push(index);
                }
                continue;
            }
            plain.push(PlainScope {
                resource: scope.resource,
                permissions: scope.permissions,
                index: u16::try_from(index).unwrap_or(NO_GRANT - 1),
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
    /// need the request's parameters: use [`ScopeSet::authorize`] for them.
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

    /// Authorizes a classified request, the whole rule set of SMART-NOTES §3-§6: unconstrained
    /// `system/` scopes for every need; granular scopes for the searched type of a search that
    /// restates every constraint (same name, no modifier, same value after percent-decoding, no
    /// comma-OR) in its query or form body; every entry of a batch on its own. On success the
    /// request records which scope met each need ([`FhirRequest::grants`]).
    ///
    /// `incoming` must be what `request` was classified from.
    ///
    /// ```
    /// use http::Method;
    /// use smart_guard::{Incoming, Policy, ScopeSet};
    ///
    /// let scopes = ScopeSet::parse("system/Observation.rs?category=laboratory");
    /// let incoming = Incoming::new(&Method::GET, "/Observation").with_query("category=laboratory&code=1");
    /// let mut request = Policy::default().classify(&incoming).unwrap();
    /// assert!(scopes.authorize(&mut request, &incoming).is_ok());
    ///
    /// let wider = Incoming::new(&Method::GET, "/Observation").with_query("code=1");
    /// let mut request = Policy::default().classify(&wider).unwrap();
    /// assert!(scopes.authorize(&mut request, &wider).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`InsufficientScope`] naming what is missing (per entry for a batch).
    pub fn authorize(
        &self,
        request: &mut FhirRequest,
        incoming: &Incoming<'_>,
    ) -> Result<(), InsufficientScope> {
        let params = incoming.params(request.form_params);
        self.authorize_with(request, params)
    }

    fn authorize_with(
        &self,
        request: &mut FhirRequest,
        params: Params<'_>,
    ) -> Result<(), InsufficientScope> {
        let primary = usize::from(request.primary);
        match &mut request.needs {
            Needs::Nothing => Ok(()),
            Needs::Never(why) => Err(InsufficientScope::never(why)),
            Needs::One(need) => {
                let granted = self
                    .grant(need, primary > 0, params)
                    .map_err(|lacking| InsufficientScope::missing_needs(vec![lacking]))?;
                request.grants = Grants::One(granted);
                Ok(())
            }
            Needs::Many(needs) => {
                let mut grants = Vec::with_capacity(needs.len());
                let mut missing = Vec::new();
                for (index, need) in needs.iter().enumerate() {
                    match self.grant(need, index < primary, params) {
                        Ok(granted) => grants.push(granted),
                        Err(lacking) => missing.push(lacking),
                    }
                }
                if !missing.is_empty() {
                    return Err(InsufficientScope::missing_needs(missing));
                }
                request.grants = Grants::Many(grants.into());
                Ok(())
            }
            Needs::Bundle(bundle) => {
                let bundle = std::sync::Arc::make_mut(bundle);
                let mut denied = Vec::new();
                for (index, BundleEntry { request, query }) in bundle.entries.iter_mut().enumerate()
                {
                    let params = Params {
                        query: query.as_deref(),
                        form: None,
                    };
                    if let Err(why) = self.authorize_with(request, params) {
                        denied.push((index, why));
                    }
                }
                if denied.is_empty() {
                    Ok(())
                } else {
                    Err(InsufficientScope::entries(denied))
                }
            }
        }
    }

    /// Which scope meets each letter of `need`, or the letters nothing meets.
    fn grant(&self, need: &Need, primary: bool, params: Params<'_>) -> Result<LetterGrants, Need> {
        let mut by = [NO_GRANT; 5];
        let mut lacking = Permissions::NONE;
        for (slot, letter) in by.iter_mut().zip(Permissions::EACH) {
            if !need.permissions.contains(letter) {
                continue;
            }
            let found = self.plain.iter().find(|scope| {
                scope.permissions.contains(letter)
                    && (scope.resource == TypeScope::Wildcard || scope.resource == need.resource)
            });
            match found {
                Some(scope) => *slot = scope.index,
                None => lacking |= letter,
            }
        }
        if lacking == Permissions::SEARCH && primary && !self.granular.is_empty() {
            let restated = self.granular.iter().copied().find(|&index| {
                self.scopes.get(usize::from(index)).is_some_and(|scope| {
                    scope.resource == need.resource && restates(scope.constraints(), params)
                })
            });
            if let Some(index) = restated {
                by[4] = index;
                lacking = Permissions::NONE;
            }
        }
        if lacking.is_empty() {
            Ok(by)
        } else {
            Err(Need {
                resource: need.resource,
                permissions: lacking,
            })
        }
    }
}

/// Whether the request's own parameters restate every constraint: same name (no modifier), same
/// value after percent-decoding, and no comma-OR in that value (SMART-NOTES §3.8).
fn restates(constraints: &[(Box<str>, Box<str>)], params: Params<'_>) -> bool {
    constraints.iter().all(|(name, value)| {
        !name.contains([':', '.'])
            && params.raw_pairs().any(|(raw_name, raw_value)| {
                search_params::decode(raw_name) == **name && {
                    let decoded = search_params::decode(raw_value);
                    decoded == **value && !has_unescaped_comma(&decoded)
                }
            })
    })
}

/// A `,` not escaped as `\,` ORs values in FHIR search.
fn has_unescaped_comma(value: &str) -> bool {
    let mut escaped = false;
    for c in value.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, ',') => return true,
            _ => escaped = false,
        }
    }
    false
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeSet")
            .field("scopes", &self.scopes)
            .field("ignored", &self.ignored)
            .finish()
    }
}

/// What a token lacks for a request: the needs no granted scope covers, why no scope could
/// help, or, for a batch, which entries were denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsufficientScope {
    missing: Vec<Need>,
    reason: Option<&'static str>,
    entries: Vec<(usize, InsufficientScope)>,
}

impl InsufficientScope {
    /// A denial that no scope can lift (an interaction this guard never allows).
    #[must_use]
    pub fn unconditional() -> Self {
        Self {
            missing: Vec::new(),
            reason: None,
            entries: Vec::new(),
        }
    }

    fn never(reason: &'static str) -> Self {
        Self {
            reason: Some(reason),
            ..Self::unconditional()
        }
    }

    fn missing_needs(missing: Vec<Need>) -> Self {
        Self {
            missing: smallest(missing.iter().copied()),
            ..Self::unconditional()
        }
    }

    fn entries(entries: Vec<(usize, InsufficientScope)>) -> Self {
        let liftable = entries.iter().all(|(_, e)| !e.missing.is_empty());
        let missing = if liftable {
            smallest(entries.iter().flat_map(|(_, e)| e.missing.iter().copied()))
        } else {
            Vec::new()
        };
        Self {
            missing,
            reason: None,
            entries,
        }
    }

    /// The unmet needs, each reduced to its missing letters (for a batch, the union over its
    /// denied entries, with what a `*` need covers left out); empty when no scope would help.
    #[must_use]
    pub fn missing(&self) -> &[Need] {
        &self.missing
    }

    /// Why no scope could help (GraphQL, an operation that is not allow-listed, …).
    #[must_use]
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// For a batch or transaction: each denied entry's index and its own denial.
    #[must_use]
    pub fn denied_entries(&self) -> &[(usize, InsufficientScope)] {
        &self.entries
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

/// How many denied Bundle entries the 403 diagnostics name.
const LISTED_ENTRIES: usize = 20;

impl fmt::Display for InsufficientScope {
    /// The 403 diagnostics: what is missing, why nothing helps, or per denied batch entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.entries.is_empty() {
            // A Bundle may deny thousands of entries: name the first few, count the rest, so
            // the answer stays small whatever the request.
            for (i, (index, denial)) in self.entries.iter().take(LISTED_ENTRIES).enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "entry {index}: {denial}")?;
            }
            let more = self.entries.len().saturating_sub(LISTED_ENTRIES);
            if more > 0 {
                write!(f, "; and {more} more denied entries")?;
            }
            return Ok(());
        }
        match (self.reason, self.missing.is_empty()) {
            (Some(reason), _) => f.write_str(reason),
            (None, true) => f.write_str("this interaction is not allowed by the guard"),
            (None, false) => write!(
                f,
                "the access token's scopes do not cover this request; it would need: {}",
                self.scope_hint()
            ),
        }
    }
}

/// Merges needs per type and drops letters a `*` need already asks for: the smallest set of
/// scopes that would suffice.
fn smallest(needs: impl Iterator<Item = Need>) -> Vec<Need> {
    let mut merged: Vec<Need> = Vec::new();
    for need in needs {
        match merged.iter_mut().find(|n| n.resource == need.resource) {
            Some(existing) => existing.permissions |= need.permissions,
            None => merged.push(need),
        }
    }
    let wildcard = merged
        .iter()
        .find(|n| n.resource == TypeScope::Wildcard)
        .map_or(Permissions::NONE, |n| n.permissions);
    for need in &mut merged {
        if need.resource != TypeScope::Wildcard {
            need.permissions = need.permissions.without(wildcard);
        }
    }
    merged.retain(|n| !n.permissions.is_empty());
    merged
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
