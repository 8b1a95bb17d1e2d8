//! [`RecentFields`]: the upstream fields of a client connection's last request, kept to be
//! reused by its next request with the same field names (a client sends the same fields, in
//! the same order, request after request).
//!
//! Which of a client's fields cross depends on their names alone when no `Connection` field
//! names others (`headers.rs`), so a request with the same names gets a copy of the same
//! upstream fields with its own values put in place: no field is looked at, hashed or inserted
//! again. No value is kept: neither the client's `Authorization` nor any other field outlives
//! its request here.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::headers::RequestFields;

/// The most fields, and bytes of field names, a request may have to be remembered: a client
/// sends some ten fields, and a connection keeps one of these per interaction, so it cannot
/// make the proxy keep its 100 fields of long names (what hyper lets through) for its lifetime.
const MAX_FIELDS: usize = 32;
const MAX_NAME_BYTES: usize = 1024;

/// What a request's fields became upstream, without their values.
pub(crate) struct RecentFields {
    /// The client's field names, once per value, in the order its map yields them, and
    /// whether each crosses.
    names: Vec<(HeaderName, bool)>,
    /// The client's fields that cross, with empty values, then the set fields. (The order of
    /// fields of different names means nothing, RFC 9110 §5.3; this one puts the values to
    /// fill first.)
    upstream: HeaderMap,
}

impl RecentFields {
    /// What `headers` becomes upstream after the set fields `set` (as
    /// [`RequestFields::prepare_with`] makes it); `None` when `headers` has a `Connection`
    /// field, whose value decides what crosses, or more than [`MAX_FIELDS`] fields or
    /// [`MAX_NAME_BYTES`] of names.
    pub(crate) fn of(fields: &RequestFields, headers: &HeaderMap, set: &HeaderMap) -> Option<Self> {
        if headers.len() > MAX_FIELDS
            || headers
                .keys()
                .map(|name| name.as_str().len())
                .sum::<usize>()
                > MAX_NAME_BYTES
            || headers.contains_key(header::CONNECTION)
        {
            return None;
        }
        let mut names = Vec::with_capacity(headers.len());
        let mut upstream = HeaderMap::with_capacity(headers.len() + set.len());
        for (name, _) in headers {
            let crosses = !fields.drops(name, &[]);
            if crosses {
                // Never one of the set fields (they are all dropped); were it one, the set
                // value would join the client's.
                if set.contains_key(name) {
                    return None;
                }
                upstream.append(name.clone(), HeaderValue::from_static(""));
            }
            names.push((name.clone(), crosses));
        }
        for (name, value) in set {
            upstream.append(name.clone(), value.clone());
        }
        Some(Self { names, upstream })
    }

    /// Replaces `headers` by a copy of the upstream fields with `headers`' own values in
    /// place, if it has the field names of the request this was made of; otherwise leaves it
    /// unchanged and returns `false`.
    pub(crate) fn fill(&self, headers: &mut HeaderMap) -> bool {
        if headers.len() != self.names.len()
            || !headers
                .iter()
                .zip(&self.names)
                .all(|((name, _), (seen, _))| name == seen)
        {
            return false;
        }
        let mut upstream = self.upstream.clone();
        // A map yields the values of one name together, after that name's first one: in the
        // same order here as in `headers`, so the n-th value that crosses goes to the n-th
        // empty one.
        let mut slots = upstream.values_mut();
        for ((_, value), (_, crosses)) in std::mem::take(headers).into_iter().zip(&self.names) {
            if *crosses && let Some(slot) = slots.next() {
                *slot = value;
            }
        }
        *headers = upstream;
        true
    }
}

