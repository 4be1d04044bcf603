//! `nmidctl`, the command-line tool: call functions, inspect a dispatcher, watch it live,
//! load it, check its health. The binary (`src/bin/nmidctl.rs`) parses [`Cli`] and calls
//! [`run`]; every failure is a [`CtlError`] whose kind is the exit status:
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | success (`health`: the dispatcher is ready) |
//! | 1 | the function failed (RetStruct `Code` not 0, or a worker error); `health`: not ready or unreachable |
//! | 2 | usage: bad flags or arguments, params that are not JSON, an unreadable file |
//! | 3 | the dispatcher cannot be reached, or the connection was lost |
//! | 4 | no worker serves the function (or no worker ever did) |
//! | 5 | the call timed out |
//! | 6 | refused: rate limited, circuit breaker open, the dispatcher is shutting down, or its job store is full |
//! | 7 | the worker was lost while running the call |
//! | 8 | an unexpected answer (protocol error, HTTP error status, malformed JSON) |
//! | 9 | not available: the dispatcher has no such API (e.g. `cluster` against an older dispatcher) |
//! | 10 | denied: the token was refused or missing, or its grant does not cover the request |
//! | 11 | no such background job (or, with `[auth]` on, another token's) |
//! | 12 | the background job cannot be cancelled: it is running or over |

mod admin;
mod bench;
mod call;
mod cli;
mod jobs;
mod table;
mod top;

use std::time::Duration;

pub use cli::{Cli, Command};

use crate::client::ClientError;

/// Why a command failed; [`CtlError::exit_code`] is the process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments or input.
    #[error("{0}")]
    Usage(String),
    /// The function reported a failure.
    #[error("function failed with code {code}: {message}")]
    Function {
        /// The RetStruct `Code`.
        code: i64,
        /// The RetStruct `Msg`.
        message: String,
    },
    /// A worker reported its function failed.
    #[error("worker error: {0}")]
    Worker(String),
    /// The dispatcher is not ready (`health`).
    #[error("not ready: {0}")]
    NotReady(String),
    /// The dispatcher cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// No worker serves the function.
    #[error("no worker serves {0}")]
    NoWorker(String),
    /// The call's deadline passed.
    #[error("timed out")]
    Timeout,
    /// Refused for load or shutdown.
    #[error("refused: {0}")]
    Refused(String),
    /// The worker was lost mid-call.
    #[error("the worker was lost while running the call")]
    WorkerLost,
    /// An answer that makes no sense.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The dispatcher lacks the API.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// The token was refused, or its grant does not cover the request.
    #[error("{0}")]
    Denied(String),
    /// No such background job (or not the caller's).
    #[error("{0}")]
    NoSuchJob(String),
    /// The background job is running or over.
    #[error("{0}")]
    NotCancellable(String),
}

impl CtlError {
    /// The exit status of this kind of failure (see the module's table).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Function { .. } | CtlError::Worker(_) | CtlError::NotReady(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable(_) => 3,
            CtlError::NoWorker(_) => 4,
            CtlError::Timeout => 5,
            CtlError::Refused(_) => 6,
            CtlError::WorkerLost => 7,
            CtlError::Protocol(_) => 8,
            CtlError::NotAvailable(_) => 9,
            CtlError::Denied(_) => 10,
            CtlError::NoSuchJob(_) => 11,
            CtlError::NotCancellable(_) => 12,
        }
    }

    /// The error of a failed call of `function`.
    pub fn of_call(function: &str, err: ClientError) -> Self {
        match err {
            ClientError::Connect { .. }
            | ClientError::ConnectionLost
            | ClientError::NoDispatcher => CtlError::Unreachable(err.to_string()),
            ClientError::NoWorker => CtlError::NoWorker(function.to_owned()),
            ClientError::RateLimited
            | ClientError::BreakerOpen
            | ClientError::ShuttingDown
            | ClientError::SlowCaller(_)
            | ClientError::StoreFull(_) => CtlError::Refused(err.to_string()),
            ClientError::JobNotFound(_) => CtlError::NoSuchJob(err.to_string()),
            ClientError::NotCancellable(_) => CtlError::NotCancellable(err.to_string()),
            ClientError::Unsupported(_) => CtlError::NotAvailable(err.to_string()),
            ClientError::Timeout => CtlError::Timeout,
            ClientError::WorkerLost => CtlError::WorkerLost,
            ClientError::BadRequest(message) => CtlError::Usage(format!("bad request: {message}")),
            ClientError::WorkerError(message) => CtlError::Worker(message),
            ClientError::Function { code, message } => CtlError::Function { code, message },
            ClientError::Failed => CtlError::Worker("the call failed (v1 ERROR)".to_owned()),
            ClientError::Encode(message) => CtlError::Usage(message),
            ClientError::TooLarge(_) => CtlError::Usage(err.to_string()),
            ClientError::Unauthorized(_) | ClientError::Forbidden(_) => {
                CtlError::Denied(err.to_string())
            }
            ClientError::Other { .. } | ClientError::Decode(_) | ClientError::Protocol(_) => {
                CtlError::Protocol(err.to_string())
            }
        }
    }
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<(), CtlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start: {e}")))?;
    runtime.block_on(async move {
        match &cli.command {
            Command::Call(args) => call::call(&cli, args).await,
            Command::Submit(args) => jobs::submit(&cli, args).await,
            Command::Jobs(args) => jobs::jobs(&cli, args).await,
            Command::Functions(args) => admin::functions(&cli, args).await,
            Command::Workers(args) => admin::workers(&cli, args).await,
            Command::Stats(args) => admin::stats(&cli, args).await,
            Command::Cluster(args) => admin::cluster(&cli, args).await,
            Command::Health => admin::health(&cli).await,
            Command::Top(args) => top::top(&cli, args).await,
            Command::Bench(args) => bench::bench(&cli, args).await,
            Command::Completions { shell } => {
                cli::completions(*shell);
                Ok(())
            }
        }
    })
}

/// Reads a duration: `250ms`, `5s`, `2m`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 250ms, 5s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e7) {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations take ms, s or m, or bare seconds; nonsense and zero are refused.
    #[test]
    fn durations_are_read_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "fast", "5h", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    /// Each client error maps to its documented exit status.
    #[test]
    fn call_errors_map_to_their_exit_statuses() {
        let code = |err| CtlError::of_call("F", err).exit_code();
        assert_eq!(
            code(ClientError::Function {
                code: 3,
                message: String::new()
            }),
            1
        );
        assert_eq!(code(ClientError::WorkerError(String::new())), 1);
        assert_eq!(code(ClientError::ConnectionLost), 3);
        assert_eq!(code(ClientError::NoWorker), 4);
        assert_eq!(code(ClientError::Timeout), 5);
        assert_eq!(code(ClientError::RateLimited), 6);
        assert_eq!(code(ClientError::BreakerOpen), 6);
        assert_eq!(code(ClientError::WorkerLost), 7);
        assert_eq!(code(ClientError::Protocol(String::new())), 8);
        assert_eq!(code(ClientError::StoreFull(String::new())), 6);
        assert_eq!(code(ClientError::JobNotFound(String::new())), 11);
        assert_eq!(code(ClientError::NotCancellable(String::new())), 12);
    }
}
