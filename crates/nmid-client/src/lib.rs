//! The nmid client library: call functions on an nmid dispatcher from async Rust (tokio).
//! It knows nothing of the dispatcher but its protocol (`nmid-proto`), and needs no actix.
//!
//! In the default **tagged** mode every call carries a request id, so thousands of calls run
//! concurrently over one connection, each with its own deadline and trace metadata, and each
//! reply is matched by id. In **v1** mode (for nmid's Go dispatcher) the client speaks plain
//! `C_DO_JOB`; v1 replies carry no id, so a v1 connection runs one call at a time.
//!
//! A [`Client`] is cheap to clone and can be shared across tasks and threads. When the
//! connection drops (the dispatcher restarted), calls in flight fail with
//! [`ClientError::ConnectionLost`] and the next call connects again.
//!
//! A **discovering** client (feature `discovery`: `Client::discover`,
//! `ClientBuilder::discover`) finds the dispatchers of a cluster in etcd, spreads calls over
//! those that serve each function and fails over when one dies: calls in flight on it fail
//! with `ConnectionLost` (at most once), unless marked [`CallOptions::idempotent`], which
//! are sent to another dispatcher.
//!
//! # Examples
//!
//! The seed's client: `ToUpper` with `{"name": "nmid"}` (`cargo run -p nmid-client
//! --example client` runs it against `make run`'s dispatcher; here a stand-in dispatcher
//! answers):
//!
//! ```
//! use nmid_client::Client;
//! use serde::Serialize;
//! # use futures_util::{SinkExt, StreamExt};
//! # use nmid_client::nmid_proto::codec::{Frame, NmidCodec, TaggedResult};
//! # use nmid_client::RetStruct;
//!
//! /// ToUpper's params, as the worker reads them (a msgpack map `{"name": ...}`).
//! #[derive(Serialize)]
//! struct Params {
//!     name: String,
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), nmid_client::ClientError> {
//! #   // The stand-in dispatcher: answers each call of one connection as the demo worker's
//! #   // ToUpper would answer {"name": "nmid"}.
//! #   let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #   let stand_in_addr = listener.local_addr().unwrap().to_string();
//! #   tokio::spawn(async move {
//! #       let (socket, _) = listener.accept().await.unwrap();
//! #       let mut frames = tokio_util::codec::Framed::new(socket, NmidCodec::new(1 << 20));
//! #       while let Some(Ok(Frame::CCall(call))) = frames.next().await {
//! #           let ret = RetStruct::ok("NMID").encode().into();
//! #           let reply = Frame::SCallResult(TaggedResult { id: call.id, ret });
//! #           frames.send(reply).await.unwrap();
//! #       }
//! #   });
//!     // The dispatcher: "127.0.0.1:6808" for `make run`'s; here the stand-in's address.
//!     let addr: String = stand_in_addr;
//!     let client = Client::connect(addr).await?;
//!     // The `Data` of the function's RetStruct (a non-zero `Code` is an error).
//!     let params = Params { name: "nmid".to_owned() };
//!     let upper = client.call_data("ToUpper", &params).await?;
//!     assert_eq!(&upper[..], b"NMID");
//!     Ok(())
//! }
//! ```
//!
//! **Background jobs** ([`Client::submit`], [`Client::wait_job`]): a call stored by the
//! dispatcher and run later, retried, its result kept and read back by id (tagged mode).
//!
//! # Features
//!
//! The default build is light (tokio, serde; no `protoc`, no TLS stack):
//!
//! - `discovery`: `Client::discover` and `ClientBuilder::discover`, the dispatchers of a
//!   cluster found in etcd, with failover.
//! - `tls`: `ClientBuilder::tls`, TLS to the dispatcher (rustls with ring).
//! - `otlp`: a span per call with its trace context sent along, and the OTLP exporter
//!   (`trace::tracer_provider`).
#![deny(missing_docs)]

mod connection;
#[cfg(feature = "discovery")]
mod discover;
mod error;
mod jobs;
mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ClientError;
pub use jobs::{JobState, JobStatus, Priority, SubmitOptions, Submitted};
pub use nmid_proto;
pub use nmid_proto::codec::{Metadata, ParamsType};
#[cfg(feature = "discovery")]
pub use nmid_proto::discovery::{Discovery, MemberRecord};
pub use nmid_proto::net::{Access, InternalDial};
pub use nmid_proto::retstruct::RetStruct;
#[cfg(feature = "tls")]
pub use nmid_proto::tls::ClientTls;
pub use nmid_proto::trace;
pub use stream::{CallStream, StreamEvent, StreamItem};

use connection::{Tagged, V1};
#[cfg(feature = "discovery")]
use discover::{Discovered, DiscoveredCall};
use nmid_proto::codec::DEFAULT_MAX_FRAME_BYTES;
use trace::Hop;
use tracing::Instrument;

/// The per-call deadline when neither the call nor the builder sets one.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Tagged extension frames: pipelined calls, deadlines, metadata. Needs this dispatcher.
    #[default]
    Tagged,
    /// nmid protocol v1, for nmid's own dispatcher: one call at a time per connection, no
    /// deadline or metadata on the wire.
    V1,
}

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The call's deadline; `None` uses the client's default.
    pub timeout: Option<Duration>,
    /// How the params are encoded; msgpack unless set.
    pub params_type: Option<ParamsType>,
    /// Metadata sent with the call (tagged mode), e.g. `traceparent`.
    pub metadata: Metadata,
    /// The call may run more than once: a discovering client whose dispatcher dies with the
    /// call in flight sends it to another one instead of failing with `ConnectionLost`.
    pub idempotent: bool,
}

