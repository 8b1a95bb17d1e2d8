//! The operator's [`Policy`] and the route table that classifies a request by its method and
//! path (docs/AUTHORIZATION.md §4).

use std::sync::Arc;

use http::Method;

use super::{
    cross::Base,
    incoming::{Incoming, Params},
    interaction::Interaction,
    media::{self, BodyKind},
    needs::{many, need, need_s},
    path::{is_operation, resource_id, resource_type, split_segments},
    request::{ClassifyError, FhirRequest, Needs},
    rules::{self, BulkPath, Level, OperationRule},
    search::{Granular, analyse, conditional_write, search, search_system},
};
use crate::{
    error::ConfigError,
    fhir::{ResourceType, search_param},
    limits::{AnalysisLimits, Budget, Limit},
    need::{Permissions, TypeScope},
};

/// The operator's authorization policy: allow-listed operations, bulk-data status and file URLs,
/// the server's own base URL (for absolute urls in batches) and the JSON nesting limit.
///
/// The default allows no operation but `$export` and `$everything` (fixed rules), no bulk
/// status URL, no absolute batch url, and nests JSON 64 deep.
///
/// ```
/// use http::Method;
/// use smart_guard::{Incoming, Interaction, Policy};
///
/// let policy = Policy::default()
///     .with_allowed_operations("POST ValueSet/$expand=ValueSet.r")
///     .unwrap();
/// let request = policy.classify(&Incoming::new(&Method::POST, "/ValueSet/$expand")).unwrap();
/// assert_eq!(request.interaction(), Interaction::Operation);
/// assert!(!request.is_never_allowed());
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Policy {
    pub(super) operations: Arc<[OperationRule]>,
    pub(super) bulk_paths: Arc<[BulkPath]>,
    pub(super) base_url: Option<Arc<str>>,
    pub(super) max_json_depth: usize,
    pub(super) limits: AnalysisLimits,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            operations: Arc::new([]),
            bulk_paths: Arc::new([]),
            base_url: None,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            limits: AnalysisLimits::default(),
        }
    }
}

/// The default nesting limit of JSON bodies the guard parses.
pub(crate) const DEFAULT_MAX_JSON_DEPTH: usize = 64;

impl Policy {
    /// A policy from rules parsed already (see `Config::policy`).
    pub(crate) fn new(
        operations: Arc<[OperationRule]>,
        bulk_paths: Arc<[BulkPath]>,
        base_url: Option<&str>,
        max_json_depth: usize,
        limits: AnalysisLimits,
    ) -> Self {
        Self {
            operations,
            bulk_paths,
            base_url: base_url.map(|a| Arc::from(a.trim_end_matches('/'))),
            max_json_depth,
            limits,
        }
    }

    /// Allow-lists operations, in the syntax of `SMART_GUARD_ALLOWED_OPERATIONS` (see the crate
    /// docs), replacing the current list.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad rule.
    pub fn with_allowed_operations(mut self, rules: &str) -> Result<Self, ConfigError> {
        self.operations = allowed_operations_of("allowed_operations", rules)?;
        Ok(self)
    }

    /// Configures bulk-data status and file URL prefixes, in the syntax of
    /// `SMART_GUARD_BULK_PATHS`, replacing the current list.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad rule.
    pub fn with_bulk_paths(mut self, rules: &str) -> Result<Self, ConfigError> {
        self.bulk_paths = bulk_paths_of("bulk_paths", rules)?;
        Ok(self)
    }

