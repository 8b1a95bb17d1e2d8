//! Classify a FHIR REST request (method, path, query, body) into an interaction and the scopes it
//! needs.
//!
//! Rules: SMART-NOTES §4 (every row), §5 (bulk export) and the traps of §6. Pure logic: no I/O,
//! no tower. The common path (a read, or a search without cross-type parameters) allocates
//! nothing.

use std::{fmt, sync::Arc};

use http::{HeaderMap, HeaderName, Method, header};

/// `If-None-Exist`, parsed once rather than on every request.
const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

use crate::{
    bundle::{self, BundleError, BundleKind},
    config::Config,
    error::ConfigError,
    limits::{AnalysisLimits, Budget, Limit},
    operations::{self, BulkPath, Level, OperationRule},
    parameters,
    resource_type::ResourceType,
    scope::{Need, Permissions, ScopeSet, TypeScope},
    search_params::{self, Base},
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
    union: Box<[Need]>,
}

/// One classified entry and the query string its granular check reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BundleEntry {
    pub(crate) request: FhirRequest,
    pub(crate) query: Option<Box<str>>,
}

/// Which granted scope met each letter of each need: indices into `ScopeSet::scopes`, per
/// letter in `cruds` order; `NO_GRANT` where the letter was not needed.
pub(crate) type LetterGrants = [u16; 5];
pub(crate) const NO_GRANT: u16 = u16::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum Grants {
    /// Not authorized yet, or nothing was needed.
    #[default]
    None,
    One(LetterGrants),
    Many(Arc<[LetterGrants]>),
}

/// Which granted scope met (part of) one need: the audit record of an allowed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The batch or transaction entry the need belongs to; `None` for the request itself.
    pub entry: Option<usize>,
    /// The need, reduced to the letters this scope met.
    pub need: Need,
    /// The index of the scope in [`ScopeSet::scopes`](crate::ScopeSet::scopes).
    pub scope: usize,
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
    /// search. Zero for every other interaction.
    pub(crate) primary: u8,
    /// Whether the body's form parameters count as search parameters (`POST _search`).
    pub(crate) form_params: bool,
    pub(crate) grants: Grants,
}

impl FhirRequest {
    fn new(interaction: Interaction, resource_type: Option<ResourceType>, needs: Needs) -> Self {
        Self {
            interaction,
            resource_type,
            needs,
            primary: 0,
            form_params: false,
            grants: Grants::None,
        }
    }

    fn one(interaction: Interaction, ty: ResourceType, letters: Permissions) -> Self {
        Self::new(
            interaction,
            Some(ty),
            Needs::One(need(TypeScope::Type(ty), letters)),
        )
    }

    fn never(
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

    /// Which granted scope met each need, once the request was authorized (see
    /// [`ScopeSet::authorize`](crate::ScopeSet::authorize)); entries of a batch carry their index.
    #[must_use]
    pub fn grants(&self) -> Vec<Grant> {
        let mut out = Vec::new();
        self.push_grants(None, &mut out);
        if let Needs::Bundle(bundle) = &self.needs {
            for (index, entry) in bundle.entries.iter().enumerate() {
                entry.request.push_grants(Some(index), &mut out);
            }
        }
        out
    }

    fn push_grants(&self, entry: Option<usize>, out: &mut Vec<Grant>) {
        let letters: &[LetterGrants] = match &self.grants {
            Grants::None => return,
            Grants::One(one) => std::slice::from_ref(one),
            Grants::Many(many) => many,
        };
        for (need, by) in self.needs().iter().zip(letters) {
            let start = out.len();
            for (letter, scope) in Permissions::EACH.iter().zip(by) {
                if *scope == NO_GRANT {
                    continue;
                }
                let scope = usize::from(*scope);
                match out[start..].iter_mut().find(|g| g.scope == scope) {
                    Some(grant) => grant.need.permissions |= *letter,
                    None => out.push(Grant {
                        entry,
                        need: self::need(need.resource, *letter),
                        scope,
                    }),
                }
            }
        }
    }
}

impl FhirRequest {
    /// A token-free, one-line description for logs: the interaction's types, needs and the scopes
    /// that met them (`Observation.s<-system/Observation.rs`). Formatting costs nothing until used.
    pub fn audit<'a>(&'a self, scopes: &'a ScopeSet) -> Audit<'a> {
        Audit {
            request: self,
            scopes,
        }
    }
}

/// The log line of [`FhirRequest::audit`].
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a> {
    request: &'a FhirRequest,
    scopes: &'a ScopeSet,
}

impl fmt::Display for Audit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = self.request;
        write!(f, "{} needs [", request.interaction)?;
        for (i, need) in request.needs().iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}.{}", need.resource, need.permissions)?;
        }
        if let Some(why) = request.denial_reason() {
            write!(f, "] never: {why}")?;
            return Ok(());
        }
        f.write_str("] granted [")?;
        for (i, grant) in request.grants().iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            f.write_str(sep)?;
            if let Some(entry) = grant.entry {
                write!(f, "#{entry}:")?;
            }
            write!(f, "{}.{}<-", grant.need.resource, grant.need.permissions)?;
            match self.scopes.scopes().get(grant.scope) {
                Some(scope) => write!(f, "{scope}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
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
    /// The request asks for more analysis than the [`AnalysisLimits`] allow: too many
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
        })
    }
}

