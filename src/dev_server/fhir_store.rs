//! A tiny in-memory FHIR R4 server (Patient and Observation: read, search, create) to put the
//! guard in front of. For examples, demos and tests only.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::VerifiedClaims;

const TYPES: [&str; 2] = ["Patient", "Observation"];

/// The `date` of the CapabilityStatement: when its content last changed.
const CAPABILITY_DATE: &str = "2026-11-29";

/// The SMART extension that names the AS endpoints in a CapabilityStatement
/// ([SMART App Launch 1.0](https://hl7.org/fhir/smart-app-launch/1.0.0/conformance/index.html);
/// 2.x keeps it for older clients next to `.well-known/smart-configuration`).
const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// The AS endpoints the CapabilityStatement names.
#[derive(Clone, Debug, Default)]
struct OauthUris {
    token: Option<String>,
    introspect: Option<String>,
    revoke: Option<String>,
}

/// An in-memory store of Patient and Observation resources.
///
/// Its CapabilityStatement (`GET /metadata`) declares SMART-on-FHIR security and, once it is
/// told the token endpoint, the SMART `oauth-uris` extension:
///
/// ```
/// use smart_guard::dev_server::fhir_store::FhirStore;
///
/// let store = FhirStore::with_samples()
///     .with_token_url("https://as.example/token")
///     .with_introspection_url("https://as.example/introspect")
///     .with_revocation_url("https://as.example/revoke");
/// let app: axum::Router = store.router();
/// ```
#[derive(Clone, Debug, Default)]
pub struct FhirStore {
    resources: Arc<Mutex<BTreeMap<(String, String), Value>>>,
    oauth_uris: Arc<OauthUris>,
}

impl FhirStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding one Patient (`example`) and two of its Observations.
    #[must_use]
    pub fn with_samples() -> Self {
        let store = Self::new();
        store.put(json!({
            "resourceType": "Patient", "id": "example",
            "name": [{ "family": "Chalmers", "given": ["Peter", "James"] }],
            "gender": "male", "birthDate": "1974-12-25"
        }));
        for (id, code, value) in [("bp-1", "8867-4", 72), ("bp-2", "8867-4", 80)] {
            store.put(json!({
                "resourceType": "Observation", "id": id, "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": code, "display": "Heart rate" }] },
                "subject": { "reference": "Patient/example" },
                "valueQuantity": { "value": value, "unit": "beats/minute" }
            }));
        }
        store
    }

    /// The AS token endpoint, the `token` of the CapabilityStatement's `oauth-uris` extension.
    /// Without it the extension is left out (it requires `token`).
    #[must_use]
    pub fn with_token_url(mut self, url: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.oauth_uris).token = Some(url.into());
        self
    }

    /// The AS introspection endpoint, the `introspect` of the `oauth-uris` extension.
    #[must_use]
    pub fn with_introspection_url(mut self, url: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.oauth_uris).introspect = Some(url.into());
        self
    }

    /// The AS revocation endpoint, the `revoke` of the `oauth-uris` extension.
    #[must_use]
    pub fn with_revocation_url(mut self, url: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.oauth_uris).revoke = Some(url.into());
        self
    }

    /// Stores a resource under its `resourceType` and `id`.
    pub fn put(&self, resource: Value) {
        let key = (
            resource["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            resource["id"].as_str().unwrap_or_default().to_owned(),
        );
        self.lock().insert(key, resource);
    }

    /// How many resources of a type are stored.
    #[must_use]
    pub fn count(&self, resource_type: &str) -> usize {
        self.lock()
            .keys()
            .filter(|(t, _)| t == resource_type)
            .count()
    }

    /// The FHIR routes, relative to the base: `GET /metadata` (a CapabilityStatement with
    /// SMART-on-FHIR security), `GET /{type}` (search),
    /// `POST /{type}` (create), `GET /{type}/{id}` (read). Handlers that see
    /// [`VerifiedClaims`] echo the client id in an `X-Smart-Client-Id` header.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metadata", get(capabilities))
            .route("/{type}", get(search).post(create))
            .route("/{type}/{id}", get(read))
            .with_state(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Value>> {
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn fhir_json(status: StatusCode, body: Value, claims: Option<&VerifiedClaims>) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    if let Some(client) = claims.and_then(VerifiedClaims::client_id)
        && let Ok(value) = HeaderValue::from_str(client)
    {
        headers.insert("x-smart-client-id", value);
    }
    response
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": text }]
    });
    fhir_json(status, body, None)
}

