//! Through the proxy to a real FHIR engine nobody here wrote: Medplum's FHIR router over its
//! in-memory repository (`tests/upstream`, pinned by its lock file). The engine's adapter logs
//! every request it receives and the resource types its repository read or wrote.
//!
//! `#[ignore]`d: they need node and `npm ci` in `tests/upstream`; `.ci/run` installs both and
//! runs them with `--ignored`.

use std::{
    collections::BTreeSet,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::support::{Env, http, spawn_proxy};

const NEEDS_NODE: &str = "needs node and `npm ci` in tests/upstream (.ci/run does both)";

/// The Medplum adapter on a loopback port.
struct Engine {
    _child: Child,
    origin: String,
    base: String,
}

impl Engine {
    async fn start() -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream");
        assert!(
            std::path::Path::new(dir).join("node_modules").exists(),
            "run `npm ci` in {dir} first"
        );
        let mut child = Command::new("node")
            .args(["server.mjs", "--port", "0", "--base", "/fhir"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::time::timeout(
            Duration::from_secs(60),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .expect("the engine starts within 60 s")
        .expect("read")
        .expect("ready line");
        let ready: Value = serde_json::from_str(&line).expect("JSON ready line");
        let origin = format!("http://127.0.0.1:{}", ready["port"]);
        let base = format!("{origin}/fhir");
        Self {
            _child: child,
            origin,
            base,
        }
    }

    async fn log(&self) -> Vec<Value> {
        http()
            .get(format!("{}/__log", self.origin))
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("log JSON")
    }

    async fn reset(&self) {
        http()
            .post(format!("{}/__reset", self.origin))
            .send()
            .await
            .expect("reset");
    }
}

/// One request, sent as is to a base URL.
#[derive(Clone, Debug)]
struct Call {
    method: &'static str,
    path: String,
    body: Option<String>,
    content_type: Option<&'static str>,
    if_none_exist: Option<String>,
}

impl Call {
    fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET",
            path: path.into(),
            body: None,
            content_type: None,
            if_none_exist: None,
        }
    }

    fn with_body(mut self, method: &'static str, content_type: &'static str, body: Value) -> Self {
        self.method = method;
        self.content_type = Some(content_type);
        self.body = Some(body.to_string());
        self
    }

    async fn send(
        &self,
        base: &str,
        token: Option<&str>,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).expect("method");
        let mut request = http().request(method, format!("{base}{}", self.path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = self.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(query) = &self.if_none_exist {
            request = request.header("if-none-exist", query);
        }
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, response.text().await.expect("body"), headers)
    }
}

const FHIR: &str = "application/fhir+json";

#[tokio::test]
#[ignore = "needs node and `npm ci` in tests/upstream (.ci/run does both)"]
async fn every_interaction_the_scopes_allow_returns_what_the_engine_returns() {
    let _ = NEEDS_NODE;
    let engine = Engine::start().await;
    let env = Env::start().await;
    let proxy = spawn_proxy(&env, &engine.base, &[]).await;
    let public = proxy.public_base.clone();
    let all = env.token(
        "system/Patient.cruds system/Observation.cruds system/Encounter.rs system/Practitioner.rs",
    );
    let rewritten = |text: &str| text.replace(&engine.base, &public);

    // Reads and searches: the proxy's answer is the engine's, with the public base.
    for path in [
        "/Patient/pat-1",
        "/Patient?name=Smith",
        "/Observation?patient=pat-1&_include=Observation:encounter:Encounter",
        "/Patient?_id=pat-1&_revinclude=Observation:subject",
        "/Patient/pat-1/_history",
        "/Encounter?_count=1",
    ] {
        let (status, body, _) = Call::get(path).send(&public, Some(&all)).await;
        let (direct_status, direct, _) = Call::get(path).send(&engine.base, None).await;
        assert_eq!((status, direct_status), (200, 200), "{path}: {body}");
        assert_eq!(body, rewritten(&direct), "{path}");
    }

    // Create: 201 and a Location under the public base.
    let patient = json!({ "resourceType": "Patient", "name": [{ "family": "Proxy" }] });
    let (status, body, headers) = Call::get("/Patient")
        .with_body("POST", FHIR, patient.clone())
        .send(&public, Some(&all))
        .await;
    assert_eq!(status, 201, "{body}");
    let location = headers["location"].to_str().expect("location");
    assert!(
        location.starts_with(&format!("{public}/Patient/")),
        "{location}"
    );
    let created: Value = serde_json::from_str(&body).expect("JSON");
    let id = created["id"].as_str().expect("id").to_owned();

    // Update, conditional create (a match: 200 with the existing one), history, delete.
    let update = json!({ "resourceType": "Patient", "id": id, "name": [{ "family": "Updated" }] });
    let (status, body, _) = Call::get(format!("/Patient/{id}"))
        .with_body("PUT", FHIR, update)
        .send(&public, Some(&all))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut conditional = Call::get("/Patient").with_body("POST", FHIR, patient);
    conditional.if_none_exist = Some("identifier=http://example.org/mrn|MRN-1".to_owned());
    let (status, body, _) = conditional.send(&public, Some(&all)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pat-1"), "{body}");
    let (status, body, _) = Call::get(format!("/Patient/{id}/_history"))
        .send(&public, Some(&all))
        .await;
    assert_eq!(status, 200);
    // Every entry of the history names its version under the public base.
    let history: Value = serde_json::from_str(&body).expect("history JSON");
    let entries = history["entry"].as_array().expect("entries");
    assert!(!entries.is_empty(), "{body}");
    for entry in entries {
        let full_url = entry["fullUrl"].as_str().expect("fullUrl");
        assert!(
            full_url.starts_with(&format!("{public}/Patient/{id}")),
            "{full_url}"
        );
    }
    assert!(!body.contains(&engine.base), "no upstream URL left: {body}");
    let (status, _, _) = Call::get(format!("/Patient/{id}"))
        .with_body("DELETE", FHIR, json!({}))
        .send(&public, Some(&all))
        .await;
    assert_eq!(status, 200);

    // Batch and transaction, each entry checked by the guard and carried out by the engine.
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            { "request": { "method": "GET", "url": "Patient/pat-2" } },
            { "request": { "method": "GET", "url": "Observation?patient=pat-2" } }
        ]
    });
    let (status, body, _) = Call::get("")
        .with_body("POST", FHIR, batch)
        .send(&public, Some(&all))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("batch-response"), "{body}");
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:0b8e3b5c-0000-4000-8000-000000000001",
              "resource": { "resourceType": "Patient", "name": [{ "family": "Tx" }] },
              "request": { "method": "POST", "url": "Patient" } },
            { "resource": { "resourceType": "Observation", "status": "final",
                            "code": { "text": "x" },
                            "subject": { "reference": "urn:uuid:0b8e3b5c-0000-4000-8000-000000000001" } },
              "request": { "method": "POST", "url": "Observation" } }
        ]
    });
    let (status, body, _) = Call::get("")
        .with_body("POST", FHIR, transaction)
        .send(&public, Some(&all))
        .await;
    assert_eq!(status, 200, "{body}");
    // Each created resource's location is under the public base.
    let response: Value = serde_json::from_str(&body).expect("transaction-response JSON");
    let locations: Vec<&str> = response["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["location"].as_str().expect("location"))
        .collect();
    assert_eq!(locations.len(), 2, "{body}");
    assert!(
        locations[0].starts_with(&format!("{public}/Patient/")),
        "{locations:?}"
    );
    assert!(
        locations[1].starts_with(&format!("{public}/Observation/")),
        "{locations:?}"
    );
    assert!(!body.contains(&engine.base), "{body}");

    // Denied: answered by the proxy, never seen by the engine.
    engine.reset().await;
    let reader = env.token("system/Patient.rs");
    for (call, status) in [
        (Call::get("/Observation"), 403),
        (Call::get("/Patient?_revinclude=Observation:subject"), 403),
        (
            Call::get("/Patient/pat-1").with_body("DELETE", FHIR, json!({})),
            403,
        ),
        (
            Call::get("").with_body(
                "POST",
                FHIR,
                json!({ "resourceType": "Bundle", "type": "batch", "entry": [
                    { "request": { "method": "GET", "url": "Patient/pat-1" } },
                    { "request": { "method": "GET", "url": "Encounter/enc-1" } } ] }),
            ),
            403,
        ),
    ] {
        let (got, body, _) = call.send(&public, Some(&reader)).await;
        assert_eq!(got, status, "{call:?}: {body}");
    }
    let (got, _, _) = Call::get("/Patient/pat-1").send(&public, None).await;
    assert_eq!(got, 401);
    let log = engine.log().await;
    assert!(
        log.is_empty(),
        "denied requests reached the engine: {log:#?}"
    );
}

