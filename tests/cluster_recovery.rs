//! A cluster recovering from what production throws at it, on real etcd and `nmid`
//! processes on 127.0.0.1: leases that etcd expired or revoked.

mod cluster_support;
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cluster_support::load::echo_upper;
use cluster_support::{Etcd, Nmid, PROCESS_PATIENCE, TEST_LEASE_TTL_S};
use common::PATIENCE;
use nmid::worker::Worker;

/// Waits until every key of `keys` is in etcd (`present`) or none is, at most `limit`.
async fn wait_for_keys(etcd: &Etcd, keys: &[String], present: bool, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let now: HashSet<String> = (etcd.get_prefix("").await.into_iter())
            .map(|(k, _)| k)
            .collect();
        let there = keys.iter().filter(|k| now.contains(*k)).count();
        if (present && there == keys.len()) || (!present && there == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; etcd has {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dispatcher and a worker registering `nmid/<name>` are cut off from etcd (etcd runs on)
/// for longer than their lease TTL: etcd expires both leases and deletes their keys. Once
/// the network is back, each takes a new lease and writes its keys again. Then both leases
/// are revoked (as `etcdctl lease revoke` does): the keys come back once more.
#[actix_rt::test]
async fn a_lease_etcd_expired_or_revoked_is_replaced_and_the_keys_written_again() {
    let (etcd, relay) = Etcd::start_behind_relay().await;
    let nmid = Nmid::start(&relay.url);
    let worker = Worker::builder()
        .name("comeback")
        .discover([relay.url.clone()])
        .etcd_register(Duration::from_secs(TEST_LEASE_TTL_S))
        .function("Back", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let mut keys = nmid.keys().to_vec();
    keys.push("nmid/comeback".to_owned());
    wait_for_keys(&etcd, &keys, true, PROCESS_PATIENCE, "registered").await;

    relay.cut();
    let ttl = Duration::from_secs(TEST_LEASE_TTL_S);
    let expiry = ttl + PATIENCE;
    wait_for_keys(&etcd, &keys, false, expiry, "leases expired while cut off").await;
    relay.restore();
    let restored = Instant::now();
    wait_for_keys(
        &etcd,
        &keys,
        true,
        PROCESS_PATIENCE,
        "keys back after the cut",
    )
    .await;
    let back_after_cut = restored.elapsed();

    let mut client = etcd.client().await.unwrap();
    let mut leases = HashSet::new();
    for key in &keys {
        let found = client.get(key.as_str(), None).await.unwrap();
        leases.extend(found.kvs().iter().map(|kv| kv.lease()));
    }
    assert_eq!(
        leases.len(),
        2,
        "one lease for the dispatcher, one for the worker"
    );
    for lease in &leases {
        client.lease_revoke(*lease).await.unwrap();
    }
    let revoked = Instant::now();
    wait_for_keys(
        &etcd,
        &keys,
        true,
        PROCESS_PATIENCE,
        "keys back after the revoke",
    )
    .await;
    let back_after_revoke = revoked.elapsed();
    assert!(nmid.metric("nmid_etcd_sessions_total").await >= Some(3.0));
    println!(
        "leases replaced: keys back {back_after_cut:?} after a cut longer than the TTL, \
         {back_after_revoke:?} after a revoke"
    );
    worker.stop().await;
}
