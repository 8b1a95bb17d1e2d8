//! Building a request's needs: one letter set per type, without repeats.

use std::sync::Arc;

use super::request::Needs;
use crate::{
    fhir::ResourceType,
    need::{Need, Permissions, TypeScope},
};

pub(crate) const fn need(resource: TypeScope, permissions: Permissions) -> Need {
    Need {
        resource,
        permissions,
    }
}

pub(crate) const fn need_s(ty: ResourceType) -> Need {
    need(TypeScope::Type(ty), Permissions::SEARCH)
}

pub(crate) fn push_unique(needs: &mut Vec<Need>, need: Need) {
    if !needs.contains(&need) {
        needs.push(need);
    }
}

/// Adds `need`, merging its letters into an existing need on the same type.
pub(crate) fn merge(needs: &mut Vec<Need>, need: Need) {
    match needs.iter_mut().find(|n| n.resource == need.resource) {
        Some(existing) => existing.permissions |= need.permissions,
        None => needs.push(need),
    }
}

pub(crate) fn many(needs: &[Need]) -> Needs {
    match needs {
        [] => Needs::Nothing,
        [one] => Needs::One(*one),
        _ => Needs::Many(Arc::from(needs)),
    }
}

pub(crate) fn collect(needs: impl Iterator<Item = Need>) -> Needs {
    let mut out = Vec::new();
    for n in needs {
        push_unique(&mut out, n);
    }
    many(&out)
}