/// The scopes a request carried upstream (`X-Smart-Scopes`), as a model apart from the guard's.
struct Granted(Vec<(String, String)>);

impl Granted {
    fn parse(scopes: &str) -> Self {
        Self(
            scopes
                .split_whitespace()
                .filter_map(|s| s.strip_prefix("system/"))
                .filter_map(|s| s.split('?').next())
                .filter_map(|s| s.split_once('.'))
                .map(|(ty, letters)| (ty.to_owned(), letters.to_owned()))
                .collect(),
        )
    }

    /// Whether any scope names `ty` (or `*`) with some permission.
    fn covers(&self, ty: &str) -> bool {
        self.0
            .iter()
            .any(|(t, letters)| (t == ty || t == "*") && !letters.is_empty())
    }

    /// Whether any scope lets the client write `ty`: `c`, `u` or `d` (v2), `write` or `*` (v1).
    fn covers_write(&self, ty: &str) -> bool {
        self.0.iter().any(|(t, letters)| {
            (t == ty || t == "*")
                && (letters == "write"
                    || letters == "*"
                    || (letters != "read" && letters.contains(['c', 'u', 'd'])))
        })
    }
}

const TYPES: [&str; 4] = ["Patient", "Observation", "Encounter", "Practitioner"];
const IDS: [(&str, &str); 7] = [
    ("Patient", "pat-1"),
    ("Patient", "pat-2"),
    ("Patient", "pat-3"),
    ("Observation", "obs-1"),
    ("Observation", "obs-2"),
    ("Encounter", "enc-1"),
    ("Practitioner", "prac-1"),
];
const SCOPES: [&str; 14] = [
    "system/Patient.rs",
    "system/Patient.read",
    "system/Patient.cruds",
    "system/Patient.c",
    "system/Observation.rs",
    "system/Observation.s",
    "system/Observation.write",
    "system/Observation.cud",
    "system/Encounter.r",
    "system/Encounter.rs",
    "system/Practitioner.s",
    "system/Practitioner.read",
    "system/*.rs",
    "system/Patient.rs?name=Smith",
];

