//! Classify a FHIR REST request (method, path, query) into an interaction and the scopes it needs.
//!
//! Rules: SMART-NOTES §4 (rows 1-21 and 28) and the path traps of §6. Pure logic: no I/O, no tower.

use std::{fmt, sync::Arc};

use http::Method;

use crate::{
    resource_type::ResourceType,
    scope::{Need, Permissions, TypeScope},
};

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
    /// `POST /` with a batch or transaction Bundle (not yet authorized: always denied).
    BatchOrTransaction,
    /// `$operation` at any level (not yet authorized: always denied).
    Operation,
}

impl Interaction {
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

#[derive(Clone, Debug, PartialEq, Eq)]
enum Needs {
    Nothing,
    One(Need),
    Many(Arc<[Need]>),
    Never,
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
    needs: Needs,
}

impl FhirRequest {
    fn new(interaction: Interaction, resource_type: Option<ResourceType>, needs: Needs) -> Self {
        Self {
            interaction,
            resource_type,
            needs,
        }
    }

    fn one(interaction: Interaction, ty: ResourceType, letters: Permissions) -> Self {
        let need = Need {
            resource: TypeScope::Type(ty),
            permissions: letters,
        };
        Self::new(interaction, Some(ty), Needs::One(need))
    }

    /// The interaction.
    #[must_use]
    pub fn interaction(&self) -> Interaction {
        self.interaction
    }

    /// The resource type in the path (for a compartment search, the searched type; `None` for
    /// system-level interactions and `*`).
    #[must_use]
    pub fn resource_type(&self) -> Option<ResourceType> {
        self.resource_type
    }

    /// What the request needs: each entry is letters on a type (or on `*`), all required.
    #[must_use]
    pub fn needs(&self) -> &[Need] {
        match &self.needs {
            Needs::Nothing | Needs::Never => &[],
            Needs::One(need) => std::slice::from_ref(need),
            Needs::Many(needs) => needs,
        }
    }

    /// Whether no scope can authorize this request (interactions the guard does not yet allow).
    #[must_use]
    pub fn is_never_allowed(&self) -> bool {
        matches!(self.needs, Needs::Never)
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
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MalformedPath => "malformed FHIR path",
            Self::Undefined => "not a FHIR interaction this server understands",
        })
    }
}

impl std::error::Error for ClassifyError {}

/// Classifies a request.
///
/// `path` is relative to the FHIR base (`""`, `"/"` or `"/Patient/1"`), still percent-encoded;
/// `query` is the raw query string; `form_body` is the form-encoded body of a `POST …/_search`,
/// whose parameters count like query parameters. `if_none_exist` tells whether a create carries
/// an `If-None-Exist` header.
///
/// # Errors
///
/// [`ClassifyError`] for paths that are malformed or not FHIR interactions.
pub fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    form_body: Option<&[u8]>,
) -> Result<FhirRequest, ClassifyError> {
    classify_with(method, path, query, form_body, false)
}

