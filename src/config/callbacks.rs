//! The callback keys of `[jobs]` (`callback_*`, `max_callbacks_in_flight*`): the secret's
//! type, which `Debug` never shows, and the checks of those keys together. The allow list's
//! entries are parsed here with the same code that later matches URLs against them
//! (`jobs::callback`), so a list that loads is a list that works.

use std::fmt;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::jobs::callback::allow::AllowedPrefix;

/// Shortest callback secret accepted, in bytes (as `[auth]` tokens): shorter ones are
/// guessable.
pub const MIN_CALLBACK_SECRET_BYTES: usize = 16;

/// `jobs.callback_secret`: the HMAC key callbacks are signed with. `Debug` prints
/// `<secret>` (or `""` when unset), so a logged or printed config never holds it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CallbackSecret(String);

impl CallbackSecret {
    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// No secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for CallbackSecret {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

impl From<String> for CallbackSecret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("\"\""),
            false => f.write_str("<secret>"),
        }
    }
}

/// `jobs.callback_allow`: a TOML list, or one comma-separated string (as an environment
/// variable gives it, `NMID__JOBS__CALLBACK_ALLOW`); entries trimmed, blank ones dropped.
pub(super) fn url_list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        List(Vec<String>),
        Text(String),
    }
    let urls = match Urls::deserialize(de)? {
        Urls::List(list) => list,
        Urls::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok((urls.into_iter())
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect())
}

