//! Background jobs.

pub mod callback;
