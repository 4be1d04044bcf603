//! The nmid worker library: serve functions to one or more nmid dispatchers from Rust, on
//! actix actors. It knows nothing of the dispatcher but its protocol (`nmid-proto`): it
//! serves this project's dispatcher (tagged frames, the default) and nmid's Go dispatcher
//! (`.protocol(Protocol::V1)`) alike.
//!
//! A [`Worker`] is built with a name, the dispatchers to serve (nmid's `AddServer`), and one
//! async handler per function. Starting it starts one `DispatcherLink` actor per
//! dispatcher, which registers, heart-beats every 10 s, reconnects with backoff and
//! registers again after a dispatcher restart, and runs at most `slots` jobs at once.
//! [`WorkerHandle::stop`] stops gracefully: no new jobs, the ones in flight finish, then the
//! connections close.
//!
//! Results follow nmid's RetStruct convention (see [`RetStruct`]) so that callers using
//! nmid's SDKs read them too. A handler's `Err` reaches a tagged caller as a worker error with
//! its message (and a v1 caller as a RetStruct with `Code` 1). Inside a handler,
//! [`Job::call`] calls another function through the same dispatcher (an `nmid-client`
//! [`Client`](nmid_client::Client)), carrying the job's deadline and trace context.
//!
//! # Examples
//!
//! The seed's Worker1, serving `ToUpper` (`cargo run -p nmid-worker --example worker` runs
//! it against `make run`'s dispatcher; here a stand-in dispatcher sends it one job):
//!
//! ```
//! use nmid_worker::{Job, JobError, RetStruct, Worker};
//! use serde::Deserialize;
//! # use futures_util::{SinkExt, StreamExt};
//! # use nmid_worker::nmid_client::nmid_proto::codec::{self, Frame, NmidCodec, TaggedCall};
//!
//! #[derive(Deserialize)]
//! struct Params {
//!     name: String,
//! }
//!
//! async fn to_upper(job: Job) -> Result<RetStruct, JobError> {
//!     let params: Params = job.decode()?;
//!     Ok(RetStruct::ok(params.name.to_uppercase()))
//! }
//!
//! #[actix_rt::main]
//! async fn main() {
//! #   // The stand-in dispatcher: once ToUpper is registered it sends one job, checks the
//! #   // answer, and acknowledges the worker's goodbye.
//! #   let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #   let stand_in_addr = listener.local_addr().unwrap().to_string();
//! #   let (answered, answer) = tokio::sync::oneshot::channel();
//! #   let dispatcher = tokio::spawn(async move {
//! #       let (socket, _) = listener.accept().await.unwrap();
//! #       let mut frames = tokio_util::codec::Framed::new(socket, NmidCodec::new(1 << 20));
//! #       let mut answered = Some(answered);
//! #       while let Some(Ok(frame)) = frames.next().await {
//! #           let reply = match frame {
//! #               Frame::WAddFunc { .. } => Frame::SJob(TaggedCall {
//! #                   id: 1,
//! #                   timeout_ms: 5_000,
//! #                   params_type: codec::ParamsType::MSGPACK,
//! #                   handle_type: codec::HANDLE_TYPE_ORIGINAL,
//! #                   function: "ToUpper".into(),
//! #                   params: (&b"\x81\xa4name\xa4nmid"[..]).into(),
//! #                   meta: Vec::new(),
//! #               }),
//! #               Frame::WJobResult(result) => {
//! #                   let ret = RetStruct::decode(&result.ret).unwrap();
//! #                   answered.take().unwrap().send(ret.data).unwrap();
//! #                   continue;
//! #               }
//! #               Frame::WBye => Frame::SByeAck,
//! #               _ => continue,
//! #           };
//! #           frames.send(reply).await.unwrap();
//! #       }
//! #   });
//!     // The dispatcher: "127.0.0.1:6808" for `make run`'s; here the stand-in's address.
//!     let addr: String = stand_in_addr;
//!     let worker = Worker::builder()
//!         .name("Worker1")
//!         .server(addr) // call `server` once per dispatcher
//!         .function("ToUpper", to_upper)
//!         .start()
//!         .expect("a valid worker");
//!     // The worker serves from now on, on the actix runtime, until it is stopped. A program
//!     // waits for Ctrl-C here (`actix_rt::signal::ctrl_c().await`); this example waits until
//!     // the stand-in dispatcher has had its job answered.
//!     assert_eq!(&answer.await.unwrap()[..], b"NMID");
//!     worker.stop().await; // graceful: no job in flight is lost
//! #   dispatcher.await.unwrap();
//! }
//! ```
//!
//! # Features
//!
//! The default build is light (actix, tokio, serde; no `protoc`, no TLS stack):
//!
//! - `discovery`: `WorkerBuilder::discover` serves every dispatcher registered in etcd and
//!   follows them as they come and go; `etcd_register` keeps nmid's `nmid/<name>` key.
//! - `tls`: `WorkerBuilder::tls`, TLS to the dispatchers (rustls with ring).
//! - `otlp`: a span per job, child of the caller's, and the OTLP exporter
//!   (`trace::tracer_provider`).
//! - `metrics`: `WorkerBuilder::metrics` and `serve_metrics`, the worker's own
//!   Prometheus metrics.
#![deny(missing_docs)]

