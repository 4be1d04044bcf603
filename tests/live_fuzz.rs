//! The live fuzzer: whole golden conversations of nmid's SDKs (a worker registering and
//! answering, a client calling), mutated (bits flipped, bytes set, lengths changed, chunks
//! cut, repeated or spliced from another conversation) and sent over many connections to a
//! running dispatcher, while a healthy client keeps calling a healthy worker: every one of
//! its calls must be answered, promptly, and the dispatcher must not panic.
//!
//! `make test` runs it for 5 s; `make fuzz` for `FUZZ_SECS` (`NMID_LIVE_FUZZ_SECS`).
//! `NMID_LIVE_FUZZ_SEED` replays a run (the seed is printed).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_dispatcher_with, vector};
use nmid::client::Client;
use nmid::config::Config;
use nmid::worker::{Job, JobError, Worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The function the healthy worker serves: a name no mutation of the vectors makes.
const HEALTHY: &str = "live-fuzz-healthy-echo";
/// Connections fuzzing at once.
const FUZZERS: usize = 8;
/// The slowest a healthy call may be while the fuzzers run: they share the test's runtime
/// with the healthy client, and a loaded 2-core machine can hold a call back for a second.
const HEALTHY_LATENCY: Duration = Duration::from_secs(5);
/// The median healthy call while the fuzzers run: a dispatcher stalled by the fuzzers shows
/// here, whatever one call's bad luck.
const HEALTHY_MEDIAN: Duration = Duration::from_millis(250);

/// A small, reproducible random source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The golden conversations: what nmid's SDKs send, frame after frame.
fn conversations() -> Vec<Vec<u8>> {
    let worker: Vec<u8> = [
        "worker_set_name",
        "worker_add_func",
        "worker_heartbeat_ping",
        "worker_grab_job",
        "worker_return_data",
        "worker_del_func",
    ]
    .iter()
    .flat_map(|name| vector(name))
    .collect();
    let client: Vec<u8> = ["client_do_job_msgpack", "client_do_job_json"]
        .iter()
        .flat_map(|name| vector(name))
        .collect();
    vec![worker, client]
}

/// One mutation of `bytes` (with `other` to splice from).
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>, other: &[u8]) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len());
        match rng.below(7) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            // A length field (every u32 is big-endian) set to something large or small.
            2 if at + 4 <= bytes.len() => {
                let value = [0u32, 1, 11, 12, 255, 65_535, 1 << 24, u32::MAX][rng.below(8)];
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            3 => bytes.truncate(at),
            4 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            5 => {
                let from = rng.below(other.len());
                let end = (from + rng.below(128)).min(other.len());
                bytes.splice(at..at, other[from..end].iter().copied());
            }
            _ => bytes.insert(at, rng.next() as u8),
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

/// Sends `bytes` in random chunks, reads what comes back for a moment, and hangs up.
async fn fuzz_once(addr: std::net::SocketAddr, rng: &mut Rng, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + 1 + rng.below(96)).min(bytes.len());
        if stream.write_all(&bytes[at..end]).await.is_err() {
            return;
        }
        at = end;
    }
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await;
}

/// Mutated golden conversations over many connections never stop the dispatcher from
/// serving a healthy client and worker.
#[actix_rt::test]
async fn mutated_conversations_do_not_disturb_healthy_peers() {
    let secs: u64 = std::env::var("NMID_LIVE_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("NMID_LIVE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64) | 1
        });
    println!("live fuzz: {secs} s, seed {seed} (NMID_LIVE_FUZZ_SEED replays it)");
    let mut config = Config::default();
    config.tcp.handshake_timeout_ms = 2_000;
    config.tcp.frame_timeout_ms = 2_000;
    let dispatcher = start_dispatcher_with(config);
    let addr = dispatcher.addr;
    let healthy = Worker::builder()
        .name("healthy")
        .server(addr.to_string())
        .function(HEALTHY, |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("the healthy worker", |s| s.function(HEALTHY).is_some())
        .await;

    let until = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let fuzzers: Vec<_> = (0..FUZZERS)
        .map(|i| {
            let (done, sent) = (done.clone(), sent.clone());
            let mut rng =
                Rng(seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            let conversations = conversations();
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let pick = rng.below(conversations.len());
                    let other = &conversations[(pick + 1) % conversations.len()];
                    let bytes = mutate(&mut rng, conversations[pick].clone(), other);
                    fuzz_once(addr, &mut rng, &bytes).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let client = Client::connect(addr.to_string()).await.unwrap();
    let mut took = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let params = format!("call {}", took.len());
        let call = client.call(HEALTHY, params.clone());
        let Ok(ret) = tokio::time::timeout(HEALTHY_LATENCY, call).await else {
            panic!("healthy call {} took over {HEALTHY_LATENCY:?}", took.len());
        };
        took.push(started.elapsed());
        assert_eq!(
            ret.as_deref().ok(),
            Some(params.as_bytes()),
            "healthy call {}: {ret:?}",
            took.len()
        );
    }
    done.store(true, Ordering::Relaxed);
    for fuzzer in fuzzers {
        fuzzer.await.unwrap();
    }
    let connections = sent.load(Ordering::Relaxed);
    took.sort();
    let calls = took.len();
    assert!(connections > 0 && calls > 0);
    let (median, slowest) = (took[calls / 2], took[calls - 1]);
    println!(
        "live fuzz: {connections} mutated conversations; {calls} healthy calls all answered, median {median:?}, the slowest in {slowest:?}"
    );
    assert!(
        median < HEALTHY_MEDIAN,
        "the median healthy call took {median:?}"
    );
    healthy.stop().await;
    dispatcher.stop().await;
}
