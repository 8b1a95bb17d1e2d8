//! What crosses the proxy: the header fields removed, refused and set between the client and the
//! upstream FHIR server.
//!
//! Pure logic on [`HeaderMap`]s: on a request, [`RequestFields::prepare`] (one pass, refused on
//! `Err`); on a response, [`strip_hop_by_hop_response`].

use std::{
    fmt::{self, Write as _},
    net::IpAddr,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::identity::IdentityValues;

/// The hop-by-hop fields of RFC 9110 §7.6.1 (and the old `Keep-Alive`, `Proxy-Connection`): a
/// proxy never forwards them, whether or not a `Connection` header names them.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Fields a request's `Connection` header may not name (lowercase).
///
/// Naming a field in `Connection` asks the proxy to drop it (RFC 9110 §7.6.1). For these, the
/// guard either read the field to authorize the request (`authorization`, `content-type`,
/// `content-encoding` of a form or Bundle body, `if-none-exist` of a conditional create,
/// `x-cascade` of a cascading delete), or dropping it would change what the upstream does with
/// the request the guard authorized (`content-length` frames the body; `host` names the target;
/// the preconditions `if-match`, `if-none-match`, `if-modified-since`, `if-unmodified-since`;
/// `prefer`, which chooses among `return=` representations and `handling=` of search
/// parameters). Such a request is refused rather than forwarded without them.
pub(crate) const CONNECTION_PROTECTED: [&str; 12] = [
    "authorization",
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "if-none-exist",
    "x-cascade",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "prefer",
];

/// Method-override fields: an upstream that honours one would act on another method than the
/// one the guard authorized.
pub(crate) const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// The de-facto forwarding fields the proxy sets.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The forwarding fields [`RequestFields`] sets: `Forwarded` (RFC 7239) and the de-facto ones.
const FORWARDING_SET: [HeaderName; 4] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
];

/// Forwarding fields a client may send but the proxy neither trusts nor sets: removed by
/// [`RequestFields`], besides those it replaces. An upstream that trusts them would take the
/// client's word for its port, its path prefix (and so the base URL it writes) or its address.
const FORWARDING_REMOVED: [HeaderName; 4] = [
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-real-ip"),
];

/// Why a request's hop-by-hop fields could not be removed: the request is refused (400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HopByHopError {
    /// `Connection` names a field in [`CONNECTION_PROTECTED`].
    Protected(HeaderName),
    /// A `Connection` value is not a comma-separated list of field names.
    Unreadable,
}

impl fmt::Display for HopByHopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protected(name) => write!(f, "the Connection header names {name}"),
            Self::Unreadable => f.write_str("the Connection header is not a list of field names"),
        }
    }
}

impl std::error::Error for HopByHopError {}

/// The fields a request's `Connection` headers name: with the fixed [`HOP_BY_HOP`] fields, what
/// a proxy removes (RFC 9110 §7.6.1).
///
/// # Errors
///
/// When a `Connection` header names a field of [`CONNECTION_PROTECTED`], or holds something
/// other than field names (comma-separated tokens, optional whitespace around them).
fn connection_named(headers: &HeaderMap) -> Result<Vec<HeaderName>, HopByHopError> {
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in list_elements(value.as_bytes()).filter(|token| !names_hop_by_hop(token)) {
            let name = HeaderName::from_bytes(token).map_err(|_| HopByHopError::Unreadable)?;
            if CONNECTION_PROTECTED.contains(&name.as_str()) {
                return Err(HopByHopError::Protected(name));
            }
            named.push(name);
        }
    }
    Ok(named)
}

/// What [`strip_hop_by_hop_response`] saw of a response's fields besides hop-by-hop ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResponseFields {
    /// A `Location` or `Content-Location` field: URLs that may need rewriting.
    pub(crate) urls: bool,
}

/// Removes a response's hop-by-hop fields: those of [`HOP_BY_HOP`] and every field a
/// `Connection` header names. Nothing is refused; an unreadable token names no field. One look
/// at each name; the usual case, a `Connection: keep-alive` and nothing else, costs one removal.
pub(crate) fn strip_hop_by_hop_response(headers: &mut HeaderMap) -> ResponseFields {
    let (mut hop_by_hop, mut connection_only, mut urls) = (false, true, false);
    for name in headers.keys() {
        if name == header::LOCATION || name == header::CONTENT_LOCATION {
            urls = true;
        } else if is_hop_by_hop(name.as_str().as_bytes()) {
            hop_by_hop = true;
            connection_only &= name == header::CONNECTION;
        }
    }
    if hop_by_hop {
        // One lookup for the usual case.
        if connection_only
            && let http::header::Entry::Occupied(connection) = headers.entry(header::CONNECTION)
            && !connection.iter().any(|value| {
                let value = value.as_bytes();
                // The usual values, without splitting a list.
                !(value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close"))
                    && list_elements(value).any(|token| !names_hop_by_hop(token))
            })
        {
            connection.remove_entry_mult();
        } else {
            strip_named(headers);
        }
    }
    ResponseFields { urls }
}

/// [`strip_hop_by_hop_response`]'s general case: `Connection` names fields, or other
/// hop-by-hop fields are there.
fn strip_named(headers: &mut HeaderMap) {
    // `Connection` goes first, with the names it holds.
    let mut named: Vec<HeaderName> = Vec::new();
    if let http::header::Entry::Occupied(connection) = headers.entry(header::CONNECTION) {
        for value in connection.remove_entry_mult().1 {
            named.extend(
                list_elements(value.as_bytes())
                    .filter(|token| !names_hop_by_hop(token))
                    .filter_map(|token| HeaderName::from_bytes(token).ok()),
            );
        }
    }
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str().as_bytes()) || named.contains(name))
        .cloned()
        .collect();
    for name in &dropped {
        headers.remove(name);
    }
}

