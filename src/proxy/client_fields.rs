//! [`ClientFields`]: what the requests of one client connection share on their way upstream.
//! A client sends the same token, and mostly the same fields, request after request, so the
//! fields the proxy sets are made once per token and interaction, and the upstream fields of
//! the last request with each interaction are reused by the next one with the same field names
//! (`recent.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderMap;

use super::{
    headers::{HopByHopError, PeerFields, RequestFields},
    identity::IdentityValues,
    recent::RecentFields,
};
use crate::{Interaction, VerifiedClaims, introspect::response::TokenInfo};

/// The fields of one client connection: its forwarding fields, and those of the last token it
/// sent.
pub(crate) struct ClientFields {
    peer: PeerFields,
    last: Mutex<Option<TokenFields>>,
}

/// The fields set on the requests of one token from one client
/// ([`RequestFields::set_fields`]), and per interaction, made at its first request.
struct TokenFields {
    /// The cached introspection answer: held, so that its address cannot be reused by another.
    token: Arc<TokenInfo>,
    set: HeaderMap,
    by_interaction: [Option<Box<InteractionFields>>; Interaction::COUNT],
}

/// The set fields of one token and interaction, and what the last such request sent upstream.
struct InteractionFields {
    set: HeaderMap,
    recent: Option<RecentFields>,
}

/// Without the last token's introspection answer (its claims are nobody's business in a log).
impl std::fmt::Debug for ClientFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFields")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ClientFields {
    pub(crate) fn new(peer: PeerFields) -> Self {
        Self {
            peer,
            last: Mutex::new(None),
        }
    }

    /// The forwarding fields of this client.
    pub(crate) fn peer(&self) -> &PeerFields {
        &self.peer
    }

    /// Prepares `headers` of a request with `claims` for the upstream, as
    /// [`RequestFields::prepare_with`] does with the set fields of `claims`' token and
    /// interaction.
    ///
    /// # Errors
    ///
    /// As [`RequestFields::prepare_with`].
    pub(crate) fn prepare(
        &self,
        fields: &RequestFields,
        claims: &VerifiedClaims,
        headers: &mut HeaderMap,
    ) -> Result<(), HopByHopError> {
        let token = claims.shared_token();
        let interaction = claims.request().interaction();
        // One client connection's requests: uncontended but for HTTP/2 streams.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last
            .as_ref()
            .is_some_and(|made| !Arc::ptr_eq(&made.token, token))
        {
            *last = None;
        }
        let made = last.get_or_insert_with(|| {
            let values = IdentityValues::new(claims.client_id(), claims.scope());
            TokenFields {
                token: Arc::clone(token),
                set: fields.set_fields(Some(&values), &self.peer),
                by_interaction: std::array::from_fn(|_| None),
            }
        });
        let Some(slot) = made.by_interaction.get_mut(interaction as usize) else {
            // An interaction past `Interaction::COUNT` (a test keeps them in step).
            let set = fields.with_interaction(&made.set, interaction.as_str());
            return fields.prepare_with(headers, &set);
        };
        let at = slot.get_or_insert_with(|| {
            Box::new(InteractionFields {
                set: fields.with_interaction(&made.set, interaction.as_str()),
                recent: None,
            })
        });
        if let Some(recent) = &at.recent
            && recent.fill(headers)
        {
            return Ok(());
        }
        match RecentFields::of(fields, headers, &at.set) {
            Some(recent) if recent.fill(headers) => {
                at.recent = Some(recent);
                Ok(())
            }
            _ => fields.prepare_with(headers, &at.set),
        }
    }
}
