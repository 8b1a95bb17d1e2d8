//! The FHIR search parameter types, shared by the generated tables and their lookup.

/// The FHIR search parameter types (`SearchParameter.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParamKind {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}
