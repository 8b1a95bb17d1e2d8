//! Caller authentication at the introspection and revocation endpoints: resource-server secrets
//! (`client_secret_basic`, `client_secret_post`) and client assertions (`private_key_jwt`, checked
//! by [`AssertionVerifier`](super::assertion::AssertionVerifier)).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use super::error::OAuthErrorResponse;
use super::form::Form;
use super::registry::ResourceServerAuth;
use super::state::Shared;
use crate::client::CLIENT_ASSERTION_TYPE;

/// Who called an introspection or revocation endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A registered resource server (may introspect and revoke any token).
    ResourceServer(String),
    /// A backend-services client (may revoke its own tokens).
    Client(String),
    /// No credentials were presented.
    Anonymous,
}

/// Authenticates the caller of the introspection or revocation endpoint at `endpoint_url`.
///
/// Exactly one method may be used: `client_secret_basic`, `client_secret_post`, or `private_key_jwt`.
/// Presented but wrong credentials are always `invalid_client`.
pub(crate) async fn authenticate_caller(
    shared: &Shared,
    headers: &HeaderMap,
    form: &Form,
    endpoint_url: &str,
    allow_clients: bool,
) -> Result<Caller, OAuthErrorResponse> {
    let authorization = headers.get(http::header::AUTHORIZATION);
    let basic = match authorization {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                OAuthErrorResponse::invalid_client("malformed authorization header")
            })?;
            match v.split_once(' ') {
                Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => Some(creds.trim()),
                _ => {
                    return Err(OAuthErrorResponse::invalid_client(
                        "only basic client authentication is accepted in the header",
                    )
                    .with_basic_challenge());
                }
            }
        }
    };
    let post = form.get("client_secret");
    let jwt = form.get("client_assertion");
    if [basic.is_some(), post.is_some(), jwt.is_some()]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(OAuthErrorResponse::invalid_request(
            "more than one client authentication method",
        ));
    }
    if let Some(creds) = basic {
        let (decoded, raw) = parse_basic(creds).ok_or_else(|| {
            OAuthErrorResponse::invalid_client("malformed basic credentials").with_basic_challenge()
        })?;
        // RFC 6749 §2.3.1 form-encodes id and secret; many clients do not, so accept both forms.
        return check_secret(shared, &decoded.0, &decoded.1)
            .or_else(|_| check_secret(shared, &raw.0, &raw.1))
            .map_err(OAuthErrorResponse::with_basic_challenge);
    }
    if let Some(secret) = post {
        let id = form
            .get("client_id")
            .ok_or_else(|| OAuthErrorResponse::invalid_client("client_id is required"))?;
        return check_secret(shared, id, secret);
    }
    if let Some(jwt) = jwt {
        if form.get("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
            return Err(OAuthErrorResponse::invalid_client(
                "unsupported client_assertion_type",
            ));
        }
        let audiences = [
            shared.urls.issuer.as_str(),
            shared.urls.token.as_str(),
            endpoint_url,
        ];
        let client_id = shared
            .assertions
            .verify(jwt, &audiences, |iss| {
                if let Some(rs) = shared.resource_servers.get(iss) {
                    return match &rs.auth {
                        ResourceServerAuth::PrivateKeyJwt(jwks) => Some(jwks.clone()),
                        ResourceServerAuth::Secret(_) => None,
                    };
                }
                allow_clients
                    .then(|| shared.clients.get(iss).map(|c| c.jwks.clone()))
                    .flatten()
            })
            .await?;
        if form.get("client_id").is_some_and(|id| id != client_id) {
            return Err(OAuthErrorResponse::invalid_client(
                "client_id does not match the assertion",
            ));
        }
        return Ok(if shared.resource_servers.contains_key(&client_id) {
            Caller::ResourceServer(client_id)
        } else {
            Caller::Client(client_id)
        });
    }
    Ok(Caller::Anonymous)
}

fn check_secret(
    shared: &Shared,
    client_id: &str,
    secret: &str,
) -> Result<Caller, OAuthErrorResponse> {
    let presented = blake3::hash(secret.as_bytes());
    match shared.resource_servers.get(client_id).map(|rs| &rs.auth) {
        // blake3::Hash equality is constant-time.
        Some(ResourceServerAuth::Secret(expected)) if *expected == presented => {
            Ok(Caller::ResourceServer(client_id.to_owned()))
        }
        _ => Err(OAuthErrorResponse::invalid_client(
            "resource server authentication failed",
        )),
    }
}

type Credentials = (String, String);

/// `base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1): the form-decoded pair and the
/// raw pair.
fn parse_basic(creds: &str) -> Option<(Credentials, Credentials)> {
    let decoded = String::from_utf8(STANDARD.decode(creds).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| s.to_owned())
    };
    let raw = (id.to_owned(), secret.to_owned());
    (!id.is_empty()).then(|| ((unescape(id), unescape(secret)), raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let creds = STANDARD.encode("fhir%3Aserver:s%20e+c");
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            parse_basic(&creds),
            Some((
                pair("fhir:server", "s e c"),
                pair("fhir%3Aserver", "s%20e+c")
            ))
        );
        let raw = STANDARD.encode("rs:a&b=c:d");
        assert_eq!(
            parse_basic(&raw),
            Some((pair("rs", "a&b=c:d"), pair("rs", "a&b=c:d")))
        );
        assert_eq!(parse_basic("!!"), None);
        assert_eq!(parse_basic(&STANDARD.encode("no-colon")), None);
    }
}