fn search_params(rng: &mut StdRng, ty: &str) -> String {
    let mut params: Vec<String> = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        params.push(
            match rng.random_range(0..9) {
                0 => "_include=Observation:subject",
                1 => "_include=Observation:encounter",
                2 => "_revinclude=Observation:subject",
                3 => "_include=Patient:general-practitioner",
                4 => "_include:iterate=Encounter:participant",
                5 => "subject:Patient.name=Smith",
                6 => "_has:Observation:subject:status=final",
                7 => "name=Smith",
                _ => "_count=2",
            }
            .to_owned(),
        );
    }
    if ty == "Patient" && rng.random_bool(0.2) {
        params.push("_revinclude=Encounter:subject".to_owned());
    }
    params.join("&")
}

fn resource(ty: &str, id: Option<&str>) -> Value {
    let mut resource = match ty {
        "Observation" => json!({ "resourceType": "Observation", "status": "final",
            "code": { "text": "oracle" }, "subject": { "reference": "Patient/pat-1" } }),
        "Encounter" => json!({ "resourceType": "Encounter", "status": "finished",
            "class": { "code": "AMB" }, "subject": { "reference": "Patient/pat-2" } }),
        other => json!({ "resourceType": other, "name": [{ "family": "Oracle" }] }),
    };
    if let Some(id) = id {
        resource["id"] = json!(id);
    }
    resource
}

fn entry(rng: &mut StdRng) -> Value {
    let ty = *TYPES.choose(rng).expect("type");
    match rng.random_range(0..4) {
        0 => {
            let (ty, id) = *IDS.choose(rng).expect("id");
            json!({ "request": { "method": "GET", "url": format!("{ty}/{id}") } })
        }
        1 => {
            json!({ "request": { "method": "GET", "url": format!("{ty}?{}", search_params(rng, ty)) } })
        }
        2 => json!({ "resource": resource(ty, None), "request": { "method": "POST", "url": ty } }),
        _ => {
            json!({ "request": { "method": "DELETE", "url": format!("{ty}/oracle-{}", rng.random_range(0..50)) } })
        }
    }
}

