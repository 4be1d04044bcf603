//! From accepted socket to session: the accept loop (each connection checked by the
//! listener's [`AcceptGate`]), TLS, the first frame (under `tcp.handshake_timeout_ms`), the
//! AUTH exchange, and the session actor of the role the first frame names. Also the door
//! through which the dispatcher connects to itself ([`InternalDoor`], for `--demo`).
//!
//! Refused connections are counted each, and logged once per kind and window
//! (`log.refusal_summary_interval_ms`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use crate::accept::{AcceptGate, ConnectionPermit};
use crate::actors::client_session::ClientSession;
use crate::actors::connection::Accepted;
use crate::actors::inbound::{InboundCodec, InboundError, PartialSince};
use crate::actors::worker_session::WorkerSession;
use crate::actors::SessionSettings;
use crate::call::ClientKey;
use crate::codec::{CodecError, ConnType, ErrorCode, Frame, SAuthResult, SCallError};
use crate::metrics::{Limit, Refusal, Role};
use crate::net::{NetStream, WriteHalf};
use crate::security::{Auth, Grant, Identity, Roles};

/// The read buffer a connection starts with: room for dozens of small frames per read
/// syscall; the codec grows it for a larger frame. (tokio-util's default is 8 KiB, most of
/// an idle connection's memory.)
const READ_BUFFER_BYTES: usize = 4096;

/// Where the dispatcher's own connections come in (see [`super::Handle::internal_dial`]).
#[derive(Debug)]
pub(super) struct InternalDoor {
    pub(super) arbiter: ArbiterHandle,
    pub(super) settings: Arc<SessionSettings>,
    pub(super) gate: Arc<AcceptGate>,
}

impl InternalDoor {
    /// A loopback TCP connection whose far end is a session of this dispatcher, granted
    /// everything; the near end is returned.
    pub(super) async fn open(&self) -> io::Result<TcpStream> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let near = TcpStream::connect(listener.local_addr()?).await?;
        let (far, peer) = listener.accept().await?;
        // Only this process's own connection may come in through the door.
        if peer != near.local_addr()? {
            return Err(io::Error::other(
                "internal connection: another peer came first",
            ));
        }
        let permit = (self.gate.permit(peer))
            .map_err(|limit| io::Error::other(format!("connection limit: {}", limit.as_str())))?;
        let _ = far.set_nodelay(true);
        let far = far.into_std()?;
        let settings = self.settings.clone();
        let grant = Arc::new(Grant::internal("internal (this process)"));
        let spawned = self
            .arbiter
            .spawn_fn(move || match TcpStream::from_std(far) {
                Ok(far) => {
                    actix_rt::spawn(greet(far, peer, permit, settings, Some(grant)));
                }
                Err(err) => warn!(cause = %err, "internal connection dropped"),
            });
        if !spawned {
            return Err(io::Error::other("the connection thread has stopped"));
        }
        Ok(near)
    }
}

/// Accepts connections that `gate` admits, and hands each to an io arbiter.
pub(super) async fn accept_loop(
    listener: TcpListener,
    arbiters: Vec<ArbiterHandle>,
    settings: Arc<SessionSettings>,
    gate: Arc<AcceptGate>,
) {
    let mut next = 0usize;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = gate.admit(peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Moved as a std socket: a tokio socket belongs to the runtime that registered it,
        // and each arbiter runs a runtime of its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                warn!(%peer, cause = %err, "dropping connection");
                continue;
            }
        };
        let arbiter = &arbiters[next % arbiters.len()];
        next = next.wrapping_add(1);
        let settings = settings.clone();
        let spawned = arbiter.spawn_fn(move || match TcpStream::from_std(stream) {
            Ok(stream) => {
                actix_rt::spawn(greet(stream, peer, permit, settings, None));
            }
            Err(err) => warn!(%peer, cause = %err, "dropping connection"),
        });
        if !spawned {
            warn!(%peer, "dropping connection: connection thread stopped");
        }
    }
}