#[cfg(feature = "discovery")]
mod discover;
mod dispatcher_link;
mod in_flight;
mod job;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(not(feature = "metrics"))]
mod no_metrics;
mod presence;
mod reply;

use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;

pub use dispatcher_link::PartialError;
pub use job::{Job, JobError};
#[cfg(feature = "metrics")]
pub use metrics::{serve_metrics, serve_metrics_with, WorkerMetrics};
pub use nmid_client;
#[cfg(feature = "tls")]
pub use nmid_client::ClientTls;
#[cfg(feature = "discovery")]
pub use nmid_client::Discovery;
pub use nmid_client::{Access, InternalDial, Metadata, ParamsType, Protocol, RetStruct};
pub use nmid_proto::trace;
pub use presence::{LinkLog, Readiness};

#[cfg(feature = "discovery")]
use discover::{Follower, StopAll};
use dispatcher_link::{
    AddFunction, DispatcherLink, LinkSettings, RemoveFunction, SetSlots, Shutdown,
};
#[cfg(feature = "metrics")]
use metrics::WorkerMetrics as Meter;
use nmid_proto::codec::DEFAULT_MAX_FRAME_BYTES;
#[cfg(not(feature = "metrics"))]
use no_metrics::Meter;

/// TTL of the lease a worker registers `nmid/<name>` under (`etcd_register`).
#[cfg(feature = "discovery")]
pub const DEFAULT_REGISTER_TTL: Duration = Duration::from_secs(10);

/// Jobs a worker runs at once unless told otherwise.
pub const DEFAULT_SLOTS: u32 = 16;
/// How long a graceful stop waits for jobs in flight unless told otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`WorkerBuilder::max_partial_bytes_queued`]: 1 MiB per dispatcher connection.
pub const DEFAULT_MAX_PARTIAL_BYTES_QUEUED: usize = 1 << 20;

/// What a handler returns: bytes for the caller, usually a RetStruct.
pub type HandlerResult = Result<Bytes, JobError>;

type BoxedHandler = Rc<dyn Fn(Job) -> LocalBoxFuture<'static, HandlerResult>>;
/// A handler added to a running worker: shared by its links through their mailboxes.
type SharedHandler =
    std::sync::Arc<dyn Fn(Job) -> LocalBoxFuture<'static, HandlerResult> + Send + Sync>;

/// How long a removed function's handler still serves jobs the dispatcher sent before it
/// read `W_DEL_FUNC` (the frame has no acknowledgement).
const REMOVED_FUNCTION_GRACE: Duration = Duration::from_secs(2);

