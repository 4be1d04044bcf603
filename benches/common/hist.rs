//! A log-linear latency histogram: exact below 128 ns, then 128 buckets per power of two
//! (under 1% relative error), up to about 18 minutes. Fixed memory, O(1) record.

use std::time::Duration;

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values are capped here (2^40 ns, about 18 minutes).
const MAX_NS: u64 = 1 << 40;
const BUCKETS: usize = ((40 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of latencies by bucket.
#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }
}

impl Hist {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = (latency.as_nanos() as u64).min(MAX_NS - 1);
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The latency at quantile `q` (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return (midpoint(i) as f64 / 1000.0).min(self.max_ns as f64 / 1000.0);
            }
        }
        self.max_ns as f64 / 1000.0
    }
}

fn index(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    // The top bit is at 63 - leading_zeros; keep SUB_BITS bits below it.
    let shift = 63 - ns.leading_zeros() - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((ns >> shift) - SUB)) as usize
}

/// The middle of bucket `i`, in ns.
fn midpoint(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let low = (SUB + i % SUB) << shift;
    low + (1 << shift) / 2
}
