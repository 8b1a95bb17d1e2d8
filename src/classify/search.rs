//! Searches and conditional writes: the searched types' needs, then `s` on every other type
//! the parameters reach (docs/AUTHORIZATION.md §5), within the analysis limits.

use super::{
    cross::{self, Base},
    incoming::Params,
    interaction::Interaction,
    needs::{many, need, need_s, push_unique},
    request::{ClassifyError, FhirRequest},
};
use crate::{
    fhir::{ResourceType, search_param},
    limits::{Budget, Limit},
    need::{Need, Permissions, TypeScope},
};

/// Checks one parameter list against the per-list limit and spends a step per parameter;
/// returns whether any parameter may reach other types.
pub(crate) fn count_params(params: &Params<'_>, budget: &Budget) -> Result<bool, Limit> {
    let max = budget.limits.max_search_params();
    let mut count = 0usize;
    let mut any_cross = false;
    for (raw_name, _) in params.raw_pairs() {
        count += 1;
        Budget::within(count, max, Limit::SearchParams)?;
        any_cross = any_cross || search_param::may_cross_types(&search_param::decode(raw_name));
    }
    budget.spend(count)?;
    Ok(any_cross)
}

/// Appends the `s` needs of every other type the parameters reach (docs/AUTHORIZATION.md §5).
pub(crate) fn cross_type_needs(
    base: Base<'_>,
    params: &Params<'_>,
    needs: &mut Vec<Need>,
    budget: &Budget,
) -> Result<(), Limit> {
    let max_includes = budget.limits.max_includes();
    let mut includes = 0usize;
    for (raw_name, raw_value) in params.raw_pairs() {
        let name = search_param::decode(raw_name);
        if matches!(base, Base::Types(_)) && name == "_type" {
            continue;
        }
        if search_param::is_include(&name) {
            includes += 1;
            Budget::within(includes, max_includes, Limit::Includes)?;
        }
        cross::cross_types(base, &name, raw_value, budget, &mut |resource| {
            push_unique(needs, need(resource, Permissions::SEARCH));
        })?;
    }
    Ok(())
}

/// A parameter list that is not the request's own search (a conditional reference, a
/// `_typeFilter` query): counted, then `s` on every other type it reaches.
pub(crate) fn analyse(
    base: Base<'_>,
    params: &Params<'_>,
    needs: &mut Vec<Need>,
    budget: &Budget,
) -> Result<(), Limit> {
    if count_params(params, budget)? {
        cross_type_needs(base, params, needs, budget)?;
    }
    Ok(())
}

/// A search: `primary` needs first (a granular scope may meet them), then the other types the
/// parameters reach.
pub(crate) fn search(
    interaction: Interaction,
    ty: Option<ResourceType>,
    primary: &[Need],
    granular: Granular,
    base: Base<'_>,
    params: &Params<'_>,
    budget: &Budget,
) -> Result<FhirRequest, Limit> {
    let needs = if count_params(params, budget)? {
        // Kept apart from the primary needs even when equal: a granular scope may meet a
        // primary need but never what an include or chain brings in.
        let mut cross = Vec::new();
        cross_type_needs(base, params, &mut cross, budget)?;
        let mut needs = primary.to_vec();
        needs.extend(cross);
        many(&needs)
    } else {
        many(primary)
    };
    let primary = match granular {
        Granular::Primary => u8::try_from(primary.len()).unwrap_or(0),
        Granular::Never => 0,
    };
    Ok(FhirRequest::search(
        interaction,
        ty,
        needs,
        primary,
        params.form.is_some(),
    ))
}

/// Whether a granular scope may meet the primary needs of a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Granular {
    /// The searched types of a type, compartment or system search.
    Primary,
    /// Conditional writes, and a system search over every type.
    Never,
}

/// Conditional create, update, patch and delete: the letters plus `s` on the type, and `s` on
/// every type the condition's parameters reach. Never met by granular scopes.
pub(crate) fn conditional_write(
    interaction: Interaction,
    ty: ResourceType,
    letters: Permissions,
    condition: &Params<'_>,
    budget: &Budget,
) -> Result<FhirRequest, Limit> {
    search(
        interaction,
        Some(ty),
        &[need(TypeScope::Type(ty), letters)],
        Granular::Never,
        Base::One(ty),
        condition,
        budget,
    )
}

/// System search: `s` on every `_type` entry; with no `_type`, `*`.
pub(crate) fn search_system(
    params: &Params<'_>,
    budget: &Budget,
) -> Result<FhirRequest, ClassifyError> {
    let mut types: Vec<ResourceType> = Vec::new();
    let max = budget.limits.max_search_params();
    for (i, (raw_name, raw_value)) in params.raw_pairs().enumerate() {
        // Counted here too: this loop runs before `search` counts the list.
        Budget::within(i + 1, max, Limit::SearchParams)?;
        if search_param::decode(raw_name) != "_type" {
            continue;
        }
        for entry in search_param::decode(raw_value)
            .split(',')
            .filter(|e| !e.is_empty())
        {
            budget.spend(1)?;
            let ty = ResourceType::parse(entry).ok_or(ClassifyError::Undefined)?;
            if !types.contains(&ty) {
                types.push(ty);
            }
        }
    }
    let primary: Vec<Need> = if types.is_empty() {
        vec![need(TypeScope::Wildcard, Permissions::SEARCH)]
    } else {
        types.iter().map(|ty| need_s(*ty)).collect()
    };
    let granular = if types.is_empty() {
        Granular::Never
    } else {
        Granular::Primary
    };
    Ok(search(
        Interaction::SearchSystem,
        None,
        &primary,
        granular,
        Base::Types(&types),
        params,
        budget,
    )?)
}
