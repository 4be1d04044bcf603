//! Shared test helpers: one `start_dispatcher()` and raw v1 peers over real TCP on 127.0.0.1.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod process;
pub mod receiver;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use nmid::codec::{self, CDoJob, Frame, NmidCodec, ParamsType, SGetData, WReturnData};
use nmid::config::Config;
use nmid::server::{Handle, Listeners};
use nmid::snapshot::RegistrySnapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// How long a test watches a drain that must wait for a job in flight before it lets the
/// job finish: a drain that does not wait is over within milliseconds (the process exits,
/// the connections close), so still draining after this long shows that it waits.
pub const DRAIN_WATCH: Duration = Duration::from_millis(750);

/// Every panic in this test binary so far: (thread name, message with location). Actors run
/// as tokio tasks, and tokio catches a task's panic (it ends only that task, and the thread
/// goes on), so joining a thread cannot see them; a panic hook sees every one.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Installs (once per test binary) the hook that records every panic in [`PANICS`], then
/// reports it as the default hook does.
pub fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_owned();
            PANICS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push((thread, info.to_string()));
            report(info);
        }));
    });
}

/// The panics recorded so far on threads whose name satisfies `on`, as "thread: message".
pub fn panics_on(on: impl Fn(&str) -> bool) -> Vec<String> {
    PANICS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter(|(thread, _)| on(thread))
        .map(|(thread, message)| format!("{thread}: {message}"))
        .collect()
}

/// Waits for `thread` to end, at most `limit` (a test fails rather than hangs), and joins it.
pub fn join_within<T>(thread: std::thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what} did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A dispatcher running in-process on its own actix `System` thread.
pub struct TestDispatcher {
    pub addr: SocketAddr,
    /// The HTTP listener, when started with [`start_dispatcher_with_http`].
    pub http: Option<SocketAddr>,
    handle: Handle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread:
        Option<std::thread::JoinHandle<Result<nmid::server::Stopped, nmid::server::ServerError>>>,
    /// The name of the `System` thread; its arbiters' threads are `actix-rt|system:{id}|..`.
    thread_name: String,
    system_id: usize,
    /// The longest a shutdown may take: the drain bound and some.
    stop_within: Duration,
}

/// Starts a dispatcher with the default configuration on 127.0.0.1:0.
pub fn start_dispatcher() -> TestDispatcher {
    start_dispatcher_with(Config::default())
}

/// Starts a dispatcher with `config` (its address is replaced by 127.0.0.1:0).
pub fn start_dispatcher_with(config: Config) -> TestDispatcher {
    start_dispatcher_on("127.0.0.1:0".parse().unwrap(), config)
}

/// Starts a dispatcher with `config` listening on `addr` (to restart one on its old port).
pub fn start_dispatcher_on(addr: SocketAddr, config: Config) -> TestDispatcher {
    start(addr, config, Serve::Tcp, 2)
}

/// Starts a dispatcher with `config` on one connection thread (the default of `nmid.toml`;
/// the other starters use two, to cross threads): the session, its jobs and the registry
/// then take turns on one thread, so what arrives together is handled in one turn.
pub fn start_dispatcher_on_one_thread(config: Config) -> TestDispatcher {
    start("127.0.0.1:0".parse().unwrap(), config, Serve::Tcp, 1)
}

/// Starts a dispatcher with `config` serving the nmid protocol and HTTP, both on 127.0.0.1:0.
pub fn start_dispatcher_with_http(config: Config) -> TestDispatcher {
    start("127.0.0.1:0".parse().unwrap(), config, Serve::Http, 2)
}

/// Starts a dispatcher with `config` serving the nmid protocol, HTTP and a metrics port of
/// its own (`TestDispatcher::handle().metrics_addr()`), all on 127.0.0.1:0.
pub fn start_dispatcher_with_metrics_port(config: Config) -> TestDispatcher {
    start(
        "127.0.0.1:0".parse().unwrap(),
        config,
        Serve::HttpAndMetrics,
        2,
    )
}

