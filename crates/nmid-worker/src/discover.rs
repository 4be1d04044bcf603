//! A worker that follows the cluster: one link per live dispatcher found in etcd.
//!
//! [`Follower`] (one per discovering worker) receives the membership records as they change
//! and starts a link for each dispatcher that appears (it registers there within the
//! watch's delay, well under a second), and stops gracefully the link of one that leaves
//! or starts draining. Dispatchers given with `server(..)` keep their own links and are
//! not started twice.
//!
//! With registration on, it also holds an etcd lease of its own and keeps `nmid/<worker
//! name>` under it, mapping each function to the dispatchers it serves — the key nmid's Go
//! worker writes, but one that vanishes with the worker: revoked on a graceful stop (before
//! [`super::WorkerHandle::stop`] returns), expired within the TTL of a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use etcd_client::PutOptions;
use futures_util::stream;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::dispatcher_link::{
    AddFunction, DispatcherLink, LinkSettings, RemoveFunction, SetSlots, Shutdown,
};
use nmid_proto::discovery::etcd::{
    self, follow_members, Discovery, EtcdConnection, EtcdSettings, Members,
};
use nmid_proto::discovery::record::{worker_nmid_key, worker_nmid_value};

/// Stop every discovered link gracefully; the receiver completes when all have closed.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub(super) struct StopAll;

/// The follower of one discovering worker.
pub(super) struct Follower {
    discovery: Discovery,
    /// Keep `nmid/<name>` under a lease of this TTL.
    register_ttl: Option<Duration>,
    template: LinkSettings,
    /// Addresses served by links the builder started (`server(..)`).
    fixed: BTreeSet<String>,
    /// Links to discovered dispatchers, by dispatcher id: (address, link).
    links: BTreeMap<String, (String, Addr<DispatcherLink>)>,
    /// The addresses served, for the `nmid/<name>` key.
    served: watch::Sender<Vec<String>>,
    /// The registration's task and the signal that ends it (revoking its lease).
    registration: Option<(oneshot::Sender<()>, actix_rt::task::JoinHandle<()>)>,
    stopping: bool,
}

