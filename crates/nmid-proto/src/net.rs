//! The byte stream under an nmid connection: plain TCP, or TLS over TCP (feature `tls`).
//! Both halves are enums rather than boxed trait objects, so a plain connection (the
//! default) pays a branch, not an allocation and a virtual call, per read and write.
//!
//! [`Access`] is how a client or worker reaches a dispatcher: TLS or not, the token it
//! presents first, or a dialer of its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A TLS stream over TCP, either side of the handshake.
#[cfg(feature = "tls")]
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// A connected stream: plain or TLS.
#[derive(Debug)]
pub enum NetStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl NetStream {
    /// Splits the stream into halves that can be used by two tasks (or actors) at once.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            NetStream::Plain(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            #[cfg(feature = "tls")]
            NetStream::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
        }
    }

    /// The DNS names (subjectAltName) of the certificate the peer presented in the TLS
    /// handshake, if it presented one (mutual TLS).
    #[cfg(feature = "tls")]
    pub fn peer_cert_names(&self) -> Vec<String> {
        match self {
            NetStream::Plain(_) => Vec::new(),
            NetStream::Tls(stream) => {
                let certs = match stream.as_ref() {
                    tokio_rustls::TlsStream::Server(s) => s.get_ref().1.peer_certificates(),
                    tokio_rustls::TlsStream::Client(s) => s.get_ref().1.peer_certificates(),
                };
                certs
                    .and_then(|chain| chain.first())
                    .map(crate::tls::cert_dns_names)
                    .unwrap_or_default()
            }
        }
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The read half of a [`NetStream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The write half of a [`NetStream`].
#[derive(Debug)]
pub enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    #[cfg(feature = "tls")]
    Tls(tokio::io::WriteHalf<TlsStream>),
}

impl WriteHalf {
    /// Writes what the socket takes now, without waiting (plain TCP only: a TLS record
    /// cannot be written in part). For a last answer on the way out.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(write) => write.try_write(bytes),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(read) => Pin::new(read).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(write) => Pin::new(write).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(write) => write.is_write_vectored(),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(write) => write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_flush(cx),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

/// Opens the TCP connection instead of dialing the address: a dialer of one's own (the
/// dispatcher's embedded demo worker connects through one inside the dispatcher's process).
pub type InternalDial = std::sync::Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, io::Result<TcpStream>> + Send + Sync,
>;

/// How a client or worker reaches a dispatcher: with TLS or not, and the token secret it
/// presents first (`AUTH`).
#[derive(Clone, Default)]
pub struct Access {
    /// TLS, with whom to trust.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Connector>,
    /// The secret of a token (`[[auth.tokens]]`).
    pub token: Option<bytes::Bytes>,
    /// Instead of dialing the address: a dialer of one's own (see [`InternalDial`]).
    pub internal: Option<InternalDial>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        let mut access = f.debug_struct("Access");
        #[cfg(feature = "tls")]
        access.field("tls", &self.tls.is_some());
        access
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("internal", &self.internal.is_some())
            .finish()
    }
}

impl Access {
    /// The token secret in `NMID_TOKEN`, if set and not empty.
    pub fn token_from_env() -> Option<bytes::Bytes> {
        std::env::var("NMID_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(bytes::Bytes::from)
    }

    /// Connects to `addr` within `timeout`: TCP (no Nagle), then the TLS handshake if set.
    pub async fn dial(&self, addr: &str, timeout: std::time::Duration) -> io::Result<NetStream> {
        let connect = async {
            let stream = match &self.internal {
                Some(internal) => internal().await?,
                None => TcpStream::connect(addr).await?,
            };
            let _ = stream.set_nodelay(true);
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.tls {
                return Ok(NetStream::Tls(Box::new(tls.connect(addr, stream).await?)));
            }
            Ok(NetStream::Plain(stream))
        };
        tokio::time::timeout(timeout, connect).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        })?
    }
}