/// The listeners a test dispatcher serves besides the nmid protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    Tcp,
    Http,
    HttpAndMetrics,
}

fn start(addr: SocketAddr, mut config: Config, serve: Serve, threads: usize) -> TestDispatcher {
    let bind = |what| std::net::TcpListener::bind("127.0.0.1:0").expect(what);
    let listeners = Listeners {
        tcp: std::net::TcpListener::bind(addr).expect("bind the test address"),
        http: (serve != Serve::Tcp).then(|| bind("bind http")),
        metrics: (serve == Serve::HttpAndMetrics).then(|| bind("bind metrics")),
    };
    let addr = listeners.tcp.local_addr().unwrap();
    let http = listeners.http.as_ref().map(|l| l.local_addr().unwrap());
    config.tcp.addr = addr;
    config.server.io_threads = threads;
    let stop_within = config.drain_timeout() + 3 * PATIENCE;
    record_panics();
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let thread_name = format!(
        "nmid-test-dispatcher-{}",
        STARTED.fetch_add(1, Ordering::Relaxed)
    );
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            actix_rt::System::new().block_on(nmid::server::run(config, listeners, |handle| {
                let system_id = actix_rt::System::current().id();
                handle_tx.send((handle, system_id)).unwrap();
                async {
                    let _ = shutdown_rx.await;
                }
            }))
        })
        .expect("spawn the dispatcher thread");
    let (handle, system_id) = handle_rx
        .recv_timeout(PATIENCE)
        .expect("dispatcher started");
    TestDispatcher {
        addr,
        http,
        handle,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
        thread_name,
        system_id,
        stop_within,
    }
}

