//! Receiving a request's body, bounded in size, in time and in total.
//!
//! - `http.max_body_bytes`: one body at most (413, at once when `Content-Length` says so).
//! - `http.body_timeout_ms`: the time a body has to arrive whole once the handler asks for it
//!   (408): a client that announces a large body and dribbles it (slowloris on the body) is
//!   answered and closed instead of holding its connection and buffer forever.
//! - `http.max_receiving_body_bytes`: the bytes of all the bodies being received at once,
//!   over every connection (503 with `Retry-After`): what a body announces (or, chunked, what
//!   has arrived) is taken from it before it is read, and given back once it has arrived.
//! - `http.max_receiving_body_bytes_per_client`: one client's share of that (its token, else
//!   its IP address: the [`ClientKey`] TCP's `tcp.max_incomplete_frame_bytes_per_client`
//!   keys by, and the same [`FrameBudget`]), so a client holding bodies it never sends gets
//!   503 itself while another client's bodies still find room.
//!
//! Both refusals are counted (`nmid_limit_hits_total{limit="http_body_timeout"}`,
//! `{limit="http_body_bytes"}`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::HttpError;
use crate::actors::inbound::{ClientShare, FrameBudget};
use crate::call::ClientKey;
use crate::metrics::{Limit, Metrics};

/// The bounds on request bodies, and the bytes being received now; one per dispatcher.
#[derive(Debug)]
pub struct BodyLimits {
    /// `http.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `http.body_timeout_ms`.
    pub timeout: Duration,
    /// Bytes taken by the bodies being received now: `http.max_receiving_body_bytes` in
    /// all, `http.max_receiving_body_bytes_per_client` for one client.
    receiving: Arc<FrameBudget>,
}

impl BodyLimits {
    /// Bodies of `max_body_bytes` each, arriving within `timeout`, `max_receiving` bytes at
    /// once in all and `per_client` of them for one client.
    pub fn new(
        max_body_bytes: usize,
        timeout: Duration,
        max_receiving: usize,
        per_client: usize,
    ) -> Self {
        Self {
            max_body_bytes,
            timeout,
            receiving: FrameBudget::new(max_receiving, per_client),
        }
    }

    /// Bytes taken by the bodies being received now.
    pub fn receiving(&self) -> usize {
        self.receiving.held()
    }
}

/// A body's bytes taken from [`BodyLimits`]' total and its client's share, given back when
/// dropped.
struct Taken<'a> {
    limits: &'a BodyLimits,
    share: Arc<ClientShare>,
    bytes: usize,
}

impl<'a> Taken<'a> {
    /// Nothing yet, for a body of `client`.
    fn new(limits: &'a BodyLimits, client: ClientKey) -> Self {
        let share = limits.receiving.share(client);
        Self {
            limits,
            share,
            bytes: 0,
        }
    }
}

impl Taken<'_> {
    /// Takes more, so that this body holds `bytes` in all; `Busy` if the total or the
    /// client's share is reached.
    fn grow_to(&mut self, bytes: usize) -> Result<(), HttpError> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let more = bytes - self.bytes;
        (self.limits.receiving)
            .take(&self.share, more)
            .map_err(|_| HttpError::Busy)?;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        (self.limits.receiving).give_back(&self.share, self.bytes);
    }
}

/// Reads the whole body of `req`, sent by `client`, under `limits`; a refusal past a limit
/// is counted in `metrics`.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    client: ClientKey,
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
    let mut taken = Taken::new(limits, client);
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

    fn client(last: u8) -> ClientKey {
        ClientKey::Ip(std::net::IpAddr::from([10, 0, 0, last]))
    }

    /// What a body takes is given back when it is dropped; past the total is `Busy`.
    #[test]
    fn bodies_take_from_the_total_and_give_it_back() {
        let limits = BodyLimits::new(100, Duration::from_secs(1), 150, 150);
        let mut one = Taken::new(&limits, client(1));
        one.grow_to(100).unwrap();
        let mut two = Taken::new(&limits, client(2));
        assert_eq!(two.grow_to(60), Err(HttpError::Busy));
        two.grow_to(50).unwrap();
        assert_eq!(limits.receiving(), 150);
        drop(one);
        two.grow_to(100).unwrap();
        drop(two);
        assert_eq!(limits.receiving(), 0);
    }

    /// One client's bodies take at most its share: past it that client is `Busy` while
    /// another client's body still fits.
    #[test]
    fn one_clients_bodies_take_at_most_its_share() {
        let limits = BodyLimits::new(100, Duration::from_secs(1), 400, 150);
        let mut one = Taken::new(&limits, client(1));
        one.grow_to(100).unwrap();
        let mut again = Taken::new(&limits, client(1));
        assert_eq!(again.grow_to(60), Err(HttpError::Busy));
        let mut other = Taken::new(&limits, client(2));
        other.grow_to(100).unwrap();
        drop((one, again, other));
        assert_eq!(limits.receiving(), 0);
    }
}
