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

/// The set fields of one token and interaction, and what a recent such request sent upstream.
struct InteractionFields {
    set: HeaderMap,
    recent: Option<RecentFields>,
    /// Requests in a row whose field names were not `recent`'s.
    misses: u8,
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
        self.prepare_for(
            fields,
            claims.shared_token(),
            || IdentityValues::new(claims.client_id(), claims.scope()),
            claims.request().interaction(),
            headers,
        )
    }

    /// [`Self::prepare`] for the cached answer `token` (its identity values from `values`, made
    /// at its first request on this connection) and `interaction`.
    fn prepare_for(
        &self,
        fields: &RequestFields,
        token: &Arc<TokenInfo>,
        values: impl FnOnce() -> IdentityValues,
        interaction: Interaction,
        headers: &mut HeaderMap,
    ) -> Result<(), HopByHopError> {
        // One client connection's requests: uncontended but for HTTP/2 streams.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last
            .as_ref()
            .is_some_and(|made| !Arc::ptr_eq(&made.token, token))
        {
            *last = None;
        }
        let made = last.get_or_insert_with(|| TokenFields {
            token: Arc::clone(token),
            set: fields.set_fields(Some(&values()), &self.peer),
            by_interaction: std::array::from_fn(|_| None),
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
                misses: 0,
            })
        });
        if let Some(recent) = &at.recent
            && recent.fill(headers)
        {
            at.misses = 0;
            return Ok(());
        }
        // Names other than the remembered ones (or none remembered yet): the second request in
        // a row to miss is remembered. A client that changed its fields for good pays one
        // request more; one that alternates between two sets of names keeps the first, and a
        // connection with a single request remembers nothing.
        at.misses = at.misses.saturating_add(1);
        if at.misses >= 2
            && let Some(recent) = RecentFields::of(fields, headers, &at.set)
            && recent.fill(headers)
        {
            at.recent = Some(recent);
            at.misses = 0;
            return Ok(());
        }
        fields.prepare_with(headers, &at.set)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use super::*;
    use crate::{
        introspect::response::{Answer, Checks, parse_answer},
        proxy::{
            headers::{Forwarding, IdentityPrefix},
            recent::test_maps::{by_name, map},
        },
    };

    fn token(client_id: &str) -> Arc<TokenInfo> {
        let body = format!(
            r#"{{"active":true,"client_id":"{client_id}","scope":"system/Patient.rs","exp":4102444800}}"#
        );
        let checks = Checks {
            require_exp: true,
            clock_skew: Duration::ZERO,
            expected_issuer: None,
            expected_audience: None,
        };
        match parse_answer(body.as_bytes(), &checks, 1_700_000_000) {
            Ok(Answer::Active(info)) => Arc::new(*info),
            _ => panic!("an active answer"),
        }
    }

    /// A connection's requests one after the other, each prepared as `prepare_with` would: the
    /// same names (remembered from the second), forged fields (dropped, remembered or not), a
    /// `Connection` field, a new token and another interaction.
    #[test]
    fn every_request_of_a_connection_gets_what_prepare_with_makes() {
        let fields = RequestFields::new(
            IdentityPrefix::new("x-smart-").expect("a prefix"),
            true,
            Some("upstream.internal:8080"),
            &Forwarding {
                proto: "https",
                host: Some("fhir.example.org"),
            },
        );
        let peer = fields.peer(IpAddr::from([10, 0, 0, 7]));
        let client = ClientFields::new(peer.clone());
        let (first, second) = (token("app-1"), token("app-2"));
        let plain = |n: &str| {
            vec![
                ("host", "proxy".to_owned()),
                ("authorization", format!("Bearer t{n}")),
                ("accept", format!("a{n}")),
                ("x-trace", format!("{n}-1")),
                ("x-trace", format!("{n}-2")),
            ]
        };
        let forged = |n: &str| {
            let mut fields = plain(n);
            fields.push(("x-smart-scopes", format!("system/*.cruds{n}")));
            fields.push(("x_smart_client_id", format!("admin{n}")));
            fields
        };
        let connection = |n: &str| {
            let mut fields = plain(n);
            fields.push(("connection", "x-debug".to_owned()));
            fields.push(("x-debug", n.to_owned()));
            fields
        };
        // The token, the interaction, the fields, and whether names are remembered after it.
        type Step<'a> = (
            &'a Arc<TokenInfo>,
            Interaction,
            Vec<(&'a str, String)>,
            bool,
        );
        let steps: Vec<Step<'_>> = vec![
            (&first, Interaction::Read, plain("1"), false),
            (&first, Interaction::Read, plain("2"), true),
            (&first, Interaction::Read, plain("3"), true),
            (&first, Interaction::Read, forged("4"), true),
            (&first, Interaction::Read, forged("5"), true),
            (&first, Interaction::Read, forged("6"), true),
            (&first, Interaction::Read, connection("7"), true),
            (&first, Interaction::SearchType, plain("8"), false),
            (&first, Interaction::Read, forged("9"), true),
            (&second, Interaction::Read, plain("10"), false),
            (&second, Interaction::Read, plain("11"), true),
        ];
        for (i, (token, interaction, request, remembered)) in steps.into_iter().enumerate() {
            let request: Vec<(&str, &str)> =
                request.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let client_id = if Arc::ptr_eq(token, &first) {
                "app-1"
            } else {
                "app-2"
            };
            let mut prepared = map(&request);
            client
                .prepare_for(
                    &fields,
                    token,
                    || IdentityValues::new(Some(client_id), "system/Patient.rs"),
                    interaction,
                    &mut prepared,
                )
                .expect("prepared");
            let values = IdentityValues::new(Some(client_id), "system/Patient.rs");
            let set = fields.with_interaction(
                &fields.set_fields(Some(&values), &peer),
                interaction.as_str(),
            );
            let mut expected = map(&request);
            fields.prepare_with(&mut expected, &set).expect("prepared");
            assert_eq!(by_name(&prepared), by_name(&expected), "step {}", i + 1);
            let last = client.last.lock().expect("lock");
            let at = last
                .as_ref()
                .and_then(|made| made.by_interaction[interaction as usize].as_ref());
            assert_eq!(
                at.is_some_and(|at| at.recent.is_some()),
                remembered,
                "step {}: remembered",
                i + 1
            );
        }
    }
}