/// A 404 OperationOutcome for a type this store does not hold.
fn unsupported(ty: &str) -> Option<Response> {
    (!TYPES.contains(&ty)).then(|| {
        outcome(
            StatusCode::NOT_FOUND,
            "not-supported",
            "unsupported resource type",
        )
    })
}

async fn capabilities(State(store): State<FhirStore>) -> Response {
    let resources: Vec<Value> = TYPES
        .iter()
        .map(|t| json!({ "type": t, "interaction": [{ "code": "read" }, { "code": "search-type" }, { "code": "create" }] }))
        .collect();
    fhir_json(
        StatusCode::OK,
        json!({
            "resourceType": "CapabilityStatement", "status": "active", "date": CAPABILITY_DATE,
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{ "mode": "server", "security": security(&store.oauth_uris), "resource": resources }]
        }),
        None,
    )
}

/// `rest.security`: the SMART-on-FHIR service and, with a token endpoint, the `oauth-uris`
/// extension naming the AS endpoints.
fn security(uris: &OauthUris) -> Value {
    let mut security = json!({
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }]
    });
    if uris.token.is_some() {
        let named = [
            ("token", &uris.token),
            ("introspect", &uris.introspect),
            ("revoke", &uris.revoke),
        ];
        let extension: Vec<Value> = named
            .iter()
            .filter_map(|(name, url)| {
                url.as_ref()
                    .map(|url| json!({ "url": name, "valueUri": url }))
            })
            .collect();
        security["extension"] = json!([{ "url": OAUTH_URIS, "extension": extension }]);
    }
    security
}

async fn read(
    State(store): State<FhirStore>,
    claims: Option<VerifiedClaims>,
    Path((ty, id)): Path<(String, String)>,
) -> Response {
    if let Some(refusal) = unsupported(&ty) {
        return refusal;
    }
    let found = store.lock().get(&(ty, id)).cloned();
    match found {
        Some(resource) => fhir_json(StatusCode::OK, resource, claims.as_ref()),
        None => outcome(StatusCode::NOT_FOUND, "not-found", "no such resource"),
    }
}

async fn search(
    State(store): State<FhirStore>,
    claims: Option<VerifiedClaims>,
    Path(ty): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(refusal) = unsupported(&ty) {
        return refusal;
    }
    let matches = |resource: &Value| {
        params.iter().all(|(name, value)| match name.as_str() {
            "_id" => resource["id"] == *value,
            "patient" | "subject" => {
                let reference = resource["subject"]["reference"]
                    .as_str()
                    .unwrap_or_default();
                reference == value || reference.strip_prefix("Patient/") == Some(value)
            }
            _ => true, // other parameters (and _format, _count, …) do not filter here
        })
    };
    let entries: Vec<Value> = store
        .lock()
        .iter()
        .filter(|((t, _), resource)| *t == ty && matches(resource))
        .map(|((t, id), resource)| json!({ "fullUrl": format!("{t}/{id}"), "resource": resource, "search": { "mode": "match" } }))
        .collect();
    let bundle = json!({
        "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries
    });
    fhir_json(StatusCode::OK, bundle, claims.as_ref())
}

async fn create(
    State(store): State<FhirStore>,
    claims: Option<VerifiedClaims>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refusal) = unsupported(&ty) {
        return refusal;
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/fhir+json") || ct.starts_with("application/json")
        });
    let Some(mut resource) = json_body
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .filter(|r| r["resourceType"] == *ty)
    else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "expected a JSON resource of the path's type",
        );
    };
    let id = format!("{}-{}", ty.to_lowercase(), store.count(&ty) + 1);
    resource["id"] = Value::String(id.clone());
    store.put(resource.clone());
    let mut response = fhir_json(StatusCode::CREATED, resource, claims.as_ref());
    if let Ok(location) = HeaderValue::from_str(&format!("{ty}/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
