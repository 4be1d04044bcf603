//! What the cluster keeps in etcd, as plain data: a dispatcher's membership record, nmid's
//! function keys, and the key names. Pure: no I/O, so each format is pinned by a unit test.
//!
//! ```text
//! <cluster.prefix><id>          {"id", "tcp_addr", "http_addr", "version", "started_at",
//!                                "functions", "load", "draining"}      one per dispatcher
//! nmid/~dispatcher-<id>         {"<function>": ["<tcp_addr>", ...]}   nmid's convention
//! nmid/<worker name>            {"<function>": ["<dispatcher>", ...]} a worker's (optional)
//! ```
//!
//! Both kinds of key live under the dispatcher's (or the worker's) lease, so they vanish
//! within the lease TTL of a crash. nmid's Go consumer reads the prefix `nmid/`, decodes
//! each value as a map from function name to address list, and merges the maps by plain
//! overwrite in key order; a dispatcher's key therefore lists every live dispatcher of each
//! function (`src/cluster/nmid_key.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The prefix nmid's Go consumer reads (`cli.Consumer`): function keys live under it.
pub const NMID_PREFIX: &str = "nmid/";

/// A dispatcher's membership record: who it is, where to reach it, what it serves now and
/// how loaded it is (jobs in flight and queued), as published at most every
/// `cluster.publish_interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The dispatcher's id, also the last part of its key.
    pub id: String,
    /// Its nmid protocol address (`cluster.advertise_addr`).
    pub tcp_addr: SocketAddr,
    /// Its HTTP address, when it serves HTTP.
    pub http_addr: Option<SocketAddr>,
    /// The `nmid` version it runs.
    pub version: String,
    /// When it started, in Unix seconds.
    pub started_at: u64,
    /// Functions its own workers serve, sorted.
    pub functions: Vec<String>,
    /// Its jobs in flight and queued calls, all functions together.
    pub load: u32,
    /// It is shutting down: take no new calls there.
    #[serde(default)]
    pub draining: bool,
    /// The node name in its background jobs' ids (`<node>-<number>`): any dispatcher
    /// answers a job's status by asking the one whose record names its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_node: Option<String>,
    /// Jobs its workers may hold at once, by function (all its workers of the function
    /// together): a dispatcher with no worker of a function hands its background jobs to the
    /// peers no faster than their slots. Absent in records of older dispatchers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub slots: std::collections::BTreeMap<String, u32>,
}

impl MemberRecord {
    /// The record as stored: JSON.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a member record always serialises")
    }

    /// This record is the dispatcher `id` advertising `tcp_addr` itself, or an earlier run
    /// of it at the same address whose record outlives it until its lease expires (a
    /// dispatcher restarted at once gets a new id unless `cluster.id` is set): either way
    /// not a peer — forwarding there is forwarding to itself. Two live dispatchers never
    /// advertise one address (each listens on its own).
    pub fn is_self(&self, id: &str, tcp_addr: SocketAddr) -> bool {
        self.id == id || self.tcp_addr == tcp_addr
    }

    /// Reads a stored record; `None` for anything larger than `max_bytes` or not a record.
    pub fn decode(value: &[u8], max_bytes: usize) -> Option<Self> {
        if value.len() > max_bytes {
            return None;
        }
        serde_json::from_slice(value).ok()
    }
}

/// The key of dispatcher `id`'s membership record.
pub fn member_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{id}")
}

/// The nmid key of dispatcher `id`: where nmid's Go consumer finds the dispatchers that
/// serve each function.
///
/// nmid's Go consumer merges the `nmid/` keys by overwrite in key order, so the last key
/// naming a function decides where Go calls go. The `~` (0x7E, after every ASCII letter,
/// digit and punctuation a worker name uses) makes the dispatchers' keys sort after every
/// worker's `nmid/<name>`: their up-to-date lists win over a worker's, even a stale one
/// (nmid's Go worker puts its key without a lease, so a dead one's stays for good). Only a
/// worker name starting with `~` or a non-ASCII character would sort after them.
pub fn dispatcher_nmid_key(id: &str) -> String {
    format!("{NMID_PREFIX}{DISPATCHER_KEY_PART}{id}")
}

/// What follows `nmid/` in a dispatcher's nmid key, before its id.
pub const DISPATCHER_KEY_PART: &str = "~dispatcher-";

/// The nmid key a worker named `name` registers under (nmid's Go worker's `Register`).
pub fn worker_nmid_key(name: &str) -> String {
    format!("{NMID_PREFIX}{name}")
}

/// A worker's nmid key value: each of its functions mapped to the dispatchers it serves.
pub fn worker_nmid_value<'a>(
    functions: impl IntoIterator<Item = &'a str>,
    dispatchers: &[String],
) -> String {
    let map: BTreeMap<&str, &[String]> = functions.into_iter().map(|f| (f, dispatchers)).collect();
    serde_json::to_string(&map).expect("a map of strings always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MemberRecord {
        MemberRecord {
            id: "a".to_owned(),
            tcp_addr: "127.0.0.1:6808".parse().unwrap(),
            http_addr: Some("127.0.0.1:6809".parse().unwrap()),
            version: "0.1.0".to_owned(),
            started_at: 1_700_000_000,
            functions: vec!["ToLower".to_owned(), "ToUpper".to_owned()],
            load: 3,
            draining: false,
            jobs_node: None,
            slots: Default::default(),
        }
    }

    /// A record survives its JSON; an oversized or foreign value is not a record.
    #[test]
    fn records_round_trip_and_junk_is_refused() {
        let text = record().encode();
        assert_eq!(MemberRecord::decode(text.as_bytes(), 65536), Some(record()));
        assert_eq!(MemberRecord::decode(text.as_bytes(), 16), None);
        assert_eq!(MemberRecord::decode(b"{\"ToUpper\":[]}", 65536), None);
        assert_eq!(MemberRecord::decode(b"\xff", 65536), None);
    }

    /// Dispatchers' keys sort after every worker key with an ASCII name, so that nmid's Go
    /// consumer (overwrite in key order) keeps their lists.
    #[test]
    fn dispatcher_keys_sort_after_worker_keys() {
        let dispatcher = dispatcher_nmid_key("127.0.0.1:6808-18c");
        for name in ["Worker1", "zzz", "upper", "my.worker_2", "Z-9", "}"] {
            let worker = worker_nmid_key(name);
            assert!(worker < dispatcher, "{worker} sorts after {dispatcher}");
        }
    }

    /// The same id, or an earlier run at the same address, is the dispatcher itself.
    #[test]
    fn an_earlier_run_at_the_same_address_is_self() {
        let own = record();
        let addr = own.tcp_addr;
        assert!(own.is_self("a", "127.0.0.1:9".parse().unwrap()));
        assert!(own.is_self("a-restarted", addr));
        assert!(!own.is_self("b", "127.0.0.1:9".parse().unwrap()));
    }

    /// A worker's nmid value is nmid's shape: function -> [dispatcher address].
    #[test]
    fn a_workers_nmid_value_maps_each_function_to_its_dispatchers() {
        let worker = worker_nmid_value(["F"], &["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(worker, r#"{"F":["a:1","b:2"]}"#);
    }
}
