//! A submission's options, as HTTP headers (`X-Nmid-Priority: high`) or tagged metadata
//! (`nmid-priority: high`): the same names after the prefix, read by one parser, checked
//! against `[jobs]`, and turned with the call into the job's record.

use std::time::Duration;

use serde_bytes::ByteBuf;

use super::record::{now_ms, JobRecord, JobState};
use crate::call::{CallSpec, Priority};
use crate::config::JobsConfig;

/// The option names, after `X-Nmid-` (HTTP) or `nmid-` (tagged metadata).
pub const OPTION_NAMES: [&str; 8] = [
    "priority",
    "delay-ms",
    "run-at",
    "max-attempts",
    "backoff-ms",
    "result-ttl-ms",
    "unique-key",
    "callback-url",
];

/// What a submission asks for; `None` takes `[jobs]`'s default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Where it waits (`high`, `normal`, `low`).
    pub priority: Priority,
    /// Not before this many ms from now.
    pub delay_ms: Option<u64>,
    /// Not before this time (unix ms).
    pub run_at_ms: Option<u64>,
    /// Attempts at most.
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt, doubling.
    pub backoff_ms: Option<u64>,
    /// How long its final state is kept.
    pub result_ttl_ms: Option<u64>,
    /// Submissions of the same caller, function and key share one execution.
    pub unique_key: Option<Vec<u8>>,
    /// Where its final state is POSTed.
    pub callback_url: Option<String>,
}

/// Why a submission's options were refused (a 400 naming the option).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {reason}")]
pub struct OptionError {
    /// The option, as the caller spelled its name.
    pub option: String,
    /// Why.
    pub reason: String,
}

impl SubmitOptions {
    /// Reads the options among `pairs` (name without its prefix, value); other names are
    /// not options and are left alone.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, OptionError> {
        let mut options = SubmitOptions::default();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            let fail = |reason: &str| OptionError {
                option: name.clone(),
                reason: reason.to_owned(),
            };
            // Two values (two headers, or X-Callback-Url beside X-Nmid-Callback-Url): which
            // one was meant is not for us to guess.
            if OPTION_NAMES.contains(&name.as_str()) && !seen.insert(name.clone()) {
                return Err(fail("given twice"));
            }
            let text = || std::str::from_utf8(value).map_err(|_| fail("not UTF-8"));
            let number = || {
                let text = text()?;
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| fail("not a whole number"))
            };
            match name.as_str() {
                "priority" => {
                    let text = text()?;
                    options.priority = Priority::parse(text.trim())
                        .ok_or_else(|| fail("must be high, normal or low"))?;
                }
                "delay-ms" => options.delay_ms = Some(number()?),
                "run-at" => options.run_at_ms = Some(run_at(text()?).map_err(|r| fail(&r))?),
                "max-attempts" => {
                    let n = number()?;
                    let n = u32::try_from(n).map_err(|_| fail("too large"))?;
                    options.max_attempts = Some(n);
                }
                "backoff-ms" => options.backoff_ms = Some(number()?),
                "result-ttl-ms" => options.result_ttl_ms = Some(number()?),
                "unique-key" => {
                    if value.is_empty() {
                        return Err(fail("must not be empty"));
                    }
                    options.unique_key = Some(value.to_vec());
                }
                "callback-url" => options.callback_url = Some(text()?.trim().to_owned()),
                _ => {}
            }
        }
        if options.delay_ms.is_some() && options.run_at_ms.is_some() {
            return Err(OptionError {
                option: "delay-ms".into(),
                reason: "give delay-ms or run-at, not both".into(),
            });
        }
        Ok(options)
    }

    /// The job's record: `spec` run with these options, checked against `config`.
    /// `attempt_timeout` is each attempt's deadline.
    pub fn record(
        &self,
        spec: &CallSpec,
        attempt_timeout: Duration,
        config: &JobsConfig,
    ) -> Result<JobRecord, OptionError> {
        let fail = |option: &str, reason: String| OptionError {
            option: option.to_owned(),
            reason,
        };
        let now = now_ms();
        let run_at = match (self.delay_ms, self.run_at_ms) {
            (Some(delay), _) => now.saturating_add(delay),
            (None, Some(at)) => at.max(now),
            (None, None) => now,
        };
        if run_at - now > config.max_delay_ms {
            let why = format!(
                "at most jobs.max_delay_ms ({} ms) ahead",
                config.max_delay_ms
            );
            let option = match self.delay_ms {
                Some(_) => "delay-ms",
                None => "run-at",
            };
            return Err(fail(option, why));
        }
        let max_attempts = self.max_attempts.unwrap_or(config.default_max_attempts);
        if !(1..=config.max_attempts_limit).contains(&max_attempts) {
            let why = format!(
                "must be 1 to jobs.max_attempts_limit ({})",
                config.max_attempts_limit
            );
            return Err(fail("max-attempts", why));
        }
        let result_ttl_ms = self.result_ttl_ms.unwrap_or(config.default_result_ttl_ms);
        if result_ttl_ms > config.max_result_ttl_ms {
            let why = format!(
                "at most jobs.max_result_ttl_ms ({})",
                config.max_result_ttl_ms
            );
            return Err(fail("result-ttl-ms", why));
        }
        if let Some(key) = &self.unique_key {
            if key.len() > config.max_unique_key_bytes {
                let why = format!(
                    "at most jobs.max_unique_key_bytes ({})",
                    config.max_unique_key_bytes
                );
                return Err(fail("unique-key", why));
            }
        }
        let meta = (spec.meta.iter().flat_map(|m| m.iter()))
            .map(|(k, v)| (ByteBuf::from(k.to_vec()), ByteBuf::from(v.to_vec())))
            .collect();
        let caller = (spec.caller.as_ref())
            .and_then(|c| c.to_meta())
            .map(|m| String::from_utf8_lossy(&m).into_owned());
        Ok(JobRecord {
            seq: 0,
            function: ByteBuf::from(spec.function.0.to_vec()),
            params: ByteBuf::from(spec.params.to_vec()),
            params_type: spec.params_type.0,
            handle_type: spec.handle_type,
            meta,
            caller,
            priority: self.priority.into(),
            run_at_ms: run_at,
            attempt_timeout_ms: attempt_timeout.as_millis() as u64,
            max_attempts,
            backoff_ms: self.backoff_ms.unwrap_or(config.default_backoff_ms),
            result_ttl_ms,
            unique: self.unique_key.clone().map(ByteBuf::from),
            callback_url: self.callback_url.clone(),
            created_ms: now,
            state: JobState::Queued,
            attempts: 0,
            progress: None,
            started_ms: None,
            finished_ms: None,
            output: None,
            error_code: None,
            callback: None,
        })
    }
}

