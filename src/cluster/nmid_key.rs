//! The value of a dispatcher's nmid key, `nmid/~dispatcher-<id>`: what nmid's Go consumer
//! reads to pick a dispatcher for a function. Pure: the session writes what this computes.
//!
//! nmid's `cli.Consumer` (pkg/client/discovery.go) lists every key under `nmid/`, decodes
//! each value as `map[string][]string`, merges them by plain overwrite in key order (the
//! last key naming a function wins) and picks `addrs[rand % len(addrs)]`. A key that listed
//! only its own dispatcher would send every Go call to the dispatcher whose key sorts last.
//! So every dispatcher's key maps each function served in the cluster to **all** live
//! dispatchers serving it, from the membership records: whichever key the merge keeps, it
//! holds the whole list; and the keys sort after every worker's `nmid/<name>`
//! ([`super::record::dispatcher_nmid_key`]), so a worker's list never overrides them. A draining dispatcher's key is `{}` (it names nothing, so it
//! overwrites nothing), and draining peers are left out of the others'.

use std::collections::{BTreeMap, BTreeSet};

use super::record::MemberRecord;

/// The nmid key value of the dispatcher `own` (its current record), given the records of
/// the cluster's members (`own`'s among them or not): each function any live dispatcher
/// serves, mapped to the sorted addresses of all that serve it.
pub fn nmid_value<'a>(
    own: &'a MemberRecord,
    members: impl IntoIterator<Item = &'a MemberRecord>,
) -> String {
    if own.draining {
        return "{}".to_owned();
    }
    let peers = (members.into_iter()).filter(|m| !m.is_self(&own.id, own.tcp_addr) && !m.draining);
    let mut functions: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for record in std::iter::once(own).chain(peers) {
        for function in &record.functions {
            let addrs = functions.entry(function.as_str()).or_default();
            addrs.insert(record.tcp_addr.to_string());
        }
    }
    serde_json::to_string(&functions).expect("a map of strings always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, port: u16, functions: &[&str]) -> MemberRecord {
        MemberRecord {
            id: id.to_owned(),
            tcp_addr: format!("127.0.0.1:{port}").parse().unwrap(),
            http_addr: None,
            version: "0.1.0".to_owned(),
            started_at: 1_700_000_000,
            functions: functions.iter().map(|f| (*f).to_owned()).collect(),
            load: 0,
            draining: false,
            jobs_node: None,
            slots: Default::default(),
        }
    }

    /// Every dispatcher writes the same whole map: each function to every live dispatcher
    /// serving it, sorted; a function only a peer serves is listed too.
    #[test]
    fn every_key_lists_all_live_dispatchers_of_each_function() {
        let a = record("a", 3, &["F", "G"]);
        let b = record("b", 1, &["F"]);
        let c = record("c", 2, &["F", "H"]);
        let all = [&a, &b, &c];
        let expected = concat!(
            r#"{"F":["127.0.0.1:1","127.0.0.1:2","127.0.0.1:3"],"#,
            r#""G":["127.0.0.1:3"],"H":["127.0.0.1:2"]}"#
        );
        for own in all {
            assert_eq!(nmid_value(own, all), expected, "{}", own.id);
        }
    }

    /// An earlier run of this dispatcher at its address (its record not expired yet) adds
    /// nothing: the functions it served are not this run's.
    #[test]
    fn an_earlier_run_at_the_same_address_is_left_out() {
        let earlier = record("old", 1, &["F"]);
        let now = record("new", 1, &["G"]);
        assert_eq!(
            nmid_value(&now, [&earlier, &now]),
            r#"{"G":["127.0.0.1:1"]}"#
        );
    }

    /// A draining dispatcher names nothing, and the others leave it out.
    #[test]
    fn draining_dispatchers_are_left_out() {
        let a = record("a", 1, &["F"]);
        let mut b = record("b", 2, &["F"]);
        b.draining = true;
        assert_eq!(nmid_value(&a, [&a, &b]), r#"{"F":["127.0.0.1:1"]}"#);
        assert_eq!(nmid_value(&b, [&a, &b]), "{}");
        let idle = record("idle", 3, &[]);
        assert_eq!(nmid_value(&idle, [&b]), "{}");
    }
}