impl Follower {
    pub(super) fn new(
        discovery: Discovery,
        register_ttl: Option<Duration>,
        template: LinkSettings,
        fixed: Vec<String>,
    ) -> Self {
        let (served, _) = watch::channel(fixed.clone());
        Self {
            discovery,
            register_ttl,
            template,
            fixed: fixed.into_iter().collect(),
            links: BTreeMap::new(),
            served,
            registration: None,
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
            let (leave, left) = oneshot::channel();
            let task = actix_rt::spawn(register.run(self.served.subscribe(), left));
            self.registration = Some((leave, task));
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
        let gone: Vec<String> = (self.links.keys())
            .filter(|id| !live.contains_key(id))
            .cloned()
            .collect();
        for id in gone {
            if let Some((addr, link)) = self.links.remove(&id) {
                info!(dispatcher = %id, %addr, "dispatcher left the cluster: link stopping");
                link.do_send(Shutdown);
            }
        }
        for (id, addr) in live {
            if self.links.contains_key(id) {
                continue;
            }
            info!(dispatcher = %id, %addr, "dispatcher found in etcd: connecting");
            let link = DispatcherLink::new(addr.clone(), self.template.clone()).start();
            self.links.insert(id.clone(), (addr, link));
        }
        let mut served: Vec<String> = self.fixed.iter().cloned().collect();
        served.extend(self.links.values().map(|(addr, _)| addr.clone()));
        self.served.send_replace(served);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// A function added to the running worker: served by every discovered link, and by the
/// links of dispatchers found later.
impl Handler<AddFunction> for Follower {
    type Result = ();

    fn handle(&mut self, msg: AddFunction, _: &mut Self::Context) {
        let shared = msg.handler.clone();
        let handler: super::BoxedHandler = Rc::new(move |job| shared(job));
        self.template.functions.insert(msg.name.clone(), handler);
        for (_, link) in self.links.values() {
            link.do_send(AddFunction {
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
        for (_, link) in self.links.values() {
            link.do_send(RemoveFunction {
                name: msg.name.clone(),
            });
        }
    }
}

impl Handler<SetSlots> for Follower {
    type Result = ();

    fn handle(&mut self, msg: SetSlots, _: &mut Self::Context) {
        self.template.slots = msg.slots.max(1);
        for (_, link) in self.links.values() {
            link.do_send(SetSlots { slots: msg.slots });
        }
    }
}

impl Handler<StopAll> for Follower {
    type Result = MessageResult<StopAll>;

    fn handle(&mut self, _: StopAll, ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let (tx, rx) = oneshot::channel();
        let waits: Vec<_> = (self.links.values())
            .map(|(_, link)| link.send(Shutdown))
            .collect();
        let registration = self.registration.take();
        // Connecting to another member and revoking: a few request times at most.
        let revoke_bound = 3 * self.discovery.etcd.request_timeout;
        async move {
            if let Some((leave, task)) = registration {
                let _ = leave.send(());
                let _ = tokio::time::timeout(revoke_bound, task).await;
            }
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
/// change, kept alive through whichever etcd member answers; revoked when the worker stops.
struct Registration {
    etcd: EtcdSettings,
    key: String,
    functions: Vec<String>,
    ttl: Duration,
}

impl Registration {
    /// Runs until `leave` fires (or its sender is dropped), then revokes the lease if etcd
    /// answers. Logs once when registration fails and once when it is back.
    async fn run(self, mut served: watch::Receiver<Vec<String>>, mut leave: oneshot::Receiver<()>) {
        let mut connection = EtcdConnection::new(self.etcd.clone());
        let mut backoff = self.etcd.backoff();
        let mut lease = None;
        let mut failures = 0u32;
        loop {
            let held = (&mut lease, &mut failures);
            let result = (self.once(&mut connection, held, &mut served, &mut leave)).await;
            let Err(err) = result else { return };
            match etcd::lease_gone(&err) {
                // Expired (etcd out of reach longer than the TTL) or revoked: a new lease,
                // through the same member, and the key written again under it.
                true => lease = None,
                false => connection.failed(),
            }
            if failures == 0 {
                backoff = self.etcd.backoff();
            }
            failures += 1;
            let wait = backoff.next().unwrap_or(self.etcd.retry_max);
            match failures {
                1 => {
                    warn!(key = %self.key, cause = %err, "etcd registration interrupted; retrying")
                }
                _ => {
                    debug!(key = %self.key, cause = %err, failures, "etcd registration still failing")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut leave => return,
            }
        }
    }

    /// Holds the lease (the one held before if etcd still has it) and the key through one
    /// member, until it fails (`Err`) or the worker stops (`Ok`); `failures` (attempts that
    /// failed in a row) is logged and cleared once the key is written.
    async fn once(
        &self,
        connection: &mut EtcdConnection,
        (lease, failures): (&mut Option<i64>, &mut u32),
        served: &mut watch::Receiver<Vec<String>>,
        leave: &mut oneshot::Receiver<()>,
    ) -> Result<(), etcd_client::Error> {
        let mut client = connection.client().await?;
        let timeout = self.etcd.request_timeout;
        let mut stream = None;
        if let Some(id) = *lease {
            stream = etcd::resume_lease(&mut client, id, timeout).await?;
            if stream.is_none() {
                *lease = None;
            }
        }
        let (mut keeper, mut replies) = match stream {
            Some(stream) => stream,
            None => {
                let ttl = self.ttl.as_secs().max(1) as i64;
                let id = client.lease_grant(ttl, None).await?.id();
                *lease = Some(id);
                client.lease_keep_alive(id).await?
            }
        };
        let id = lease.expect("a lease was kept or granted");
        let mut keep_alive = tokio::time::interval(self.ttl / 3);
        loop {
            let addrs = served.borrow_and_update().clone();
            let names = self.functions.iter().map(String::as_str);
            let value = worker_nmid_value(names, &addrs);
            let options = PutOptions::new().with_lease(id);
            client.put(self.key.clone(), value, Some(options)).await?;
            match std::mem::take(failures) {
                0 => debug!(key = %self.key, lease = id, "registered in etcd"),
                failures => info!(key = %self.key, lease = id, failures, "etcd registration back"),
            }
            loop {
                tokio::select! {
                    _ = keep_alive.tick() => {
                        if !etcd::keep_alive(&mut keeper, &mut replies, timeout).await? {
                            *lease = None;
                            return Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into()));
                        }
                    }
                    changed = served.changed() => {
                        if changed.is_err() {
                            revoke(&mut client, id, &self.key).await;
                            return Ok(());
                        }
                        break;
                    }
                    _ = &mut *leave => {
                        revoke(&mut client, id, &self.key).await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Revokes the registration's lease, deleting its key; if etcd does not answer, the key
/// expires with the lease.
async fn revoke(client: &mut etcd_client::Client, lease: i64, key: &str) {
    match client.lease_revoke(lease).await {
        Ok(_) => info!(%key, "etcd registration removed"),
        Err(err) => {
            warn!(%key, cause = %err, "etcd registration not removed: it expires with its lease")
        }
    }
}