    /// This server's FHIR base URL: absolute batch entry urls under it are checked as relative
    /// ones; every other absolute url is denied.
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        self.base_url = Some(Arc::from(base_url.trim_end_matches('/')));
        self
    }

    /// The deepest nesting of objects and arrays accepted in JSON bodies (400 beyond).
    pub fn with_max_json_depth(mut self, depth: usize) -> Self {
        self.max_json_depth = depth;
        self
    }

    /// How much analysis one request may ask for (400 beyond); see [`AnalysisLimits`].
    pub fn with_analysis_limits(mut self, limits: AnalysisLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Classifies a request.
    ///
    /// # Errors
    ///
    /// [`ClassifyError`] for paths that are malformed or not FHIR interactions, and for bodies
    /// the guard must read but cannot.
    pub fn classify(&self, incoming: &Incoming<'_>) -> Result<FhirRequest, ClassifyError> {
        self.classify_at(incoming, false, &Budget::new(self.limits))
    }

    pub(super) fn classify_at(
        &self,
        incoming: &Incoming<'_>,
        in_bundle: bool,
        budget: &Budget,
    ) -> Result<FhirRequest, ClassifyError> {
        use Interaction as I;

        let path = incoming.path;
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut raw = [""; 5];
        let len = split_segments(path, &mut raw)?;
        let too_long = len > raw.len();
        let segments = &raw[..len.min(raw.len())];
        let method = if incoming.method == Method::HEAD {
            &Method::GET
        } else {
            incoming.method
        };
        let get = method == Method::GET;
        let post = method == Method::POST;
        let public = matches!(
            segments,
            ["metadata"] | [".well-known", "smart-configuration"]
        );
        if !public && let Some(bulk) = self.bulk_paths.iter().find(|b| b.matches(method, path)) {
            return Ok(FhirRequest::new(I::BulkStatus, None, many(bulk.needs())));
        }
        if too_long {
            return Err(ClassifyError::Undefined);
        }
        if post && !in_bundle {
            check_body_headers(incoming, segments)?;
        }
        if incoming
            .x_cascade
            .is_some_and(|value| !media::is_readable(value))
        {
            return Err(ClassifyError::UnreadableHeader);
        }
        let body_kind = incoming.body_kind();
        let form = post && body_kind == Some(BodyKind::Form) && incoming.body.is_some();
        let params = Params {
            query: incoming.query.filter(|q| !q.is_empty()),
            form: if form {
                Some(
                    incoming
                        .body
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .ok_or(ClassifyError::MalformedBody)?,
                )
            } else {
                None
            },
        };
        let query_only = Params {
            form: None,
            ..params
        };

        let request = match segments {
            [] if get => search_system(&query_only, budget)?,
            [] if post && in_bundle => FhirRequest::never(
                I::BatchOrTransaction,
                None,
                "a batch or transaction inside a bundle is not allowed",
            ),
            [] if post => self.bundle(incoming, budget)?,
            ["metadata"] if get => FhirRequest::new(I::Capabilities, None, Needs::Nothing),
            [".well-known", "smart-configuration"] if get => {
                FhirRequest::new(I::SmartConfiguration, None, Needs::Nothing)
            }
            ["_history"] if get => with_parameters(
                FhirRequest::new(
                    I::HistorySystem,
                    None,
                    Needs::One(need(TypeScope::Wildcard, Permissions::SEARCH)),
                ),
                Base::Types(&[]),
                &query_only,
                budget,
            )?,
            ["_search"] if post && in_bundle => return Err(ClassifyError::Undefined),
            ["_search"] if post => search_system(&params, budget)?,
            [op] if is_operation(op) => {
                self.operation(incoming, &params, Level::System, op, budget)?
            }
            [ty] => {
                let ty = resource_type(ty)?;
                let conditional = query_only.query.is_some();
                let cs = Permissions::CREATE | Permissions::SEARCH;
                let us = Permissions::UPDATE | Permissions::SEARCH;
                let ds = Permissions::DELETE | Permissions::SEARCH;
                match method {
                    m if m == Method::GET => search(
                        I::SearchType,
                        Some(ty),
                        &[need_s(ty)],
                        Granular::Primary,
                        Base::One(ty),
                        &query_only,
                        budget,
                    )?,
                    m if m == Method::POST => match incoming.if_none_exist {
                        Some(condition) => {
                            // Servers accept `Type?query` and `?query` too and run what follows
                            // the `?`: so does the guard.
                            let condition = Params {
                                query: Some(
                                    condition.split_once('?').map_or(condition, |(_, q)| q),
                                ),
                                form: None,
                            };
                            conditional_write(I::ConditionalCreate, ty, cs, &condition, budget)?
                        }
                        None => FhirRequest::one(I::Create, ty, Permissions::CREATE),
                    },
                    m if m == Method::PUT && conditional => {
                        conditional_write(I::ConditionalUpdate, ty, us, &query_only, budget)?
                    }
                    m if m == Method::PATCH && conditional => {
                        conditional_write(I::ConditionalPatch, ty, us, &query_only, budget)?
                    }
                    m if m == Method::DELETE && conditional => {
                        conditional_write(I::ConditionalDelete, ty, ds, &query_only, budget)?
                    }
                    _ => return Err(ClassifyError::Undefined),
                }
            }
            [ty, "_history"] if get => {
                let ty = resource_type(ty)?;
                let request = FhirRequest::one(I::HistoryType, ty, Permissions::SEARCH);
                with_parameters(request, Base::One(ty), &query_only, budget)?
            }
            [_, "_search"] if post && in_bundle => return Err(ClassifyError::Undefined),
            [ty, "_search"] if post => {
                let ty = resource_type(ty)?;
                search(
                    I::SearchType,
                    Some(ty),
                    &[need_s(ty)],
                    Granular::Primary,
                    Base::One(ty),
                    &params,
                    budget,
                )?
            }
            [ty, op] if is_operation(op) => {
                let ty = resource_type(ty)?;
                self.operation(incoming, &params, Level::Type(Some(ty)), op, budget)?
            }
            [ty, id] => {
                let ty = resource_type(ty)?;
                resource_id(id)?;
                let request = match method {
                    m if m == Method::GET => FhirRequest::one(I::Read, ty, Permissions::READ),
                    m if m == Method::PUT => FhirRequest::one(I::Update, ty, Permissions::UPDATE),
                    m if m == Method::PATCH => FhirRequest::one(I::Patch, ty, Permissions::UPDATE),
                    m if m == Method::DELETE => {
                        FhirRequest::one(I::Delete, ty, Permissions::DELETE)
                    }
                    _ => return Err(ClassifyError::Undefined),
                };
                with_parameters(request, Base::One(ty), &query_only, budget)?
            }
            [ty, id, "_history"] if get => {
                let ty = resource_type(ty)?;
                resource_id(id)?;
                let request = FhirRequest::one(I::HistoryInstance, ty, Permissions::READ);
                with_parameters(request, Base::One(ty), &query_only, budget)?
            }
            [ty, id, "_history", vid] if get => {
                let ty = resource_type(ty)?;
                resource_id(id)?;
                resource_id(vid)?;
                let request = FhirRequest::one(I::Vread, ty, Permissions::READ);
                with_parameters(request, Base::One(ty), &query_only, budget)?
            }
            [ty, id, op] if is_operation(op) => {
                let ty = resource_type(ty)?;
                resource_id(id)?;
                self.operation(incoming, &params, Level::Instance(Some(ty)), op, budget)?
            }
            [compartment, id, target] if get => {
                resource_id(id)?;
                if !resource_type(compartment)?.is_compartment() {
                    return Err(ClassifyError::Undefined);
                }
                if *target == "*" {
                    let wildcard = need(TypeScope::Wildcard, Permissions::SEARCH);
                    search(
                        I::SearchCompartment,
                        None,
                        &[wildcard],
                        Granular::Primary,
                        Base::Types(&[]),
                        &query_only,
                        budget,
                    )?
                } else {
                    let ty = resource_type(target)?;
                    search(
                        I::SearchCompartment,
                        Some(ty),
                        &[need_s(ty)],
                        Granular::Primary,
                        Base::One(ty),
                        &query_only,
                        budget,
                    )?
                }
            }
            _ => return Err(ClassifyError::Undefined),
        };
        Ok(beyond_fhir(request, incoming, &query_only))
    }
}

