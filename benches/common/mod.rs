//! Building blocks of the `compare` harness (benches/compare.rs): each file is one concern.
//!
//! - `procs`: child processes with kill-and-wait guards, CPU and RSS from /proc, port checks.
//! - `load`: the load-generator role: closed loops for every system, printing
//!   `START` when warm-up ends and `RESULT {json}` when the measured window ends.
//! - `servers`: the server-side roles: our workers, NATS responders, Gearman workers and the
//!   one-hop echo server.
//! - `gearman`: the Gearman binary protocol packets the harness needs.
//! - `frames`: raw tagged frames for the floor (the one file that uses `nmid::codec`).
//! - `report`: medians, the markdown tables and the ratio line.

pub mod frames;
pub mod gearman;
pub mod load;
pub mod procs;
pub mod report;
pub mod servers;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _};

/// The function every system serves: upper-case the payload bytes.
pub const FUNCTION: &str = "Echo";
/// NATS subject and queue group of the echo responders.
pub const NATS_SUBJECT: &str = "echo";
/// The queue group the NATS responders share, so each request reaches one of them.
pub const NATS_QUEUE: &str = "echo-workers";
/// A role process exits by itself after this long, whatever happens to the harness.
pub const ROLE_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The payload of every call: `len` lower-case letters; the answer is the same upper-cased.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `--key value` pairs and bare `--flag`s of a command line (cargo adds `--bench`).
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `args`; a `--key` followed by a value that does not start with `--` takes it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Args::default();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            let Some(key) = arg.strip_prefix("--") else {
                return Err(anyhow!(
                    "unexpected argument {arg:?} (options are --key value)"
                ));
            };
            if let Some((k, v)) = key.split_once('=') {
                parsed.values.insert(k.to_owned(), v.to_owned());
            } else if args.peek().is_some_and(|next| !next.starts_with("--")) {
                let value = args.next().unwrap_or_default();
                parsed.values.insert(key.to_owned(), value);
            } else {
                parsed.flags.push(key.to_owned());
            }
        }
        Ok(parsed)
    }

    /// Whether the bare flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name`, which must be given.
    pub fn required(&self, name: &str) -> anyhow::Result<&str> {
        self.get(name).ok_or_else(|| anyhow!("missing --{name}"))
    }

    /// The value of `--name` parsed, or `default` when absent.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow!("--{name} {v:?}: {e}"))
                .context("bad number"),
        }
    }
}