/// Joins the `Cookie` fields of an HTTP/2 request into one, with `; ` between them: HTTP/2
/// sends a cookie list as separate fields, an HTTP/1.1 request (what goes upstream) as one
/// (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let http::header::Entry::Occupied(mut cookies) = headers.entry(header::COOKIE) else {
        return;
    };
    if cookies.iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, crumb) in cookies.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    // Field values with `; ` between them: a field value.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        cookies.insert(value);
    }
}

/// Whether a `Connection` token names a field of [`HOP_BY_HOP`] (removed anyway, so not
/// made into a name: `Connection: keep-alive` costs no allocation), in any case.
fn names_hop_by_hop(token: &[u8]) -> bool {
    // The longest of them, `proxy-authorization`, has 19 bytes.
    let mut lower = [0u8; 19];
    let Some(lower) = lower.get_mut(..token.len()) else {
        return false;
    };
    for (to, from) in lower.iter_mut().zip(token) {
        *to = from.to_ascii_lowercase();
    }
    is_hop_by_hop(lower)
}

/// Whether `name` (lowercase) is one of [`HOP_BY_HOP`] (a test checks they agree), matched by
/// length and bytes: several times cheaper than comparing with each `HeaderName`.
fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection"
            | b"keep-alive"
            | b"proxy-connection"
            | b"proxy-authenticate"
            | b"proxy-authorization"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
    )
}

/// The non-empty elements of a comma-separated list, without the whitespace around them
/// (RFC 9110 §5.6.1: a recipient accepts empty elements).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|element| element.trim_ascii())
        .filter(|element| !element.is_empty())
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The prefix of the identity fields the proxy sets (such as `x-smart-`), checked once at
/// startup, with the three field names made from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IdentityPrefix {
    prefix: String,
    client_id: HeaderName,
    scopes: HeaderName,
    interaction: HeaderName,
}

/// Why a string cannot be the identity prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InvalidIdentityPrefix {
    /// The prefix is empty: stripping it would remove every field.
    Empty,
    /// The prefix makes no valid field names.
    NotAName,
    /// Stripping the prefix would remove this field, which the guard reads or the proxy sets.
    Matches(String),
}

impl fmt::Display for InvalidIdentityPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the identity header prefix is empty"),
            Self::NotAName => f.write_str("the identity header prefix is not a field name"),
            Self::Matches(name) => write!(f, "the identity header prefix matches {name}"),
        }
    }
}

impl std::error::Error for InvalidIdentityPrefix {}

impl IdentityPrefix {
    /// Checks `prefix` and makes the field names `{prefix}client-id`, `{prefix}scopes` and
    /// `{prefix}interaction` (field names are case-insensitive; HTTP/2 sends them lowercase).
    ///
    /// # Errors
    ///
    /// When `prefix` is empty, has a character not allowed in a field name, or starts the name
    /// of a hop-by-hop field, a field of [`CONNECTION_PROTECTED`] or a forwarding field.
    pub(crate) fn new(prefix: &str) -> Result<Self, InvalidIdentityPrefix> {
        if prefix.is_empty() {
            return Err(InvalidIdentityPrefix::Empty);
        }
        let name = |suffix: &str| {
            HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes())
                .map_err(|_| InvalidIdentityPrefix::NotAName)
        };
        // The default prefix's names are static: a copy of a map holding them (one per
        // request, `recent.rs`) then counts no reference.
        let (client_id, scopes, interaction) = if prefix.eq_ignore_ascii_case("x-smart-") {
            (
                HeaderName::from_static("x-smart-client-id"),
                HeaderName::from_static("x-smart-scopes"),
                HeaderName::from_static("x-smart-interaction"),
            )
        } else {
            (name("client-id")?, name("scopes")?, name("interaction")?)
        };
        let (hop, overrides, removed, set) = (
            HOP_BY_HOP,
            METHOD_OVERRIDES,
            FORWARDING_REMOVED,
            FORWARDING_SET,
        );
        let mut reserved = hop
            .iter()
            .chain(&overrides)
            .chain(&removed)
            .chain(&set)
            .map(HeaderName::as_str)
            .chain(CONNECTION_PROTECTED);
        if let Some(matched) = reserved.find(|name| starts_with_ignore_case(name, prefix)) {
            return Err(InvalidIdentityPrefix::Matches(matched.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_ascii_lowercase(),
            client_id,
            scopes,
            interaction,
        })
    }

    /// The prefix, lowercase: [`RequestFields`] drops every field whose name starts with it.
    pub(crate) fn as_str(&self) -> &str {
        &self.prefix
    }
}

/// Who the guard found the caller to be, and what it allowed: sent to the upstream as
/// `{prefix}client-id`, `{prefix}scopes` and `{prefix}interaction` (the tests' way to call
/// [`RequestFields::prepare`]).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity<'a> {
    /// The token's client id and scopes, encoded.
    pub(crate) values: &'a IdentityValues,
    /// The FHIR interaction the guard authorized (such as `read` or `search-type`).
    pub(crate) interaction: &'static str,
}

/// Where the clients reach the proxy, for the forwarding fields: what [`RequestFields`] writes
/// besides the client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Forwarding<'a> {
    /// The scheme the clients use: `http` or `https`.
    pub(crate) proto: &'a str,
    /// The public `host[:port]`.
    pub(crate) host: Option<&'a str>,
}

