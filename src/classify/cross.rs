//! Which other resource types a search parameter reaches (docs/AUTHORIZATION.md §5):
//! `_include`, `_revinclude`, chains, `_has`, `_type`, `_list`, and `*` where the types cannot
//! be known. Iterative and bounded by the [`Budget`].

use crate::{
    fhir::{
        ResourceType,
        search_param::{ParamKind, SearchParam, decode, lookup, may_cross_types},
    },
    limits::{Budget, Limit},
    need::TypeScope,
};

/// The searched types a parameter is evaluated against.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Base<'a> {
    /// A type-level (or compartment) search on one type.
    One(ResourceType),
    /// A system search over these `_type` entries (empty: every type, already needing `*`).
    Types(&'a [ResourceType]),
}

impl Base<'_> {
    fn for_each(self, mut f: impl FnMut(ResourceType)) {
        match self {
            Base::One(ty) => f(ty),
            Base::Types(types) => types.iter().copied().for_each(f),
        }
    }

    /// A system search without `_type`: every type is searched, and `*` is needed already.
    fn is_every_type(self) -> bool {
        matches!(self, Base::Types([]))
    }
}

/// Calls `touch` with every type (or `*`) that the parameter `name=value` reaches besides the
/// searched types, each needing `s`. `name` is decoded; `value` is raw (decoded here when needed).
///
/// Iterative: a `_has` nested in a `_has` moves the base one type on and goes round the loop
/// again, so the stack does not grow with the client's nesting. Each `_has` and each chain link
/// is a reference hop; more than [`AnalysisLimits::max_search_depth`](crate::AnalysisLimits)
/// hops in one parameter is [`Limit::SearchDepth`], checked before the hops are followed.
///
/// # Errors
///
/// The limit the parameter went past.
pub(crate) fn cross_types(
    base: Base<'_>,
    name: &str,
    raw_value: &str,
    budget: &Budget,
    touch: &mut dyn FnMut(TypeScope),
) -> Result<(), Limit> {
    let max_depth = budget.limits.max_search_depth();
    let (mut base, mut name, mut raw_value) = (base, name, raw_value);
    let mut hops = 0usize;
    loop {
        if !may_cross_types(name) {
            return Ok(());
        }
        if let Some(rest) = name.strip_prefix("_has:") {
            // `_has:Type:param:rest`: `Type` needs `s`, and `rest` is a parameter of `Type`.
            hops += 1;
            Budget::within(hops, max_depth, Limit::SearchDepth)?;
            budget.spend(1)?;
            let mut parts = rest.splitn(3, ':');
            let (Some(other), Some(_param), Some(rest)) =
                (parts.next(), parts.next(), parts.next())
            else {
                touch(TypeScope::Wildcard);
                return Ok(());
            };
            let Some(other) = ResourceType::parse(other) else {
                touch(TypeScope::Wildcard);
                return Ok(());
            };
            // Over every type, `*` is needed already and covers `other`.
            if !base.is_every_type() {
                touch(TypeScope::Type(other));
            }
            if rest.is_empty() {
                touch(TypeScope::Wildcard);
                return Ok(());
            }
            (base, name, raw_value) = (Base::One(other), rest, "");
            continue;
        }
        if !name.starts_with('_') && name.contains('.') {
            // A chain. Counted before any link is followed: a chain of a million links costs
            // one scan.
            let links = name.bytes().filter(|b| *b == b'.').count();
            hops = hops.saturating_add(links);
            Budget::within(hops, max_depth, Limit::SearchDepth)?;
            // Each searched type walks the whole name again: charge its length too, so a long
            // name over many `_type`s runs out of steps instead of being rescanned 146 times.
            let cost = links.saturating_add(name.len() / BYTES_PER_STEP);
            let (mut reached, mut diverged) = (None, false);
            let mut result = Ok(());
            base.for_each(|ty| {
                if result.is_ok() {
                    result = budget.spend(cost).map(|()| {
                        if let Some(end) = chain(ty, name, touch)
                            && reached.replace(end).is_some_and(|before| before != end)
                        {
                            diverged = true;
                        }
                    });
                }
            });
            result?;
            // The last link is a parameter of the type the chain reached; one that reaches on
            // (`patient._has:…`, `patient._list`, `patient._filter`) is analysed from there.
            let last = name.rsplit('.').next().unwrap_or_default();
            match reached {
                Some(end) if may_cross_types(last) && !diverged => {
                    (base, name) = (Base::One(end), last);
                    continue;
                }
                Some(_) if may_cross_types(last) => touch(TypeScope::Wildcard),
                _ => {}
            }
            return Ok(());
        }
        return one_step(name, raw_value, budget, touch);
    }
}

