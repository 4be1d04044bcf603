//! Start-up and shutdown: the accept loop, the connection arbiters, and the drain.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0` and read the address before anything starts. Connections are spread
//! round-robin over the io arbiters (threads, `server.io_threads`); the registry lives on the
//! first of them, so with one io thread (the default) a call never crosses threads.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::actors::connection::{Connection, ConnectionSettings};
use crate::actors::job::JobServices;
use crate::actors::registry::{Drain, Registry, RegistrySnapshot, Snapshot};
use crate::config::Config;
use crate::http::HttpState;
use crate::metrics::Metrics;

/// How often the drain checks whether the jobs in flight are done.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running dispatcher: the handle to inspect it and to shut it down.
pub struct Dispatcher {
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    accept: JoinHandle<()>,
    /// HTTP servers: the front end, and the metrics port when it has one of its own.
    http: Vec<actix_web::dev::ServerHandle>,
    http_state: HttpState,
    arbiters: Vec<Arbiter>,
    drain_timeout: Duration,
}

impl Dispatcher {
    /// Starts serving the nmid protocol on `listener` with `config`, without HTTP. Must be
    /// called inside a running actix `System`; returns once the listener accepts.
    pub fn start(config: &Config, listener: std::net::TcpListener) -> io::Result<Self> {
        Self::start_with_http(config, listener, None)
    }

    /// Starts serving the nmid protocol on `listener` and, if given, HTTP on `http`. Must be
    /// called inside a running actix `System`.
    pub fn start_with_http(
        config: &Config,
        listener: std::net::TcpListener,
        http: Option<std::net::TcpListener>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let local_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
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
        let settings = Arc::new(ConnectionSettings {
            max_frame_bytes: config.tcp.max_frame_bytes,
            job_timeout: config.job_timeout(),
            jobs: jobs.clone(),
            max_jobs_per_worker: config.workers.max_jobs_in_flight,
            heartbeat_timeout: config.heartbeat_timeout(),
            inject_trace_v1: config.tracing.inject_v1_params,
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            arbiters.iter().map(Arbiter::handle).collect(),
            settings,
            config.tcp.max_connections,
        ));
        info!(addr = %local_addr, "nmid protocol listening");
        let http_state = HttpState {
            jobs,
            job_timeout: config.job_timeout(),
            max_body_bytes: config.http.max_body_bytes,
            started: SystemTime::now(),
        };
        let (http, http_addr) = match http {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let server = start_http(
                    http_state.clone(),
                    listener,
                    threads,
                    config.drain_timeout(),
                    crate::http::configure,
                )?;
                info!(%addr, "http listening");
                (Some(server), Some(addr))
            }
            None => (None, None),
        };
        Ok(Self {
            registry,
            metrics,
            local_addr,
            http_addr,
            accept,
            http: http.into_iter().collect(),
            http_state,
            arbiters,
            drain_timeout: config.drain_timeout(),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `GET /metrics` (only) on `listener` too: a port of its own for Prometheus, as
    /// nmid's `Prometheus:` config block offers.
    pub fn serve_metrics(&mut self, listener: std::net::TcpListener) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let server = start_http(
            self.http_state.clone(),
            listener,
            1,
            self.drain_timeout,
            crate::http::configure_metrics,
        )?;
        self.http.push(server);
        info!(%addr, "metrics listening");
        Ok(addr)
    }

    /// The address of the HTTP listener, if HTTP is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The dispatcher's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The function registry, for inspection.
    pub fn registry(&self) -> Addr<Registry> {
        self.registry.clone()
    }

    /// The registry's current state.
    pub async fn snapshot(&self) -> RegistrySnapshot {
        self.registry.send(Snapshot).await.unwrap_or_default()
    }

    /// Shuts down in order: stop accepting nmid connections -> stop taking new calls ->
    /// drain the jobs in flight and queued (bounded by the drain timeout) -> stop HTTP ->
    /// stop the connection threads.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.registry.do_send(Drain);
        // HTTP keeps answering while the jobs drain, so that `/readyz` says 503 and a new
        // call gets 503 `shutting_down` (actix-web's graceful stop would close even its idle
        // keep-alive connections at once, leaving probes nothing but a refused connection).
        let started = Instant::now();
        loop {
            let snapshot = self.snapshot().await;
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
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// Serves `listener` (and HTTP on `http`, if given) until `shutdown` completes, then shuts
/// down in order (see [`Dispatcher::shutdown`]). Must be called inside a running actix
/// `System`.
pub async fn run(
    config: Config,
    listener: std::net::TcpListener,
    http: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let dispatcher = Dispatcher::start_with_http(&config, listener, http)?;
    shutdown.await;
    info!("shutting down: no new connections or calls, draining jobs in flight");
    dispatcher.shutdown().await;
    Ok(())
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

async fn accept_loop(
    listener: TcpListener,
    arbiters: Vec<ArbiterHandle>,
    settings: Arc<ConnectionSettings>,
    max_connections: usize,
) {
    let open = Arc::new(AtomicUsize::new(0));
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
        if open.load(Ordering::Relaxed) >= max_connections {
            warn!(%peer, max_connections, "closing connection: connection limit reached");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                warn!(%peer, cause = %err, "dropping connection");
                continue;
            }
        };
        open.fetch_add(1, Ordering::Relaxed);
        let arbiter = &arbiters[next % arbiters.len()];
        next = next.wrapping_add(1);
        let (settings, counted) = (settings.clone(), open.clone());
        let spawned = arbiter.spawn_fn(move || match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => {
                Connection::start(stream, peer, settings, counted);
            }
            Err(err) => {
                counted.fetch_sub(1, Ordering::Relaxed);
                warn!(%peer, cause = %err, "dropping connection");
            }
        });
        if !spawned {
            open.fetch_sub(1, Ordering::Relaxed);
            warn!(%peer, "dropping connection: connection thread stopped");
        }
    }
}