/// Like [`classify`], telling whether the request carries an `If-None-Exist` header.
///
/// # Errors
///
/// [`ClassifyError`] for paths that are malformed or not FHIR interactions.
pub fn classify_with(
    method: &Method,
    path: &str,
    query: Option<&str>,
    form_body: Option<&[u8]>,
    if_none_exist: bool,
) -> Result<FhirRequest, ClassifyError> {
    use Interaction as I;

    let path = path.strip_prefix('/').unwrap_or(path);
    let mut raw = [""; 5];
    let mut len = 0;
    if !path.is_empty() {
        for segment in path.split('/') {
            check_segment(segment)?;
            if len == raw.len() {
                return Err(ClassifyError::Undefined);
            }
            raw[len] = segment;
            len += 1;
        }
    }
    let segments = &raw[..len];
    let query = query.filter(|q| !q.is_empty());
    let params = Params { query, form_body };
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let get = method == Method::GET;
    let post = method == Method::POST;

    let request = match segments {
        [] if get => search_system(&params)?,
        [] if post => FhirRequest::new(I::BatchOrTransaction, None, Needs::Never),
        ["metadata"] if get => FhirRequest::new(I::Capabilities, None, Needs::Nothing),
        [".well-known", "smart-configuration"] if get => {
            FhirRequest::new(I::SmartConfiguration, None, Needs::Nothing)
        }
        ["_history"] if get => FhirRequest::new(
            I::HistorySystem,
            None,
            Needs::One(Need {
                resource: TypeScope::Wildcard,
                permissions: Permissions::SEARCH,
            }),
        ),
        ["_search"] if post => search_system(&params)?,
        [op] if is_operation(op) => FhirRequest::new(I::Operation, None, Needs::Never),
        [ty] => {
            let ty = resource_type(ty)?;
            let conditional = query.is_some();
            let s = Permissions::SEARCH;
            match method {
                m if m == Method::GET => search_type(I::SearchType, ty, &params),
                m if m == Method::POST && if_none_exist => {
                    FhirRequest::one(I::ConditionalCreate, ty, Permissions::CREATE | s)
                }
                m if m == Method::POST => FhirRequest::one(I::Create, ty, Permissions::CREATE),
                m if m == Method::PUT && conditional => {
                    FhirRequest::one(I::ConditionalUpdate, ty, Permissions::UPDATE | s)
                }
                m if m == Method::PATCH && conditional => {
                    FhirRequest::one(I::ConditionalPatch, ty, Permissions::UPDATE | s)
                }
                m if m == Method::DELETE && conditional => {
                    FhirRequest::one(I::ConditionalDelete, ty, Permissions::DELETE | s)
                }
                _ => return Err(ClassifyError::Undefined),
            }
        }
        [ty, "_history"] if get => {
            FhirRequest::one(I::HistoryType, resource_type(ty)?, Permissions::SEARCH)
        }
        [ty, "_search"] if post => search_type(I::SearchType, resource_type(ty)?, &params),
        [ty, op] if is_operation(op) => {
            FhirRequest::new(I::Operation, Some(resource_type(ty)?), Needs::Never)
        }
        [ty, id] => {
            let ty = resource_type(ty)?;
            resource_id(id)?;
            match method {
                m if m == Method::GET => FhirRequest::one(I::Read, ty, Permissions::READ),
                m if m == Method::PUT => FhirRequest::one(I::Update, ty, Permissions::UPDATE),
                m if m == Method::PATCH => FhirRequest::one(I::Patch, ty, Permissions::UPDATE),
                m if m == Method::DELETE => FhirRequest::one(I::Delete, ty, Permissions::DELETE),
                _ => return Err(ClassifyError::Undefined),
            }
        }
        [ty, id, "_history"] if get => {
            let ty = resource_type(ty)?;
            resource_id(id)?;
            FhirRequest::one(I::HistoryInstance, ty, Permissions::READ)
        }
        [ty, id, "_history", vid] if get => {
            let ty = resource_type(ty)?;
            resource_id(id)?;
            resource_id(vid)?;
            FhirRequest::one(I::Vread, ty, Permissions::READ)
        }
        [ty, id, op] if is_operation(op) => {
            let ty = resource_type(ty)?;
            resource_id(id)?;
            FhirRequest::new(I::Operation, Some(ty), Needs::Never)
        }
        [compartment, id, target] if get => {
            let compartment = resource_type(compartment)?;
            resource_id(id)?;
            if !compartment.is_compartment() {
                return Err(ClassifyError::Undefined);
            }
            if *target == "*" {
                let mut request = search_type(I::SearchCompartment, compartment, &params);
                request.resource_type = None;
                request.needs = Needs::One(Need {
                    resource: TypeScope::Wildcard,
                    permissions: Permissions::SEARCH,
                });
                request
            } else {
                search_type(I::SearchCompartment, resource_type(target)?, &params)
            }
        }
        _ => return Err(ClassifyError::Undefined),
    };
    Ok(request)
}