/// The parameters that reach other types in one step: includes, `_type`, `_list`, `_filter`
/// and the like, `_contained`, `_sort`.
fn one_step(
    name: &str,
    raw_value: &str,
    budget: &Budget,
    touch: &mut dyn FnMut(TypeScope),
) -> Result<(), Limit> {
    if let Some(modifier) = name.strip_prefix("_include") {
        include(modifier, &decode(raw_value), false, touch);
    } else if let Some(modifier) = name.strip_prefix("_revinclude") {
        include(modifier, &decode(raw_value), true, touch);
    } else if name == "_type" {
        // On a type search `_type` is odd, but count it: every listed type needs `s`.
        for entry in decode(raw_value).split(',').filter(|e| !e.is_empty()) {
            budget.spend(1)?;
            touch(type_or_wildcard(entry));
        }
    } else if name == "_list" {
        touch(type_or_wildcard("List"));
    } else if name == "_filter" || name == "_query" || name == "_getpages" {
        // `_filter` can chain anywhere; a named query does whatever the server defines; HAPI's
        // `_getpages` pages through any stored search, whatever its types.
        touch(TypeScope::Wildcard);
    } else if name == "_contained" {
        if decode(raw_value) != "false" {
            touch(TypeScope::Wildcard);
        }
    } else if name == "_sort" || name.starts_with("_sort:") {
        // Decided on the decoded value: `patient%2Ename` is the chain `patient.name`. `_sort`
        // has no modifiers in FHIR; one the guard does not know could mean anything.
        if name != "_sort" || decode(raw_value).contains('.') {
            touch(TypeScope::Wildcard);
        }
    } else {
        // A filter or control parameter, with its modifier split off: a known one reaches no
        // other type; an unknown `_`-name or modifier could mean anything, so it needs `*`
        // (docs/AUTHORIZATION.md §5.2).
        let (param, modifier) = name
            .split_once(':')
            .map_or((name, None), |(param, modifier)| (param, Some(modifier)));
        let known_param = !param.starts_with('_') || KNOWN_CONTROLS.contains(&param);
        let known_modifier = modifier.is_none_or(|modifier| {
            KNOWN_MODIFIERS.contains(&modifier) || ResourceType::parse(modifier).is_some()
        });
        if !known_param || !known_modifier || param.contains('.') {
            touch(TypeScope::Wildcard);
        }
    }
    Ok(())
}

/// The `_`-parameters that filter the searched type or shape the answer without reaching
/// another type (FHIR R4 search.html "Parameters for all resources", the result parameters,
/// the general parameters, history's `_since` and `_at`, and HAPI's `_cascade`, which
/// `policy.rs` prices as a delete of everything that references the target).
const KNOWN_CONTROLS: [&str; 18] = [
    "_id",
    "_lastUpdated",
    "_tag",
    "_profile",
    "_security",
    "_source",
    "_text",
    "_content",
    "_count",
    "_summary",
    "_elements",
    "_format",
    "_pretty",
    "_total",
    "_containedType",
    "_since",
    "_at",
    "_cascade",
];

/// The search modifiers of FHIR R4 (search.html "Modifiers"); a resource type is a modifier
/// too (`subject:Patient`).
const KNOWN_MODIFIERS: [&str; 11] = [
    "missing",
    "exact",
    "contains",
    "text",
    "not",
    "above",
    "below",
    "in",
    "not-in",
    "of-type",
    "identifier",
];

/// How many bytes of a parameter name one analysis step pays for, where a name is scanned
/// once per searched type.
const BYTES_PER_STEP: usize = 32;

