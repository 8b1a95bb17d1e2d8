//! Fleet mode (feature `redis`) against real Redis servers on loopback ports: Debian's
//! `redis-server`, installed by `.ci/run` when missing, started and stopped by the tests.
//!
//! `guard.rs` holds the fleet's own tests: three replicas (`replicas.rs`: separate layers, each
//! with its own first level and HTTP server) sharing one Redis, or a three-node Redis Cluster.
//! The tests here prove the harness itself (`redis.rs`): servers start, answer through redis-rs's
//! async API, stop and restart on the same port, and a cluster forms. `#[ignore]`d: they need
//! `redis-server` and `redis-cli`; `.ci/run` installs both and runs them with `--ignored`.
#![cfg(all(feature = "redis", feature = "dev-server"))]

mod guard;
mod redis;
mod replicas;

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, TcpStream},
    time::{Duration, Instant},
};

use ::redis::{
    Client, RedisResult, aio::ConnectionLike as AsyncConnectionLike, aio::ConnectionManager,
    aio::ConnectionManagerConfig, cluster::ClusterClient, cmd,
};
use futures_util::StreamExt;

use crate::redis::{RedisCluster, RedisServer};

/// Test patience for one async Redis call.
const CALL_WITHIN: Duration = Duration::from_secs(5);

async fn set(
    connection: &mut impl AsyncConnectionLike,
    key: &str,
    value: &[u8],
) -> RedisResult<()> {
    cmd("SET").arg(key).arg(value).exec_async(connection).await
}

async fn get(connection: &mut impl AsyncConnectionLike, key: &str) -> RedisResult<Option<Vec<u8>>> {
    cmd("GET").arg(key).query_async(connection).await
}

/// A connection manager that gives up on a call quickly, so a stopped server shows as errors.
async fn manager(url: &str) -> ConnectionManager {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    let client = Client::open(url).expect("a redis URL");
    ConnectionManager::new_with_config(client, config)
        .await
        .expect("connection manager")
}

