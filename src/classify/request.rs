//! A classified request: what the classifier found, immutable once built.

use std::{fmt, sync::Arc};

use super::interaction::Interaction;
use crate::{
    fhir::{ResourceType, bundle::BundleKind},
    limits::Limit,
    need::{Need, Permissions, TypeScope},
};

/// What a request needs. Leading needs (`FhirRequest::primary`) may be met by granular scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Needs {
    Nothing,
    One(Need),
    Many(Arc<[Need]>),
    /// No scope can authorize this request; the reason goes into the 403 diagnostics.
    Never(&'static str),
    Bundle(Arc<BundleNeeds>),
}

/// A batch or transaction: its entries, each classified alone, and the union of their needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BundleNeeds {
    pub(crate) kind: BundleKind,
    pub(crate) entries: Box<[BundleEntry]>,
    pub(crate) union: Box<[Need]>,
}

/// One classified entry and the query string its granular check reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BundleEntry {
    pub(crate) request: FhirRequest,
    pub(crate) query: Option<Box<str>>,
}

/// A classified FHIR request: its interaction, its resource type and what scopes it needs.
///
/// ```
/// use http::Method;
/// use smart_guard::{classify, Interaction};
///
/// let request = classify(&Method::GET, "/Patient/123", None, None).unwrap();
/// assert_eq!(request.interaction(), Interaction::Read);
/// assert_eq!(request.resource_type().unwrap().as_str(), "Patient");
/// assert_eq!(request.needs()[0].permissions.to_string(), "r");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirRequest {
    interaction: Interaction,
    resource_type: Option<ResourceType>,
    pub(crate) needs: Needs,
    /// How many leading needs a granular (constrained) scope may meet: the searched types of a
    /// search. Zero for every other interaction. Set once, where the request is built.
    primary: u8,
    /// Whether the body's form parameters count as search parameters (`POST _search`).
    form_params: bool,
}

impl FhirRequest {
    pub(crate) fn new(
        interaction: Interaction,
        resource_type: Option<ResourceType>,
        needs: Needs,
    ) -> Self {
        Self::search(interaction, resource_type, needs, 0, false)
    }

    /// A search (or conditional write): `primary` leading needs may be met by granular scopes;
    /// `form_params` when the form body's parameters count.
    pub(crate) fn search(
        interaction: Interaction,
        resource_type: Option<ResourceType>,
        needs: Needs,
        primary: u8,
        form_params: bool,
    ) -> Self {
        Self {
            interaction,
            resource_type,
            needs,
            primary,
            form_params,
        }
    }

    pub(crate) fn one(interaction: Interaction, ty: ResourceType, letters: Permissions) -> Self {
        Self::new(
            interaction,
            Some(ty),
            Needs::One(Need {
                resource: TypeScope::Type(ty),
                permissions: letters,
            }),
        )
    }

    pub(crate) fn never(
        interaction: Interaction,
        resource_type: Option<ResourceType>,
        why: &'static str,
    ) -> Self {
        Self::new(interaction, resource_type, Needs::Never(why))
    }

    /// The interaction.
    #[must_use]
    pub fn interaction(&self) -> Interaction {
        self.interaction
    }

    /// The resource type in the path (for a compartment search, the searched type; `None` for
    /// system-level interactions, batches and `*`).
    #[must_use]
    pub fn resource_type(&self) -> Option<ResourceType> {
        self.resource_type
    }

    /// What the request needs: each entry is letters on a type (or on `*`), all required. For a
    /// batch or transaction, the union of its entries' needs.
    #[must_use]
    pub fn needs(&self) -> &[Need] {
        match &self.needs {
            Needs::Nothing | Needs::Never(_) => &[],
            Needs::One(need) => std::slice::from_ref(need),
            Needs::Many(needs) => needs,
            Needs::Bundle(bundle) => &bundle.union,
        }
    }

    /// Every resource type (or `*`) the request touches, each once, in the order first needed.
    pub fn resource_types(&self) -> impl Iterator<Item = TypeScope> + '_ {
        let needs = self.needs();
        needs
            .iter()
            .enumerate()
            .filter(|(i, n)| !needs[..*i].iter().any(|m| m.resource == n.resource))
            .map(|(_, n)| n.resource)
    }

    /// Whether no scope can authorize this request (GraphQL, operations that are not
    /// allow-listed, other Bundle types, …). A batch is never-allowed only as a whole.
    #[must_use]
    pub fn is_never_allowed(&self) -> bool {
        matches!(self.needs, Needs::Never(_))
    }

    /// Why no scope can authorize this request, when [`Self::is_never_allowed`].
    #[must_use]
    pub fn denial_reason(&self) -> Option<&'static str> {
        match self.needs {
            Needs::Never(why) => Some(why),
            _ => None,
        }
    }

    /// The entries of a batch or transaction, each classified as if sent alone; empty otherwise.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &FhirRequest> + '_ {
        let entries: &[BundleEntry] = match &self.needs {
            Needs::Bundle(bundle) => &bundle.entries,
            _ => &[],
        };
        entries.iter().map(|e| &e.request)
    }

    /// The request with one more need (the `primary` needs stay first).
    pub(crate) fn with_need(mut self, need: Need) -> Self {
        let mut needs = self.needs().to_vec();
        if !needs.contains(&need) {
            needs.push(need);
        }
        self.needs = match needs.as_slice() {
            [one] => Needs::One(*one),
            _ => Needs::Many(Arc::from(needs)),
        };
        self
    }

    /// How many leading needs a granular scope may meet.
    pub(crate) fn primary(&self) -> usize {
        usize::from(self.primary)
    }

    /// Whether the form body's parameters count as search parameters.
    pub(crate) fn form_params(&self) -> bool {
        self.form_params
    }

    /// What the request needs, as the classifier built it.
    pub(crate) fn needs_kind(&self) -> &Needs {
        &self.needs
    }
}

/// Why a request could not be classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClassifyError {
    /// The path breaks the URL rules: dot segments, percent-encoding in the path, empty segments
    /// or trailing slashes. Answered 400.
    MalformedPath,
    /// Not a FHIR R4 interaction: unknown type, bad id, undefined method and path pair. Answered 404.
    Undefined,
    /// A body the guard must read is not what it should be: a batch that is not JSON or nests
    /// too deeply, a search form that is not UTF-8. Answered 400.
    MalformedBody,
    /// A header the guard reads (`Content-Type`, `Content-Encoding`, `If-None-Exist`) is not
    /// visible ASCII or comes twice. Answered 400.
    UnreadableHeader,
    /// A body the guard must read comes in a form it does not read: another media type, a
    /// parameter other than `charset=utf-8`, or a `Content-Encoding` other than `identity`.
    /// Answered 415.
    UnsupportedMediaType,
    /// The request asks for more analysis than the [`AnalysisLimits`](crate::AnalysisLimits) allow: too many
    /// parameters or Bundle entries, a chain or `_has` too deep. Answered 400.
    TooComplex(Limit),
}

impl From<Limit> for ClassifyError {
    fn from(limit: Limit) -> Self {
        Self::TooComplex(limit)
    }
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MalformedPath => "malformed FHIR path",
            Self::Undefined => "not a FHIR interaction this server understands",
            Self::MalformedBody => "malformed request body",
            Self::TooComplex(_) => "beyond the guard's analysis limits",
            Self::UnreadableHeader => "a header the guard reads is not visible ASCII",
            Self::UnsupportedMediaType => "a body in a form the guard does not read",
        })
    }
}

impl std::error::Error for ClassifyError {}