impl std::error::Error for ClassifyError {}

/// What the classifier looks at in a request: method, path relative to the FHIR base, query,
/// and the few headers and the body that change the interaction.
///
/// ```
/// use http::Method;
/// use smart_guard::{Incoming, Policy};
///
/// let body = br#"{"resourceType":"Bundle","type":"batch","entry":[
///     {"request":{"method":"GET","url":"Patient/1"}}]}"#;
/// let incoming = Incoming::new(&Method::POST, "/").with_body("application/fhir+json", body);
/// let request = Policy::default().classify(&incoming).unwrap();
/// assert_eq!(request.entries().len(), 1);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    content_type: Option<&'a str>,
    body: Option<&'a [u8]>,
    if_none_exist: Option<&'a str>,
}

impl<'a> Incoming<'a> {
    /// A request with this method and path (relative to the FHIR base, still percent-encoded).
    #[must_use]
    pub fn new(method: &'a Method, path: &'a str) -> Self {
        Self {
            method,
            path,
            query: None,
            content_type: None,
            body: None,
            if_none_exist: None,
        }
    }

    /// The request's `Content-Type`, `If-None-Exist` and (when read) body, from its headers.
    ///
    /// Only a `POST` is classified by them (a form search, a batch, a conditional create, a
    /// bulk kick-off), so for any other method the headers are not looked up at all.
    #[must_use]
    #[inline]
    pub fn with_headers(mut self, headers: &'a HeaderMap, body: Option<&'a [u8]>) -> Self {
        self.body = body;
        if *self.method != Method::POST {
            return self;
        }
        self.content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        self.if_none_exist = headers
            .get(&IF_NONE_EXIST)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        self
    }

    /// The raw query string (without `?`).
    #[must_use]
    pub fn with_query(mut self, query: &'a str) -> Self {
        self.query = Some(query);
        self
    }

