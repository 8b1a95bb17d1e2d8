//! The load benchmark's server: one process, one tokio worker thread, five modes on five ports.
//!
//! | port | mode |
//! |---|---|
//! | `BASE` | bare axum router |
//! | `BASE+1` | the same router behind a no-op middleware (the floor of any layer) |
//! | `BASE+2` | the same router behind `SmartGuardLayer` (cache hits after warm-up) |
//! | `BASE+3` | the same router behind a local RS256 JWT validation layer (jsonwebtoken), as JWT-only guards do |
//! | `BASE+4` | a loopback introspection endpoint for the guard (warm-up only) |
//!
//! It prints one line of JSON with the tokens to send, then serves until killed. Driven by
//! `scripts/load.sh`, which pins it to one core and `wrk` to the other.
//!
//! ```sh
//! cargo run --release --example load_server -- 18080
//! ```

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::Path,
    http::{Request, Response, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use smart_guard::{
    Config, SmartGuardLayer,
    client::{KeyPair, SigningAlg},
};
use tower::{Layer, Service};

const SCOPES: &str = "system/Patient.rs system/Observation.rs system/Condition.rs \
    system/Encounter.rs system/MedicationRequest.rs system/AllergyIntolerance.rs \
    system/Procedure.rs system/Immunization.rs system/DiagnosticReport.rs system/Practitioner.read";

fn fhir_router() -> Router {
    Router::new().route(
        "/fhir/Patient/{id}",
        get(|Path(id): Path<String>| async move {
            Json(json!({ "resourceType": "Patient", "id": id, "active": true }))
        }),
    )
}

/// A middleware that does nothing: the cost of one more tower layer and boxed future.
#[derive(Clone)]
struct Noop<S>(S);

impl<S, B> Service<Request<B>> for Noop<S>
where
    S: Service<Request<B>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// Local RS256 JWT validation, as guards that accept only JWTs do (no introspection).
#[derive(Clone)]
struct JwtAuth<S> {
    inner: S,
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl<S> Service<Request<Body>> for JwtAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let verdict = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| {
                jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            });
        match verdict {
            Some(Ok(data)) => {
                request.extensions_mut().insert(Arc::new(data.claims));
                let fresh = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, fresh);
                Box::pin(async move { ready.call(request).await })
            }
            _ => Box::pin(async { Ok(StatusCode::UNAUTHORIZED.into_response()) }),
        }
    }
}

#[derive(Clone)]
struct JwtLayer {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl<S> Layer<S> for JwtLayer {
    type Service = JwtAuth<S>;
    fn layer(&self, inner: S) -> JwtAuth<S> {
        JwtAuth {
            inner,
            key: Arc::clone(&self.key),
            validation: Arc::clone(&self.validation),
        }
    }
}

async fn serve(port: u16, app: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(18080);
    // One worker thread: the server gets exactly one core (scripts/load.sh pins it).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(base))
}

async fn run(base: u16) -> Result<(), Box<dyn std::error::Error>> {
    // Tokens: an opaque 43-byte one, a 1 KB JWT-shaped one, and a real RS256 JWT.
    let short = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo".to_owned();
    let long = format!(
        "eyJhbGciOiJSUzM4NCJ9.{}.{}",
        "a".repeat(600),
        "b".repeat(402)
    );
    let key = KeyPair::generate(SigningAlg::Rs384)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({ "iss": "https://as.example", "sub": "backend-app", "client_id": "backend-app",
        "scope": SCOPES, "exp": now + 3600, "iat": now });
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(key.private_key_pem().as_bytes())?,
    )?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["https://as.example"]);
    validation.validate_aud = false;
    let jwt_layer = JwtLayer {
        key: Arc::new(DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes())?),
        validation: Arc::new(validation),
    };

    // The AS answers every token active (the guard asks once per token, at warm-up).
    let introspection = Router::new().route(
        "/introspect",
        post(move || async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            Json(
                json!({ "active": true, "scope": SCOPES, "client_id": "backend-app",
                "sub": "backend-app", "exp": now + 3600, "token_type": "bearer" }),
            )
        }),
    );
    let as_port = base + 4;
    let config = Config::new(
        format!("http://127.0.0.1:{as_port}/introspect").parse()?,
        "fhir-rs",
        "secret",
    )
    .with_base_path("/fhir")?
    .with_max_ttl(Duration::from_secs(3600))
    .with_http_client(reqwest::Client::builder().no_proxy().build()?);
    let guard = SmartGuardLayer::new(config)?;

    let servers = vec![
        tokio::spawn(serve(base, fhir_router())),
        tokio::spawn(serve(
            base + 1,
            fhir_router().layer(tower::layer::layer_fn(Noop)),
        )),
        tokio::spawn(serve(base + 2, fhir_router().layer(guard))),
        tokio::spawn(serve(base + 3, fhir_router().layer(jwt_layer))),
        tokio::spawn(serve(as_port, introspection)),
    ];
    println!(
        "{}",
        json!({ "short": short, "long": long, "jwt": jwt, "ports": {
            "bare": base, "noop": base + 1, "guarded": base + 2, "jwt": base + 3, "as": as_port } })
    );
    for server in servers {
        server.await??;
    }
    Ok(())
}
