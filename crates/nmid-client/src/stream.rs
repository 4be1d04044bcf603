//! Streaming calls: [`Client::call_stream`] and what it yields, [`CallStream`] of
//! [`StreamEvent`]s.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::Stream;
use tokio::sync::mpsc;

use super::{CallOptions, Client, ClientError, Transport};
use nmid_proto::codec::ParamsType;

/// What a streaming call yields, in order: any number of [`StreamEvent::Progress`] and
/// [`StreamEvent::Partial`] as the worker sends them, then [`StreamEvent::Done`] with the
/// result (or an `Err` with why there is none), then the stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The worker's progress: `numerator` of `denominator` done (its own units).
    Progress {
        /// Work done.
        numerator: u64,
        /// Work in all.
        denominator: u64,
    },
    /// A partial result (a token, a row), in the order the worker sent them.
    Partial(Bytes),
    /// The final result: the last item.
    Done(Bytes),
}

/// One item of a [`CallStream`].
pub type StreamItem = Result<StreamEvent, ClientError>;

/// The events of one streaming call ([`Client::call_stream`]): a `futures` [`Stream`] of
/// [`StreamItem`] that ends after the result ([`StreamEvent::Done`]) or the error.
///
/// Events the caller has not taken yet wait in memory on the client's side; the dispatcher
/// holds at most `jobs.max_partial_bytes_buffered` of them for a caller that stops reading
/// its connection (the call then fails `slow_caller`).
#[derive(Debug)]
pub struct CallStream {
    rx: mpsc::UnboundedReceiver<StreamItem>,
    ended: bool,
}

impl CallStream {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<StreamItem>) -> Self {
        Self { rx, ended: false }
    }

    /// A stream of one item: the final reply of a call that did not stream.
    fn of_reply(reply: Result<Bytes, ClientError>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(reply.map(StreamEvent::Done));
        Self::new(rx)
    }
}

impl Stream for CallStream {
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(StreamEvent::Done(ret)))) => {
                self.ended = true;
                Poll::Ready(Some(Ok(StreamEvent::Done(ret))))
            }
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(Some(Err(err))) => {
                self.ended = true;
                Poll::Ready(Some(Err(err)))
            }
            // The call's waiter went without a reply (it cannot, but say so if it does).
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(ClientError::ConnectionLost)))
            }
        }
    }
}

impl Client {
    /// Calls `function` with `params` and `options`, receiving the worker's progress and
    /// partial results as they are made (`C_CALL_STREAM`), then the result.
    ///
    /// Partials arrive in the order the worker sent them ([`Job::send_partial`] in the
    /// worker library), all before the result. In [`Protocol::V1`](crate::Protocol::V1)
    /// mode, and through a discovering client, there is no frame for them: the stream
    /// yields only the final result (or error), as [`Client::call_with`] would return it.
    ///
    /// [`Job::send_partial`]: https://docs.rs/nmid-worker/latest/nmid_worker/struct.Job.html#method.send_partial
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: nmid_client::Client) -> Result<(), nmid_client::ClientError> {
    /// use futures_util::StreamExt;
    /// use nmid_client::{CallOptions, StreamEvent};
    ///
    /// let mut events = client
    ///     .call_stream("Count", &b"\x81\xa2to\x0a"[..], CallOptions::default())
    ///     .await?;
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         StreamEvent::Progress { numerator, denominator } => {
    ///             println!("{numerator}/{denominator}")
    ///         }
    ///         StreamEvent::Partial(data) => println!("partial: {data:?}"),
    ///         StreamEvent::Done(ret) => println!("result: {} bytes", ret.len()),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call_stream(
        &self,
        function: &str,
        params: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<CallStream, ClientError> {
        let params = params.into();
        let Transport::Tagged(tagged) = &self.inner.transport else {
            let reply = self.call_with(function, params, options).await;
            return Ok(CallStream::of_reply(reply));
        };
        if function.is_empty() || params.is_empty() {
            return Err(ClientError::BadRequest(
                "function name and params must not be empty".to_owned(),
            ));
        }
        let timeout = options.timeout.unwrap_or(self.inner.settings.timeout);
        let params_type = options.params_type.unwrap_or(ParamsType::MSGPACK);
        let request_id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let function = Bytes::copy_from_slice(function.as_bytes());
        tagged
            .call_stream(
                request_id,
                function,
                params,
                params_type,
                timeout,
                options.metadata,
            )
            .await
    }
}