impl Config {
    /// The callback keys of `[jobs]`: every allow-list entry a valid http prefix, a secret
    /// when the list is set, limits at least 1.
    pub(super) fn validate_callbacks(&self) -> Result<(), ConfigError> {
        let jobs = &self.jobs;
        for entry in &jobs.callback_allow {
            AllowedPrefix::parse(entry).map_err(|why| ConfigError::Invalid {
                key: "jobs.callback_allow",
                reason: format!("{entry:?}: {why}"),
            })?;
        }
        if !jobs.callback_allow.is_empty()
            && jobs.callback_secret.expose().len() < MIN_CALLBACK_SECRET_BYTES
        {
            return Err(ConfigError::Invalid {
                key: "jobs.callback_secret",
                reason: format!(
                    "must be {MIN_CALLBACK_SECRET_BYTES} bytes or more when jobs.callback_allow \
                     is set: callbacks are signed with it (make one with `openssl rand -hex 32`)"
                ),
            });
        }
        // NMID__* variables are parsed as numbers when they read as one: an all-digit secret
        // given so has lost digits by now (`12345678901234567890123` is
        // `12345678901234568000000`). Refused, whichever way it came.
        if jobs.callback_secret.expose().parse::<f64>().is_ok() {
            return Err(ConfigError::Invalid {
                key: "jobs.callback_secret",
                reason: "reads as a number, which an environment variable's value is parsed as                          (losing digits): use one with letters (`openssl rand -hex 32`)"
                    .into(),
            });
        }
        for (key, value) in [
            ("jobs.callback_timeout_ms", jobs.callback_timeout_ms),
            (
                "jobs.callback_max_attempts",
                u64::from(jobs.callback_max_attempts),
            ),
            ("jobs.callback_backoff_ms", jobs.callback_backoff_ms),
            (
                "jobs.max_callbacks_in_flight",
                jobs.max_callbacks_in_flight as u64,
            ),
            (
                "jobs.max_callbacks_in_flight_per_receiver",
                jobs.max_callbacks_in_flight_per_receiver as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if jobs.callback_backoff_max_ms < jobs.callback_backoff_ms {
            return Err(ConfigError::Invalid {
                key: "jobs.callback_backoff_max_ms",
                reason: "must be at least jobs.callback_backoff_ms".into(),
            });
        }
        if jobs.max_callbacks_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::Invalid {
                key: "jobs.max_callbacks_in_flight",
                reason: format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            });
        }
        if jobs.max_callbacks_in_flight_per_receiver > jobs.max_callbacks_in_flight {
            return Err(ConfigError::Invalid {
                key: "jobs.max_callbacks_in_flight_per_receiver",
                reason: "must be at most jobs.max_callbacks_in_flight".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let owned: Vec<(&str, String)> = (overrides.iter())
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        Config::build(None, false, &owned)
    }

    fn bad_key(overrides: &[(&str, &str)]) -> (&'static str, String) {
        match with(overrides) {
            Err(ConfigError::Invalid { key, reason }) => (key, reason),
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    /// The defaults load: no callbacks allowed, so no secret needed.
    #[test]
    fn the_defaults_allow_no_callback_and_need_no_secret() {
        let config = Config::default();
        assert!(config.jobs.callback_allow.is_empty());
        assert!(config.jobs.callback_secret.is_empty());
        assert_eq!(config.jobs.callback_max_attempts, 5);
    }

    /// A bad allow-list entry is refused at load, naming the key and the entry.
    #[test]
    fn a_bad_allow_entry_is_a_config_error_naming_the_key() {
        let secret = ("jobs.callback_secret", "0123456789abcdef0123");
        for entry in [
            "ftp://h/x",
            "https://h/x",
            "http://u:p@h/x",
            "http://h/x#f",
            "http://h/x?q=1",
            "not a url",
        ] {
            let toml_list = format!("[\"{entry}\"]");
            let text = format!(
                "[jobs]\ncallback_allow = {toml_list}\ncallback_secret = \"{}\"\n",
                secret.1
            );
            match Config::from_toml(&text) {
                Err(ConfigError::Invalid { key, reason }) => {
                    assert_eq!(key, "jobs.callback_allow", "{entry}");
                    assert!(reason.contains(entry), "{entry}: {reason}");
                }
                other => panic!("{entry}: {other:?}"),
            }
        }
    }

    /// An allow list without a secret of 16 bytes is refused; the secret is never in the
    /// message, nor in the config's `Debug`.
    #[test]
    fn an_allow_list_needs_a_secret_that_debug_never_shows() {
        let text = "[jobs]\ncallback_allow = [\"http://127.0.0.1:9000/hooks/\"]\n";
        match Config::from_toml(text) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "jobs.callback_secret"),
            other => panic!("{other:?}"),
        }
        let short = format!("{text}callback_secret = \"short-secret\"\n");
        match Config::from_toml(&short) {
            Err(ConfigError::Invalid { key, reason }) => {
                assert_eq!(key, "jobs.callback_secret");
                assert!(!reason.contains("short-secret"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let good = format!("{text}callback_secret = \"a-secret-of-enough-bytes\"\n");
        let config = Config::from_toml(&good).expect("loads");
        assert_eq!(
            config.jobs.callback_secret.expose(),
            "a-secret-of-enough-bytes"
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("a-secret-of-enough-bytes"), "{shown}");
        assert!(shown.contains("<secret>"), "{shown}");
    }

    /// The allow list may be one comma-separated string, as an environment variable gives it.
    #[test]
    fn the_allow_list_may_be_a_comma_separated_string() {
        let text = "[jobs]\ncallback_allow = \" http://a.example/x/ , http://b.example:81/,\"\n\
                    callback_secret = \"0123456789abcdef\"\n";
        let config = Config::from_toml(text).expect("loads");
        assert_eq!(
            config.jobs.callback_allow,
            ["http://a.example/x/", "http://b.example:81/"]
        );
    }

    /// A secret that reads as a number is refused: from the environment it has lost digits.
    #[test]
    fn a_secret_that_reads_as_a_number_is_refused() {
        let (key, reason) = bad_key(&[
            ("jobs.callback_allow", "http://127.0.0.1:9000/"),
            ("jobs.callback_secret", "12345678901234567890123"),
        ]);
        assert_eq!(key, "jobs.callback_secret");
        assert!(!reason.contains("1234567890"), "{reason}");
    }

    /// Zero limits and a backoff ceiling under the first wait are refused.
    #[test]
    fn callback_limits_are_checked() {
        for key in [
            "jobs.callback_timeout_ms",
            "jobs.callback_max_attempts",
            "jobs.callback_backoff_ms",
            "jobs.max_callbacks_in_flight",
            "jobs.max_callbacks_in_flight_per_receiver",
        ] {
            assert_eq!(bad_key(&[(key, "0")]).0, key);
        }
        let (key, reason) = bad_key(&[
            ("jobs.max_callbacks_in_flight", "4"),
            ("jobs.max_callbacks_in_flight_per_receiver", "5"),
        ]);
        assert_eq!(key, "jobs.max_callbacks_in_flight_per_receiver");
        assert!(reason.contains("jobs.max_callbacks_in_flight"), "{reason}");
        assert!(with(&[
            ("jobs.max_callbacks_in_flight", "4"),
            ("jobs.max_callbacks_in_flight_per_receiver", "4")
        ])
        .is_ok());
        assert_eq!(
            Config::default().jobs.max_callbacks_in_flight_per_receiver,
            8
        );
        let (key, _) = bad_key(&[
            ("jobs.callback_backoff_ms", "5000"),
            ("jobs.callback_backoff_max_ms", "1000"),
        ]);
        assert_eq!(key, "jobs.callback_backoff_max_ms");
    }
}
