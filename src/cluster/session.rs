//! The dispatcher's etcd session: one lease, kept alive, and the two keys under it — the
//! membership record and nmid's function key — rewritten when the dispatcher's functions
//! or load change (read from the registry every `cluster.publish_interval_ms`, written only
//! on a change: never per call), and the nmid key also when a peer joins, changes, drains
//! or leaves (at once: it lists every live dispatcher of each function, see
//! [`super::nmid_key`]) and every `cluster.nmid_refresh_interval_ms` (so that a Go consumer
//! started in a quiet cluster gets the watch event it waits for).
//!
//! The lease belongs to the etcd cluster, not to the member the session talks to: when that
//! member fails (down, frozen, cut off from the leader), the session goes on through another
//! ([`EtcdConnection`]) with the same lease and keys, and nothing changes for the peers. It
//! is down only when no member renewed the lease for a whole TTL (etcd unreachable: a
//! warning, `/api/v1/cluster` and `nmid_etcd_session_up` say so) while the dispatcher serves
//! on; it retries with backoff, and once etcd answers keeps the lease if etcd still has it,
//! else takes a new one, and writes its keys anew. Whichever request hears that etcd no
//! longer has the lease (expired while etcd was out of reach, or revoked), the session takes
//! a new one at once and writes both keys under it ([`etcd::lease_gone`]). On shutdown it first marks the record
//! `draining` (peers and discovering clients stop sending new calls), and after the drain
//! revokes the lease, which deletes both keys at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::etcd::{self, EtcdConnection, EtcdSettings, Members, RETRY_MIN};
use super::metrics::ClusterMetrics;
use super::nmid_key::nmid_value;
use super::record::{dispatcher_nmid_key, member_key, MemberRecord};
use crate::actors::registry::{Registry, Snapshot};

/// Where the dispatcher is in its life, as the session acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking calls.
    Serving,
    /// Shutting down: the record says `draining`.
    Draining,
    /// Drained: revoke the lease and end.
    Leaving,
}

/// The session's state, for `/api/v1/cluster`.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// The lease is held and the keys are current.
    pub up: bool,
    /// When `up` last changed.
    pub since: SystemTime,
    /// Why the session last went down.
    pub last_error: Option<String>,
    /// The record as last written (or, before the first write, as it would be).
    pub record: MemberRecord,
}

/// What the session needs.
pub struct EtcdSession {
    /// How to reach etcd.
    pub etcd: EtcdSettings,
    /// The lease TTL.
    pub lease_ttl: Duration,
    /// The membership records' prefix.
    pub prefix: String,
    /// How often the registry is read for changes.
    pub publish_interval: Duration,
    /// How often the nmid key is put again unchanged; `None`: never.
    pub nmid_refresh: Option<Duration>,
    /// The registry whose functions and load are published.
    pub registry: Addr<Registry>,
    /// The cluster's members, as the membership follower sees them.
    pub members: watch::Receiver<Members>,
    /// Shared with the cluster's view.
    pub state: Arc<Mutex<SessionState>>,
    /// The session gauge.
    pub metrics: ClusterMetrics,
}

/// The lease the session holds.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    /// When etcd last renewed it.
    renewed: Instant,
}

/// Why holding the lease through one member stopped.
#[derive(Debug)]
enum Interrupted {
    /// etcd no longer has the lease: take a new one.
    LeaseGone,
    /// The member failed a request or did not answer: go on through another.
    Member(etcd_client::Error),
}

impl From<etcd_client::Error> for Interrupted {
    fn from(err: etcd_client::Error) -> Self {
        match etcd::lease_gone(&err) {
            true => Self::LeaseGone,
            false => Self::Member(err),
        }
    }
}

/// The lease held through one member: its keep-alive stream and what was last written.
struct Attached {
    client: Client,
    keeper: LeaseKeeper,
    replies: LeaseKeepAliveStream,
    record: MemberRecord,
    nmid: String,
}