impl CallOptions {
    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the params encoding.
    pub fn params_type(mut self, params_type: ParamsType) -> Self {
        self.params_type = Some(params_type);
        self
    }

    /// Marks the call idempotent (see [`CallOptions::idempotent`]).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Adds one metadata pair.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        ));
        self
    }
}

/// Builds a [`Client`] with non-default settings.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: String,
    protocol: Protocol,
    timeout: Duration,
    max_frame_bytes: usize,
    #[cfg(feature = "discovery")]
    discovery: Option<Discovery>,
    access: Access,
    #[cfg(feature = "tls")]
    tls: Option<ClientTls>,
}

impl ClientBuilder {
    /// Presents the token `secret` to the dispatcher (`[auth]`) on every connection. Without
    /// this, the secret in `NMID_TOKEN` if set.
    pub fn token(mut self, secret: impl Into<Bytes>) -> Self {
        self.access.token = Some(secret.into());
        self
    }

    /// Connects with TLS: trusting `tls.ca_file` (else the system's trust store), checking
    /// the name `tls.server_name` (else the address's host), presenting a client
    /// certificate for mutual TLS when set. (Feature `tls`.)
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects the way `access` says: a TLS connector built once and shared, the token, a
    /// dialer of one's own (the dispatcher's links to its peers, a worker's nested calls).
    /// A later [`ClientBuilder::token`] or `tls(..)` still applies on top.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The access of the connections: the TLS connector built from the files, or why not.
    fn build_access(&self) -> Result<Access, String> {
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut access = self.access.clone();
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            access.tls = Some(tls.connector()?);
        }
        Ok(access)
    }

    /// Finds the dispatchers in etcd at `endpoints` (`http://host:2379`) instead of the
    /// builder's address; see [`Client::discover`]. (Feature `discovery`.)
    #[cfg(feature = "discovery")]
    pub fn discover<E: Into<String>>(self, endpoints: impl IntoIterator<Item = E>) -> Self {
        self.discovery(Discovery::new(endpoints))
    }

    /// Like [`ClientBuilder::discover`], with etcd credentials, timeouts or a membership
    /// prefix other than the defaults (`Discovery`'s fields).
    #[cfg(feature = "discovery")]
    pub fn discovery(mut self, discovery: Discovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Speaks `protocol` (tagged by default).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The deadline of calls that do not set their own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest frame body sent or accepted (default 16 MiB, the dispatcher's default
    /// `tcp.max_frame_bytes`; set both alike). A call over it fails at once with
    /// [`ClientError::TooLarge`], before it is sent: the dispatcher would close the connection
    /// on it, and every call in flight on it would fail.
    pub fn max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }

    /// Connects now, so a wrong address fails here rather than at the first call.
    #[cfg_attr(not(feature = "discovery"), allow(unused_mut))]
    pub async fn connect(mut self) -> Result<Client, ClientError> {
        #[cfg(feature = "discovery")]
        if let Some(discovery) = self.discovery.take() {
            return self.discovering(discovery).await;
        }
        let client = self.build();
        client.inner.transport.ensure_connected().await?;
        Ok(client)
    }

    /// A discovering client: waits for etcd's first list of dispatchers.
    #[cfg(feature = "discovery")]
    async fn discovering(self, discovery: Discovery) -> Result<Client, ClientError> {
        if self.protocol != Protocol::Tagged {
            return Err(ClientError::BadRequest(
                "a discovering client speaks the tagged protocol".to_owned(),
            ));
        }
        let settings = Arc::new(Settings {
            addr: discovery.etcd.endpoints.join(","),
            timeout: self.timeout,
            max_frame_bytes: self.max_frame_bytes,
            access: self.build_access(),
        });
        let transport = Transport::Discover(Discovered::start(settings.clone(), discovery).await?);
        Ok(Client {
            inner: Arc::new(Inner {
                settings,
                transport,
                next_request: AtomicU64::new(1),
            }),
        })
    }

    /// The client without connecting: the first call connects (for a program that must
    /// not wait on the dispatcher at start-up, such as the dispatcher's links to its peers).
    /// A discovering builder connects in [`ClientBuilder::connect`] only.
    pub fn build(self) -> Client {
        let access = self.build_access();
        let settings = Arc::new(Settings {
            addr: self.addr,
            timeout: self.timeout,
            max_frame_bytes: self.max_frame_bytes,
            access,
        });
        let transport = match self.protocol {
            Protocol::Tagged => Transport::Tagged(Tagged::new(settings.clone())),
            Protocol::V1 => Transport::V1(V1::new(settings.clone())),
        };
        #[cfg(feature = "discovery")]
        debug_assert!(
            self.discovery.is_none(),
            "discovering clients start in connect"
        );
        Client {
            inner: Arc::new(Inner {
                settings,
                transport,
                next_request: AtomicU64::new(1),
            }),
        }
    }
}

