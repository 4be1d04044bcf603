//! The `nmid` dispatcher binary: CLI -> config -> logging/telemetry -> listeners ->
//! [`nmid::server::run`] (with the demo worker if asked) -> flush telemetry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a call allocates a few small objects (its job actor,
/// its messages) that live for microseconds, and glibc's malloc and free took ~20% of the
/// dispatcher's CPU under load (perf, BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// nmid: a microservice RPC dispatcher, wire-compatible with nmid protocol v1.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML); see config/nmid.toml for every key.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address of the nmid binary protocol (overrides `tcp.addr`).
    #[arg(long, value_name = "HOST:PORT")]
    tcp_addr: Option<SocketAddr>,
    /// Listen address of the HTTP front end (overrides `http.addr`).
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<SocketAddr>,
    /// Do not serve HTTP (overrides `http.enabled`).
    #[arg(long)]
    no_http: bool,
    /// Also run the embedded demo worker serving `ToUpper`.
    #[arg(long)]
    demo: bool,
    /// Join the cluster of dispatchers on these etcd endpoints, comma-separated (overrides
    /// `discovery.etcd_endpoints`), e.g. `http://127.0.0.1:2379`.
    #[arg(long, value_name = "URL[,URL...]")]
    etcd: Option<String>,
    /// The address peers, clients and workers reach this dispatcher at (overrides
    /// `cluster.advertise_addr`); required with `--etcd` when listening on 0.0.0.0.
    #[arg(long, value_name = "HOST:PORT")]
    advertise_addr: Option<SocketAddr>,
    /// Check the configuration (file, environment, flags) and exit without serving: 0 when
    /// it is valid (its warnings printed, each naming its key), 2 naming the bad key.
    #[arg(long)]
    check: bool,
}

/// Exit status when the dispatcher could not start or failed (bad configuration, a port in
/// use).
const EXIT_FAILED: u8 = 2;
/// Exit status when the drain timed out and calls were answered `ERROR`/`shutting_down`
/// instead of a result.
const EXIT_ABANDONED_CALLS: u8 = 3;

/// How often memory freed by the dispatcher is handed back to the operating system.
#[cfg(feature = "mimalloc")]
const RETURN_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// mimalloc keeps freed memory for reuse and gives it back only when asked again (it purges
/// lazily, on later allocation): after a burst (large frames, many connections) the
/// dispatcher's RSS would stay at its peak. A thread asks it once a second; each call
/// decommits what was freed (measured in tests/limits.rs and docs/limits.md).
#[cfg(feature = "mimalloc")]
fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("nmid-memory".to_owned())
        .spawn(|| loop {
            std::thread::sleep(RETURN_MEMORY_EVERY);
            // SAFETY: mi_collect takes no pointers; any thread may call it at any time.
            unsafe { libmimalloc_sys::mi_collect(true) };
        });
    if let Err(err) = spawned {
        eprintln!("nmid: freed memory will not be returned to the system: {err}");
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    return_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(stopped) if stopped.abandoned_calls > 0 => {
            eprintln!(
                "nmid: stopped with {} calls abandoned at the drain timeout (server.drain_timeout_ms)",
                stopped.abandoned_calls
            );
            ExitCode::from(EXIT_ABANDONED_CALLS)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nmid: {err:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<nmid::server::Stopped> {
    let mut overrides = Vec::new();
    if let Some(addr) = cli.tcp_addr {
        overrides.push(("tcp.addr", addr.to_string()));
    }
    if let Some(addr) = cli.http_addr {
        overrides.push(("http.addr", addr.to_string()));
    }
    if cli.no_http {
        overrides.push(("http.enabled", "false".to_owned()));
    }
    if let Some(endpoints) = &cli.etcd {
        overrides.push(("discovery.etcd_endpoints", endpoints.clone()));
    }
    if let Some(addr) = cli.advertise_addr {
        overrides.push(("cluster.advertise_addr", addr.to_string()));
    }
    let config = nmid::config::Config::load(cli.config.as_deref(), &overrides)?;
    if cli.check {
        // What start-up builds from the keys, short of binding and opening the store: the
        // lists, the tokens (their secrets read, names and secrets unique), the certificates.
        nmid::security::Security::from_config(&config)?;
        for warning in config.warnings() {
            eprintln!("nmid: warning: {warning}");
        }
        println!("nmid: configuration valid");
        return Ok(nmid::server::Stopped::default());
    }
    let telemetry = nmid::telemetry::init(&config.tracing_settings(), config.log_format())?;
    for warning in config.warnings() {
        tracing::warn!(key = warning.key, "{warning}");
    }
    let listeners = nmid::server::Listeners::bind(&config)?;
    warn_if_open(&config, &listeners);
    let served = actix_rt::System::new().block_on(async move {
        // Before anything accepts: a signal from now on drains instead of killing.
        let shutdown = shutdown_signal();
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let demo = std::rc::Rc::new(std::cell::RefCell::new(None));
        let started_demo = demo.clone();
        let stopped = nmid::server::run(config, listeners, |handle| async move {
            if cli.demo {
                match nmid::demo::start_demo_worker(&handle) {
                    Ok(worker) => *started_demo.borrow_mut() = Some(worker),
                    Err(err) => tracing::error!(cause = %err, "demo worker not started"),
                }
            }
            // SIGHUP: the configuration is read again (file, environment, flags) and its
            // [security], [auth] and [tls] applied; the other keys need a restart.
            let reload = async {
                while hangups.recv().await.is_some() {
                    match nmid::config::Config::load(cli.config.as_deref(), &overrides) {
                        Ok(config) => match handle.reload_security(&config) {
                            Ok(()) => tracing::info!("SIGHUP: [security], [auth] and [tls] reloaded"),
                            Err(err) => tracing::error!(cause = %err, "SIGHUP: reload refused; the previous settings stay"),
                        },
                        Err(err) => tracing::error!(cause = %err, "SIGHUP: configuration refused; the previous settings stay"),
                    }
                }
            };
            tokio::select! {
                _ = shutdown => {}
                _ = reload => {}
            }
        })
        .await?;
        let demo = demo.borrow_mut().take();
        if let Some(demo) = demo {
            demo.stop().await;
        }
        anyhow::Ok(stopped)
    });
    // Last in the shutdown order: export the spans still buffered.
    telemetry.shutdown();
    served
}

/// Says so, loudly, for each way the configuration leaves the dispatcher open beyond this
/// host (auth off beyond loopback, the admin API with it, a wildcard bind in plaintext, v1
/// peers granted to every address, `/metrics` opened beyond loopback): one `warn` line each.
fn warn_if_open(config: &nmid::config::Config, listeners: &nmid::server::Listeners) {
    let Ok(tcp) = listeners.tcp.local_addr() else {
        return;
    };
    let http: Vec<SocketAddr> = [listeners.http.as_ref(), listeners.metrics.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    for exposure in nmid::security::exposures(config, tcp, &http) {
        tracing::warn!(
            exposure = exposure.kind(),
            "{exposure}; see docs/security.md and config/hardened.toml"
        );
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed by this call, not when the
/// future is first polled: a signal that arrives while the dispatcher starts (it accepts
/// connections as soon as it logs that it listens) must not meet the default action, which
/// kills the process without draining.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
