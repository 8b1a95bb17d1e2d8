//! Proxy mode: the guard in front of an upstream FHIR server (temporary module root).

// Temporary: the proxy service (not on this branch yet) is what uses these.
#![allow(dead_code)]

pub(crate) mod headers;
pub(crate) mod rewrite;
