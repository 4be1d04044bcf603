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
//! worker writes, but one that vanishes with the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use etcd_client::PutOptions;
use futures_util::stream;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::dispatcher_link::{
    AddFunction, DispatcherLink, LinkSettings, RemoveFunction, SetSlots, Shutdown,
};
use nmid_proto::discovery::etcd::{self, follow_members, Discovery, EtcdSettings, Members};
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