/// Header maps for the tests of this module and `client_fields.rs`.
#[cfg(test)]
pub(crate) mod test_maps {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A map of these fields, in this order.
    pub(crate) fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                HeaderValue::from_str(value).expect("a value"),
            );
        }
        map
    }

    /// The fields of `map` in the order it yields them.
    pub(crate) fn listed(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        map.iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect()
    }

    /// The fields of `map` by name, each name's values in order: what a map means (the order
    /// of different names means nothing).
    pub(crate) fn by_name(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        let mut fields = listed(map);
        // A stable sort: each name's values keep their order.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{test_maps::*, *};
    use crate::proxy::{
        headers::{Forwarding, IdentityPrefix},
        identity::IdentityValues,
    };

    fn fields(forward_authorization: bool) -> RequestFields {
        RequestFields::new(
            IdentityPrefix::new("x-smart-").expect("a prefix"),
            forward_authorization,
            Some("upstream.internal:8080"),
            &Forwarding {
                proto: "https",
                host: Some("fhir.example.org"),
            },
        )
    }

    fn set(fields: &RequestFields) -> HeaderMap {
        let values = IdentityValues::new(Some("client-1"), "system/Patient.rs");
        let set = fields.set_fields(Some(&values), &fields.peer(IpAddr::from([10, 0, 0, 7])));
        fields.with_interaction(&set, "read")
    }

    /// Requests as clients send them: fields that cross, fields that do not, repeated names,
    /// forged identity fields and a name with `_`.
    fn requests() -> Vec<Vec<(&'static str, &'static str)>> {
        vec![
            vec![],
            vec![("host", "proxy"), ("authorization", "Bearer abc")],
            vec![
                ("host", "proxy"),
                ("accept", "application/fhir+json"),
                ("authorization", "Bearer abc"),
                ("user-agent", "client/1"),
            ],
            vec![
                ("accept", "application/json"),
                ("x-smart-client-id", "forged"),
                ("accept", "application/fhir+json"),
                ("te", "trailers"),
                ("x_smart_scopes", "forged"),
                ("traceparent", "00-1-2-01"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("forwarded", "for=1.2.3.4"),
                ("proxy-authorization", "Basic secret"),
                ("content-type", "application/fhir+json"),
                ("if-none-match", "W/\"1\""),
            ],
        ]
    }

    #[test]
    fn a_request_with_the_names_of_the_last_gets_what_prepare_with_makes() {
        for forward_authorization in [true, false] {
            let fields = fields(forward_authorization);
            let set = set(&fields);
            for first in requests() {
                let recent =
                    RecentFields::of(&fields, &map(&first), &set).expect("no Connection field");
                // The same names with other values: what a client sends next.
                let next: Vec<(&str, String)> = first
                    .iter()
                    .enumerate()
                    .map(|(i, (name, value))| (*name, format!("{value}-{i}")))
                    .collect();
                let next: Vec<(&str, &str)> = next.iter().map(|(n, v)| (*n, v.as_str())).collect();
                for request in [first.clone(), next] {
                    let mut reused = map(&request);
                    assert!(recent.fill(&mut reused), "{request:?}");
                    let mut made = map(&request);
                    fields
                        .prepare_with(&mut made, &set)
                        .expect("no Connection field");
                    assert_eq!(by_name(&reused), by_name(&made), "{request:?}");
                }
            }
        }
    }

    #[test]
    fn the_same_names_given_in_another_order_of_insertion_get_their_own_values() {
        let fields = fields(true);
        let set = set(&fields);
        let recent = RecentFields::of(
            &fields,
            &map(&[("x-a", "1"), ("x-a", "2"), ("x-b", "3")]),
            &set,
        )
        .expect("no Connection field");
        // A map yields `x-a`'s values together: the same names, in the same order.
        let request = [("x-a", "4"), ("x-b", "5"), ("x-a", "6")];
        let mut reused = map(&request);
        assert!(recent.fill(&mut reused));
        let mut made = map(&request);
        fields
            .prepare_with(&mut made, &set)
            .expect("no Connection field");
        assert_eq!(by_name(&reused), by_name(&made));
        assert_eq!(reused.get_all("x-a").iter().collect::<Vec<_>>(), ["4", "6"]);
    }

    #[test]
    fn a_request_with_other_names_is_left_as_it_came() {
        let fields = fields(true);
        let set = set(&fields);
        let recent = RecentFields::of(
            &fields,
            &map(&[("accept", "a"), ("authorization", "Bearer abc")]),
            &set,
        )
        .expect("no Connection field");
        for other in [
            vec![("authorization", "Bearer abc"), ("accept", "a")],
            vec![("accept", "a")],
            vec![
                ("accept", "a"),
                ("authorization", "Bearer abc"),
                ("te", "trailers"),
            ],
            vec![
                ("accept", "a"),
                ("authorization", "Bearer abc"),
                ("authorization", "x"),
            ],
            vec![("accept", "a"), ("x-smart-scopes", "system/*.*")],
            vec![("accept", "a"), ("accept", "b")],
        ] {
            let mut headers = map(&other);
            assert!(!recent.fill(&mut headers), "{other:?}");
            assert_eq!(listed(&headers), listed(&map(&other)));
        }
    }

    #[test]
    fn a_request_with_a_connection_field_is_not_remembered() {
        let fields = fields(true);
        let headers = map(&[("connection", "x-debug"), ("x-debug", "1")]);
        assert!(RecentFields::of(&fields, &headers, &set(&fields)).is_none());
    }

    #[test]
    fn a_request_with_many_fields_or_long_names_is_not_remembered() {
        let fields = fields(true);
        let set = set(&fields);
        let many: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("x-field-{i}")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|name| (name.as_str(), "1")).collect();
        assert!(RecentFields::of(&fields, &map(&many), &set).is_none());
        let long = format!("x-{}", "a".repeat(MAX_NAME_BYTES));
        assert!(RecentFields::of(&fields, &map(&[(long.as_str(), "1")]), &set).is_none());
        let under: Vec<(&str, &str)> = many[..MAX_FIELDS].to_vec();
        assert!(RecentFields::of(&fields, &map(&under), &set).is_some());
    }

    #[test]
    fn no_value_of_the_client_is_kept() {
        let fields = fields(true);
        let set = set(&fields);
        let recent = RecentFields::of(
            &fields,
            &map(&[("authorization", "Bearer secret-token"), ("cookie", "s=1")]),
            &set,
        )
        .expect("no Connection field");
        let kept = listed(&recent.upstream);
        assert!(kept.iter().all(|(_, value)| !value.starts_with(b"Bearer")));
        assert!(kept.iter().all(|(_, value)| value != b"s=1"));
    }
}
