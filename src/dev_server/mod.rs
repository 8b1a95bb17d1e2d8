//! A development authorization server for SMART Backend Services (feature `dev-server`).
//!
//! **For development and testing only.** It keeps everything in memory, speaks plain HTTP, and takes
//! shortcuts a production authorization server must not take (e.g. anyone holding a token may
//! revoke it). Use it to try the guard locally and in integration tests.
//!
//! # Endpoints
//!
//! | Path | What |
//! |---|---|
//! | `POST /token` | `grant_type=client_credentials` with a `private_key_jwt` client assertion (RS384/ES384) |
//! | `POST /introspect` | RFC 7662, for registered resource servers (`client_secret_basic`, `client_secret_post` or `private_key_jwt`) |
//! | `POST /revoke` | RFC 7009; always 200 for a well-formed request |
//! | `GET /.well-known/smart-configuration` | SMART discovery |
//!
//! # Token endpoint checks
//!
//! The assertion must have `alg` RS384 or ES384 (never `none`, HS*, or an `alg` other than the key's),
//! a `kid` naming a registered key, a valid signature, `iss` = `sub` = a registered `client_id`,
//! `aud` = the token URL, `exp` present, in the future and at most five minutes ahead, and a `jti`
//! not seen before within the assertion's lifetime. A `jku` header, if present, must equal the
//! client's registered JWKS URL (it is never fetched otherwise). Granted scopes are the requested scopes that
//! are also allowed for the client (exact string match); an empty result is `invalid_scope`. Tokens
//! are 256-bit random strings stored only as keyed BLAKE3 digests; `expires_in` is 300 s by default.
//! Errors follow RFC 6749 §5.2: `invalid_client` (401), `invalid_request`, `invalid_scope`,
//! `unsupported_grant_type` (400).
//!
//! Keys registered by URL are fetched on use and cached as `Cache-Control: max-age` allows;
//! `no-store`, `no-cache` or no `max-age` mean the keys are fetched again next time.
//!
//! Clients can be loaded from a JSON file; the format is documented on [`ClientsFile`].
//!
//! ```
//! use smart_guard::client::{AssertionSigner, KeyPair, SigningAlg, request_token};
//! use smart_guard::dev_server::{ClientRegistration, DevServer, JwksSource, ResourceServerRegistration};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = KeyPair::generate(SigningAlg::Es384)?;
//! let server = DevServer::builder()
//!     .with_client(ClientRegistration::new("backend", JwksSource::inline(key.jwks()))
//!         .with_scopes(["system/Patient.rs"]))
//!     .with_resource_server(ResourceServerRegistration::with_secret("fhir-server", "s3cret"))
//!     .spawn("127.0.0.1:0")
//!     .await?;
//! let signer = AssertionSigner::new("backend", key);
//! let http = reqwest::Client::builder().no_proxy().build()?;
//! let token = request_token(&http, server.token_url(), &signer, "system/Patient.rs").await?;
//! assert_eq!(token.scope.as_deref(), Some("system/Patient.rs"));
//! # Ok(()) }
//! ```

mod assertion;
mod auth;
mod error;
pub mod fhir_store;
mod form;
mod introspect;
mod jwks;
mod metadata;
mod registry;
mod revoke;
mod server;
mod state;
mod store;
mod token;

pub use registry::{
    ClientRegistration, ClientsFile, ClientsFileError, JwksSource, ResourceServerRegistration,
};
pub use server::{
    DEFAULT_TOKEN_LIFETIME, DevServer, DevServerBuilder, INTROSPECTION_PATH, REVOCATION_PATH,
    SMART_CONFIGURATION_PATH, TOKEN_PATH,
};
