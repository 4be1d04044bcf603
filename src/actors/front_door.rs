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
//! 4. The job actor starts, with the call's caller in [`CallSpec::caller`] and the
//!    [reserved](crate::call::RESERVED_META) metadata its front end may not write gone: any
//!    `nmid-caller` entry (only this door names a caller, to a peer when the call is
//!    forwarded, never a client, on whatever path), and the HTTP front end's entries
//!    (`http-header-*`, `http-query`, `content-type`, which functions act on) unless the
//!    call came through it ([`FrontEnd::Http`]) or from a peer dispatcher (a grant with the
//!    `peer` role, passing on what its own HTTP front end wrote). With auth off nothing is
//!    verified, and a call marked forwarded by a dispatcher keeps them: turn auth on to make
//!    them trustworthy.
//!
//! With auth and rate limits off, a call costs a match, the size check and a `None` check:
//! no allocation and no lock.

use std::net::IpAddr;
use std::sync::Arc;

use actix::Addr;
use tracing::debug;

use super::job::{JobActor, JobServices, PartialSink, Reply};
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

/// The front end a call came through, which decides the [reserved](crate::call::RESERVED_META)
/// metadata it may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// A client (or peer dispatcher) connection of the nmid protocol.
    Tcp,
    /// The HTTP front end, which writes the HTTP entries itself from the request.
    Http,
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

    /// Admits `spec` from `caller`, through `front_end`, as the job `job_id`, which answers
    /// through `reply` (and hands its worker's partial results and progress to `partials`,
    /// if given); or says why not (counted and logged here, answered by the front end).
    pub fn admit(
        &self,
        job_id: JobId,
        spec: CallSpec,
        caller: Caller<'_>,
        front_end: FrontEnd,
        reply: Reply,
        partials: Option<PartialSink>,
    ) -> Result<Addr<JobActor>, Refused> {
        let mut spec = spec;
        self.check(&mut spec, caller, front_end)?;
        Ok(JobActor::start(job_id, spec, reply, partials, &self.jobs))
    }

    /// Every check of [`FrontDoor::admit`] without starting the job: the call as it would
    /// run (its caller named, the metadata its front end may not write gone), or why not.
    /// A background job is vetted so when it is submitted, and runs later as that caller.
    pub fn vet(
        &self,
        mut spec: CallSpec,
        caller: Caller<'_>,
        front_end: FrontEnd,
    ) -> Result<CallSpec, Refused> {
        self.check(&mut spec, caller, front_end)?;
        Ok(spec)
    }

    /// The checks of [`FrontDoor::vet`] on `spec` where it lies: every synchronous call
    /// passes here, so its spec is not moved in and out of a `Result` on the way. Always
    /// inlined: it is [`FrontDoor::admit`]'s body, as it was before `vet` was split out (an
    /// out-of-line call here costs every call about 40 instructions).
    #[inline(always)]
    fn check(
        &self,
        spec: &mut CallSpec,
        caller: Caller<'_>,
        front_end: FrontEnd,
    ) -> Result<(), Refused> {
        let metrics = &self.jobs.metrics;
        let client = self.authorize(spec, caller).inspect_err(|refused| {
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
        spec.forget_reserved_meta(keeps_http_meta(spec, caller, front_end));
        Ok(())
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

/// Whether `spec` may keep the HTTP front end's [reserved](crate::call::RESERVED_META)
/// metadata: it came through that front end, or a peer dispatcher passes on what its own
/// front end wrote (a `peer` grant; with auth off, which verifies no one, a call marked
/// forwarded).
fn keeps_http_meta(spec: &CallSpec, caller: Caller<'_>, front_end: FrontEnd) -> bool {
    front_end == FrontEnd::Http
        || match caller {
            Caller::Granted { grant, .. } => grant.has(Roles::PEER),
            Caller::Anyone { .. } => spec.is_forwarded(),
            Caller::Unknown => false,
        }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::Actor;
    use bytes::Bytes;

    use super::*;
    use crate::actors::registry::Registry;
    use crate::call::CALLER_META_KEY;
    use crate::codec::{ParamsType, HANDLE_TYPE_ENCODE};
    use crate::config::{Config, TokenConfig};

    fn token(name: &str, secret: &str, roles: &[&str], functions: &[&str]) -> TokenConfig {
        TokenConfig {
            name: name.to_owned(),
            secret: secret.to_owned(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            functions: functions.iter().map(|f| f.to_string()).collect(),
            ..TokenConfig::default()
        }
    }

    /// A door with auth on: `web` may call `A`, `peers` forwards for others.
    fn door() -> (FrontDoor, Arc<Grant>, Arc<Grant>) {
        let mut config = Config::default();
        config.auth.enabled = true;
        config.auth.tokens = vec![
            token("web", "web-secret-0123456789", &["client"], &["A"]),
            token("peers", "peers-secret-0123456789", &["peer"], &[]),
        ];
        let security = Security::from_config(&config).unwrap();
        let policy = security.policy();
        let auth = policy.auth.as_ref().unwrap();
        let web = auth.token(b"web-secret-0123456789").unwrap();
        let peers = auth.token(b"peers-secret-0123456789").unwrap();
        let jobs = JobServices {
            retries: 0,
            ..JobServices::with_registry(Registry::new(16).start())
        };
        (FrontDoor::new(jobs, 1024, security), web, peers)
    }

    fn spec(function: &str, caller: Option<&str>) -> CallSpec {
        let mut spec = CallSpec::new(
            Bytes::copy_from_slice(function.as_bytes()),
            ParamsType::MSGPACK,
            HANDLE_TYPE_ENCODE,
            Bytes::from_static(b"\x80"),
            Duration::from_secs(1),
        );
        if let Some(caller) = caller {
            let meta = vec![(
                Bytes::from_static(CALLER_META_KEY.as_bytes()),
                Bytes::copy_from_slice(caller.as_bytes()),
            )];
            spec.meta = Some(Arc::new(meta));
        }
        spec
    }

    /// Who a call counts as, and whether its grant covers it: anyone with auth off (by
    /// address); a token's holder as the token, only within its grant; nobody without an
    /// identity; a caller named by a `peer` link as that caller, within that caller's
    /// grant; a name from anyone else ignored.
    #[actix_rt::test]
    async fn calls_are_authorized_as_their_callers() {
        let (door, web, peers) = door();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let anyone = Caller::Anyone { ip: Some(ip) };
        assert_eq!(
            door.authorize(&spec("B", None), anyone),
            Ok(ClientKey::Ip(ip))
        );
        let as_web = Caller::Granted { grant: &web, ip };
        assert_eq!(
            door.authorize(&spec("A", None), as_web),
            Ok(ClientKey::Token("web".into()))
        );
        assert!(matches!(
            door.authorize(&spec("B", None), as_web),
            Err(Refused::Forbidden { .. })
        ));
        assert!(door.authorize(&spec("A", None), Caller::Unknown).is_err());
        // A client naming another caller is still itself.
        let named = spec("A", Some("token:peers"));
        assert_eq!(
            door.authorize(&named, as_web),
            Ok(ClientKey::Token("web".into()))
        );
        let via_peer = Caller::Granted { grant: &peers, ip };
        let for_web = door.authorize(&spec("A", Some("token:web")), via_peer);
        assert_eq!(for_web, Ok(ClientKey::Token("web".into())));
        let outside = door.authorize(&spec("B", Some("token:web")), via_peer);
        assert!(
            matches!(outside, Err(Refused::Forbidden { .. })),
            "{outside:?}"
        );
        let unknown = door.authorize(&spec("A", Some("token:nobody")), via_peer);
        assert!(
            matches!(unknown, Err(Refused::Forbidden { .. })),
            "{unknown:?}"
        );
        let own = door.authorize(&spec("A", None), via_peer);
        assert!(own.is_err(), "a peer-only token calls nothing as itself");
    }

    /// The HTTP front end's metadata is kept from the HTTP front end, from a `peer` link,
    /// and with auth off from a call a dispatcher marked forwarded; from a client (a TCP
    /// call, a non-peer grant) it is dropped.
    #[actix_rt::test]
    async fn http_metadata_is_kept_only_from_the_http_front_end_and_peers() {
        let (_, web, peers) = door();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let plain = spec("A", None);
        let mut forwarded = spec("A", None);
        let hop = Bytes::from_static(crate::call::FORWARDED_META_KEY.as_bytes());
        forwarded.meta = Some(Arc::new(vec![(hop, Bytes::from_static(b"b"))]));
        let anyone = Caller::Anyone { ip: Some(ip) };
        let client = Caller::Granted { grant: &web, ip };
        let peer = Caller::Granted { grant: &peers, ip };
        assert!(keeps_http_meta(&plain, anyone, FrontEnd::Http));
        assert!(keeps_http_meta(&plain, client, FrontEnd::Http));
        assert!(!keeps_http_meta(&plain, anyone, FrontEnd::Tcp));
        assert!(!keeps_http_meta(&plain, client, FrontEnd::Tcp));
        assert!(!keeps_http_meta(&forwarded, client, FrontEnd::Tcp));
        assert!(keeps_http_meta(&plain, peer, FrontEnd::Tcp));
        assert!(keeps_http_meta(&forwarded, anyone, FrontEnd::Tcp));
    }

    /// A call too large for a worker is refused `TooLarge` and counted as an outbound frame
    /// over the limit, whichever front end made it; one that fits starts its job.
    #[actix_rt::test]
    async fn a_call_too_large_is_refused_and_counted() {
        let (door, _, _) = door();
        let anyone = Caller::Anyone { ip: None };
        let mut big = spec("A", None);
        big.params = Bytes::from(vec![0x80; 2048]);
        let reply = Box::new(|_| {});
        let refused = door.admit(JobId::next(), big, anyone, FrontEnd::Tcp, reply, None);
        assert_eq!(
            refused.unwrap_err(),
            Refused::Invalid(DispatchError::TooLarge)
        );
        let text = door.metrics().render(&Default::default());
        let hits = r#"nmid_limit_hits_total{limit="outbound_frame_size"} 1"#;
        assert!(text.contains(hits), "{text}");
        let job = door.admit(
            JobId::next(),
            spec("A", None),
            anyone,
            FrontEnd::Tcp,
            Box::new(|_| {}),
            None,
        );
        assert!(job.is_ok());
    }
}