/// What the transports share.
#[derive(Debug)]
struct Settings {
    addr: String,
    timeout: Duration,
    max_frame_bytes: usize,
    /// TLS and token; the error of a TLS setup that failed, for every connection attempt.
    access: Result<Access, String>,
}

#[derive(Debug)]
enum Transport {
    Tagged(Tagged),
    V1(V1),
    #[cfg(feature = "discovery")]
    Discover(Discovered),
}

impl Transport {
    async fn ensure_connected(&self) -> Result<(), ClientError> {
        match self {
            Transport::Tagged(t) => t.ensure_connected().await,
            Transport::V1(v) => v.ensure_connected().await,
            #[cfg(feature = "discovery")]
            Transport::Discover(_) => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Inner {
    settings: Arc<Settings>,
    transport: Transport,
    next_request: AtomicU64,
}

/// A connection to one dispatcher. Clones share it.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects in tagged mode with default settings.
    pub async fn connect(addr: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(addr).connect().await
    }

    /// A builder for `addr` (`HOST:PORT`).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            protocol: Protocol::Tagged,
            timeout: DEFAULT_CALL_TIMEOUT,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            #[cfg(feature = "discovery")]
            discovery: None,
            access: Access {
                token: Access::token_from_env(),
                ..Access::default()
            },
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A client of the cluster whose dispatchers are registered in etcd at `endpoints`
    /// (`http://host:2379`): it follows them as they come and go, spreads calls over those
    /// serving each function, and fails over when one dies (see the crate's docs). (Feature
    /// `discovery`.)
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), nmid_client::ClientError> {
    /// use nmid_client::{CallOptions, Client};
    ///
    /// let client = Client::discover(["http://127.0.0.1:2379"]).await?;
    /// // {"name": "nmid"} as msgpack; retried on another dispatcher if one dies mid-call.
    /// let params = &b"\x81\xa4name\xa4nmid"[..];
    /// let ret = client
    ///     .call_with("ToUpper", params, CallOptions::default().idempotent())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "discovery")]
    pub async fn discover<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
    ) -> Result<Self, ClientError> {
        Self::builder("").discover(endpoints).connect().await
    }

    /// The dispatchers a discovering client knows now (empty for a client of one address).
    #[cfg(feature = "discovery")]
    pub fn dispatchers(&self) -> Vec<MemberRecord> {
        match &self.inner.transport {
            Transport::Discover(d) => d.members(),
            _ => Vec::new(),
        }
    }

    /// The dispatcher address (a discovering client: its etcd endpoints).
    pub fn addr(&self) -> &str {
        &self.inner.settings.addr
    }

    /// Calls `function` with msgpack `params`; returns the worker's raw result bytes (by
    /// nmid's convention a msgpack RetStruct; see [`Client::call_data`]).
    pub async fn call(
        &self,
        function: &str,
        params: impl Into<Bytes>,
    ) -> Result<Bytes, ClientError> {
        self.call_with(function, params, CallOptions::default())
            .await
    }

    /// Calls `function` with `params` and per-call `options`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: nmid_client::Client) -> Result<(), nmid_client::ClientError> {
    /// use std::time::Duration;
    /// use nmid_client::{CallOptions, ClientError};
    ///
    /// let options = CallOptions::default()
    ///     .timeout(Duration::from_millis(250))
    ///     .meta("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// match client.call_with("ToUpper", &b"\x81\xa4name\xa4nmid"[..], options).await {
    ///     Ok(ret) => println!("{} bytes of RetStruct", ret.len()),
    ///     Err(ClientError::Timeout) => println!("too slow"),
    ///     Err(ClientError::NoWorker) => println!("nobody serves ToUpper"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call_with(
        &self,
        function: &str,
        params: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<Bytes, ClientError> {
        let params = params.into();
        if function.is_empty() || params.is_empty() {
            return Err(ClientError::BadRequest(
                "function name and params must not be empty".to_owned(),
            ));
        }
        let timeout = options.timeout.unwrap_or(self.inner.settings.timeout);
        let params_type = options.params_type.unwrap_or(ParamsType::MSGPACK);
        let span = trace::hop_span(Hop::Client, function, Some(&options.metadata));
        let metadata = trace::with_span_context(&span, options.metadata);
        let function = Bytes::copy_from_slice(function.as_bytes());
        let result = match &self.inner.transport {
            Transport::Tagged(t) => {
                let request_id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
                t.call(request_id, function, params, params_type, timeout, metadata)
                    .instrument(span.clone())
                    .await
            }
            Transport::V1(v) => {
                v.call(function, params, params_type, timeout)
                    .instrument(span.clone())
                    .await
            }
            #[cfg(feature = "discovery")]
            Transport::Discover(d) => {
                let call = DiscoveredCall {
                    function,
                    params,
                    params_type,
                    timeout,
                    metadata,
                    idempotent: options.idempotent,
                };
                d.call(call).instrument(span.clone()).await
            }
        };
        trace::finish(
            &span,
            result.as_ref().map_or_else(ClientError::kind, |_| "ok"),
        );
        result
    }

    /// Calls `function` with `params` encoded as a msgpack map (what nmid's SDKs send) and
    /// returns the `Data` of the worker's RetStruct; a non-zero `Code` is
    /// [`ClientError::Function`].
    pub async fn call_data<P: Serialize + ?Sized>(
        &self,
        function: &str,
        params: &P,
    ) -> Result<Bytes, ClientError> {
        let params =
            rmp_serde::to_vec_named(params).map_err(|e| ClientError::Encode(e.to_string()))?;
        let ret = self.call(function, params).await?;
        let ret = RetStruct::decode(&ret).map_err(|e| ClientError::Decode(e.to_string()))?;
        if ret.code != 0 {
            return Err(ClientError::Function {
                code: ret.code,
                message: ret.msg,
            });
        }
        Ok(ret.data)
    }

    /// Like [`Client::call_data`], with the `Data` decoded from msgpack into `R`.
    pub async fn call_msgpack<P, R>(&self, function: &str, params: &P) -> Result<R, ClientError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let data = self.call_data(function, params).await?;
        rmp_serde::from_slice(&data).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