/// Why a worker could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// Neither `server(..)` nor `discover(..)` was called.
    #[error("a worker needs at least one dispatcher address (server) or etcd (discover)")]
    NoServer,
    /// `function(..)` was never called.
    #[error("a worker needs at least one function")]
    NoFunction,
    /// A function name is empty or registered twice.
    #[error("function name {0:?} is empty or registered twice")]
    BadFunction(String),
    /// The TLS settings cannot be used (a file unreadable, a name invalid).
    #[error("TLS: {0}")]
    Tls(String),
}

/// The functions one link serves: its own copy, so that functions added or removed
/// while it runs are registered on its connection as they change.
#[derive(Clone)]
pub(crate) struct Functions {
    handlers: Vec<(String, BoxedHandler)>,
    /// Removed functions, still serving jobs that arrive until their deadline.
    retiring: Vec<(String, BoxedHandler, std::time::Instant)>,
}

impl Functions {
    fn handler(&self, name: &[u8]) -> Option<&BoxedHandler> {
        let retiring = self.retiring.iter().map(|(n, h, _)| (n, h));
        (self.handlers.iter().map(|(n, h)| (n, h)))
            .chain(retiring)
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, h)| h)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.iter().map(|(n, _)| n.as_str())
    }

    /// Serves `name` with `handler`; true when the name is new (to register).
    fn insert(&mut self, name: String, handler: BoxedHandler) -> bool {
        self.retiring.retain(|(n, _, _)| *n != name);
        match self.handlers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => {
                *old = handler;
                false
            }
            None => {
                self.handlers.push((name, handler));
                true
            }
        }
    }

    /// Stops serving `name` (its handler retires for the grace); true when it was served.
    fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.handlers.iter().position(|(n, _)| n == name) else {
            return false;
        };
        let (name, handler) = self.handlers.remove(i);
        let until = std::time::Instant::now() + REMOVED_FUNCTION_GRACE;
        self.retiring.push((name, handler, until));
        true
    }

    /// Forgets retired handlers whose grace is over.
    fn prune(&mut self) {
        let now = std::time::Instant::now();
        self.retiring.retain(|(_, _, until)| *until > now);
    }
}

/// Entry point of the worker library; see [`Worker::builder`].
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// A builder with no name, server or function yet.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            name: String::from("nmid-rust-worker"),
            servers: Vec::new(),
            handlers: Vec::new(),
            slots: DEFAULT_SLOTS,
            protocol: Protocol::Tagged,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_partial_bytes_queued: DEFAULT_MAX_PARTIAL_BYTES_QUEUED,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            #[cfg(feature = "discovery")]
            discovery: None,
            #[cfg(feature = "discovery")]
            register_ttl: None,
            metrics: None,
            access: Access {
                token: Access::token_from_env(),
                ..Access::default()
            },
            #[cfg(feature = "tls")]
            tls: None,
            link_log: LinkLog::new(),
        }
    }
}

