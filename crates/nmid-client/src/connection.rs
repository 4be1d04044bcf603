//! The client's two transports: tagged (pipelined, matched by request id) and v1 (one call
//! at a time).

use foldhash::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedRead};
use tracing::debug;

use super::stream::{CallStream, StreamEvent, StreamItem};
use super::{ClientError, Settings};
use nmid_proto::codec::{
    self, CDoJob, Frame, Metadata, NmidCodec, ParamsType, SAuthResult, SJobStatus, SSubmitted,
    TaggedCall, HANDLE_TYPE_ENCODE,
};
use nmid_proto::net::{NetStream, ReadHalf, WriteHalf};

/// Extra time the client waits past a call's deadline for the dispatcher's own timeout reply,
/// before it gives up on its own.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);
/// How often a connection looks for calls to give up on (the dispatcher normally answers a
/// call that ran out of time itself, so this only matters when it cannot).
const GIVE_UP_CHECK: Duration = Duration::from_millis(100);
/// The longest wait for the dispatcher to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of frames gathered into one write at most.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

type Reply = Result<Bytes, ClientError>;

/// What the dispatcher answered a background-job request with (its errors are
/// `ClientError`s, as a call's are).
#[derive(Debug)]
pub(super) enum Answer {
    /// `S_SUBMITTED`: a background job's id.
    Submitted(SSubmitted),
    /// `S_JOB_STATUS`: a background job's state.
    Status(SJobStatus),
}

/// Connects to the dispatcher: TCP, TLS if set, then the token if one is set (the
/// dispatcher's answer is waited for, so a refused token fails here, with its reason).
async fn dial(settings: &Settings) -> Result<NetStream, ClientError> {
    let failed = |reason: String| ClientError::Connect {
        addr: settings.addr.clone(),
        reason,
    };
    let access = settings
        .access
        .as_ref()
        .map_err(|reason| failed(reason.clone()))?;
    let stream =
        (access.dial(&settings.addr, CONNECT_TIMEOUT).await).map_err(|e| failed(e.to_string()))?;
    match &access.token {
        None => Ok(stream),
        Some(secret) => authenticate(stream, secret, settings).await,
    }
}

/// Presents `secret` in a client `AUTH` frame and waits for `S_AUTH_RESULT`.
async fn authenticate(
    stream: NetStream,
    secret: &Bytes,
    settings: &Settings,
) -> Result<NetStream, ClientError> {
    let mut framed = Framed::new(stream, NmidCodec::new(settings.max_frame_bytes));
    let answer = async {
        framed
            .send(Frame::CAuth {
                secret: secret.clone(),
            })
            .await?;
        match framed.next().await {
            Some(frame) => Ok(frame?),
            None => Err(ClientError::ConnectionLost),
        }
    };
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, answer)
        .await
        .map_err(|_| ClientError::Connect {
            addr: settings.addr.clone(),
            reason: format!("no answer to AUTH within {CONNECT_TIMEOUT:?}"),
        })?;
    match answer? {
        Frame::SAuthResult(result) if result.code == SAuthResult::ACCEPTED => {
            // The dispatcher says nothing more before a call: nothing is left buffered.
            Ok(framed.into_inner())
        }
        Frame::SAuthResult(result) => Err(ClientError::Unauthorized(
            String::from_utf8_lossy(&result.message).into_owned(),
        )),
        other => Err(ClientError::Protocol(format!(
            "{} in answer to AUTH (does this dispatcher take tokens?)",
            other.name()
        ))),
    }
}

/// Refuses a call frame over the frame limit before it reaches the connection: the
/// dispatcher would close the connection on reading its header, failing every call in flight
/// on it with an unknown outcome.
fn fits(frame: &Frame, settings: &Settings) -> Result<(), ClientError> {
    match codec::over_limit(frame, settings.max_frame_bytes) {
        None => Ok(()),
        Some(body_len) => Err(ClientError::TooLarge(format!(
            "a {body_len}-byte call frame is over the {}-byte frame limit (max_frame_bytes)",
            settings.max_frame_bytes
        ))),
    }
}

/// Calls in flight on one tagged connection, by request id.
#[derive(Debug, Default)]
struct Pending {
    calls: HashMap<u64, Waiter>,
    /// Set (under the same lock) when the connection is gone: no call is added after that.
    closed: bool,
}

