//! From accepted socket to session: the connection limits ([`Admission`]), the accept loop,
//! TLS, the first frame (under `tcp.handshake_timeout_ms`), the AUTH exchange, and the
//! session actor of the role the first frame names. Also the door through which the
//! dispatcher connects to itself ([`InternalDoor`], for `--demo`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use crate::actors::client_session::ClientSession;
use crate::actors::connection::Accepted;
use crate::actors::inbound::{InboundCodec, InboundError, PartialSince};
use crate::actors::worker_session::WorkerSession;
use crate::actors::{ConnectionPermit, IpSlots, SessionSettings};
use crate::codec::{CodecError, ConnType, Frame, SAuthResult};
use crate::metrics::{Limit, Refusal, Role};
use crate::net::NetStream;
use crate::security::Identity;

/// The read buffer a connection starts with: room for dozens of small frames per read
/// syscall; the codec grows it for a larger frame. (tokio-util's default is 8 KiB, most of
/// an idle connection's memory.)
const READ_BUFFER_BYTES: usize = 4096;

/// Where the dispatcher's own connections come in (see [`super::Handle::internal_dial`]).
#[derive(Debug)]
pub(super) struct InternalDoor {
    pub(super) arbiter: ArbiterHandle,
    pub(super) settings: Arc<SessionSettings>,
    pub(super) admission: Arc<Admission>,
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
        let permit = (self.admission.admit(peer))
            .map_err(|limit| io::Error::other(format!("connection limit: {}", limit.as_str())))?;
        let _ = far.set_nodelay(true);
        let far = far.into_std()?;
        let settings = self.settings.clone();
        let grant = Arc::new(crate::security::Grant::internal("internal (this process)"));
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

/// The connection limits the accept loop enforces.
#[derive(Debug)]
pub(super) struct Admission {
    /// `tcp.max_connections` permits.
    pub(super) connections: Arc<Semaphore>,
    /// `tcp.max_connections_per_ip`, when set.
    pub(super) per_ip: Option<Arc<IpSlots>>,
}

impl Admission {
    /// A permit for a connection from `peer`, or why there is none.
    fn admit(&self, peer: SocketAddr) -> Result<ConnectionPermit, Limit> {
        let global =
            (self.connections.clone().try_acquire_owned()).map_err(|_| Limit::Connections)?;
        let per_ip = match &self.per_ip {
            Some(slots) => Some(slots.take(peer.ip()).ok_or(Limit::ConnectionsPerIp)?),
            None => None,
        };
        Ok(ConnectionPermit::new(global, per_ip))
    }
}

/// Accepts connections while there is a permit for them, and hands each to an io arbiter.
pub(super) async fn accept_loop(
    listener: TcpListener,
    arbiters: Vec<ArbiterHandle>,
    settings: Arc<SessionSettings>,
    admission: Arc<Admission>,
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
        if !settings.security.policy().admits(peer.ip()) {
            settings.jobs.metrics.record_refusal(Refusal::Address);
            warn!(%peer, "closing connection: address not allowed (security.allow / security.deny)");
            continue;
        }
        let permit = match admission.admit(peer) {
            Ok(permit) => permit,
            Err(limit) => {
                settings.jobs.metrics.record_limit(limit);
                warn!(%peer, limit = limit.as_str(), "closing connection: connection limit reached");
                continue;
            }
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
    internal: Option<Arc<crate::security::Grant>>,
) {
    let metrics = settings.jobs.metrics.clone();
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

/// A connection ready for its session.
struct Greeted {
    /// The first frame, for the session (`None`: it was the `AUTH` frame).
    first: Option<Frame>,
    frames: FramedRead<crate::net::ReadHalf, InboundCodec>,
    write: crate::net::WriteHalf,
    identity: Identity,
    /// The answer to its `AUTH` frame.
    greeting: Option<Frame>,
    partial_since: PartialSince,
    role: ConnType,
}

/// The TLS handshake, the first frame and the identity of a new connection, each refused
/// with a log line (and a counter) naming why; `None` when the connection is closed. An
/// `internal` connection (the dispatcher's own) has its grant already, and no TLS.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    settings: &Arc<SessionSettings>,
    internal: Option<Arc<crate::security::Grant>>,
) -> Option<Greeted> {
    let metrics = &settings.jobs.metrics;
    let limits = &settings.limits;
    let security = &settings.security;
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let stream = match security.tls() {
        _ if internal.is_some() => NetStream::Plain(stream),
        None => NetStream::Plain(stream),
        Some(tls) => {
            let secured = tokio::time::timeout_at(deadline, accept_tls(tls, stream)).await;
            match secured {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    metrics.record_refusal(Refusal::Tls);
                    warn!(%peer, cause = %err, "closing connection: TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    metrics.record_limit(Limit::Handshake);
                    warn!(%peer, "closing connection: no TLS handshake in time (tcp.handshake_timeout_ms)");
                    return None;
                }
            }
        }
    };
    // No read buffer for a connection that has sent nothing yet: sockets that connect and
    // wait (or never speak) cost ~3 KB of RSS in all until their first byte arrives.
    if let NetStream::Plain(plain) = &stream {
        if tokio::time::timeout_at(deadline, plain.readable())
            .await
            .is_err()
        {
            return handshake_timed_out(settings, peer);
        }
    }
    let cert_names = stream.peer_cert_names();
    // A plaintext connection beside TLS (`tls.allow_plaintext`, for v1 SDKs) may not carry
    // a token: its secret would cross the network in clear.
    let plaintext_beside_tls = security.tls().is_some() && matches!(stream, NetStream::Plain(_));
    let (read, mut write) = stream.into_split();
    let partial_since = PartialSince::default();
    let codec = InboundCodec::new(
        settings.max_frame_bytes,
        limits.incomplete_frames.clone(),
        partial_since.clone(),
    );
    let mut frames = FramedRead::with_capacity(read, codec, READ_BUFFER_BYTES);
    let first = tokio::time::timeout_at(deadline, frames.next()).await;
    let first = match first {
        Ok(Some(Ok(Ok(frame)))) => frame,
        Ok(Some(Ok(Err(bad)))) => {
            warn!(%peer, cause = %bad.error, "closing connection: its first frame was malformed");
            return None;
        }
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
            warn!(%peer, cause = %err, "closing connection: its first frame was refused");
            return None;
        }
        Ok(None) => {
            debug!(%peer, "connection closed before its first frame");
            return None;
        }
        Err(_) => {
            return handshake_timed_out(settings, peer);
        }
    };
    let role = first.sender();
    let policy = security.policy();
    let mut identity = Identity {
        grant: None,
        cert_names,
        generation: security.generation(),
    };
    if let Some(grant) = internal {
        identity.grant = Some(grant);
        return Some(Greeted {
            first: Some(first),
            frames,
            write,
            identity,
            greeting: None,
            partial_since,
            role,
        });
    }
    let (first, greeting) = match (&policy.auth, first) {
        // Auth off: a token is welcome and not needed.
        (None, Frame::CAuth { .. } | Frame::WAuth { .. }) => (
            None,
            Some(auth_result(SAuthResult::ACCEPTED, "auth is off")),
        ),
        (None, first) => (Some(first), None),
        (Some(auth), Frame::CAuth { secret } | Frame::WAuth { secret }) => {
            let refusal = match auth.token(&secret) {
                _ if plaintext_beside_tls => (
                    Refusal::Tls,
                    "tokens are taken over TLS only (this dispatcher has TLS on)".to_owned(),
                ),
                Some(grant) if grant.has(role_of(role)) => {
                    let accepted = auth_result(SAuthResult::ACCEPTED, &grant.name);
                    info!(%peer, grant = %grant.name, role = ?role, "authenticated");
                    identity.grant = Some(grant);
                    return Some(Greeted {
                        first: None,
                        frames,
                        write,
                        identity,
                        greeting: Some(accepted),
                        partial_since,
                        role,
                    });
                }
                Some(grant) => (
                    Refusal::Role,
                    format!("{} has no {} role", grant.name, role_name(role)),
                ),
                None => (Refusal::BadToken, "no token has this secret".to_owned()),
            };
            metrics.record_refusal(refusal.0);
            warn!(%peer, reason = %refusal.1, "closing connection: authentication refused");
            let refused = auth_result(SAuthResult::REFUSED, &refusal.1);
            write_last(&mut write, &refused, deadline).await;
            return None;
        }
        (Some(auth), first) => match auth.v1_peer(peer.ip(), &identity.cert_names) {
            Some(grant) if grant.has(role_of(role)) => {
                debug!(%peer, grant = %grant.name, "v1 peer granted");
                identity.grant = Some(grant);
                (Some(first), None)
            }
            grant => {
                let (refusal, reason) = match grant {
                    Some(grant) => (
                        Refusal::Role,
                        format!("{} has no {} role", grant.name, role_name(role)),
                    ),
                    None => (
                        Refusal::NoGrant,
                        "no AUTH frame, and no auth.v1_peers entry matches it".to_owned(),
                    ),
                };
                metrics.record_refusal(refusal);
                warn!(%peer, frame = first.name(), reason, "closing connection: not authenticated");
                return None;
            }
        },
    };
    Some(Greeted {
        first,
        frames,
        write,
        identity,
        greeting,
        partial_since,
        role,
    })
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

/// The role a connection of `conn_type` needs in its grant.
fn role_of(conn_type: ConnType) -> crate::security::Roles {
    match conn_type {
        ConnType::Worker => crate::security::Roles::WORKER,
        _ => crate::security::Roles::CLIENT,
    }
}

fn role_name(conn_type: ConnType) -> &'static str {
    match conn_type {
        ConnType::Worker => "worker",
        _ => "client",
    }
}

/// Counts and logs a connection closed for sending no first frame within
/// `tcp.handshake_timeout_ms`; the handshake's answer for it.
fn handshake_timed_out(settings: &SessionSettings, peer: SocketAddr) -> Option<Greeted> {
    settings.jobs.metrics.record_limit(Limit::Handshake);
    let timeout_ms = settings.limits.handshake_timeout.as_millis() as u64;
    warn!(%peer, timeout_ms, "closing connection: no first frame in time (tcp.handshake_timeout_ms)");
    None
}

/// Writes `frame` as a connection's last words, waiting at most until `deadline`.
async fn write_last(
    write: &mut crate::net::WriteHalf,
    frame: &Frame,
    deadline: tokio::time::Instant,
) {
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