/// `Forwarded` and `X-Forwarded-For` for one client: [`RequestFields::peer`].
#[derive(Clone, Debug)]
pub(crate) struct PeerFields {
    forwarded: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
}

/// What the proxy does to a request's fields, in one pass: the hop-by-hop fields, method
/// overrides, forged identity and forwarding fields and `_` names removed; the identity,
/// forwarding and `Host` fields set. Made once from the settings, with the values that do not
/// change from one request to the next already encoded.
///
/// Nothing the client sent can remove or override what the proxy sets: every field it sets is
/// removed first.
#[derive(Clone, Debug)]
pub(crate) struct RequestFields {
    prefix: IdentityPrefix,
    forward_authorization: bool,
    /// `Host` for an HTTP/1.1 upstream; `None`: the client's is removed and the HTTP client
    /// sets it from the URI (`:authority` on HTTP/2).
    host: Option<HeaderValue>,
    /// `X-Forwarded-Proto`, when the proto is a URI scheme.
    proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`, when the host is a `host[:port]`.
    forwarded_host: Option<HeaderValue>,
    /// What follows `for=…` in `Forwarded`: `;proto=…;host=…`.
    forwarded_rest: String,
}

impl RequestFields {
    /// The plan for requests to an upstream whose `Host` is `upstream_host` (`None` to leave
    /// it to the HTTP client), from clients that reach the proxy at `forwarding`.
    ///
    /// A proto that is not a URI scheme, or a host that is not a `host[:port]` (only letters,
    /// digits, `-._~:[]%`), is left out of both `Forwarded` and its `X-Forwarded-*` field
    /// rather than make either unreadable. A host is quoted in `Forwarded` when it is not a
    /// token (`host="example.org:8443"`).
    pub(crate) fn new(
        prefix: IdentityPrefix,
        forward_authorization: bool,
        upstream_host: Option<&str>,
        forwarding: &Forwarding<'_>,
    ) -> Self {
        let proto = Some(forwarding.proto).filter(|proto| is_scheme(proto));
        let host = forwarding.host.filter(|host| is_host(host));
        let mut forwarded_rest = String::new();
        if let Some(proto) = proto {
            forwarded_rest.push_str(";proto=");
            forwarded_rest.push_str(proto);
        }
        if let Some(host) = host {
            if host.bytes().all(is_tchar) {
                forwarded_rest.push_str(";host=");
                forwarded_rest.push_str(host);
            } else {
                forwarded_rest.push_str(";host=\"");
                forwarded_rest.push_str(host);
                forwarded_rest.push('"');
            }
        }
        // Each value is visible ASCII: a scheme, or a host checked by `is_host`.
        let value = |v: &str| HeaderValue::from_str(v).ok();
        // The usual schemes static, as the default prefix's names are.
        let scheme = |v: &str| match v {
            "https" => Some(HeaderValue::from_static("https")),
            "http" => Some(HeaderValue::from_static("http")),
            other => value(other),
        };
        Self {
            prefix,
            forward_authorization,
            host: upstream_host.and_then(value),
            proto: proto.and_then(scheme),
            forwarded_host: host.and_then(value),
            forwarded_rest,
        }
    }

    /// The forwarding values for requests from `peer`: made once per client connection.
    ///
    /// The peer is written in its canonical form (an IPv4-mapped IPv6 address as IPv4); an IPv6
    /// address is bracketed and quoted in `Forwarded` (`for="[2001:db8::1]"`, RFC 7239 §6).
    pub(crate) fn peer(&self, peer: IpAddr) -> PeerFields {
        let peer = peer.to_canonical();
        let mut forwarded_for = String::with_capacity(40);
        push_ip(&mut forwarded_for, peer);
        let mut forwarded = String::with_capacity(48 + self.forwarded_rest.len());
        forwarded.push_str("for=");
        if peer.is_ipv6() {
            forwarded.push_str("\"[");
            forwarded.push_str(&forwarded_for);
            forwarded.push_str("]\"");
        } else {
            forwarded.push_str(&forwarded_for);
        }
        forwarded.push_str(&self.forwarded_rest);
        // Visible ASCII: an address, then the checked rest.
        let value = |text: String| HeaderValue::from_maybe_shared(Bytes::from(text)).ok();
        PeerFields {
            forwarded: value(forwarded),
            forwarded_for: value(forwarded_for),
        }
    }

    /// Prepares `headers` of a request from `peer` for the upstream, with the `identity` the
    /// guard verified (`None`: no identity fields are sent): [`Self::set_fields`], then
    /// [`Self::prepare_with`], in one call for the tests.
    ///
    /// # Errors
    ///
    /// As [`Self::prepare_with`].
    #[cfg(test)]
    pub(crate) fn prepare(
        &self,
        headers: &mut HeaderMap,
        identity: Option<&Identity<'_>>,
        peer: &PeerFields,
    ) -> Result<(), HopByHopError> {
        let set = self.set_fields(identity.map(|identity| identity.values), peer);
        match identity {
            Some(identity) => {
                self.prepare_with(headers, &self.with_interaction(&set, identity.interaction))
            }
            None => self.prepare_with(headers, &set),
        }
    }

    /// The fields the proxy sets on every request of one client with one token: the identity
    /// (`values`: client id and scopes; `None`: no identity fields), `Forwarded`,
    /// `X-Forwarded-*` and `Host`. Made once per client connection and token; each request
    /// starts from a copy ([`Self::prepare_with`]).
    pub(crate) fn set_fields(
        &self,
        values: Option<&IdentityValues>,
        peer: &PeerFields,
    ) -> HeaderMap {
        let mut set = HeaderMap::with_capacity(16);
        if let Some(values) = values {
            if let Some(client_id) = &values.client_id {
                set.insert(self.prefix.client_id.clone(), client_id.clone());
            }
            set.insert(self.prefix.scopes.clone(), values.scopes.clone());
        }
        if let Some(forwarded) = &peer.forwarded {
            set.insert(header::FORWARDED, forwarded.clone());
        }
        if let Some(forwarded_for) = &peer.forwarded_for {
            set.insert(X_FORWARDED_FOR, forwarded_for.clone());
        }
        if let Some(proto) = &self.proto {
            set.insert(X_FORWARDED_PROTO, proto.clone());
        }
        if let Some(host) = &self.forwarded_host {
            set.insert(X_FORWARDED_HOST, host.clone());
        }
        if let Some(host) = &self.host {
            set.insert(header::HOST, host.clone());
        }
        set
    }

    /// `set` ([`Self::set_fields`]) with the `interaction` field.
    pub(crate) fn with_interaction(&self, set: &HeaderMap, interaction: &'static str) -> HeaderMap {
        let mut set = set.clone();
        set.insert(
            self.prefix.interaction.clone(),
            interaction_value(interaction),
        );
        set
    }

    /// Replaces `headers` by a copy of `set` ([`Self::set_fields`], with the interaction's field:
    /// [`Self::with_interaction`]) and the client's fields that cross. Copying the set fields
    /// costs no hashing, where setting them one by one would hash every name.
    ///
    /// # Errors
    ///
    /// When a `Connection` header names a field of [`CONNECTION_PROTECTED`], or holds something
    /// other than field names; `headers` is then left unchanged.
    pub(crate) fn prepare_with(
        &self,
        headers: &mut HeaderMap,
        set: &HeaderMap,
    ) -> Result<(), HopByHopError> {
        let named = if headers.contains_key(header::CONNECTION) {
            connection_named(headers)?
        } else {
            Vec::new()
        };
        let mut out = set.clone();
        out.reserve(headers.len() + 1);
        // A name comes once, with its first value; `None` stands for it before each further one.
        let mut fields = std::mem::take(headers).into_iter().peekable();
        while let Some((name, value)) = fields.next() {
            // A further value of a field that does not cross.
            let Some(name) = name else { continue };
            if self.drops(&name, &named) {
                continue;
            }
            // Never one of the set fields (they are all dropped): a new entry.
            let mut entry = match out.entry(name) {
                http::header::Entry::Occupied(mut entry) => {
                    entry.append(value);
                    entry
                }
                http::header::Entry::Vacant(entry) => entry.insert_entry(value),
            };
            while let Some((None, _)) = fields.peek() {
                if let Some((_, more)) = fields.next() {
                    entry.append(more);
                }
            }
        }
        *headers = out;
        Ok(())
    }

    /// Whether the field `name` does not cross: a hop-by-hop field or one `Connection`
    /// (`named`) names, a method override, a forwarding field, a name with `_` or the identity
    /// prefix, `Expect` (hyper answers it), `Accept-Encoding` (an identity body is what can be
    /// rewritten), `Host` (the proxy sets the upstream's, or the HTTP client does),
    /// `Authorization` when not forwarded.
    pub(crate) fn drops(&self, name: &HeaderName, named: &[HeaderName]) -> bool {
        let text = name.as_str();
        // The names of `METHOD_OVERRIDES`, `FORWARDING_SET` and `FORWARDING_REMOVED` (a test
        // checks that they are all here), matched as `is_hop_by_hop` does.
        let fixed = is_hop_by_hop(text.as_bytes())
            || matches!(
                text,
                "x-http-method-override"
                    | "x-http-method"
                    | "x-method-override"
                    | "forwarded"
                    | "x-forwarded-for"
                    | "x-forwarded-proto"
                    | "x-forwarded-host"
                    | "x-forwarded-port"
                    | "x-forwarded-prefix"
                    | "x-forwarded-server"
                    | "x-real-ip"
                    | "expect"
                    | "accept-encoding"
            );
        fixed
            || name == header::HOST
            || (name == header::AUTHORIZATION && !self.forward_authorization)
            // CGI-style servers (PHP, WSGI, Rack) read `X_Smart_Client_Id` and
            // `X-Smart-Client-Id` as the same variable, so an underscore spelling would get
            // past every list here; nginx drops such fields by default for the same reason.
            || text.contains('_')
            // Names are lowercase, and so is the prefix.
            || text.starts_with(self.prefix.as_str())
            || named.contains(name)
    }
}

/// An interaction's name (such as `read`: a token) as a field value.
fn interaction_value(interaction: &'static str) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from_static(interaction.as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends `ip` as text: IPv4 by hand (the formatting machinery costs more than the rest of
/// the forwarding fields), IPv6 by its `Display`.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A URI scheme (RFC 3986 §3.1): a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(proto: &str) -> bool {
    let mut bytes = proto.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// A non-empty `host[:port]` in the characters a host, an IP literal and a port use: nothing
/// that would need escaping in a quoted string, nor a `,` or `;` that would split a list.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'[' | b']' | b'%')
        })
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// (name, value bytes) pairs.
    type Fields<'a> = &'a [(&'a str, &'a [u8])];

    /// (peer, proto, host, Forwarded, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host)
    type ForwardingCase<'a> = (
        IpAddr,
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );

    /// A header map from (name, value bytes) pairs, in order, repeated names appended.
    fn map(fields: Fields<'_>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    /// The names left in `headers`, lowercase, sorted.
    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The plan with the identity prefix `prefix`, `Authorization` forwarded, `Host` left to
    /// the HTTP client, clients at `https://fhir.example.org`.
    fn plan(prefix: &str) -> RequestFields {
        RequestFields::new(
            IdentityPrefix::new(prefix).unwrap(),
            true,
            None,
            &Forwarding {
                proto: "https",
                host: Some("fhir.example.org"),
            },
        )
    }

