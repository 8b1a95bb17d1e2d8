//! Operations: `$export` kick-offs, `$everything`, GraphQL and the allow-listed ones
//! (docs/AUTHORIZATION.md §7).

use http::Method;

use super::{
    cross::Base,
    incoming::{Incoming, Params},
    interaction::Interaction,
    media::BodyKind,
    needs::{collect, many, need, push_unique},
    policy::Policy,
    request::{ClassifyError, FhirRequest},
    rules::Level,
    search::analyse,
};
use crate::{
    fhir::{ResourceType, parameters, search_param},
    limits::{Budget, Limit},
    need::{Need, Permissions, TypeScope},
};

impl Policy {
    /// `$export`, `$everything`, `$graphql` and the allow-list (docs/AUTHORIZATION.md §7).
    pub(super) fn operation(
        &self,
        incoming: &Incoming<'_>,
        params: &Params<'_>,
        level: Level,
        segment: &str,
        budget: &Budget,
    ) -> Result<FhirRequest, ClassifyError> {
        let name = &segment[1..];
        let path_type = match level {
            Level::System => None,
            Level::Type(ty) | Level::Instance(ty) => ty,
        };
        let method = incoming.method;
        let get_or_post = method == Method::GET || method == Method::HEAD || method == Method::POST;
        Ok(match name {
            "graphql" => FhirRequest::never(
                Interaction::Operation,
                path_type,
                "GraphQL is not allowed: the types a query touches cannot be known",
            ),
            "export" if !get_or_post => FhirRequest::never(
                Interaction::Export,
                path_type,
                "$export is started with GET or POST",
            ),
            "export" => self.export(incoming, params, level, budget)?,
            "everything" => everything(level, get_or_post),
            _ => match self
                .operations
                .iter()
                .find(|r| r.matches(method, level, name))
            {
                Some(rule) => FhirRequest::new(
                    Interaction::Operation,
                    path_type,
                    collect(rule.needs(path_type)),
                ),
                None => FhirRequest::never(
                    Interaction::Operation,
                    path_type,
                    "this operation is not allow-listed (SMART_GUARD_ALLOWED_OPERATIONS)",
                ),
            },
        })
    }

