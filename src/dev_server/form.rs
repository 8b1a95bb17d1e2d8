//! Form bodies: content-type check and RFC 6749 §3.2 "parameters MUST NOT be included more than once".

use std::collections::HashMap;

use http::HeaderMap;

use super::error::OAuthErrorResponse;

/// A parsed `application/x-www-form-urlencoded` body; empty values count as absent (RFC 6749 §3.1).
#[derive(Debug, Default)]
pub(crate) struct Form(HashMap<String, String>);

impl Form {
    pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthErrorResponse> {
        let is_form = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthErrorResponse::invalid_request(
                "content type must be application/x-www-form-urlencoded",
            ));
        }
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if map.insert(name.into_owned(), value.into_owned()).is_some() {
                return Err(OAuthErrorResponse::invalid_request(
                    "a parameter is repeated",
                ));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        h
    }

    #[test]
    fn form_parsing_decodes_and_rejects_repeats_and_other_types() {
        let f = Form::parse(&form_headers(), b"a=x%20y&b=&c=%2F").expect("valid");
        assert_eq!(
            (f.get("a"), f.get("b"), f.get("c")),
            (Some("x y"), None, Some("/"))
        );
        assert!(Form::parse(&form_headers(), b"a=1&a=2").is_err());
        assert!(Form::parse(&HeaderMap::new(), b"a=1").is_err());
    }
}
