//! Hostile requests over loopback HTTP (raw TCP where reqwest would normalize or refuse the
//! request): odd tokens, duplicate and malformed credentials, path tricks, oversized and deeply
//! nested bodies. Each is answered with the documented status, quickly, without a panic and
//! without an introspection call.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smart_guard::{AnalysisLimits, Config};
use support::{MockAs, active, guarded, http, raw_request};

const TOKEN: &str = "valid-token";

/// A label, raw header lines, the expected status and OperationOutcome issue code.
type Case<'a> = (&'a str, Vec<&'a [u8]>, u16, Option<&'a str>);

/// Every request here must be answered well within this.
const QUICK: Duration = Duration::from_secs(1);

async fn setup(config: impl FnOnce(Config) -> Config) -> (MockAs, String) {
    let auth = MockAs::start().await;
    auth.answer(TOKEN, active("system/*.cruds"));
    let (base, task) = guarded(config(auth.config())).await;
    std::mem::forget(task); // the server lives as long as the test's runtime
    (auth, base)
}

/// `GET /fhir/Patient/1` with these raw header lines.
fn get_with(base: &str, headers: &[&[u8]]) -> Vec<u8> {
    let host = base.strip_prefix("http://").expect("http base");
    let mut request = format!("GET /fhir/Patient/1 HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for header in headers {
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request
}

/// The OperationOutcome issue code of a raw response, if it has one.
fn issue_code(raw: &str) -> Option<String> {
    let body = raw.split_once("\r\n\r\n")?.1;
    let json: Value = serde_json::from_str(body).ok()?;
    json["issue"][0]["code"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn hostile_credentials_are_refused_without_introspection() {
    let (auth, base) = setup(|c| c).await;
    let long = format!("Authorization: Bearer {}", "a".repeat(8 * 1024 + 1));
    let at_limit = format!("Authorization: Bearer {}", "a".repeat(8 * 1024));
    let cases: Vec<Case<'_>> = vec![
        ("8 KiB + 1", vec![long.as_bytes()], 400, Some("invalid")),
        (
            "non-ASCII token",
            vec!["Authorization: Bearer t\u{f6}ken".as_bytes()],
            400,
            Some("invalid"),
        ),
        (
            "Latin-1 byte",
            vec![b"Authorization: Bearer tok\xffen"],
            400,
            Some("invalid"),
        ),
        // hyper refuses a NUL in a header itself: 400 before the guard runs.
        (
            "NUL byte",
            vec![b"Authorization: Bearer tok\0en"],
            400,
            None,
        ),
        (
            "tab inside the token",
            vec![b"Authorization: Bearer tok\ten"],
            400,
            Some("invalid"),
        ),
        // A tab is not the SP the grammar wants: not a Bearer credential at all.
        (
            "tab after the scheme",
            vec![b"Authorization: Bearer\tvalid-token"],
            401,
            Some("login"),
        ),
        (
            "two headers",
            vec![
                b"Authorization: Bearer valid-token",
                b"Authorization: Bearer valid-token",
            ],
            400,
            Some("invalid"),
        ),
        (
            "two spaces",
            vec![b"Authorization: Bearer  valid-token"],
            400,
            Some("invalid"),
        ),
        (
            "five spaces",
            vec![b"Authorization: Bearer     valid-token"],
            400,
            Some("invalid"),
        ),
        (
            "comma list",
            vec![b"Authorization: Bearer a, Bearer b"],
            400,
            Some("invalid"),
        ),
        (
            "empty token",
            vec![b"Authorization: Bearer "],
            400,
            Some("invalid"),
        ),
        (
            "scheme only",
            vec![b"Authorization: Bearer"],
            400,
            Some("invalid"),
        ),
        ("no header", vec![], 401, Some("login")),
        (
            "another scheme",
            vec![b"Authorization: Basic dTpw"],
            401,
            Some("login"),
        ),
        (
            "padding in the middle",
            vec![b"Authorization: Bearer ab=cd"],
            400,
            Some("invalid"),
        ),
        (
            "quote",
            vec![b"Authorization: Bearer \"valid-token\""],
            400,
            Some("invalid"),
        ),
    ];
    for (label, headers, status, code) in cases {
        let started = Instant::now();
        let (got, raw) = raw_request(&base, &get_with(&base, &headers)).await;
        assert!(started.elapsed() < QUICK, "{label}: slow");
        assert_eq!(got, status, "{label}: {raw}");
        assert_eq!(issue_code(&raw).as_deref(), code, "{label}: {raw}");
        assert!(!raw.contains(TOKEN), "{label}: the token is never echoed");
    }
    assert_eq!(auth.calls(), 0);
    // The limit itself is fine (the AS is asked, and says no: unknown token).
    let (got, _) = raw_request(&base, &get_with(&base, &[at_limit.as_bytes()])).await;
    assert_eq!(got, 401);
    assert_eq!(auth.calls(), 1);
}

/// The cache-hit path skips the alphabet check of a token whose digest is cached (it passed the
/// check when first seen); every other token still gets it, however warm the cache.
#[tokio::test]
async fn malformed_tokens_are_refused_while_the_cache_is_warm() {
    let (auth, base) = setup(|c| c).await;
    let valid: &[u8] = b"Authorization: Bearer valid-token";
    for _ in 0..2 {
        let (got, raw) = raw_request(&base, &get_with(&base, &[valid])).await;
        assert_eq!(got, 200, "{raw}");
    }
    assert_eq!(auth.calls(), 1, "warm");
    for header in [
        &b"Authorization: Bearer valid-token!"[..],
        b"Authorization: Bearer \"valid-token\"",
        b"Authorization: Bearer valid-token=x",
        b"Authorization: Bearer valid,token",
        b"Authorization: Bearer valid-t\xf6ken",
    ] {
        let (got, raw) = raw_request(&base, &get_with(&base, &[header])).await;
        assert_eq!(got, 400, "{}: {raw}", String::from_utf8_lossy(header));
        assert_eq!(issue_code(&raw).as_deref(), Some("invalid"), "{raw}");
    }
    let query = get_with(&base, &[valid]);
    let query = String::from_utf8(query).expect("ascii").replacen(
        "/fhir/Patient/1",
        "/fhir/Patient/1?access_token=x",
        1,
    );
    let (got, raw) = raw_request(&base, query.as_bytes()).await;
    assert_eq!(
        got, 400,
        "a query token next to a cached header token: {raw}"
    );
    assert_eq!(auth.calls(), 1, "no malformed token reached the AS");
}

#[tokio::test]
async fn a_token_in_the_query_or_body_next_to_the_header_is_400() {
    let (auth, base) = setup(|c| c).await;
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let host = base.strip_prefix("http://").expect("base");
    for path in [
        format!("/fhir/Patient/1?access_token={TOKEN}"),
        format!("/fhir/Patient?name=x&access_token={TOKEN}"),
        "/fhir/Patient?access%5Ftoken=x".to_owned(),
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{bearer}\r\nConnection: close\r\n\r\n");
        let (status, raw) = raw_request(&base, request.as_bytes()).await;
        assert_eq!(status, 400, "{path}: {raw}");
        assert_eq!(issue_code(&raw).as_deref(), Some("invalid"));
    }
    // The query method alone is not supported: no credentials at all.
    let (status, _) = support::raw_get(&base, "/fhir/Patient/1?access_token=x", "").await;
    assert_eq!(
        status, 400,
        "`Bearer ` with an empty token and a query token"
    );
    let response = http()
        .get(format!("{base}/fhir/Patient/1?access_token={TOKEN}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    let body = format!("name=x&access_token={TOKEN}");
    let request = format!(
        "POST /fhir/Patient/_search HTTP/1.1\r\nHost: {host}\r\n{bearer}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The query is read with the headers, before the token is looked up; a body only once the
    // token is known to be active, so this one costs the one introspection call.
    assert_eq!(auth.calls(), 0);
    let (status, _) = raw_request(&base, request.as_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn odd_paths_are_refused_before_introspection() {
    let (auth, base) = setup(|c| c).await;
    let long_id = "a".repeat(65);
    let ok_id = "a".repeat(64);
    let cases: Vec<(String, u16)> = vec![
        ("/fhir/Patient/%2e%2e/Observation/1".into(), 400),
        ("/fhir/Patient/%2E%2E".into(), 400),
        ("/fhir/%2e%2e/Patient/1".into(), 400),
        ("/fhir/Patient%2F1".into(), 400),
        ("/fhir/Patient/1%2F_history".into(), 400),
        ("/fhir/Patient/1%5C..%5CObservation".into(), 400),
        ("//fhir/Patient/1".into(), 404),
        ("/fhir//Patient/1".into(), 400),
        ("/fhir/Patient//1".into(), 400),
        ("/fhir/Patient/1;jsessionid=x".into(), 400),
        ("/fhir/Patient;x=y/1".into(), 400),
        ("/fhir/Binary/..;/Patient/1".into(), 400),
        (format!("/fhir/Patient/{long_id}"), 404),
        (format!("/fhir/Patient/{long_id}/_history/1"), 404),
        // Cyrillic "а" in Patient, percent-encoded: not a resource type.
        ("/fhir/P%D0%B0tient/1".into(), 400),
        // Fullwidth digit one as the id.
        ("/fhir/Patient/%EF%BC%91".into(), 400),
        // Encoded letters of a real type are refused too (no parser differential).
        ("/fhir/%50atient/1".into(), 400),
        ("/fhir/Patient/1%00".into(), 400),
        ("/fhir/Patient/%24everything".into(), 400),
        ("/fhir/Patient/..".into(), 400),
        ("/fhir/./Patient/1".into(), 400),
        ("/fhir/Patient/1/".into(), 400),
        ("/fhir/Patient/1/Observation/2".into(), 404),
        ("/fhir/patient/1".into(), 404),
        ("/fhir/PATIENT/1".into(), 404),
        ("/FHIR/Patient/1".into(), 404),
    ];
    for (path, status) in &cases {
        let started = Instant::now();
        let (got, body) = support::raw_get(&base, path, TOKEN).await;
        assert!(started.elapsed() < QUICK, "{path}: slow");
        assert_eq!(got, *status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("an OperationOutcome");
        assert_eq!(body["resourceType"], "OperationOutcome", "{path}");
    }
    assert_eq!(auth.calls(), 0, "no path trick reached the AS");
    // The longest valid id is fine.
    let (got, _) = support::raw_get(&base, &format!("/fhir/Patient/{ok_id}"), TOKEN).await;
    assert_eq!(got, 200);
}

#[tokio::test]
async fn oversized_bodies_are_413_and_a_declared_length_needs_no_introspection() {
    let limit = 64 * 1024;
    let (auth, base) = setup(|c| c.with_max_body_bytes(limit)).await;
    let client = http();
    let started = Instant::now();
    let search = client
        .post(format!("{base}/fhir/Patient/_search"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name={}", "x".repeat(limit)))
        .send()
        .await
        .expect("send");
    assert_eq!(search.status(), 413, "POST _search");
    let entry = json!({ "request": { "method": "GET", "url": "Patient/1" } });
    let bundle = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": vec![entry; limit / 40],
    });
    let bundle = client
        .post(format!("{base}/fhir"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(bundle.status(), 413, "large Bundle");
    let export = client
        .post(format!("{base}/fhir/$export"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(format!(
            r#"{{"resourceType":"Parameters","x":"{}"}}"#,
            "x".repeat(limit)
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(export.status(), 413, "$export Parameters");
    assert!(started.elapsed() < 2 * QUICK);
    // A declared length over the limit is refused from the headers: no token lookup.
    assert_eq!(auth.calls(), 0);

    // Chunked, with no Content-Length: refused once the limit is passed.
    let host = base.strip_prefix("http://").expect("base");
    let mut request = format!(
        "POST /fhir/Patient/_search HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b'x'; 8192];
    for _ in 0..(limit / 8192 + 2) {
        request.extend_from_slice(b"2000\r\n");
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw_request(&base, &request).await;
    assert_eq!(status, 413, "chunked");
    // A body of unknown length is read only for an active token: one lookup first.
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn deeply_nested_and_malformed_bundles_are_400_after_one_introspection() {
    let (auth, base) = setup(|c| c).await;
    let client = http();
    let post = |body: String| {
        client
            .post(format!("{base}/fhir"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/fhir+json")
            .body(body)
            .send()
    };
    let deep = |depth: usize| {
        format!(
            r#"{{"resourceType":"Bundle","type":"batch","entry":[{{"resource":{}1{}}}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    for (label, body) in [
        ("nested 100 deep", deep(100)),
        ("nested 100 000 deep", deep(100_000)),
        (
            "objects nested deep",
            format!("{}{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000)),
        ),
        (
            "unclosed",
            deep(10_000).trim_end_matches(['}', ']']).to_owned(),
        ),
        ("not JSON", "<Bundle/>".to_owned()),
        (
            "truncated",
            r#"{"resourceType":"Bundle","type":"batch","entry":[{"#.to_owned(),
        ),
        (
            "invalid UTF-8 escape",
            r#"{"resourceType":"Bundle","type":"\udc00"}"#.to_owned(),
        ),
    ] {
        let started = Instant::now();
        let response = post(body).await.expect("send");
        assert!(started.elapsed() < QUICK, "{label}: slow");
        assert_eq!(response.status(), 400, "{label}");
        let outcome: Value = response.json().await.expect("OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "invalid", "{label}");
    }
    // The body is read only once the token is known to be active: one lookup, then the cache.
    assert_eq!(auth.calls(), 1);
}

#[tokio::test]
async fn a_bundle_of_twenty_thousand_entries_is_checked_whole() {
    let (auth, base) = setup(|c| {
        c.with_max_body_bytes(4 * 1024 * 1024)
            .with_analysis_limits(AnalysisLimits::default().with_max_bundle_entries(20_001))
    })
    .await;
    let entries: Vec<Value> = (0..20_000)
        .map(|i| json!({ "request": { "method": "GET", "url": format!("Patient/{i}") } }))
        .collect();
    let mut last = entries.clone();
    last.push(json!({ "request": { "method": "GET", "url": "Patient/../Observation/1" } }));
    let client = http();
    let send = |entries: Vec<Value>| {
        let body = json!({ "resourceType": "Bundle", "type": "batch", "entry": entries });
        client
            .post(format!("{base}/fhir"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    // Its speed is measured where speed belongs: `batch_bundle_20000_reads` in
    // benches/cache_hit.rs (BENCHMARKS.md), not by a clock in a test.
    assert_eq!(send(entries).await.expect("send").status(), 200);
    let bad = send(last).await.expect("send");
    assert!(
        matches!(bad.status().as_u16(), 400 | 403),
        "{}",
        bad.status()
    );
    assert!(auth.calls() <= 1, "one introspection at most");
}

/// A body declared larger than the limit is refused before any of it arrives, so a client that
/// declares 1 GB and trickles bytes cannot hold the request open.
#[tokio::test]
async fn a_declared_content_length_over_the_limit_is_413_before_the_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (auth, base) = setup(|c| c.with_max_body_bytes(1024)).await;
    let host = base.strip_prefix("http://").expect("base");
    let request = format!(
        "POST /fhir/Patient/_search HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\nname=x"
    );
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let read = tokio::time::timeout(QUICK, stream.read(&mut buf)).await;
    let n = read
        .expect("answered before the body arrived")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(auth.calls(), 0);
}

/// Without credentials the guard never buffers a body: the 401 comes before the body is read.
#[tokio::test]
async fn a_request_without_credentials_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (auth, base) = setup(|c| c).await;
    let host = base.strip_prefix("http://").expect("base");
    let request = format!(
        "POST /fhir/Patient/_search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\nConnection: close\r\n\r\nname=x"
    );
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(QUICK, stream.read(&mut buf))
        .await
        .expect("answered before the body arrived")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(auth.calls(), 0);
}

#[tokio::test]
async fn requests_past_an_analysis_limit_are_400_naming_the_setting() {
    let (auth, base) =
        setup(|c| c.with_analysis_limits(AnalysisLimits::default().with_max_analysis_steps(2_000)))
            .await;
    let client = http();
    let params = |n: usize| vec!["name=x"; n].join("&");
    let includes = |n: usize| vec!["_include=Observation:patient"; n].join("&");
    let has = |n: usize| format!("{}code=1", "_has:Observation:patient:".repeat(n));
    let entries = |n: usize| {
        let entry = json!({ "request": { "method": "GET", "url": "Patient?name=x" } });
        json!({ "resourceType": "Bundle", "type": "batch", "entry": vec![entry; n] }).to_string()
    };
    let get = |query: String| client.get(format!("{base}/fhir/Observation?{query}"));
    let batch = |body: String| {
        client
            .post(format!("{base}/fhir"))
            .header("content-type", "application/fhir+json")
            .body(body)
    };
    let cases = [
        ("100 parameters", get(params(100)), None),
        (
            "101 parameters",
            get(params(101)),
            Some("SMART_GUARD_MAX_SEARCH_PARAMS"),
        ),
        ("32 includes", get(includes(32)), None),
        (
            "33 includes",
            get(includes(33)),
            Some("SMART_GUARD_MAX_INCLUDES"),
        ),
        ("_has 4 deep", get(has(4)), None),
        (
            "_has 5 deep",
            get(has(5)),
            Some("SMART_GUARD_MAX_SEARCH_DEPTH"),
        ),
        (
            "a chain of 5 hops",
            get("patient.organization.partof.partof.partof.name=x".to_owned()),
            Some("SMART_GUARD_MAX_SEARCH_DEPTH"),
        ),
        ("900 entries of 1 parameter", batch(entries(900)), None),
        (
            "1,001 entries of 1 parameter",
            batch(entries(1_001)),
            Some("SMART_GUARD_MAX_ANALYSIS_STEPS"),
        ),
    ];
    for (label, request, limit) in cases {
        let response = request.bearer_auth(TOKEN).send().await.expect("send");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let outcome: Value = response.json().await.expect("json");
        match limit {
            None => assert_eq!(status, 200, "{label}: {outcome}"),
            Some(var) => {
                assert_eq!(status, 400, "{label}: {outcome}");
                assert_eq!(outcome["issue"][0]["code"], "invalid", "{label}");
                let diagnostics = outcome["issue"][0]["diagnostics"].as_str().expect("text");
                assert!(diagnostics.contains(var), "{label}: {diagnostics}");
                assert!(
                    challenge.is_some_and(|c| c.contains(r#"error="invalid_request""#)),
                    "{label}"
                );
            }
        }
    }
    // One token, looked up once.
    assert_eq!(auth.calls(), 1);

    // The default entry limit: 10,000.
    let (_auth, base) = setup(|c| c).await;
    let response = http()
        .post(format!("{base}/fhir"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/fhir+json")
        .body(entries(10_001))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let outcome: Value = response.json().await.expect("json");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("SMART_GUARD_MAX_BUNDLE_ENTRIES")),
        "{outcome}"
    );
}

#[tokio::test]
async fn unreadable_headers_are_400_and_bodies_in_another_form_415_without_introspection() {
    let (auth, base) = setup(|c| c).await;
    let host = base.strip_prefix("http://").expect("base").to_owned();
    let post = |path: &str, headers: &[&[u8]], body: &[u8]| {
        let mut request = format!(
            "POST /fhir{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        )
        .into_bytes();
        for header in headers {
            request.extend_from_slice(header);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
        request
    };
    let form = b"Content-Type: application/x-www-form-urlencoded".as_slice();
    let hidden = b"_has:Group:member:_id=1".as_slice();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a Latin-1 byte in If-None-Exist",
            post(
                "/Patient",
                &[
                    b"Content-Type: application/fhir+json",
                    b"If-None-Exist: identifier=\xe9&_has:Group:member:_id=1",
                ],
                b"{}",
            ),
            400,
            "invalid",
        ),
        (
            "a Latin-1 byte in a form's Content-Type",
            post(
                "/Patient/_search",
                &[b"Content-Type: application/x-www-form-urlencoded; charset=\xe9"],
                hidden,
            ),
            400,
            "invalid",
        ),
        (
            "two Content-Type headers",
            post(
                "/Patient/_search",
                &[form, b"Content-Type: text/plain"],
                hidden,
            ),
            400,
            "invalid",
        ),
        (
            "a form type followed by another",
            post(
                "/Patient/_search",
                &[b"Content-Type: application/x-www-form-urlencoded, text/plain"],
                hidden,
            ),
            415,
            "not-supported",
        ),
        (
            "a deflated form",
            post(
                "/Patient/_search",
                &[form, b"Content-Encoding: deflate"],
                hidden,
            ),
            415,
            "not-supported",
        ),
        (
            "a batch as text",
            post(
                "",
                &[b"Content-Type: text/plain"],
                br#"{"resourceType":"Bundle","type":"batch","entry":[]}"#,
            ),
            415,
            "not-supported",
        ),
    ];
    for (label, request, status, code) in cases {
        let (got, raw) = raw_request(&base, &request).await;
        assert_eq!(got, status, "{label}: {raw}");
        assert_eq!(issue_code(&raw).as_deref(), Some(code), "{label}");
    }
    // Decided from the headers: no token was looked up.
    assert_eq!(auth.calls(), 0);
}
