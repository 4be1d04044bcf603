//! Finding the dispatchers of a cluster in etcd (feature `discovery`): what the cluster
//! keeps there ([`record`]: the membership records and nmid's `nmid/` keys, pure) and how to
//! read it ([`etcd`]: a connection with credentials and bounded requests, the reconnect
//! backoff, and [`follow_members`], which lists the records and watches them change).
//!
//! The dispatcher writes the records (its cluster module); the client and worker
//! libraries follow them to reach every dispatcher, and the dispatcher follows them to
//! reach its peers.

pub mod etcd;
pub mod record;

pub use etcd::{
    check_endpoint, follow_members, Discovery, EtcdSettings, Member, Members, DEFAULT_PREFIX,
};
pub use record::MemberRecord;