/// Configures and starts a worker.
pub struct WorkerBuilder {
    name: String,
    servers: Vec<String>,
    handlers: Vec<(String, BoxedHandler)>,
    slots: u32,
    protocol: Protocol,
    max_frame_bytes: usize,
    max_partial_bytes_queued: usize,
    stop_timeout: Duration,
    #[cfg(feature = "discovery")]
    discovery: Option<Discovery>,
    #[cfg(feature = "discovery")]
    register_ttl: Option<Duration>,
    metrics: Option<Meter>,
    access: Access,
    #[cfg(feature = "tls")]
    tls: Option<ClientTls>,
    link_log: LinkLog,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .field(
                "functions",
                &self.handlers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("slots", &self.slots)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl WorkerBuilder {
    /// Presents the token `secret` to each dispatcher (`[auth]`; it needs the `worker` role
    /// and a grant covering the functions). Without this, the secret in `NMID_TOKEN` if set.
    pub fn token(mut self, secret: impl Into<Bytes>) -> Self {
        self.access.token = Some(secret.into());
        self
    }

    /// Connects with TLS (see [`ClientTls`]): trusting its CA file (else the system's
    /// trust store), with a client certificate for mutual TLS when set. (Feature `tls`.)
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects the way `access` says: a TLS connector built once and shared, the token, a
    /// dialer of one's own (the dispatcher's embedded demo worker connects through one).
    /// Nested calls ([`Job::call`]) connect the same way. A later [`WorkerBuilder::token`]
    /// or `tls(..)` still applies on top.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The worker's name (`W_SET_NAME`), shown in the dispatcher's admin API and logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a dispatcher to serve (`HOST:PORT`); call it once per dispatcher.
    pub fn server(mut self, addr: impl Into<String>) -> Self {
        self.servers.push(addr.into());
        self
    }

    /// Serves every dispatcher registered in etcd at `endpoints` (`http://host:2379`), and
    /// follows them: a dispatcher that joins the cluster gets this worker registered within
    /// a second or so, one that leaves (or drains) is dropped. May be combined with
    /// `server(..)`, whose dispatchers are not connected twice. (Feature `discovery`.)
    #[cfg(feature = "discovery")]
    pub fn discover<E: Into<String>>(self, endpoints: impl IntoIterator<Item = E>) -> Self {
        self.discovery(Discovery::new(endpoints))
    }

    /// Like [`WorkerBuilder::discover`], with etcd credentials, timeouts or a membership
    /// prefix other than the defaults (`Discovery`'s fields).
    #[cfg(feature = "discovery")]
    pub fn discovery(mut self, discovery: Discovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// With `discover(..)`: also keep `nmid/<worker name>` in etcd, mapping each function
    /// to the dispatchers served, as nmid's Go worker's `Register` does — but under a lease
    /// of `ttl`, so the key vanishes with the worker.
    #[cfg(feature = "discovery")]
    pub fn etcd_register(mut self, ttl: Duration) -> Self {
        self.register_ttl = Some(ttl.max(Duration::from_secs(1)));
        self
    }

    /// Serves `name` with `handler`, an async function of a [`Job`] returning the result
    /// bytes (anything `Into<Bytes>`, such as a [`RetStruct`] or a `Vec<u8>`) or an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use nmid_worker::{Job, JobError, Worker};
    ///
    /// // A closure works as well as an `async fn`; `?` turns any error into a JobError,
    /// // which the caller receives as a worker error with its message.
    /// let builder = Worker::builder()
    ///     .server("127.0.0.1:6808")
    ///     .function("Echo", |job: Job| async move { Ok::<_, JobError>(job.params().clone()) })
    ///     .function("Fail", |_job: Job| async { Err::<Vec<u8>, _>(JobError::new("nope")) });
    /// ```
    pub fn function<F, Fut, R>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Job) -> Fut + 'static,
        Fut: Future<Output = Result<R, JobError>> + 'static,
        R: Into<Bytes>,
    {
        let handler: BoxedHandler = Rc::new(move |job| {
            let fut = handler(job);
            Box::pin(async move { fut.await.map(Into::into) })
        });
        self.handlers.push((name.into(), handler));
        self
    }

    /// Jobs run at once on each dispatcher connection (default 16). Tagged dispatchers are
    /// told (`W_SLOTS`) and never send more; from a v1 dispatcher extra jobs wait here.
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// The protocol to speak: tagged (default) or v1 for nmid's Go dispatcher.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The largest frame body accepted from the dispatcher and sent to it (default 16 MiB,
    /// the dispatcher's default `tcp.max_frame_bytes`; set both alike). A handler's answer over it is not sent: its caller gets a worker error
    /// "result too large" instead, and the connection and the other jobs on it are unharmed.
    pub fn max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }

    /// Bytes of partial results ([`Job::send_partial`]) a dispatcher connection holds while
    /// it cannot write them as fast as handlers send them (default 1 MiB,
    /// [`DEFAULT_MAX_PARTIAL_BYTES_QUEUED`]). Over it [`Job::send_partial`] refuses with
    /// [`PartialError::Backlog`] and [`Job::send_partial_paced`] waits: a stalled stream
    /// never grows the worker's memory past it.
    pub fn max_partial_bytes_queued(mut self, max: usize) -> Self {
        self.max_partial_bytes_queued = max;
        self
    }

    /// How long [`WorkerHandle::stop`] waits for jobs in flight (default 30 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Counts this worker's jobs (per function: outcome, duration, in flight) and its
    /// connections in `metrics`; serve them with [`serve_metrics`]. Off unless set.
    /// (Feature `metrics`.)
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: WorkerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Logs this worker's connection changes in `log`, together with the other workers
    /// given the same one: one line per change of a dispatcher's state, not one per worker
    /// (nmid-faas, a worker per function, shares one). Default: a log of its own.
    pub fn link_log(mut self, log: LinkLog) -> Self {
        self.link_log = log;
        self
    }

    /// Starts one link per dispatcher on the current actix arbiter. Must be called inside
    /// a running actix `System` (e.g. `#[actix_rt::main]`). Connection failures are not
    /// errors: each link keeps reconnecting with backoff.
    pub fn start(self) -> Result<WorkerHandle, WorkerError> {
        #[cfg(feature = "discovery")]
        let discovering = self.discovery.is_some();
        #[cfg(not(feature = "discovery"))]
        let discovering = false;
        if self.servers.is_empty() && !discovering {
            return Err(WorkerError::NoServer);
        }
        if self.handlers.is_empty() {
            return Err(WorkerError::NoFunction);
        }
        for (i, (name, _)) in self.handlers.iter().enumerate() {
            if name.is_empty() || self.handlers[..i].iter().any(|(n, _)| n == name) {
                return Err(WorkerError::BadFunction(name.clone()));
            }
        }
        let functions = Functions {
            handlers: self.handlers,
            retiring: Vec::new(),
        };
        if let Some(metrics) = &self.metrics {
            functions.names().for_each(|name| metrics.serve(name));
        }
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut access = self.access;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            access.tls = Some(tls.connector().map_err(WorkerError::Tls)?);
        }
        let registered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let settings = LinkSettings {
            access,
            name: self.name,
            slots: self.slots,
            protocol: self.protocol,
            max_frame_bytes: self.max_frame_bytes,
            max_partial_bytes_queued: self.max_partial_bytes_queued,
            stop_timeout: self.stop_timeout,
            functions,
            metrics: self.metrics,
            registered: registered.clone(),
            log: self.link_log,
        };
        let links = (self.servers.iter())
            .map(|addr| DispatcherLink::new(addr.clone(), settings.clone()).start())
            .collect();
        #[cfg(feature = "discovery")]
        let follower = self.discovery.map(|discovery| {
            Follower::new(discovery, self.register_ttl, settings, self.servers).start()
        });
        Ok(WorkerHandle {
            links,
            #[cfg(feature = "discovery")]
            follower,
            registered,
        })
    }
}

