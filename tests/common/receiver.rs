//! A tiny callback receiver over real TCP on 127.0.0.1, and what a receiver does with a
//! callback (openssl's HMAC, the signed string): shared by the callback tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nmid::config::{Config, JobsConfig};
use nmid::jobs::callback::Delivery;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const SECRET: &str = "test-callback-secret-0123456789";

/// One request the receiver read.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

/// How the receiver answers its `n`-th request (from 0).
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, at once.
    Status(u16),
    /// This status, after a wait.
    Slow(u16, Duration),
    /// A redirect to this location.
    Redirect(String),
    /// Never: the connection stays open, silent.
    Never,
}

/// A tiny HTTP/1.1 receiver: records every request, answers as told, counts the requests
/// in progress (read and not yet answered) at once.
pub struct Receiver {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Received>>>,
    pub most_at_once: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(Shared {
            answer: Box::new(answer),
            log: log.clone(),
            count: AtomicUsize::new(0),
            now: AtomicUsize::new(0),
            most: most_at_once.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        Self {
            port,
            log,
            most_at_once,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Shared {
    answer: Box<dyn Fn(usize) -> Answer + Send + Sync>,
    log: Arc<Mutex<Vec<Received>>>,
    count: AtomicUsize,
    now: AtomicUsize,
    most: Arc<AtomicUsize>,
}

/// Serves one connection's requests (keep-alive) until the peer closes it.
async fn serve(mut stream: TcpStream, state: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let path = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = (headers.iter())
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let now = state.now.fetch_add(1, Ordering::SeqCst) + 1;
        state.most.fetch_max(now, Ordering::SeqCst);
        let n = state.count.fetch_add(1, Ordering::SeqCst);
        state.log.lock().unwrap().push(Received {
            at: Instant::now(),
            path,
            headers,
            body,
        });
        let (status, extra) = match (state.answer)(n) {
            Answer::Status(status) => (status, String::new()),
            Answer::Slow(status, wait) => {
                tokio::time::sleep(wait).await;
                (status, String::new())
            }
            Answer::Redirect(location) => (307, format!("location: {location}\r\n")),
            Answer::Never => {
                // Silent until the client gives up and closes the connection.
                let mut rest = [0u8; 64];
                while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
                state.now.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        // Out of progress before the answer leaves: the client cannot start its next
        // request on this slot before this count is down.
        state.now.fetch_sub(1, Ordering::SeqCst);
        let response = format!("HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\n\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `[jobs]` allowing `prefix`, with fast retries.
pub fn jobs(prefix: &str) -> JobsConfig {
    let mut jobs = Config::default().jobs;
    jobs.callback_allow = vec![prefix.to_owned()];
    jobs.callback_secret = SECRET.into();
    jobs.callback_timeout_ms = 5000;
    jobs.callback_backoff_ms = 50;
    jobs.callback_backoff_max_ms = 1000;
    jobs
}

pub fn succeeded(job_id: &str, result: &'static [u8]) -> Delivery {
    Delivery {
        job_id: job_id.into(),
        function: "ToUpper".into(),
        state: "succeeded",
        attempts: 1,
        result: Some(Bytes::from_static(result)),
        error: None,
        submitter: Some("ip:127.0.0.1".into()),
    }
}

/// HMAC-SHA256 of `message` with the openssl command line: a second implementation,
/// apart from the module's, as a receiver's shell script would compute it.
pub fn openssl_hmac(key: &str, message: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("key:{key}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command line is needed by this test (apt-get install openssl)");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.rsplit("= ").next().unwrap().trim().to_owned()
}

/// What a receiver does: rebuild the signed string from the headers, the request target
/// and the body, compare.
pub fn verify(request: &Received) -> bool {
    let mut signed = Vec::new();
    for name in [
        "x-nmid-timestamp",
        "x-call-id",
        "x-nmid-function",
        "x-nmid-job-state",
        "x-nmid-submitter",
    ] {
        signed.extend_from_slice(request.header(name).as_bytes());
        signed.push(b'\n');
    }
    signed.extend_from_slice(request.path.as_bytes());
    signed.push(b'\n');
    signed.extend_from_slice(&request.body);
    let expected = format!("sha256={}", openssl_hmac(SECRET, &signed));
    request.header("x-nmid-signature") == expected
}
