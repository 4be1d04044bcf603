//! Rate limits (`[rate_limit]`, nmid's limiter): calls per second per function and per
//! client, checked by the front ends (client sessions, HTTP) before a call becomes a job.
//! A refused call is answered at once: v1 `RATELIMIT`, tagged `rate_limited`, HTTP 429 with
//! `Retry-After`.
//!
//! Both kinds are token buckets (GCRA) of the `governor` crate: a limit of `per_second` with
//! a `burst` admits `burst` calls at once and then `per_second` a second, so over `T` seconds
//! a client or function that keeps calling gets about `burst + per_second * T` calls through.
//!
//! - A function's limit is one bucket shared by every caller of that function.
//! - The per-client limit is one bucket per [`ClientKey`], in a keyed state that is kept
//!   bounded: [`RateLimits::tidy`] (every `rate_limit.cleanup_interval_ms`) drops the buckets
//!   that are full again (their clients called less than the limit lately), and past
//!   `rate_limit.max_clients` buckets the further clients share one
//!   ([`ClientKey::Overflow`]) instead of each getting its own.
//!
//! A call is checked against its client's bucket first, then its function's: a client
//! refused for its own rate takes nothing from the function's, so one client's excess
//! cannot use up what a function admits for everyone.
//!
//! Nothing is built when nothing is configured: the front ends hold an `Option` of this, and
//! with no limit set their only cost is that `None` check.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

pub use crate::call::ClientKey;
use crate::call::FunctionName;

/// Which limit refused a call (`scope` label of `nmid_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The function's limit (`[[rate_limit.function]]`).
    Function,
    /// The client's limit (`rate_limit.per_client_per_second`).
    Client,
}

impl Scope {
    /// The `scope` label: `function` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Function => "function",
            Scope::Client => "client",
        }
    }
}

/// Why a call was refused, and when the limit that refused it admits a call again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused it.
    pub scope: Scope,
    /// How long until that limit admits a call again (governor's wait time).
    pub retry_after: Duration,
}

impl Refusal {
    /// [`Refusal::retry_after`] in whole seconds, rounded up, at least 1: HTTP's
    /// `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = match self.scope {
            Scope::Function => "the function's rate limit (rate_limit.function)",
            Scope::Client => "this client's rate limit (rate_limit.per_client_per_second)",
        };
        let ms = self.retry_after.as_millis().max(1);
        write!(f, "rate limited: over {limit}; retry in {ms} ms")
    }
}

/// One function's limit (`[[rate_limit.function]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLimit {
    /// The function.
    pub name: String,
    /// Calls a second.
    pub per_second: NonZeroU32,
    /// Calls at once above that rate.
    pub burst: NonZeroU32,
}

/// The limits as configured (`[rate_limit]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Per-function limits.
    pub functions: Vec<FunctionLimit>,
    /// The per-client limit: calls a second and burst; `None`: no per-client limit.
    pub per_client: Option<(NonZeroU32, NonZeroU32)>,
    /// Client buckets kept at most (`rate_limit.max_clients`).
    pub max_clients: usize,
    /// How often buckets of idle clients are dropped (`rate_limit.cleanup_interval_ms`).
    pub cleanup_interval: Duration,
}

impl RateLimitSettings {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        !self.functions.is_empty() || self.per_client.is_some()
    }
}

type FunctionLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type ClientLimiter = RateLimiter<ClientKey, CappedClients, DefaultClock>;

/// The configured limits, shared by every front end.
#[derive(Debug)]
pub struct RateLimits {
    /// By function name; looked up by the name a caller sent (never inserted).
    functions: HashMap<FunctionName, FunctionLimiter>,
    clients: Option<ClientLimiter>,
    clock: DefaultClock,
}

