//! What both ends of an nmid connection share: the wire protocol (nmid v1, byte-exact, and
//! its tagged extension), nmid's RetStruct result convention, the connection itself (plain
//! TCP or TLS, the token presented first) and the trace context carried in a call's
//! metadata. The client library (`nmid-client`), the worker library (`nmid-worker`)
//! and the dispatcher (`nmid`) sit on it; it knows none of them.
//!
//! # Layout
//!
//! - [`codec`]: frames and bodies of the wire protocol; pure, no I/O.
//! - [`escape`]: peer-chosen strings (function names, ...) as a log line may hold them.
//! - [`retstruct`]: nmid's `{"Code","Msg","Data"}` result convention.
//! - [`net`]: the byte stream under a connection and how a client or worker dials one.
//! - [`trace`]: the W3C trace context between hops; a span per hop with the `otlp` feature.
//! - `tls` (feature `tls`): the client side of TLS (whom to trust, client certificates).
//! - `discovery` (feature `discovery`): the dispatchers' membership records in etcd, and
//!   the follower that keeps them up to date.
//!
//! # Features
//!
//! None is on by default, so the default build needs no `protoc` and no TLS stack:
//! `discovery` (etcd-client), `tls` (rustls with ring), `otlp` (OpenTelemetry and the OTLP
//! exporter).
//!
//! # Examples
//!
//! A frame survives its bytes:
//!
//! ```
//! use bytes::BytesMut;
//! use nmid_proto::codec::{self, Frame, DEFAULT_MAX_FRAME_BYTES};
//! use nmid_proto::retstruct::RetStruct;
//!
//! let mut buf = BytesMut::new();
//! let frame = Frame::WJobResult(codec::TaggedResult {
//!     id: 7,
//!     ret: RetStruct::ok("NMID").encode().into(),
//! });
//! codec::encode(&frame, &mut buf).unwrap();
//! let decoded = codec::decode(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
//! assert_eq!(decoded, Some(frame));
//! ```
#![deny(missing_docs)]

pub mod codec;
#[cfg(feature = "discovery")]
pub mod discovery;
pub mod escape;
pub mod net;
pub mod retstruct;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trace;
