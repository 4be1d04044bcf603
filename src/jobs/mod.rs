//! Background jobs: calls submitted now and run later, whose state and result are kept in
//! an embedded store (`jobs.data_dir`) and read back by id (`docs/jobs.md`).
//!
//! - [`record`]: one job as stored, its state and id.
//! - [`book`]: the jobs in memory as plain data: order, delays, retries, unique keys,
//!   bounds.
//! - [`store`]: the redb file and the thread that writes it (group commit, `jobs.fsync`).
//!
//! The actor that carries them out is [`crate::actors::background`].

pub mod book;
pub mod options;
pub mod record;
pub mod store;

pub use book::{Accepted, AttemptEnd, Book, Full, Limits, NewJob, NotCancelled};
pub use record::{BackgroundId, JobRecord, JobState};
pub use store::{Change, Fsync, Store, StoreError};
