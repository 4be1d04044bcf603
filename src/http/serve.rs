//! Serving the HTTP front end on the dispatcher's own connection threads.
//!
//! actix-web's `HttpServer` runs its own worker threads, so every `POST /call` crossed
//! threads twice: from the HTTP worker to the registry and the worker sessions (on the io
//! arbiters) and back, each crossing a wake-up (eventfd, often a context switch). Here each
//! io arbiter accepts HTTP connections itself, from its own handle on the listening socket,
//! and serves them with the same actix-web `App` through actix-http's `HttpService`: a call's
//! job actor, the registry and the worker session then share a thread, as on the nmid port.

use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_rt::net::TcpStream;
use actix_rt::ArbiterHandle;
use actix_service::{map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::idle::{Activity, Connections, Tracked};
use super::HttpState;
use crate::accept::AcceptGate;
use crate::metrics::Metrics;

/// What every HTTP listener is served with.
#[derive(Clone)]
pub struct HttpSite {
    /// Handed to every request.
    pub state: HttpState,
    /// The routes of this listener.
    pub routes: fn(&mut web::ServiceConfig),
    /// TLS, when on (the reloadable config shared with the nmid port).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP connections open at once, at most (`http.max_connections`), over all threads.
    pub max_connections: usize,
    /// The address lists and `http.max_connections_per_ip`, checked as each connection is
    /// accepted, before its TLS handshake.
    pub gate: Arc<AcceptGate>,
    /// A connection with no request in progress this long is closed (`http.keep_alive_ms`),
    /// HTTP/1 and HTTP/2 alike.
    pub keep_alive: Duration,
    /// Time to send a request's head, or to finish the HTTP/2 handshake
    /// (`http.client_request_timeout_ms`).
    pub client_request_timeout: Duration,
    /// Whether HTTP/2 is offered over TLS (`http.http2`). Without it, ALPN offers
    /// `http/1.1` alone and a prior-knowledge HTTP/2 preface is a malformed HTTP/1 request:
    /// h2 lets each connection hold header blocks up to 16 MiB, and actix-http has no
    /// setting to lower that. Plain TCP is HTTP/1.1 only either way.
    pub http2: bool,
}

impl fmt::Debug for HttpSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSite")
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// An HTTP listener served on io arbiters; [`Serving::stop`] stops accepting and closes
/// idle keep-alive connections (requests in progress finish).
#[derive(Debug)]
pub struct Serving {
    stop: CancellationToken,
}

impl Serving {
    /// Serves `listener` on each of `arbiters`.
    pub fn start(
        listener: std::net::TcpListener,
        arbiters: &[ArbiterHandle],
        site: HttpSite,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let stop = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(site.max_connections));
        for arbiter in arbiters {
            // A handle of its own on the socket: a tokio listener belongs to the runtime that
            // registered it, and each arbiter runs its own. The kernel spreads the accepts.
            let listener = listener.try_clone()?;
            let (site, stop, permits) = (site.clone(), stop.clone(), permits.clone());
            // Started on the arbiter's thread: the service it builds stays there.
            let spawned = arbiter.spawn_fn(move || {
                actix_rt::spawn(async move {
                    if let Err(err) = serve_here(listener, site, stop, permits).await {
                        warn!(cause = %err, "HTTP listener stopped");
                    }
                });
            });
            if !spawned {
                return Err(io::Error::other("a connection thread has stopped"));
            }
        }
        Ok(Self { stop })
    }

    /// Stops accepting; keep-alive connections close once their request in progress is
    /// answered.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Accepts and serves HTTP connections on this thread until `stop`.
async fn serve_here(
    listener: std::net::TcpListener,
    site: HttpSite,
    stop: CancellationToken,
    permits: Arc<Semaphore>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let signal = stop.clone();
    let metrics = site.state.metrics().clone();
    let state = web::Data::new(site.state);
    let routes = site.routes;
    let (keep_alive, request_timeout) = (site.keep_alive, site.client_request_timeout);
    let connections = Connections::new();
    let seen = connections.clone();
    let app = move || {
        let seen = seen.clone();
        App::new()
            .app_data(state.clone())
            // Each request keeps its connection busy until its response has been sent.
            .wrap_fn(move |req, app| {
                let busy = seen.begin(req.peer_addr());
                let answered = app.call(req);
                async move {
                    let response = answered.await?;
                    Ok(response.map_body(move |_, body| Tracked { body, busy }))
                }
            })
            .configure(routes)
    };
    let open = Open {
        permits,
        gate: site.gate,
        connections,
        keep_alive,
    };
    // A macro, not a value: the service's stream type (plain or TLS) and its protocols
    // (`finish`: HTTP/1 and HTTP/2, `h1`: HTTP/1 alone) are chosen per branch.
    macro_rules! http_service {
        ($protocols:ident) => {
            HttpService::build()
                .keep_alive(keep_alive)
                .client_request_timeout(request_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                // A caller that closes its side ends the connection, which drops the
                // handler's future and so cancels its job (queued calls are withdrawn)
                // instead of running it for nobody.
                .h1_allow_half_closed(false)
                .tcp_nodelay(true)
                .local_addr(local)
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.cancelled().await }
                })
                .$protocols(map_config(
                    app().into_factory().map_err(|err| err.error_response()),
                    |_| AppConfig::default(),
                ))
        };
    }
    match site.tls {
        Some(tls) if site.http2 => {
            let factory = http_service!(finish).rustls_0_23((*tls).clone());
            accept(listener, factory, stop, open, metrics).await
        }
        Some(tls) => {
            let mut tls = (*tls).clone();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let factory = http_service!(h1).rustls_0_23(tls);
            accept(listener, factory, stop, open, metrics).await
        }
        None => {
            let factory = http_service!(finish).tcp();
            accept(listener, factory, stop, open, metrics).await
        }
    }
}

