//! Guard replicas in this process: each its own `SmartGuardLayer` (its own first level) behind
//! its own axum server on a loopback port, all sharing one Redis (or cluster) and the dev AS.
#![allow(unreachable_pub, dead_code)]

use std::{path::PathBuf, time::Duration};

use axum::{Router, routing::get};
use smart_guard::{
    Config, RevocationSecret, RevocationService, SmartGuardLayer,
    dev_server::{DevServer, ResourceServerRegistration},
    fleet::{FleetConfig, FleetKey},
};

pub const RS: &str = "fhir-fleet";
pub const RS_SECRET: &str = "fleet-rs-s3cret";
pub const CLIENT: &str = "fleet-backend-app";
pub const ADMIN_SECRET: &str = "revocation-secret-0123456789";
pub const SCOPE: &str = "system/Patient.rs system/Observation.rs";

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub async fn dev_as() -> DevServer {
    DevServer::builder()
        .with_resource_server(ResourceServerRegistration::with_secret(RS, RS_SECRET))
        .spawn("127.0.0.1:0")
        .await
        .expect("dev AS")
}

/// One replica: its layer (stats) and its base URL.
pub struct Replica {
    pub layer: SmartGuardLayer,
    pub base: String,
}

impl Replica {
    /// A replica of the fleet on `urls` with the fleet key `key`.
    pub async fn start(auth: &DevServer, urls: &[String], key: &[u8]) -> Self {
        Self::start_with(auth, urls, key, |c| c).await
    }

    pub async fn start_with(
        auth: &DevServer,
        urls: &[String],
        key: &[u8],
        adjust: impl FnOnce(Config) -> Config,
    ) -> Self {
        // The guard's warnings (a Redis command that failed and why, the breaker opening) in
        // the output of a test that fails: the counters say that Redis failed, not how.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("smart_guard=warn")
            .with_test_writer()
            .try_init();
        let fleet = FleetConfig::new(urls, FleetKey::new(key).expect("fleet key"))
            .expect("fleet")
            // Generous: a debug build serving 300 requests beside other tests; production uses 50 ms.
            .with_timeout(Duration::from_millis(1_000));
        let config = Config::new(
            auth.introspection_url().parse().expect("url"),
            RS,
            RS_SECRET,
        )
        .with_base_path("/fhir")
        .expect("base path")
        .with_fleet(fleet);
        let layer = SmartGuardLayer::new(adjust(config)).expect("layer");
        let app = Router::new()
            .route(
                "/fhir/Patient/{id}",
                get(|| async { "{\"resourceType\":\"Patient\"}" }),
            )
            .layer(layer.clone())
            .route_service(
                "/revoke",
                RevocationService::new(
                    layer.clone(),
                    RevocationSecret::new(ADMIN_SECRET.as_bytes().to_vec()).expect("secret"),
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { layer, base }
    }

    /// The status of `GET /fhir/Patient/1` with `token`.
    pub async fn read(&self, token: &str) -> u16 {
        http()
            .get(format!("{}/fhir/Patient/1", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    }

    /// Posts a revocation of `token` to this replica's `/revoke` with `secret`.
    pub async fn revoke(&self, token: &str, secret: &str) -> u16 {
        http()
            .post(format!("{}/revoke", self.base))
            .bearer_auth(secret)
            .form(&[("token", token)])
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    }
}

/// A fresh fleet key file content.
pub fn fleet_key(byte: u8) -> Vec<u8> {
    (0..32).map(|i| byte.wrapping_add(i)).collect()
}

/// A temp file holding `content`.
pub fn temp_file(name: &str, content: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleet-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns how long it took.
pub async fn within<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