/// Where a call's reply goes.
#[derive(Debug)]
enum ReplyTx {
    /// A plain call: the one reply.
    Once(oneshot::Sender<Reply>),
    /// A streaming call: its partials and progress, then the reply, in order.
    Stream(mpsc::UnboundedSender<StreamItem>),
    /// A background-job request (`C_SUBMIT`, `C_JOB_STATUS`, `C_JOB_CANCEL`).
    Job(oneshot::Sender<Result<Answer, ClientError>>),
}

impl ReplyTx {
    /// Delivers the final reply (the caller may be gone: nothing to tell then).
    fn send(self, reply: Reply) {
        match self {
            ReplyTx::Once(tx) => drop(tx.send(reply)),
            ReplyTx::Stream(tx) => drop(tx.send(reply.map(StreamEvent::Done))),
            ReplyTx::Job(tx) => drop(tx.send(match reply {
                Ok(_) => Err(ClientError::Protocol(
                    "S_CALL_RESULT in answer to a background-job request".to_owned(),
                )),
                Err(err) => Err(err),
            })),
        }
    }
}

/// A call waiting for its reply.
#[derive(Debug)]
struct Waiter {
    reply: ReplyTx,
    /// Past its deadline and the grace, the call fails with `Timeout` without the reply.
    give_up_at: Instant,
}

/// One tagged connection: a writer task fed by `outgoing`, a reader task resolving `pending`,
/// and a task that gives up on calls the dispatcher never answers.
#[derive(Debug)]
struct Conn {
    outgoing: mpsc::UnboundedSender<Frame>,
    pending: Arc<Mutex<Pending>>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.pending.lock().expect("pending lock").closed
    }
}

