//! The Valkey client against a real server: round trips, scripts, a dead server answering
//! errors quickly rather than hanging, reconnection after a restart, and a real 3-node cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::time::{Duration, Instant};

use llm_gateway::config::ValkeySettings;
use llm_gateway::kv::Kv;
use support::valkey::{ValkeyCluster, ValkeyServer};

fn settings(urls: Vec<String>, cluster: bool) -> ValkeySettings {
    ValkeySettings { urls, cluster, timeout: Duration::from_millis(200), key_prefix: String::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_round_trip_script_and_recovery() {
    let mut server = ValkeyServer::start().await;
    let kv = Kv::new(&settings(vec![server.url()], false)).unwrap();
    let _: () = kv.query(redis::cmd("SET").arg("k").arg("v")).await.unwrap();
    let v: String = kv.query(redis::cmd("GET").arg("k")).await.unwrap();
    assert_eq!(v, "v");
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let n: i64 = kv.eval(&script, &["counter"], &[5]).await.unwrap();
    assert_eq!(n, 5);

    server.kill();
    let started = Instant::now();
    assert!(kv.query::<String>(redis::cmd("GET").arg("k")).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3), "a dead Valkey fails fast, it does not hang");
    assert!(kv.errors() >= 1);

    server.restart().await;
    let mut recovered = false;
    for _ in 0..50 {
        if kv.ping().await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the client reconnects once Valkey is back");
    // The script cache was lost with the restart: EVALSHA falls back to loading it.
    let n: i64 = kv.eval(&script, &["counter"], &[2]).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_hash_tagged_keys_to_one_slot() {
    let cluster = ValkeyCluster::start().await;
    let kv = Kv::new(&settings(cluster.urls(), true)).unwrap();
    let script =
        redis::Script::new("redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1");
    for team in ["a", "b", "c", "d", "e"] {
        let k1 = format!("rl:{{{team}}}:rpm");
        let k2 = format!("rl:{{{team}}}:tpm");
        let ok: i64 = kv.eval(&script, &[&k1, &k2], &[7]).await.unwrap();
        assert_eq!(ok, 1, "two keys with one hash tag live in one slot");
        let v: i64 = kv.query(redis::cmd("GET").arg(&k2)).await.unwrap();
        assert_eq!(v, 7);
    }
}

/// `valkey.key_prefix` goes before every key a script names and leaves its hash tag whole: the
/// keys of one tag still share a slot, and Valkey holds them under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixed_keys_keep_their_hash_tag_on_a_cluster() {
    let cluster = ValkeyCluster::start().await;
    let kv = Kv::new(&ValkeySettings { key_prefix: "release-a".into(), ..settings(cluster.urls(), true) }).unwrap();
    let script =
        redis::Script::new("redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1");
    for team in ["a", "b", "c", "d", "e"] {
        let (k1, k2) = (format!("lg:{{{team}}}:rpm"), format!("lg:{{{team}}}:tpm"));
        let ok: i64 = kv.eval(&script, &[&k1, &k2], &[7]).await.unwrap();
        assert_eq!(ok, 1, "two keys with one hash tag live in one slot");
        let v: i64 = kv.query(redis::cmd("GET").arg(kv.key(&k2))).await.unwrap();
        assert_eq!(v, 7);
        assert_eq!(kv.key(&k2), format!("release-a:lg:{{{team}}}:tpm"));
    }
    let unprefixed = Kv::new(&settings(cluster.urls(), true)).unwrap();
    assert_eq!(unprefixed.key("lg:keys"), "lg:keys", "no prefix: the names of old");
    let v: Option<i64> = unprefixed.query(redis::cmd("GET").arg("lg:{a}:tpm")).await.unwrap();
    assert_eq!(v, None, "nothing was written without the prefix");
}