fn type_or_wildcard(name: &str) -> TypeScope {
    ResourceType::parse(name).map_or(TypeScope::Wildcard, TypeScope::Type)
}

/// `_include[:iterate]=Source:param[:Target]` or `_revinclude…`; `*` anywhere means any type.
fn include(modifier: &str, value: &str, reverse: bool, touch: &mut dyn FnMut(TypeScope)) {
    if !matches!(modifier, "" | ":iterate" | ":recurse") {
        return touch(TypeScope::Wildcard);
    }
    let mut parts = value.split(':');
    let (Some(source), Some(param), target, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return touch(TypeScope::Wildcard);
    };
    let Some(source) = ResourceType::parse(source) else {
        return touch(TypeScope::Wildcard);
    };
    // The source type's resources are in the result for a reverse include, and for an
    // iterated include they may be. A plain include applies to the matches only, which the
    // search itself needs.
    if reverse || !modifier.is_empty() {
        touch(TypeScope::Type(source));
    }
    if let Some(target) = target {
        return touch(type_or_wildcard(target));
    }
    if reverse {
        // The included resources are of the source type; the target is the searched type.
        if param == "*" {
            touch(TypeScope::Wildcard);
        }
        return;
    }
    match lookup(source, param).and_then(SearchParam::single_target) {
        Some(target) => touch(TypeScope::Type(target)),
        None => touch(TypeScope::Wildcard),
    }
}

