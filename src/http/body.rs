//! Receiving a request's body, bounded in size, in time and in total.
//!
//! - `http.max_body_bytes`: one body at most (413, at once when `Content-Length` says so).
//! - `http.body_timeout_ms`: the time a body has to arrive whole once the handler asks for it
//!   (408): a client that announces a large body and dribbles it (slowloris on the body) is
//!   answered and closed instead of holding its connection and buffer forever.
//! - `http.max_receiving_body_bytes`: the bytes of all the bodies being received at once,
//!   over every connection (503 with `Retry-After`): what a body announces (or, chunked, what
//!   has arrived) is taken from it before it is read, and given back once it has arrived.
//!
//! Both refusals are counted (`nmid_limit_hits_total{limit="http_body_timeout"}`,
//! `{limit="http_body_bytes"}`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::HttpError;
use crate::actors::inbound::take_under;
use crate::metrics::{Limit, Metrics};

/// The bounds on request bodies, and the bytes being received now; one per dispatcher.
#[derive(Debug)]
pub struct BodyLimits {
    /// `http.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `http.body_timeout_ms`.
    pub timeout: Duration,
    /// `http.max_receiving_body_bytes`.
    pub max_receiving: usize,
    /// Bytes taken by the bodies being received now.
    receiving: AtomicUsize,
}

impl BodyLimits {
    /// Bodies of `max_body_bytes` each, arriving within `timeout`, `max_receiving` bytes at
    /// once in all.
    pub fn new(max_body_bytes: usize, timeout: Duration, max_receiving: usize) -> Self {
        Self {
            max_body_bytes,
            timeout,
            max_receiving,
            receiving: AtomicUsize::new(0),
        }
    }

    /// Bytes taken by the bodies being received now.
    pub fn receiving(&self) -> usize {
        self.receiving.load(Ordering::Relaxed)
    }
}

/// A body's bytes taken from [`BodyLimits`]' total, given back when dropped.
struct Taken<'a> {
    limits: &'a BodyLimits,
    bytes: usize,
}

impl Taken<'_> {
    /// Takes more, so that this body holds `bytes` in all; `Busy` if the total is reached.
    fn grow_to(&mut self, bytes: usize) -> Result<(), HttpError> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let more = bytes - self.bytes;
        take_under(&self.limits.receiving, more, self.limits.max_receiving)
            .map_err(|_| HttpError::Busy)?;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.limits
            .receiving
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Reads the whole body of `req` under `limits`; a refusal past a limit is counted in
/// `metrics`.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: &BodyLimits,
    metrics: &Metrics,
) -> Result<Bytes, HttpError> {
    let max = limits.max_body_bytes;
    let announced = (req.headers().get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|len| len > max) {
        return Err(HttpError::BodyTooLarge(max));
    }
    let mut taken = Taken { limits, bytes: 0 };
    let received = async {
        taken.grow_to(announced.unwrap_or(0))?;
        receive(payload, max, &mut taken).await
    };
    let refused = match tokio::time::timeout(limits.timeout, received).await {
        Ok(Err(HttpError::Busy)) => Limit::HttpBodyBytes,
        Ok(received) => return received,
        Err(_) => Limit::HttpBodyTimeout,
    };
    metrics.record_limit(refused);
    match refused {
        Limit::HttpBodyBytes => Err(HttpError::Busy),
        _ => Err(HttpError::BodyTimeout(limits.timeout.as_millis() as u64)),
    }
}

/// The chunks of `payload`, at most `max` bytes, each taken into `taken` before it is kept.
/// A body of one chunk is kept as it came, without a copy.
async fn receive(
    mut payload: web::Payload,
    max: usize,
    taken: &mut Taken<'_>,
) -> Result<Bytes, HttpError> {
    let mut first: Option<Bytes> = None;
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| HttpError::BadRequest(format!("cannot read body: {e}")))?;
        let len = first.as_ref().map_or(body.len(), Bytes::len) + chunk.len();
        if len > max {
            return Err(HttpError::BodyTooLarge(max));
        }
        taken.grow_to(len)?;
        match first.take() {
            None if body.is_empty() => first = Some(chunk),
            None => body.extend_from_slice(&chunk),
            Some(earlier) => {
                body.reserve(len);
                body.extend_from_slice(&earlier);
                body.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| body.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a body takes is given back when it is dropped; past the total is `Busy`.
    #[test]
    fn bodies_take_from_the_total_and_give_it_back() {
        let limits = BodyLimits::new(100, Duration::from_secs(1), 150);
        let mut one = Taken {
            limits: &limits,
            bytes: 0,
        };
        one.grow_to(100).unwrap();
        let mut two = Taken {
            limits: &limits,
            bytes: 0,
        };
        assert_eq!(two.grow_to(60), Err(HttpError::Busy));
        two.grow_to(50).unwrap();
        assert_eq!(limits.receiving(), 150);
        drop(one);
        two.grow_to(100).unwrap();
        drop(two);
        assert_eq!(limits.receiving(), 0);
    }
}
