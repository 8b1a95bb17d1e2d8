//! The state every endpoint handler shares: the server's URLs, registrations, token store,
//! assertion verifier and counters. Handlers and the server import it; it imports no handler.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::assertion::AssertionVerifier;
use super::registry::{ClientRegistration, ResourceServerRegistration};
use super::store::TokenStore;

#[derive(Debug)]
pub(crate) struct Urls {
    pub(crate) issuer: String,
    pub(crate) token: String,
    pub(crate) introspection: String,
    pub(crate) revocation: String,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) token_requests: AtomicUsize,
    pub(crate) tokens_issued: AtomicUsize,
    pub(crate) introspections: AtomicUsize,
    pub(crate) revocations: AtomicUsize,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) urls: Urls,
    pub(crate) clients: HashMap<String, ClientRegistration>,
    pub(crate) resource_servers: HashMap<String, ResourceServerRegistration>,
    pub(crate) token_lifetime: Duration,
    pub(crate) tokens: TokenStore,
    pub(crate) assertions: AssertionVerifier,
    pub(crate) counters: Counters,
}