    /// Bulk kick-off (docs/AUTHORIZATION.md §7.1): `rs` on every exported type, `*` without `_type`;
    /// `Patient/$export` adds Patient, `Group/[id]/$export` adds Group and Patient. Each
    /// `_typeFilter` query is analysed like a search on its type: `s` on every type it reaches.
    fn export(
        &self,
        incoming: &Incoming<'_>,
        params: &Params<'_>,
        level: Level,
        budget: &Budget,
    ) -> Result<FhirRequest, ClassifyError> {
        let rs = Permissions::READ | Permissions::SEARCH;
        let patient = ResourceType::parse("Patient");
        let group = ResourceType::parse("Group");
        let mut needs: Vec<Need> = Vec::new();
        let (resource_type, population): (Option<ResourceType>, &[Option<ResourceType>]) =
            match level {
                Level::System => (None, &[]),
                Level::Type(ty) if ty == patient => (ty, &[patient]),
                Level::Instance(ty) if ty == group => (ty, &[group, patient]),
                _ => {
                    return Ok(FhirRequest::never(
                        Interaction::Export,
                        None,
                        "$export is defined at system, Patient and Group/[id] level only",
                    ));
                }
            };
        for ty in population.iter().flatten() {
            push_unique(&mut needs, need(TypeScope::Type(*ty), rs));
        }
        // One kick-off parameter, decoded: `_type` adds `rs` needs (and says whether any type
        // was listed), `_typeFilter` is analysed; the others change no needs.
        // Every kick-off parameter of Bulk Data 2.0 is known; another one is refused, since the
        // guard cannot tell what it makes the server export.
        let unknown = std::cell::Cell::new(false);
        let take = |name: &str, value: Option<&str>, needs: &mut Vec<Need>| {
            budget.spend(1)?;
            let mut listed = false;
            match (name, value) {
                ("_type", Some(value)) => {
                    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        budget.spend(1)?;
                        listed = true;
                        let resource =
                            ResourceType::parse(entry).map_or(TypeScope::Wildcard, TypeScope::Type);
                        push_unique(needs, need(resource, rs));
                    }
                }
                ("_typeFilter", Some(value)) => type_filter_needs(value, needs, budget)?,
                ("_type" | "_typeFilter", None) => {
                    push_unique(needs, need(TypeScope::Wildcard, rs));
                }
                // Associated data adds resources: Provenance for the two codes Bulk Data
                // defines, anything at all for a server's own (`_`-prefixed) or another code.
                ("includeAssociatedData", value) => {
                    for code in value.unwrap_or("?").split(',').map(str::trim) {
                        let resource = match code {
                            "LatestProvenanceResources" | "RelevantProvenanceResources" => {
                                ResourceType::parse("Provenance")
                                    .map_or(TypeScope::Wildcard, TypeScope::Type)
                            }
                            _ => TypeScope::Wildcard,
                        };
                        push_unique(needs, need(resource, rs));
                    }
                }
                // `patient` picks the patients whose data is exported.
                ("patient", _) => {
                    let patient =
                        ResourceType::parse("Patient").map_or(TypeScope::Wildcard, TypeScope::Type);
                    push_unique(needs, need(patient, rs));
                }
                (
                    "_since"
                    | "_until"
                    | "_outputFormat"
                    | "_elements"
                    | "organizeOutputBy"
                    | "allowPartialManifests"
                    | "_format"
                    | "_pretty",
                    _,
                ) => {}
                _ => unknown.set(true),
            }
            Ok::<bool, Limit>(listed)
        };
        let pairs_in = |text: Option<&str>, needs: &mut Vec<Need>| {
            let mut listed = false;
            for (name, value) in text.into_iter().flat_map(search_param::raw_pairs) {
                let value = search_param::decode(value);
                listed |= take(&search_param::decode(name), Some(&value), needs)?;
            }
            Ok::<bool, Limit>(listed)
        };
        let in_query = pairs_in(params.query, &mut needs)?;
        // A POST kick-off is read from its body: query `_type`s only add needs there.
        let listed = if incoming.method != Method::POST {
            in_query
        } else if params.form.is_some() {
            pairs_in(params.form, &mut needs)?
        } else {
            let body = incoming
                .body
                .filter(|_| incoming.body_kind() == Some(BodyKind::Json));
            // A body the guard cannot read in full is refused, never read as "no `_type`".
            let parameters = match body {
                Some(body) => parameters::parse(body, self.max_json_depth)
                    .map_err(|_| ClassifyError::MalformedBody)?,
                None => None,
            };
            let mut listed = false;
            for parameter in parameters.iter().flatten() {
                listed |= take(&parameter.name, parameter.value.as_deref(), &mut needs)?;
            }
            listed
        };
        if unknown.get() {
            return Ok(FhirRequest::never(
                Interaction::Export,
                resource_type,
                "a $export parameter the guard does not know (Bulk Data 2.0 kick-off parameters only)",
            ));
        }
        if !listed {
            push_unique(&mut needs, need(TypeScope::Wildcard, rs));
        }
        Ok(FhirRequest::new(
            Interaction::Export,
            resource_type,
            many(&needs),
        ))
    }
}

/// `$everything`: R4 defines it on `Patient` (type and instance) and `Encounter/[id]`; it crosses
/// every type of the compartment, so it needs `*` `rs` (docs/AUTHORIZATION.md §7.3).
fn everything(level: Level, get_or_post: bool) -> FhirRequest {
    let patient = ResourceType::parse("Patient");
    let encounter = ResourceType::parse("Encounter");
    let rs = Permissions::READ | Permissions::SEARCH;
    let (ty, own) = match level {
        Level::Instance(ty) if get_or_post && (ty == patient || ty == encounter) => {
            (ty, Permissions::READ)
        }
        Level::Type(ty) if get_or_post && ty == patient => (ty, Permissions::SEARCH),
        Level::System | Level::Type(_) | Level::Instance(_) => {
            return FhirRequest::never(
                Interaction::Operation,
                None,
                "$everything is defined on Patient and Encounter/[id], with GET or POST",
            );
        }
    };
    let mut needs = Vec::with_capacity(2);
    if let Some(ty) = ty {
        needs.push(need(TypeScope::Type(ty), own));
    }
    needs.push(need(TypeScope::Wildcard, rs));
    FhirRequest::new(Interaction::Operation, ty, many(&needs))
}

/// A `$export` `_typeFilter` value (decoded): comma-separated `Type?query` searches, each
/// analysed on its type; an unknown type needs `*` `s`.
fn type_filter_needs(value: &str, needs: &mut Vec<Need>, budget: &Budget) -> Result<(), Limit> {
    for filter in value.split(',').filter(|f| !f.is_empty()) {
        budget.spend(1)?;
        let (ty, query) = filter.split_once('?').unwrap_or((filter, ""));
        match ResourceType::parse(ty) {
            Some(ty) => {
                let params = Params {
                    query: Some(query),
                    form: None,
                };
                analyse(Base::One(ty), &params, needs, budget)?;
            }
            None => push_unique(needs, need(TypeScope::Wildcard, Permissions::SEARCH)),
        }
    }
    Ok(())
}
