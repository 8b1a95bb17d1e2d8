//! Operator rules for `$operations` (docs/AUTHORIZATION.md §7.4) and bulk-data status and file
//! URLs (§7.2): parsed once at startup, matched per request without allocating.
//!
//! Both lists share one syntax:
//!
//! ```text
//! rules   = rule *( ";" rule )                 ; blanks around tokens are ignored
//! rule    = [ methods 1*SP ] target [ "=" needs ]
//! methods = method *( "," method )             ; GET POST PUT PATCH DELETE (HEAD counts as GET)
//! needs   = need *( "," need )
//! need    = ( ResourceType / "*" / "[type]" ) "." letters   ; v2 letters, in cruds order
//! ```
//!
//! Operation targets are `$op`, `Type/$op`, `*/$op`, `Type/[id]/$op` or `*/[id]/$op`; their
//! methods default to `GET,POST` and their needs are required. `[type]` stands for the type in
//! the request path. Bulk targets are path prefixes relative to the FHIR base (`/$export-poll-status`,
//! `/_operations/export`); their methods default to `GET,DELETE` and their needs to `*.rs`.

use http::Method;

use crate::{
    resource_type::ResourceType,
    scope::{Need, Permissions, TypeScope},
};

/// A set of HTTP methods, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Methods(u8);

impl Methods {
    const GET: u8 = 1;
    const POST: u8 = 2;
    const PUT: u8 = 4;
    const PATCH: u8 = 8;
    const DELETE: u8 = 16;

    fn bit(method: &Method) -> u8 {
        match *method {
            Method::GET | Method::HEAD => Self::GET,
            Method::POST => Self::POST,
            Method::PUT => Self::PUT,
            Method::PATCH => Self::PATCH,
            Method::DELETE => Self::DELETE,
            _ => 0,
        }
    }

    pub(crate) fn contains(self, method: &Method) -> bool {
        let bit = Self::bit(method);
        bit != 0 && self.0 & bit == bit
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut bits = 0;
        for name in text.split(',') {
            let method = Method::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("{name:?} is not an HTTP method"))?;
            match Self::bit(&method) {
                0 => {
                    return Err(format!(
                        "method {name:?} is not one of GET POST PUT PATCH DELETE"
                    ));
                }
                bit => bits |= bit,
            }
        }
        Ok(Self(bits))
    }
}

/// What a rule requires: letters on a named type, on `*`, or on the type in the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleNeed {
    Fixed(Need),
    PathType(Permissions),
}

/// Where an allow-listed operation may be invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    System,
    /// `Type/$op`; `None` is `*/$op`.
    Type(Option<ResourceType>),
    /// `Type/[id]/$op`; `None` is `*/[id]/$op`.
    Instance(Option<ResourceType>),
}

/// One allow-listed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OperationRule {
    methods: Methods,
    level: Level,
    /// The name without `$`.
    name: Box<str>,
    needs: Box<[RuleNeed]>,
}

impl OperationRule {
    /// Whether this rule allows `$name` at `level` with `method`.
    pub(crate) fn matches(&self, method: &Method, level: Level, name: &str) -> bool {
        if *self.name != *name || !self.methods.contains(method) {
            return false;
        }
        match (self.level, level) {
            (Level::System, Level::System) => true,
            (Level::Type(rule), Level::Type(Some(ty)))
            | (Level::Instance(rule), Level::Instance(Some(ty))) => rule.is_none_or(|r| r == ty),
            _ => false,
        }
    }

    /// The needs for a request on `path_type`.
    pub(crate) fn needs(&self, path_type: Option<ResourceType>) -> impl Iterator<Item = Need> {
        self.needs.iter().map(move |need| match *need {
            RuleNeed::Fixed(need) => need,
            RuleNeed::PathType(permissions) => Need {
                resource: path_type.map_or(TypeScope::Wildcard, TypeScope::Type),
                permissions,
            },
        })
    }
}

/// One configured bulk-data status or file URL prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BulkPath {
    methods: Methods,
    /// Segments of the prefix, without the leading `/`.
    prefix: Box<str>,
    needs: Box<[Need]>,
}