/// The tagged transport: many calls in flight over one connection, reconnecting on demand.
#[derive(Debug)]
pub(super) struct Tagged {
    settings: Arc<Settings>,
    current: Mutex<Option<Arc<Conn>>>,
    /// Serialises reconnection, so concurrent calls do not each open a connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Tagged {
    pub(super) fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn live(&self) -> Option<Arc<Conn>> {
        let current = self.current.lock().expect("connection lock");
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Opens the connection now if there is none.
    pub(super) async fn ensure_connected(&self) -> Result<(), ClientError> {
        self.connection().await.map(drop)
    }

    /// The open connection, opening one if there is none.
    async fn connection(&self) -> Result<Arc<Conn>, ClientError> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _guard = self.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let stream = dial(&self.settings).await?;
        let (read, write) = stream.into_split();
        let (outgoing, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(write_loop(rx, write));
        tokio::spawn(read_loop(
            read,
            pending.clone(),
            self.settings.max_frame_bytes,
        ));
        tokio::spawn(give_up_loop(Arc::downgrade(&pending)));
        let conn = Arc::new(Conn { outgoing, pending });
        *self.current.lock().expect("connection lock") = Some(conn.clone());
        debug!(addr = %self.settings.addr, "client connected");
        Ok(conn)
    }

    #[allow(clippy::too_many_arguments)]
    fn call_frame(
        &self,
        request_id: u64,
        function: Bytes,
        params: Bytes,
        params_type: ParamsType,
        timeout: Duration,
        meta: Metadata,
        stream: bool,
    ) -> Result<Frame, ClientError> {
        let call = TaggedCall {
            id: request_id,
            timeout_ms: u32::try_from(timeout.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            params_type,
            handle_type: HANDLE_TYPE_ENCODE,
            function,
            params,
            meta,
        };
        let frame = match stream {
            true => Frame::CCallStream(call),
            false => Frame::CCall(call),
        };
        fits(&frame, &self.settings)?;
        Ok(frame)
    }

    /// Sends `frame`, the call `request_id`, whose reply goes to `reply`.
    async fn send_call(
        &self,
        request_id: u64,
        frame: Frame,
        timeout: Duration,
        reply: ReplyTx,
    ) -> Result<(), ClientError> {
        let conn = self.connection().await?;
        {
            let mut pending = conn.pending.lock().expect("pending lock");
            if pending.closed {
                return Err(ClientError::ConnectionLost);
            }
            let give_up_at = Instant::now() + timeout + DEADLINE_GRACE;
            let waiter = Waiter { reply, give_up_at };
            pending.calls.insert(request_id, waiter);
        }
        if conn.outgoing.send(frame).is_err() {
            conn.pending
                .lock()
                .expect("pending lock")
                .calls
                .remove(&request_id);
            return Err(ClientError::ConnectionLost);
        }
        Ok(())
    }

    pub(super) async fn call(
        &self,
        request_id: u64,
        function: Bytes,
        params: Bytes,
        params_type: ParamsType,
        timeout: Duration,
        meta: Metadata,
    ) -> Reply {
        let frame = self.call_frame(
            request_id,
            function,
            params,
            params_type,
            timeout,
            meta,
            false,
        )?;
        let (tx, rx) = oneshot::channel();
        self.send_call(request_id, frame, timeout, ReplyTx::Once(tx))
            .await?;
        // One timer per connection (`give_up_loop`), not one per call.
        rx.await.unwrap_or(Err(ClientError::ConnectionLost))
    }

    /// Sends the background-job request `frame`, whose request id is `request_id`, and
    /// waits for its answer (at most `timeout` and the grace).
    pub(super) async fn request(
        &self,
        request_id: u64,
        frame: Frame,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        fits(&frame, &self.settings)?;
        let (tx, rx) = oneshot::channel();
        self.send_call(request_id, frame, timeout, ReplyTx::Job(tx))
            .await?;
        rx.await.unwrap_or(Err(ClientError::ConnectionLost))
    }

    /// A `C_CALL_STREAM` call: its partials, progress and reply come through the stream.
    pub(super) async fn call_stream(
        &self,
        request_id: u64,
        function: Bytes,
        params: Bytes,
        params_type: ParamsType,
        timeout: Duration,
        meta: Metadata,
    ) -> Result<CallStream, ClientError> {
        let frame = self.call_frame(
            request_id,
            function,
            params,
            params_type,
            timeout,
            meta,
            true,
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.send_call(request_id, frame, timeout, ReplyTx::Stream(tx))
            .await?;
        Ok(CallStream::new(rx))
    }
}

/// Writes queued frames, as many per syscall as are waiting. Ends when the client drops the
/// connection (closing the write side, so the dispatcher closes too) or a write fails.
async fn write_loop(mut rx: mpsc::UnboundedReceiver<Frame>, mut write: WriteHalf) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(frame) = rx.recv().await {
        if codec::encode(&frame, &mut buf).is_err() {
            continue;
        }
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => {
                    let _ = codec::encode(&frame, &mut buf);
                }
                Err(_) => break,
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = write.shutdown().await;
}

/// Resolves calls from replies; on end of stream or a bad frame, fails every call in flight.
async fn read_loop(read: ReadHalf, pending: Arc<Mutex<Pending>>, max_frame_bytes: usize) {
    let mut frames = FramedRead::new(read, NmidCodec::new(max_frame_bytes));
    while let Some(item) = frames.next().await {
        let (request_id, reply) = match item {
            Ok(Frame::SCallResult(r)) => (r.id, Ok(r.ret)),
            Ok(Frame::SCallError(e)) => (
                e.request_id,
                Err(ClientError::from_code(e.code, &e.message)),
            ),
            Ok(Frame::SSubmitted(s)) => {
                job_answer(&pending, s.request_id, Answer::Submitted(s));
                continue;
            }
            Ok(Frame::SJobStatus(s)) => {
                job_answer(&pending, s.request_id, Answer::Status(s));
                continue;
            }
            Ok(Frame::SCallPartial(p)) => {
                partial(&pending, p.id, StreamEvent::Partial(p.data));
                continue;
            }
            Ok(Frame::SCallProgress(p)) => {
                let progress = StreamEvent::Progress {
                    numerator: p.numerator,
                    denominator: p.denominator,
                };
                partial(&pending, p.id, progress);
                continue;
            }
            Ok(other) => {
                debug!(frame = other.name(), "client ignored frame");
                continue;
            }
            Err(err) => {
                debug!(cause = %err, "client connection failed");
                break;
            }
        };
        let waiter = pending
            .lock()
            .expect("pending lock")
            .calls
            .remove(&request_id);
        if let Some(waiter) = waiter {
            waiter.reply.send(reply);
        }
    }
    let mut pending = pending.lock().expect("pending lock");
    pending.closed = true;
    for (_, waiter) in pending.calls.drain() {
        waiter.reply.send(Err(ClientError::ConnectionLost));
    }
}

/// Hands a background-job request its answer (a call given one fails: it is not its answer).
fn job_answer(pending: &Mutex<Pending>, request_id: u64, answer: Answer) {
    let waiter = pending
        .lock()
        .expect("pending lock")
        .calls
        .remove(&request_id);
    match waiter.map(|w| w.reply) {
        Some(ReplyTx::Job(tx)) => drop(tx.send(Ok(answer))),
        Some(other) => other.send(Err(unexpected(&answer, "a call"))),
        None => {}
    }
}

/// The error for a background-job answer to `request` that is not its answer.
pub(super) fn unexpected(answer: &Answer, request: &str) -> ClientError {
    let name = match answer {
        Answer::Submitted(_) => "S_SUBMITTED",
        Answer::Status(_) => "S_JOB_STATUS",
    };
    ClientError::Protocol(format!("{name} in answer to {request}"))
}

/// Hands a streaming call its partial result or progress (a plain call gets none).
fn partial(pending: &Mutex<Pending>, request_id: u64, event: StreamEvent) {
    let pending = pending.lock().expect("pending lock");
    if let Some(Waiter {
        reply: ReplyTx::Stream(tx),
        ..
    }) = pending.calls.get(&request_id)
    {
        let _ = tx.send(Ok(event));
    }
}

/// Fails with `Timeout` the calls whose deadline and grace have passed without a reply;
/// ends with the connection.
async fn give_up_loop(pending: Weak<Mutex<Pending>>) {
    let mut every = tokio::time::interval(GIVE_UP_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(pending) = pending.upgrade() else {
            return;
        };
        let mut pending = pending.lock().expect("pending lock");
        if pending.closed {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u64> = (pending.calls.iter())
            .filter(|(_, waiter)| waiter.give_up_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(waiter) = pending.calls.remove(&id) {
                waiter.reply.send(Err(ClientError::Timeout));
            }
        }
    }
}

/// The v1 transport: one call at a time, since v1 replies carry no id.
#[derive(Debug)]
pub(super) struct V1 {
    settings: Arc<Settings>,
    conn: tokio::sync::Mutex<Option<Framed<NetStream, NmidCodec>>>,
}

impl V1 {
    pub(super) fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn ensure_connected(&self) -> Result<(), ClientError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(self.open().await?);
        }
        Ok(())
    }

    async fn open(&self) -> Result<Framed<NetStream, NmidCodec>, ClientError> {
        let stream = dial(&self.settings).await?;
        Ok(Framed::new(
            stream,
            NmidCodec::new(self.settings.max_frame_bytes),
        ))
    }

    pub(super) async fn call(
        &self,
        function: Bytes,
        params: Bytes,
        params_type: ParamsType,
        timeout: Duration,
    ) -> Reply {
        let call = Frame::CDoJob(CDoJob {
            params_type,
            handle_type: HANDLE_TYPE_ENCODE,
            function,
            params,
        });
        fits(&call, &self.settings)?;
        let mut slot = self.conn.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.open().await?,
        };
        let exchange = async {
            conn.send(call).await?;
            match conn.next().await {
                Some(frame) => Ok(frame?),
                None => Err(ClientError::ConnectionLost),
            }
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            // Without ids a late reply could be taken for the next call's: drop the connection.
            Err(_) => return Err(ClientError::Timeout),
            Ok(Err(err)) => return Err(err),
            Ok(Ok(frame)) => frame,
        };
        let result = match reply {
            Frame::SReturnData(ret) => Ok(ret.ret),
            Frame::CantDo => Err(ClientError::NoWorker),
            Frame::RateLimit => Err(ClientError::RateLimited),
            Frame::Breaker => Err(ClientError::BreakerOpen),
            Frame::Error => Err(ClientError::Failed),
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected {} reply",
                    other.name()
                )))
            }
        };
        *slot = Some(conn);
        result
    }
}