fn generate(rng: &mut StdRng) -> Call {
    let ty = *TYPES.choose(rng).expect("type");
    match rng.random_range(0..14) {
        // A body of another type than the URL names: the proxy does not read it (§11), the
        // engine must refuse it; the oracle below says whether it touched the body's type.
        12 => {
            let other = *TYPES.choose(rng).expect("type");
            Call::get(format!("/{ty}")).with_body("POST", FHIR, resource(other, None))
        }
        13 => {
            let other = *TYPES.choose(rng).expect("type");
            let id = format!("oracle-{}", rng.random_range(0..50));
            Call::get(format!("/{ty}/{id}")).with_body("PUT", FHIR, resource(other, Some(&id)))
        }
        0 | 1 => {
            let (ty, id) = *IDS.choose(rng).expect("id");
            Call::get(format!("/{ty}/{id}"))
        }
        2 | 3 => Call::get(format!("/{ty}?{}", search_params(rng, ty))),
        4 => {
            let mut call = Call::get(format!("/{ty}/_search"));
            call.method = "POST";
            call.content_type = Some("application/x-www-form-urlencoded");
            call.body = Some(search_params(rng, ty));
            call
        }
        5 => {
            let mut call = Call::get(format!("/{ty}")).with_body("POST", FHIR, resource(ty, None));
            if rng.random_bool(0.5) {
                call.if_none_exist = Some(format!("_id=oracle-{}", rng.random_range(0..50)));
            }
            call
        }
        6 => {
            let id = format!("oracle-{}", rng.random_range(0..50));
            Call::get(format!("/{ty}/{id}")).with_body("PUT", FHIR, resource(ty, Some(&id)))
        }
        7 => Call::get(format!("/{ty}/oracle-{}", rng.random_range(0..50))).with_body(
            "DELETE",
            FHIR,
            json!({}),
        ),
        8 => Call::get(format!("/{ty}/_history")),
        9 => {
            let mut a = TYPES.to_vec();
            a.retain(|t| *t != ty);
            Call::get(format!("?_type={ty},{}", a.choose(rng).expect("type")))
        }
        _ => {
            let kind = if rng.random_bool(0.5) {
                "batch"
            } else {
                "transaction"
            };
            let entries: Vec<Value> = (0..rng.random_range(1..4)).map(|_| entry(rng)).collect();
            Call::get("").with_body(
                "POST",
                FHIR,
                json!({ "resourceType": "Bundle", "type": kind, "entry": entries }),
            )
        }
    }
}

/// Every request the engine received through the proxy touched only resource types its
/// token's scopes cover, and wrote only types they let it write. Zero exceptions, over 2,000
/// generated requests, some with a body of another type than their URL.
#[tokio::test]
#[ignore = "needs node and `npm ci` in tests/upstream (.ci/run does both)"]
async fn across_two_thousand_generated_requests_the_engine_touches_only_types_the_scopes_cover() {
    let engine = Engine::start().await;
    let env = Env::start().await;
    let proxy = spawn_proxy(&env, &engine.base, &[]).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_2026_1129);
    let tokens: Vec<String> = (0..24)
        .map(|_| {
            let count = rng.random_range(1..4);
            let scopes: Vec<&str> = SCOPES.choose_multiple(&mut rng, count).copied().collect();
            env.token(&scopes.join(" "))
        })
        .collect();
    let calls: Vec<(Call, String)> = (0..2_000)
        .map(|_| {
            let token = tokens.choose(&mut rng).expect("token").clone();
            (generate(&mut rng), token)
        })
        .collect();
    let statuses: Arc<Mutex<Vec<u16>>> = Arc::default();
    let queue = Arc::new(Mutex::new(calls));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (queue, statuses, base) = (
            Arc::clone(&queue),
            Arc::clone(&statuses),
            proxy.public_base.clone(),
        );
        workers.spawn(async move {
            loop {
                let Some((call, token)) = queue.lock().expect("lock").pop() else {
                    return;
                };
                let (status, _, _) = call.send(&base, Some(&token)).await;
                statuses.lock().expect("lock").push(status);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    let statuses = statuses.lock().expect("lock").clone();
    let allowed = statuses
        .iter()
        .filter(|s| **s < 400 || **s == 404 || **s == 410 || **s == 412)
        .count();
    let log = engine.log().await;
    let mut violations = Vec::new();
    let mut touched_types = BTreeSet::new();
    for record in &log {
        let scopes = record["headers"]["x-smart-scopes"]
            .as_str()
            .unwrap_or_default();
        let granted = Granted::parse(scopes);
        for ty in record["types"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            touched_types.insert(ty.to_owned());
            if !granted.covers(ty) {
                violations.push(format!(
                    "{} {} touched {ty} with scopes {scopes:?}",
                    record["method"], record["path"]
                ));
            }
        }
        // And it wrote only types the scopes let it write (a body of another type than the
        // URL, which the proxy does not read, must not get through the engine either).
        for ty in record["writes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !granted.covers_write(ty) {
                violations.push(format!(
                    "{} {} wrote {ty} with scopes {scopes:?}",
                    record["method"], record["path"]
                ));
            }
        }
    }
    let writing = log
        .iter()
        .filter(|r| r["writes"].as_array().is_some_and(|w| !w.is_empty()))
        .count();
    eprintln!(
        "oracle: {} requests, {} statuses < 400 (or 404/410/412 from the engine), {} reached the engine, {writing} of them wrote, types touched {touched_types:?}",
        statuses.len(),
        allowed,
        log.len()
    );
    assert!(
        writing >= 50,
        "enough writes for the write check to mean something: {writing}"
    );
    assert_eq!(statuses.len(), 2_000);
    assert!(
        log.len() >= 400,
        "the mix lets enough through to mean something: {}",
        log.len()
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
