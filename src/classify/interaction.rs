//! The FHIR RESTful interactions the guard tells apart (docs/AUTHORIZATION.md §4).

use std::fmt;

/// A FHIR RESTful interaction, as the guard classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Interaction {
    /// `GET /metadata` (public).
    Capabilities,
    /// `GET /.well-known/smart-configuration` (public).
    SmartConfiguration,
    /// `GET /[type]/[id]`.
    Read,
    /// `GET /[type]/[id]/_history/[vid]`.
    Vread,
    /// `GET /[type]/[id]/_history`.
    HistoryInstance,
    /// `GET /[type]/_history`.
    HistoryType,
    /// `GET /_history`.
    HistorySystem,
    /// `GET /[type]?…` or `POST /[type]/_search`.
    SearchType,
    /// `GET /?…` or `POST /_search`.
    SearchSystem,
    /// `GET /[compartment]/[id]/[type]?…` or `…/*`.
    SearchCompartment,
    /// `POST /[type]`.
    Create,
    /// `POST /[type]` with `If-None-Exist`.
    ConditionalCreate,
    /// `PUT /[type]/[id]`.
    Update,
    /// `PUT /[type]?…`.
    ConditionalUpdate,
    /// `PATCH /[type]/[id]`.
    Patch,
    /// `PATCH /[type]?…`.
    ConditionalPatch,
    /// `DELETE /[type]/[id]`.
    Delete,
    /// `DELETE /[type]?…`.
    ConditionalDelete,
    /// `POST /` with a batch or transaction Bundle: every entry is checked as if sent alone.
    BatchOrTransaction,
    /// A bulk-data kick-off: `$export` at system, `Patient` or `Group/[id]` level.
    Export,
    /// A configured bulk-data status, cancel or file URL.
    BulkStatus,
    /// Any other `$operation` (allowed only when allow-listed; `$everything` needs `*`).
    Operation,
}

impl Interaction {
    /// How many interactions there are: `self as usize` is below it (a test checks the last).
    pub(crate) const COUNT: usize = 22;

    /// The interaction's name, after the FHIR `restful-interaction` codes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Capabilities => "capabilities",
            Self::SmartConfiguration => "smart-configuration",
            Self::Read => "read",
            Self::Vread => "vread",
            Self::HistoryInstance => "history-instance",
            Self::HistoryType => "history-type",
            Self::HistorySystem => "history-system",
            Self::SearchType => "search-type",
            Self::SearchSystem => "search-system",
            Self::SearchCompartment => "search-compartment",
            Self::Create => "create",
            Self::ConditionalCreate => "conditional-create",
            Self::Update => "update",
            Self::ConditionalUpdate => "conditional-update",
            Self::Patch => "patch",
            Self::ConditionalPatch => "conditional-patch",
            Self::Delete => "delete",
            Self::ConditionalDelete => "conditional-delete",
            Self::BatchOrTransaction => "batch-or-transaction",
            Self::Export => "bulk-export",
            Self::BulkStatus => "bulk-status",
            Self::Operation => "operation",
        }
    }

    /// Whether the interaction is public: it passes without a token and without introspection.
    #[must_use]
    pub fn is_public(self) -> bool {
        matches!(self, Self::Capabilities | Self::SmartConfiguration)
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interaction_is_counted() {
        assert_eq!(Interaction::Operation as usize + 1, Interaction::COUNT);
    }
}