fn refused(port: u16) -> bool {
    let connect = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), CALL_WITHIN);
    matches!(connect, Err(error) if error.kind() == ErrorKind::ConnectionRefused)
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_single_redis_server_starts_answers_and_restarts_on_the_same_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    let mut connection = manager(&server.url()).await;
    set(&mut connection, "greeting", b"hello")
        .await
        .expect("SET");
    set(&mut connection, "raw", &[0, 255, b'\r', b'\n'])
        .await
        .expect("SET raw bytes");
    cmd("HSET")
        .arg("a-hash")
        .arg("field")
        .arg("value")
        .exec_async(&mut connection)
        .await
        .expect("HSET");
    assert_eq!(
        get(&mut connection, "greeting").await.expect("GET"),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        server.dump(),
        vec![
            (b"a-hash".to_vec(), b"hash".to_vec()),
            (b"greeting".to_vec(), b"hello".to_vec()),
            (b"raw".to_vec(), vec![0, 255, b'\r', b'\n']),
        ]
    );
    server.flush();
    assert_eq!(server.dump(), vec![]);

    server.stop();
    assert!(!server.is_running());
    assert!(refused(port), "nothing listens on {port} once stopped");
    let down = tokio::time::timeout(CALL_WITHIN, get(&mut connection, "greeting"))
        .await
        .expect("a call to a stopped server fails within 5 s");
    assert!(down.is_err(), "a call to a stopped server fails: {down:?}");

    server.restart();
    assert_eq!(server.port(), port);
    assert!(!refused(port));
    assert_eq!(server.dump(), vec![], "nothing is persisted");
    // The same manager reconnects on its own; its first calls may still fail.
    let deadline = Instant::now() + CALL_WITHIN;
    while set(&mut connection, "greeting", b"again").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the manager reconnects within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&mut connection, "greeting").await.expect("GET"),
        Some(b"again".to_vec())
    );
    assert_eq!(
        server.dump(),
        vec![(b"greeting".to_vec(), b"again".to_vec())]
    );
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_server_with_a_password_takes_it_in_the_url_and_refuses_clients_without_it() {
    let server = RedisServer::start_with_password("s3cret-pw");
    let port = server.port();
    assert_eq!(server.url(), format!("redis://:s3cret-pw@127.0.0.1:{port}"));
    let mut connection = manager(&server.url()).await;
    set(&mut connection, "k", b"v")
        .await
        .expect("SET with the password");
    assert_eq!(server.dump(), vec![(b"k".to_vec(), b"v".to_vec())]);

    let anonymous = Client::open(format!("redis://127.0.0.1:{port}")).expect("a redis URL");
    let refused = match anonymous.get_multiplexed_async_connection().await {
        Ok(mut connection) => get(&mut connection, "k").await.map(|_| ()),
        Err(error) => Err(error),
    };
    let error = refused.expect_err("a client without the password is refused");
    assert!(
        error.to_string().contains("NOAUTH"),
        "refused for want of authentication: {error}"
    );
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_subscriber_receives_what_another_connection_publishes() {
    let server = RedisServer::start();
    let client = Client::open(server.url()).expect("a redis URL");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
    pubsub.subscribe("revoked").await.expect("SUBSCRIBE");
    let mut publisher = manager(&server.url()).await;
    let receivers: i64 = cmd("PUBLISH")
        .arg("revoked")
        .arg("token-digest")
        .query_async(&mut publisher)
        .await
        .expect("PUBLISH");
    assert_eq!(receivers, 1);
    let message = tokio::time::timeout(CALL_WITHIN, pubsub.on_message().next())
        .await
        .expect("the message arrives within 5 s")
        .expect("the subscription is open");
    assert_eq!(message.get_channel_name(), "revoked");
    assert_eq!(message.get_payload_bytes(), b"token-digest");
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_three_node_cluster_forms_and_routes_keys_to_every_node() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    let client = ClusterClient::new(urls).expect("a cluster client");
    let mut connection = client
        .get_async_connection()
        .await
        .expect("cluster connection");
    let mut expected = Vec::new();
    for i in 0..60 {
        let (key, value) = (format!("key-{i:02}"), format!("value-{i}"));
        set(&mut connection, &key, value.as_bytes())
            .await
            .expect("SET");
        expected.push((key.into_bytes(), value.into_bytes()));
    }
    for (key, value) in &expected {
        let key = std::str::from_utf8(key).expect("ASCII key");
        assert_eq!(
            get(&mut connection, key).await.expect("GET").as_ref(),
            Some(value)
        );
    }
    expected.sort();
    assert_eq!(cluster.dump(), expected);
    for node in cluster.nodes() {
        let keys = node.dump().len();
        assert!(
            (1..60).contains(&keys),
            "every node holds some of the keys, none all: {} holds {keys}",
            node.port()
        );
    }
    cluster.flush();
    assert_eq!(cluster.dump(), vec![]);
}

#[tokio::test]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_message_published_on_one_cluster_node_reaches_subscribers_on_the_others() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let mut subscribers = Vec::new();
    for url in &urls[1..] {
        let client = Client::open(url.as_str()).expect("a redis URL");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
        pubsub.subscribe("revoked").await.expect("SUBSCRIBE");
        subscribers.push(pubsub);
    }
    let publisher = Client::open(urls[0].as_str()).expect("a redis URL");
    let mut publisher = publisher
        .get_multiplexed_async_connection()
        .await
        .expect("connection to the first node");
    cmd("PUBLISH")
        .arg("revoked")
        .arg("token-digest")
        .exec_async(&mut publisher)
        .await
        .expect("PUBLISH");
    for pubsub in &mut subscribers {
        let message = tokio::time::timeout(CALL_WITHIN, pubsub.on_message().next())
            .await
            .expect("the message crosses the cluster bus within 5 s")
            .expect("the subscription is open");
        assert_eq!(message.get_payload_bytes(), b"token-digest");
    }
}