/// A run-at time: unix milliseconds, or RFC 3339 is not parsed (no date crate): say so.
fn run_at(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| "must be a time in milliseconds since the Unix epoch".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options read from either spelling; bad values name the option.
    #[test]
    fn options_are_read_and_bad_ones_named() {
        let pairs = [
            ("Priority", &b"HIGH"[..]),
            ("delay-ms", b"1500"),
            ("max-attempts", b"5"),
            ("unique-key", b"order-7"),
            ("traceparent", b"ignored"),
        ];
        let options = SubmitOptions::from_pairs(pairs).unwrap();
        assert_eq!(options.priority, Priority::High);
        assert_eq!(options.delay_ms, Some(1500));
        assert_eq!(options.max_attempts, Some(5));
        assert_eq!(options.unique_key.as_deref(), Some(&b"order-7"[..]));
        for (name, value, option) in [
            ("priority", &b"urgent"[..], "priority"),
            ("delay-ms", b"-1", "delay-ms"),
            ("max-attempts", b"99999999999", "max-attempts"),
            ("unique-key", b"", "unique-key"),
            ("run-at", b"tomorrow", "run-at"),
        ] {
            let error = SubmitOptions::from_pairs([(name, value)]).unwrap_err();
            assert_eq!(error.option, option);
        }
        let both = SubmitOptions::from_pairs([("delay-ms", &b"1"[..]), ("run-at", b"5")]);
        assert!(both.is_err());
        // An option given twice, in any spelling, is refused, naming it.
        let twice = SubmitOptions::from_pairs([("Delay-Ms", &b"600000"[..]), ("delay-ms", b"5")]);
        let error = twice.unwrap_err();
        assert_eq!(
            (error.option.as_str(), error.reason.as_str()),
            ("delay-ms", "given twice")
        );
    }

    /// A call of `F` with empty msgpack params.
    fn spec() -> CallSpec {
        CallSpec::new(
            bytes::Bytes::from_static(b"F"),
            crate::codec::ParamsType::MSGPACK,
            0,
            bytes::Bytes::from_static(b"\x80"),
            Duration::from_secs(1),
        )
    }

    /// A run-at too far ahead is refused as run-at, a delay as delay-ms.
    #[test]
    fn a_time_too_far_ahead_names_the_option_given() {
        let config = crate::config::Config::default().jobs;
        let spec = spec();
        let far = now_ms() + config.max_delay_ms + 60_000;
        let at = SubmitOptions {
            run_at_ms: Some(far),
            ..SubmitOptions::default()
        };
        let error = at
            .record(&spec, Duration::from_secs(1), &config)
            .unwrap_err();
        assert_eq!(error.option, "run-at");
        let delay = SubmitOptions {
            delay_ms: Some(config.max_delay_ms + 1),
            ..SubmitOptions::default()
        };
        let error = delay
            .record(&spec, Duration::from_secs(1), &config)
            .unwrap_err();
        assert_eq!(error.option, "delay-ms");
    }

    /// The record takes the config's defaults and bounds.
    #[test]
    fn records_take_defaults_and_bounds_from_the_config() {
        let config = crate::config::Config::default().jobs;
        let spec = spec();
        let record = SubmitOptions::default()
            .record(&spec, Duration::from_secs(2), &config)
            .unwrap();
        assert_eq!(record.max_attempts, config.default_max_attempts);
        assert_eq!(record.attempt_timeout_ms, 2000);
        let too_many = SubmitOptions {
            max_attempts: Some(config.max_attempts_limit + 1),
            ..Default::default()
        };
        let error = too_many
            .record(&spec, Duration::from_secs(2), &config)
            .unwrap_err();
        assert_eq!(error.option, "max-attempts");
        let too_late = SubmitOptions {
            delay_ms: Some(config.max_delay_ms + 1),
            ..Default::default()
        };
        assert!(too_late
            .record(&spec, Duration::from_secs(2), &config)
            .is_err());
    }
}
