//! The cluster section of a full run (or `--cluster-only`): what a forwarded call costs
//! against a direct one, and how long a discovering client takes to fail over.
//!
//! etcd and three release `nmid`s joined to it (A, B, C; 127.0.0.1 only, ports
//! `--port-base` + 50, 51, 60, 61, 62, 63). Two worker processes serve `Echo` connected to
//! A, one connected to C; B has none. Then, in the same run:
//!
//! - **direct**: the load generator (tagged client, 64 in flight, 32 B) against A;
//! - **forwarded**: the same against B, which forwards every call to a peer serving `Echo`
//!   (A or C, by advertised load): one more hop, B's peer link, and the peer's work;
//! - **failover**: a discovering client in this process keeps 16 calls in flight over the
//!   cluster; A is SIGKILLed; the time from the kill to the first successful call, made on a
//!   survivor, by a caller whose call was lost on A (`ConnectionLost`, then a new call).

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::load;
use super::procs::{self, Proc, Role};
use super::report::{Run, RunKey};
use super::roles::loadgen::Caller;
use super::roles::RoleName;
use super::systems::{sock, Driver, Running, WORKER_SLOTS};
use super::{payload, Harness, FUNCTION};

/// Calls in flight and payload of the two load windows.
const LEVEL: usize = 64;
const PAYLOAD: usize = 32;
/// Callers of the failover measurement.
const FAILOVER_CALLERS: usize = 16;
/// Longest start-up of etcd or a dispatcher, and longest wait for the cluster to form.
const START_LIMIT: Duration = Duration::from_secs(15);
/// Longest failover measurement.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);

/// What the section measured.
#[derive(Debug, Serialize)]
pub struct ClusterBench {
    /// Calls to A, whose workers serve them.
    pub direct: Run,
    /// Calls to B, forwarded to a peer.
    pub forwarded: Run,
    /// SIGKILL of A to the first successful call on a survivor by a caller that lost one.
    pub failover_ms: Option<f64>,
    /// SIGKILL of A until every caller had a successful call issued after the kill.
    pub all_recovered_ms: Option<f64>,
    /// Calls lost (`ConnectionLost`) on A by the failover's callers.
    pub failover_lost: usize,
    /// Why something of the section failed.
    pub error: Option<String>,
}

impl ClusterBench {
    /// What failed, one line each.
    pub fn failures(&self) -> Vec<String> {
        let runs = [&self.direct, &self.forwarded].into_iter();
        let mut out: Vec<String> = runs
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.key)))
            .collect();
        out.extend(self.error.as_ref().map(|e| format!("cluster: {e}")));
        out
    }
}

/// Runs the section; a failure is reported in the result, not returned.
pub fn run(h: &Harness) -> ClusterBench {
    let key = |system: &str| RunKey {
        system: system.to_owned(),
        payload: PAYLOAD,
        level: LEVEL,
        rep: 1,
    };
    let mut bench = ClusterBench {
        direct: Run::failed(key("cluster-direct"), "not run".to_owned()),
        forwarded: Run::failed(key("cluster-forwarded"), "not run".to_owned()),
        failover_ms: None,
        all_recovered_ms: None,
        failover_lost: 0,
        error: None,
    };
    if let Err(e) = measure(h, &mut bench, key) {
        bench.error = Some(format!("{e:#}"));
    }
    bench
}

fn measure(
    h: &Harness,
    bench: &mut ClusterBench,
    key: impl Fn(&str) -> RunKey,
) -> anyhow::Result<()> {
    let ports = h.settings.ports;
    let etcd = start_etcd(h, ports.etcd)?;
    let url = format!("http://127.0.0.1:{}", ports.etcd);
    let [a, b, c] = [0, 1, 2].map(|i| ports.cluster_tcp + i);
    let b_http = ports.cluster_tcp + 3;
    let mut procs = vec![etcd];
    procs.push(start_dispatcher(h, "nmid-a", a, None, &url)?);
    procs.push(start_dispatcher(h, "nmid-b", b, Some(b_http), &url)?);
    procs.push(start_dispatcher(h, "nmid-c", c, None, &url)?);
    for (name, port) in [("worker-a1", a), ("worker-a2", a), ("worker-c", c)] {
        procs.push(h.launcher.start_role(
            name,
            Role::Worker,
            RoleName::NmidWorker,
            &[
                ("addr", format!("127.0.0.1:{port}")),
                ("slots", WORKER_SLOTS.to_string()),
            ],
        )?);
    }
    wait_cluster(b_http)?;

    let mut running = Running {
        procs,
        target: format!("127.0.0.1:{a}"),
        ..Running::default()
    };
    h.progress.note("cluster: direct calls (A, local workers)");
    bench.direct = load::measure(
        &h.launcher,
        &h.settings,
        Driver::Role(Caller::Tagged),
        &mut running,
        key("cluster-direct"),
    );
    running.target = format!("127.0.0.1:{b}");
    h.progress
        .note("cluster: forwarded calls (B, no worker: forwarded)");
    bench.forwarded = load::measure(
        &h.launcher,
        &h.settings,
        Driver::Role(Caller::Tagged),
        &mut running,
        key("cluster-forwarded"),
    );

    h.progress
        .note("cluster: failover of a discovering client (A SIGKILLed)");
    let a_proc = running.procs.remove(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let failover = local.block_on(&runtime, failover(&url, a_proc))?;
    bench.failover_ms = failover.first_ms;
    bench.all_recovered_ms = failover.all_ms;
    bench.failover_lost = failover.lost;
    if let Some(dead) = running.dead() {
        bail!("{dead}");
    }
    Ok(())
}

fn start_etcd(h: &Harness, port: u16) -> anyhow::Result<Proc> {
    procs::ensure_port_free(port, "etcd")?;
    procs::ensure_port_free(port + 1, "etcd peers")?;
    let dir = h.launcher.logs().join("etcd-data");
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", port + 1);
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", "bench", "--data-dir"])
        .arg(&dir)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("bench={peer}")]);
    let mut etcd = Proc::spawn("etcd", Role::Broker, cmd, &h.launcher.log("etcd"), false)?;
    procs::wait_listening(sock(port), &mut etcd, START_LIMIT)?;
    Ok(etcd)
}

