//! `TokenStore` (issued tokens, keyed by a keyed BLAKE3 digest, never the raw token) and `JtiCache`
//! (assertion replay protection).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use crate::{client::random_b64url, time::unix_now};

/// What the server remembers about an issued access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenRecord {
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
}

pub(crate) struct TokenStore {
    key: [u8; 32],
    tokens: Mutex<HashMap<[u8; 32], TokenRecord>>,
}

impl TokenStore {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        Self {
            key,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, token: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.key, token.as_bytes()).as_bytes()
    }

    /// Issues a fresh 256-bit random token and remembers its digest.
    pub(crate) fn issue(
        &self,
        client_id: &str,
        scope: &str,
        lifetime_secs: u64,
    ) -> (String, TokenRecord) {
        let token = random_b64url::<32>();
        let iat = unix_now();
        let record = TokenRecord {
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            iat,
            exp: iat + lifetime_secs,
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, r| r.exp > iat);
        tokens.insert(self.digest(&token), record.clone());
        (token, record)
    }

    /// The record of an active (issued, unexpired, unrevoked) token.
    pub(crate) fn active(&self, token: &str) -> Option<TokenRecord> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&self.digest(token))
            .filter(|r| r.exp > unix_now())
            .cloned()
    }

    /// Revokes a token if `may_revoke` allows it; true if a token was removed.
    pub(crate) fn revoke(
        &self,
        token: &str,
        may_revoke: impl FnOnce(&TokenRecord) -> bool,
    ) -> bool {
        let digest = self.digest(token);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(&digest) {
            Some(record) if may_revoke(record) => tokens.remove(&digest).is_some(),
            _ => false,
        }
    }
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore").finish_non_exhaustive()
    }
}

/// Seen `(iss, jti)` pairs, each kept until its assertion's `exp`.
#[derive(Debug, Default)]
pub(crate) struct JtiCache {
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl JtiCache {
    /// Records the pair; false if it was already seen and its assertion has not expired.
    pub(crate) fn first_use(&self, iss: &str, jti: &str, exp: u64) -> bool {
        let now = unix_now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, e| *e >= now);
        let key = (iss.to_owned(), jti.to_owned());
        if seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, exp);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_found_by_value_and_stored_by_digest() {
        let store = TokenStore::new();
        let (token, record) = store.issue("c", "system/Patient.rs", 300);
        assert!(token.len() >= 43, "256 bits base64url");
        assert_eq!(store.active(&token), Some(record));
        assert_eq!(store.active("other"), None);
        let raw_keys_present = store
            .tokens
            .lock()
            .map(|t| t.keys().any(|k| k == token.as_bytes()))
            .unwrap_or(true);
        assert!(!raw_keys_present);
    }

    #[test]
    fn revocation_respects_the_ownership_check() {
        let store = TokenStore::new();
        let (token, _) = store.issue("c", "s", 300);
        assert!(!store.revoke(&token, |r| r.client_id == "someone-else"));
        assert!(store.active(&token).is_some());
        assert!(store.revoke(&token, |_| true));
        assert!(store.active(&token).is_none());
        assert!(!store.revoke(&token, |_| true));
    }

    #[test]
    fn expired_tokens_are_inactive() {
        let store = TokenStore::new();
        let (token, _) = store.issue("c", "s", 0);
        assert_eq!(store.active(&token), None);
    }

    #[test]
    fn a_jti_is_accepted_once_per_issuer() {
        let cache = JtiCache::default();
        let exp = unix_now() + 60;
        assert!(cache.first_use("a", "j1", exp));
        assert!(!cache.first_use("a", "j1", exp));
        assert!(cache.first_use("b", "j1", exp));
    }
}