impl RateLimits {
    /// The limiters of `settings`; `None` when no limit is set (nothing to check).
    pub fn new(settings: &RateLimitSettings) -> Option<Arc<Self>> {
        if !settings.any() {
            return None;
        }
        let clock = DefaultClock::default();
        let quota = |per_second, burst| Quota::per_second(per_second).allow_burst(burst);
        let mut functions = HashMap::new();
        for limit in &settings.functions {
            let limiter =
                RateLimiter::direct_with_clock(quota(limit.per_second, limit.burst), clock.clone());
            functions.insert(FunctionName::from(limit.name.as_str()), limiter);
        }
        let clients = settings.per_client.map(|(per_second, burst)| {
            let store = CappedClients {
                buckets: HashMapStateStore::default(),
                max: settings.max_clients,
            };
            RateLimiter::new(quota(per_second, burst), store, clock.clone())
        });
        Some(Arc::new(Self {
            functions,
            clients,
            clock,
        }))
    }

    /// Takes a token for a call of `function` by `client`: `Ok` if both its client's and its
    /// function's limits admit it, else which one refused it and for how long.
    pub fn check(&self, function: &FunctionName, client: &ClientKey) -> Result<(), Refusal> {
        let refusal = |scope, not_until: governor::NotUntil<_>| Refusal {
            scope,
            retry_after: not_until.wait_time_from(self.clock.now()),
        };
        if let Some(clients) = &self.clients {
            clients
                .check_key(client)
                .map_err(|n| refusal(Scope::Client, n))?;
        }
        if let Some(limiter) = self.functions.get(function) {
            limiter.check().map_err(|n| refusal(Scope::Function, n))?;
        }
        Ok(())
    }

    /// Whether `function` has a limit of its own (its name is configured, so it may label
    /// metrics even before a worker serves it).
    pub fn limits_function(&self, function: &FunctionName) -> bool {
        self.functions.contains_key(function)
    }

    /// Drops the buckets of clients that are full again (indistinguishable from a new
    /// client's) and gives their memory back; returns the client buckets left.
    pub fn tidy(&self) -> usize {
        let Some(clients) = &self.clients else {
            return 0;
        };
        clients.retain_recent();
        clients.shrink_to_fit();
        clients.len()
    }

    /// Client buckets held now.
    pub fn tracked_clients(&self) -> usize {
        self.clients.as_ref().map_or(0, |c| c.len())
    }
}

/// Tidies `limits` every `interval`, forever (the server aborts the task at shutdown), and
/// reports the client buckets left to `tracked` (the `nmid_rate_limit_clients` gauge).
pub async fn tidy_every(
    limits: Arc<RateLimits>,
    interval: Duration,
    tracked: impl Fn(usize) + Send + 'static,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        tracked(limits.tidy());
    }
}

/// The per-client buckets: governor's `HashMap` state under a cap. Past `max` buckets, a
/// client without one of its own is counted in the [`ClientKey::Overflow`] bucket, so that
/// a flood of new addresses costs one bucket, not one each (clients that already have a
/// bucket keep it).
#[derive(Debug)]
pub struct CappedClients {
    buckets: HashMapStateStore<ClientKey>,
    max: usize,
}

impl StateStore for CappedClients {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let own = {
            let buckets = self.buckets.lock();
            buckets.len() < self.max || buckets.contains_key(key)
        };
        let key = if own { key } else { &ClientKey::Overflow };
        self.buckets.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for CappedClients {
    fn retain_recent(&self, drop_below: Nanos) {
        self.buckets.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.buckets.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.buckets.len()
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            functions: Vec::new(),
            per_client: None,
            max_clients: 100,
            cleanup_interval: Duration::from_secs(10),
        }
    }

    fn ip(last: u8) -> ClientKey {
        ClientKey::Ip(std::net::IpAddr::from([10, 0, 0, last]))
    }

    /// Nothing configured: no limiter at all, so the front ends check nothing.
    #[test]
    fn no_limits_build_nothing() {
        assert!(RateLimits::new(&settings()).is_none());
    }

