//! The classifier: what a FHIR request is (its [`Interaction`]) and what it needs (letters on
//! each resource type it reaches), from its method, path, query, the headers that matter and
//! the body when the guard reads one (docs/AUTHORIZATION.md §4-§9).
//!
//! Pure logic: no I/O, no tower. The result, a [`FhirRequest`], is immutable; the scope check
//! reads it (`grant`). The common path (a read, or a search without cross-type parameters)
//! allocates nothing.

mod batch;
mod cross;
mod incoming;
mod interaction;
mod media;
mod needs;
mod operations;
mod path;
mod policy;
mod request;
mod rules;
mod search;

pub use self::{
    incoming::Incoming,
    interaction::Interaction,
    policy::{Policy, classify},
    request::{ClassifyError, FhirRequest},
};
pub(crate) use self::{
    incoming::{Params, reads_body},
    policy::{DEFAULT_MAX_JSON_DEPTH, allowed_operations_of, bulk_paths_of},
    request::{BundleEntry, Needs},
    rules::{BulkPath, OperationRule},
};
