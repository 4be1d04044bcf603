//! `[jobs]`: calls' deadlines and retries, and background jobs (their store, bounds and
//! defaults; `docs/jobs.md`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{CallbackSecret, ConfigError};
use crate::jobs::{Fsync, Limits};

/// Jobs one `GET /api/v1/jobs` looks at at most (its `next` goes on from there): a page
/// with a filter that matches little never holds the jobs actor long.
pub const MAX_LIST_SCAN: usize = 10_000;

/// `[jobs]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Default deadline of a call, in milliseconds.
    pub timeout_ms: u64,
    /// Retries on another worker when a job's worker is lost.
    pub retries: u32,
    /// Bytes of one streaming call's partials that may wait to be written to its caller;
    /// past it the call fails `slow_caller`.
    pub max_partial_bytes_buffered: usize,
    /// Where background jobs are stored; empty: in memory only.
    pub data_dir: String,
    /// When the store's commits reach the disk: `always` or `interval`.
    pub fsync: String,
    /// With `fsync = "interval"`: the longest a commit waits to be made durable, in ms.
    pub fsync_interval_ms: u64,
    /// Background jobs stored at most (queued, running, and final ones kept for their TTL).
    pub max_stored_jobs: usize,
    /// Bytes of stored background jobs at most.
    pub max_stored_bytes: usize,
    /// Background jobs of one function running at once.
    pub max_running_per_function: u32,
    /// Wait before a background job that found no worker is tried again, in ms.
    pub no_worker_retry_ms: u64,
    /// The longest such wait, doubling from `no_worker_retry_ms` while no worker comes.
    pub no_worker_retry_max_ms: u64,
    /// Background jobs of one caller (a token, else an address) stored at most.
    pub max_stored_jobs_per_caller: usize,
    /// Bytes of one caller's stored background jobs (results included) at most.
    pub max_stored_bytes_per_caller: usize,
    /// Attempts of a background job that does not say.
    pub default_max_attempts: u32,
    /// Attempts a submission may ask for at most.
    pub max_attempts_limit: u32,
    /// Wait before a failed background job's second attempt (doubling after), in ms.
    pub default_backoff_ms: u64,
    /// How long a final background job is kept when its submission does not say, in ms.
    pub default_result_ttl_ms: u64,
    /// The longest result TTL a submission may ask for, in ms.
    pub max_result_ttl_ms: u64,
    /// The furthest in the future a submission may ask to run, in ms.
    pub max_delay_ms: u64,
    /// Longest unique key, in bytes.
    pub max_unique_key_bytes: usize,
    /// Callers waiting at once for background jobs to end (`?wait_ms=`).
    pub max_waiters: usize,
    /// Jobs in one page of `GET /api/v1/jobs`, at most.
    pub max_list_page: usize,
    /// URL prefixes a background job's callback may go to; empty: none (callbacks refused).
    /// A TOML list, or one comma-separated string (environment variables).
    #[serde(deserialize_with = "super::callbacks::url_list")]
    pub callback_allow: Vec<String>,
    /// The HMAC-SHA256 key callbacks are signed with (16+ bytes when `callback_allow` is
    /// set); never shown by `Debug`.
    pub callback_secret: CallbackSecret,
    /// Time for one callback request, connect to response head, in milliseconds.
    pub callback_timeout_ms: u64,
    /// Callback requests per job at most, the first included.
    pub callback_max_attempts: u32,
    /// Wait before the first retry of a callback, in milliseconds; doubled for each next.
    pub callback_backoff_ms: u64,
    /// Longest wait between two callback attempts, in milliseconds.
    pub callback_backoff_max_ms: u64,
    /// Callback requests in flight at once, over all jobs; further ones wait for a slot.
    pub max_callbacks_in_flight: usize,
    /// Callback requests in flight at once to one receiver (one entry of `callback_allow`,
    /// the one the URL matched); further ones wait for a slot. 1 to
    /// `max_callbacks_in_flight`.
    pub max_callbacks_in_flight_per_receiver: usize,
}

impl JobsConfig {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        }
        if self.timeout_ms == 0 {
            return invalid("jobs.timeout_ms", "must be at least 1");
        }
        if self.timeout_ms > u64::from(u32::MAX) {
            return invalid("jobs.timeout_ms", "must be at most 4294967295");
        }
        if !matches!(self.fsync.as_str(), "always" | "interval") {
            return invalid("jobs.fsync", "must be \"always\" or \"interval\"");
        }
        if !(1..=60_000).contains(&self.fsync_interval_ms) {
            return invalid("jobs.fsync_interval_ms", "must be 1 to 60000");
        }
        let at_least_one = [
            ("jobs.max_stored_jobs", self.max_stored_jobs as u64),
            ("jobs.max_stored_bytes", self.max_stored_bytes as u64),
            (
                "jobs.max_running_per_function",
                self.max_running_per_function.into(),
            ),
            (
                "jobs.default_max_attempts",
                self.default_max_attempts.into(),
            ),
            ("jobs.max_attempts_limit", self.max_attempts_limit.into()),
            ("jobs.default_result_ttl_ms", self.default_result_ttl_ms),
            ("jobs.no_worker_retry_ms", self.no_worker_retry_ms),
            ("jobs.max_list_page", self.max_list_page as u64),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return invalid(key, "must be at least 1");
        }
        if self.no_worker_retry_max_ms < self.no_worker_retry_ms {
            return invalid(
                "jobs.no_worker_retry_max_ms",
                "must be at least jobs.no_worker_retry_ms",
            );
        }
        if self.max_stored_jobs_per_caller == 0 {
            return invalid("jobs.max_stored_jobs_per_caller", "must be at least 1");
        }
        if self.max_stored_bytes_per_caller == 0 {
            return invalid("jobs.max_stored_bytes_per_caller", "must be at least 1");
        }
        if self.default_max_attempts > self.max_attempts_limit {
            return invalid(
                "jobs.default_max_attempts",
                "must be at most jobs.max_attempts_limit",
            );
        }
        if self.default_result_ttl_ms > self.max_result_ttl_ms {
            return invalid(
                "jobs.default_result_ttl_ms",
                "must be at most jobs.max_result_ttl_ms",
            );
        }
        Ok(())
    }

    /// The store's directory; `None`: jobs in memory only.
    pub fn data_dir(&self) -> Option<PathBuf> {
        (!self.data_dir.is_empty()).then(|| PathBuf::from(&self.data_dir))
    }

    /// When commits reach the disk.
    pub fn fsync(&self) -> Fsync {
        match self.fsync.as_str() {
            "interval" => Fsync::Interval(Duration::from_millis(self.fsync_interval_ms)),
            _ => Fsync::Always,
        }
    }

    /// The bounds of the jobs in memory.
    pub fn limits(&self) -> Limits {
        Limits {
            max_jobs: self.max_stored_jobs,
            max_bytes: self.max_stored_bytes,
            window: self.max_running_per_function,
            no_worker_retry_ms: self.no_worker_retry_ms,
            no_worker_retry_max_ms: self.no_worker_retry_max_ms,
            max_jobs_per_caller: self.max_stored_jobs_per_caller,
            max_bytes_per_caller: self.max_stored_bytes_per_caller,
            max_scan: MAX_LIST_SCAN,
        }
    }
}