/// Sets up a connection: its TLS handshake (with `[tls]`), its first frame (within
/// `tcp.handshake_timeout_ms`), its identity (with `[auth]`: the token of an `AUTH` first
/// frame, or an `auth.v1_peers` grant), then the session of the role it asked for: a client
/// or a worker.
async fn greet(
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
    settings: Arc<SessionSettings>,
    internal: Option<Arc<Grant>>,
) {
    let metrics = settings.metrics.clone();
    metrics.connection(Role::Undecided, 1);
    let greeted = handshake(stream, peer, &settings, internal).await;
    metrics.connection(Role::Undecided, -1);
    let Some(Greeted {
        first,
        frames,
        write,
        identity,
        greeting,
        partial_since,
        role,
    }) = greeted
    else {
        return;
    };
    let frames = stream::iter(first.map(|frame| Ok(Ok(frame)))).chain(frames);
    let accepted = Accepted {
        peer,
        partial_since,
        write,
        permit,
        settings,
        identity,
        greeting,
    };
    match role {
        ConnType::Client => {
            ClientSession::start(frames, accepted);
        }
        ConnType::Worker => {
            WorkerSession::start(frames, accepted);
        }
        ConnType::Server | ConnType::Service => {
            warn!(%peer, conn_type = ?role, "closing connection: not a client or a worker");
        }
    }
}

/// A connection's frames as they are read.
type Frames = FramedRead<crate::net::ReadHalf, InboundCodec>;

/// A connection ready for its session.
struct Greeted {
    /// The first frame, for the session (`None`: it was the `AUTH` frame).
    first: Option<Frame>,
    frames: Frames,
    write: WriteHalf,
    identity: Identity,
    /// The answer to its `AUTH` frame.
    greeting: Option<Frame>,
    partial_since: PartialSince,
    role: ConnType,
}

/// A connection being set up: what every step of its handshake reads.
struct Handshake<'a> {
    peer: SocketAddr,
    settings: &'a SessionSettings,
    /// When the whole handshake must be over (`tcp.handshake_timeout_ms`).
    deadline: Instant,
}

impl Handshake<'_> {
    /// Counts `refusal` and logs the connection's closing, once per kind and window.
    fn refuse(&self, kind: &'static str, reason: &str) {
        if self.settings.refusals.first(kind) {
            warn!(peer = %self.peer, kind, reason, "closing connection");
        }
    }

    /// Counts and logs a connection closed for sending no first frame in time.
    fn timed_out<T>(&self) -> Option<T> {
        self.settings.metrics.record_limit(Limit::Handshake);
        self.refuse(
            Limit::Handshake.as_str(),
            "no first frame in time (tcp.handshake_timeout_ms)",
        );
        None
    }
}

