//! The dev AS, the proxy in this process or as the `smart-guard proxy` binary, an HTTP client.
#![allow(unreachable_pub)]

use std::{collections::HashMap, net::SocketAddr, process::Stdio, time::Duration};

use smart_guard::{
    Config,
    dev_server::{DevServer, ResourceServerRegistration},
    proxy::{Proxy, ProxyConfig},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const RS: &str = "fhir-proxy";
pub const RS_SECRET: &str = "proxy-s3cret";
pub const CLIENT: &str = "backend-app";

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// The development AS with the proxy registered as a resource server.
pub struct Env {
    pub server: DevServer,
}

impl Env {
    pub async fn start() -> Self {
        let server = DevServer::builder()
            .with_resource_server(ResourceServerRegistration::with_secret(RS, RS_SECRET))
            .spawn("127.0.0.1:0")
            .await
            .expect("dev AS");
        Self { server }
    }

    /// A token for [`CLIENT`] with `scope`, issued directly.
    pub fn token(&self, scope: &str) -> String {
        self.server.issue_token(CLIENT, scope).as_str().to_owned()
    }

    pub fn introspections(&self) -> usize {
        self.server.introspection_count()
    }

    /// The guard's and the proxy's settings for an upstream, as environment variables.
    pub fn vars(&self, upstream: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = [
            (
                "SMART_GUARD_INTROSPECTION_URL",
                self.server.introspection_url(),
            ),
            ("SMART_GUARD_TOKEN_URL", self.server.token_url()),
            ("SMART_GUARD_CLIENT_ID", RS),
            ("SMART_GUARD_CLIENT_SECRET", RS_SECRET),
            ("SMART_GUARD_BASE_PATH", "/fhir"),
            ("SMART_GUARD_UPSTREAM_URL", upstream),
            ("SMART_GUARD_LISTEN_ADDR", "127.0.0.1:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        vars
    }
}

/// A proxy running in this process (its own tasks, its own listener).
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub public_base: String,
    /// The admin listener, when `SMART_GUARD_ADMIN_ADDR` is set.
    pub admin: Option<SocketAddr>,
}

pub async fn spawn_proxy(env: &Env, upstream: &str, extra: &[(&str, &str)]) -> RunningProxy {
    let vars = env.vars(upstream, extra);
    let lookup = |k: &str| vars.get(k).cloned();
    let guard = Config::from_lookup(lookup).expect("guard settings");
    let settings = ProxyConfig::from_lookup(lookup).expect("proxy settings");
    let proxy = Proxy::bind(settings, guard).await.expect("bind");
    let addr = proxy.local_addr().expect("addr");
    let public_base = proxy.public_base().as_str().to_owned();
    let admin = proxy.admin_addr().map(|addr| addr.expect("admin addr"));
    tokio::spawn(proxy.serve(std::future::pending()));
    RunningProxy {
        addr,
        public_base,
        admin,
    }
}

/// The `smart-guard proxy` binary as a process of its own.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub public_base: String,
}

pub async fn proxy_process(env: &Env, upstream: &str, extra: &[(&str, &str)]) -> ProxyProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smart-guard"))
        .arg("proxy")
        .env_clear()
        .envs(env.vars(upstream, extra))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start smart-guard proxy");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the proxy starts within 20 s")
        .expect("read")
        .expect("a line");
    let started: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    ProxyProcess {
        child,
        addr: started["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening"),
        public_base: started["public_base"]
            .as_str()
            .expect("public_base")
            .to_owned(),
    }
}

impl ProxyProcess {
    fn status_field(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("field")
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Peak resident memory, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within 20 s")
            .expect("wait")
    }
}