    /// A body and its `Content-Type`: a form for `POST _search`, JSON for a batch or `$export`.
    #[must_use]
    pub fn with_body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.content_type = Some(content_type);
        self.body = Some(body);
        self
    }

    /// The value of an `If-None-Exist` header (a conditional create).
    #[must_use]
    pub fn with_if_none_exist(mut self, query: &'a str) -> Self {
        self.if_none_exist = Some(query);
        self
    }

    fn body_kind(&self) -> Option<BodyKind> {
        body_kind(self.content_type)
    }

    /// The search parameters of the request: the query and, when `form_params`, the form body.
    pub(crate) fn params(&self, form_params: bool) -> Params<'a> {
        Params {
            query: self.query.filter(|q| !q.is_empty()),
            form: if form_params {
                self.body.and_then(|b| std::str::from_utf8(b).ok())
            } else {
                None
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
}

fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    let essence = content_type?.split(';').next()?.trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else if [
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
    {
        Some(BodyKind::Json)
    } else {
        None
    }
}

/// Whether the guard must read the body to classify the request: a form-encoded
/// `POST …/_search`, a JSON `POST /` (batch or transaction), a JSON or form `POST …/$export`.
#[must_use]
pub(crate) fn reads_body(method: &Method, relative_path: &str, headers: &HeaderMap) -> bool {
    if method != Method::POST {
        return false;
    }
    let path = relative_path.strip_prefix('/').unwrap_or(relative_path);
    let kind = body_kind(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let last = path.rsplit('/').next().unwrap_or(path);
    match kind {
        Some(BodyKind::Form) => last == "_search" || last == "$export",
        Some(BodyKind::Json) => path.is_empty() || last == "$export",
        None => false,
    }
}

/// The search parameters of a request: query string plus, for `POST _search`, the form body.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Params<'a> {
    pub(crate) query: Option<&'a str>,
    pub(crate) form: Option<&'a str>,
}

impl<'a> Params<'a> {
    /// Raw (still encoded) `name=value` pairs, query first.
    pub(crate) fn raw_pairs(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let query = self.query.into_iter().flat_map(search_params::raw_pairs);
        let form = self.form.into_iter().flat_map(search_params::raw_pairs);
        query.chain(form)
    }
}

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
    operations: Arc<[OperationRule]>,
    bulk_paths: Arc<[BulkPath]>,
    base_url: Option<Arc<str>>,
    max_json_depth: usize,
    limits: AnalysisLimits,
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
    /// The policy a [`Config`] describes.
    pub fn from_config(config: &Config) -> Self {
        Self {
            operations: config.allowed_operations.clone(),
            bulk_paths: config.bulk_paths.clone(),
            base_url: config
                .expected_audience
                .as_deref()
                .map(|a| Arc::from(a.trim_end_matches('/'))),
            max_json_depth: config.max_json_depth,
            limits: config.analysis_limits,
        }
    }

    /// Allow-lists operations, in the syntax of `SMART_GUARD_ALLOWED_OPERATIONS` (see the crate
    /// docs), replacing the current list.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad rule.
    pub fn with_allowed_operations(mut self, rules: &str) -> Result<Self, ConfigError> {
        self.operations = parse_operations("allowed_operations", rules)?;
        Ok(self)
    }

    /// Configures bulk-data status and file URL prefixes, in the syntax of
    /// `SMART_GUARD_BULK_PATHS`, replacing the current list.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad rule.
    pub fn with_bulk_paths(mut self, rules: &str) -> Result<Self, ConfigError> {
        self.bulk_paths = parse_bulk_paths("bulk_paths", rules)?;
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

    fn classify_at(
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
            ["_history"] if get => FhirRequest::new(
                I::HistorySystem,
                None,
                Needs::One(need(TypeScope::Wildcard, Permissions::SEARCH)),
            ),
            ["_search"] if post && in_bundle => return Err(ClassifyError::Undefined),
            ["_search"] if post => {
                let mut request = search_system(&params, budget)?;
                request.form_params = form;
                request
            }
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
                        Base::One(ty),
                        &query_only,
                        budget,
                    )?,
                    m if m == Method::POST => match incoming.if_none_exist {
                        Some(condition) => {
                            let condition = Params {
                                query: Some(condition),
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
                FhirRequest::one(I::HistoryType, resource_type(ty)?, Permissions::SEARCH)
            }
            [_, "_search"] if post && in_bundle => return Err(ClassifyError::Undefined),
            [ty, "_search"] if post => {
                let ty = resource_type(ty)?;
                let mut request = search(
                    I::SearchType,
                    Some(ty),
                    &[need_s(ty)],
                    Base::One(ty),
                    &params,
                    budget,
                )?;
                request.form_params = form;
                request
            }
            [ty, op] if is_operation(op) => {
                let ty = resource_type(ty)?;
                self.operation(incoming, &params, Level::Type(Some(ty)), op, budget)?
            }
            [ty, id] => {
                let ty = resource_type(ty)?;
                resource_id(id)?;
                match method {
                    m if m == Method::GET => FhirRequest::one(I::Read, ty, Permissions::READ),
                    m if m == Method::PUT => FhirRequest::one(I::Update, ty, Permissions::UPDATE),
                    m if m == Method::PATCH => FhirRequest::one(I::Patch, ty, Permissions::UPDATE),
                    m if m == Method::DELETE => {
                        FhirRequest::one(I::Delete, ty, Permissions::DELETE)
                    }
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
                        Base::One(ty),
                        &query_only,
                        budget,
                    )?
                }
            }
            _ => return Err(ClassifyError::Undefined),
        };
        Ok(request)
    }

    /// `$export` (§5), `$everything` (row 25), `$graphql` (row 27) and the allow-list (row 24).
    fn operation(
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

    /// Bulk kick-off, SMART-NOTES §5 rules 1-5: `rs` on every exported type, `*` without `_type`;
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
                _ => {}
            }
            Ok::<bool, Limit>(listed)
        };
        let pairs_in = |text: Option<&str>, needs: &mut Vec<Need>| {
            let mut listed = false;
            for (name, value) in text.into_iter().flat_map(search_params::raw_pairs) {
                let value = search_params::decode(value);
                listed |= take(&search_params::decode(name), Some(&value), needs)?;
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
            let parameters = body.and_then(|b| parameters::parse(b, self.max_json_depth));
            let mut listed = false;
            for parameter in parameters.iter().flatten() {
                listed |= take(&parameter.name, parameter.value.as_deref(), &mut needs)?;
            }
            listed
        };
        if !listed {
            push_unique(&mut needs, need(TypeScope::Wildcard, rs));
        }
        Ok(FhirRequest::new(
            Interaction::Export,
            resource_type,
            many(&needs),
        ))
    }

    /// `POST /` with a batch or transaction Bundle: each entry classified as if sent alone.
    fn bundle(
        &self,
        incoming: &Incoming<'_>,
        budget: &Budget,
    ) -> Result<FhirRequest, ClassifyError> {
        let body = match (incoming.body_kind(), incoming.body) {
            (Some(BodyKind::Json), Some(body)) => body,
            _ => {
                return Ok(FhirRequest::never(
                    Interaction::BatchOrTransaction,
                    None,
                    "POST to the base needs a JSON batch or transaction Bundle",
                ));
            }
        };
        let limits = bundle::Limits {
            max_depth: self.max_json_depth,
            max_entries: self.limits.max_bundle_entries(),
        };
        let (kind, raw) = match bundle::parse(body, limits) {
            Ok(parsed) => parsed,
            Err(BundleError::Malformed) => return Err(ClassifyError::MalformedBody),
            Err(BundleError::TooManyEntries) => return Err(Limit::BundleEntries.into()),
            Err(BundleError::NotABundle | BundleError::WrongType) => {
                return Ok(FhirRequest::never(
                    Interaction::BatchOrTransaction,
                    None,
                    "only batch and transaction Bundles may be posted to the base",
                ));
            }
        };
        if raw.is_empty() {
            return Ok(FhirRequest::never(
                Interaction::BatchOrTransaction,
                None,
                "an empty batch or transaction is not allowed",
            ));
        }
        let mut entries = Vec::with_capacity(raw.len());
        let mut union: Vec<Need> = Vec::new();
        for entry in &raw {
            budget.spend(1)?;
            let classified = self.entry(entry, budget)?;
            for n in classified.request.needs() {
                merge(&mut union, *n);
            }
            entries.push(classified);
        }
        let needs = BundleNeeds {
            kind,
            entries: entries.into_boxed_slice(),
            union: union.into_boxed_slice(),
        };
        Ok(FhirRequest::new(
            Interaction::BatchOrTransaction,
            None,
            Needs::Bundle(Arc::new(needs)),
        ))
    }

    /// One entry, classified as if sent alone; a denied entry is a never-allowed request, and
    /// only a limit of the whole request's analysis is an error.
    fn entry(&self, raw: &bundle::RawEntry, budget: &Budget) -> Result<BundleEntry, ClassifyError> {
        let denied = |why: &'static str| {
            Ok(BundleEntry {
                request: FhirRequest::never(Interaction::BatchOrTransaction, None, why),
                query: None,
            })
        };
        if raw.malformed {
            return denied("the entry has no valid request (method, url)");
        }
        if raw.nested_bundle {
            return denied("nested bundles are not allowed");
        }
        let (Some(method), Some(url)) = (raw.method.as_deref(), raw.url.as_deref()) else {
            return denied("the entry has no request method or url");
        };
        let method = match method {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            "PATCH" => Method::PATCH,
            _ => {
                return denied(
                    "the entry's request method is not GET, HEAD, POST, PUT, DELETE or PATCH",
                );
            }
        };
        let Some(relative) = self.relative_url(url) else {
            return denied("absolute entry urls must point to this server's base");
        };
        if relative.contains('#') {
            return denied("entry urls cannot carry a fragment");
        }
        let (path, query) = match relative.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (relative, None),
        };
        let mut incoming = Incoming::new(&method, path);
        if let Some(query) = query {
            incoming = incoming.with_query(query);
        }
        if let Some(condition) = raw.if_none_exist.as_deref() {
            if method != Method::POST {
                return denied("ifNoneExist is only defined for a create");
            }
            incoming = incoming.with_if_none_exist(condition);
        }
        let mut request = match self.classify_at(&incoming, true, budget) {
            Ok(request) if request.interaction().is_public() => {
                return denied("capability requests are not batch entries");
            }
            Ok(request) => request,
            Err(error @ ClassifyError::TooComplex(_)) => return Err(error),
            Err(ClassifyError::MalformedPath) => return denied("the entry url is malformed"),
            Err(_) => return denied("the entry url is not a FHIR interaction"),
        };
        if !raw.conditional_references.is_empty() && !request.is_never_allowed() {
            // A conditional reference runs a search on its type (SMART-NOTES §6.11).
            let mut needs: Vec<Need> = request.needs().to_vec();
            for reference in &raw.conditional_references {
                budget.spend(1)?;
                let (ty, query) = reference.split_once('?').unwrap_or((reference, ""));
                let Some(ty) = ResourceType::parse(ty) else {
                    push_unique(&mut needs, need(TypeScope::Wildcard, Permissions::SEARCH));
                    continue;
                };
                push_unique(&mut needs, need_s(ty));
                let condition = Params {
                    query: Some(query),
                    form: None,
                };
                analyse(Base::One(ty), &condition, &mut needs, budget)?;
            }
            request.needs = many(&needs);
        }
        Ok(BundleEntry {
            request,
            query: query.filter(|q| !q.is_empty()).map(Box::from),
        })
    }

    /// An entry url relative to the base; absolute ones only under [`Self::with_base_url`].
    fn relative_url<'u>(&self, url: &'u str) -> Option<&'u str> {
        let scheme_end = url.find(':');
        let is_absolute = scheme_end.is_some_and(|i| {
            url[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                && !url[..i].contains('?')
                && !url[..i].contains('/')
        });
        if !is_absolute && !url.starts_with("//") {
            return Some(url);
        }
        let base = self.base_url.as_deref()?;
        let rest = url.strip_prefix(base)?;
        (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some(rest)
    }
}

