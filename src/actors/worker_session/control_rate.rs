//! The token bucket that paces a worker's control frames
//! (`workers.max_control_frames_per_second`); the worker session holds one.

use std::time::{Duration, Instant};

/// A token bucket for a worker's control frames (`workers.max_control_frames_per_second`).
pub(super) struct ControlRate {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl ControlRate {
    pub(super) fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self {
            per_second,
            tokens: per_second,
            refilled: Instant::now(),
        }
    }

    /// Takes a token; `Some(wait)` when none was left: the wait for the next one.
    pub(super) fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.per_second);
        self.refilled = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_second))
    }
}
