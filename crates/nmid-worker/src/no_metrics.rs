//! Without the `metrics` feature a worker has no metrics: [`Meter`] has no value, so a
//! link's `Option<Meter>` is always `None` and the calls on it compile to nothing.

use std::time::Duration;

/// Stands for `WorkerMetrics` when the feature is off; it cannot be made.
#[derive(Debug, Clone)]
pub(crate) enum Meter {}

impl Meter {
    pub(crate) fn serve(&self, _function: &str) {
        match *self {}
    }

    pub(crate) fn job_started(&self, _function: &str) {
        match *self {}
    }

    pub(crate) fn job_done(&self, _function: &str, _result: Result<&[u8], ()>, _: Duration) {
        match *self {}
    }

    pub(crate) fn job_cancelled(&self, _function: &str) {
        match *self {}
    }

    pub(crate) fn link(&self, _dispatcher: &str, _up: bool, _again: bool) {
        match *self {}
    }
}