fn parse_operations(var: &'static str, rules: &str) -> Result<Arc<[OperationRule]>, ConfigError> {
    operations::parse_operations(rules)
        .map(Arc::from)
        .map_err(|reason| ConfigError::Invalid { var, reason })
}

fn parse_bulk_paths(var: &'static str, rules: &str) -> Result<Arc<[BulkPath]>, ConfigError> {
    operations::parse_bulk_paths(rules)
        .map(Arc::from)
        .map_err(|reason| ConfigError::Invalid { var, reason })
}

/// Parses `SMART_GUARD_ALLOWED_OPERATIONS` for [`Config`].
pub(crate) fn allowed_operations_of(
    var: &'static str,
    rules: &str,
) -> Result<Arc<[OperationRule]>, ConfigError> {
    parse_operations(var, rules)
}

/// Parses `SMART_GUARD_BULK_PATHS` for [`Config`].
pub(crate) fn bulk_paths_of(
    var: &'static str,
    rules: &str,
) -> Result<Arc<[BulkPath]>, ConfigError> {
    parse_bulk_paths(var, rules)
}

/// `$everything`: R4 defines it on `Patient` (type and instance) and `Encounter/[id]`; it crosses
/// every type of the compartment, so it needs `*` `rs` (SMART-NOTES §4 row 25, §6.15).
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

