//! nmid: a microservice RPC dispatcher ("midfield commander"), wire-compatible with nmid
//! protocol v1, built on actix actors.
//!
//! # Layout
//!
//! - [`codec`]: frames and bodies of the nmid wire protocol; pure, no I/O.
//! - [`actors`]: the dispatcher: connection, worker, registry and job actors.
//! - [`server`]: start-up (listener, arbiters) and ordered shutdown; [`server::run`].
//! - [`config`]: the configuration, defaults from `config/nmid.toml`.
//! - [`retstruct`]: nmid's `{"Code","Msg","Data"}` result convention.
//! - [`demo`]: the embedded `ToUpper` worker of `nmid --demo`.
#![warn(missing_docs)]

pub mod actors;
pub mod codec;
pub mod config;
pub mod demo;
pub mod retstruct;
pub mod server;
