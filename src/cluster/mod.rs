//! A cluster of dispatchers on etcd: membership with leases, nmid-compatible function keys,
//! and forwarding between dispatchers. Off unless `discovery.etcd_endpoints` is set.
//!
//! `docs/cluster.md` draws the topology and one forwarded call. The parts:
//!
//! - [`record`]: what is stored in etcd (membership record, `nmid/` keys); pure.
//! - [`etcd`]: one etcd member at a time out of several, with credentials and bounded
//!   requests, the reconnect backoff, and the membership follower that the client and
//!   worker libraries use as well. These two sit below the libraries
//!   (`nmid_proto::discovery`) and are re-exported here.
//! - `session`: this dispatcher's lease, kept alive through whichever member answers, and
//!   its two keys under it.
//! - `nmid_key`: the value of its nmid key, every live dispatcher of each function; pure.
//! - `membership`: peers joining, changing and leaving, told to the registry.
//! - [`peer_link`]: one actor per peer, a small pool of tagged connections, carrying out the
//!   scheduler's `Forward` decisions.
//! - [`metrics`]: peers, forwarded calls by outcome, the etcd session.
//!
//! [`Cluster::start`] runs them beside the registry; the scheduler decides what to forward
//! (`src/scheduler.rs`), the registry sends it to the peer's link through a `PeerPort`.

mod membership;
pub mod metrics;
mod nmid_key;
pub mod peer_link;
mod session;
mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::watch;

pub use nmid_proto::discovery::{etcd, record};
pub use view::{ClusterReport, ClusterView, MemberView};

use crate::actors::registry::Registry;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use etcd::{follow_members, EtcdSettings};
use membership::PeerFollower;
use metrics::ClusterMetrics;
use record::MemberRecord;
use session::{EtcdSession, Phase, SessionState};

/// The cluster settings of one dispatcher, resolved from its config and bound listeners.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How to reach etcd.
    pub etcd: EtcdSettings,
    /// This dispatcher's id.
    pub id: String,
    /// The nmid protocol address peers reach.
    pub tcp_addr: SocketAddr,
    /// The HTTP address shown to peers.
    pub http_addr: Option<SocketAddr>,
    /// The lease TTL.
    pub lease_ttl: Duration,
    /// The membership records' prefix.
    pub prefix: String,
    /// How often changes are published, at most.
    pub publish_interval: Duration,
    /// How often the nmid key is put again unchanged; `None`: never.
    pub nmid_refresh: Option<Duration>,
    /// Tagged connections per peer.
    pub peer_connections: usize,
    /// How long a peer may answer none of the calls waiting there before it counts as
    /// unreachable.
    pub peer_answer_timeout: Duration,
    /// Largest frame a peer link reads.
    pub max_frame_bytes: usize,
    /// Largest membership record read.
    pub max_record_bytes: usize,
    /// How the links reach peers: TLS when `[tls]` is on, the token of `auth.peer_secret_*`.
    pub peer_access: crate::net::Access,
    /// The node name of this dispatcher's background jobs, published in its record.
    pub jobs_node: Option<String>,
}

impl ClusterSettings {
    /// The settings of `config` for a dispatcher listening on `tcp` (and `http`), or `None`
    /// when discovery is off. The advertised TCP address is `cluster.advertise_addr`, else
    /// the listener's (refused when it is a wildcard).
    pub fn resolve(
        config: &Config,
        tcp: SocketAddr,
        http: Option<SocketAddr>,
    ) -> Result<Option<Self>, ConfigError> {
        if !config.discovery_enabled() {
            return Ok(None);
        }
        let tcp_addr = match config.cluster.advertise_addr()? {
            Some(addr) => addr,
            None if tcp.ip().is_unspecified() => {
                return Err(ConfigError::Invalid {
                    key: "cluster.advertise_addr",
                    reason: format!("required when listening on the wildcard address {tcp}"),
                })
            }
            None => tcp,
        };
        let http_addr = match (config.cluster.advertise_http_addr()?, http) {
            (Some(addr), _) => Some(addr),
            (None, Some(http)) if http.ip().is_unspecified() => {
                Some(SocketAddr::new(tcp_addr.ip(), http.port()))
            }
            (None, http) => http,
        };
        let discovery = &config.discovery;
        let credentials = (!discovery.username.is_empty())
            .then(|| (discovery.username.clone(), discovery.password.clone()));
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = match config.cluster.id.as_str() {
            "" => format!("{tcp_addr}-{:x}", started.as_millis()),
            id => id.to_owned(),
        };
        Ok(Some(Self {
            etcd: EtcdSettings {
                endpoints: discovery.etcd_endpoints.clone(),
                credentials,
                request_timeout: Duration::from_millis(discovery.request_timeout_ms),
                retry_max: Duration::from_millis(discovery.retry_max_ms),
                keepalive_interval: (discovery.keepalive_interval_ms > 0)
                    .then(|| Duration::from_millis(discovery.keepalive_interval_ms)),
                member_refresh: Duration::from_millis(discovery.member_refresh_interval_ms),
            },
            id,
            tcp_addr,
            http_addr,
            lease_ttl: Duration::from_secs(discovery.lease_ttl_s),
            prefix: config.cluster.prefix.clone(),
            publish_interval: Duration::from_millis(config.cluster.publish_interval_ms),
            nmid_refresh: (config.cluster.nmid_refresh_interval_ms > 0)
                .then(|| Duration::from_millis(config.cluster.nmid_refresh_interval_ms)),
            peer_connections: config.cluster.peer_connections,
            peer_answer_timeout: Duration::from_millis(config.cluster.peer_answer_timeout_ms),
            max_frame_bytes: config.tcp.max_frame_bytes,
            max_record_bytes: config.cluster.max_record_bytes,
            peer_access: peer_access(config)?,
            jobs_node: None,
        }))
    }
}

