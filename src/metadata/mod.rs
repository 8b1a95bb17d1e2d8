//! Discovery documents this FHIR server serves about itself, built from the guard's
//! [`Config`](crate::Config):
//!
//! - [`SmartConfiguration`], at `{base}/.well-known/smart-configuration`: SMART App Launch 2.x
//!   ([Conformance](https://hl7.org/fhir/smart-app-launch/conformance.html)) requires a FHIR
//!   endpoint that needs authorization to serve it;
//! - [`ProtectedResourceMetadata`] ([RFC 9728](https://www.rfc-editor.org/rfc/rfc9728)), at the
//!   URL derived from `SMART_GUARD_RESOURCE_URL` (§3.1), which every challenge then names in its
//!   `resource_metadata` parameter (§5.1).
//!
//! `router` (feature `axum`) serves both; the documents themselves are plain data (serde) for
//! other frameworks.

mod protected_resource;
#[cfg(feature = "axum")]
mod router;
mod smart_configuration;

#[cfg(feature = "axum")]
pub use self::router::router;
pub use self::{
    protected_resource::ProtectedResourceMetadata, smart_configuration::SmartConfiguration,
};
