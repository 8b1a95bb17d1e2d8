//! What the classifier reads of a request: method, path, query, the headers that change the
//! interaction, and the body when the guard reads it.

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

use super::media::{self, BodyKind};
use crate::fhir::search_param;

/// `If-None-Exist`, parsed once rather than on every request.
const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");
/// HAPI's `X-Cascade: delete`, which makes a delete also delete what references its target.
const X_CASCADE: HeaderName = HeaderName::from_static("x-cascade");

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
    pub(crate) content_type: Option<&'a str>,
    pub(crate) content_encoding: Option<&'a str>,
    pub(crate) body: Option<&'a [u8]>,
    pub(crate) if_none_exist: Option<&'a str>,
    pub(crate) x_cascade: Option<&'a str>,
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
            content_encoding: None,
            body: None,
            if_none_exist: None,
            x_cascade: None,
        }
    }

    /// The request's `Content-Type`, `Content-Encoding`, `If-None-Exist` and (when read) body,
    /// from its headers. A value that is not visible ASCII, or a header sent twice, is kept as
    /// unreadable, and the classifier refuses it (docs/AUTHORIZATION.md §8.4).
    ///
    /// Only a `POST` is classified by them (a form search, a batch, a conditional create, a
    /// bulk kick-off), and a `DELETE` by `X-Cascade`, so for any other method the headers are not
    /// looked up at all.
    #[must_use]
    #[inline]
    pub fn with_headers(mut self, headers: &'a HeaderMap, body: Option<&'a [u8]>) -> Self {
        self.body = body;
        if *self.method == Method::DELETE {
            self.x_cascade = one(headers, &X_CASCADE);
            return self;
        }
        if *self.method != Method::POST {
            return self;
        }
        self.content_type = one(headers, &header::CONTENT_TYPE);
        self.content_encoding = one(headers, &header::CONTENT_ENCODING);
        self.if_none_exist = one(headers, &IF_NONE_EXIST);
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

    /// The value of an `X-Cascade` header (HAPI's cascading delete, when it says `delete`).
    #[must_use]
    pub fn with_x_cascade(mut self, value: &'a str) -> Self {
        self.x_cascade = Some(value);
        self
    }

    /// The value of a `Content-Encoding` header: a body the guard reads must be sent as is
    /// (`identity`), or the request is refused with 415.
    #[must_use]
    pub fn with_content_encoding(mut self, encoding: &'a str) -> Self {
        self.content_encoding = Some(encoding);
        self
    }

    /// The kind of the body, for a clean `Content-Type` the guard reads.
    pub(crate) fn body_kind(&self) -> Option<BodyKind> {
        self.content_type.and_then(media::media_type)
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

/// A header's only value as text, or a marker the classifier refuses: a value that is not
/// visible ASCII, or the header sent more than once (which of two would the server read?).
fn one<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(UNREADABLE);
    }
    Some(HeaderValue::to_str(first).unwrap_or(UNREADABLE))
}

/// What an unreadable header value is kept as: not visible ASCII, so it is refused.
const UNREADABLE: &str = "\u{fffd}";

/// Whether the guard must read the body to classify the request: a form-encoded
/// `POST …/_search`, a JSON `POST /` (batch or transaction), a JSON or form `POST …/$export`,
/// each with a clean media type and sent as is. Any other body on such a request is refused
/// by the classifier (415) without being read.
#[must_use]
pub(crate) fn reads_body(method: &Method, relative_path: &str, headers: &HeaderMap) -> bool {
    if method != Method::POST || !media::is_identity(one(headers, &header::CONTENT_ENCODING)) {
        return false;
    }
    let path = relative_path.strip_prefix('/').unwrap_or(relative_path);
    let kind = one(headers, &header::CONTENT_TYPE).and_then(media::media_type);
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
