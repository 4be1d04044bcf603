//! `[rate_limit]` and `[breaker]`: their keys, checks and the settings they make.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};

/// `[rate_limit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls a second one client (peer IP) may make; 0: no per-client limit.
    pub per_client_per_second: u32,
    /// Calls a client may make at once above that rate; 0: `per_client_per_second`.
    pub per_client_burst: u32,
    /// Client buckets kept at most; past it further clients share one.
    pub max_clients: usize,
    /// How often the buckets of idle clients are dropped, in milliseconds.
    pub cleanup_interval_ms: u64,
    /// Per-function limits (`[[rate_limit.function]]`).
    #[serde(rename = "function")]
    pub functions: Vec<FunctionRateLimitConfig>,
}

/// `[[rate_limit.function]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionRateLimitConfig {
    /// The function's name.
    pub name: String,
    /// Calls a second, all callers together.
    pub per_second: u32,
    /// Calls at once above that rate; 0 (or absent): `per_second`.
    #[serde(default)]
    pub burst: u32,
}

/// `[breaker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Keep a breaker per worker and function.
    pub enabled: bool,
    /// nmid's rule type: 1 consecutive errors, 2 error percentage, 3 either, 4 both.
    pub rule: u8,
    /// Failures in a row that open a breaker (rules 1, 3, 4).
    pub consecutive_errors: u32,
    /// Failures, in percent of the window's calls, that open a breaker (rules 2, 3, 4).
    pub error_percent: u32,
    /// Calls the window must hold before the percentage counts.
    pub min_requests: u32,
    /// The sliding window of the percentage, in milliseconds.
    pub window_ms: u64,
    /// Trial calls of a half-open breaker; that many successes close it.
    pub half_open_requests: u32,
    /// How long a breaker stays open before trial calls, in milliseconds.
    pub open_timeout_ms: u64,
}

/// The highest rate a limit may have, calls a second: governor counts time in nanoseconds,
/// so a faster rate would replenish a token every 0 ns.
const MAX_RATE_PER_SECOND: u32 = 1_000_000_000;

/// The longest `breaker.window_ms` and `breaker.open_timeout_ms`: a day.
const MAX_BREAKER_MS: u64 = 86_400_000;

impl Config {
    /// The `[rate_limit]` checks.
    pub(super) fn validate_rate_limit(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: String) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, reason })
        }
        let limits = &self.rate_limit;
        if limits.per_client_per_second == 0 && limits.per_client_burst > 0 {
            return invalid(
                "rate_limit.per_client_burst",
                "is set but rate_limit.per_client_per_second is 0 (no per-client limit)".into(),
            );
        }
        if limits.per_client_per_second > MAX_RATE_PER_SECOND {
            return invalid(
                "rate_limit.per_client_per_second",
                format!("must be at most {MAX_RATE_PER_SECOND}"),
            );
        }
        if limits.max_clients == 0 {
            return invalid("rate_limit.max_clients", "must be at least 1".into());
        }
        if !(100..=3_600_000).contains(&limits.cleanup_interval_ms) {
            return invalid(
                "rate_limit.cleanup_interval_ms",
                "must be 100 to 3600000".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, limit) in limits.functions.iter().enumerate() {
            let which = match limit.name.is_empty() {
                true => format!("entry {}", i + 1),
                false => format!("{:?}", limit.name),
            };
            if limit.name.is_empty() {
                return invalid(
                    "rate_limit.function.name",
                    format!("{which}: must be a function name"),
                );
            }
            if limit.name.len() > self.workers.max_function_name_bytes {
                return invalid(
                    "rate_limit.function.name",
                    format!("{which}: longer than workers.max_function_name_bytes"),
                );
            }
            if !seen.insert(limit.name.as_str()) {
                return invalid(
                    "rate_limit.function.name",
                    format!("{which}: limited twice; give each function one limit"),
                );
            }
            if !(1..=MAX_RATE_PER_SECOND).contains(&limit.per_second) {
                return invalid(
                    "rate_limit.function.per_second",
                    format!("{which}: must be 1 to {MAX_RATE_PER_SECOND}"),
                );
            }
        }
        Ok(())
    }

    /// The `[breaker]` checks (made whether or not breakers are enabled, so that a file
    /// that turns them on later is already known to be good).
    pub(super) fn validate_breaker(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        }
        let breaker = &self.breaker;
        if crate::breaker::Rule::from_number(breaker.rule).is_none() {
            return invalid(
                "breaker.rule",
                "must be 1 (consecutive errors), 2 (error percentage), 3 (either) or 4 (both)",
            );
        }
        if breaker.consecutive_errors == 0 {
            return invalid("breaker.consecutive_errors", "must be at least 1");
        }
        if !(1..=100).contains(&breaker.error_percent) {
            return invalid("breaker.error_percent", "must be 1 to 100");
        }
        if breaker.min_requests == 0 {
            return invalid("breaker.min_requests", "must be at least 1");
        }
        if !(100..=MAX_BREAKER_MS).contains(&breaker.window_ms) {
            return invalid("breaker.window_ms", "must be 100 to 86400000");
        }
        if breaker.half_open_requests == 0 {
            return invalid("breaker.half_open_requests", "must be at least 1");
        }
        if !(1..=MAX_BREAKER_MS).contains(&breaker.open_timeout_ms) {
            return invalid("breaker.open_timeout_ms", "must be 1 to 86400000");
        }
        Ok(())
    }

    /// The rate limits as configured (no limit at all unless some are set).
    pub fn rate_limit_settings(&self) -> crate::rate_limit::RateLimitSettings {
        use std::num::NonZeroU32;
        let limits = &self.rate_limit;
        let nonzero = |n: u32, or: u32| NonZeroU32::new(n).or(NonZeroU32::new(or));
        let functions = (limits.functions.iter())
            .filter_map(|f| {
                Some(crate::rate_limit::FunctionLimit {
                    name: f.name.clone(),
                    per_second: NonZeroU32::new(f.per_second)?,
                    burst: nonzero(f.burst, f.per_second)?,
                })
            })
            .collect();
        let per_client = NonZeroU32::new(limits.per_client_per_second).map(|per_second| {
            let burst = NonZeroU32::new(limits.per_client_burst).unwrap_or(per_second);
            (per_second, burst)
        });
        crate::rate_limit::RateLimitSettings {
            functions,
            per_client,
            max_clients: limits.max_clients,
            cleanup_interval: Duration::from_millis(limits.cleanup_interval_ms),
        }
    }

    /// The breakers' settings, when `breaker.enabled`.
    pub fn breaker_settings(&self) -> Option<crate::breaker::BreakerSettings> {
        let breaker = &self.breaker;
        if !breaker.enabled {
            return None;
        }
        Some(crate::breaker::BreakerSettings {
            rule: crate::breaker::Rule::from_number(breaker.rule)?,
            consecutive_errors: breaker.consecutive_errors,
            error_percent: breaker.error_percent,
            min_requests: breaker.min_requests,
            window: Duration::from_millis(breaker.window_ms),
            half_open_requests: breaker.half_open_requests,
            open_timeout: Duration::from_millis(breaker.open_timeout_ms),
        })
    }
}