impl TestDispatcher {
    /// The dispatcher's handle (to reload its security settings, read its metrics).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// `http://127.0.0.1:PORT` of the HTTP front end.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http.expect("started with HTTP"))
    }

    /// The registry's state now.
    pub async fn snapshot(&self) -> RegistrySnapshot {
        self.handle.snapshot().await
    }

    /// The count of `nmid_limit_hits_total{limit="<limit>"}` now (docs/limits.md names each).
    pub async fn limit_hits(&self, limit: &str) -> f64 {
        let text = self.handle.metrics().render(&self.snapshot().await);
        let series = format!("nmid_limit_hits_total{{limit=\"{limit}\"}} ");
        (text.lines())
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} on /metrics"))
    }

    /// Polls the registry until `check` holds, or panics after [`PATIENCE`] with `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&RegistrySnapshot) -> bool,
    ) -> RegistrySnapshot {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let snapshot = self.snapshot().await;
            if check(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last state: {snapshot:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The dispatcher's thread still runs: its shutdown, if begun, is not over.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Begins the shutdown (stop accepting, refuse new calls, drain) without waiting for it;
    /// [`TestDispatcher::stop`] then waits. The registry answers until the drain is over.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts the dispatcher down (drain included) and waits for its thread, off the test's
    /// runtime so that workers running on it can still finish their jobs meanwhile. Panics if
    /// any of the dispatcher's threads panicked (an actor, the drain) or it does not stop.
    pub async fn stop(mut self) {
        tokio::task::spawn_blocking(move || self.stop_inner())
            .await
            .unwrap_or_else(|err| match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => panic!("stopping the dispatcher: {err}"),
            });
    }

    fn stop_inner(&mut self) {
        self.begin_shutdown();
        if let Some(thread) = self.thread.take() {
            let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                join_within(thread, self.stop_within, "the dispatcher")
            }));
            self.assert_no_panics();
            match joined {
                Ok(served) => drop(served.expect("the dispatcher ran and shut down")),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// Fails the test if a thread of this dispatcher (its `System` thread or one of its
    /// arbiters: connections, registry, HTTP workers) has panicked.
    fn assert_no_panics(&self) {
        let arbiters = format!("|system:{}|", self.system_id);
        let panics = panics_on(|thread| thread == self.thread_name || thread.contains(&arbiters));
        assert!(
            panics.is_empty(),
            "the dispatcher panicked:\n{}",
            panics.join("\n")
        );
    }
}

impl Drop for TestDispatcher {
    fn drop(&mut self) {
        self.begin_shutdown();
        // Dropped without `stop` (which checks after the drain): check what happened so far,
        // unless the test is already failing.
        if self.thread.is_some() && !std::thread::panicking() {
            self.assert_no_panics();
        }
    }
}

/// A raw v1 peer: frames in, frames out, over one TCP connection.
pub struct Peer {
    conn: Framed<TcpStream, NmidCodec>,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to dispatcher");
        stream.set_nodelay(true).unwrap();
        Self {
            conn: Framed::new(stream, NmidCodec::default()),
        }
    }

    /// Connects from the local address `source` (any of 127.0.0.0/8 on Linux), so that the
    /// dispatcher sees another client host: per-IP limits, rate limits.
    pub async fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect to dispatcher");
        stream.set_nodelay(true).unwrap();
        Self {
            conn: Framed::new(stream, NmidCodec::default()),
        }
    }

    pub async fn send(&mut self, frame: Frame) {
        self.conn.send(frame).await.expect("send frame");
    }

    /// Writes raw bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.conn
            .get_mut()
            .write_all(bytes)
            .await
            .expect("send bytes");
    }

    /// The connection's socket, for a test that reads and writes it on its own; call it once
    /// every frame sent so far was received (none may wait unread in the frame buffer).
    pub fn into_stream(self) -> TcpStream {
        let parts = self.conn.into_parts();
        assert!(
            parts.read_buf.is_empty(),
            "frames left unread: {:?}",
            parts.read_buf
        );
        parts.io
    }

    /// Exactly `n` raw bytes (after any already buffered), for byte-exact assertions.
    pub async fn recv_exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let buffered = self.conn.read_buffer_mut();
        let take = buffered.len().min(n);
        out.extend_from_slice(&buffered.split_to(take));
        out.resize(n, 0);
        let filled = take;
        tokio::time::timeout(PATIENCE, self.conn.get_mut().read_exact(&mut out[filled..]))
            .await
            .expect("bytes within patience")
            .expect("read bytes");
        out
    }

    /// One whole raw frame: header, then the body it announces.
    pub async fn recv_raw_frame(&mut self) -> Vec<u8> {
        let mut frame = self.recv_exact(codec::HEADER_LEN).await;
        let len = u32::from_be_bytes(frame[8..12].try_into().unwrap()) as usize;
        frame.extend(self.recv_exact(len).await);
        frame
    }

    /// The next frame; panics if none comes within [`PATIENCE`] or the connection closes.
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(PATIENCE).await.expect("a frame")
    }

    /// The next frame within `wait`, or `None` if nothing came.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        match tokio::time::timeout(wait, self.conn.next()).await {
            Err(_) => None,
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(err))) => panic!("bad frame from dispatcher: {err}"),
            Ok(None) => panic!("dispatcher closed the connection"),
        }
    }

    /// A frame already received, without waiting; `None` if none is there yet.
    pub fn try_recv(&mut self) -> Option<Frame> {
        use futures_util::FutureExt;
        match self.conn.next().now_or_never()? {
            Some(Ok(frame)) => Some(frame),
            Some(Err(err)) => panic!("bad frame from dispatcher: {err}"),
            None => panic!("dispatcher closed the connection"),
        }
    }

    /// Asserts that the dispatcher has sent this worker connection nothing since the last
    /// frame received: a `W_HEARTBEAT_PING`'s answer must be the next frame. Whatever the
    /// dispatcher wrote here before it read the ping arrives first and fails the assertion
    /// (no window of silence that a frame sent a moment late passes).
    pub async fn assert_worker_got_nothing(&mut self, what: &str) {
        self.send(Frame::WHeartbeatPing {
            body: Bytes::from_static(b"PING"),
        })
        .await;
        assert_eq!(self.recv().await, Frame::SHeartbeatPong, "{what}");
    }

    /// Asserts that the dispatcher has sent this v1 client connection nothing since the last
    /// frame received: the answer to a call of a function nobody serves (`CANT_DO`) must be
    /// the next frame, as for [`Peer::assert_worker_got_nothing`].
    pub async fn assert_client_got_nothing(&mut self, what: &str) {
        self.call("NobodyServesThis", b"\x80").await;
        assert_eq!(self.recv().await, Frame::CantDo, "{what}");
    }

    /// Asserts the dispatcher closes this connection within [`PATIENCE`].
    pub async fn expect_closed(mut self) {
        let stream = self.conn.get_mut();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Err(_) => panic!("connection was not closed"),
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// A worker that named itself and registered `functions`, with every OK received.
    pub async fn worker(addr: SocketAddr, name: &str, functions: &[&str]) -> Self {
        let mut peer = Self::connect(addr).await;
        peer.send(Frame::WSetName { name: bytes(name) }).await;
        assert_eq!(peer.recv().await, Frame::Ok, "OK for W_SET_NAME");
        for function in functions {
            peer.send(Frame::WAddFunc {
                function: bytes(function),
            })
            .await;
            assert_eq!(peer.recv().await, Frame::Ok, "OK for W_ADD_FUNC");
        }
        peer
    }

    /// Receives a job; panics on any other frame.
    pub async fn recv_job(&mut self) -> SGetData {
        match self.recv().await {
            Frame::SGetData(job) => job,
            other => panic!("expected S_GET_DATA, got {other:?}"),
        }
    }

    /// Answers `job` with `ret`.
    pub async fn answer(&mut self, job: &SGetData, ret: &[u8]) {
        self.send(Frame::WReturnData(WReturnData {
            function: job.function.clone(),
            params: job.params.clone(),
            ret: Bytes::copy_from_slice(ret),
            job_id: job.job_id.clone(),
        }))
        .await;
    }

    /// Sends a msgpack-typed call of `function` with `params`.
    pub async fn call(&mut self, function: &str, params: &[u8]) {
        self.send(Frame::CDoJob(CDoJob {
            params_type: ParamsType::MSGPACK,
            handle_type: codec::HANDLE_TYPE_ENCODE,
            function: bytes(function),
            params: Bytes::copy_from_slice(params),
        }))
        .await;
    }
}