/// The TLS handshake, the first frame and the identity of a new connection, each refused
/// with a log line (and a counter) naming why; `None` when the connection is closed. An
/// `internal` connection (the dispatcher's own) has its grant already, and no TLS.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    settings: &SessionSettings,
    internal: Option<Arc<Grant>>,
) -> Option<Greeted> {
    let security = &settings.security;
    let hs = Handshake {
        peer,
        settings,
        deadline: Instant::now() + settings.limits.handshake_timeout,
    };
    let stream = secure(stream, &hs, internal.is_some()).await?;
    let cert_names = stream.peer_cert_names();
    // A plaintext connection beside TLS (`tls.allow_plaintext`, for v1 SDKs) may not carry
    // a token: its secret would cross the network in clear.
    let plaintext_beside_tls = security.tls().is_some() && matches!(stream, NetStream::Plain(_));
    // The generation before the policy: a reload in between makes the session check again.
    let generation = security.generation();
    let policy = security.policy();
    // Who it is before its first frame: the dispatcher's own, a v1 peer its address or
    // certificate grants, or (auth on) no one yet, whose first frame must be small.
    let known = match (&internal, &policy.auth) {
        (Some(grant), _) => Some(grant.clone()),
        (None, Some(auth)) => auth.v1_peer(peer.ip(), &cert_names),
        (None, None) => None,
    };
    let (read, mut write) = stream.into_split();
    let partial_since = PartialSince::default();
    let budget = &settings.limits.incomplete_frames;
    let mut codec = InboundCodec::new(
        settings.max_frame_bytes,
        budget.clone(),
        budget.share(ClientKey::Ip(peer.ip().to_canonical())),
        partial_since.clone(),
    );
    if policy.auth.is_some() && known.is_none() {
        codec.limit_first_frame(settings.limits.max_first_frame_bytes);
    }
    let mut frames = FramedRead::with_capacity(read, codec, READ_BUFFER_BYTES);
    let first = read_first(&mut frames, &hs).await?;
    let role = first.sender();
    let identified = match internal {
        Some(grant) => Identified {
            grant: Some(grant),
            first: Some(first),
            greeting: None,
        },
        None => {
            let auth = policy.auth.as_ref();
            let (frames, write) = (&mut frames, &mut write);
            identify(first, known, auth, plaintext_beside_tls, frames, write, &hs).await?
        }
    };
    let identity = Identity {
        grant: identified.grant,
        cert_names,
        generation,
    };
    Some(Greeted {
        first: identified.first,
        frames,
        write,
        identity,
        greeting: identified.greeting,
        partial_since,
        role,
    })
}

/// Who a connection is, once its first frame says.
struct Identified {
    /// What it may do; `None` with auth off.
    grant: Option<Arc<Grant>>,
    /// The first frame, for the session (`None`: it was the `AUTH` frame).
    first: Option<Frame>,
    /// The answer to its `AUTH` frame.
    greeting: Option<Frame>,
}

/// Who the connection whose first frame is `first` is, under `auth` (`None`: off): the
/// token of an `AUTH` frame, or the v1 grant `known` before it; `None` once it is refused.
async fn identify(
    first: Frame,
    known: Option<Arc<Grant>>,
    auth: Option<&Auth>,
    plaintext_beside_tls: bool,
    frames: &mut Frames,
    write: &mut WriteHalf,
    hs: &Handshake<'_>,
) -> Option<Identified> {
    let role = first.sender();
    let (grant, first, greeting) = match (auth, first) {
        // Auth off: a token is welcome and not needed.
        (None, Frame::CAuth { .. } | Frame::WAuth { .. }) => {
            let accepted = auth_result(SAuthResult::ACCEPTED, "auth is off");
            (None, None, Some(accepted))
        }
        (None, first) => (None, Some(first), None),
        (Some(_), Frame::CAuth { .. } | Frame::WAuth { .. }) if plaintext_beside_tls => {
            let reason = "tokens are taken over TLS only (this dispatcher has TLS on)";
            refuse_auth(hs, Refusal::Tls, reason, write).await;
            return None;
        }
        (Some(auth), Frame::CAuth { secret } | Frame::WAuth { secret }) => {
            let grant = authenticate(auth, &secret, role, hs, write).await?;
            // Its frames count against its token's share from now on.
            let budget = &hs.settings.limits.incomplete_frames;
            frames
                .decoder_mut()
                .identified(budget.share(grant.client_key(hs.peer.ip())));
            let accepted = auth_result(SAuthResult::ACCEPTED, &grant.name);
            (Some(grant), None, Some(accepted))
        }
        (Some(_), first) => match grant_v1_peer(known, role, &first, hs) {
            Ok(grant) => (Some(grant), Some(first), None),
            Err(reason) => {
                refuse_unauthenticated(&first, &reason, write, hs).await;
                return None;
            }
        },
    };
    Some(Identified {
        grant,
        first,
        greeting,
    })
}