/// The parameters of an interaction that is not a search (a read, a history, an instance
/// write): servers may still act on them (`_list`, `_has`, includes), so they are analysed as a
/// search's would be, and every other type they reach needs `s` (docs/AUTHORIZATION.md §5.1).
/// Free without a query.
#[inline]
fn with_parameters(
    request: FhirRequest,
    base: Base<'_>,
    params: &Params<'_>,
    budget: &Budget,
) -> Result<FhirRequest, Limit> {
    if params.query.is_none() {
        return Ok(request);
    }
    let mut needs = Vec::new();
    analyse(base, params, &mut needs, budget)?;
    Ok(needs.into_iter().fold(request, FhirRequest::with_need))
}

/// What known servers do beyond the FHIR specification, priced by what it reads or changes
/// (docs/AUTHORIZATION.md §7.5): a cascading delete (`_cascade`, `X-Cascade`) also deletes what
/// references its target, so it needs `d` on `*`; a Subscription is a standing search whose
/// notifications carry whole resources, and the guard does not read its `criteria`, so
/// creating or changing one needs `rs` on `*`.
fn beyond_fhir(request: FhirRequest, incoming: &Incoming<'_>, params: &Params<'_>) -> FhirRequest {
    use Interaction as I;
    let extra = match request.interaction() {
        I::Delete | I::ConditionalDelete if cascades(incoming, params) => {
            need(TypeScope::Wildcard, Permissions::DELETE)
        }
        I::Create
        | I::ConditionalCreate
        | I::Update
        | I::ConditionalUpdate
        | I::Patch
        | I::ConditionalPatch
            if request.resource_type() == ResourceType::parse("Subscription") =>
        {
            need(TypeScope::Wildcard, Permissions::READ | Permissions::SEARCH)
        }
        _ => return request,
    };
    request.with_need(extra)
}