pub fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Encodes one frame to its wire bytes.
pub fn wire(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(frame, &mut buf).unwrap();
    buf.to_vec()
}

/// The golden vectors shipped in tests/fixtures, by name -> frame bytes.
pub fn vector(name: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nmid-v1-vectors.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let hex = json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))["hex"]
        .as_str()
        .unwrap();
    hex::decode(hex).unwrap()
}

/// `POST url` with an empty JSON body and `headers`: status, headers, body text.
pub async fn post_json(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, String) {
    let mut request = awc::Client::default()
        .post(url)
        .insert_header(("content-type", "application/json"));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request.send_body("{}").await.expect("an HTTP response");
    let body = response.body().await.expect("the body");
    let body = String::from_utf8_lossy(&body).into_owned();
    (response.status().as_u16(), response.headers().clone(), body)
}

/// `GET url`: status and body text.
pub async fn get_text(url: &str) -> (u16, String) {
    let mut response = awc::Client::default()
        .get(url)
        .send()
        .await
        .expect("an HTTP response");
    let body = response.body().await.expect("the body");
    let status = response.status().as_u16();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A tagged client of the dispatcher at `addr` presenting the token `secret`.
pub async fn client_with_token(addr: SocketAddr, secret: &str) -> nmid::client::Client {
    nmid::client::Client::builder(addr.to_string())
        .token(secret.to_owned())
        .connect()
        .await
        .expect("a client with a token")
}
