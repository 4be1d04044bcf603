//! etcd as the dispatcher, the client library and the worker library all use it: a
//! connection to one member at a time out of several ([`EtcdConnection`]), with credentials,
//! a bounded request time and keep-alive pings etcd accepts; the reconnect backoff; and the
//! membership follower ([`follow_members`]): the membership records under a prefix, listed
//! and then watched, kept across etcd outages (the last known members stay) and listed
//! afresh when etcd is back.
//!
//! # Several endpoints
//!
//! etcd-client's `Client::connect(&[a, b, c])` spreads every request over all endpoints
//! (tonic's balance channel). A member that is down stays in that balance: its lazy
//! connection reports itself ready and fails the request handed to it ("tcp connect
//! error"), so requests fail at random while a quorum answers, and a lease keep-alive or a
//! watch that lands there breaks the session. [`EtcdConnection`] instead talks to one member
//! at a time, the first that answers, keeps it while requests through it succeed, and moves
//! on when one fails; the lease and the keys under it belong to the cluster, not to the
//! member, so they carry over. The members it tries are etcd's own (its member list, read on
//! every connection), then the configured endpoints: members added or removed at run time
//! are followed.
//!
//! # Keep-alive pings
//!
//! HTTP/2 pings find a member that stopped answering on an open connection (a frozen
//! process, a lost route), which no request timeout covers on a watch. They go out every
//! `discovery.keepalive_interval_ms` and only while a stream (watch, lease keep-alive) is
//! open: etcd closes the connection of a client that pings more often than its
//! `--grpc-keepalive-min-time` (5 s by default), or at all with no stream open, with
//! GOAWAY `too_many_pings` (at a 3 s interval that broke the watch about every 12 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, WatchOptions,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::record::MemberRecord;

/// First wait before reconnecting to etcd.
pub const RETRY_MIN: Duration = Duration::from_millis(100);

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Endpoints (`http://host:2379`): the first members tried, and the ones tried when
    /// none of etcd's own member list answers.
    pub endpoints: Vec<String>,
    /// User name and password, if etcd wants them.
    pub credentials: Option<(String, String)>,
    /// Longest wait for one request.
    pub request_timeout: Duration,
    /// Ceiling of the reconnect backoff.
    pub retry_max: Duration,
    /// HTTP/2 pings on a connection with a stream open, this often; `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    /// How often a long-lived connection reads etcd's member list again.
    pub member_refresh: Duration,
}

impl EtcdSettings {
    /// Settings for `endpoints` without authentication, with 3 s requests, retries up to
    /// 5 s apart, pings every 10 s and the member list read every 30 s (the defaults of
    /// `config/nmid.toml`).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            credentials: None,
            request_timeout: Duration::from_secs(3),
            retry_max: Duration::from_secs(5),
            keepalive_interval: Some(Duration::from_secs(10)),
            member_refresh: Duration::from_secs(30),
        }
    }

    /// Connects to the member at `endpoint` (lazily: the first request finds out whether
    /// it answers).
    async fn connect_to(&self, endpoint: &str) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            .with_timeout(self.request_timeout)
            // A member cut off from the leader refuses at once instead of holding requests
            // and watches it cannot serve.
            .with_require_leader(true);
        if let Some(interval) = self.keepalive_interval {
            options = options
                .with_keep_alive(interval, self.request_timeout)
                .with_keep_alive_while_idle(false);
        }
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let connect = Client::connect([endpoint], Some(options));
        within(self.request_timeout, endpoint, connect).await
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

/// `request`, or an error naming `endpoint` when it takes longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    endpoint: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(etcd_client::Error::EndpointError(format!(
            "{endpoint}: no answer within {timeout:?}"
        ))),
    }
}

/// A connection to one etcd member at a time: the first of the known endpoints that
/// answers, kept until [`EtcdConnection::failed`] says a request through it failed; the
/// next [`EtcdConnection::client`] then tries the others first (the module doc says why).
pub struct EtcdConnection {
    settings: EtcdSettings,
    /// Endpoints in the order they are tried: the one in use first, one that failed last.
    endpoints: Vec<String>,
    /// The client of `endpoints[0]`, while it answers.
    current: Option<Client>,
    /// When etcd's member list was last read.
    listed_at: Option<Instant>,
}

impl EtcdConnection {
    /// No connection yet: the first [`EtcdConnection::client`] makes one.
    pub fn new(settings: EtcdSettings) -> Self {
        let endpoints = settings.endpoints.clone();
        Self {
            settings,
            endpoints,
            current: None,
            listed_at: None,
        }
    }