impl BulkPath {
    /// Whether `path` (relative to the base, no leading `/`) is this prefix or lies under it.
    pub(crate) fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.contains(method)
            && path
                .strip_prefix(&*self.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub(crate) fn needs(&self) -> &[Need] {
        &self.needs
    }
}

fn split_rules(text: &str) -> impl Iterator<Item = &str> {
    text.split(';').map(str::trim).filter(|r| !r.is_empty())
}

/// Splits `[methods ]target[=needs]`.
fn split_rule(rule: &str) -> (Option<&str>, &str, Option<&str>) {
    let (head, needs) = match rule.split_once('=') {
        Some((head, needs)) => (head.trim(), Some(needs.trim())),
        None => (rule, None),
    };
    match head.split_once(char::is_whitespace) {
        Some((methods, target)) => (Some(methods), target.trim(), needs),
        None => (None, head, needs),
    }
}

fn parse_needs(text: &str, path_type_allowed: bool) -> Result<Box<[RuleNeed]>, String> {
    let mut needs = Vec::new();
    for item in text.split(',').map(str::trim) {
        let (resource, letters) = item
            .rsplit_once('.')
            .ok_or_else(|| format!("{item:?} is not Type.letters"))?;
        let permissions = Permissions::parse_v2(letters)
            .ok_or_else(|| format!("{item:?}: letters must be a subset of cruds, in order"))?;
        needs.push(match resource {
            "*" => RuleNeed::Fixed(Need {
                resource: TypeScope::Wildcard,
                permissions,
            }),
            "[type]" if path_type_allowed => RuleNeed::PathType(permissions),
            "[type]" => return Err(format!("{item:?}: [type] needs a type-level target")),
            name => RuleNeed::Fixed(Need {
                resource: TypeScope::Type(
                    ResourceType::parse(name)
                        .ok_or_else(|| format!("{name:?} is not an R4 resource type"))?,
                ),
                permissions,
            }),
        });
    }
    Ok(needs.into_boxed_slice())
}

fn operation_name(segment: &str) -> Result<&str, String> {
    let name = segment
        .strip_prefix('$')
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or_else(|| format!("{segment:?} is not an operation like $name"))?;
    if matches!(name, "export" | "everything" | "graphql") {
        return Err(format!(
            "${name} has fixed rules and cannot be allow-listed"
        ));
    }
    Ok(name)
}

/// Parses `SMART_GUARD_ALLOWED_OPERATIONS`.
pub(crate) fn parse_operations(text: &str) -> Result<Box<[OperationRule]>, String> {
    let mut rules = Vec::new();
    for rule in split_rules(text) {
        let (methods, target, needs) = split_rule(rule);
        let methods = methods.map_or(Ok(Methods(Methods::GET | Methods::POST)), Methods::parse)?;
        let type_of = |s: &str| match s {
            "*" => Ok(None),
            name => ResourceType::parse(name)
                .map(Some)
                .ok_or_else(|| format!("{name:?} is not an R4 resource type")),
        };
        let segments: Vec<&str> = target.trim_start_matches('/').split('/').collect();
        let (level, name) = match segments.as_slice() {
            [op] => (Level::System, operation_name(op)?),
            [ty, op] => (Level::Type(type_of(ty)?), operation_name(op)?),
            [ty, "[id]", op] => (Level::Instance(type_of(ty)?), operation_name(op)?),
            _ => return Err(format!("{target:?} is not $op, Type/$op or Type/[id]/$op")),
        };
        let needs = needs.ok_or_else(|| format!("{target:?} needs \"=Type.letters\""))?;
        let needs = parse_needs(needs, level != Level::System)?;
        rules.push(OperationRule {
            methods,
            level,
            name: name.into(),
            needs,
        });
    }
    Ok(rules.into_boxed_slice())
}

/// Parses `SMART_GUARD_BULK_PATHS`.
pub(crate) fn parse_bulk_paths(text: &str) -> Result<Box<[BulkPath]>, String> {
    let mut paths = Vec::new();
    for rule in split_rules(text) {
        let (methods, target, needs) = split_rule(rule);
        let methods =
            methods.map_or(Ok(Methods(Methods::GET | Methods::DELETE)), Methods::parse)?;
        let prefix = target
            .strip_prefix('/')
            .filter(|p| {
                !p.is_empty()
                    && p.split('/').all(|s| {
                        !s.is_empty() && s != "." && s != ".." && !s.contains(['%', '?', '#', '\\'])
                    })
            })
            .ok_or_else(|| format!("{target:?} is not a path like /_operations/export"))?;
        let needs = match needs {
            None => vec![Need {
                resource: TypeScope::Wildcard,
                permissions: Permissions::READ | Permissions::SEARCH,
            }],
            // `[type]` is refused by `parse_needs(_, false)`, so every need is fixed.
            Some(needs) => parse_needs(needs, false)?
                .iter()
                .filter_map(|n| match n {
                    RuleNeed::Fixed(need) => Some(*need),
                    RuleNeed::PathType(_) => None,
                })
                .collect(),
        };
        paths.push(BulkPath {
            methods,
            prefix: prefix.into(),
            needs: needs.into_boxed_slice(),
        });
    }
    Ok(paths.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str) -> Option<ResourceType> {
        ResourceType::parse(name)
    }

    #[test]
    fn operation_rules_parse_with_methods_levels_and_needs() {
        let rules = parse_operations(
            " POST ValueSet/$expand=ValueSet.r ; */[id]/$meta=[type].r;$convert=*.r ; GET,POST Patient/[id]/$match=Patient.s,Person.s",
        )
        .expect("valid");
        assert_eq!(rules.len(), 4);
        assert!(rules[0].matches(&Method::POST, Level::Type(ty("ValueSet")), "expand"));
        assert!(!rules[0].matches(&Method::GET, Level::Type(ty("ValueSet")), "expand"));
        assert!(!rules[0].matches(&Method::POST, Level::Type(ty("CodeSystem")), "expand"));
        assert!(!rules[0].matches(&Method::POST, Level::System, "expand"));
        assert!(rules[1].matches(&Method::HEAD, Level::Instance(ty("Patient")), "meta"));
        assert!(!rules[1].matches(&Method::GET, Level::Type(ty("Patient")), "meta"));
        let needs: Vec<String> = rules[1]
            .needs(ty("Observation"))
            .map(|n| n.as_scope_hint())
            .collect();
        assert_eq!(needs, ["system/Observation.r"]);
        assert!(rules[2].matches(&Method::GET, Level::System, "convert"));
        assert!(!rules[2].matches(&Method::DELETE, Level::System, "convert"));
        assert_eq!(rules[3].needs(ty("Patient")).count(), 2);
    }

    #[test]
    fn bad_operation_rules_are_refused_with_a_reason() {
        for text in [
            "$expand",
            "ValueSet/$expand=ValueSet.sr",
            "ValueSet/$expand=Nope.r",
            "Nope/$expand=ValueSet.r",
            "$everything=*.rs",
            "$export=*.rs",
            "Patient/[id]/$graphql=*.rs",
            "$convert=[type].r",
            "OPTIONS $convert=*.r",
            "ValueSet/1/$expand=ValueSet.r",
            "expand=ValueSet.r",
            "$ex pand=ValueSet.r",
        ] {
            assert!(parse_operations(text).is_err(), "{text}");
        }
        assert_eq!(parse_operations(" ; ").map(|r| r.len()), Ok(0));
    }

    #[test]
    fn bulk_paths_match_whole_segments_and_default_to_star_rs() {
        let paths =
            parse_bulk_paths("/$export-poll-status; GET /_operations/export=Patient.rs,*.s")
                .expect("valid");
        assert!(paths[0].matches(&Method::GET, "$export-poll-status"));
        assert!(paths[0].matches(&Method::DELETE, "$export-poll-status/1"));
        assert!(!paths[0].matches(&Method::POST, "$export-poll-status"));
        assert!(!paths[0].matches(&Method::GET, "$export-poll-statusx"));
        assert_eq!(paths[0].needs()[0].as_scope_hint(), "system/*.rs");
        assert!(paths[1].matches(&Method::GET, "_operations/export/42"));
        assert!(!paths[1].matches(&Method::DELETE, "_operations/export/42"));
        assert_eq!(paths[1].needs().len(), 2);
        for bad in [
            "_operations",
            "/",
            "/a//b",
            "/a/../b",
            "/a%2Fb",
            "/x=Nope.r",
        ] {
            assert!(parse_bulk_paths(bad).is_err(), "{bad}");
        }
    }
}
