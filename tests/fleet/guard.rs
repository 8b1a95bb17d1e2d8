//! The fleet's promises, over loopback HTTP with real Redis and the dev AS: one AS call between
//! replicas, revocation heard by every replica within a second, nothing readable in Redis,
//! tampered or foreign values never used, Redis failing without a 5xx or a wrong allow.

use std::{sync::Arc, time::Duration};

use crate::{
    redis::{RedisCluster, RedisServer},
    replicas::{ADMIN_SECRET, CLIENT, Replica, SCOPE, dev_as, fleet_key, within},
};

const NEEDS: &str = "needs redis-server and redis-cli (.ci/run installs them)";

/// 300 concurrent first requests for one new token, spread over `replicas`: every one allowed,
/// exactly one AS call between them.
async fn one_call_for_300_first_requests(
    replicas: &[Arc<Replica>],
    auth: &smart_guard::dev_server::DevServer,
) {
    let token = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    let before = auth.introspection_count();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let replica = Arc::clone(&replicas[i % replicas.len()]);
        let token = token.clone();
        tasks.push(tokio::spawn(async move { replica.read(&token).await }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    let stats: Vec<_> = replicas.iter().map(|r| r.layer.stats()).collect();
    assert_eq!(
        auth.introspection_count() - before,
        1,
        "one AS call for the fleet: {stats:#?}"
    );
}

/// Revoked at the AS, then through replica A's `/revoke`: A, B and C answer 401 within 1 s.
async fn revocation_reaches_every_replica(
    replicas: &[Arc<Replica>],
    auth: &smart_guard::dev_server::DevServer,
) {
    let token = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    for replica in replicas {
        assert_eq!(replica.read(&token).await, 200, "warm on every replica");
    }
    // Every replica's subscription is up before the revocation is sent: each has heard the
    // warm-up probes.
    for replica in replicas {
        let up = within(Duration::from_secs(5), || async {
            replica.layer.stats().revocations_received > 0
        })
        .await;
        assert!(up.is_some(), "{} hears revocations", replica.base);
    }
    assert!(auth.revoke_token(&token), "revoked at the AS");
    assert_eq!(
        replicas[0]
            .revoke(&token, "wrong-secret-wrong-secret")
            .await,
        401
    );
    assert_eq!(
        replicas[0].read(&token).await,
        200,
        "a refused revocation changes nothing"
    );
    assert_eq!(replicas[0].revoke(&token, ADMIN_SECRET).await, 200);
    let sent = tokio::time::Instant::now();
    for replica in replicas {
        let took = within(Duration::from_secs(1), || async {
            replica.read(&token).await == 401
        })
        .await;
        assert!(
            took.is_some(),
            "{} still allows the token 1 s after the revocation",
            replica.base
        );
    }
    let elapsed = sent.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    for replica in &replicas[1..] {
        assert!(replica.layer.stats().revocations_received >= 1);
    }
}

/// Three replicas of one fleet, each warmed up: it has served a request and reached Redis.
async fn three_replicas(
    auth: &smart_guard::dev_server::DevServer,
    urls: &[String],
) -> Vec<Arc<Replica>> {
    let key = fleet_key(1);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let replica = Replica::start(auth, urls, &key).await;
        let warm = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
        assert_eq!(replica.read(&warm).await, 200);
        replicas.push(Arc::new(replica));
    }
    // Every replica reaches Redis and hears revocations: revoking a made-up token (which
    // touches no real entry) until each has heard one.
    let heard = within(Duration::from_secs(10), || async {
        let _ = replicas[0].layer.invalidate("warm-up-probe").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        replicas
            .iter()
            .all(|r| r.layer.stats().revocations_received > 0)
    })
    .await;
    assert!(heard.is_some(), "every replica hears revocations");
    // And every replica's commands reach Redis: a cluster is connected in the background, and a
    // command that failed meanwhile may have opened the Redis breaker (for 1 s), which would
    // send the next requests to the AS. Each round, a new token read on the first replica and
    // then on the others, until the others find it in Redis.
    let shared = within(Duration::from_secs(10), || async {
        let token = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
        let before: Vec<u64> = replicas
            .iter()
            .map(|r| r.layer.stats().shared_hits)
            .collect();
        assert_eq!(replicas[0].read(&token).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut all = true;
        for (replica, before) in replicas.iter().zip(&before).skip(1) {
            assert_eq!(replica.read(&token).await, 200);
            all &= replica.layer.stats().shared_hits > *before;
        }
        all
    })
    .await;
    assert!(shared.is_some(), "every replica reads Redis");
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn three_replicas_make_one_as_call_for_300_concurrent_first_requests() {
    let _ = NEEDS;
    let redis = RedisServer::start();
    let auth = dev_as().await;
    let replicas = three_replicas(&auth, &[redis.url()]).await;
    one_call_for_300_first_requests(&replicas, &auth).await;
    let hits: u64 = replicas.iter().map(|r| r.layer.stats().shared_hits).sum();
    let waits: u64 = replicas
        .iter()
        .map(|r| r.layer.stats().shared_lock_waits)
        .sum();
    assert!(
        hits >= 1 && waits >= 1,
        "the others read the holder's entry: {hits} hits, {waits} waits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_token_revoked_through_replica_a_is_refused_by_b_and_c_within_a_second() {
    let redis = RedisServer::start();
    let auth = dev_as().await;
    let replicas = three_replicas(&auth, &[redis.url()]).await;
    revocation_reaches_every_replica(&replicas, &auth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_three_node_cluster_passes_single_flight_and_revocation() {
    let cluster = RedisCluster::start(3);
    let auth = dev_as().await;
    let replicas = three_replicas(&auth, &cluster.urls()).await;
    one_call_for_300_first_requests(&replicas, &auth).await;
    revocation_reaches_every_replica(&replicas, &auth).await;
    let entries = cluster.dump();
    assert!(!entries.is_empty(), "entries were written to the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn redis_holds_no_token_scope_or_client_id_in_clear() {
    let redis = RedisServer::start();
    let auth = dev_as().await;
    let replicas = three_replicas(&auth, &[redis.url()]).await;
    let token = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    let unknown = "made-up-token-for-the-inactive-entry";
    for replica in &replicas {
        assert_eq!(replica.read(&token).await, 200);
        assert_eq!(replica.read(unknown).await, 401);
    }
    let revoked = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    assert_eq!(replicas[0].read(&revoked).await, 200);
    assert_eq!(replicas[0].revoke(&revoked, ADMIN_SECRET).await, 200);
    let entries = redis.dump();
    assert!(
        entries.len() >= 3,
        "active, inactive and revoked entries: {}",
        entries.len()
    );
    let secrets: Vec<&[u8]> = vec![
        token.as_bytes(),
        revoked.as_bytes(),
        unknown.as_bytes(),
        b"system/Patient",
        b"Patient.rs",
        CLIENT.as_bytes(),
        b"fhir-fleet",
        b"active",
    ];
    for (key, value) in &entries {
        for secret in &secrets {
            for bytes in [key, value] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == *secret),
                    "{:?} found in Redis under {}",
                    String::from_utf8_lossy(secret),
                    String::from_utf8_lossy(key)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_tampered_value_is_refused_and_counted_and_a_foreign_fleet_key_reads_nothing() {
    let redis = RedisServer::start();
    let auth = dev_as().await;
    let first = Replica::start(&auth, &[redis.url()], &fleet_key(1)).await;
    let entries = |redis: &RedisServer| -> Vec<(Vec<u8>, Vec<u8>)> {
        redis
            .dump()
            .into_iter()
            .filter(|(key, _)| key.starts_with(b"smart-guard:t:"))
            .collect()
    };
    // A Patient token's entry, then an Observation-only token's: told apart by order.
    let patient = auth
        .issue_token(CLIENT, "system/Patient.rs")
        .as_str()
        .to_owned();
    assert_eq!(first.read(&patient).await, 200);
    // The entry is written in the background, just after the answer.
    let written = within(Duration::from_secs(2), || async {
        entries(&redis).len() == 1
    })
    .await;
    assert!(written.is_some(), "{:?}", entries(&redis));
    let patient_entry = entries(&redis);
    let observation = auth
        .issue_token(CLIENT, "system/Observation.rs")
        .as_str()
        .to_owned();
    assert_eq!(first.read(&observation).await, 403, "Observation only");
    let written = within(Duration::from_secs(2), || async {
        entries(&redis).len() == 2
    })
    .await;
    assert!(written.is_some(), "{:?}", entries(&redis));
    let observation_key = entries(&redis)
        .into_iter()
        .map(|(key, _)| key)
        .find(|key| *key != patient_entry[0].0)
        .expect("the Observation token's entry");

    // The Patient answer, sealed for its own name, moved under the Observation token's name.
    let mut conn = redis.connection();
    redis::cmd("SET")
        .arg(&observation_key)
        .arg(&patient_entry[0].1)
        .arg("KEEPTTL")
        .query::<()>(&mut conn)
        .expect("move the value");
    let calls = auth.introspection_count();
    let second = Replica::start(&auth, &[redis.url()], &fleet_key(1)).await;
    assert_eq!(
        second.read(&observation).await,
        403,
        "the moved Patient answer is not used: the AS's answer is"
    );
    assert_eq!(second.layer.stats().shared_tampered, 1);
    assert_eq!(second.layer.stats().shared_hits, 0);
    assert_eq!(auth.introspection_count(), calls + 1, "it cost one AS call");

    // A flipped byte, too; the value is then replaced with the AS's answer.
    let mut value = patient_entry[0].1.clone();
    let last = value.len() - 1;
    value[last] ^= 0x01;
    redis::cmd("SET")
        .arg(&patient_entry[0].0)
        .arg(value)
        .arg("KEEPTTL")
        .query::<()>(&mut conn)
        .expect("flip a byte");
    let third = Replica::start(&auth, &[redis.url()], &fleet_key(1)).await;
    assert_eq!(third.read(&patient).await, 200);
    assert_eq!(third.layer.stats().shared_tampered, 1);
    let replaced = within(Duration::from_secs(2), || async {
        let fourth = Replica::start(&auth, &[redis.url()], &fleet_key(1)).await;
        fourth.read(&patient).await == 200 && fourth.layer.stats().shared_hits == 1
    })
    .await;
    assert!(
        replaced.is_some(),
        "the unreadable value was replaced by the AS's answer"
    );

    let foreign = Replica::start(&auth, &[redis.url()], &fleet_key(9)).await;
    let fresh = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    assert_eq!(first.read(&fresh).await, 200);
    let calls = auth.introspection_count();
    assert_eq!(foreign.read(&fresh).await, 200);
    assert_eq!(
        auth.introspection_count(),
        calls + 1,
        "another fleet key: its own AS call"
    );
    // A revocation from a replica with another fleet key names nothing here: the others empty
    // their first level rather than miss it (and read the shared entry again).
    let hits = first.layer.stats().shared_hits;
    assert!(foreign.layer.invalidate(&fresh).await.is_ok());
    let emptied = within(Duration::from_secs(1), || async {
        first.read(&fresh).await == 200 && first.layer.stats().shared_hits > hits
    })
    .await;
    assert!(
        emptied.is_some(),
        "the mismatched revocation emptied the first level"
    );
    let stats = foreign.layer.stats();
    assert_eq!(
        (stats.shared_hits, stats.shared_tampered),
        (0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn redis_stopped_mid_load_costs_no_5xx_and_no_wrong_allow_and_is_used_again_after() {
    let mut redis = RedisServer::start();
    let auth = dev_as().await;
    let replicas = three_replicas(&auth, &[redis.url()]).await;
    let good: Vec<String> = (0..4)
        .map(|_| auth.issue_token(CLIENT, SCOPE).as_str().to_owned())
        .collect();
    // A token every replica has cached, then revoked (at the AS and through the fleet) while
    // Redis is up: it must stay refused while Redis is down.
    let revoked = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    for replica in &replicas {
        assert_eq!(replica.read(&revoked).await, 200);
    }
    assert!(auth.revoke_token(&revoked));
    assert_eq!(replicas[0].revoke(&revoked, ADMIN_SECRET).await, 200);
    let (all_good, one_revoked) = (Arc::new(good.clone()), Arc::new(revoked.clone()));
    let round = move |replicas: &[Arc<Replica>]| {
        let replicas = replicas.to_vec();
        let good = Arc::clone(&all_good);
        let revoked = Arc::clone(&one_revoked);
        async move {
            for replica in &replicas {
                for token in good.iter() {
                    assert_eq!(replica.read(token).await, 200, "a good token");
                }
                assert_eq!(replica.read(&revoked).await, 401, "a revoked token");
                assert_eq!(replica.read("made-up").await, 401, "an unknown token");
            }
        }
    };
    let heard = within(Duration::from_secs(1), || async {
        let mut all = true;
        for replica in &replicas {
            all &= replica.read(&revoked).await == 401;
        }
        all
    })
    .await;
    assert!(heard.is_some(), "the revocation reached every replica");
    round(&replicas).await;
    let calls_before = auth.introspection_count();
    // Load runs on while Redis is killed under it; every answer is checked as it comes.
    let load = {
        let round = round.clone();
        let replicas = replicas.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < deadline {
                round(&replicas).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    load.await.expect("no wrong answer while Redis went down");
    // Past every first-level entry: the link's loss emptied the first levels, and entries
    // filled while it is down last no longer than the negative TTL.
    round(&replicas).await;
    let calls_down = auth.introspection_count() - calls_before;
    assert!(
        calls_down >= good.len() * replicas.len(),
        "each replica asks the AS for each token again: {calls_down}"
    );
    let errors: u64 = replicas.iter().map(|r| r.layer.stats().shared_errors).sum();
    assert!(errors >= 1, "Redis failures counted");

    redis.restart();
    let hits_before: u64 = replicas.iter().map(|r| r.layer.stats().shared_hits).sum();
    let back = within(Duration::from_secs(10), || async {
        round(&replicas).await;
        let hits: u64 = replicas.iter().map(|r| r.layer.stats().shared_hits).sum();
        hits > hits_before
    })
    .await;
    assert!(
        back.is_some(),
        "the shared level is used again after Redis restarts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (.ci/run installs them)"]
async fn a_password_in_the_redis_url_works_and_is_never_shown() {
    let redis = RedisServer::start_with_password("fleet-pa55word-0xC0FFEE");
    let auth = dev_as().await;
    let replica = Replica::start(&auth, &[redis.url()], &fleet_key(3)).await;
    let token = auth.issue_token(CLIENT, SCOPE).as_str().to_owned();
    assert_eq!(replica.read(&token).await, 200);
    let written = within(Duration::from_secs(2), || async {
        !redis.dump().is_empty()
    })
    .await;
    assert!(
        written.is_some(),
        "the replica wrote its entry through the password"
    );
    let config = smart_guard::Config::new(
        auth.introspection_url().parse().expect("url"),
        crate::replicas::RS,
        crate::replicas::RS_SECRET,
    )
    .with_fleet(
        smart_guard::fleet::FleetConfig::new(
            [redis.url()],
            smart_guard::fleet::FleetKey::new(&fleet_key(3)).expect("key"),
        )
        .expect("fleet"),
    );
    let shown = format!("{} {:?} {config:?}", config.settings(), replica.layer);
    assert!(shown.contains("SMART_GUARD_REDIS_URL"), "{shown}");
    assert!(!shown.contains("pa55word"), "{shown}");
}