/// Follows a chain such as `subject:Patient.organization.name` from `ty` (its length was
/// checked against the depth limit by the caller); returns the type its last link is a
/// parameter of, or `None` when a link could not be followed (then `*` was touched).
fn chain(ty: ResourceType, name: &str, touch: &mut dyn FnMut(TypeScope)) -> Option<ResourceType> {
    let mut current = ty;
    let mut links = name.split('.').peekable();
    while let Some(link) = links.next() {
        if links.peek().is_none() {
            // The last link is a parameter of the current type.
            return Some(current);
        }
        let (param, explicit) = match link.split_once(':') {
            Some((param, ty)) => (param, Some(ty)),
            None => (link, None),
        };
        let Some(def) = lookup(current, param).filter(|d| d.kind == ParamKind::Reference) else {
            touch(TypeScope::Wildcard);
            return None;
        };
        let next = match explicit {
            Some(explicit) => ResourceType::parse(explicit).filter(|t| def.targets(*t)),
            None => def.single_target(),
        };
        let Some(next) = next else {
            touch(TypeScope::Wildcard);
            return None;
        };
        touch(TypeScope::Type(next));
        current = next;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str) -> ResourceType {
        ResourceType::parse(name).expect("known type")
    }

    fn touched(base: &str, name: &str, value: &str) -> String {
        let mut out = Vec::new();
        let budget = Budget::new(crate::AnalysisLimits::default());
        cross_types(Base::One(ty(base)), name, value, &budget, &mut |t| {
            out.push(t.to_string());
        })
        .expect("within the limits");
        out.join(" ")
    }

    #[test]
    fn cross_type_parameters_touch_their_types() {
        for (base, name, value, expected) in [
            ("Observation", "code", "1234", ""),
            ("Observation", "_include", "Observation:patient", "Patient"),
            ("Observation", "_include", "Observation:subject", "*"),
            (
                "Observation",
                "_include",
                "Observation:subject:Patient",
                "Patient",
            ),
            ("Observation", "_include", "*", "*"),
            ("Observation", "_include", "Observation:*", "*"),
            ("Observation", "_include", "Nope:patient", "*"),
            ("Observation", "_include", "Observation:nope", "*"),
            (
                "Observation",
                "_include:iterate",
                "Patient:organization",
                "Patient Organization",
            ),
            ("Observation", "_include:weird", "Observation:patient", "*"),
            ("Patient", "_revinclude", "Provenance:target", "Provenance"),
            (
                "Patient",
                "_revinclude:iterate",
                "Provenance:target",
                "Provenance",
            ),
            ("Patient", "_revinclude", "*", "*"),
            ("Patient", "_revinclude", "Provenance:*", "Provenance *"),
            ("Observation", "subject:Patient.name", "x", "Patient"),
            ("Observation", "subject.name", "x", "*"),
            ("Observation", "patient.name", "x", "Patient"),
            (
                "Observation",
                "patient.organization.name",
                "x",
                "Patient Organization",
            ),
            ("Observation", "subject:Nope.name", "x", "*"),
            ("Observation", "subject:Medication.code", "x", "*"),
            ("Observation", "code.name", "x", "*"),
            (
                "Patient",
                "_has:Observation:patient:code",
                "1234",
                "Observation",
            ),
            (
                "Patient",
                "_has:Observation:patient:_has:AuditEvent:entity:agent",
                "x",
                "Observation AuditEvent",
            ),
            (
                "Patient",
                "_has:Observation:patient:patient.name",
                "x",
                "Observation Patient",
            ),
            ("Patient", "_has:Nope:patient:code", "x", "*"),
            ("Patient", "_has:Observation", "x", "*"),
            (
                "Observation",
                "_type",
                "Patient,Condition",
                "Patient Condition",
            ),
            ("Observation", "_list", "42", "List"),
            ("Observation", "_filter", "code eq x", "*"),
            ("Observation", "_query", "custom", "*"),
            ("Observation", "_contained", "true", "*"),
            ("Observation", "_contained", "false", ""),
            ("Observation", "_sort", "-date", ""),
            ("Observation", "_sort", "patient.name", "*"),
            (
                "Encounter",
                "patient._has:Group:member:_id",
                "102",
                "Patient Group",
            ),
            (
                "Encounter",
                "patient:Patient._has:Group:member:_id",
                "102",
                "Patient Group",
            ),
            ("Encounter", "patient._list", "42", "Patient List"),
            ("Encounter", "patient._filter", "name eq x", "Patient *"),
            ("Encounter", "subject._has:Group:member:_id", "1", "*"),
            (
                "Observation",
                "patient.organization._has:Group:member:_id",
                "1",
                "Patient Organization Group",
            ),
            ("Observation", "_sort", "patient%2Ename", "*"),
            ("Observation", "_sort", "-date,patient%2Ename", "*"),
            ("Observation", "_sort:desc", "patient.name", "*"),
            ("Observation", "_sort:desc", "date", "*"),
            ("Observation", "_sort", "-date%2Cstatus", ""),
            ("Observation", "_summary", "count", ""),
        ] {
            assert_eq!(
                touched(base, name, value),
                expected,
                "{base}?{name}={value}"
            );
        }
    }

    fn depth_of(name: &str, max: usize) -> Result<(), Limit> {
        let budget = Budget::new(crate::AnalysisLimits::default().with_max_search_depth(max));
        cross_types(Base::One(ty("Patient")), name, "x", &budget, &mut |_| {})
    }

    #[test]
    fn each_has_and_each_chain_link_is_one_hop_of_the_depth_limit() {
        let has = |n: usize| format!("{}code", "_has:Observation:patient:".repeat(n));
        assert_eq!(depth_of(&has(4), 4), Ok(()));
        assert_eq!(depth_of(&has(5), 4), Err(Limit::SearchDepth));
        assert_eq!(
            depth_of("organization.partof.partof.partof.name", 4),
            Ok(())
        );
        assert_eq!(
            depth_of("organization.partof.partof.partof.partof.name", 4),
            Err(Limit::SearchDepth)
        );
        assert_eq!(
            depth_of("_has:Observation:patient:_has:Group:member:patient.name", 2),
            Err(Limit::SearchDepth)
        );
        assert_eq!(depth_of("_has:Observation:patient:patient.name", 2), Ok(()));
    }

    #[test]
    fn a_deep_has_is_refused_without_growing_the_stack() {
        // 12,000 levels: the size of the request that used to overflow a worker's stack.
        let name = "_has:Flag:x:".repeat(12_000);
        let deep = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || depth_of(&name, usize::MAX))
            .expect("thread")
            .join()
            .expect("no overflow");
        // Flag has no `x`, but the guard does not check the link's parameter: it follows
        // every level, in a loop, and ends on the empty rest.
        assert_eq!(deep, Ok(()));
    }
}