    /// The settings it connects with.
    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// The endpoint in use, if connected.
    pub fn endpoint(&self) -> Option<&str> {
        self.current.as_ref().map(|_| self.endpoints[0].as_str())
    }

    /// A client of the member in use; without one, connects to the first endpoint that
    /// answers (reading etcd's member list through it), each tried once within the request
    /// timeout. The error is the last endpoint's.
    pub async fn client(&mut self) -> Result<Client, etcd_client::Error> {
        if let Some(client) = &self.current {
            return Ok(client.clone());
        }
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let endpoint = self.endpoints[0].clone();
            let attempt = async {
                let mut client = self.settings.connect_to(&endpoint).await?;
                let listed = client.member_list();
                let listed = within(self.settings.request_timeout, &endpoint, listed).await?;
                Ok::<_, etcd_client::Error>((client, listed))
            };
            match attempt.await {
                Ok((client, listed)) => {
                    self.learn_members(&listed);
                    self.current = Some(client.clone());
                    return Ok(client);
                }
                Err(err) => {
                    debug!(%endpoint, cause = %err, "etcd member did not answer");
                    last = Some(err);
                    self.endpoints.rotate_left(1);
                }
            }
        }
        Err(last.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no endpoints".into())))
    }

    /// A request through the member in use failed: the next [`EtcdConnection::client`]
    /// tries the other members first, this one last.
    pub fn failed(&mut self) {
        if self.current.take().is_some() {
            self.endpoints.rotate_left(1);
        }
    }

    /// Reads etcd's member list again through the member in use, if it is older than
    /// `member_refresh`. An error means that member failed (call [`EtcdConnection::failed`]).
    pub async fn refresh_members(&mut self) -> Result<(), etcd_client::Error> {
        let fresh = (self.listed_at).is_some_and(|t| t.elapsed() < self.settings.member_refresh);
        let Some(client) = &self.current else {
            return Ok(());
        };
        if fresh {
            return Ok(());
        }
        let mut client = client.clone();
        let endpoint = self.endpoints[0].clone();
        let listed = within(
            self.settings.request_timeout,
            &endpoint,
            client.member_list(),
        )
        .await?;
        self.learn_members(&listed);
        Ok(())
    }

    /// The endpoints to try from now on: the one in use, then etcd's members (voting ones
    /// that serve clients over http://), then the configured endpoints not among them.
    fn learn_members(&mut self, listed: &etcd_client::MemberListResponse) {
        let in_use = self.endpoints[0].clone();
        let members = (listed.members().iter())
            .filter(|m| !m.is_learner())
            .flat_map(|m| m.client_urls().iter())
            .filter(|url| check_endpoint(url).is_ok());
        let mut endpoints = vec![in_use];
        for endpoint in members.chain(&self.settings.endpoints) {
            let endpoint = endpoint.trim_end_matches('/');
            if !endpoints
                .iter()
                .any(|e| e.trim_end_matches('/') == endpoint)
            {
                endpoints.push(endpoint.to_owned());
            }
        }
        if endpoints != self.endpoints {
            debug!(?endpoints, "etcd members");
        }
        self.endpoints = endpoints;
        self.listed_at = Some(Instant::now());
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
/// to etcd without TLS) with a host, and a port from 1 to 65535 if it has one. The reason
/// when not.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(format!(
            "{endpoint:?} must be an http:// URL (this build speaks to etcd without TLS)"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or(after))),
            None => return Err(format!("{endpoint:?}: '[' without ']' around the host")),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!(
            "{endpoint:?} has no host: expected http://HOST:PORT"
        ));
    }
    match port.map(str::parse::<u16>) {
        None | Some(Ok(1..)) => Ok(()),
        Some(_) => Err(format!(
            "{endpoint:?}: the port must be a number from 1 to 65535"
        )),
    }
}

/// The etcd prefix of the dispatchers' membership records (`cluster.prefix`'s default).
pub const DEFAULT_PREFIX: &str = "nmid-rs/cluster/";

/// One keep-alive of a lease: sends it and waits, at most `timeout`, for etcd's answer:
/// `true` when the lease was renewed, `false` when etcd no longer knows it (it expired or
/// was revoked). No answer is an error (the member, not the lease, failed).
pub async fn keep_alive(
    keeper: &mut LeaseKeeper,
    replies: &mut LeaseKeepAliveStream,
    timeout: Duration,
) -> Result<bool, etcd_client::Error> {
    keeper.keep_alive().await?;
    let reply = tokio::time::timeout(timeout, replies.message())
        .await
        .map_err(|_| etcd_client::Error::LeaseKeepAliveError("no answer in time".into()))??;
    match reply {
        Some(reply) => Ok(reply.ttl() > 0),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "keep-alive stream ended".into(),
        )),
    }
}

