//! How the peers start: nats-server with its queue-group responders, and gearmand with its
//! workers. Each server binds 127.0.0.1 at its port of [`Ports`](super::systems::Ports);
//! every process is a [`Proc`], killed by its PID when the [`Running`] system is dropped.
//!
//! The main table's *nats* is 2 responder processes of 1 connection each; the scale
//! section's NATS series is 1 responder process of `n` connections, as its workers series is
//! 1 worker process of `n` dispatcher connections.

use std::process::Command;

use super::procs::{self, Proc, Role};
use super::roles::RoleName;
use super::systems::{sock, Launcher, Running, START_LIMIT};

impl Launcher {
    /// `nats-server -a 127.0.0.1` and `processes` responder processes of `conns_each`
    /// connections, every connection its own subscription in the one queue group; ready for
    /// load when this returns (each responder flushed its subscriptions before `READY`).
    pub fn start_nats(&self, processes: usize, conns_each: usize) -> anyhow::Result<Running> {
        let port = self.ports().nats;
        let addr = format!("127.0.0.1:{port}");
        procs::ensure_port_free(port, "nats-server")?;
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        let log = self.log("nats-server");
        let mut server = Proc::spawn("nats-server", Role::Broker, cmd, &log, false)?;
        procs::wait_listening(sock(port), &mut server, START_LIMIT)?;
        let mut procs = vec![server];
        for i in 1..=processes {
            procs.push(self.start_role(
                &format!("responder-{i}"),
                Role::Worker,
                RoleName::NatsResponder,
                &[("addr", addr.clone()), ("conns", conns_each.to_string())],
            )?);
        }
        Ok(Running {
            procs,
            target: addr,
            ..Running::default()
        })
    }

    /// `gearmand --threads=2` and 2 worker processes of 2 connections each.
    pub fn start_gearmand(&self) -> anyhow::Result<Running> {
        let port = self.ports().gearmand;
        let addr = format!("127.0.0.1:{port}");
        let server = self.start_gearmand_server(&[])?;
        let mut procs = vec![server];
        for i in 1..=2 {
            procs.push(self.start_role(
                &format!("gworker-{i}"),
                Role::Worker,
                RoleName::GearmanWorker,
                &[("addr", addr.clone()), ("conns", "2".to_owned())],
            )?);
        }
        Ok(Running {
            procs,
            target: addr,
            ..Running::default()
        })
    }

    /// `gearmand --threads=2` alone, with `extra` arguments (a persistent queue), listening
    /// when this returns.
    pub fn start_gearmand_server(&self, extra: &[String]) -> anyhow::Result<Proc> {
        let port = self.ports().gearmand;
        procs::ensure_port_free(port, "gearmand")?;
        let mut cmd = Command::new("gearmand");
        cmd.arg("--threads=2")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--log-file={}", self.log("gearmand-own").display()))
            .arg(format!(
                "--pid-file={}",
                self.logs().join("gearmand.pid").display()
            ))
            .arg("--verbose=ERROR")
            .args(extra);
        let log = self.log("gearmand");
        let mut server = Proc::spawn("gearmand", Role::Broker, cmd, &log, false)?;
        procs::wait_listening(sock(port), &mut server, START_LIMIT)?;
        Ok(server)
    }

    /// `nats-server -a 127.0.0.1` with JetStream on (`-js`), storing under `store_dir`;
    /// listening when this returns. (benches/jobs.rs's; compare does not use it.)
    #[allow(dead_code)]
    pub fn start_nats_jetstream(&self, store_dir: &std::path::Path) -> anyhow::Result<Proc> {
        let port = self.ports().nats;
        procs::ensure_port_free(port, "nats-server")?;
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store_dir);
        let log = self.log("nats-server-js");
        let mut server = Proc::spawn("nats-server", Role::Broker, cmd, &log, false)?;
        procs::wait_listening(sock(port), &mut server, START_LIMIT)?;
        Ok(server)
    }
}
