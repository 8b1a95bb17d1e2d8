//! FHIR R4 resource types, from the generated R4 (4.0.1) tables in `r4_data.rs`.

use std::fmt;

use super::r4_data::{COMPARTMENTS, RESOURCE_TYPES as R4_RESOURCE_TYPES};

const SLOTS: usize = 512;
const EMPTY: u8 = u8::MAX;

/// Slot -> index into `R4_RESOURCE_TYPES` (or `EMPTY`); 146 names in 512 slots, built at
/// compile time.
static LOOKUP: [u8; SLOTS] = build_lookup();

const fn build_lookup() -> [u8; SLOTS] {
    assert!(R4_RESOURCE_TYPES.len() < EMPTY as usize);
    let mut table = [EMPTY; SLOTS];
    let mut index = 0;
    while index < R4_RESOURCE_TYPES.len() {
        let mut slot = fnv1a(R4_RESOURCE_TYPES[index].as_bytes()) & (SLOTS - 1);
        while table[slot] != EMPTY {
            slot = (slot + 1) & (SLOTS - 1);
        }
        // Below `EMPTY` (asserted above), so the cast keeps the value.
        #[allow(clippy::cast_possible_truncation)]
        {
            table[slot] = index as u8;
        }
        index += 1;
    }
    table
}

const fn fnv1a(name: &[u8]) -> usize {
    let mut hash = 0x811c_9dc5_u32;
    let mut i = 0;
    while i < name.len() {
        hash = (hash ^ name[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash as usize
}

/// A FHIR R4 resource type such as `Patient`, checked against the R4 list.
///
/// Stored as an index into a static table, so it is `Copy`, one byte wide and compares in O(1).
///
/// ```
/// use smart_guard::ResourceType;
///
/// let patient = ResourceType::parse("Patient").unwrap();
/// assert_eq!(patient.as_str(), "Patient");
/// assert!(ResourceType::parse("patient").is_none(), "types are case-sensitive");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceType(u8);

impl ResourceType {
    /// Looks a type name up, case-sensitively; `None` if R4 has no such resource type.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        // An open-addressing table over FNV-1a: one hash and (almost always) one compare, where a
        // binary search over 146 names costs eight. It runs on every request.
        let mut slot = fnv1a(name.as_bytes()) & (SLOTS - 1);
        loop {
            let index = LOOKUP[slot];
            if index == EMPTY {
                return None;
            }
            if R4_RESOURCE_TYPES[usize::from(index)] == name {
                return Some(Self(index));
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }

    /// The type's name, e.g. `"Observation"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        R4_RESOURCE_TYPES[usize::from(self.0)]
    }

    /// Every R4 resource type, in name order.
    pub fn all() -> impl ExactSizeIterator<Item = ResourceType> {
        (0..R4_RESOURCE_TYPES.len())
            .map(|index| Self(u8::try_from(index).expect("fewer than 256 resource types")))
    }

    /// Whether R4 defines a compartment for this type (Patient, Encounter, RelatedPerson,
    /// Practitioner, Device), so that `/[type]/[id]/[other type]` is a compartment search.
    #[must_use]
    pub fn is_compartment(self) -> bool {
        COMPARTMENTS.contains(&self.as_str())
    }

    /// The index of this type in the sorted R4 list (0 for `Account`).
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The type at `index` of the sorted R4 list.
    pub(crate) fn from_index(index: usize) -> Option<Self> {
        (index < R4_RESOURCE_TYPES.len()).then(|| Self(u8::try_from(index).unwrap_or(u8::MAX)))
    }
}

impl fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_type_round_trips_and_the_list_is_sorted() {
        assert!(R4_RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        for ty in ResourceType::all() {
            assert_eq!(ResourceType::parse(ty.as_str()), Some(ty));
        }
    }

    #[test]
    fn unknown_and_wrongly_cased_names_are_not_types() {
        for name in [
            "",
            "patient",
            "PATIENT",
            "Resource",
            "DomainResource",
            "Patient ",
            "*",
        ] {
            assert_eq!(ResourceType::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_generated_list_holds_the_146_r4_types_and_no_r4b_or_r5_ones() {
        assert_eq!(ResourceType::all().len(), 146);
        for r4 in [
            "Patient",
            "Observation",
            "Binary",
            "Parameters",
            "CatalogEntry",
            "MedicinalProduct",
        ] {
            assert!(ResourceType::parse(r4).is_some(), "{r4}");
        }
        for later in [
            "SubscriptionStatus",
            "ActorDefinition",
            "Citation",
            "Ingredient",
            "ClinicalUseDefinition",
            "Transport",
        ] {
            assert_eq!(ResourceType::parse(later), None, "{later}");
        }
    }

    #[test]
    fn the_five_r4_compartments_are_known() {
        let compartments: Vec<_> = ResourceType::all()
            .filter(|t| t.is_compartment())
            .map(ResourceType::as_str)
            .collect();
        assert_eq!(
            compartments,
            [
                "Device",
                "Encounter",
                "Patient",
                "Practitioner",
                "RelatedPerson"
            ]
        );
    }
}