/// The connection's TLS handshake (with `[tls]`, not for the dispatcher's own), or for a
/// plain connection its first byte, both before the deadline; `None` once it is closed.
async fn secure(stream: TcpStream, hs: &Handshake<'_>, internal: bool) -> Option<NetStream> {
    let tls = hs.settings.security.tls().filter(|_| !internal);
    let stream = match tls {
        None => NetStream::Plain(stream),
        Some(tls) => match tokio::time::timeout_at(hs.deadline, accept_tls(tls, stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                hs.settings.metrics.record_refusal(Refusal::Tls);
                hs.refuse(
                    Refusal::Tls.as_str(),
                    &format!("TLS handshake failed: {err}"),
                );
                return None;
            }
            Err(_) => {
                hs.settings.metrics.record_limit(Limit::Handshake);
                let reason = "no TLS handshake in time (tcp.handshake_timeout_ms)";
                hs.refuse(Limit::Handshake.as_str(), reason);
                return None;
            }
        },
    };
    // No read buffer for a connection that has sent nothing yet: sockets that connect and
    // wait (or never speak) cost ~3 KB of RSS in all until their first byte arrives.
    if let NetStream::Plain(plain) = &stream {
        if tokio::time::timeout_at(hs.deadline, plain.readable())
            .await
            .is_err()
        {
            return hs.timed_out();
        }
    }
    Some(stream)
}

/// The connection's first frame, before the deadline; `None` once it is closed.
async fn read_first(frames: &mut Frames, hs: &Handshake<'_>) -> Option<Frame> {
    let metrics = &hs.settings.metrics;
    let refused = match tokio::time::timeout_at(hs.deadline, frames.next()).await {
        Ok(Some(Ok(Ok(frame)))) => return Some(frame),
        Ok(Some(Ok(Err(bad)))) => format!("its first frame was malformed: {}", bad.error),
        Ok(Some(Err(err))) => {
            match &err {
                InboundError::IncompleteFrames { .. } => {
                    metrics.record_limit(Limit::IncompleteFrames)
                }
                InboundError::Codec(CodecError::FrameTooLarge { .. }) => {
                    metrics.record_limit(Limit::InboundFrameSize)
                }
                InboundError::Codec(_) => {}
            }
            format!("its first frame was refused: {err}")
        }
        Ok(None) => {
            debug!(peer = %hs.peer, "connection closed before its first frame");
            return None;
        }
        Err(_) => return hs.timed_out(),
    };
    hs.refuse("first_frame", &refused);
    None
}

/// The grant of an `AUTH` frame's `secret` for a connection of `role`; `None` once it is
/// refused (answered `S_AUTH_RESULT` refused, and closed).
async fn authenticate(
    auth: &Auth,
    secret: &[u8],
    role: ConnType,
    hs: &Handshake<'_>,
    write: &mut WriteHalf,
) -> Option<Arc<Grant>> {
    let (refusal, reason) = match auth.token(secret) {
        Some(grant) if may_connect_as(&grant, role) => {
            // Each connection of a token holder: at `debug`, or a holder floods the log.
            debug!(peer = %hs.peer, grant = %grant.name, role = ?role, "authenticated");
            return Some(grant);
        }
        Some(grant) => (
            Refusal::Role,
            format!("{} has no {} role", grant.name, role_name(role)),
        ),
        None => (Refusal::BadToken, "no token has this secret".to_owned()),
    };
    refuse_auth(hs, refusal, &reason, write).await;
    None
}

/// Counts and logs an `AUTH` frame's refusal, and answers it before the connection closes.
async fn refuse_auth(hs: &Handshake<'_>, refusal: Refusal, reason: &str, write: &mut WriteHalf) {
    hs.settings.metrics.record_refusal(refusal);
    hs.refuse(
        refusal.as_str(),
        &format!("authentication refused: {reason}"),
    );
    let refused = auth_result(SAuthResult::REFUSED, reason);
    write_last(write, &refused, hs.deadline).await;
}

