//! A three-member etcd cluster as production runs one: three `etcd` processes on 127.0.0.1
//! joined with `--initial-cluster`, default flags otherwise, each with a data directory of
//! its own in a temporary directory. etcd cannot take port 0, so ports are picked free (bound
//! to port 0, read, released) and the whole cluster is started again on new ports if one
//! was taken meanwhile. Members can be frozen (SIGSTOP: a member that hangs), killed and
//! restarted; every process is killed by its PID when the guard drops, also on a panic.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, PROCESS_PATIENCE};

/// One member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Frozen with SIGSTOP.
    frozen: bool,
}

/// A running etcd cluster of three members.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
}

impl EtcdCluster {
    /// Starts three members and waits until they have elected a leader; fails loudly when
    /// `etcd` is not installed.
    pub async fn start() -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        for attempt in 0..3 {
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("nmid-etcd-cluster-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("etcd cluster directory");
            let members = (0..3)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                    frozen: false,
                })
                .collect();
            let mut cluster = Self { members, dir };
            for i in 0..3 {
                cluster.spawn(i);
            }
            if cluster.ready().await {
                return cluster;
            }
            eprintln!("etcd cluster attempt {attempt} did not come up; new ports");
            for i in 0..3 {
                cluster.kill(i);
            }
        }
        panic!("a three-member etcd cluster did not start on 127.0.0.1");
    }

    fn initial_cluster(&self) -> String {
        (self.members.iter())
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = (std::fs::OpenOptions::new().create(true).append(true))
            .open(self.dir.join(format!("{}.log", member.name)))
            .expect("etcd's log");
        let child = Command::new("etcd")
            .args(["--name", &member.name, "--data-dir"])
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", "nmid-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): install Debian's etcd-server (make deps)")
            });
        self.members[i].child = Some(child);
    }

    /// Waits until every member runs and one is the leader; `false` if a member exited
    /// (its port was taken) or no leader came within the patience.
    async fn ready(&mut self) -> bool {
        let deadline = Instant::now() + PROCESS_PATIENCE;
        while Instant::now() < deadline {
            for member in &mut self.members {
                let child = member.child.as_mut().expect("spawned");
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            if self.try_leader().await.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// `http://127.0.0.1:PORT` of member `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's URL, comma-separated, starting with member `first`.
    pub fn endpoints_from(&self, first: usize) -> String {
        (0..3)
            .map(|k| self.url((first + k) % 3))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i` runs and is not frozen.
    pub fn is_up(&self, i: usize) -> bool {
        self.members[i].child.is_some() && !self.members[i].frozen
    }

    async fn client(&self, i: usize) -> Option<etcd_client::Client> {
        client_of(&self.url(i)).await
    }

    /// The index of the leader, as a member that answers says.
    async fn try_leader(&self) -> Option<usize> {
        for i in (0..3).filter(|i| self.is_up(*i)) {
            let Some(mut client) = self.client(i).await else {
                continue;
            };
            let Ok(status) = client.status().await else {
                continue;
            };
            let own = status.header().map(|h| h.member_id());
            if status.leader() != 0 && own == Some(status.leader()) {
                return Some(i);
            }
        }
        None
    }

    /// The index of the leader; waits (bounded) for one to be elected.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + PROCESS_PATIENCE;
        loop {
            if let Some(i) = self.try_leader().await {
                return i;
            }
            assert!(Instant::now() < deadline, "no etcd leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every key under `prefix`, as [`read_keys`] reads them from the members up.
    pub async fn keys(&self, prefix: &str) -> Option<Vec<String>> {
        let up: Vec<String> = (0..3)
            .filter(|i| self.is_up(*i))
            .map(|i| self.url(i))
            .collect();
        read_keys(&up, prefix).await
    }

    /// SIGSTOPs member `i`: it keeps its connections open and answers nothing.
    pub fn freeze(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.members[i].frozen = true;
    }

    /// SIGCONTs a frozen member `i`.
    pub fn thaw(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.members[i].frozen = false;
    }

    fn signal(&self, i: usize, signal: &str) {
        let child = self.members[i].child.as_ref().expect("member runs");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    /// SIGKILLs member `i` by its PID and waits for it; its data stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].frozen = false;
    }

    /// Starts member `i` again on its ports and data, and waits until the cluster has a
    /// leader again.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.leader().await;
    }
}

/// A client of the one member at `url`, with short timeouts (a hung member costs a second).
async fn client_of(url: &str) -> Option<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(1000));
    etcd_client::Client::connect([url], Some(options))
        .await
        .ok()
}

/// Every key under `prefix`, read (serializable: no leader needed) from the first member of
/// `urls` that answers; `None` when none does.
pub async fn read_keys(urls: &[String], prefix: &str) -> Option<Vec<String>> {
    for url in urls {
        let Some(mut client) = client_of(url).await else {
            continue;
        };
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_serializable();
        if let Ok(listed) = client.get(prefix, Some(options)).await {
            let keys = (listed.kvs().iter())
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect();
            return Some(keys);
        }
    }
    None
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
