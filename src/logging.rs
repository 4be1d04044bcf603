//! What peers can put in the log, kept harmless and small.
//!
//! - [`Escaped`]: a string a peer chose (a function or worker name, a token name, a path)
//!   as it is written into a log line: control characters (a newline that would forge a line
//!   of its own, ESC that would repaint a terminal) and backslashes escaped, invalid UTF-8
//!   as `\xNN`. Every log field of such a string goes through it. It is `nmid_proto`'s
//!   (the libraries' spans escape the function name too), re-exported here.
//! - [`RefusalLog`]: what a peer can make happen as often as it likes (a refused connection,
//!   a malformed frame, a read that failed, a result for a job no one holds, a registration
//!   outside a grant, an HTTP connection that ended in a protocol error) is logged once per
//!   kind and window, then as a count (`log.refusal_summary_interval_ms`): a flood writes a
//!   line every few seconds, not one each. The metrics count every refusal exactly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use tracing::warn;

pub use nmid_proto::escape::Escaped;

/// Refusals of each kind in the current window: the first is logged in full, the rest
/// counted and summarised once the window is over.
#[derive(Debug)]
pub struct RefusalLog {
    window: Duration,
    kinds: Mutex<HashMap<&'static str, Window>>,
}

/// One kind's current window.
#[derive(Debug)]
struct Window {
    began: Instant,
    /// Refusals not logged in full since it began.
    unlogged: u64,
}

impl RefusalLog {
    /// Windows of `window` (`log.refusal_summary_interval_ms`).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this refusal of `kind` is to be logged in full: the first of its window.
    /// The others are only counted (a window that is over is summarised first).
    pub fn first(&self, kind: &'static str) -> bool {
        let now = Instant::now();
        let fresh = Window {
            began: now,
            unlogged: 0,
        };
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let Some(window) = kinds.get_mut(kind) else {
            kinds.insert(kind, fresh);
            return true;
        };
        if now.duration_since(window.began) < self.window {
            window.unlogged += 1;
            return false;
        }
        summarise(kind, window, now);
        *window = fresh;
        true
    }

    /// Summarises every window that is over, and forgets it: called every window by the
    /// dispatcher, so that the count of a flood that stopped is still logged.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.retain(|kind, window| {
            if now.duration_since(window.began) < self.window {
                return true;
            }
            summarise(kind, window, now);
            false
        });
    }

    /// Flushes every window, forever (the dispatcher aborts the task at shutdown).
    pub async fn flush_every_window(self: std::sync::Arc<Self>) {
        let mut ticks = tokio::time::interval(self.window);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.flush();
        }
    }
}

fn summarise(kind: &str, window: &Window, now: Instant) {
    if window.unlogged > 0 {
        let seconds = now.duration_since(window.began).as_secs_f64();
        warn!(
            kind,
            more = window.unlogged,
            seconds = format_args!("{seconds:.1}"),
            "more of the same kind, not logged one by one (once per window: log.refusal_summary_interval_ms)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first refusal of a kind is logged, the rest of its window only counted; a new
    /// window logs again; kinds are apart.
    #[test]
    fn refusals_are_logged_once_per_window_and_kind() {
        let log = RefusalLog::new(Duration::from_millis(50));
        assert!(log.first("address"));
        assert!((0..100).all(|_| !log.first("address")));
        assert!(log.first("tls"), "another kind");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log.first("address") {
            assert!(Instant::now() < deadline, "the window never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        log.flush();
    }
}
