//! The `nmid-faas` binary: CLI -> the functions file -> logging -> [`nmid::faas::serve()`]
//! until SIGTERM/SIGINT (SIGHUP reloads the file at once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nmid::faas::{Credentials, Dispatchers, FaasSpec, ServeOptions};

/// nmid-faas: serve the commands and local HTTP services listed in a TOML file as nmid
/// functions, to the nmid dispatchers it connects to as a worker. Editing the file adds,
/// changes and removes functions without a restart.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The functions file (TOML; config/functions.toml documents every key).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// A dispatcher to serve (HOST:PORT); repeat for several. With --etcd, wins over the
    /// file's `servers` and `etcd` and over NMID_ADDR and NMID_ETCD; with none of them,
    /// 127.0.0.1:6808.
    #[arg(long = "server", value_name = "HOST:PORT")]
    servers: Vec<String>,
    /// Serve every dispatcher registered in the etcd at URL (http://host:2379), following
    /// them as they join and leave; repeat or comma-separate for several endpoints.
    #[arg(long = "etcd", value_name = "URL", value_delimiter = ',')]
    etcd: Vec<String>,
    /// A file holding the secret of the token the workers present (the dispatcher's
    /// `[[auth.tokens]]`, worker role). Wins over the file's `token_file` and NMID_TOKEN.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Connect with TLS, trusting the CAs of this PEM file (wins over the file's
    /// `tls_ca_file` and NMID_CA_FILE).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Connect with TLS, trusting the system's CAs (or --ca-file's).
    #[arg(long)]
    tls: bool,
    /// Serve this process's Prometheus metrics on HOST:PORT at /metrics (wins over the
    /// file's `metrics_addr`).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Check the file and exit: 0 when it is valid, 2 with the reason when not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check {
        return match FaasSpec::load(&cli.file) {
            Ok(spec) => {
                for warning in spec.warnings() {
                    eprintln!("nmid-faas: warning: {warning}");
                }
                println!(
                    "{}: {} functions, valid",
                    cli.file.display(),
                    spec.functions.len()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("nmid-faas: {err}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Once: each error's message already carries its cause.
            eprintln!("nmid-faas: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let tracing = nmid::telemetry::TracingSettings {
        enabled: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty()),
        endpoint: String::new(),
        service_name: "nmid-faas".to_owned(),
    };
    let telemetry = nmid::telemetry::init(&tracing, nmid::telemetry::LogFormat::Text)?;
    let env = Dispatchers::from_env(
        std::env::var("NMID_ADDR").ok().as_deref(),
        std::env::var("NMID_ETCD").ok().as_deref(),
    );
    for endpoint in cli.etcd.iter().chain(&env.etcd) {
        nmid::cluster::etcd::check_endpoint(endpoint)
            .map_err(|e| anyhow::anyhow!("--etcd: {e}"))?;
    }
    let token = match &cli.token_file {
        Some(path) => Some(
            nmid::faas::read_secret(&path.display().to_string()).map_err(|e| anyhow::anyhow!(e))?,
        ),
        None => None,
    };
    let tls = (cli.tls || cli.ca_file.is_some()).then(|| nmid::security::ClientTls {
        ca_file: cli
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ..Default::default()
    });
    let options = ServeOptions {
        credentials: Credentials { token, tls },
        file: cli.file,
        dispatchers: Dispatchers {
            servers: cli.servers,
            etcd: cli.etcd,
        },
        env,
        metrics_addr: cli.metrics_addr,
    };
    let served = actix_rt::System::new().block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before anything is served: a signal from now on stops gracefully.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        let reload = std::rc::Rc::new(tokio::sync::Notify::new());
        let notify = reload.clone();
        actix_rt::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reading the functions file again");
                notify.notify_one();
            }
        });
        nmid::faas::serve(options, &reload, shutdown).await?;
        anyhow::Ok(())
    });
    telemetry.shutdown();
    served
}