impl EtcdSession {
    /// Runs until the phase is [`Phase::Leaving`] and the lease is revoked (or etcd cannot
    /// be reached to revoke it: the lease then expires by itself). Logs once per change of
    /// state (up, member switched, down), with the failed attempts in between.
    pub async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        let mut etcd = EtcdConnection::new(self.etcd.clone());
        let mut backoff = self.etcd.backoff();
        let mut lease: Option<Lease> = None;
        let mut failures = 0u32;
        // Registered at least once: "down" and "known peers kept" make sense only then.
        let mut ever_up = false;
        loop {
            if *phase.borrow() == Phase::Leaving {
                return;
            }
            let interrupted = match self.attach(&mut etcd, &mut lease, &phase).await {
                Ok(attached) => {
                    let id = lease.map_or(0, |l| l.id);
                    let endpoint = etcd.endpoint().unwrap_or_default();
                    match self.is_up() {
                        false => {
                            info!(id = %attached.record.id, lease = id, ttl_s = self.ttl_s(), %endpoint, failures, "etcd session up: registered in the cluster")
                        }
                        true => {
                            debug!(lease = id, %endpoint, failures, "lease held through this etcd member")
                        }
                    }
                    self.set_up(true, None);
                    ever_up = true;
                    failures = 0;
                    backoff = self.etcd.backoff();
                    let held = lease.as_mut().expect("attached with a lease");
                    match self.hold(attached, held, &mut etcd, &mut phase).await {
                        Ok(()) => return,
                        Err(Interrupted::Member(err)) => {
                            let endpoint = etcd.endpoint().unwrap_or_default().to_owned();
                            info!(%endpoint, cause = %err, "etcd member failed: holding the lease through another");
                            Interrupted::Member(err)
                        }
                        Err(gone) => gone,
                    }
                }
                Err(Interrupted::Member(err)) => {
                    failures += 1;
                    debug!(cause = %err, failures, "no etcd member answered");
                    Interrupted::Member(err)
                }
                Err(gone) => gone,
            };
            let cause = match interrupted {
                // The member answered: the lease expired (etcd was out of reach for longer
                // than the TTL) or was revoked, and the keys with it. A new lease and the
                // keys written again, through the same member, after a short pause.
                Interrupted::LeaseGone => {
                    let gone = lease.take().map_or(0, |l| l.id);
                    warn!(
                        lease = gone,
                        "etcd no longer has the lease (expired or revoked): taking a new one, writing the keys again"
                    );
                    self.set_up(false, Some("etcd no longer has the lease".to_owned()));
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_MIN) => continue,
                        _ = phase.wait_for(|p| *p == Phase::Leaving) => return,
                    }
                }
                Interrupted::Member(err) => err.to_string(),
            };
            etcd.failed();
            // The member holding the lease failed: another one at once. No member answered:
            // back off (100 ms doubling to `discovery.retry_max_ms`, with jitter), and while
            // the lease is still held, never longer than a keep-alive period, so that a
            // member answering again renews it in time.
            let wait = match failures {
                0 => RETRY_MIN,
                _ => backoff.next().unwrap_or(self.etcd.retry_max),
            };
            // Up while some member may still renew the lease in time; down once none did
            // for a whole TTL (or etcd said the lease is gone).
            let held = lease.is_some_and(|l| l.renewed.elapsed() < self.lease_ttl);
            let wait = match held {
                true => wait.min(self.lease_ttl / 3),
                false => {
                    let retry_ms = wait.as_millis() as u64;
                    match (ever_up, self.is_up() || failures == 1) {
                        (_, false) => {}
                        (true, true) => {
                            warn!(cause = %cause, retry_ms, "etcd session down: serving locally, known peers kept; retrying")
                        }
                        (false, true) => {
                            warn!(cause = %cause, retry_ms, "etcd unreachable: not registered in the cluster yet, serving locally; retrying")
                        }
                    }
                    self.set_up(false, Some(cause));
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = phase.wait_for(|p| *p == Phase::Leaving) => return,
            }
        }
    }

    /// Connects to a member; renews the lease held if etcd still has it, else grants a new
    /// one; writes both keys under it.
    async fn attach(
        &self,
        etcd: &mut EtcdConnection,
        lease: &mut Option<Lease>,
        phase: &watch::Receiver<Phase>,
    ) -> Result<Attached, Interrupted> {
        let mut client = etcd.client().await?;
        let timeout = self.etcd.request_timeout;
        let mut stream = None;
        if let Some(held) = lease.as_mut() {
            match etcd::resume_lease(&mut client, held.id, timeout).await? {
                Some(resumed) => {
                    held.renewed = Instant::now();
                    stream = Some(resumed);
                }
                None => {
                    warn!(
                        lease = held.id,
                        "etcd no longer has the lease (expired or revoked): taking a new one, writing the keys again"
                    );
                    *lease = None;
                }
            }
        }
        let (keeper, replies) = match stream {
            Some(stream) => stream,
            None => {
                let id = client.lease_grant(self.ttl_s(), None).await?.id();
                self.metrics.lease_granted();
                *lease = Some(Lease {
                    id,
                    renewed: Instant::now(),
                });
                client.lease_keep_alive(id).await?
            }
        };
        let id = lease.map_or(0, |l| l.id);
        let record = self.current(*phase.borrow() != Phase::Serving).await;
        let nmid = self.nmid_value(&record);
        self.put_record(&mut client, id, &record).await?;
        self.put_nmid(&mut client, id, &record.id, &nmid).await?;
        Ok(Attached {
            client,
            keeper,
            replies,
            record,
            nmid,
        })
    }

    /// Keeps the lease alive and the keys current through the member attached, until it
    /// fails (`Err`) or the dispatcher leaves (`Ok`, the lease revoked if etcd answers).
    async fn hold(
        &self,
        attached: Attached,
        lease: &mut Lease,
        etcd: &mut EtcdConnection,
        phase: &mut watch::Receiver<Phase>,
    ) -> Result<(), Interrupted> {
        let Attached {
            mut client,
            mut keeper,
            mut replies,
            mut record,
            mut nmid,
        } = attached;
        let mut members = self.members.clone();
        let mut keep_alive = tokio::time::interval(self.lease_ttl / 3);
        let mut publish = tokio::time::interval(self.publish_interval);
        let refresh_every = self.nmid_refresh.unwrap_or(Duration::MAX / 4);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now(), refresh_every);
        refresh.reset();
        let mut members_alive = true;
        loop {
            tokio::select! {
                _ = keep_alive.tick() => {
                    let timeout = self.etcd.request_timeout;
                    match etcd::keep_alive(&mut keeper, &mut replies, timeout).await? {
                        true => lease.renewed = Instant::now(),
                        false => return Err(Interrupted::LeaseGone),
                    }
                    etcd.refresh_members().await?;
                }
                _ = publish.tick() => {
                    let now = self.current(record.draining).await;
                    if now != record {
                        self.put_record(&mut client, lease.id, &now).await?;
                        record = now;
                    }
                }
                changed = members.changed(), if members_alive => {
                    members_alive = changed.is_ok();
                }
                _ = refresh.tick(), if self.nmid_refresh.is_some() => {
                    self.put_nmid(&mut client, lease.id, &record.id, &nmid).await?;
                    debug!(id = %record.id, "nmid key put again (refresh)");
                }
                changed = phase.changed() => {
                    let phase = changed.map(|()| *phase.borrow()).unwrap_or(Phase::Leaving);
                    if phase == Phase::Leaving {
                        return self.revoke(&mut client, etcd, lease.id, &record).await;
                    }
                    record.draining = true;
                    self.put_record(&mut client, lease.id, &record).await?;
                }
            }
            // Peers and own functions both shape the nmid key: rewritten when it changes.
            let value = self.nmid_value(&record);
            if value != nmid {
                self.put_nmid(&mut client, lease.id, &record.id, &value)
                    .await?;
                debug!(id = %record.id, value = %value, "nmid key rewritten");
                nmid = value;
            }
        }
    }

    /// The nmid key's value for `record` and the members known now.
    fn nmid_value(&self, record: &MemberRecord) -> String {
        let members = self.members.borrow();
        nmid_value(record, members.members.values().map(|m| &m.record))
    }

    async fn put_record(
        &self,
        client: &mut Client,
        lease: i64,
        record: &MemberRecord,
    ) -> Result<(), etcd_client::Error> {
        let key = member_key(&self.prefix, &record.id);
        let options = PutOptions::new().with_lease(lease);
        client.put(key, record.encode(), Some(options)).await?;
        self.state.lock().expect("session state").record = record.clone();
        Ok(())
    }

    async fn put_nmid(
        &self,
        client: &mut Client,
        lease: i64,
        id: &str,
        value: &str,
    ) -> Result<(), etcd_client::Error> {
        let options = PutOptions::new().with_lease(lease);
        client
            .put(dispatcher_nmid_key(id), value, Some(options))
            .await?;
        Ok(())
    }

    /// Revokes the lease, through another member if the one attached fails.
    async fn revoke(
        &self,
        client: &mut Client,
        etcd: &mut EtcdConnection,
        lease: i64,
        record: &MemberRecord,
    ) -> Result<(), Interrupted> {
        if let Err(err) = client.lease_revoke(lease).await {
            debug!(cause = %err, "lease revoke failed; trying another etcd member");
            etcd.failed();
            etcd.client().await?.lease_revoke(lease).await?;
        }
        info!(id = %record.id, "left the cluster: lease revoked, keys deleted");
        Ok(())
    }

    /// The record as of now: the registry's functions (those with a worker) and load.
    async fn current(&self, draining: bool) -> MemberRecord {
        let mut record = self.state.lock().expect("session state").record.clone();
        record.draining = draining;
        if let Ok(snapshot) = self.registry.send(Snapshot).await {
            record.functions = (snapshot.functions.iter())
                .filter(|f| f.workers > 0)
                .map(|f| f.name.clone())
                .collect();
            record.slots = (snapshot.functions.iter())
                .filter(|f| f.workers > 0)
                .map(|f| (f.name.clone(), f.slots))
                .collect();
            let load = snapshot.in_flight() + snapshot.queued() as u64;
            record.load = u32::try_from(load).unwrap_or(u32::MAX);
        }
        record
    }

    fn ttl_s(&self) -> i64 {
        self.lease_ttl.as_secs().max(1) as i64
    }

    fn is_up(&self) -> bool {
        self.state.lock().expect("session state").up
    }

    fn set_up(&mut self, up: bool, error: Option<String>) {
        let mut state = self.state.lock().expect("session state");
        if state.up != up {
            state.since = SystemTime::now();
            self.metrics.set_etcd_up(up);
        }
        state.up = up;
        if error.is_some() {
            state.last_error = error;
        }
    }
}