/// Resumes keeping the lease `id` alive through `client` (a member newly connected to):
/// its keep-alive stream, the lease renewed once, or `None` when etcd no longer has the
/// lease — it expired (the holder could not reach etcd for longer than its TTL) or was
/// revoked — so the holder must grant a new one and write its keys again under it. No
/// answer within `timeout` is an error (the member, not the lease, failed).
pub async fn resume_lease(
    client: &mut Client,
    id: i64,
    timeout: Duration,
) -> Result<Option<(LeaseKeeper, LeaseKeepAliveStream)>, etcd_client::Error> {
    let resumed = tokio::time::timeout(timeout, client.lease_keep_alive(id))
        .await
        .map_err(|_| etcd_client::Error::LeaseKeepAliveError("no answer in time".into()))?;
    match resumed {
        Ok(stream) => Ok(Some(stream)),
        Err(err) if lease_gone(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// etcd answered that the lease a request named is gone (expired or revoked): a new lease
/// is needed, not another member. etcd-client says so as `LeaseKeepAliveError("lease not
/// found")` when a keep-alive stream opens on a lease etcd answers with TTL 0; etcd itself
/// as gRPC `NotFound` "etcdserver: requested lease not found" to a put, revoke or renewal.
pub fn lease_gone(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::LeaseKeepAliveError(message) => message == "lease not found",
        etcd_client::Error::GRpcStatus(status) => {
            status.message().ends_with("requested lease not found")
        }
        _ => false,
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
    /// Watches that ran and broke since the follower started (each is started again).
    pub watch_restarts: u64,
}

/// Follows the membership records under `prefix` until the returned receiver and every
/// clone of it are dropped. Must be called inside a tokio runtime; the task runs there.
///
/// It logs once per change of state: the watch started (with the failed attempts before),
/// lost (a watch that ran broke: it is started again through another member at once), or
/// etcd unreachable (the first failed attempt; later ones at debug level).
pub fn follow_members(
    etcd: EtcdSettings,
    prefix: String,
    max_record_bytes: usize,
) -> watch::Receiver<Members> {
    let (tx, rx) = watch::channel(Members::default());
    tokio::spawn(async move {
        let mut backoff = etcd.backoff();
        let mut connection = EtcdConnection::new(etcd);
        let mut failures = 0u32;
        // A watch ran at least once: only then are there known members to keep.
        let mut watched = false;
        loop {
            let result =
                follow_once(&mut connection, &prefix, max_record_bytes, &tx, failures).await;
            let was_watching = tx.borrow().connected;
            watched |= was_watching;
            tx.send_modify(|m| {
                m.connected = false;
                m.watch_restarts += u64::from(was_watching);
            });
            let Err(err) = result else { return };
            if tx.is_closed() {
                return;
            }
            let endpoint = connection.endpoint().unwrap_or_default().to_owned();
            connection.failed();
            let wait = match was_watching {
                true => {
                    warn!(%prefix, %endpoint, cause = %err, "etcd membership watch lost; known members kept; watching again");
                    failures = 0;
                    backoff = connection.settings().backoff();
                    RETRY_MIN
                }
                false => {
                    failures += 1;
                    let wait = backoff.next().unwrap_or(connection.settings().retry_max);
                    let retry_ms = wait.as_millis() as u64;
                    match (failures, watched) {
                        (1, false) => {
                            warn!(%prefix, cause = %err, retry_ms, "etcd unreachable: no membership watch yet; retrying")
                        }
                        (1, true) => {
                            warn!(%prefix, cause = %err, retry_ms, "etcd unreachable: membership watch not restarted, known members kept; retrying")
                        }
                        _ => debug!(%prefix, cause = %err, failures, "etcd still unreachable"),
                    }
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// Lists the members, then applies watch events until the watch fails (`Err`) or every
/// receiver is gone (`Ok`). `failures`: attempts that failed before this one, for the log.
async fn follow_once(
    connection: &mut EtcdConnection,
    prefix: &str,
    max_record_bytes: usize,
    tx: &watch::Sender<Members>,
    failures: u32,
) -> Result<(), etcd_client::Error> {
    let mut client = connection.client().await?;
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
    let endpoint = connection.endpoint().unwrap_or_default();
    info!(%prefix, %endpoint, members = members.len(), failures, "etcd membership watch started");
    tx.send_modify(|known| {
        known.members = Arc::new(members);
        known.connected = true;
    });
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