/// Whether a delete cascades: a `_cascade` parameter (any value, any modifier) or an
/// `X-Cascade` header (any value: HAPI reads `delete`, and an unknown value is not trusted).
fn cascades(incoming: &Incoming<'_>, params: &Params<'_>) -> bool {
    incoming.x_cascade.is_some()
        || params.raw_pairs().any(|(name, _)| {
            let name = search_param::decode(name);
            name == "_cascade" || name.starts_with("_cascade:")
        })
}

/// For a `POST` whose body the guard reads (a search form, a batch, a bulk kick-off): every header
/// it reads must be visible ASCII (400), and the body must come in the one form the guard reads,
/// sent as is (415; docs/AUTHORIZATION.md §8.4). A search or kick-off without a `Content-Type`
/// has no body to read.
fn check_body_headers(incoming: &Incoming<'_>, segments: &[&str]) -> Result<(), ClassifyError> {
    let headers = [
        incoming.content_type,
        incoming.content_encoding,
        incoming.if_none_exist,
    ];
    if !headers.into_iter().flatten().all(media::is_readable) {
        return Err(ClassifyError::UnreadableHeader);
    }
    let kind = incoming.content_type.map(media::media_type);
    let acceptable = match (segments, kind) {
        (["_search"] | [_, "_search"], None) => return Ok(()),
        ([.., op], None) if *op == "$export" => return Ok(()),
        ([], Some(Some(BodyKind::Json))) => true,
        (["_search"] | [_, "_search"], Some(Some(BodyKind::Form))) => true,
        ([.., op], Some(Some(_))) if *op == "$export" => true,
        ([] | ["_search"] | [_, "_search"], _) => false,
        ([.., op], _) if *op == "$export" => false,
        _ => return Ok(()),
    };
    if acceptable && media::is_identity(incoming.content_encoding) {
        Ok(())
    } else {
        Err(ClassifyError::UnsupportedMediaType)
    }
}

/// Parses `SMART_GUARD_ALLOWED_OPERATIONS` for the configuration.
pub(crate) fn allowed_operations_of(
    var: &'static str,
    rules: &str,
) -> Result<Arc<[OperationRule]>, ConfigError> {
    rules::parse_operations(rules)
        .map(Arc::from)
        .map_err(|reason| ConfigError::Invalid { var, reason })
}

/// Parses `SMART_GUARD_BULK_PATHS` for the configuration.
pub(crate) fn bulk_paths_of(
    var: &'static str,
    rules: &str,
) -> Result<Arc<[BulkPath]>, ConfigError> {
    rules::parse_bulk_paths(rules)
        .map(Arc::from)
        .map_err(|reason| ConfigError::Invalid { var, reason })
}