/// Rejects the path traps of SMART-NOTES §6: empty segments (`//`, trailing `/`), `.` and `..`,
/// and any percent-encoding (encoded `/`, `.`, `$`, or an encoded letter in a type or id).
fn check_segment(segment: &str) -> Result<(), ClassifyError> {
    if segment.is_empty()
        || segment == "."
        || segment == ".."
        || segment.bytes().any(|b| b == b'%' || b == b'\\')
    {
        return Err(ClassifyError::MalformedPath);
    }
    Ok(())
}

fn is_operation(segment: &str) -> bool {
    segment.len() > 1 && segment.starts_with('$')
}

fn resource_type(segment: &str) -> Result<ResourceType, ClassifyError> {
    ResourceType::parse(segment).ok_or(ClassifyError::Undefined)
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`, and never `.` or `..` (checked earlier).
fn resource_id(segment: &str) -> Result<(), ClassifyError> {
    let valid = (1..=64).contains(&segment.len())
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(ClassifyError::Undefined)
    }
}

/// The search parameters of a request: query string plus, for `POST _search`, the form body.
struct Params<'a> {
    query: Option<&'a str>,
    form_body: Option<&'a [u8]>,
}

impl Params<'_> {
    fn for_each(&self, mut f: impl FnMut(&str, &str)) {
        if let Some(query) = self.query {
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                f(&name, &value);
            }
        }
        if let Some(body) = self.form_body {
            for (name, value) in form_urlencoded::parse(body) {
                f(&name, &value);
            }
        }
    }

    /// Whether any parameter reaches other resource types (`_include`, `_revinclude`, chaining,
    /// `_has`). Until those are mapped to their target types, such a search needs `*`.
    fn crosses_types(&self) -> bool {
        let mut crosses = false;
        self.for_each(|name, _| {
            crosses |= name.starts_with("_include")
                || name.starts_with("_revinclude")
                || name.starts_with("_has")
                || name.contains('.');
        });
        crosses
    }
}

fn search_type(interaction: Interaction, ty: ResourceType, params: &Params<'_>) -> FhirRequest {
    if params.crosses_types() {
        let needs: Arc<[Need]> = Arc::new([
            Need {
                resource: TypeScope::Type(ty),
                permissions: Permissions::SEARCH,
            },
            Need {
                resource: TypeScope::Wildcard,
                permissions: Permissions::SEARCH,
            },
        ]);
        return FhirRequest::new(interaction, Some(ty), Needs::Many(needs));
    }
    FhirRequest::one(interaction, ty, Permissions::SEARCH)
}

/// System search: `s` on every `_type` entry; with no `_type` (or a cross-type parameter), `*`.
fn search_system(params: &Params<'_>) -> Result<FhirRequest, ClassifyError> {
    let wildcard = Need {
        resource: TypeScope::Wildcard,
        permissions: Permissions::SEARCH,
    };
    let mut types: Vec<Need> = Vec::new();
    let mut saw_type_param = false;
    let mut unknown = false;
    params.for_each(|name, value| {
        if name != "_type" {
            return;
        }
        saw_type_param = true;
        for entry in value.split(',').filter(|e| !e.is_empty()) {
            match ResourceType::parse(entry) {
                Some(ty) => {
                    let need = Need {
                        resource: TypeScope::Type(ty),
                        permissions: Permissions::SEARCH,
                    };
                    if !types.contains(&need) {
                        types.push(need);
                    }
                }
                None => unknown = true,
            }
        }
    });
    if unknown {
        return Err(ClassifyError::Undefined);
    }
    if !saw_type_param || types.is_empty() || params.crosses_types() {
        types.push(wildcard);
    }
    let needs = match types.as_slice() {
        [one] => Needs::One(*one),
        _ => Needs::Many(types.into()),
    };
    Ok(FhirRequest::new(Interaction::SearchSystem, None, needs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_string(request: &FhirRequest) -> String {
        if request.is_never_allowed() {
            return "never".into();
        }
        request
            .needs()
            .iter()
            .map(|n| format!("{}.{}", n.resource, n.permissions))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// (method, path, query, If-None-Exist, interaction, needs)
    #[test]
    fn notes_section_4_rows_1_to_21_and_28() {
        use Interaction as I;
        let cases: &[(&str, &str, Option<&str>, bool, I, &str)] = &[
            ("GET", "/metadata", None, false, I::Capabilities, ""),
            (
                "HEAD",
                "/metadata",
                Some("mode=full"),
                false,
                I::Capabilities,
                "",
            ),
            (
                "GET",
                "/.well-known/smart-configuration",
                None,
                false,
                I::SmartConfiguration,
                "",
            ),
            ("GET", "/Patient/123", None, false, I::Read, "Patient.r"),
            ("HEAD", "/Patient/123", None, false, I::Read, "Patient.r"),
            ("GET", "/Patient/a.b-C9", None, false, I::Read, "Patient.r"),
            (
                "GET",
                "/Patient/123/_history/2",
                None,
                false,
                I::Vread,
                "Patient.r",
            ),
            (
                "GET",
                "/Patient/123/_history",
                None,
                false,
                I::HistoryInstance,
                "Patient.r",
            ),
            (
                "GET",
                "/Patient/_history",
                None,
                false,
                I::HistoryType,
                "Patient.s",
            ),
            ("GET", "/_history", None, false, I::HistorySystem, "*.s"),
            (
                "GET",
                "/Observation",
                Some("code=1234"),
                false,
                I::SearchType,
                "Observation.s",
            ),
            (
                "GET",
                "/Observation",
                None,
                false,
                I::SearchType,
                "Observation.s",
            ),
            (
                "POST",
                "/Observation/_search",
                None,
                false,
                I::SearchType,
                "Observation.s",
            ),
            (
                "GET",
                "",
                Some("_type=Patient,Observation"),
                false,
                I::SearchSystem,
                "Patient.s Observation.s",
            ),
            (
                "GET",
                "/",
                Some("_type=Patient&_type=Patient"),
                false,
                I::SearchSystem,
                "Patient.s",
            ),
            ("GET", "", Some("name=x"), false, I::SearchSystem, "*.s"),
            ("GET", "", None, false, I::SearchSystem, "*.s"),
            ("GET", "", Some("_type="), false, I::SearchSystem, "*.s"),
            ("POST", "/_search", None, false, I::SearchSystem, "*.s"),
            (
                "GET",
                "/Patient/1/Observation",
                Some("code=x"),
                false,
                I::SearchCompartment,
                "Observation.s",
            ),
            (
                "GET",
                "/Encounter/1/Observation",
                None,
                false,
                I::SearchCompartment,
                "Observation.s",
            ),
            (
                "GET",
                "/Patient/1/*",
                None,
                false,
                I::SearchCompartment,
                "*.s",
            ),
            ("POST", "/Patient", None, false, I::Create, "Patient.c"),
            (
                "POST",
                "/Patient",
                None,
                true,
                I::ConditionalCreate,
                "Patient.cs",
            ),
            ("PUT", "/Patient/1", None, false, I::Update, "Patient.u"),
            (
                "PUT",
                "/Patient",
                Some("identifier=x"),
                false,
                I::ConditionalUpdate,
                "Patient.us",
            ),
            ("PATCH", "/Patient/1", None, false, I::Patch, "Patient.u"),
            (
                "PATCH",
                "/Patient",
                Some("identifier=x"),
                false,
                I::ConditionalPatch,
                "Patient.us",
            ),
            ("DELETE", "/Patient/1", None, false, I::Delete, "Patient.d"),
            (
                "DELETE",
                "/Patient",
                Some("identifier=x"),
                false,
                I::ConditionalDelete,
                "Patient.ds",
            ),
            ("POST", "", None, false, I::BatchOrTransaction, "never"),
            ("POST", "/", None, false, I::BatchOrTransaction, "never"),
            ("GET", "/$export", None, false, I::Operation, "never"),
            (
                "GET",
                "/Patient/$export",
                None,
                false,
                I::Operation,
                "never",
            ),
            (
                "GET",
                "/Patient/1/$everything",
                None,
                false,
                I::Operation,
                "never",
            ),
            ("POST", "/$graphql", None, false, I::Operation, "never"),
        ];
        for (method, path, query, ine, interaction, needs) in cases {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            let request = classify_with(&method, path, *query, None, *ine)
                .unwrap_or_else(|e| panic!("{method} {path} {query:?}: {e}"));
            assert_eq!(
                request.interaction(),
                *interaction,
                "{method} {path} {query:?}"
            );
            assert_eq!(needs_string(&request), *needs, "{method} {path} {query:?}");
        }
    }

    #[test]
    fn undefined_interactions_are_rejected() {
        for (method, path, query) in [
            ("POST", "/Patient/1", None),
            ("GET", "/Patient/_search", None),
            ("GET", "/Patient/1/Observation/2", None),
            ("GET", "/Observation/1/Patient", None),
            ("GET", "/patient/1", None),
            ("GET", "/Unknown", None),
            ("GET", "/Patient/_unknown", None),
            ("GET", "/Patient/1;x=y", None),
            ("GET", "/Patient/_1", None),
            ("GET", &format!("/Patient/{}", "a".repeat(65)), None),
            ("PUT", "/Patient", None),
            ("DELETE", "/Patient", None),
            ("PATCH", "/Patient", None),
            ("POST", "/metadata", None),
            ("PUT", "/metadata", None),
            ("GET", "/Metadata", None),
            ("OPTIONS", "/Patient", None),
            ("TRACE", "/Patient/1", None),
            ("GET", "/.well-known/openid-configuration", None),
            ("GET", "/a/b/c/d/e/f", None),
            ("GET", "", Some("_type=Patient,Nope")),
            ("GET", "/$", None),
            ("GET", "/Patient/1/_history/2/x", None),
            ("POST", "/Patient/1/_history", None),
        ] {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                classify(&method, path, query, None),
                Err(ClassifyError::Undefined),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn path_traps_are_malformed() {
        for path in [
            "/Patient/../Observation/1",
            "/Patient/./1",
            "/Patient/..",
            "/..",
            "/metadata/../Patient/1",
            "/Patient/",
            "/Patient//1",
            "//Patient/1",
            "/Patient/1/",
            "/Patient%2F1",
            "/Patient/1%2F2",
            "/%50atient/1",
            "/Patient/%2e%2e",
            "/Patient/%24export",
            "/%24export",
            "/Patient\\1",
        ] {
            assert_eq!(
                classify(&Method::GET, path, None, None),
                Err(ClassifyError::MalformedPath),
                "{path}"
            );
        }
    }

    #[test]
    fn general_parameters_do_not_change_the_interaction() {
        let request = classify(
            &Method::GET,
            "/Observation",
            Some("_format=json&_pretty=true&_summary=count&_elements=id"),
            None,
        )
        .expect("search");
        assert_eq!(request.interaction(), Interaction::SearchType);
        assert_eq!(needs_string(&request), "Observation.s");
    }

    #[test]
    fn cross_type_search_parameters_need_the_wildcard_for_now() {
        for query in [
            "_include=Observation:patient",
            "_revinclude=Provenance:target",
            "_include:iterate=Observation:subject",
            "subject:Patient.name=x",
            "_has:Observation:patient:code=1",
        ] {
            let request = classify(&Method::GET, "/Observation", Some(query), None).expect(query);
            assert_eq!(needs_string(&request), "Observation.s *.s", "{query}");
        }
        let body = b"_include=Observation:patient";
        let request =
            classify(&Method::POST, "/Observation/_search", None, Some(body)).expect("post search");
        assert_eq!(needs_string(&request), "Observation.s *.s");
    }

    #[test]
    fn post_search_body_parameters_count_like_query_parameters() {
        let request = classify(&Method::POST, "/_search", None, Some(b"_type=Patient"))
            .expect("system search");
        assert_eq!(needs_string(&request), "Patient.s");
    }
}
