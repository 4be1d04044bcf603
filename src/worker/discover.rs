//! A worker that follows the cluster: one session per live dispatcher found in etcd.
//!
//! [`Follower`] (one per discovering worker) receives the membership records as they change
//! and starts a session for each dispatcher that appears (it registers there within the
//! watch's delay, well under a second), and stops gracefully the session of one that leaves
//! or starts draining. Dispatchers given with `server(..)` keep their own sessions and are
//! not started twice.
//!
//! With registration on, it also holds an etcd lease of its own and keeps `nmid/<worker
//! name>` under it, mapping each function to the dispatchers it serves — the key nmid's Go
//! worker writes, but one that vanishes with the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use etcd_client::PutOptions;
use futures_util::stream;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::session::{AddFunction, RemoveFunction, Session, SessionSettings, SetSlots, Shutdown};
use super::{Functions, WorkerMetrics};
use crate::client::Protocol;
use crate::cluster::etcd::{self, follow_members, Discovery, EtcdSettings, Members};
use crate::cluster::record::{worker_nmid_key, worker_nmid_value};

/// Everything a session is made from, but its address.
#[derive(Clone)]
pub(super) struct Template {
    /// TLS and token, for every dispatcher.
    pub(super) access: crate::net::Access,
    pub(super) name: String,
    pub(super) slots: u32,
    pub(super) protocol: Protocol,
    pub(super) max_frame_bytes: usize,
    pub(super) stop_timeout: Duration,
    /// The functions served now: a copy for each new session.
    pub(super) functions: Functions,
    pub(super) metrics: Option<WorkerMetrics>,
    /// Sessions connected with their functions registered, all dispatchers together.
    pub(super) registered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Template {
    /// The settings of a session with the dispatcher at `addr`.
    pub(super) fn settings_for(&self, addr: &str) -> SessionSettings {
        SessionSettings {
            addr: addr.to_owned(),
            access: self.access.clone(),
            registered: self.registered.clone(),
            name: self.name.clone(),
            slots: self.slots,
            protocol: self.protocol,
            max_frame_bytes: self.max_frame_bytes,
            stop_timeout: self.stop_timeout,
            functions: self.functions.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Stop every discovered session gracefully; the receiver completes when all have closed.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub(super) struct StopAll;

/// The follower of one discovering worker.
pub(super) struct Follower {
    discovery: Discovery,
    /// Keep `nmid/<name>` under a lease of this TTL.
    register_ttl: Option<Duration>,
    template: Template,
    /// Addresses served by sessions the builder started (`server(..)`).
    fixed: BTreeSet<String>,
    /// Sessions of discovered dispatchers, by dispatcher id: (address, session).
    sessions: BTreeMap<String, (String, Addr<Session>)>,
    /// The addresses served, for the `nmid/<name>` key.
    served: watch::Sender<Vec<String>>,
    stopping: bool,
}

impl Follower {
    pub(super) fn new(
        discovery: Discovery,
        register_ttl: Option<Duration>,
        template: Template,
        fixed: Vec<String>,
    ) -> Self {
        let (served, _) = watch::channel(fixed.clone());
        Self {
            discovery,
            register_ttl,
            template,
            fixed: fixed.into_iter().collect(),
            sessions: BTreeMap::new(),
            served,
            stopping: false,
        }
    }
}

impl Actor for Follower {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let members = follow_members(
            self.discovery.etcd.clone(),
            self.discovery.prefix.clone(),
            64 * 1024,
        );
        // The state as it is first, then one item per change.
        let changes = stream::unfold((members, true), |(mut members, first)| async move {
            if !first && members.changed().await.is_err() {
                return None;
            }
            let now = members.borrow_and_update().clone();
            Some((now, (members, false)))
        });
        ctx.add_stream(changes);
        if let Some(ttl) = self.register_ttl {
            let names: Vec<String> = self.template.functions.names().map(str::to_owned).collect();
            let register = Registration {
                etcd: self.discovery.etcd.clone(),
                key: worker_nmid_key(&self.template.name),
                functions: names,
                ttl,
            };
            actix_rt::spawn(register.run(self.served.subscribe()));
        }
    }
}

impl StreamHandler<Members> for Follower {
    fn handle(&mut self, members: Members, _: &mut Self::Context) {
        if self.stopping {
            return;
        }
        let live: BTreeMap<&String, String> = (members.members.iter())
            .filter(|(_, m)| !m.record.draining)
            .map(|(id, m)| (id, m.record.tcp_addr.to_string()))
            .filter(|(_, addr)| !self.fixed.contains(addr))
            .collect();
        let gone: Vec<String> = (self.sessions.keys())
            .filter(|id| !live.contains_key(id))
            .cloned()
            .collect();
        for id in gone {
            if let Some((addr, session)) = self.sessions.remove(&id) {
                info!(dispatcher = %id, %addr, "dispatcher left the cluster: session stopping");
                session.do_send(Shutdown);
            }
        }
        for (id, addr) in live {
            if self.sessions.contains_key(id) {
                continue;
            }
            info!(dispatcher = %id, %addr, "dispatcher found in etcd: connecting");
            let session = Session::new(self.template.settings_for(&addr)).start();
            self.sessions.insert(id.clone(), (addr, session));
        }
        let mut served: Vec<String> = self.fixed.iter().cloned().collect();
        served.extend(self.sessions.values().map(|(addr, _)| addr.clone()));
        self.served.send_replace(served);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// A function added to the running worker: served by every discovered session, and by the
/// sessions of dispatchers found later.
impl Handler<AddFunction> for Follower {
    type Result = ();

    fn handle(&mut self, msg: AddFunction, _: &mut Self::Context) {
        let shared = msg.handler.clone();
        let handler: super::BoxedHandler = Rc::new(move |job| shared(job));
        self.template.functions.insert(msg.name.clone(), handler);
        for (_, session) in self.sessions.values() {
            session.do_send(AddFunction {
                name: msg.name.clone(),
                handler: msg.handler.clone(),
            });
        }
    }
}

impl Handler<RemoveFunction> for Follower {
    type Result = ();

    fn handle(&mut self, msg: RemoveFunction, _: &mut Self::Context) {
        self.template.functions.remove(&msg.name);
        self.template.functions.prune();
        for (_, session) in self.sessions.values() {
            session.do_send(RemoveFunction {
                name: msg.name.clone(),
            });
        }
    }
}

impl Handler<SetSlots> for Follower {
    type Result = ();

    fn handle(&mut self, msg: SetSlots, _: &mut Self::Context) {
        self.template.slots = msg.slots.max(1);
        for (_, session) in self.sessions.values() {
            session.do_send(SetSlots { slots: msg.slots });
        }
    }
}

impl Handler<StopAll> for Follower {
    type Result = MessageResult<StopAll>;

    fn handle(&mut self, _: StopAll, ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let (tx, rx) = oneshot::channel();
        let waits: Vec<_> = (self.sessions.values())
            .map(|(_, session)| session.send(Shutdown))
            .collect();
        async move {
            for wait in waits {
                if let Ok(done) = wait.await {
                    let _ = done.await;
                }
            }
        }
        .into_actor(self)
        .map(|(), _, ctx| {
            let _ = tx.send(());
            ctx.stop();
        })
        .spawn(ctx);
        MessageResult(rx)
    }
}

/// `nmid/<name>` under a lease of the worker's own, rewritten when the dispatchers served
/// change; revoked when the worker stops (the follower drops the sender).
struct Registration {
    etcd: EtcdSettings,
    key: String,
    functions: Vec<String>,
    ttl: Duration,
}

impl Registration {
    async fn run(self, mut served: watch::Receiver<Vec<String>>) {
        let mut backoff = self.etcd.backoff();
        loop {
            match self.once(&mut served).await {
                Ok(()) => return,
                Err(err) => {
                    let wait = backoff.next().unwrap_or(self.etcd.retry_max);
                    warn!(key = %self.key, cause = %err, "etcd registration lost; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn once(
        &self,
        served: &mut watch::Receiver<Vec<String>>,
    ) -> Result<(), etcd_client::Error> {
        let mut client = self.etcd.connect().await?;
        let lease = client
            .lease_grant(self.ttl.as_secs().max(1) as i64, None)
            .await?
            .id();
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        let mut keep_alive = tokio::time::interval(self.ttl / 3);
        loop {
            let addrs = served.borrow_and_update().clone();
            let names = self.functions.iter().map(String::as_str);
            let value = worker_nmid_value(names, &addrs);
            let options = PutOptions::new().with_lease(lease);
            client.put(self.key.clone(), value, Some(options)).await?;
            loop {
                tokio::select! {
                    _ = keep_alive.tick() => {
                        etcd::keep_alive(&mut keeper, &mut replies, self.etcd.request_timeout).await?;
                    }
                    changed = served.changed() => {
                        if changed.is_err() {
                            let _ = client.lease_revoke(lease).await;
                            return Ok(());
                        }
                        break;
                    }
                }
            }
        }
    }
}