/// A running worker.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    links: Vec<Addr<DispatcherLink>>,
    /// The links of discovered dispatchers, with `discover(..)`.
    #[cfg(feature = "discovery")]
    follower: Option<Addr<Follower>>,
    /// Links connected with their functions registered.
    registered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WorkerHandle {
    /// How many dispatchers this worker is connected to with its functions registered (the
    /// dispatcher acknowledged each), now: 0 means no call can reach it. What a readiness
    /// probe asks (nmid-faas's `/readyz`).
    pub fn registered(&self) -> usize {
        self.registered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This worker's readiness, for `serve_metrics_with`'s `/readyz` (feature `metrics`):
    /// ready while registered with at least one dispatcher.
    pub fn readiness(&self) -> Readiness {
        let registered = self.registered.clone();
        std::sync::Arc::new(
            move || match registered.load(std::sync::atomic::Ordering::Relaxed) {
                0 => Err("not registered with any dispatcher".to_owned()),
                _ => Ok(()),
            },
        )
    }

    /// Serves `name` with `handler` from now on, on every dispatcher (`W_ADD_FUNC`; also
    /// after a reconnect). A function of that name already served gets the new handler:
    /// new jobs run it, jobs running finish with the old one. Unlike
    /// [`WorkerBuilder::function`], the handler must be `Send + Sync` (it reaches each
    /// link through its mailbox); its future need not be.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(worker: nmid_worker::WorkerHandle) {
    /// use nmid_worker::{Job, JobError};
    ///
    /// worker
    ///     .add_function("Echo", |job: Job| async move { Ok::<_, JobError>(job.params().clone()) })
    ///     .expect("a valid name");
    /// worker.remove_function("Echo");
    /// # }
    /// ```
    pub fn add_function<F, Fut, R>(
        &self,
        name: impl Into<String>,
        handler: F,
    ) -> Result<(), WorkerError>
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, JobError>> + 'static,
        R: Into<Bytes>,
    {
        let name = name.into();
        if name.is_empty() {
            return Err(WorkerError::BadFunction(name));
        }
        let handler: SharedHandler = std::sync::Arc::new(move |job| {
            let fut = handler(job);
            Box::pin(async move { fut.await.map(Into::into) })
        });
        for link in &self.links {
            link.do_send(AddFunction {
                name: name.clone(),
                handler: handler.clone(),
            });
        }
        #[cfg(feature = "discovery")]
        if let Some(follower) = &self.follower {
            follower.do_send(AddFunction { name, handler });
        }
        Ok(())
    }

    /// Stops serving `name` on every dispatcher (`W_DEL_FUNC`); its jobs running finish and
    /// are answered, and jobs the dispatcher sent before it read the removal are still
    /// served. Removing a function not served does nothing.
    pub fn remove_function(&self, name: &str) {
        for link in &self.links {
            link.do_send(RemoveFunction {
                name: name.to_owned(),
            });
        }
        #[cfg(feature = "discovery")]
        if let Some(follower) = &self.follower {
            follower.do_send(RemoveFunction {
                name: name.to_owned(),
            });
        }
    }

    /// Runs at most `slots` jobs at once on each dispatcher from now on, without a
    /// reconnect: tagged dispatchers are told (`W_SLOTS`) and place accordingly; jobs already
    /// running beyond a lowered count finish. (nmid-faas applies a changed `concurrency`
    /// this way.) A dispatcher takes 0 as 1: to stop taking jobs, remove the functions
    /// ([`WorkerHandle::remove_function`]) or stop the worker.
    pub fn set_slots(&self, slots: u32) {
        for link in &self.links {
            link.do_send(SetSlots { slots });
        }
        #[cfg(feature = "discovery")]
        if let Some(follower) = &self.follower {
            follower.do_send(SetSlots { slots });
        }
    }

    /// Stops gracefully on every dispatcher: unregister the functions (`W_DEL_FUNC`), make
    /// sure no further job is on its way (tagged: `W_BYE` until `S_BYE_ACK`), finish the
    /// jobs in flight (bounded by the stop timeout), then close. Returns when all are closed.
    pub async fn stop(self) {
        #[cfg(feature = "discovery")]
        let discovered = self.follower.as_ref().map(|f| f.send(StopAll));
        let waits: Vec<_> = self.links.iter().map(|s| s.send(Shutdown)).collect();
        #[cfg(feature = "discovery")]
        if let Some(Ok(done)) = match discovered {
            Some(wait) => Some(wait.await),
            None => None,
        } {
            let _ = done.await;
        }
        for wait in waits {
            if let Ok(done) = wait.await {
                let _ = done.await;
            }
        }
    }
}