/// Classifies a request.
///
/// `path` is relative to the FHIR base (`""`, `"/"` or `"/Patient/1"`), still percent-encoded;
/// `query` is the raw query string; `form_body` is the form-encoded body of a `POST …/_search`,
/// whose parameters count like query parameters. Uses the default [`Policy`]; see
/// [`Policy::classify`] for batches, operations and bulk status URLs.
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
    let mut incoming = Incoming::new(method, path);
    if let Some(query) = query {
        incoming = incoming.with_query(query);
    }
    if let Some(body) = form_body {
        incoming = incoming.with_body("application/x-www-form-urlencoded", body);
    }
    static DEFAULT: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::default);
    DEFAULT.classify(&incoming)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, header};

    use super::*;
    use crate::classify::incoming::reads_body;

    /// Classifies with the default policy, telling whether an `If-None-Exist` header came.
    fn classify_with(
        method: &Method,
        path: &str,
        query: Option<&str>,
        form_body: Option<&[u8]>,
        if_none_exist: bool,
    ) -> Result<FhirRequest, ClassifyError> {
        let mut incoming = Incoming::new(method, path);
        if let Some(query) = query {
            incoming = incoming.with_query(query);
        }
        if let Some(body) = form_body {
            incoming = incoming.with_body("application/x-www-form-urlencoded", body);
        }
        if if_none_exist {
            incoming = incoming.with_if_none_exist("");
        }
        Policy::default().classify(&incoming)
    }

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
    fn every_interaction_of_the_table_needs_its_letters() {
        use Interaction as I;
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, bool, I, &'a str);
        let cases: &[Row<'_>] = &[
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
            ("GET", "/$export", None, false, I::Export, "*.rs"),
            (
                "GET",
                "/Patient/$export",
                Some("_type=Observation"),
                false,
                I::Export,
                "Patient.rs Observation.rs",
            ),
            (
                "GET",
                "/Patient/1/$everything",
                None,
                false,
                I::Operation,
                "Patient.r *.rs",
            ),
            ("POST", "/$graphql", None, false, I::Operation, "never"),
            ("GET", "/$validate", None, false, I::Operation, "never"),
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
    fn a_post_to_the_base_without_a_json_bundle_is_an_unsupported_media_type() {
        for path in ["", "/"] {
            assert_eq!(
                classify_with(&Method::POST, path, None, None, false),
                Err(ClassifyError::UnsupportedMediaType),
                "{path:?}"
            );
        }
    }

    #[test]
    fn the_unconstrained_path_does_not_allocate_its_needs() {
        let request = classify(
            &Method::GET,
            "/Observation",
            Some("code=http%3A%2F%2Floinc.org%7C1&_count=5"),
            None,
        )
        .expect("search");
        assert!(matches!(request.needs, Needs::One(_)));
        assert_eq!(request.primary(), 1);
        let read = classify(&Method::GET, "/Patient/1", None, None).expect("read");
        assert!(matches!(read.needs, Needs::One(_)));
        assert_eq!(read.primary(), 0);
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
            "/Patient/1;x=y",
            "/Binary/..;/Patient/1",
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
    fn cross_type_search_parameters_need_search_on_every_type_they_reach() {
        for (query, needs) in [
            ("_include=Observation:patient", "Observation.s Patient.s"),
            (
                "_revinclude=Provenance:target",
                "Observation.s Provenance.s",
            ),
            (
                "_include:iterate=Observation:subject",
                "Observation.s Observation.s *.s",
            ),
            ("subject:Patient.name=x", "Observation.s Patient.s"),
            (
                "_has:Observation:patient:code=1",
                "Observation.s Observation.s",
            ),
            (
                "%5Finclude=Observation%3Apatient",
                "Observation.s Patient.s",
            ),
        ] {
            let request = classify(&Method::GET, "/Observation", Some(query), None).expect(query);
            assert_eq!(needs_string(&request), needs, "{query}");
            assert_eq!(request.primary(), 1, "{query}");
        }
        let body = b"_include=Observation:patient";
        let request =
            classify(&Method::POST, "/Observation/_search", None, Some(body)).expect("post search");
        assert_eq!(needs_string(&request), "Observation.s Patient.s");
        assert!(request.form_params());
    }

    #[test]
    fn reads_body_only_for_form_searches_json_batches_and_export() {
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .expect("value"),
        );
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            "application/fhir+json".parse().expect("value"),
        );
        for (method, path, headers, reads) in [
            (Method::POST, "/Observation/_search", &form, true),
            (Method::POST, "/_search", &form, true),
            (Method::POST, "/Observation/_search", &json, false),
            (Method::POST, "", &json, true),
            (Method::POST, "/", &json, true),
            (Method::POST, "/", &form, false),
            (Method::POST, "/$export", &json, true),
            (Method::POST, "/Group/1/$export", &form, true),
            (Method::POST, "/Patient", &json, false),
            (Method::GET, "/", &json, false),
            (Method::PUT, "/Observation/_search", &form, false),
        ] {
            assert_eq!(reads_body(&method, path, headers), reads, "{method} {path}");
        }
    }

    #[test]
    fn post_search_body_parameters_count_like_query_parameters() {
        let request = classify(&Method::POST, "/_search", None, Some(b"_type=Patient"))
            .expect("system search");
        assert_eq!(needs_string(&request), "Patient.s");
    }
}
