//! What the classifier reads of a request: method, path, query, the headers that change the
//! interaction, and the body when the guard reads it.

use http::{HeaderMap, HeaderName, Method, header};

use crate::fhir::search_param;

/// `If-None-Exist`, parsed once rather than on every request.
const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

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
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    content_type: Option<&'a str>,
    pub(crate) body: Option<&'a [u8]>,
    pub(crate) if_none_exist: Option<&'a str>,
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

    pub(crate) fn body_kind(&self) -> Option<BodyKind> {
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
pub(crate) enum BodyKind {
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
        let query = self.query.into_iter().flat_map(search_param::raw_pairs);
        let form = self.form.into_iter().flat_map(search_param::raw_pairs);
        query.chain(form)
    }
}
