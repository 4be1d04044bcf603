//! Who may see a background job: the one rule the HTTP API and the tagged client session
//! both apply (`docs/jobs.md`).
//!
//! With auth off everyone sees every job. With auth on a job is its submitter's: a caller
//! sees only the jobs whose `caller` is its own [`ClientKey::to_meta`](crate::call::ClientKey::to_meta),
//! and a grant with the `admin` role sees them all. A job the caller may not see is
//! answered as one that does not exist, so an id tells nothing of other callers' jobs.

use std::net::IpAddr;

use super::record::JobRecord;
use crate::security::{Grant, Roles};

/// Whose jobs a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// Every job (auth off, or the `admin` role).
    All,
    /// Only the jobs whose `caller` is this (`token:<name>`, `ip:<addr>`).
    Owner(String),
}

impl Viewer {
    /// The viewer holding `grant` (`None`: auth is off) and calling from `ip`.
    pub fn of(grant: Option<&Grant>, ip: IpAddr) -> Self {
        match grant {
            None => Viewer::All,
            Some(grant) if grant.has(Roles::ADMIN) => Viewer::All,
            Some(grant) => {
                let key = grant.client_key(ip.to_canonical());
                // A key that names no one sees nothing (no job's caller is empty).
                let owner = key.to_meta().map_or_else(String::new, |meta| {
                    String::from_utf8_lossy(&meta).into_owned()
                });
                Viewer::Owner(owner)
            }
        }
    }

    /// A viewer that sees nothing (no access was established).
    pub fn nobody() -> Self {
        Viewer::Owner(String::new())
    }

    /// Whether it may see `record`.
    pub fn sees(&self, record: &JobRecord) -> bool {
        match self {
            Viewer::All => true,
            Viewer::Owner(owner) => !owner.is_empty() && record.caller.as_deref() == Some(owner),
        }
    }
}
