//! The metrics of the call guards: rate limits (`[rate_limit]`) and circuit breakers
//! (`[breaker]`). Their series, how they are counted, and how a departed function's
//! series are removed.

use std::sync::atomic::Ordering;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};

use super::{Metrics, Outcome, Registrar, UNKNOWN_FUNCTION_LABEL};
use crate::breaker::BreakerState;
use crate::call::FunctionName;
use crate::rate_limit::Scope;

/// The metrics of rate limits and circuit breakers.
pub(super) struct GuardMetrics {
    /// `nmid_rate_limited_total{function, scope}`.
    rate_limited: IntCounterVec,
    /// `nmid_rate_limit_clients`.
    rate_limit_clients: IntGauge,
    /// `nmid_breakers_open{function}`, set at scrape time.
    pub(super) breakers_open: IntGaugeVec,
    /// `nmid_breaker_transitions_total{function, to}`.
    breaker_transitions: IntCounterVec,
}

impl GuardMetrics {
    pub(super) fn new(add: &Registrar) -> Self {
        Self {
            rate_limited: add.counter_vec(
                "nmid_rate_limited_total",
                "Calls refused by a rate limit ([rate_limit]), by function and by the limit that refused them (scope: function or client).",
                &["function", "scope"],
            ),
            rate_limit_clients: add.metric(
                IntGauge::new(
                    "nmid_rate_limit_clients",
                    "Clients with a rate-limit bucket of their own (rate_limit.max_clients at most, plus one shared).",
                )
                .expect("valid metric"),
            ),
            breakers_open: add.gauge_vec(
                "nmid_breakers_open",
                "Workers of each function whose circuit breaker is open or half-open ([breaker]).",
                "function",
            ),
            breaker_transitions: add.counter_vec(
                "nmid_breaker_transitions_total",
                "Circuit breaker state changes, by function and the state entered (open, half_open, closed).",
                &["function", "to"],
            ),
        }
    }

    /// Removes the series of the function `name`, which no worker serves any more.
    pub(super) fn forget(&self, name: &str) {
        for scope in [Scope::Function, Scope::Client] {
            let labels = [name, scope.as_str()];
            let _ = self.rate_limited.remove_label_values(&labels);
        }
        for to in [
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed,
        ] {
            let labels = [name, to.as_str()];
            let _ = self.breaker_transitions.remove_label_values(&labels);
        }
    }
}

impl Metrics {
    /// A call of `function` was refused by the rate limit of `scope`: counted in
    /// `nmid_rate_limited_total` and as a `rate_limited` call. `configured`: the function
    /// has a limit of its own, so its name may get series; any other name a caller sent
    /// counts under its own series only if it has them already (a served function), else
    /// under `_unknown`, so that callers cannot take places under `max_function_series`.
    pub fn record_rate_limited(&self, function: &FunctionName, scope: Scope, configured: bool) {
        self.totals[Outcome::RateLimited as usize].fetch_add(1, Ordering::Relaxed);
        let name = function.to_string();
        let label = match configured {
            true => self.function_labels.label(&name),
            false => (self.function_labels).existing_or(&name, UNKNOWN_FUNCTION_LABEL),
        };
        let outcome = Outcome::RateLimited.as_str();
        self.call.calls.with_label_values(&[label, outcome]).inc();
        let scope = scope.as_str();
        self.guard
            .rate_limited
            .with_label_values(&[label, scope])
            .inc();
    }

    /// The rate limiter holds `clients` client buckets (`nmid_rate_limit_clients`).
    pub fn set_rate_limit_clients(&self, clients: usize) {
        let clients = i64::try_from(clients).unwrap_or(i64::MAX);
        self.guard.rate_limit_clients.set(clients);
    }

    /// A worker's circuit breaker for `function` went `to` a state.
    pub fn record_breaker_transition(&self, function: &FunctionName, to: BreakerState) {
        let name = function.to_string();
        let label = self.function_labels.label(&name);
        (self.guard.breaker_transitions)
            .with_label_values(&[label, to.as_str()])
            .inc();
    }
}