/// Splits a relative path (without its leading `/`) into its segments, the first `out.len()` of
/// them into `out`, in one pass over the bytes; returns how many there are.
///
/// Rejects the path traps of SMART-NOTES §6: empty segments (`//`, trailing `/`), `.` and `..`,
/// and any percent-encoding (encoded `/`, `.`, `$`, or an encoded letter in a type or id) or
/// backslash.
fn split_segments<'p>(path: &'p str, out: &mut [&'p str]) -> Result<usize, ClassifyError> {
    if path.is_empty() {
        return Ok(0);
    }
    let mut count = 0;
    let mut push = |segment: Option<&'p str>| {
        let segment = segment.ok_or(ClassifyError::MalformedPath)?;
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(ClassifyError::MalformedPath);
        }
        if let Some(slot) = out.get_mut(count) {
            *slot = segment;
        }
        count += 1;
        Ok(())
    };
    let mut start = 0;
    for (i, &byte) in path.as_bytes().iter().enumerate() {
        match byte {
            // `/` is ASCII, so `start..i` always lies on character boundaries.
            b'/' => {
                push(path.get(start..i))?;
                start = i + 1;
            }
            b'%' | b'\\' => return Err(ClassifyError::MalformedPath),
            _ => {}
        }
    }
    push(path.get(start..))?;
    Ok(count)
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