/// How this dispatcher's links reach its peers: with TLS when its listeners have it
/// (trusting `tls.peer_ca_file`, presenting its own certificate for their mutual TLS), and
/// presenting the secret of `auth.peer_secret_file` / `auth.peer_secret_env` if set.
fn peer_access(config: &Config) -> Result<crate::net::Access, ConfigError> {
    let auth = &config.auth;
    let token = if !auth.peer_secret_file.is_empty() {
        let secret =
            std::fs::read_to_string(&auth.peer_secret_file).map_err(|e| ConfigError::Invalid {
                key: "auth.peer_secret_file",
                reason: format!("{}: {e}", auth.peer_secret_file),
            })?;
        Some(secret.trim_end_matches(['\r', '\n']).to_owned())
    } else if !auth.peer_secret_env.is_empty() {
        Some(
            std::env::var(&auth.peer_secret_env).map_err(|_| ConfigError::Invalid {
                key: "auth.peer_secret_env",
                reason: format!("${} is not set", auth.peer_secret_env),
            })?,
        )
    } else {
        None
    };
    let tls = match config.tls.enabled() {
        false => None,
        true => {
            let tls = crate::security::ClientTls {
                ca_file: config.tls.peer_ca_file.clone(),
                server_name: String::new(),
                cert_file: config.tls.cert_file.clone(),
                key_file: config.tls.key_file.clone(),
            };
            Some(tls.connector().map_err(|reason| ConfigError::Invalid {
                key: "tls.peer_ca_file",
                reason,
            })?)
        }
    };
    Ok(crate::net::Access {
        tls,
        token: token.map(bytes::Bytes::from),
        internal: None,
    })
}

/// A running cluster membership: the etcd session, the peer follower, and their view.
pub struct Cluster {
    view: ClusterView,
    phase: watch::Sender<Phase>,
    session: tokio::task::JoinHandle<()>,
    request_timeout: Duration,
}

impl Cluster {
    /// Starts the session and the follower on the current actix arbiter; peer links run on
    /// `links` (the registry's thread). Must be called inside a running actix `System`.
    pub fn start(
        settings: ClusterSettings,
        registry: Addr<Registry>,
        links: ArbiterHandle,
        metrics: &Metrics,
    ) -> Self {
        let metrics = ClusterMetrics::new(metrics);
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let record = MemberRecord {
            id: settings.id.clone(),
            tcp_addr: settings.tcp_addr,
            http_addr: settings.http_addr,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: started_at.as_secs(),
            functions: Vec::new(),
            load: 0,
            draining: false,
            jobs_node: settings.jobs_node.clone(),
            slots: Default::default(),
        };
        let state = Arc::new(Mutex::new(SessionState {
            up: false,
            since: SystemTime::now(),
            last_error: None,
            record,
        }));
        let members = follow_members(
            settings.etcd.clone(),
            settings.prefix.clone(),
            settings.max_record_bytes,
        );
        let follower = PeerFollower {
            own_id: settings.id.clone(),
            own_addr: settings.tcp_addr,
            registry: registry.clone(),
            arbiter: links,
            links: peer_link::LinkSettings {
                connections: settings.peer_connections,
                max_frame_bytes: settings.max_frame_bytes,
                access: settings.peer_access.clone(),
                answer_timeout: settings.peer_answer_timeout,
            },
            metrics: metrics.clone(),
        };
        actix_rt::spawn(follower.run(members.clone()));
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let session = EtcdSession {
            etcd: settings.etcd.clone(),
            lease_ttl: settings.lease_ttl,
            prefix: settings.prefix.clone(),
            publish_interval: settings.publish_interval,
            nmid_refresh: settings.nmid_refresh,
            registry,
            members: members.clone(),
            state: state.clone(),
            metrics,
        };
        let session = actix_rt::spawn(session.run(phase_rx));
        let view = ClusterView::new(settings.id, settings.etcd.endpoints.clone(), members, state);
        Self {
            view,
            phase,
            session,
            request_timeout: settings.etcd.request_timeout,
        }
    }

    /// What `/api/v1/cluster` shows.
    pub fn view(&self) -> ClusterView {
        self.view.clone()
    }

    /// Shutdown has begun: the record says `draining`, so peers and discovering clients
    /// send no new calls here.
    pub fn begin_drain(&self) {
        self.phase.send_replace(Phase::Draining);
    }

    /// Leaves the cluster: revokes the lease (deleting this dispatcher's keys at once),
    /// through another etcd member if the one in use fails. If etcd does not answer within
    /// a few request timeouts, the lease expires by itself.
    pub async fn leave(self) {
        self.phase.send_replace(Phase::Leaving);
        let bound = 3 * self.request_timeout + Duration::from_millis(100);
        let _ = tokio::time::timeout(bound, self.session).await;
    }
}