/// The `[[auth.v1_peers]]` grant (`known` before the first frame) of a connection that sent
/// no `AUTH` frame, if it covers the `role` of its `first` frame; else why not (counted and
/// logged).
fn grant_v1_peer(
    known: Option<Arc<Grant>>,
    role: ConnType,
    first: &Frame,
    hs: &Handshake<'_>,
) -> Result<Arc<Grant>, String> {
    let (refusal, reason) = match known {
        Some(grant) if may_connect_as(&grant, role) => {
            debug!(peer = %hs.peer, grant = %grant.name, "v1 peer granted");
            return Ok(grant);
        }
        Some(grant) => (
            Refusal::Role,
            format!("{} has no {} role", grant.name, role_name(role)),
        ),
        None => (
            Refusal::NoGrant,
            "no AUTH frame, and no auth.v1_peers entry matches it".to_owned(),
        ),
    };
    hs.settings.metrics.record_refusal(refusal);
    hs.refuse(
        refusal.as_str(),
        &format!("not authenticated ({} first): {reason}", first.name()),
    );
    Err(reason)
}

/// Answers a refused connection that sent no `AUTH` frame, before it closes: a tagged call
/// or background-job request (`C_CALL`, `C_SUBMIT`, `C_JOB_STATUS`, `C_JOB_CANCEL`) gets its
/// `S_CALL_ERROR` (`FORBIDDEN`, "authentication required: ..."), which
/// the client library reports as its authorization error. Anything else is closed
/// unanswered: v1 has no frame that says so (its `ERROR` means a bad request), and a peer
/// that did not send `AUTH` never gets `S_AUTH_RESULT` (docs/protocol.md).
async fn refuse_unauthenticated(
    first: &Frame,
    reason: &str,
    write: &mut WriteHalf,
    hs: &Handshake<'_>,
) {
    let request_id = match first {
        Frame::CCall(call) | Frame::CSubmit(call) => call.id,
        Frame::CJobStatus(ask) => ask.request_id,
        Frame::CJobCancel(ask) => ask.request_id,
        _ => return,
    };
    let refused = Frame::SCallError(SCallError {
        request_id,
        code: ErrorCode::FORBIDDEN,
        message: format!("authentication required: {reason}").into(),
    });
    write_last(write, &refused, hs.deadline).await;
}

/// The TLS handshake of a new connection; with `tls.allow_plaintext`, a connection whose
/// first byte is not a TLS handshake record (nmid frames begin with a zero byte) stays
/// plain.
async fn accept_tls(tls: &crate::security::TlsServer, stream: TcpStream) -> io::Result<NetStream> {
    /// The first byte of a TLS record carrying a handshake message (the ClientHello).
    const TLS_HANDSHAKE: u8 = 0x16;
    if tls.allow_plaintext {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE {
            return Ok(NetStream::Plain(stream));
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let stream = acceptor.accept(stream).await?;
    Ok(NetStream::Tls(Box::new(tokio_rustls::TlsStream::Server(
        stream,
    ))))
}

fn auth_result(code: u32, message: &str) -> Frame {
    Frame::SAuthResult(SAuthResult {
        code,
        message: bytes::Bytes::copy_from_slice(message.as_bytes()),
    })
}

/// Whether `grant` lets a connection take the role of its first frame: a worker needs the
/// `worker` role, a client the `client` role, or `peer` (a dispatcher forwarding for others).
fn may_connect_as(grant: &Grant, conn_type: ConnType) -> bool {
    match conn_type {
        ConnType::Worker => grant.has(Roles::WORKER),
        _ => grant.has(Roles::CLIENT) || grant.has(Roles::PEER),
    }
}

fn role_name(conn_type: ConnType) -> &'static str {
    match conn_type {
        ConnType::Worker => "worker",
        _ => "client",
    }
}

/// Writes `frame` as a connection's last words, waiting at most until `deadline`.
async fn write_last(write: &mut WriteHalf, frame: &Frame, deadline: Instant) {
    use tokio::io::AsyncWriteExt;
    let mut bytes = bytes::BytesMut::new();
    if crate::codec::encode(frame, &mut bytes).is_ok() {
        let _ = tokio::time::timeout_at(deadline, async {
            write.write_all(&bytes).await?;
            write.shutdown().await
        })
        .await;
    }
}