const fn need(resource: TypeScope, permissions: Permissions) -> Need {
    Need {
        resource,
        permissions,
    }
}

const fn need_s(ty: ResourceType) -> Need {
    need(TypeScope::Type(ty), Permissions::SEARCH)
}

fn push_unique(needs: &mut Vec<Need>, need: Need) {
    if !needs.contains(&need) {
        needs.push(need);
    }
}

/// Adds `need`, merging its letters into an existing need on the same type.
fn merge(needs: &mut Vec<Need>, need: Need) {
    match needs.iter_mut().find(|n| n.resource == need.resource) {
        Some(existing) => existing.permissions |= need.permissions,
        None => needs.push(need),
    }
}

fn many(needs: &[Need]) -> Needs {
    match needs {
        [] => Needs::Nothing,
        [one] => Needs::One(*one),
        _ => Needs::Many(Arc::from(needs)),
    }
}

fn collect(needs: impl Iterator<Item = Need>) -> Needs {
    let mut out = Vec::new();
    for n in needs {
        push_unique(&mut out, n);
    }
    many(&out)
}

/// Checks one parameter list against the per-list limit and spends a step per parameter;
/// returns whether any parameter may reach other types.
fn count_params(params: &Params<'_>, budget: &Budget) -> Result<bool, Limit> {
    let max = budget.limits.max_search_params();
    let mut count = 0usize;
    let mut any_cross = false;
    for (raw_name, _) in params.raw_pairs() {
        count += 1;
        Budget::within(count, max, Limit::SearchParams)?;
        any_cross = any_cross || search_params::may_cross_types(&search_params::decode(raw_name));
    }
    budget.spend(count)?;
    Ok(any_cross)
}

