//! The one way a call becomes a job: [`FrontDoor::admit`], called by every front end (a TCP
//! client session for `C_DO_JOB` and `C_CALL`, the HTTP front end for `POST /call/{func}` and
//! nmid's gateway). A rule about which calls may start is written here once, so the two
//! transports cannot drift apart (they did once: only TCP counted an oversized call).
//!
//! In order, each refusal counted once and answered by the front end in its own protocol:
//!
//! 1. **Who**: the caller's grant must cover the function (`[auth]`). A caller without an
//!    established identity while auth is on is refused (deny by default). A peer dispatcher
//!    (a grant with the `peer` role) may name the caller it forwards for
//!    ([`CALLER_META_KEY`](crate::call::CALLER_META_KEY)): the call is then authorized and
//!    rate-limited as that caller, never as the peer link.
//! 2. **What**: nmid's checks (a function name and params) and the job frame's size against
//!    `tcp.max_frame_bytes` (`nmid_limit_hits_total{limit="outbound_frame_size"}`).
//! 3. **How often**: the caller's and the function's rate limits (`[rate_limit]`).
//! 4. The job actor starts.
//!
//! With auth and rate limits off, a call costs a match, the size check and a `None` check:
//! no allocation and no lock.

use std::net::IpAddr;
use std::sync::Arc;

use actix::Addr;
use tracing::debug;

use super::job::{JobActor, JobServices, Reply};
use crate::call::{CallSpec, ClientKey, DispatchError, JobId};
use crate::logging::Escaped;
use crate::metrics::{Limit, Metrics, Outcome, Refusal};
use crate::rate_limit::Refusal as OverLimit;
use crate::security::{Grant, Roles, Security};

/// Who makes a call, as its front end established it.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// Auth is off: anyone may call anything; counted by its address (`None`: a request
    /// without one, which a real listener never makes, counts in the overflow bucket).
    Anyone {
        /// The caller's address.
        ip: Option<IpAddr>,
    },
    /// Auth is on and the caller holds `grant`.
    Granted {
        /// What it may do.
        grant: &'a Arc<Grant>,
        /// Its address.
        ip: IpAddr,
    },
    /// No identity was established for it (a front end that forgot to): refused.
    Unknown,
}

/// Why a call was not admitted. The front end answers it in its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The caller may not call the function; `who` names the caller's grant.
    Forbidden {
        /// The grant's name (`token web`, `v1 peers php`), or why there is none.
        who: String,
    },
    /// The call is malformed or too large for a worker: `BadRequest` or `TooLarge`.
    Invalid(DispatchError),
    /// A rate limit refused it.
    OverLimit(OverLimit),
}

impl Refused {
    /// The error a caller is answered with.
    pub fn error(&self) -> DispatchError {
        match self {
            Refused::Forbidden { .. } => DispatchError::Forbidden,
            Refused::Invalid(error) => *error,
            Refused::OverLimit(_) => DispatchError::RateLimited,
        }
    }
}

/// Everything a call's admission needs; one per dispatcher, cloned into each front end.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    jobs: JobServices,
    /// `tcp.max_frame_bytes`: the largest job frame workers accept.
    max_frame_bytes: usize,
    /// The grants of callers named by peer dispatchers.
    security: Security,
}

impl FrontDoor {
    /// Admits calls into jobs of `jobs`, whose frames must fit `max_frame_bytes`, with the
    /// grants of `security`.
    pub fn new(jobs: JobServices, max_frame_bytes: usize, security: Security) -> Self {
        Self {
            jobs,
            max_frame_bytes,
            security,
        }
    }

    /// The services the jobs get.
    pub fn jobs(&self) -> &JobServices {
        &self.jobs
    }

    /// The dispatcher's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.jobs.metrics
    }

    /// The address lists, grants and TLS in force.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Admits `spec` from `caller` as the job `job_id`, which answers through `reply`; or
    /// says why not (counted and logged here, answered by the front end).
    pub fn admit(
        &self,
        job_id: JobId,
        mut spec: CallSpec,
        caller: Caller<'_>,
        reply: Reply,
    ) -> Result<Addr<JobActor>, Refused> {
        let metrics = &self.jobs.metrics;
        let client = self.authorize(&spec, caller).inspect_err(|refused| {
            metrics.record_refusal(Refusal::Call);
            metrics.record_refused(Outcome::Forbidden);
            if let Refused::Forbidden { who } = refused {
                debug!(caller = %Escaped(who.as_bytes()), function = %Escaped(&spec.function.0), "call refused: not in its grant");
            }
        })?;
        if let Err(error) = spec.validate(self.max_frame_bytes) {
            if error == DispatchError::TooLarge {
                metrics.record_limit(Limit::OutboundFrameSize);
            }
            metrics.record_refused(Outcome::of_error(error));
            return Err(Refused::Invalid(error));
        }
        if let Some(limits) = &self.jobs.rate_limits {
            if let Err(refusal) = limits.check(&spec.function, &client) {
                let configured = limits.limits_function(&spec.function);
                metrics.record_rate_limited(&spec.function, refusal.scope, configured);
                return Err(Refused::OverLimit(refusal));
            }
        }
        spec.caller = Some(client);
        Ok(JobActor::start(job_id, spec, reply, &self.jobs))
    }

    /// Whom `caller` counts as for `spec` if its grant covers the call: itself, or the
    /// caller a peer dispatcher names.
    fn authorize(&self, spec: &CallSpec, caller: Caller<'_>) -> Result<ClientKey, Refused> {
        let (grant, ip) = match caller {
            Caller::Anyone { ip } => return Ok(ip.map_or(ClientKey::Overflow, ClientKey::Ip)),
            Caller::Granted { grant, ip } => (grant, ip),
            Caller::Unknown => {
                return Err(Refused::Forbidden {
                    who: "a caller with no identity".to_owned(),
                })
            }
        };
        let vouched = match grant.has(Roles::PEER) {
            true => spec.vouched_caller(),
            false => None,
        };
        let found: Arc<Grant>;
        let (grant, client): (&Grant, ClientKey) = match vouched {
            None => (grant, grant.client_key(ip)),
            Some(named) => {
                let policy = self.security.policy();
                let Some(grant_here) = policy.auth.as_ref().and_then(|a| a.vouched(&named)) else {
                    return Err(Refused::Forbidden {
                        who: format!("{named:?}, named by {}, granted nothing here", grant.name),
                    });
                };
                found = grant_here;
                (&found, named)
            }
        };
        match grant.may_call(&spec.function.0) {
            true => Ok(client),
            false => Err(Refused::Forbidden {
                who: grant.name.clone(),
            }),
        }
    }
}
