//! Start-up and shutdown: [`run`], the one way to start a dispatcher (the binary and the
//! tests' helper both call it), and the drain. `admit` takes each connection from the
//! accept loop to its session.
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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::accept::{AcceptGate, GateLimits};
use crate::actors::background::{Background, FlushJobs, StopStarting};
use crate::actors::front_door::FrontDoor;
use crate::actors::job::JobServices;
use crate::actors::registry::{AbandonAll, Drain, Registry, Snapshot};
use crate::actors::JobsPort;
use crate::actors::SessionSettings;
use crate::cluster::{Cluster, ClusterReport, ClusterSettings, ClusterView};
use crate::config::{Config, ConfigError};
use crate::http::{BodyLimits, HttpSite, HttpState, Serving};
use crate::jobs::callback::Callbacks;
use crate::jobs::remote::Owners;
use crate::logging::RefusalLog;
use crate::metrics::{Limit, Metrics};
use crate::rate_limit::RateLimits;
use crate::security::Security;
use crate::snapshot::RegistrySnapshot;

mod admit;

use admit::{accept_loop, InternalDoor};

/// How often the drain checks whether the jobs in flight are done.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long, past the drain timeout, the calls left have to be answered `ShuttingDown`.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address could not be bound; `key` is the config key that set it.
    #[error("cannot listen on {addr} ({key}): {cause}")]
    Bind {
        /// The config key, e.g. `tcp.addr`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason (in the message; not a source, so that an error
        /// chain prints it once).
        cause: io::Error,
    },
    /// A listener could not be set up or served.
    #[error("i/o: {0}")]
    Io(io::Error),
    /// The configuration does not fit the listeners (e.g. discovery on a wildcard address
    /// without `cluster.advertise_addr`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The background jobs' store could not be opened (`jobs.data_dir`).
    #[error(transparent)]
    JobStore(#[from] crate::jobs::StoreError),
}

