//! nmid's Go consumer, as a test double that does exactly what the Go code does, so that a
//! test sees the dispatchers as nmid's Go clients see them. The code it copies, from
//! HughNian/nmid:
//!
//! - `pkg/client/discovery.go`, `Consumer.EtcdWatch`: `Watch(ctx, model.EtcdBaseKey,
//!   WithPrefix())` (`EtcdBaseKey = "nmid/"`, pkg/model/const.go), and on every response
//!   `c.Workers = c.GetAllWorkerIns(model.EtcdBaseKey)`; `Workers` starts empty, so nothing
//!   is known until the first watch event;
//! - `GetAllWorkerIns(prefix)`: `Get(prefix, WithPrefix())` (`nil` on error); for each key
//!   in etcd's order, `json.Unmarshal(value, &map[string][]string{})` and, if that worked,
//!   `allWorkerIns[key] = val` for each entry: a plain overwrite, the last key naming a
//!   function wins;
//! - `Discovery(funcName)`: `addrs[utils.RandomInt(1, 10000) % len(addrs)]`, where
//!   `RandomInt(min, max)` is `rand.Intn(max-min+1) + min` (pkg/utils/utils.go).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, WatchOptions};

/// The Go consumer's `EtcdBaseKey`.
const BASE_KEY: &str = "nmid/";

/// A running consumer: its `Workers` map and the watch events it got.
#[derive(Clone, Default)]
pub struct GoConsumer {
    workers: Arc<Mutex<HashMap<String, Vec<String>>>>,
    events: Arc<Mutex<Vec<Instant>>>,
}

impl GoConsumer {
    /// Starts watching `nmid/` on the etcd at `url` (a task on the current runtime), as
    /// `EtcdWatch` does; returns once the watch is open.
    pub async fn start(url: &str) -> Self {
        let consumer = Self::default();
        let mut client = etcd_client::Client::connect([url], None)
            .await
            .expect("connect to etcd");
        let options = WatchOptions::new().with_prefix();
        let mut stream = client
            .watch(BASE_KEY, Some(options))
            .await
            .expect("watch nmid/");
        let running = consumer.clone();
        tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                // Go's watch channel carries events only (no "created" notice).
                if response.events().is_empty() {
                    continue;
                }
                running.events.lock().unwrap().push(Instant::now());
                let all = get_all_worker_ins(&mut client).await;
                *running.workers.lock().unwrap() = all;
            }
        });
        consumer
    }

    /// When the watch events came.
    pub fn events(&self) -> Vec<Instant> {
        self.events.lock().unwrap().clone()
    }

    /// `Workers[function]` now (empty when unknown).
    pub fn addrs(&self, function: &str) -> Vec<String> {
        let workers = self.workers.lock().unwrap();
        workers.get(function).cloned().unwrap_or_default()
    }

    /// `Discovery(function)` `n` times: how often each address was picked.
    pub fn picks(&self, function: &str, n: usize, rng: &mut Rng) -> HashMap<String, usize> {
        let mut picked = HashMap::new();
        for _ in 0..n {
            let addrs = self.addrs(function);
            if addrs.is_empty() {
                continue;
            }
            let index = rng.random_int(1, 10000) % addrs.len();
            *picked.entry(addrs[index].clone()).or_default() += 1;
        }
        picked
    }

    /// Waits until `check` holds for `Workers[function]`, at most `limit`; the time taken.
    pub async fn wait_for(
        &self,
        function: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&[String]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let addrs = self.addrs(function);
            if check(&addrs) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; Workers[{function}] = {addrs:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `GetAllWorkerIns(prefix)`, line for line.
async fn get_all_worker_ins(client: &mut etcd_client::Client) -> HashMap<String, Vec<String>> {
    let Ok(resp) = client
        .get(BASE_KEY, Some(GetOptions::new().with_prefix()))
        .await
    else {
        return HashMap::new();
    };
    merge_like_go(resp.kvs().iter().map(|kv| kv.value()))
}

/// The loop of `GetAllWorkerIns`: the values under `nmid/` in key order, each decoded as
/// `map[string][]string` (skipped if it is not one), merged by plain overwrite.
pub fn merge_like_go<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> HashMap<String, Vec<String>> {
    let mut all = HashMap::new();
    for value in values {
        if let Ok(worker_ins) = serde_json::from_slice::<HashMap<String, Vec<String>>>(value) {
            for (key, val) in worker_ins {
                all.insert(key, val);
            }
        }
    }
    all
}

/// A small random source for `RandomInt` (xorshift64*, seeded from the clock).
pub struct Rng(u64);

impl Rng {
    pub fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Self(nanos | 1)
    }

    /// Go's `RandomInt(min, max)`: uniform in `min..=max`.
    pub fn random_int(&mut self, min: usize, max: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        min + (r % (max - min + 1) as u64) as usize
    }
}
