//! Real Redis servers for the fleet tests: Debian's `redis-server` on loopback ports, each in a
//! temporary directory of its own (config, log), no persistence, killed on drop. A three-node
//! Redis Cluster is made with `redis-cli --cluster create`.
//!
//! Everything here is blocking (std processes and sockets, redis-rs's synchronous API): it is
//! setup and inspection, called from the tests between their async steps.
// A support module: not every test uses every helper.
#![allow(dead_code, unreachable_pub)]

use std::{
    fs,
    io::ErrorKind,
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How long a server may take to answer PING, and a cluster to report `cluster_state:ok`.
const READY_WITHIN: Duration = Duration::from_secs(10);
const CLUSTER_OK_WITHIN: Duration = Duration::from_secs(20);
/// Cluster nodes also listen on port + 10000 (the cluster bus), which must stay a valid port.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
const INSTALL_HINT: &str =
    "install Debian's `redis-server` package (apt-get install -y redis-server; .ci/run does)";

/// One `redis-server` process on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    cluster: bool,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a free loopback port, answering PING.
    pub fn start() -> Self {
        Self::start_on_free_port(None, false)
    }

    /// A server that requires this password (`requirepass`); [`url`](Self::url) carries it.
    pub fn start_with_password(password: &str) -> Self {
        assert!(
            !password.is_empty() && !password.contains(['"', '\\', '\n', '@', ':', '/']),
            "a password the config file and the URL can carry as they are"
        );
        Self::start_on_free_port(Some(password.to_owned()), false)
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The loopback port, kept across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it: connections to the port
    /// are then refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it has already exited; wait reaps it either way.
            let _ = child.kill();
            child.wait().expect("wait for the killed redis-server");
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted), once it answers
    /// PING. Retries while the port is still busy.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(Busy) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Err(Busy) => panic!(
                    "redis-server could not listen on 127.0.0.1:{} again within {READY_WITHIN:?} \
                     (address in use); log tail:\n{}",
                    self.port,
                    self.log_tail()
                ),
            }
        }
    }

    /// Every key and its value as raw bytes, sorted by key; a value that is not a string is
    /// given as its type name (`hash`, `set`, ...).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut connection = self.connection();
        let mut entries = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(&mut connection)
                .expect("SCAN");
            for key in keys {
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query(&mut connection)
                    .expect("TYPE");
                let value = match kind.as_str() {
                    // Expired or deleted between SCAN and now.
                    "none" => continue,
                    "string" => {
                        let value: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(&key)
                            .query(&mut connection)
                            .expect("GET");
                        match value {
                            Some(value) => value,
                            None => continue,
                        }
                    }
                    _ => kind.into_bytes(),
                };
                entries.push((key, value));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        entries.sort();
        entries
    }

    /// Deletes every key (FLUSHALL).
    pub fn flush(&self) {
        redis::cmd("FLUSHALL")
            .exec(&mut self.connection())
            .expect("FLUSHALL");
    }

    /// A synchronous connection for setup and inspection.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().unwrap_or_else(|error| {
            panic!(
                "connect to redis-server on 127.0.0.1:{}: {error}",
                self.port
            )
        })
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let connection =
            redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))?;
        connection.set_read_timeout(Some(Duration::from_secs(5)))?;
        connection.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(connection)
    }

    /// A cluster node (`--cluster-enabled yes`), not yet part of a cluster.
    fn start_cluster_node() -> Self {
        Self::start_on_free_port(None, true)
    }

    fn start_on_free_port(password: Option<String>, cluster: bool) -> Self {
        for _ in 0..20 {
            let mut server = Self {
                port: free_port(cluster),
                password: password.clone(),
                cluster,
                dir: temp_dir(),
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // Someone took the port between our probe and the server's bind: another one.
                Err(Busy) => continue,
            }
        }
        panic!("no free loopback port for redis-server after 20 tries");
    }

    /// Spawns the process and waits until it answers PING; `Err(Busy)` if it could not bind.
    fn spawn_and_wait(&mut self) -> Result<(), Busy> {
        let config = self.dir.join("redis.conf");
        // A config file rather than arguments: the password stays out of the process list.
        fs::write(&config, self.config()).expect("write redis.conf");
        let output = fs::File::create(self.dir.join("stdio.log")).expect("create stdio.log");
        let child = Command::new("redis-server")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the stdio.log handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| spawn_failed("redis-server", error));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("poll redis-server") {
                self.child = None;
                if self.log_tail().contains("Address already in use") {
                    return Err(Busy);
                }
                panic!(
                    "redis-server on 127.0.0.1:{} exited ({status}) before answering PING; \
                     log tail:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if self.answers_ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on 127.0.0.1:{} did not answer PING within {READY_WITHIN:?}; \
                     log tail:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut connection) = self.try_connection() else {
            return false;
        };
        matches!(
            redis::cmd("PING")
                .query::<String>(&mut connection)
                .as_deref(),
            Ok("PONG")
        )
    }

    fn config(&self) -> String {
        let dir = self.dir.display();
        let mut config = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             protected-mode no\n\
             daemonize no\n\
             dir \"{dir}\"\n\
             logfile \"{dir}/redis.log\"\n\
             save \"\"\n\
             appendonly no\n",
            port = self.port
        );
        if let Some(password) = &self.password {
            config.push_str(&format!("requirepass \"{password}\"\n"));
        }
        if self.cluster {
            config.push_str(
                "cluster-enabled yes\n\
                 cluster-config-file nodes.conf\n\
                 cluster-node-timeout 2000\n",
            );
        }
        config
    }

    /// The last lines of the server's log and of its stdout/stderr.
    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for name in ["redis.log", "stdio.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(20);
            tail.push_str(&format!("--- {name}\n{}\n", lines[start..].join("\n")));
        }
        tail
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "redis-server 127.0.0.1:{}: config and log kept in {}",
                self.port,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Redis Cluster of `redis-server` nodes on loopback ports, each owning some hash slots (no
/// replicas).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `count` nodes (at least 3, Redis's minimum), joined by `redis-cli --cluster create`,
    /// once every node reports `cluster_state:ok`.
    pub fn start(count: usize) -> Self {
        assert!(count >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| RedisServer::start_cluster_node())
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| spawn_failed("redis-cli", error));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// `redis://127.0.0.1:PORT` for every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, for a look at one of them (its [`dump`](RedisServer::dump), its URL).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every key and its value over all nodes, sorted by key (see [`RedisServer::dump`]).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries: Vec<_> = self.nodes.iter().flat_map(RedisServer::dump).collect();
        entries.sort();
        entries
    }

    /// Deletes every key on every node.
    pub fn flush(&self) {
        for node in &self.nodes {
            node.flush();
        }
    }

    /// Waits until every node reports `cluster_state:ok` in CLUSTER INFO.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_OK_WITHIN;
        let mut last = String::new();
        loop {
            let mut all_ok = true;
            for node in &self.nodes {
                last = node
                    .try_connection()
                    .and_then(|mut connection| {
                        redis::cmd("CLUSTER").arg("INFO").query(&mut connection)
                    })
                    .unwrap_or_else(|error| error.to_string());
                if !last.contains("cluster_state:ok") {
                    all_ok = false;
                    last = format!("127.0.0.1:{}: {last}", node.port);
                    break;
                }
            }
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not ok within {CLUSTER_OK_WITHIN:?}; last CLUSTER INFO from {last}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The server could not bind its port (already in use).
struct Busy;

/// A loopback port that is free now (bound then released), and for a cluster node one whose bus
/// port (+10000) is free too.
fn free_port(cluster: bool) -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if !cluster {
            return port;
        }
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port (with a free cluster bus port) after 100 tries");
}

/// A new, empty directory under the system's temp dir.
fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "smart-guard-redis-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
    dir
}

fn spawn_failed(program: &str, error: std::io::Error) -> ! {
    if error.kind() == ErrorKind::NotFound {
        panic!("`{program}` is not on PATH: {INSTALL_HINT}");
    }
    panic!("spawn {program}: {error}");
}
