//! `nmid-faas`: serve the functions of a TOML file as nmid functions, on the worker library.
//!
//! Two kinds of function (see `config/functions.toml`):
//! - **exec** ([`exec`]): a command runs once per call, params on stdin, stdout as the
//!   result (OpenFaaS's classic watchdog style);
//! - **http** ([`http`]): each call is POSTed to a local HTTP service, its 2xx body as the
//!   result (the HTTP sidecar).
//!
//! The file ([`spec`]) is checked whole before it is used; the [`runner`] applies each new
//! version of it without a restart and without losing a call in flight. [`params`] turns a
//! call's params into what a program or service reads; [`orphans`] kills what a call's
//! processes left behind outside their process group.

pub mod exec;
pub mod http;
pub mod orphans;
pub mod params;
pub mod runner;
pub mod serve;
pub mod spec;

pub use runner::{resolve_dispatchers, Applied, Credentials, Dispatchers, Runner};
pub use serve::{read_secret, serve, ServeError, ServeOptions};
pub use spec::{FaasSpec, SpecError};