    /// A function's limit admits its burst at once, then refuses with the wait until the
    /// next token; other functions are not limited.
    #[test]
    fn a_function_limit_admits_its_burst_then_refuses_with_the_wait() {
        let mut s = settings();
        s.functions.push(FunctionLimit {
            name: "F".to_owned(),
            per_second: nz(10),
            burst: nz(3),
        });
        let limits = RateLimits::new(&s).unwrap();
        let f = FunctionName::from("F");
        for _ in 0..3 {
            assert_eq!(limits.check(&f, &ip(1)), Ok(()));
        }
        let refused = limits.check(&f, &ip(2)).unwrap_err();
        assert_eq!(refused.scope, Scope::Function);
        assert!(
            refused.retry_after <= Duration::from_millis(100),
            "{refused:?}"
        );
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(limits.limits_function(&f));
        let g = FunctionName::from("G");
        assert!(!limits.limits_function(&g));
        for _ in 0..100 {
            assert_eq!(limits.check(&g, &ip(1)), Ok(()));
        }
    }

    /// Each client has its own bucket; a client refused for its own rate takes nothing
    /// from the function's limit.
    #[test]
    fn clients_have_buckets_of_their_own_checked_before_the_function() {
        let mut s = settings();
        s.per_client = Some((nz(1), nz(2)));
        s.functions.push(FunctionLimit {
            name: "F".to_owned(),
            per_second: nz(1),
            burst: nz(4),
        });
        let limits = RateLimits::new(&s).unwrap();
        let f = FunctionName::from("F");
        assert!(limits.check(&f, &ip(1)).is_ok());
        assert!(limits.check(&f, &ip(1)).is_ok());
        for _ in 0..10 {
            let refused = limits.check(&f, &ip(1)).unwrap_err();
            assert_eq!(refused.scope, Scope::Client);
        }
        // The function has 2 of its 4 left, for another client.
        assert!(limits.check(&f, &ip(2)).is_ok());
        assert!(limits.check(&f, &ip(2)).is_ok());
        assert_eq!(limits.check(&f, &ip(3)).unwrap_err().scope, Scope::Function);
        assert_eq!(limits.tracked_clients(), 3);
    }

    /// Past `max_clients` buckets, new clients share the overflow bucket, while clients
    /// with a bucket keep theirs; tidying drops the buckets that are full again.
    #[test]
    fn client_buckets_are_capped_and_tidied() {
        let mut s = settings();
        s.per_client = Some((nz(1000), nz(1)));
        s.max_clients = 3;
        let limits = RateLimits::new(&s).unwrap();
        let f = FunctionName::from("F");
        for last in 1..=3 {
            assert!(limits.check(&f, &ip(last)).is_ok());
        }
        // Clients 4 and 5 share one bucket of burst 1: the second is refused at once.
        assert!(limits.check(&f, &ip(4)).is_ok());
        assert_eq!(limits.check(&f, &ip(5)).unwrap_err().scope, Scope::Client);
        assert_eq!(
            limits.tracked_clients(),
            4,
            "3 clients and the overflow bucket"
        );
        // A millisecond refills every bucket (1000/s, burst 1): all are dropped.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(limits.tidy(), 0);
        assert!(
            limits.check(&f, &ip(5)).is_ok(),
            "a bucket of its own again"
        );
        assert_eq!(limits.tracked_clients(), 1);
    }

    /// `Retry-After` rounds the wait up to whole seconds, at least 1.
    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let at = |ms| Refusal {
            scope: Scope::Function,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(at(0).retry_after_secs(), 1);
        assert_eq!(at(1).retry_after_secs(), 1);
        assert_eq!(at(1000).retry_after_secs(), 1);
        assert_eq!(at(1001).retry_after_secs(), 2);
        assert_eq!(at(2500).retry_after_secs(), 3);
        assert!(at(250).to_string().contains("retry in 250 ms"));
    }
}
