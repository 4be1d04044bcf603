//! Start-up and shutdown: [`run`], the one way to start a dispatcher (the binary and the
//! tests' helper both call it), the accept loop, and the drain.
//!
//! [`run`] takes already-bound [`Listeners`], so tests bind `127.0.0.1:0` and read the
//! addresses before anything starts (as mini-redis's `server::run` does). Connections are
//! spread round-robin over the io arbiters (threads, `server.io_threads`); the registry lives
//! on the first of them, so with one io thread (the default) a call never crosses threads.
//! Each connection holds a permit of the `tcp.max_connections` semaphore for its whole life:
//! first while its first frame is read, then in its session actor.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use crate::actors::client_session::ClientSession;
use crate::actors::job::JobServices;
use crate::actors::registry::{Drain, Registry, Snapshot};
use crate::actors::worker_session::WorkerSession;
use crate::actors::{Accepted, SessionSettings};
use crate::call::RegistrySnapshot;
use crate::codec::{ConnType, NmidCodec};
use crate::config::Config;
use crate::http::HttpState;
use crate::metrics::{Metrics, Role};

/// How often the drain checks whether the jobs in flight are done.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The read buffer a connection starts with: room for dozens of small frames per read
/// syscall; the codec grows it for a larger frame. (tokio-util's default is 8 KiB, most of
/// an idle connection's memory.)
const READ_BUFFER_BYTES: usize = 4096;

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address could not be bound; `key` is the config key that set it.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The config key, e.g. `tcp.addr`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A listener could not be set up or served.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The bound sockets a dispatcher serves: the nmid protocol, and optionally HTTP and a port
/// of its own for `GET /metrics`.
#[derive(Debug)]
pub struct Listeners {
    /// The nmid protocol (`tcp.addr`).
    pub tcp: std::net::TcpListener,
    /// The HTTP front end (`http.addr`), if served.
    pub http: Option<std::net::TcpListener>,
    /// Prometheus metrics only (`metrics.addr`), if set.
    pub metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` names: `tcp.addr`, `http.addr` when `http.enabled`, and
    /// `metrics.addr` when set.
    pub fn bind(config: &Config) -> Result<Self, ServerError> {
        let bind = |key, addr| {
            std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind {
                key,
                addr,
                source,
            })
        };
        let metrics = config
            .metrics
            .addr()
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self {
            tcp: bind("tcp.addr", config.tcp.addr)?,
            http: match config.http.enabled {
                true => Some(bind("http.addr", config.http.addr)?),
                false => None,
            },
            metrics: metrics.map(|addr| bind("metrics.addr", addr)).transpose()?,
        })
    }
}

/// A running dispatcher as [`run`]'s caller sees it: its addresses and its state.
#[derive(Debug, Clone)]
pub struct Handle {
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    tcp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl Handle {
    /// The address of the nmid protocol listener.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The address of the HTTP front end, if served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the metrics port, if it has one of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The dispatcher's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The registry's state now (empty once the dispatcher has stopped).
    pub async fn snapshot(&self) -> RegistrySnapshot {
        self.registry.send(Snapshot).await.unwrap_or_default()
    }
}

/// Serves `listeners` with `config` until the future that `shutdown` returns completes, then
/// shuts down in order (see below). `shutdown` is called once everything listens, with a
/// [`Handle`] to the running dispatcher. Must be called inside a running actix `System`.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), nmid::server::ServerError> {
/// use nmid::config::Config;
/// use nmid::server::{run, Listeners};
///
/// let config = Config::default();
/// let listeners = Listeners::bind(&config)?;
/// run(config, listeners, |handle| async move {
///     println!("serving on {}", handle.tcp_addr());
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn run<F, S>(config: Config, listeners: Listeners, shutdown: F) -> Result<(), ServerError>
where
    F: FnOnce(Handle) -> S,
    S: Future<Output = ()>,
{
    let dispatcher = Dispatcher::start(&config, listeners)?;
    shutdown(dispatcher.handle.clone()).await;
    info!("shutting down: no new nmid connections or calls, draining jobs in flight");
    dispatcher.shutdown().await;
    Ok(())
}

/// What [`run`] started, to be shut down in order.
struct Dispatcher {
    handle: Handle,
    accept: JoinHandle<()>,
    /// Reads the call counters into the dashboard's history.
    sampler: JoinHandle<()>,
    /// HTTP servers: the front end, and the metrics port when it has one of its own.
    http: Vec<actix_web::dev::ServerHandle>,
    arbiters: Vec<Arbiter>,
    drain_timeout: Duration,
}

impl Dispatcher {
    fn start(config: &Config, listeners: Listeners) -> Result<Self, ServerError> {
        let metrics = Arc::new(Metrics::new());
        metrics.set_queue_limit(config.workers.max_queue_per_function);
        let threads = config.io_threads();
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        // The registry shares the first connection thread: a message between actors on one
        // thread is a queue push, between threads it is a wake-up (eventfd, often a context
        // switch), and every call sends the registry two.
        let max_queue = config.workers.max_queue_per_function;
        let registry =
            Registry::start_in_arbiter(&arbiters[0].handle(), move |_| Registry::new(max_queue));
        let jobs = JobServices {
            registry: registry.clone(),
            retries: config.jobs.retries,
            metrics: metrics.clone(),
        };
        let settings = Arc::new(SessionSettings {
            max_frame_bytes: config.tcp.max_frame_bytes,
            job_timeout: config.job_timeout(),
            jobs: jobs.clone(),
            max_jobs_per_worker: config.workers.max_jobs_in_flight,
            heartbeat_timeout: config.heartbeat_timeout(),
            inject_trace_v1: config.tracing.inject_v1_params,
        });
        listeners.tcp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(listeners.tcp)?;
        let tcp_addr = tcp.local_addr()?;
        let connections = Arc::new(Semaphore::new(config.tcp.max_connections));
        let io = arbiters.iter().map(Arbiter::handle).collect();
        let accept = tokio::spawn(accept_loop(tcp, io, settings, connections));
        info!(addr = %tcp_addr, "nmid protocol listening");
        let history = Arc::new(std::sync::Mutex::new(crate::history::History::new(
            config.history_settings(),
        )));
        let sampler = tokio::spawn(crate::history::sample_every(
            history.clone(),
            metrics.clone(),
        ));
        let state = HttpState {
            jobs,
            job_timeout: config.job_timeout(),
            max_body_bytes: config.http.max_body_bytes,
            started: SystemTime::now(),
            history,
        };
        let drain_timeout = config.drain_timeout();
        let mut http = Vec::new();
        let mut serve = |listener: std::net::TcpListener, threads, routes, what| {
            let addr = listener.local_addr()?;
            let server = start_http(state.clone(), listener, threads, drain_timeout, routes)?;
            http.push(server);
            info!(%addr, "{what} listening");
            Ok::<_, io::Error>(addr)
        };
        let http_addr = (listeners.http)
            .map(|l| serve(l, threads, crate::http::configure, "http"))
            .transpose()?;
        let metrics_addr = (listeners.metrics)
            .map(|l| serve(l, 1, crate::http::configure_metrics, "metrics"))
            .transpose()?;
        Ok(Self {
            handle: Handle {
                registry,
                metrics,
                tcp_addr,
                http_addr,
                metrics_addr,
            },
            accept,
            sampler,
            http,
            arbiters,
            drain_timeout,
        })
    }

    /// Shuts down in order: stop accepting nmid connections -> stop taking new calls ->
    /// drain the jobs in flight and queued (bounded by `server.drain_timeout_ms`) -> stop
    /// HTTP -> stop the connection threads. (The binary then flushes telemetry.)
    async fn shutdown(self) {
        self.accept.abort();
        self.handle.registry.do_send(Drain);
        // HTTP keeps answering while the jobs drain, so that `/readyz` says 503 and a new
        // call gets 503 `shutting_down` (actix-web's graceful stop would close even its idle
        // keep-alive connections at once, leaving probes nothing but a refused connection).
        let started = Instant::now();
        loop {
            let snapshot = self.handle.snapshot().await;
            let left = snapshot.in_flight() + snapshot.queued() as u64;
            if left == 0 {
                info!(waited_ms = started.elapsed().as_millis() as u64, "drained");
                break;
            }
            if started.elapsed() >= self.drain_timeout {
                warn!(
                    jobs_left = left,
                    "drain timeout: stopping with jobs unfinished"
                );
                break;
            }
            tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
        }
        futures_util::future::join_all(self.http.iter().map(|server| server.stop(true))).await;
        self.sampler.abort();
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// Starts actix-web on `listener` with `threads` worker threads and the routes of `routes`.
fn start_http(
    state: HttpState,
    listener: std::net::TcpListener,
    threads: usize,
    drain_timeout: Duration,
    routes: fn(&mut actix_web::web::ServiceConfig),
) -> io::Result<actix_web::dev::ServerHandle> {
    let state = actix_web::web::Data::new(state);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(crate::http::count_requests))
            .configure(routes)
    })
    .workers(threads)
    .disable_signals()
    // A caller that closes its side ends the connection, which drops the handler's future
    // and so cancels its job (queued calls are withdrawn) instead of running it for nobody.
    .h1_allow_half_closed(false)
    .shutdown_timeout(drain_timeout.as_secs().max(1))
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// Accepts connections while there is a permit for them, and hands each to an io arbiter.
async fn accept_loop(
    listener: TcpListener,
    arbiters: Vec<ArbiterHandle>,
    settings: Arc<SessionSettings>,
    connections: Arc<Semaphore>,
) {
    let mut next = 0usize;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, "closing connection: connection limit (tcp.max_connections) reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Moved as a std socket: a tokio socket belongs to the runtime that registered it,
        // and each arbiter runs a runtime of its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                warn!(%peer, cause = %err, "dropping connection");
                continue;
            }
        };
        let arbiter = &arbiters[next % arbiters.len()];
        next = next.wrapping_add(1);
        let settings = settings.clone();
        let spawned = arbiter.spawn_fn(move || match TcpStream::from_std(stream) {
            Ok(stream) => {
                actix_rt::spawn(greet(stream, peer, permit, settings));
            }
            Err(err) => warn!(%peer, cause = %err, "dropping connection"),
        });
        if !spawned {
            warn!(%peer, "dropping connection: connection thread stopped");
        }
    }
}

/// Reads a connection's first frame and starts the session of the role its `conn_type`
/// names: a client or a worker.
async fn greet(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    settings: Arc<SessionSettings>,
) {
    let metrics = settings.jobs.metrics.clone();
    metrics.connection(Role::Undecided, 1);
    let (read, write) = stream.into_split();
    let codec = NmidCodec::new(settings.max_frame_bytes);
    let mut frames = FramedRead::with_capacity(read, codec, READ_BUFFER_BYTES);
    let first = frames.next().await;
    metrics.connection(Role::Undecided, -1);
    let first = match first {
        Some(Ok(frame)) => frame,
        Some(Err(err)) => {
            warn!(%peer, cause = %err, "closing connection: malformed input");
            return;
        }
        None => {
            debug!(%peer, "connection closed before its first frame");
            return;
        }
    };
    let sender = first.sender();
    let frames = stream::iter([Ok(first)]).chain(frames);
    let accepted = Accepted {
        peer,
        write,
        permit,
        settings,
    };
    match sender {
        ConnType::Client => {
            ClientSession::start(frames, accepted);
        }
        ConnType::Worker => {
            WorkerSession::start(frames, accepted);
        }
        ConnType::Server | ConnType::Service => {
            warn!(%peer, conn_type = ?sender, "closing connection: not a client or a worker");
        }
    }
}
