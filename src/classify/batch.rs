//! Batches and transactions: each entry classified as if sent alone, conditional references
//! charged like searches (docs/AUTHORIZATION.md §6).

use std::sync::Arc;

use http::Method;

use super::{
    cross::Base,
    incoming::{Incoming, Params},
    interaction::Interaction,
    media::BodyKind,
    needs::{many, merge, need, need_s, push_unique},
    policy::Policy,
    request::{BundleEntry, BundleNeeds, ClassifyError, FhirRequest, Needs},
    search::analyse,
};
use crate::{
    fhir::{
        ResourceType,
        bundle::{self, BundleError, RawEntry},
    },
    limits::{Budget, Limit},
    need::{Need, Permissions, TypeScope},
};

impl Policy {
    /// `POST /` with a batch or transaction Bundle: each entry classified as if sent alone.
    pub(super) fn bundle(
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
        if let Some(why) = resource_mismatch(raw, &request, path) {
            return denied(why);
        }
        if !raw.conditional_references.is_empty() && !request.is_never_allowed() {
            // A conditional reference runs a search on its type (docs/AUTHORIZATION.md §5.4).
            let mut needs: Vec<Need> = request.needs().to_vec();
            for reference in &raw.conditional_references {
                budget.spend(1)?;
                let (path, query) = reference.split_once('?').unwrap_or((reference, ""));
                // Any spelling servers resolve: `Type?`, `Type/?`, `/Type?`, `[base]/Type?`.
                let ty = path
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
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

/// Why an entry's resource is not what its url names, for a create or an update: servers create
/// or update the resource in the body, so the guard checks that it is the one it authorized
/// (docs/AUTHORIZATION.md §6.2). `None` when it is, or when the interaction carries no resource.
fn resource_mismatch(raw: &RawEntry, request: &FhirRequest, path: &str) -> Option<&'static str> {
    use Interaction as I;
    let creates = matches!(request.interaction(), I::Create | I::ConditionalCreate);
    let updates = matches!(request.interaction(), I::Update | I::ConditionalUpdate);
    // An entry without a resource creates nothing (servers refuse it).
    if !(creates || updates) || !raw.has_resource {
        return None;
    }
    let named = request.resource_type().map(ResourceType::as_str);
    if raw.resource_type.as_deref() != named {
        return Some("the entry's resource is not of the type its url names");
    }
    if request.interaction() == I::Update {
        let id = path.trim_start_matches('/').split('/').nth(1);
        if raw.resource_id.as_deref() != id {
            return Some("the entry's resource id is not the id its url names");
        }
    }
    None
}