/// Appends the `s` needs of every other type the parameters reach (SMART-NOTES §6.7-6.9).
fn cross_type_needs(
    base: Base<'_>,
    params: &Params<'_>,
    needs: &mut Vec<Need>,
    budget: &Budget,
) -> Result<(), Limit> {
    let max_includes = budget.limits.max_includes();
    let mut includes = 0usize;
    for (raw_name, raw_value) in params.raw_pairs() {
        let name = search_params::decode(raw_name);
        if matches!(base, Base::Types(_)) && name == "_type" {
            continue;
        }
        if search_params::is_include(&name) {
            includes += 1;
            Budget::within(includes, max_includes, Limit::Includes)?;
        }
        search_params::cross_types(base, &name, raw_value, budget, &mut |resource| {
            push_unique(needs, need(resource, Permissions::SEARCH));
        })?;
    }
    Ok(())
}

/// A parameter list that is not the request's own search (a conditional reference, a
/// `_typeFilter` query): counted, then `s` on every other type it reaches.
fn analyse(
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

/// A search: `primary` needs first (a granular scope may meet them), then the other types the
/// parameters reach.
fn search(
    interaction: Interaction,
    ty: Option<ResourceType>,
    primary: &[Need],
    base: Base<'_>,
    params: &Params<'_>,
    budget: &Budget,
) -> Result<FhirRequest, Limit> {
    let mut request = if count_params(params, budget)? {
        // Kept apart from the primary needs even when equal: a granular scope may meet a
        // primary need but never what an include or chain brings in.
        let mut cross = Vec::new();
        cross_type_needs(base, params, &mut cross, budget)?;
        let mut needs = primary.to_vec();
        needs.extend(cross);
        FhirRequest::new(interaction, ty, many(&needs))
    } else {
        FhirRequest::new(interaction, ty, many(primary))
    };
    request.primary = u8::try_from(primary.len()).unwrap_or(0);
    Ok(request)
}

/// Conditional create, update, patch and delete: the letters plus `s` on the type, and `s` on
/// every type the condition's parameters reach. Never met by granular scopes.
fn conditional_write(
    interaction: Interaction,
    ty: ResourceType,
    letters: Permissions,
    condition: &Params<'_>,
    budget: &Budget,
) -> Result<FhirRequest, Limit> {
    let mut request = search(
        interaction,
        Some(ty),
        &[need(TypeScope::Type(ty), letters)],
        Base::One(ty),
        condition,
        budget,
    )?;
    request.primary = 0;
    Ok(request)
}

/// System search: `s` on every `_type` entry; with no `_type`, `*`.
fn search_system(params: &Params<'_>, budget: &Budget) -> Result<FhirRequest, ClassifyError> {
    let mut types: Vec<ResourceType> = Vec::new();
    let max = budget.limits.max_search_params();
    for (i, (raw_name, raw_value)) in params.raw_pairs().enumerate() {
        // Counted here too: this loop runs before `search` counts the list.
        Budget::within(i + 1, max, Limit::SearchParams)?;
        if search_params::decode(raw_name) != "_type" {
            continue;
        }
        for entry in search_params::decode(raw_value)
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
    let mut request = search(
        Interaction::SearchSystem,
        None,
        &primary,
        Base::Types(&types),
        params,
        budget,
    )?;
    if types.is_empty() {
        request.primary = 0;
    }
    Ok(request)
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
    static DEFAULT: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::default);
    DEFAULT.classify(&incoming)
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
            ("POST", "", None, false, I::BatchOrTransaction, "never"),
            ("POST", "/", None, false, I::BatchOrTransaction, "never"),
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
    fn the_unconstrained_path_does_not_allocate_its_needs() {
        let request = classify(
            &Method::GET,
            "/Observation",
            Some("code=http%3A%2F%2Floinc.org%7C1&_count=5"),
            None,
        )
        .expect("search");
        assert!(matches!(request.needs, Needs::One(_)));
        assert_eq!(request.primary, 1);
        let read = classify(&Method::GET, "/Patient/1", None, None).expect("read");
        assert!(matches!(read.needs, Needs::One(_)));
        assert_eq!(read.primary, 0);
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
            assert_eq!(request.primary, 1, "{query}");
        }
        let body = b"_include=Observation:patient";
        let request =
            classify(&Method::POST, "/Observation/_search", None, Some(body)).expect("post search");
        assert_eq!(needs_string(&request), "Observation.s Patient.s");
        assert!(request.form_params);
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
