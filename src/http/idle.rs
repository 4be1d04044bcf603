//! The idle deadline of an HTTP connection, the same for HTTP/1 and HTTP/2 (`http.keep_alive_ms`).
//!
//! actix-http closes an idle HTTP/1 keep-alive connection itself, but on HTTP/2 its keep-alive
//! only pings: a client that answers the pings (every HTTP/2 library does, on its own) holds
//! the connection forever without sending a request. So each connection's requests are
//! counted here ([`Activity`]): the accept loop closes a connection once it has had no request
//! in progress for `http.keep_alive_ms`. A request is in progress from the moment the app sees
//! its head until its response body has been sent whole ([`Busy`] rides in the body).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use tokio::time::Instant;

/// What one connection is doing: its requests in progress, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    busy: Cell<usize>,
    idle_since: Cell<Instant>,
}

impl Activity {
    /// A connection just accepted: idle from now.
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            busy: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
        })
    }

    /// A request has begun; it is in progress until the [`Busy`] is dropped.
    pub fn begin(self: &Rc<Self>) -> Busy {
        self.busy.set(self.busy.get() + 1);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in progress for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = match self.busy.get() {
                0 => self.idle_since.get() + limit,
                // Looked at again when it could first be idle that long.
                _ => Instant::now() + limit,
            };
            if self.busy.get() == 0 && Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request in progress on a connection.
#[derive(Debug)]
pub struct Busy(Rc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let busy = self.0.busy.get() - 1;
        self.0.busy.set(busy);
        if busy == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// The connections of one thread's listener, by peer address (unique while a connection is
/// open), for the app to find the [`Activity`] of a request's connection.
#[derive(Debug, Clone, Default)]
pub struct Connections(Rc<RefCell<HashMap<SocketAddr, Rc<Activity>>>>);

impl Connections {
    /// No connections yet.
    pub fn new() -> Self {
        Self(Rc::new(RefCell::new(HashMap::new())))
    }

    /// A connection from `peer` was accepted.
    pub fn opened(&self, peer: SocketAddr, activity: Rc<Activity>) {
        self.0.borrow_mut().insert(peer, activity);
    }

    /// The connection from `peer` has ended.
    pub fn closed(&self, peer: SocketAddr) {
        self.0.borrow_mut().remove(&peer);
    }

    /// A request of the connection from `peer` has begun (`None`: not one of these).
    pub fn begin(&self, peer: Option<SocketAddr>) -> Option<Busy> {
        let connections = self.0.borrow();
        connections.get(&peer?).map(Activity::begin)
    }
}

/// A response body that keeps its request in progress until it has been sent whole.
#[derive(Debug)]
pub struct Tracked<B> {
    /// The body.
    pub body: B,
    /// Its request, while in progress.
    pub busy: Option<Busy>,
}

impl<B: MessageBody + Unpin> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if let Poll::Ready(None | Some(Err(_))) = next {
            this.busy = None;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection is idle once its last request has ended, never while one is in
    /// progress, however long it takes.
    #[tokio::test]
    async fn a_connection_is_idle_only_with_no_request_in_progress() {
        let limit = Duration::from_millis(50);
        let activity = Activity::new();
        let busy = activity.begin();
        let waited = tokio::time::timeout(limit * 4, activity.idle_for(limit)).await;
        assert!(waited.is_err(), "idle while a request was in progress");
        let two = activity.begin();
        drop(busy);
        assert!(tokio::time::timeout(limit * 4, activity.idle_for(limit))
            .await
            .is_err());
        drop(two);
        let ended = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), activity.idle_for(limit))
            .await
            .expect("never idle");
        assert!(ended.elapsed() >= limit);
    }
}
