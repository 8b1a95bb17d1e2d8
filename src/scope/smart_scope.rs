//! One SMART resource scope: its grammar, v1 and v2 (docs/AUTHORIZATION.md §3.2-§3.3), and
//! granular `?name=value` constraints (§3.6).

use std::fmt;

use crate::{
    fhir::ResourceType,
    need::{Permissions, TypeScope},
};

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
