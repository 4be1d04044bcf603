//! The discovering transport: the dispatchers come from etcd's membership records, not from
//! one address.
//!
//! Each call goes to a dispatcher that advertises the function (any live one when none
//! does: it forwards the call, or answers `NoWorker` for the whole cluster), round-robin
//! among them, over a tagged connection per dispatcher opened on first use. Failover:
//!
//! - a dispatcher that cannot be reached, or refuses because it is draining, never saw the
//!   call: the call goes to the next one;
//! - a dispatcher whose connection drops with the call in flight may have run it: the call
//!   fails with [`ClientError::ConnectionLost`] at once (at most once), unless
//!   [`CallOptions::idempotent`](super::CallOptions::idempotent) says it may run twice, when it
//!   is sent to the next dispatcher;
//! - either way that dispatcher is skipped by new calls for [`SKIP_DOWN`], or until its record
//!   leaves etcd (lease TTL), whichever comes first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::debug;

use super::connection::Tagged;
use super::{ClientError, Settings};
use nmid_proto::codec::{Metadata, ParamsType};
use nmid_proto::discovery::{follow_members, Discovery, MemberRecord, Members};

/// How long a dispatcher that failed a call is skipped by new calls.
pub const SKIP_DOWN: Duration = Duration::from_secs(2);

/// One dispatcher's connection.
#[derive(Debug)]
struct Dispatcher {
    addr: String,
    conn: Arc<Tagged>,
    down_until: Option<Instant>,
}

/// One call as the discovering transport sends it (the client has set its deadline, type
/// and trace context already).
#[derive(Debug)]
pub(super) struct DiscoveredCall {
    pub(super) function: Bytes,
    pub(super) params: Bytes,
    pub(super) params_type: ParamsType,
    pub(super) timeout: Duration,
    pub(super) metadata: Metadata,
    pub(super) idempotent: bool,
}

/// The discovering transport.
#[derive(Debug)]
pub(super) struct Discovered {
    settings: Arc<Settings>,
    members: watch::Receiver<Members>,
    dispatchers: Mutex<HashMap<String, Dispatcher>>,
    next: AtomicUsize,
    next_request: AtomicU64,
}

impl Discovered {
    /// Follows the membership records of `discovery`; waits for etcd's first answer, at most
    /// a request timeout per endpoint and one more (the endpoints are tried one at a time,
    /// and a member that hangs costs one request timeout).
    pub(super) async fn start(
        settings: Arc<Settings>,
        discovery: Discovery,
    ) -> Result<Self, ClientError> {
        let tries = u32::try_from(discovery.etcd.endpoints.len()).unwrap_or(u32::MAX);
        let timeout = discovery.etcd.request_timeout * tries.saturating_add(1);
        let endpoints = discovery.etcd.endpoints.join(",");
        let mut members = follow_members(discovery.etcd, discovery.prefix, 64 * 1024);
        let listed = matches!(
            tokio::time::timeout(timeout, members.wait_for(|m| m.connected)).await,
            Ok(Ok(_))
        );
        if !listed {
            return Err(ClientError::Connect {
                addr: endpoints,
                reason: format!("etcd did not answer within {timeout:?}"),
            });
        }
        Ok(Self {
            settings,
            members,
            dispatchers: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            next_request: AtomicU64::new(1),
        })
    }

    /// Calls `function` on a dispatcher that serves it, failing over as the module says.
    pub(super) async fn call(&self, call: DiscoveredCall) -> Result<Bytes, ClientError> {
        let function = String::from_utf8_lossy(&call.function).into_owned();
        let mut tried: Vec<String> = Vec::new();
        loop {
            let Some((id, conn)) = self.pick(&function, &tried) else {
                return Err(ClientError::NoDispatcher);
            };
            let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
            let result = conn
                .call(
                    request_id,
                    call.function.clone(),
                    call.params.clone(),
                    call.params_type,
                    call.timeout,
                    call.metadata.clone(),
                )
                .await;
            let retry = match &result {
                Err(ClientError::Connect { .. } | ClientError::ShuttingDown) => true,
                Err(ClientError::ConnectionLost) => call.idempotent,
                _ => false,
            };
            if matches!(
                result,
                Err(ClientError::Connect { .. }
                    | ClientError::ShuttingDown
                    | ClientError::ConnectionLost)
            ) {
                self.mark_down(&id);
            }
            if !retry {
                return result;
            }
            debug!(dispatcher = %id, %function, "call failed over to another dispatcher");
            tried.push(id);
        }
    }

    /// The dispatchers known now, by id, as their records say.
    pub(super) fn members(&self) -> Vec<MemberRecord> {
        let members = self.members.borrow();
        members.members.values().map(|m| m.record.clone()).collect()
    }

    /// The next dispatcher for `function`, not among `tried`: those advertising it, else
    /// any; up ones before ones that failed lately; round-robin among equals.
    fn pick(&self, function: &str, tried: &[String]) -> Option<(String, Arc<Tagged>)> {
        let members = self.members.borrow().members.clone();
        let live: Vec<&MemberRecord> = (members.values())
            .map(|m| &m.record)
            .filter(|r| !r.draining && !tried.contains(&r.id))
            .collect();
        let serving: Vec<&MemberRecord> = (live.iter().copied())
            .filter(|r| r.functions.iter().any(|f| f == function))
            .collect();
        let candidates = if serving.is_empty() { live } else { serving };
        let mut dispatchers = self.dispatchers.lock().expect("dispatchers lock");
        dispatchers.retain(|id, _| members.contains_key(id));
        let now = Instant::now();
        let is_up = |d: Option<&Dispatcher>| d.and_then(|d| d.down_until).is_none_or(|t| t <= now);
        let up: Vec<&MemberRecord> = (candidates.iter().copied())
            .filter(|r| is_up(dispatchers.get(&r.id)))
            .collect();
        let pool = if up.is_empty() { candidates } else { up };
        if pool.is_empty() {
            return None;
        }
        let record = pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()];
        let addr = record.tcp_addr.to_string();
        let entry = (dispatchers.entry(record.id.clone()))
            .and_modify(|d| {
                if d.addr != addr {
                    *d = self.connect(&addr);
                }
            })
            .or_insert_with(|| self.connect(&addr));
        Some((record.id.clone(), entry.conn.clone()))
    }

    fn connect(&self, addr: &str) -> Dispatcher {
        let settings = Settings {
            addr: addr.to_owned(),
            timeout: self.settings.timeout,
            max_frame_bytes: self.settings.max_frame_bytes,
            access: self.settings.access.clone(),
        };
        Dispatcher {
            addr: addr.to_owned(),
            conn: Arc::new(Tagged::new(Arc::new(settings))),
            down_until: None,
        }
    }

    fn mark_down(&self, id: &str) {
        let mut dispatchers = self.dispatchers.lock().expect("dispatchers lock");
        if let Some(dispatcher) = dispatchers.get_mut(id) {
            dispatcher.down_until = Some(Instant::now() + SKIP_DOWN);
        }
    }
}