    /// Prepares `headers` with `plan("x-smart-")`, no identity, from 192.0.2.1.
    fn prepare(headers: &mut HeaderMap) -> Result<(), HopByHopError> {
        let plan = plan("x-smart-");
        plan.prepare(headers, None, &plan.peer(IpAddr::from([192, 0, 2, 1])))
    }

    /// The names left in `headers` but the forwarding fields the proxy sets, sorted.
    fn sent_names(headers: &HeaderMap) -> Vec<&str> {
        let mut names = names(headers);
        names.retain(|name| !FORWARDING_SET.iter().any(|set| set == name));
        names
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let cases: &[(&str, Fields<'_>, &[&str])] = &[
            (
                "no Connection",
                &[("accept", b"*/*"), ("te", b"trailers")],
                &["accept"],
            ),
            (
                "every fixed hop-by-hop field",
                &[
                    ("Connection", b"close"),
                    ("Keep-Alive", b"timeout=5"),
                    ("Proxy-Connection", b"keep-alive"),
                    ("Proxy-Authenticate", b"Basic"),
                    ("Proxy-Authorization", b"Basic eA=="),
                    ("TE", b"trailers"),
                    ("Trailer", b"x-checksum"),
                    ("Transfer-Encoding", b"chunked"),
                    ("Upgrade", b"h2c"),
                    ("accept", b"*/*"),
                ],
                &["accept"],
            ),
            (
                "close, keep-alive names no other field",
                &[
                    ("connection", b"close, keep-alive"),
                    ("keep-alive", b"5"),
                    ("accept", b"x"),
                ],
                &["accept"],
            ),
            (
                "a named field goes",
                &[
                    ("connection", b"x-private"),
                    ("x-private", b"1"),
                    ("accept", b"x"),
                ],
                &["accept"],
            ),
            (
                "mixed case and whitespace around tokens",
                &[
                    ("connection", b" X-One ,\tx-TWO,, ,x-three  "),
                    ("x-one", b"1"),
                    ("x-two", b"2"),
                    ("x-three", b"3"),
                    ("x-four", b"4"),
                ],
                &["x-four"],
            ),
            (
                "several Connection headers all count",
                &[
                    ("connection", b"x-one"),
                    ("connection", b"x-two, upgrade"),
                    ("x-one", b"1"),
                    ("x-two", b"2"),
                    ("upgrade", b"websocket"),
                    ("accept", b"x"),
                ],
                &["accept"],
            ),
            (
                "every value of a repeated named field goes",
                &[
                    ("connection", b"x-one"),
                    ("x-one", b"1"),
                    ("x-one", b"2"),
                    ("accept", b"x"),
                ],
                &["accept"],
            ),
            (
                "hop-by-hop names listed again",
                &[
                    ("connection", b"TE, Trailer, Upgrade"),
                    ("te", b"trailers"),
                    ("accept", b"x"),
                ],
                &["accept"],
            ),
            (
                "a named field that is absent",
                &[("connection", b"x-absent"), ("accept", b"x")],
                &["accept"],
            ),
            (
                "an empty Connection",
                &[("connection", b""), ("accept", b"x")],
                &["accept"],
            ),
        ];
        for (case, fields, left) in cases {
            let mut headers = map(fields);
            assert_eq!(prepare(&mut headers), Ok(()), "{case}");
            assert_eq!(sent_names(&headers), *left, "{case}");
            let mut headers = map(fields);
            strip_hop_by_hop_response(&mut headers);
            assert_eq!(names(&headers), *left, "response: {case}");
        }
    }

    #[test]
    fn a_stripped_response_tells_whether_it_has_urls_to_rewrite() {
        let cases: &[(Fields<'_>, bool)] = &[
            (
                &[("connection", b"keep-alive"), ("content-type", b"x")],
                false,
            ),
            (&[("Connection", b"Close"), ("keep-alive", b"5")], false),
            (
                &[
                    ("location", b"http://u/fhir/Patient/1"),
                    ("connection", b"close"),
                ],
                true,
            ),
            (
                &[("content-location", b"http://u/fhir/Patient/1/_history/2")],
                true,
            ),
        ];
        for (fields, urls) in cases {
            let mut headers = map(fields);
            assert_eq!(
                strip_hop_by_hop_response(&mut headers).urls,
                *urls,
                "{fields:?}"
            );
            assert!(
                !headers.contains_key("connection") && !headers.contains_key("keep-alive"),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn connection_naming_a_field_the_guard_decides_on_is_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"authorization", "authorization"),
            (b"Authorization", "authorization"),
            (b"close, AUTHORIZATION", "authorization"),
            (b"content-type", "content-type"),
            (b"Content-Encoding", "content-encoding"),
            (b"content-length", "content-length"),
            (b"host", "host"),
            (b"If-None-Exist", "if-none-exist"),
            (b"x-cascade", "x-cascade"),
            (b"if-match", "if-match"),
            (b"if-none-match", "if-none-match"),
            (b"if-modified-since", "if-modified-since"),
            (b"if-unmodified-since", "if-unmodified-since"),
            (b" prefer ", "prefer"),
        ];
        for (connection, refused) in cases {
            let fields: &[(&str, &[u8])] = &[
                ("connection", connection),
                ("authorization", b"Bearer t"),
                ("te", b"trailers"),
            ];
            let mut headers = map(fields);
            let err = prepare(&mut headers).unwrap_err();
            assert_eq!(
                err,
                HopByHopError::Protected(HeaderName::from_static(refused)),
                "{connection:?}"
            );
            assert_eq!(headers, map(fields), "unchanged on Err: {connection:?}");
            // A response names what it likes.
            let mut headers = map(fields);
            strip_hop_by_hop_response(&mut headers);
            assert!(
                !headers.contains_key(*refused) && !headers.contains_key("te"),
                "{connection:?}"
            );
        }
    }

    #[test]
    fn a_refused_name_in_a_second_connection_header_is_refused_too() {
        let mut headers = map(&[
            ("connection", b"close"),
            ("connection", b"x-a, authorization"),
        ]);
        assert_eq!(
            prepare(&mut headers),
            Err(HopByHopError::Protected(header::AUTHORIZATION))
        );
    }

    #[test]
    fn connection_tokens_that_are_not_field_names_are_unreadable() {
        let cases: &[&[u8]] = &[
            b"x one",
            b"x-a, b/c",
            b"\"quoted\"",
            b"caf\xc3\xa9",
            b"x\xff",
            b"a;b",
        ];
        for connection in cases {
            let fields: &[(&str, &[u8])] = &[("connection", connection), ("x-a", b"1")];
            let mut headers = map(fields);
            assert_eq!(
                prepare(&mut headers),
                Err(HopByHopError::Unreadable),
                "{connection:?}"
            );
            assert_eq!(headers, map(fields), "unchanged on Err: {connection:?}");
            let mut headers = map(fields);
            strip_hop_by_hop_response(&mut headers);
            assert!(
                !headers.contains_key("connection"),
                "response: {connection:?}"
            );
        }
    }

    #[test]
    fn the_refusal_list_is_lowercase_and_of_valid_names() {
        for name in CONNECTION_PROTECTED {
            assert_eq!(
                HeaderName::from_bytes(name.as_bytes()).unwrap().as_str(),
                name
            );
        }
    }

    #[test]
    fn method_overrides_are_removed() {
        let mut headers = map(&[
            ("X-HTTP-Method-Override", b"DELETE"),
            ("x-http-method", b"DELETE"),
            ("X-Method-Override", b"PUT"),
            ("x-http-method-override", b"PATCH"),
            ("accept", b"x"),
        ]);
        prepare(&mut headers).unwrap();
        assert_eq!(sent_names(&headers), ["accept"]);
    }

    #[test]
    fn prefixed_fields_are_removed_whatever_their_spelling() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "x-smart-",
                &[
                    "X-Smart-Client-Id",
                    "x-smart-scopes",
                    "X-SMART-INTERACTION",
                    "x-SmArT-other",
                    "accept",
                ],
                &["accept"],
            ),
            (
                "X-SMART-",
                &["x-smart-client-id", "x-smartness", "x-smart"],
                &["x-smart", "x-smartness"],
            ),
            ("x-smart-", &["x-smart-", "x-smart-client-id-2"], &[]),
            (
                "x-smart-",
                &["authorization", "x-smar", "x-other"],
                &["authorization", "x-other", "x-smar"],
            ),
        ];
        for (prefix, present, left) in cases {
            let mut headers = HeaderMap::new();
            for name in *present {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("forged"),
                );
            }
            let plan = plan(prefix);
            let peer = plan.peer(IpAddr::from([192, 0, 2, 1]));
            plan.prepare(&mut headers, None, &peer).unwrap();
            assert_eq!(sent_names(&headers), *left, "{prefix} {present:?}");
        }
    }

    #[test]
    fn identity_prefixes_are_checked() {
        for (prefix, ok) in [
            ("x-smart-", true),
            ("X-Smart-", true),
            ("smart-guard-", true),
            ("", false),
            ("x smart-", false),
            ("x-smart:", false),
            ("x-smart-\u{e9}", false),
            ("a", false),
            ("content-", false),
            ("x-forwarded-", false),
            ("x-http-", false),
            ("Prefer", false),
            ("te", false),
        ] {
            assert_eq!(IdentityPrefix::new(prefix).is_ok(), ok, "{prefix:?}");
        }
        assert_eq!(
            IdentityPrefix::new("X-Smart-").unwrap().as_str(),
            "x-smart-"
        );
        assert_eq!(
            IdentityPrefix::new("authoriz"),
            Err(InvalidIdentityPrefix::Matches("authorization".to_owned()))
        );
    }

    #[test]
    fn identity_fields_are_set_and_replace_forged_ones() {
        let mut headers = map(&[
            ("x-smart-client-id", b"forged"),
            ("x-smart-scopes", b"system/*.*"),
            ("X-Smart-Tenant", b"forged"),
        ]);
        let values = IdentityValues::new(Some("app-1"), "system/Patient.rs system/Observation.r");
        let identity = Identity {
            values: &values,
            interaction: "search-type",
        };
        let fields = plan("x-smart-");
        let peer = fields.peer(IpAddr::from([192, 0, 2, 1]));
        fields
            .prepare(&mut headers, Some(&identity), &peer)
            .unwrap();
        assert_eq!(
            sent_names(&headers),
            ["x-smart-client-id", "x-smart-interaction", "x-smart-scopes"]
        );
        assert_eq!(headers["x-smart-client-id"], "app-1");
        assert_eq!(
            headers["x-smart-scopes"],
            "system/Patient.rs system/Observation.r"
        );
        assert_eq!(headers["x-smart-interaction"], "search-type");

        let no_client = IdentityValues::new(None, "system/Patient.rs system/Observation.r");
        let anonymous = Identity {
            values: &no_client,
            ..identity
        };
        fields
            .prepare(&mut headers, Some(&anonymous), &peer)
            .unwrap();
        assert_eq!(
            sent_names(&headers),
            ["x-smart-interaction", "x-smart-scopes"],
            "no client id, no field"
        );
        fields.prepare(&mut headers, None, &peer).unwrap();
        assert_eq!(
            sent_names(&headers),
            [] as [&str; 0],
            "no identity, no fields"
        );
    }

    #[test]
    fn identity_values_outside_visible_ascii_are_percent_encoded() {
        let cases = [
            ("app-1", "app-1"),
            ("", ""),
            ("a b", "a b"),
            (" lead", "%20lead"),
            ("trail ", "trail%20"),
            (" ", "%20"),
            ("100%", "100%25"),
            ("%41", "%2541"),
            (
                "line\r\nX-Smart-Scopes: system/*.*",
                "line%0D%0AX-Smart-Scopes: system/*.*",
            ),
            ("nul\0", "nul%00"),
            ("tab\t", "tab%09"),
            ("del\u{7f}", "del%7F"),
            ("caf\u{e9}", "caf%C3%A9"),
            ("\u{1F600}", "%F0%9F%98%80"),
            ("\"quoted\";,=", "\"quoted\";,="),
        ];
        let fields = plan("x-smart-");
        for (value, sent) in cases {
            let mut headers = HeaderMap::new();
            let values = IdentityValues::new(Some(value), value);
            let identity = Identity {
                values: &values,
                interaction: "read",
            };
            let peer = fields.peer(IpAddr::from([192, 0, 2, 1]));
            fields
                .prepare(&mut headers, Some(&identity), &peer)
                .unwrap();
            for name in ["x-smart-client-id", "x-smart-scopes"] {
                assert_eq!(
                    headers[name].as_bytes(),
                    sent.as_bytes(),
                    "{value:?} in {name}"
                );
            }
            let decoded = percent_encoding::percent_decode(sent.as_bytes())
                .decode_utf8()
                .unwrap();
            assert_eq!(decoded, value, "{value:?} decodes back");
        }
    }

    #[test]
    fn forwarding_fields_are_replaced_with_the_proxys() {
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 43));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 43).to_ipv6_mapped());
        let cases: &[ForwardingCase<'_>] = &[
            (
                v4,
                "https",
                Some("fhir.example.org"),
                "for=192.0.2.43;proto=https;host=fhir.example.org",
                "192.0.2.43",
                Some("https"),
                Some("fhir.example.org"),
            ),
            (
                v6,
                "http",
                Some("fhir.example.org"),
                "for=\"[2001:db8::1]\";proto=http;host=fhir.example.org",
                "2001:db8::1",
                Some("http"),
                Some("fhir.example.org"),
            ),
            (
                mapped,
                "https",
                None,
                "for=192.0.2.43;proto=https",
                "192.0.2.43",
                Some("https"),
                None,
            ),
            (
                v4,
                "https",
                Some("fhir.example.org:8443"),
                "for=192.0.2.43;proto=https;host=\"fhir.example.org:8443\"",
                "192.0.2.43",
                Some("https"),
                Some("fhir.example.org:8443"),
            ),
            (
                v4,
                "https",
                Some("[2001:db8::2]:8443"),
                "for=192.0.2.43;proto=https;host=\"[2001:db8::2]:8443\"",
                "192.0.2.43",
                Some("https"),
                Some("[2001:db8::2]:8443"),
            ),
            (
                v4,
                "https",
                Some("evil\", for=1.2.3.4"),
                "for=192.0.2.43;proto=https",
                "192.0.2.43",
                Some("https"),
                None,
            ),
            (
                v4,
                "https",
                Some("a;for=1.2.3.4"),
                "for=192.0.2.43;proto=https",
                "192.0.2.43",
                Some("https"),
                None,
            ),
            (
                v4,
                "https",
                Some("a,b"),
                "for=192.0.2.43;proto=https",
                "192.0.2.43",
                Some("https"),
                None,
            ),
            (
                v4,
                "https",
                Some(""),
                "for=192.0.2.43;proto=https",
                "192.0.2.43",
                Some("https"),
                None,
            ),
            (
                v4,
                "https",
                Some("h\u{e9}.example"),
                "for=192.0.2.43;proto=https",
                "192.0.2.43",
                Some("https"),
                None,
            ),
            (
                v4,
                "ht tp",
                Some("h"),
                "for=192.0.2.43;host=h",
                "192.0.2.43",
                None,
                Some("h"),
            ),
            (
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                "http",
                None,
                "for=\"[::1]\";proto=http",
                "::1",
                Some("http"),
                None,
            ),
        ];
        for &(peer, proto, host, forwarded, xff, xfp, xfh) in cases {
            let mut headers = map(&[
                ("forwarded", b"for=10.0.0.1;host=evil"),
                ("forwarded", b"for=10.0.0.2"),
                ("x-forwarded-for", b"10.0.0.1, 10.0.0.2"),
                ("X-Forwarded-Proto", b"https"),
                ("x-forwarded-host", b"evil"),
                ("x-forwarded-port", b"443"),
                ("x-forwarded-prefix", b"/evil"),
                ("x-real-ip", b"10.0.0.1"),
                ("accept", b"x"),
            ]);
            let fields = RequestFields::new(
                IdentityPrefix::new("x-smart-").unwrap(),
                true,
                None,
                &Forwarding { proto, host },
            );
            fields
                .prepare(&mut headers, None, &fields.peer(peer))
                .unwrap();
            let case = format!("{peer} {proto} {host:?}");
            let all = |name: &str| -> Vec<&str> {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect()
            };
            assert_eq!(all("forwarded"), [forwarded], "{case}");
            assert_eq!(all("x-forwarded-for"), [xff], "{case}");
            assert_eq!(
                all("x-forwarded-proto"),
                xfp.into_iter().collect::<Vec<_>>(),
                "{case}"
            );
            assert_eq!(
                all("x-forwarded-host"),
                xfh.into_iter().collect::<Vec<_>>(),
                "{case}"
            );
            for gone in ["x-forwarded-port", "x-forwarded-prefix", "x-real-ip"] {
                assert!(!headers.contains_key(gone), "{case}: {gone}");
            }
            assert_eq!(headers["accept"], "x", "{case}");
        }
    }

    #[test]
    fn error_messages_are_lowercase_without_a_period() {
        for message in [
            HopByHopError::Protected(header::AUTHORIZATION).to_string(),
            HopByHopError::Unreadable.to_string(),
            InvalidIdentityPrefix::Empty.to_string(),
            InvalidIdentityPrefix::Matches("te".to_owned()).to_string(),
        ] {
            assert!(
                message.starts_with(char::is_lowercase) && !message.ends_with('.'),
                "{message}"
            );
        }
    }

    #[test]
    fn fields_with_an_underscore_in_their_name_are_removed() {
        let mut headers = HeaderMap::new();
        for name in [
            "x_smart_client_id",
            "X_HTTP_Method_Override",
            "x_forwarded_prefix",
            "x-ok",
            "accept",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static("x"),
            );
        }
        prepare(&mut headers).unwrap();
        assert_eq!(sent_names(&headers), ["accept", "x-ok"]);
    }

    #[test]
    fn the_fast_matches_cover_every_listed_field() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(
                names_hop_by_hop(name.as_str().to_uppercase().as_bytes()),
                "{name}"
            );
        }
        let fields = plan("x-smart-");
        for name in HOP_BY_HOP
            .iter()
            .chain(&METHOD_OVERRIDES)
            .chain(&FORWARDING_SET)
            .chain(&FORWARDING_REMOVED)
        {
            assert!(fields.drops(name, &[]), "{name}");
        }
        for kept in [
            "accept",
            "authorization",
            "host",
            "if-match",
            "prefer",
            "x-forwarded",
        ] {
            let name = HeaderName::from_static(kept);
            assert!(
                !is_hop_by_hop(kept.as_bytes()) && !names_hop_by_hop(kept.as_bytes()),
                "{kept}"
            );
            assert_eq!(fields.drops(&name, &[]), kept == "host", "{kept}");
        }
    }

    #[test]
    fn host_is_set_for_an_http_upstream_and_authorization_kept_unless_told() {
        let client = || {
            map(&[
                ("host", b"evil.example"),
                ("authorization", b"Bearer t"),
                ("expect", b"100-continue"),
                ("accept-encoding", b"gzip"),
                ("accept", b"x"),
            ])
        };
        let peer = IpAddr::from([192, 0, 2, 1]);
        let forwarding = Forwarding {
            proto: "https",
            host: Some("fhir.example.org"),
        };
        let prefix = IdentityPrefix::new("x-smart-").unwrap();

        let mut headers = client();
        let fields = RequestFields::new(prefix.clone(), true, Some("10.0.0.7:8080"), &forwarding);
        fields
            .prepare(&mut headers, None, &fields.peer(peer))
            .unwrap();
        assert_eq!(sent_names(&headers), ["accept", "authorization", "host"]);
        assert_eq!(headers["host"], "10.0.0.7:8080");
        assert_eq!(headers["authorization"], "Bearer t");

        let mut headers = client();
        let fields = RequestFields::new(prefix, false, None, &forwarding);
        fields
            .prepare(&mut headers, None, &fields.peer(peer))
            .unwrap();
        assert_eq!(sent_names(&headers), ["accept"], "Host left to the client");
    }

    #[test]
    fn http2_cookie_fields_are_joined_into_one() {
        let mut headers = HeaderMap::new();
        for crumb in ["a=1", "b=2", "c=3"] {
            headers.append(header::COOKIE, HeaderValue::from_static(crumb));
        }
        headers.append(header::ACCEPT, HeaderValue::from_static("x"));
        join_cookies(&mut headers);
        let cookies: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
        assert_eq!(headers[header::ACCEPT], "x");
        let mut one = HeaderMap::new();
        one.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one.get_all(header::COOKIE).iter().count(), 1);
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for octets in [
            [0, 0, 0, 0],
            [9, 10, 99, 100],
            [255, 254, 200, 1],
            [127, 0, 0, 1],
        ] {
            let ip = IpAddr::from(octets);
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
        let mut out = String::new();
        push_ip(&mut out, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(out, "::1");
    }
}
