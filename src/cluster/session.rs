//! The dispatcher's etcd session: one lease, kept alive, and the two keys under it — the
//! membership record and nmid's function key — rewritten when the dispatcher's functions
//! or load change (read from the registry every `cluster.publish_interval_ms`, written only
//! on a change: never per call).
//!
//! etcd down at start, or lost mid-run: the session is down (a warning, `/api/v1/cluster`
//! and `nmid_etcd_session_up` say so) while the dispatcher serves on; it retries with
//! backoff, and once etcd answers again takes a new lease and writes its keys anew. On
//! shutdown it first marks the record `draining` (peers and discovering clients stop sending
//! new calls), and after the drain revokes the lease, which deletes both keys at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use etcd_client::{Client, PutOptions};
use tokio::sync::watch;
use tracing::{info, warn};

use super::etcd::{self, EtcdSettings};
use super::metrics::ClusterMetrics;
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
    /// The registry whose functions and load are published.
    pub registry: Addr<Registry>,
    /// Shared with the cluster's view.
    pub state: Arc<Mutex<SessionState>>,
    /// The session gauge.
    pub metrics: ClusterMetrics,
}

impl EtcdSession {
    /// Runs until the phase is [`Phase::Leaving`] and the lease is revoked (or etcd cannot
    /// be reached to revoke it: the lease then expires by itself).
    pub async fn run(self, mut phase: watch::Receiver<Phase>) {
        let mut backoff = self.etcd.backoff();
        loop {
            let result = self.once(&mut phase, &mut backoff).await;
            self.set_up(false, result.as_ref().err().map(ToString::to_string));
            if *phase.borrow() == Phase::Leaving {
                return;
            }
            let wait = backoff.next().unwrap_or(self.etcd.retry_max);
            if let Err(err) = result {
                warn!(cause = %err, retry_ms = wait.as_millis() as u64, "etcd session down: serving locally, known peers kept; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = phase.wait_for(|p| *p == Phase::Leaving) => return,
            }
        }
    }

    /// One lease: grant, write the keys, keep alive and publish until etcd fails (`Err`) or
    /// the dispatcher leaves (`Ok`).
    async fn once(
        &self,
        phase: &mut watch::Receiver<Phase>,
        backoff: &mut backon::ExponentialBackoff,
    ) -> Result<(), etcd_client::Error> {
        let mut client = self.etcd.connect().await?;
        let ttl = self.lease_ttl.as_secs().max(1) as i64;
        let lease = client.lease_grant(ttl, None).await?.id();
        let mut record = self.current(*phase.borrow() != Phase::Serving).await;
        self.write(&mut client, lease, &record, true).await?;
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        *backoff = self.etcd.backoff();
        self.set_up(true, None);
        info!(id = %record.id, lease, ttl_s = ttl, "etcd session up: registered in the cluster");
        let mut keep_alive = tokio::time::interval(self.lease_ttl / 3);
        let mut publish = tokio::time::interval(self.publish_interval);
        loop {
            tokio::select! {
                _ = keep_alive.tick() => {
                    etcd::keep_alive(&mut keeper, &mut replies, self.etcd.request_timeout).await?;
                }
                _ = publish.tick() => {
                    let now = self.current(record.draining).await;
                    if now != record {
                        let functions_changed = now.functions != record.functions;
                        self.write(&mut client, lease, &now, functions_changed).await?;
                        record = now;
                    }
                }
                changed = phase.changed() => {
                    let phase = changed.map(|()| *phase.borrow()).unwrap_or(Phase::Leaving);
                    if phase == Phase::Leaving {
                        return self.revoke(&mut client, lease, &record).await;
                    }
                    record.draining = true;
                    self.write(&mut client, lease, &record, true).await?;
                }
            }
        }
    }

    /// Writes the record and, when asked (its functions changed), nmid's key; both under
    /// `lease`. A draining dispatcher advertises no functions under `nmid/`.
    async fn write(
        &self,
        client: &mut Client,
        lease: i64,
        record: &MemberRecord,
        nmid_too: bool,
    ) -> Result<(), etcd_client::Error> {
        let key = member_key(&self.prefix, &record.id);
        let options = || Some(PutOptions::new().with_lease(lease));
        client.put(key, record.encode(), options()).await?;
        if nmid_too {
            let value = match record.draining {
                true => "{}".to_owned(),
                false => record.nmid_value(),
            };
            client
                .put(dispatcher_nmid_key(&record.id), value, options())
                .await?;
        }
        self.state.lock().expect("session state").record = record.clone();
        Ok(())
    }

    async fn revoke(
        &self,
        client: &mut Client,
        lease: i64,
        record: &MemberRecord,
    ) -> Result<(), etcd_client::Error> {
        client.lease_revoke(lease).await?;
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
            let load = snapshot.in_flight() + snapshot.queued() as u64;
            record.load = u32::try_from(load).unwrap_or(u32::MAX);
        }
        record
    }

    fn set_up(&self, up: bool, error: Option<String>) {
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
