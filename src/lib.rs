//! nmid: a microservice RPC dispatcher ("midfield commander"), wire-compatible with nmid
//! protocol v1, built on actix actors.
//!
//! # Layout
//!
//! The libraries a user adds sit below the dispatcher in crates of their own (`crates/`):
//! `nmid-proto` (the codec, RetStruct, connections, trace context, etcd discovery), then
//! `nmid-client` and `nmid-worker`. The dispatcher uses them (peer links, the demo worker,
//! `nmid-faas`, `nmidctl`) and re-exports them here under their old paths.
//!
//! - [`codec`]: frames and bodies of the nmid wire protocol (v1 and tagged); pure, no I/O
//!   (`nmid_proto::codec`).
//! - [`call`]: the ground floor: ids, a call's spec and outcome, leases.
//! - [`snapshot`]: the registry's state at one moment, for the admin API and metrics.
//! - [`scheduler`]: the placement policy as plain data (which worker, queue or refuse).
//! - [`breaker`]: one circuit breaker's state machine (nmid's rule types), time passed in.
//! - [`rate_limit`]: calls per second per function and per client (governor buckets).
//! - [`actors`]: the dispatcher: client and worker sessions, the registry, one job per call.
//! - [`cluster`]: dispatchers on etcd: membership with leases, nmid's function keys,
//!   forwarding to peers (off unless etcd endpoints are set).
//! - [`net`]: the byte stream under a connection, plain or TLS (`nmid_proto::net`).
//! - [`server`]: [`server::run`]: listeners, arbiters, the accept loop, ordered shutdown.
//! - [`accept`]: what every listener checks at accept time: address lists, connection
//!   limits.
//! - [`http`]: the actix-web front end: `POST /call/<func>`, nmid's gateway, admin API.
//! - [`jobs`]: background jobs: the store, their order, retries, unique keys, and
//!   callbacks of their final state (signed, retried, allow-listed).
//! - [`config`]: the configuration, defaults from `config/nmid.toml`.
//! - [`metrics`]: Prometheus metrics (bounded labels) and call totals.
//! - [`rates`]: calls/s, error ratio and percentiles between two readings of the totals.
//! - [`history`]: the last minutes of those rates, for the dashboard's charts.
//! - [`telemetry`]: logs and OTLP tracing across hops (the spans: `nmid_proto::trace`).
//! - [`logging`]: peer-chosen strings escaped in log lines; refusals logged once per window.
//! - [`client`]: the async client library (tagged, pipelined; or v1): `nmid_client`.
//! - [`worker`]: the worker library (actix actors; tagged or v1): `nmid_worker`.
//! - [`retstruct`]: nmid's `{"Code","Msg","Data"}` result convention (`nmid_proto`).
//! - [`demo`]: the embedded `ToUpper` worker of `nmid --demo`.
//! - [`faas`]: `nmid-faas`: commands and local HTTP services served as functions.
//! - [`ctl`]: `nmidctl`: call, inspect, top, bench, health.
#![warn(missing_docs)]

pub mod accept;
pub mod actors;
pub mod breaker;
pub mod call;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod faas;
pub mod history;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod rate_limit;
pub mod rates;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod snapshot;
pub mod telemetry;

pub use nmid_client as client;
pub use nmid_proto::{codec, net, retstruct};
pub use nmid_worker as worker;
