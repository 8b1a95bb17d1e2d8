//! The R4 search parameters (generated from the official definitions, see
//! `tools/gen_r4_data.py`) and the decoding of search parameter names and values.
//!
//! Pure logic. The common path (nothing percent-encoded) allocates nothing.

use std::borrow::Cow;

pub(crate) use super::param_kind::ParamKind;
use super::{
    r4_data::{COMMON_PARAMS, TYPE_PARAMS},
    resource_type::ResourceType,
};

/// One R4 search parameter of a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchParam {
    pub(crate) kind: ParamKind,
    targets: [u64; 3],
}

impl SearchParam {
    /// The target type when a reference parameter has exactly one.
    pub(crate) fn single_target(self) -> Option<ResourceType> {
        if self.targets.iter().map(|w| w.count_ones()).sum::<u32>() != 1 {
            return None;
        }
        let (word, bits) = self.targets.iter().enumerate().find(|(_, w)| **w != 0)?;
        ResourceType::from_index(word * 64 + bits.trailing_zeros() as usize)
    }

    /// Whether the reference parameter may point to `ty`.
    pub(crate) fn targets(self, ty: ResourceType) -> bool {
        let index = ty.index();
        self.targets
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }
}

/// The R4 definition of `code` on `ty` (type-specific first, then `Resource`/`DomainResource`).
pub(crate) fn lookup(ty: ResourceType, code: &str) -> Option<SearchParam> {
    let key = u8::try_from(ty.index()).ok()?;
    if let Ok(i) = TYPE_PARAMS.binary_search_by(|(t, c, _, _)| (*t, *c).cmp(&(key, code))) {
        let (_, _, kind, targets) = TYPE_PARAMS[i];
        return Some(SearchParam { kind, targets });
    }
    COMMON_PARAMS
        .binary_search_by(|(c, _)| (*c).cmp(code))
        .ok()
        .map(|i| SearchParam {
            kind: COMMON_PARAMS[i].1,
            targets: [0; 3],
        })
}

/// Percent-decodes one `application/x-www-form-urlencoded` component (`+` is a space).
/// Borrows when there is nothing to decode.
pub(crate) fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let spaced: Cow<'_, str> = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    match percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy() {
        Cow::Borrowed(b) => Cow::Owned(b.to_owned()),
        Cow::Owned(o) => Cow::Owned(o),
    }
}

/// Raw `name=value` pairs of a query string or form body, not yet decoded. Empty pairs are skipped.
pub(crate) fn raw_pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether a decoded parameter name may reach other types, so the full analysis must run.
pub(crate) fn may_cross_types(name: &str) -> bool {
    name.starts_with('_') || name.contains(['.', ':'])
}

/// Whether a decoded parameter name is an `_include` or `_revinclude` (with any modifier).
pub(crate) fn is_include(name: &str) -> bool {
    name.starts_with("_include") || name.starts_with("_revinclude")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str) -> ResourceType {
        ResourceType::parse(name).expect("known type")
    }

    #[test]
    fn the_generated_table_knows_reference_targets() {
        let patient = lookup(ty("Observation"), "patient").expect("Observation.patient");
        assert_eq!(patient.kind, ParamKind::Reference);
        assert_eq!(patient.single_target(), Some(ty("Patient")));
        let subject = lookup(ty("Observation"), "subject").expect("Observation.subject");
        assert_eq!(subject.single_target(), None);
        assert!(subject.targets(ty("Group")) && subject.targets(ty("Location")));
        assert!(!subject.targets(ty("Observation")));
        let id = lookup(ty("Observation"), "_id").expect("common _id");
        assert_eq!(id.kind, ParamKind::Token);
        assert_eq!(lookup(ty("Observation"), "nope"), None);
        assert_eq!(
            lookup(ty("Patient"), "general-practitioner").map(|d| d.kind),
            Some(ParamKind::Reference)
        );
    }

    #[test]
    fn decoding_borrows_when_there_is_nothing_to_decode() {
        assert!(matches!(decode("_include"), Cow::Borrowed("_include")));
        assert_eq!(decode("%5Finclude"), "_include");
        assert_eq!(decode("a+b%2Cc"), "a b,c");
        assert_eq!(decode("%ff"), "\u{fffd}");
    }
}
