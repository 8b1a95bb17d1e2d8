//! Proxy mode over loopback: the dev AS, the proxy (in this process, or the `smart-guard proxy`
//! binary where a process of its own matters: memory, signals) and an upstream HTTP server that
//! records every request it receives (`upstream.rs`). The FHIR semantics through a real engine
//! are in `fhir.rs` (Medplum; needs `npm ci` in `tests/upstream`).
#![cfg(all(feature = "proxy", feature = "dev-server"))]

mod fhir;
/// The scripted AS's support module, for its raw HTTP helper.
#[path = "../support/mod.rs"]
mod scripted;
mod support;
mod upstream;

use std::time::Duration;

use serde_json::Value;
use support::{Env, http, proxy_process, spawn_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upstream::Upstream;

/// The dev AS, a recording upstream and a proxy in front of it with these extra settings.
async fn started(extra: &[(&str, &str)]) -> (Env, Upstream, support::RunningProxy) {
    let env = Env::start().await;
    let upstream = Upstream::start().await;
    let proxy = spawn_proxy(&env, &upstream.base(), extra).await;
    (env, upstream, proxy)
}

#[tokio::test]
async fn the_admin_listener_takes_revocations_and_the_fhir_listener_does_not() {
    let secret_file = std::env::temp_dir().join(format!("proxy-admin-{}", std::process::id()));
    std::fs::write(&secret_file, "admin-secret-0123456789\n").expect("write");
    let (env, upstream, proxy) = started(&[
        ("SMART_GUARD_ADMIN_ADDR", "127.0.0.1:0"),
        (
            "SMART_GUARD_REVOCATION_SECRET_FILE",
            secret_file.to_str().expect("utf-8 path"),
        ),
    ])
    .await;
    let admin = proxy.admin.expect("admin listener");
    let token = env.token("system/Patient.rs");
    let read = || {
        http()
            .get(format!("{}/Patient/1", proxy.public_base))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(read().await.expect("send").status(), 200);
    assert!(env.server.revoke_token(&token));
    assert_eq!(read().await.expect("send").status(), 200, "cached");
    let revoke = |origin: String, secret: &'static str| {
        http()
            .post(format!("{origin}/revoke"))
            .bearer_auth(secret)
            .form(&[("token", token.as_str())])
            .send()
    };
    let on_fhir = revoke(format!("http://{}", proxy.addr), "admin-secret-0123456789")
        .await
        .expect("send");
    assert_ne!(on_fhir.status(), 200, "the FHIR listener serves no /revoke");
    let wrong = revoke(format!("http://{admin}"), "admin-secret-wrong-0000")
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let revoked = revoke(format!("http://{admin}"), "admin-secret-0123456789")
        .await
        .expect("send");
    assert_eq!(revoked.status(), 200);
    assert_eq!(read().await.expect("send").status(), 401, "asked again");
    assert_eq!(
        upstream.requests().len(),
        2,
        "two reads reached the upstream, nothing else"
    );
    let _ = std::fs::remove_file(&secret_file);
}

#[tokio::test]
async fn an_allowed_read_reaches_the_upstream_with_identity_and_forwarding_headers() {
    let (env, upstream, proxy) = started(&[]).await;
    let token = env.token("system/Patient.rs");
    let response = http()
        .get(format!("{}/Patient/1?_elements=id", proxy.public_base))
        .bearer_auth(&token)
        .header("X-Smart-Client-Id", "forged-admin")
        .header("x-smart-scopes", "system/*.cruds")
        .header("X-SMART-Interaction", "delete")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Prefix", "/evil")
        .header("X-HTTP-Method-Override", "DELETE")
        .header("X_Smart_Client_Id", "forged-by-underscore")
        .header("X_HTTP_Method_Override", "DELETE")
        .header("Connection", "x-client-hop")
        .header("X-Client-Hop", "must not cross")
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    // Hop-by-hop fields of the upstream's answer do not cross back either.
    assert!(response.headers().get("x-upstream-hop").is_none());
    assert!(response.headers().get("keep-alive").is_none());
    assert_eq!(response.headers()["x-upstream-end-to-end"], "kept");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request = &seen[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.target, "/fhir/Patient/1?_elements=id");
    let header = |name: &str| request.header(name);
    assert_eq!(header("x-smart-client-id").as_deref(), Some("backend-app"));
    assert_eq!(
        header("x-smart-scopes").as_deref(),
        Some("system/Patient.rs")
    );
    assert_eq!(header("x-smart-interaction").as_deref(), Some("read"));
    assert_eq!(request.count("x-smart-client-id"), 1, "one, ours");
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        header("x-forwarded-host").as_deref(),
        Some(proxy.addr.to_string().as_str())
    );
    assert_eq!(
        header("forwarded").as_deref(),
        Some(format!("for=127.0.0.1;proto=http;host=\"{}\"", proxy.addr).as_str())
    );
    assert_eq!(
        header("host").as_deref(),
        Some(upstream.authority().as_str())
    );
    assert_eq!(
        header("authorization").as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(header("accept").as_deref(), Some("application/fhir+json"));
    assert!(
        request.headers.iter().all(|(name, _)| !name.contains('_')),
        "no underscore field crosses: {:?}",
        request.headers
    );
    for gone in [
        "x-forwarded-prefix",
        "x-http-method-override",
        "connection",
        "x-client-hop",
        "accept-encoding",
    ] {
        assert_eq!(header(gone), None, "{gone} crossed");
    }
    assert_eq!(env.introspections(), 1);
}

#[tokio::test]
async fn denied_requests_are_answered_by_the_proxy_and_never_reach_the_upstream() {
    let (env, upstream, proxy) = started(&[]).await;
    let token = env.token("system/Patient.rs");
    let client = http();
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (client.get(format!("{}/Patient/1", proxy.public_base)), 401),
        (
            client
                .get(format!("{}/Patient/1", proxy.public_base))
                .bearer_auth("made-up-token"),
            401,
        ),
        (
            client
                .get(format!("{}/Observation", proxy.public_base))
                .bearer_auth(&token),
            403,
        ),
        (
            client
                .delete(format!("{}/Patient/1", proxy.public_base))
                .bearer_auth(&token),
            403,
        ),
        (
            client
                .get(format!(
                    "{}/Patient?_revinclude=Observation:subject",
                    proxy.public_base
                ))
                .bearer_auth(&token),
            403,
        ),
        (
            client
                .get(format!("{}/Patient/1", proxy.public_base))
                .bearer_auth(&token)
                .header("Connection", "authorization"),
            400,
        ),
        (
            client
                .get(format!("http://{}/other/Patient/1", proxy.addr))
                .bearer_auth(&token),
            404,
        ),
        // Rack and older Python split on `;`: `_revinclude=*` would run without `*.s`.
        (
            client
                .get(format!(
                    "{}/Patient?name=x;_revinclude=*",
                    proxy.public_base
                ))
                .bearer_auth(&token),
            400,
        ),
        (
            client
                .get(format!("{}/Binary/..;/Patient/1", proxy.public_base))
                .bearer_auth(&token),
            400,
        ),
    ];
    for (request, status) in cases {
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/fhir+json; charset=utf-8"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_with_431_and_never_reaches_the_upstream() {
    let (env, upstream, proxy) = started(&[]).await;
    let token = env.token("system/Patient.rs");
    let padded = |bytes: usize| {
        http()
            .get(format!("{}/Patient/1", proxy.public_base))
            .bearer_auth(&token)
            .header("X-Padding", "a".repeat(bytes))
            .send()
    };
    let within = padded(48 * 1024).await.expect("send");
    assert_eq!(within.status(), 200);
    assert_eq!(upstream.requests().len(), 1);
    let over = padded(64 * 1024).await.expect("send");
    assert_eq!(over.status(), 431);
    assert_eq!(upstream.requests().len(), 1, "{:?}", upstream.requests());
}

#[tokio::test]
async fn the_upstream_base_is_rewritten_in_locations_and_bundles_and_nowhere_else() {
    let (env, upstream, proxy) = started(&[]).await;
    let token = env.token("system/Patient.cruds");
    let created = http()
        .post(format!("{}/Patient", proxy.public_base))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let public = &proxy.public_base;
    assert_eq!(
        created.headers()["location"],
        format!("{public}/Patient/new/_history/1").as_str()
    );
    assert_eq!(
        created.headers()["content-location"],
        format!("{public}/Patient/new/_history/1").as_str()
    );
    let search = http()
        .get(format!("{public}/Patient?name=x"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(search.status(), 200);
    let text = search.text().await.expect("text");
    let expected = upstream::search_bundle(&upstream.base())
        .replace(
            &format!("\"{}/Patient?name=x\"", upstream.base()),
            &format!("\"{public}/Patient?name=x\""),
        )
        .replace(
            &format!("\"fullUrl\": \"{}/Patient/1\"", upstream.base()),
            &format!("\"fullUrl\": \"{public}/Patient/1\""),
        );
    assert_eq!(text, expected, "only link.url and fullUrl change");
    assert!(text.contains(&format!("{}/Patient/1\\u0020", upstream.base())));
}

#[tokio::test]
async fn an_upstream_that_is_down_is_502_and_one_that_never_answers_is_504_at_the_timeout() {
    let env = Env::start().await;
    let upstream = Upstream::start().await;
    let base = upstream.base();
    let proxy = spawn_proxy(&env, &base, &[("SMART_GUARD_UPSTREAM_TIMEOUT_MS", "700")]).await;
    let token = env.token("system/Patient.rs");
    let started = std::time::Instant::now();
    let hung = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .header("x-upstream-hang", "1")
        .send()
        .await
        .expect("send");
    assert_eq!(hung.status(), 504);
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "not before the timeout"
    );
    let body = hung.text().await.expect("body");
    assert!(body.contains("\"timeout\""), "{body}");
    upstream.stop().await;
    let down = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(down.status(), 502);
    let body = down.text().await.expect("body");
    assert!(body.contains("OperationOutcome"), "{body}");
    let port = base
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap_or("?");
    assert!(
        !body.contains(port) && !body.contains("127.0.0.1"),
        "no internal address: {body}"
    );
    let ready = http()
        .get(format!("http://{}/readyz", proxy.addr))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "the upstream refuses connections");
}

#[tokio::test]
async fn health_readiness_and_the_discovery_documents_are_served_beside_the_fhir_base() {
    let (env, upstream, proxy) = started(&[]).await;
    let origin = format!("http://{}", proxy.addr);
    let healthz = http()
        .get(format!("{origin}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(healthz.status(), 200);
    let readyz = http()
        .get(format!("{origin}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(readyz.status(), 200);
    let smart: Value = http()
        .get(format!(
            "{}/.well-known/smart-configuration",
            proxy.public_base
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(smart["token_endpoint"], env.server.token_url());
    let prm: Value = http()
        .get(format!(
            "{origin}/.well-known/oauth-protected-resource/fhir"
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(prm["resource"], proxy.public_base.as_str());
    let challenge = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .send()
        .await
        .expect("send");
    let header = challenge.headers()["www-authenticate"]
        .to_str()
        .expect("ascii");
    assert!(
        header.ends_with(&format!(
            "resource_metadata=\"{origin}/.well-known/oauth-protected-resource/fhir\""
        )),
        "{header}"
    );
    assert!(upstream.requests().is_empty());
}

/// A client that sends its request headers a byte at a time holds its own connection only.
#[tokio::test]
async fn a_client_sending_headers_a_byte_at_a_time_does_not_delay_others() {
    let env = Env::start().await;
    let upstream = Upstream::start().await;
    let proxy = spawn_proxy(
        &env,
        &upstream.base(),
        &[("SMART_GUARD_HEADER_READ_TIMEOUT_MS", "3000")],
    )
    .await;
    let token = env.token("system/Patient.rs");
    let addr = proxy.addr;
    let slow = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for byte in b"GET /fhir/Patient/1 HTTP/1.1\r\nHost: x\r\n".iter() {
            if stream.write_all(&[*byte]).await.is_err() {
                return "cut off";
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        "finished"
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let response = http()
            .get(format!("{}/Patient/1", proxy.public_base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a request waited {:?} behind the slow client",
            started.elapsed()
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), slow).await;
}

#[tokio::test]
async fn a_200_mb_upload_and_download_stream_through_with_little_memory() {
    let env = Env::start().await;
    let upstream = Upstream::start().await;
    let proxy = proxy_process(&env, &upstream.base(), &[]).await;
    let token = env.token("system/Binary.cruds");
    let warm = http()
        .get(format!("{}/Binary/huge-1000", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(warm.status(), 200);
    let _ = warm.bytes().await;
    let before = proxy.rss_kib();
    const SIZE: u64 = 200 * 1024 * 1024;
    let (body, digest) = upstream::pattern_body(SIZE);
    let uploaded = http()
        .post(format!("{}/Binary", proxy.public_base))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), 201);
    let receipt: Value = uploaded.json().await.expect("receipt");
    assert_eq!(receipt["size"], SIZE);
    assert_eq!(receipt["blake3"], digest.as_str());
    let mut download = http()
        .get(format!("{}/Binary/huge-{SIZE}", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), 200);
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    while let Some(chunk) = download.chunk().await.expect("chunk") {
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(hasher.finalize().to_hex().as_str(), digest.as_str());
    let peak = proxy.peak_rss_kib();
    let grew = peak.saturating_sub(before);
    eprintln!("proxy RSS: {before} KiB before, peak {peak} KiB");
    assert!(grew < 32 * 1024, "the proxy grew by {grew} KiB");
}

#[tokio::test]
async fn sigterm_during_a_slow_request_lets_it_finish_then_the_proxy_exits() {
    let env = Env::start().await;
    let upstream = Upstream::start().await;
    let mut proxy = proxy_process(&env, &upstream.base(), &[]).await;
    let token = env.token("system/Patient.rs");
    let url = format!("{}/Patient/1", proxy.public_base);
    let slow = tokio::spawn(async move {
        http()
            .get(url)
            .bearer_auth(token)
            .header("x-upstream-delay-ms", "1500")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::net::TcpStream::connect(proxy.addr).await;
    assert!(refused.is_err(), "no new connections after SIGTERM");
    assert_eq!(slow.await.expect("join").expect("the slow request"), 200);
    let status = proxy.wait().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn tls_on_both_sides_and_http2_from_the_client() {
    let env = Env::start().await;
    let upstream = Upstream::start_tls().await;
    let proxy = spawn_proxy(
        &env,
        &upstream.base(),
        &[
            ("SMART_GUARD_TLS_CERT_FILE", upstream::TEST_CERT),
            ("SMART_GUARD_TLS_KEY_FILE", upstream::TEST_KEY),
            ("SMART_GUARD_UPSTREAM_CA_FILE", upstream::TEST_CERT),
        ],
    )
    .await;
    assert!(
        proxy.public_base.starts_with("https://"),
        "{}",
        proxy.public_base
    );
    let pem = std::fs::read(upstream::TEST_CERT).expect("cert");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("cert")])
        .build()
        .expect("client");
    let token = env.token("system/Patient.rs");
    let response = client
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN h2");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        seen[0].header("x-smart-interaction").as_deref(),
        Some("read")
    );
}

/// The proxy speaks HTTP/1.1 to its upstream, also over TLS where the upstream offers HTTP/2 by
/// ALPN. hyper writes only the trailers a `Trailer` field declares, the proxy drops that field
/// as hop-by-hop, and its own trailer filter drops them anyway.
#[tokio::test]
async fn request_trailers_never_reach_the_upstream_over_plain_or_tls_connections() {
    let env = Env::start().await;
    for upstream in [Upstream::start().await, Upstream::start_tls().await] {
        let proxy = spawn_proxy(
            &env,
            &upstream.base(),
            &[("SMART_GUARD_UPSTREAM_CA_FILE", upstream::TEST_CERT)],
        )
        .await;
        let token = env.token("system/Binary.cruds");
        // Chunked, with trailers a client could hope the upstream reads as fields.
        let request = format!(
            "POST /fhir/Binary HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: X-Smart-Client-Id, X-Evil\r\nTE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Smart-Client-Id: forged-admin\r\nX-Evil: 1\r\n\r\n",
            proxy.addr
        );
        let (status, answer) =
            scripted::raw_request(&format!("http://{}", proxy.addr), request.as_bytes()).await;
        let base = upstream.base();
        assert_eq!(status, 201, "{base}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let receipt: Value = serde_json::from_str(body.trim()).expect("JSON receipt");
        assert_eq!(receipt["size"], 5, "{base}: {receipt}");
        assert_eq!(
            receipt["trailers"],
            serde_json::json!([]),
            "{base}: {receipt}"
        );
        let seen = upstream.requests();
        assert_eq!(seen.len(), 1, "{base}");
        assert_eq!(seen[0].version, http::Version::HTTP_11, "{base}");
        assert_eq!(
            seen[0].count("trailer"),
            0,
            "{base}: the Trailer field is hop-by-hop"
        );
        assert_eq!(seen[0].count("x-evil"), 0, "{base}");
    }
}

/// One upstream connection serves request after request, from one client connection and from
/// many; when the upstream closes its idle connections, the next request opens a new one and
/// is answered, not refused. Over TLS as in the clear.
#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_when_the_upstream_closes_them() {
    let env = Env::start().await;
    for upstream in [Upstream::start().await, Upstream::start_tls().await] {
        let base = upstream.base();
        let proxy = spawn_proxy(
            &env,
            &base,
            &[("SMART_GUARD_UPSTREAM_CA_FILE", upstream::TEST_CERT)],
        )
        .await;
        let token = env.token("system/Patient.rs");
        let url = format!("{}/Patient/1", proxy.public_base);
        let kept = http();
        let fresh = || {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client")
        };
        for i in 0..20 {
            let client = if i % 2 == 0 { kept.clone() } else { fresh() };
            let response = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 200, "{base}: request {i}");
            response.bytes().await.expect("body");
        }
        assert_eq!(upstream.requests().len(), 20, "{base}");
        assert_eq!(
            upstream.connections(),
            1,
            "{base}: one connection for 20 requests"
        );

        upstream.drop_connections().await;
        for i in 0..3 {
            let response = kept
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("send");
            assert_eq!(
                response.status(),
                200,
                "{base}: after the upstream closed, {i}"
            );
            response.bytes().await.expect("body");
        }
        assert_eq!(upstream.connections(), 2, "{base}: one new connection");
    }
}

/// An upstream that stops in the middle of a body: the client's answer ends (cut) soon after
/// the upstream timeout instead of hanging, and its connection is not held.
#[tokio::test]
async fn an_upstream_that_stalls_mid_body_has_its_answer_cut_at_the_timeout() {
    let (env, _upstream, proxy) = started(&[("SMART_GUARD_UPSTREAM_TIMEOUT_MS", "600")]).await;
    let token = env.token("system/Patient.rs");
    let started = std::time::Instant::now();
    let response = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .header("x-upstream-stall-body", "1")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "the head came in time");
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes()).await;
    let waited = started.elapsed();
    assert!(body.is_ok(), "the body ended (cut) instead of hanging");
    assert!(
        body.expect("in time").is_err(),
        "a cut body is an error, not a short answer"
    );
    assert!(waited >= Duration::from_millis(550), "{waited:?}");
    // The proxy still answers: the slot and the connection were freed.
    let after = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(after.status(), 200);
}

/// A request that may have reached the upstream is never sent twice: an upstream that reads a
/// POST on a kept-alive connection and closes it without answering gets that POST once, and the
/// client a 502.
#[tokio::test]
async fn a_request_the_upstream_may_have_read_is_not_sent_again() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let env = Env::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}/fhir", listener.local_addr().expect("addr"));
    let (connections, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, p) = (Arc::clone(&connections), Arc::clone(&posts));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&seen).into_owned();
                    if text.starts_with("POST") && text.contains("hello") {
                        // Read whole, then the connection goes without an answer.
                        p.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if text.starts_with("GET") && text.contains("\r\n\r\n") {
                        seen.clear();
                        let body = r#"{"resourceType":"Patient","id":"1"}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let proxy = spawn_proxy(&env, &upstream, &[]).await;
    let token = env.token("system/Patient.cruds system/Binary.cruds");
    let read = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(read.status(), 200);
    read.bytes().await.expect("body");
    let post = http()
        .post(format!("{}/Binary", proxy.public_base))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .expect("send");
    assert_eq!(post.status(), 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the POST reached the upstream once"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "and was not sent on a new connection"
    );
}

#[tokio::test]
async fn readiness_probes_the_upstream_at_most_once_a_second_however_often_it_is_asked() {
    let env = Env::start().await;
    // An "upstream" that only counts the TCP connections it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}/fhir", listener.local_addr().expect("addr"));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let proxy = spawn_proxy(&env, &upstream, &[]).await;
    let origin = format!("http://{}", proxy.addr);
    let mut probes = Vec::new();
    for _ in 0..50 {
        let url = format!("{origin}/readyz");
        probes.push(tokio::spawn(async move {
            http().get(url).send().await.expect("send").status()
        }));
    }
    for probe in probes {
        assert_eq!(probe.await.expect("probe"), 200);
    }
    let after_burst = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        after_burst, 1,
        "50 concurrent probes, one connection to the upstream"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let status = http()
        .get(format!("{origin}/readyz"))
        .send()
        .await
        .expect("send")
        .status();
    assert_eq!(status, 200);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "probed again after a second"
    );
}

#[tokio::test]
async fn http2_clients_are_told_at_most_128_streams_per_connection() {
    let (_env, _upstream, proxy) = started(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    // The HTTP/2 connection preface, then an empty SETTINGS frame (RFC 9113 §3.4, §6.5).
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.expect("frame header");
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("settings");
    let max_streams = payload.chunks_exact(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == 0x3)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(max_streams, Some(128), "SETTINGS_MAX_CONCURRENT_STREAMS");
}

#[tokio::test]
async fn http2_without_tls_and_expect_100_continue_are_served() {
    let (env, upstream, proxy) = started(&[]).await;
    let token = env.token("system/Patient.cruds");
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2c
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    // HTTP/2 sends a cookie list as separate fields; HTTP/1.1 upstream, as one.
    let read = &upstream.requests()[0];
    assert_eq!(read.count("cookie"), 1, "{:?}", read.headers);
    assert_eq!(read.header("cookie").as_deref(), Some("a=1; b=2"));
    // HTTP/1.1 with Expect: 100-continue: the proxy answers 100, then reads the body.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let body = r#"{"resourceType":"Patient"}"#;
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        proxy.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.expect("100 Continue");
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(body.as_bytes()).await.expect("body");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.contains("201 Created"), "{answer}");
    let created = upstream
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the create reached the upstream");
    assert_eq!(
        created.header("expect"),
        None,
        "Expect is handled by the proxy"
    );
}

#[tokio::test]
async fn the_proxy_logs_one_line_of_effective_settings_without_the_secret() {
    use tokio::io::AsyncBufReadExt;
    let env = Env::start().await;
    let upstream = Upstream::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_smart-guard"))
        .arg("proxy")
        .env_clear()
        .envs(env.vars(&upstream.base(), &[("SMART_GUARD_AUDIT", "true")]))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("smart-guard proxy:") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("the settings line within 20 s");
    for part in [
        format!("SMART_GUARD_UPSTREAM_URL={}", upstream.base()),
        "SMART_GUARD_CLIENT_SECRET=<redacted>".to_owned(),
        "SMART_GUARD_FORWARD_AUTHORIZATION=true".to_owned(),
        "SMART_GUARD_AUDIT=true".to_owned(),
    ] {
        assert!(line.contains(&part), "{part} in {line}");
    }
    assert!(!line.contains(support::RS_SECRET), "{line}");
    let _ = child.kill().await;
}

/// A connection that never completes a request head (silent, or stuck in the HTTP/2 preface,
/// which hyper reads before any timer of its own) is closed at the header deadline, and the
/// connection cap holds the rest in the backlog until a slot frees.
#[tokio::test]
async fn connections_that_start_no_request_are_closed_and_the_cap_frees_their_slot() {
    let (env, _upstream, proxy) = started(&[
        ("SMART_GUARD_HEADER_READ_TIMEOUT_MS", "400"),
        ("SMART_GUARD_CLIENT_IDLE_TIMEOUT_MS", "400"),
        ("SMART_GUARD_MAX_CLIENT_CONNECTIONS", "1"),
    ])
    .await;
    let token = env.token("system/Patient.rs");
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        stream.write_all(opening).await.expect("write");
        let started = std::time::Instant::now();
        // Meanwhile a real request waits for the only slot, and gets it once this one is cut.
        let waiting = tokio::spawn({
            let (url, token) = (format!("{}/Patient/1", proxy.public_base), token.clone());
            async move {
                http()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "closed by the proxy, not left open");
        assert!(
            started.elapsed() >= Duration::from_millis(350),
            "not before the deadline: {:?}",
            started.elapsed()
        );
        assert_eq!(
            waiting.await.expect("join").expect("the waiting request"),
            200
        );
        // Its client is gone, and an idle keep-alive connection would be closed after 400 ms.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

/// A client that asks for a large answer and stops reading holds its upstream slot only until
/// the body has not moved for the upstream timeout; then the slot serves others again.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_upstream_slot_at_the_timeout() {
    let (env, _upstream, proxy) = started(&[
        ("SMART_GUARD_UPSTREAM_TIMEOUT_MS", "800"),
        ("SMART_GUARD_UPSTREAM_MAX_CONNECTIONS", "1"),
    ])
    .await;
    let token = env.token("system/Binary.rs system/Patient.rs");
    let mut stalled = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let head = format!(
        "GET /fhir/Binary/huge-500000000 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        proxy.addr
    );
    stalled.write_all(head.as_bytes()).await.expect("request");
    let mut first = [0u8; 64];
    stalled
        .read_exact(&mut first)
        .await
        .expect("the answer starts");
    // Now it reads nothing more: the socket buffers fill and the body stops. Another request,
    // a little later, waits for the only slot (for up to the upstream timeout). The cut comes
    // the timeout after the body's last progress, and up to two sweeper ticks (2 x 200 ms)
    // later: sent at 700 ms, the request waits until 1 500 ms, past the latest cut.
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let response = http()
        .get(format!("{}/Patient/1", proxy.public_base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        200,
        "served once the stalled body is cut"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(750) && waited < Duration::from_secs(5),
        "the only slot came free after the stall timeout, not before: {waited:?}"
    );
    drop(stalled);
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`; returns its status line.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse().ok())
                .expect("a Content-Length");
            if got.len() >= end + 4 + length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed mid-response");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// On a kept-alive connection the wait for the next request counts against the idle timeout,
/// not the header deadline; a later request head has the header deadline from its first bytes.
#[tokio::test]
async fn a_later_request_head_has_the_header_deadline_and_the_wait_for_it_the_idle_timeout() {
    let (env, upstream, proxy) = started(&[
        ("SMART_GUARD_HEADER_READ_TIMEOUT_MS", "400"),
        ("SMART_GUARD_CLIENT_IDLE_TIMEOUT_MS", "20000"),
    ])
    .await;
    let token = env.token("system/Patient.rs");
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let head =
        format!("GET /fhir/Patient/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("first request");
    assert_eq!(read_response(&mut stream).await, "http/1.1 200 ok");
    // Three header deadlines of quiet: the connection is still there for the next request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stream
        .write_all(head.as_bytes())
        .await
        .expect("second request");
    assert_eq!(read_response(&mut stream).await, "http/1.1 200 ok");
    // A third head, a byte every 100 ms: cut at the header deadline (plus a look).
    let (mut reader, mut writer) = stream.into_split();
    let first_byte = std::time::Instant::now();
    let slow = tokio::spawn(async move {
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest)).await;
    let after = first_byte.elapsed();
    assert!(
        closed.is_ok(),
        "the slow head's connection is closed by the proxy"
    );
    assert!(
        after >= Duration::from_millis(350),
        "not before the deadline: {after:?}"
    );
    slow.abort();
    assert_eq!(upstream.requests().len(), 2, "the slow head never crossed");
}

/// After its request, a keep-alive connection with nothing in progress is closed at the idle
/// timeout; and the forwarding fields name the public base's host, not the `Host` the client
/// sent (an upstream that trusts `X-Forwarded-Host` writes it into its URLs).
#[tokio::test]
async fn an_idle_connection_is_closed_and_the_forwarded_host_is_the_public_one() {
    let (env, upstream, proxy) = started(&[("SMART_GUARD_CLIENT_IDLE_TIMEOUT_MS", "400")]).await;
    let token = env.token("system/Patient.rs");
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let head = format!(
        "GET /fhir/Patient/1 HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("request");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.expect("answer");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection is closed by the proxy");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let public_host = proxy.addr.to_string();
    assert_eq!(
        seen[0].header("x-forwarded-host").as_deref(),
        Some(public_host.as_str())
    );
    let forwarded = seen[0].header("forwarded").unwrap_or_default();
    assert!(!forwarded.contains("evil.example"), "{forwarded}");
}

/// On one connection, each request's own fields reach the upstream, also when it repeats the
/// field names of the last ones (the proxy then reuses what it sent, with the new values put
/// in), after a change of token or interaction, and with forged identity fields added (requests
/// 6 and 7 reuse the names of 5, forged field included; 9 those of 8).
#[tokio::test]
async fn each_request_on_a_connection_sends_its_own_values_upstream() {
    let (env, upstream, proxy) = started(&[]).await;
    let reader = env.token("system/Patient.rs");
    let other = env.token("system/Patient.rs system/Observation.rs");
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let requests = [
        (
            "/fhir/Patient/1",
            &reader,
            "accept: a\r\nx-trace: 1\r\nx-trace: 1b\r\n",
        ),
        (
            "/fhir/Patient/2",
            &reader,
            "accept: b\r\nx-trace: 2\r\nx-trace: 2b\r\n",
        ),
        (
            "/fhir/Patient/3",
            &other,
            "accept: c\r\nx-trace: 3\r\nx-trace: 3b\r\n",
        ),
        (
            "/fhir/Patient?name=x",
            &other,
            "accept: d\r\nx-trace: 4\r\nx-trace: 4b\r\n",
        ),
        (
            "/fhir/Patient/5",
            &other,
            "accept: e\r\nx-smart-scopes: system/*.cruds\r\nx-trace: 5\r\nx-trace: 5b\r\n",
        ),
        // The same forged field on the next requests too: remembered names with a forged one.
        (
            "/fhir/Patient/6",
            &other,
            "accept: f\r\nx-smart-scopes: system/*.cruds\r\nx-trace: 6\r\nx-trace: 6b\r\n",
        ),
        (
            "/fhir/Patient/7",
            &other,
            "accept: g\r\nx-smart-scopes: system/*.cruds\r\nx-trace: 7\r\nx-trace: 7b\r\n",
        ),
        (
            "/fhir/Patient/8",
            &reader,
            "accept: h\r\nx-trace: 8\r\nx-trace: 8b\r\n",
        ),
        (
            "/fhir/Patient/9",
            &reader,
            "accept: i\r\nx-trace: 9\r\nx-trace: 9b\r\n",
        ),
    ];
    for (target, token, fields) in &requests {
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{fields}\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("request");
        assert_eq!(
            read_response(&mut stream).await,
            "http/1.1 200 ok",
            "{target}"
        );
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), requests.len(), "{seen:?}");
    for ((i, (target, token, _)), request) in requests.iter().enumerate().zip(&seen) {
        let n = i + 1;
        assert_eq!(request.target, *target);
        let values = |name: &str| -> Vec<&str> {
            request
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(
            values("accept"),
            [["a", "b", "c", "d", "e", "f", "g", "h", "i"][i]],
            "{n}"
        );
        // Every field, once (but the client's two `x-trace` values): no forged, empty or
        // doubled field.
        let mut names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "forwarded",
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-smart-client-id",
                "x-smart-interaction",
                "x-smart-scopes",
                "x-trace",
                "x-trace",
            ],
            "{n}"
        );
        assert!(request.headers.iter().all(|(_, v)| !v.is_empty()), "{n}");
        assert_eq!(values("x-trace"), [n.to_string(), format!("{n}b")], "{n}");
        assert_eq!(
            values("authorization"),
            [format!("Bearer {token}")],
            "{n}: its own token"
        );
        let scopes = if std::ptr::eq(*token, &reader) {
            "system/Patient.rs"
        } else {
            "system/Patient.rs system/Observation.rs"
        };
        assert_eq!(
            values("x-smart-scopes"),
            [scopes],
            "{n}: never the forged one"
        );
        let interaction = if target.contains('?') {
            "search-type"
        } else {
            "read"
        };
        assert_eq!(values("x-smart-interaction"), [interaction], "{n}");
        assert_eq!(values("x-forwarded-for"), ["127.0.0.1"], "{n}");
        assert_eq!(values("host"), [upstream.authority()], "{n}");
    }
}