fn start_dispatcher(
    h: &Harness,
    name: &str,
    port: u16,
    http: Option<u16>,
    etcd: &str,
) -> anyhow::Result<Proc> {
    procs::ensure_port_free(port, name)?;
    let mut cmd = Command::new(h.launcher.nmid_bin());
    cmd.arg("--tcp-addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--etcd", etcd])
        .env("NMID__DISCOVERY__LEASE_TTL_S", "3")
        .env("RUST_LOG", "warn");
    match http {
        Some(http) => cmd.arg("--http-addr").arg(format!("127.0.0.1:{http}")),
        None => cmd.arg("--no-http"),
    };
    let mut nmid = Proc::spawn(name, Role::Broker, cmd, &h.launcher.log(name), false)?;
    procs::wait_listening(sock(port), &mut nmid, START_LIMIT)?;
    if let Some(http) = http {
        procs::wait_listening(sock(http), &mut nmid, START_LIMIT)?;
    }
    Ok(nmid)
}

/// Waits until B's view of the cluster has three dispatchers, two of them serving `Echo`.
fn wait_cluster(b_http: u16) -> anyhow::Result<()> {
    let until = Instant::now() + START_LIMIT;
    loop {
        let report = procs::http_get(b_http, "/api/v1/cluster").unwrap_or_default();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
        let members = report["members"].as_array().cloned().unwrap_or_default();
        let serving = (members.iter())
            .filter(|m| {
                m["functions"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == FUNCTION))
            })
            .count();
        if members.len() == 3 && serving == 2 {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("the cluster did not form within {START_LIMIT:?}: {report}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the failover measured.
struct Failover {
    first_ms: Option<f64>,
    all_ms: Option<f64>,
    lost: usize,
}

/// Keeps [`FAILOVER_CALLERS`] discovering callers busy, SIGKILLs A (dropping its guard
/// kills and reaps it), and times the recovery.
async fn failover(etcd: &str, a: Proc) -> anyhow::Result<Failover> {
    use nmid::client::{Client, ClientError};
    let client = Client::builder("")
        .discover([etcd.to_owned()])
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .context("discovering client")?;
    let expect = super::roles::upper(&payload(PAYLOAD));
    let killed: Rc<RefCell<Option<Instant>>> = Rc::default();
    let started = Instant::now();
    let callers: Vec<_> = (0..FAILOVER_CALLERS)
        .map(|_| {
            let (client, killed, expect) = (client.clone(), killed.clone(), expect.clone());
            tokio::task::spawn_local(async move {
                // (lost a call, first success issued after the kill)
                let mut lost = false;
                loop {
                    if started.elapsed() > FAILOVER_LIMIT {
                        return Err(anyhow::anyhow!("no recovery within {FAILOVER_LIMIT:?}"));
                    }
                    let issued = Instant::now();
                    let result = client.call(FUNCTION, payload(PAYLOAD)).await;
                    let kill = *killed.borrow();
                    match result {
                        Ok(ret) if ret == expect => match kill {
                            Some(kill) if issued > kill || lost => {
                                return Ok((lost, Instant::now().duration_since(kill)))
                            }
                            _ => {}
                        },
                        Ok(_) => return Err(anyhow::anyhow!("wrong answer")),
                        Err(ClientError::ConnectionLost) if kill.is_some() => lost = true,
                        Err(ClientError::ConnectionLost) => {}
                        Err(e) => return Err(anyhow::anyhow!("call failed: {e}")),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    *killed.borrow_mut() = Some(Instant::now());
    drop(a);
    let (mut first, mut all, mut lost) = (None::<Duration>, Duration::ZERO, 0);
    for caller in callers {
        let (lost_one, took) = caller.await??;
        if lost_one {
            lost += 1;
            first = Some(first.map_or(took, |f| f.min(took)));
        }
        all = all.max(took);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Failover {
        first_ms: first.map(ms),
        all_ms: Some(ms(all)),
        lost,
    })
}
