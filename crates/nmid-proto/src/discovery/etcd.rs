//! etcd as the dispatcher, the client library and the worker library all use it: a
//! connection with credentials and a bounded request time, the reconnect backoff, and the
//! membership follower ([`follow_members`]): the membership records under a prefix, listed
//! and then watched, kept across etcd outages (the last known members stay) and listed
//! afresh when etcd is back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, WatchOptions,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::record::MemberRecord;

/// First wait before reconnecting to etcd.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Endpoints (`http://host:2379`).
    pub endpoints: Vec<String>,
    /// User name and password, if etcd wants them.
    pub credentials: Option<(String, String)>,
    /// Longest wait for one request.
    pub request_timeout: Duration,
    /// Ceiling of the reconnect backoff.
    pub retry_max: Duration,
}

impl EtcdSettings {
    /// Settings for `endpoints` without authentication, with 3 s requests and retries up
    /// to 5 s apart (the defaults of `config/nmid.toml`).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            credentials: None,
            request_timeout: Duration::from_secs(3),
            retry_max: Duration::from_secs(5),
        }
    }

    /// Connects (lazily: the first request finds out whether etcd answers).
    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(self.request_timeout, self.request_timeout);
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let connect = Client::connect(&self.endpoints, Some(options));
        match tokio::time::timeout(self.request_timeout, connect).await {
            Ok(client) => client,
            Err(_) => Err(etcd_client::Error::InvalidArgs(format!(
                "no answer from {:?} within {:?}",
                self.endpoints, self.request_timeout
            ))),
        }
    }

    /// The waits between reconnection attempts: doubling from 100 ms to `retry_max`, with
    /// jitter so that a cluster's members do not come back in step.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(self.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Where a discovering client or worker finds the dispatchers: etcd, and the prefix of
/// their membership records (`cluster.prefix`).
#[derive(Debug, Clone)]
pub struct Discovery {
    /// How to reach etcd.
    pub etcd: EtcdSettings,
    /// The membership records' prefix.
    pub prefix: String,
}

impl Discovery {
    /// etcd at `endpoints`, the default prefix, no authentication.
    pub fn new<E: Into<String>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        let endpoints = endpoints.into_iter().map(Into::into).collect();
        Self {
            etcd: EtcdSettings::new(endpoints),
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// Whether `endpoint` is an etcd endpoint this build can reach: an `http://` URL (it speaks
/// to etcd without TLS). The reason when not.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    match endpoint.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() => Ok(()),
        _ => Err(format!(
            "{endpoint:?} must be an http:// URL (this build speaks to etcd without TLS)"
        )),
    }
}

/// The etcd prefix of the dispatchers' membership records (`cluster.prefix`'s default).
pub const DEFAULT_PREFIX: &str = "nmid-rs/cluster/";

/// One keep-alive of a lease: sends it and waits, at most `timeout`, for etcd's answer. A
/// lease etcd no longer knows (it expired) is an error, as is no answer.
pub async fn keep_alive(
    keeper: &mut LeaseKeeper,
    replies: &mut LeaseKeepAliveStream,
    timeout: Duration,
) -> Result<(), etcd_client::Error> {
    let lost = |why: &str| etcd_client::Error::LeaseKeepAliveError(why.to_owned());
    keeper.keep_alive().await?;
    let reply = tokio::time::timeout(timeout, replies.message())
        .await
        .map_err(|_| lost("no keep-alive answer in time"))??;
    match reply {
        Some(reply) if reply.ttl() > 0 => Ok(()),
        _ => Err(lost("lease expired")),
    }
}

/// One member as the follower knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its latest record.
    pub record: MemberRecord,
    /// When that record was last read from etcd (a list or a watch event).
    pub seen_at: SystemTime,
}

/// What the follower knows: the members by id, and whether etcd answers now.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Members by id (the last known ones while etcd is unreachable).
    pub members: Arc<BTreeMap<String, Member>>,
    /// The follower is connected and watching.
    pub connected: bool,
}

/// Follows the membership records under `prefix` until the returned receiver and every
/// clone of it are dropped. Must be called inside a tokio runtime; the task runs there.
pub fn follow_members(
    etcd: EtcdSettings,
    prefix: String,
    max_record_bytes: usize,
) -> watch::Receiver<Members> {
    let (tx, rx) = watch::channel(Members::default());
    tokio::spawn(async move {
        let mut backoff = etcd.backoff();
        loop {
            let result = follow_once(&etcd, &prefix, max_record_bytes, &tx, &mut backoff).await;
            tx.send_modify(|m| m.connected = false);
            if tx.is_closed() {
                return;
            }
            let wait = backoff.next().unwrap_or(etcd.retry_max);
            match result {
                Ok(()) => debug!(%prefix, "membership watch ended; watching again"),
                Err(err) => {
                    warn!(%prefix, cause = %err, retry_ms = wait.as_millis() as u64, "etcd membership watch lost; known members kept")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// Lists the members, then applies watch events until the watch fails or every receiver is
/// gone (`Ok`).
async fn follow_once(
    etcd: &EtcdSettings,
    prefix: &str,
    max_record_bytes: usize,
    tx: &watch::Sender<Members>,
    backoff: &mut ExponentialBackoff,
) -> Result<(), etcd_client::Error> {
    let mut client = etcd.connect().await?;
    let listed = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let now = SystemTime::now();
    let mut members = BTreeMap::new();
    for kv in listed.kvs() {
        if let Some(record) = read_record(kv.value(), max_record_bytes, kv.key()) {
            let member = Member {
                record,
                seen_at: now,
            };
            members.insert(member.record.id.clone(), member);
        }
    }
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut watch = client.watch(prefix, Some(options)).await?;
    info!(%prefix, members = members.len(), "etcd membership watch started");
    tx.send_replace(Members {
        members: Arc::new(members),
        connected: true,
    });
    *backoff = etcd.backoff();
    loop {
        let response = tokio::select! {
            response = watch.message() => response?,
            _ = tx.closed() => return Ok(()),
        };
        let Some(response) = response else {
            return Err(etcd_client::Error::WatchError("watch stream ended".into()));
        };
        if response.canceled() {
            let reason = response.cancel_reason().to_owned();
            return Err(etcd_client::Error::WatchError(format!(
                "canceled: {reason}"
            )));
        }
        let now = SystemTime::now();
        tx.send_modify(|known| {
            let mut members = (*known.members).clone();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let id = String::from_utf8_lossy(&kv.key()[prefix.len().min(kv.key().len())..]);
                match event.event_type() {
                    EventType::Delete => {
                        members.remove(id.as_ref());
                    }
                    EventType::Put => {
                        if let Some(record) = read_record(kv.value(), max_record_bytes, kv.key()) {
                            let member = Member {
                                record,
                                seen_at: now,
                            };
                            members.insert(member.record.id.clone(), member);
                        }
                    }
                }
            }
            known.members = Arc::new(members);
        });
    }
}

fn read_record(value: &[u8], max_record_bytes: usize, key: &[u8]) -> Option<MemberRecord> {
    let record = MemberRecord::decode(value, max_record_bytes);
    if record.is_none() {
        let key = String::from_utf8_lossy(key);
        warn!(%key, bytes = value.len(), "ignored membership record: too large or not a record");
    }
    record
}