impl From<io::Error> for ServerError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
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
        let backlog = config.server.listen_backlog;
        let bind = |key, addr| {
            listen(addr, backlog).map_err(|cause| ServerError::Bind { key, addr, cause })
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

/// A listening socket on `addr` whose queue of connections not yet accepted holds `backlog`
/// (std's `bind` holds 128: a burst of clients connecting at once, say after a restart,
/// overflowed it and waited out a second's SYN retransmit).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// A running dispatcher as [`run`]'s caller sees it: its addresses and its state.
#[derive(Debug, Clone)]
pub struct Handle {
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    tcp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    cluster: Option<ClusterView>,
    security: Security,
    door: Arc<InternalDoor>,
}

impl Handle {
    /// Connections into this dispatcher, from this process, that skip the address lists,
    /// TLS and auth: how the embedded demo worker (`--demo`) connects whatever `[auth]` and
    /// `[tls]` say. Each is a real loopback TCP connection with a session like any other.
    pub fn internal_dial(&self) -> crate::net::InternalDial {
        let door = self.door.clone();
        Arc::new(move || {
            let door = door.clone();
            Box::pin(async move { door.open().await })
        })
    }

    /// Applies the `[security]`, `[auth]` and `[tls]` of `config` (the file read again, on
    /// SIGHUP): new connections and requests see them at once, open connections within a
    /// second (those no longer admitted are closed). On an error nothing changes.
    pub fn reload_security(&self, config: &Config) -> Result<(), ConfigError> {
        self.security.reload(config)
    }

    /// The cluster as `GET /api/v1/cluster` reports it (`enabled: false` without discovery).
    pub async fn cluster(&self) -> ClusterReport {
        match &self.cluster {
            Some(view) => view.report(&self.snapshot().await),
            None => ClusterView::disabled(),
        }
    }

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
/// let stopped = run(config, listeners, |handle| async move {
///     println!("serving on {}", handle.tcp_addr());
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await?;
/// println!("{} calls abandoned at the drain timeout", stopped.abandoned_calls);
/// # Ok(())
/// # }
/// ```
pub async fn run<F, S>(
    config: Config,
    listeners: Listeners,
    shutdown: F,
) -> Result<Stopped, ServerError>
where
    F: FnOnce(Handle) -> S,
    S: Future<Output = ()>,
{
    let dispatcher = Dispatcher::start(&config, listeners)?;
    shutdown(dispatcher.handle.clone()).await;
    info!("shutting down: no new nmid connections or calls, draining jobs in flight");
    Ok(dispatcher.shutdown().await)
}

/// Starts the registry on `arbiter`, the first connection thread: a message between actors
/// on one thread is a queue push, between threads it is a wake-up (eventfd, often a context
/// switch), and every call sends the registry two.
fn start_registry(
    config: &Config,
    arbiter: &ArbiterHandle,
    metrics: &Arc<Metrics>,
) -> Addr<Registry> {
    let max_queue = config.workers.max_queue_per_function;
    let batch_slack = config.workers.batch_slack;
    let (max_forwarded, peer_retry) = (
        (
            config.cluster.max_forwarded_per_peer,
            config.cluster.max_forwarded_per_caller,
        ),
        Duration::from_millis(config.cluster.peer_retry_ms),
    );
    let breakers = config.breaker_settings();
    let metrics = metrics.clone();
    Registry::start_in_arbiter(arbiter, move |_| {
        Registry::new(max_queue)
            .cluster_limits(max_forwarded, peer_retry)
            .breakers(breakers, metrics)
            .batch_slack(batch_slack)
    })
}

/// What every job gets (`[jobs]`, `[rate_limit]`, `[breaker]`), and the task that tidies the
/// per-client rate-limit buckets when there is a per-client limit.
fn job_services(
    config: &Config,
    registry: Addr<Registry>,
    metrics: &Arc<Metrics>,
) -> (JobServices, Vec<JoinHandle<()>>) {
    let settings = config.rate_limit_settings();
    let rate_limits = RateLimits::new(&settings);
    let tidy = (rate_limits.as_ref())
        .filter(|_| settings.per_client.is_some())
        .map(|limits| {
            let metrics = metrics.clone();
            tokio::spawn(crate::rate_limit::tidy_every(
                limits.clone(),
                settings.cleanup_interval,
                move |clients| metrics.set_rate_limit_clients(clients),
            ))
        });
    let jobs = JobServices {
        registry,
        retries: config.jobs.retries,
        max_reroutes: config.cluster.max_reroutes,
        metrics: metrics.clone(),
        rate_limits,
        breakers: config.breaker_settings().is_some(),
        max_partial_bytes_buffered: config.jobs.max_partial_bytes_buffered,
    };
    (jobs, tidy.into_iter().collect())
}

/// Serves the HTTP front end on every connection thread (beside the registry and the worker
/// sessions) and the metrics port, if it has one, on the first; their addresses.
fn serve_http(
    http: Option<std::net::TcpListener>,
    metrics: Option<std::net::TcpListener>,
    arbiters: &[Arbiter],
    site: HttpSite,
) -> io::Result<(Vec<Serving>, Option<SocketAddr>, Option<SocketAddr>)> {
    let threads: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
    let mut serving = Vec::new();
    let mut serve = |listener: std::net::TcpListener, on: &[ArbiterHandle], routes, what| {
        let addr = listener.local_addr()?;
        let site = HttpSite {
            routes,
            ..site.clone()
        };
        serving.push(Serving::start(listener, on, site)?);
        info!(%addr, "{what} listening");
        Ok::<_, io::Error>(addr)
    };
    let http_addr =
        (http.map(|l| serve(l, &threads, crate::http::configure, "http"))).transpose()?;
    let metrics_addr = (metrics)
        .map(|l| serve(l, &threads[..1], crate::http::configure_metrics, "metrics"))
        .transpose()?;
    Ok((serving, http_addr, metrics_addr))
}

/// How a dispatcher stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stopped {
    /// Calls still in flight or queued when `server.drain_timeout_ms` ran out: their callers
    /// were answered `ERROR` (tagged: `shutting_down`; HTTP: 503) instead of a result. The
    /// `nmid` binary then exits with status 3.
    pub abandoned_calls: u64,
}

/// What [`run`] started, to be shut down in order.
struct Dispatcher {
    handle: Handle,
    accept: JoinHandle<()>,
    /// Tasks that run as long as the dispatcher: the dashboard's history sampler, the
    /// refusal log's summaries, and (with a per-client limit) the rate-limit tidier.
    background: Vec<JoinHandle<()>>,
    /// HTTP listeners: the front end, and the metrics port when it has one of its own.
    http: Vec<Serving>,
    arbiters: Vec<Arbiter>,
    drain_timeout: Duration,
    /// The etcd membership, when discovery is on.
    cluster: Option<Cluster>,
    /// The background jobs.
    background_jobs: Addr<Background>,
}

impl Dispatcher {
    /// Starts everything `config` asks for on `listeners`: the connection threads and the
    /// registry, then the nmid protocol's accept loop, the cluster and the HTTP listeners.
    fn start(config: &Config, listeners: Listeners) -> Result<Self, ServerError> {
        let security = Security::from_config(config)?;
        let metrics = Arc::new(Metrics::with_series_limits(
            config.metrics.max_function_series,
            config.metrics.max_worker_series,
        ));
        metrics.set_queue_limit(config.workers.max_queue_per_function);
        let arbiters: Vec<Arbiter> = (0..config.io_threads()).map(|_| Arbiter::new()).collect();
        let registry = start_registry(config, &arbiters[0].handle(), &metrics);
        let (jobs, mut background) = job_services(config, registry.clone(), &metrics);
        let refusals = Arc::new(RefusalLog::new(Duration::from_millis(
            config.log.refusal_summary_interval_ms,
        )));
        background.push(tokio::spawn(refusals.clone().flush_every_window()));
        let callbacks = Callbacks::from_config(&config.jobs)
            .map_err(|e| ConfigError::Invalid {
                key: "jobs.callback_allow",
                reason: e.to_string(),
            })?
            .with_metrics(metrics.clone());
        let opened = Background::open(
            &config.jobs,
            jobs.clone(),
            callbacks.clone(),
            &arbiters[0].handle(),
        )?;
        let (background_jobs, node, gauges) = (opened.addr, opened.node, opened.gauges);
        metrics.watch_jobs(gauges.clone());
        let door = FrontDoor::new(jobs, config.tcp.max_frame_bytes, security.clone());
        let jobs_port = JobsPort {
            background: background_jobs.clone(),
            config: Arc::new(config.jobs.clone()),
            node: node.clone(),
            callbacks: callbacks.clone(),
            owners: Arc::default(),
        };
        let settings = Arc::new(SessionSettings::new(
            config,
            door.clone(),
            refusals.clone(),
            Some(jobs_port.clone()),
        ));
        let gate = |listener, max_connections, max_per_ip| {
            let limits = GateLimits {
                listener,
                max_connections,
                max_per_ip,
            };
            let gate = AcceptGate::new(limits, security.clone(), metrics.clone(), refusals.clone());
            Arc::new(gate)
        };
        let tcp_gate = gate(
            "nmid protocol",
            Some(config.tcp.max_connections),
            (config.tcp.max_connections_per_ip, Limit::ConnectionsPerIp),
        );
        let http_gate = gate(
            "http",
            None,
            (
                config.http.max_connections_per_ip,
                Limit::HttpConnectionsPerIp,
            ),
        );
        listeners.tcp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(listeners.tcp)?;
        let tcp_addr = tcp.local_addr()?;
        let http_listen = (listeners.http.as_ref())
            .map(|l| l.local_addr())
            .transpose()?;
        let mut peer_secret = None;
        let cluster =
            ClusterSettings::resolve(config, tcp_addr, http_listen)?.map(|mut settings| {
                settings.jobs_node = Some(node.clone());
                peer_secret = settings.peer_access.token.clone();
                let links = arbiters[0].handle();
                Cluster::start(settings, registry.clone(), links, &metrics)
            });
        let cluster_view = cluster.as_ref().map(Cluster::view);
        if let Some(view) = &cluster_view {
            let owners = Owners::new(
                view.clone(),
                peer_secret,
                Duration::from_millis(config.jobs.timeout_ms),
            )
            .map_err(|e| io::Error::other(e.to_string()))?;
            let _ = jobs_port.owners.set(owners);
        }
        let door_in = Arc::new(InternalDoor {
            arbiter: arbiters[0].handle(),
            settings: settings.clone(),
            gate: tcp_gate.clone(),
        });
        let io = arbiters.iter().map(Arbiter::handle).collect();
        let accept = tokio::spawn(accept_loop(tcp, io, settings, tcp_gate));
        info!(addr = %tcp_addr, "nmid protocol listening");
        let history = Arc::new(std::sync::Mutex::new(crate::history::History::new(
            config.history_settings(),
        )));
        background.push(tokio::spawn(crate::history::sample_every(
            history.clone(),
            metrics.clone(),
        )));
        let state = HttpState {
            door,
            job_timeout: config.job_timeout(),
            bodies: Arc::new(BodyLimits::new(
                config.http.max_body_bytes,
                Duration::from_millis(config.http.body_timeout_ms),
                config.http.max_receiving_body_bytes,
                config.http.max_receiving_body_bytes_per_client,
            )),
            started: SystemTime::now(),
            cluster: cluster_view.clone(),
            history,
            forward_headers: (config.http.forward_headers.iter())
                .filter_map(|name| name.parse().ok())
                .collect(),
            ready_functions: config.http.ready_functions.clone(),
            jobs: Some(crate::http::JobsFront {
                background: jobs_port.background.clone(),
                config: jobs_port.config.clone(),
                node: jobs_port.node.clone(),
                callbacks,
                cluster: cluster_view.clone(),
                gauges,
                peers: reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| io::Error::other(e.to_string()))?,
            }),
        };
        let site = HttpSite {
            state,
            routes: crate::http::configure,
            tls: security.tls().map(|tls| tls.server_config()),
            max_connections: config.http.max_connections,
            gate: http_gate,
            keep_alive: Duration::from_millis(config.http.keep_alive_ms),
            client_request_timeout: Duration::from_millis(config.http.client_request_timeout_ms),
            http2: config.http.http2,
        };
        let (http, http_addr, metrics_addr) =
            serve_http(listeners.http, listeners.metrics, &arbiters, site)?;
        Ok(Self {
            handle: Handle {
                registry,
                metrics,
                tcp_addr,
                http_addr,
                metrics_addr,
                cluster: cluster_view,
                security,
                door: door_in,
            },
            accept,
            background,
            http,
            arbiters,
            drain_timeout: config.drain_timeout(),
            cluster,
            background_jobs,
        })
    }

    /// Shuts down in order: stop accepting nmid connections -> stop taking new calls (in a
    /// cluster: the membership record says `draining`, so peers and clients send no more)
    /// -> drain the jobs in flight, queued and forwarded (bounded by
    /// `server.drain_timeout_ms`) -> make the background jobs durable -> stop HTTP -> leave the cluster (revoke the etcd lease)
    /// -> stop the connection threads. (The binary then flushes telemetry.)
    async fn shutdown(self) -> Stopped {
        self.accept.abort();
        self.background_jobs.do_send(StopStarting);
        self.handle.registry.do_send(Drain);
        if let Some(cluster) = &self.cluster {
            cluster.begin_drain();
        }
        // HTTP keeps answering while the jobs drain, so that `/readyz` says 503 and a new
        // call gets 503 `shutting_down` (actix-web's graceful stop would close even its idle
        // keep-alive connections at once, leaving probes nothing but a refused connection).
        // Each step runs and is logged once: drained, or the drain timed out and the calls
        // left are answered ShuttingDown (never "drained" after that).
        let started = Instant::now();
        let abandoned_calls = match self.wait_for_jobs(self.drain_timeout).await {
            0 => {
                info!(waited_ms = started.elapsed().as_millis() as u64, "drained");
                0
            }
            left => {
                // Every caller still waiting is answered ShuttingDown before its connection
                // closes, rather than left to find the connection gone.
                warn!(
                    jobs_left = left,
                    "drain timeout: answering the calls left ShuttingDown"
                );
                self.handle.registry.do_send(AbandonAll);
                match self.wait_for_jobs(ABANDON_GRACE).await {
                    0 => info!(jobs = left, "the calls left were answered ShuttingDown"),
                    unanswered => {
                        warn!(
                            unanswered,
                            "calls still unanswered at exit: their connections close"
                        )
                    }
                }
                left
            }
        };
        // Attempts cut short by the drain are queued again for the next start: written,
        // then made durable.
        match self.background_jobs.send(FlushJobs).await {
            Ok(Ok(())) => {}
            Ok(Err(cause)) => warn!(%cause, "background jobs: last flush failed"),
            Err(_) => warn!("background jobs: gone before their last flush"),
        }
        for server in &self.http {
            server.stop();
        }
        for task in &self.background {
            task.abort();
        }
        if let Some(cluster) = self.cluster {
            cluster.leave().await;
        }
        // The sessions write their last answers at the end of a round.
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        Stopped { abandoned_calls }
    }

    /// Waits at most `limit` for the jobs in flight, queued and forwarded to finish; returns
    /// how many are left.
    async fn wait_for_jobs(&self, limit: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let snapshot = self.handle.snapshot().await;
            let left = snapshot.in_flight() + snapshot.queued() as u64 + snapshot.forwarded();
            if left == 0 {
                return 0;
            }
            if started.elapsed() >= limit {
                return left;
            }
            tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
        }
    }
}