/// What the accept loop of one thread admits connections under, and how long they may idle.
struct Open {
    /// Permits of `http.max_connections`, over all threads.
    permits: Arc<Semaphore>,
    /// The address lists and the per-IP cap.
    gate: Arc<AcceptGate>,
    /// This thread's open connections, for their requests to find.
    connections: Connections,
    /// `http.keep_alive_ms`.
    keep_alive: Duration,
}

/// The accept loop of one thread: each connection that the gate admits served by `factory`'s
/// service, while a connection permit is free, until it ends or stays idle too long.
async fn accept<F>(
    listener: TcpListener,
    factory: F,
    stop: CancellationToken,
    open: Open,
    metrics: Arc<Metrics>,
) -> io::Result<()>
where
    F: ServiceFactory<TcpStream, Config = (), Response = ()>,
    F::Error: fmt::Debug,
    F::InitError: fmt::Debug,
    F::Service: 'static,
{
    let service = factory
        .new_service(())
        .await
        .map_err(|err| io::Error::other(format!("HTTP service: {err:?}")))?;
    let service = Rc::new(service);
    loop {
        let permit = tokio::select! {
            permit = open.permits.clone().acquire_owned() => permit.map_err(io::Error::other)?,
            () = stop.cancelled() => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(cause = %err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return Ok(()),
        };
        // Refused before anything is read: no TLS handshake, no request parsed.
        let Some(admitted) = open.gate.admit(peer) else {
            continue;
        };
        let service = service.clone();
        let metrics = metrics.clone();
        let (connections, keep_alive) = (open.connections.clone(), open.keep_alive);
        let refusals = open.gate.refusals().clone();
        let activity = Activity::new();
        connections.opened(peer, activity.clone());
        metrics.http_connection(1);
        actix_rt::spawn(async move {
            tokio::select! {
                // A malformed request, a TLS handshake that failed, a reset: a peer can end
                // connections so as often as it likes (actix-http's own line for each is
                // off, see `telemetry::init`).
                served = service.call(stream) => match served {
                    Err(err) if refusals.first("http_error") => {
                        warn!(%peer, cause = ?err, "HTTP connection ended with an error");
                    }
                    Err(err) => debug!(%peer, cause = ?err, "HTTP connection ended with an error"),
                    Ok(()) => {}
                },
                // Dropping the connection's service closes it (HTTP/2 included).
                () = activity.idle_for(keep_alive) => {
                    debug!(%peer, "closing an idle HTTP connection (http.keep_alive_ms)");
                }
            }
            connections.closed(peer);
            metrics.http_connection(-1);
            drop((permit, admitted));
        });
    }
}
