//! The HTTP side of `[security]` and `[auth]`: whether a request may go on to the route the
//! router matched for it. [`check`] runs in each route's middleware (`routes.rs`), so the
//! decision is made on what the router matched (the decoded path, the route's own pattern),
//! for every method, never on the raw path string; a request no route covers needs the
//! admin role (deny by default).
//!
//! | route needs | with auth on |
//! |---|---|
//! | [`Needs::Nothing`] (`/healthz`) | nothing: credentials are not read |
//! | [`Needs::Probe`] (`/readyz`) | nothing for the status; its details with the `admin` role |
//! | [`Needs::Metrics`] (`/metrics`) | the `admin` role, unless `auth.open_metrics` |
//! | [`Needs::Admin`] (the admin API, the dashboard) | the `admin` role |
//! | [`Needs::Client`] (`/call/{func}`) | the `client` role, and a grant covering the function |
//! | [`Needs::Gateway`] (any other path) | nmid's gateway headers: as `/call`; else `admin` |
//! | [`Needs::Jobs`] (`/api/v1/jobs`) | the `client` or `admin` role; a client sees its own jobs; a `peer` token with `X-Nmid-Caller` acts for the caller it names |
//!
//! Credentials are `Authorization: Bearer <secret>`, or `Basic` with the secret as the
//! password (what a browser sends for the dashboard after asking). A request that may go on
//! carries its [`Access`] for the handlers; a call handler without one refuses the call.
//!
//! A call's function is known from the route (or the gateway's header) before its body is
//! read: a grant that does not cover it is refused here, 403 at once with the body unread,
//! so a token whose grant covers nothing cannot hold body buffers. The front door checks
//! the grant again (the rule for every transport), and decides a peer dispatcher's calls,
//! made for the callers it names.

use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpResponse, ResponseError};
use base64::Engine;

use super::{HttpError, HttpState};
use crate::call::ClientKey;
use crate::jobs::remote::CALLER_HEADER;
use crate::metrics::{Outcome, Refusal};
use crate::security::{Auth, Grant, Roles};

/// What a route needs of a request's credentials (with auth on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: the liveness probe. Credentials are not even read.
    Nothing,
    /// Nothing for a status; credentials holding the `admin` role, when sent, add the
    /// [`Access`] that shows details (the readiness probe: which functions have workers is
    /// the admin API's to say).
    Probe,
    /// The `admin` role, or nothing with `auth.open_metrics`.
    Metrics,
    /// The `admin` role.
    Admin,
    /// The `client` role; the front door then checks the function against the grant.
    Client,
    /// A path no route of its own covers: with nmid's gateway headers a call (the `client`
    /// role, see [`Needs::of_request`]), else the `admin` role (deny by default).
    Gateway,
    /// The `client` or the `admin` role: background jobs' status, which the handler then
    /// shows a client only for the jobs it submitted.
    Jobs,
}

impl Needs {
    /// What a route that needs `self` needs of a request that does (`gateway`) or does not
    /// speak nmid's gateway protocol: a gateway request on the catch-all is a call.
    pub fn of_request(self, gateway: bool) -> Needs {
        match self {
            Needs::Gateway if gateway => Needs::Client,
            needs => needs,
        }
    }
}

/// Who the caller of a request that may go on is, in the request's extensions.
#[derive(Debug, Clone)]
pub enum Access {
    /// Auth is off: anyone may do anything the route does.
    Open,
    /// Auth is on and the request's credentials hold this grant.
    Granted(Arc<Grant>),
}

/// Why a request may not go on.
#[derive(Debug)]
pub enum Refused {
    /// Its address may not connect (a reload denied it since its connection was accepted).
    Address,
    /// Its credentials do not hold what the route needs: 401 or 403.
    Credentials(HttpError),
}

impl Refused {
    /// The response that refuses the request.
    pub fn response(&self) -> HttpResponse {
        match self {
            Refused::Address => {
                let mut response = HttpResponse::Forbidden().json(serde_json::json!({
                    "error": "forbidden: this address may not connect",
                    "code": "forbidden_address",
                }));
                response
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                response
            }
            Refused::Credentials(error) => error.error_response(),
        }
    }
}

/// Whether `req`, routed to a route that `needs`, may go on: its [`Access`] (`None` for a
/// route that needs nothing), or why not (counted). `function` says which function a call
/// names, asked only of a call with a grant.
pub fn check(
    req: &ServiceRequest,
    state: &HttpState,
    needs: Needs,
    function: impl FnOnce() -> Option<String>,
) -> Result<Option<Access>, Refused> {
    let policy = state.security().policy();
    let metrics = state.metrics();
    // Checked when the connection was accepted, and again per request: a reload may have
    // denied the address of a keep-alive connection since.
    if let Some(peer) = req.peer_addr() {
        if !policy.admits(peer.ip()) {
            metrics.record_refusal(Refusal::Address);
            return Err(Refused::Address);
        }
    }
    let Some(auth) = &policy.auth else {
        return Ok(Some(Access::Open));
    };
    let role = match needs {
        Needs::Nothing => return Ok(None),
        Needs::Probe => {
            let grant = secret(req.headers()).and_then(|secret| auth.token(&secret));
            let admin = grant.filter(|grant| grant.has(Roles::ADMIN));
            return Ok(admin.map(Access::Granted));
        }
        Needs::Metrics if auth.open_metrics => return Ok(Some(Access::Open)),
        Needs::Metrics | Needs::Admin => Roles::ADMIN,
        Needs::Client => Roles::CLIENT,
        Needs::Gateway => Roles::ADMIN,
        // Either role: the client's, unless the grant has only the admin role. A peer
        // dispatcher asks for the caller it names, whose grant decides.
        Needs::Jobs => match secret(req.headers()).and_then(|s| auth.token(&s)) {
            Some(grant) if grant.has(Roles::PEER) && req.headers().contains_key(CALLER_HEADER) => {
                return vouched(req, auth).map(Some);
            }
            Some(grant) if grant.has(Roles::ADMIN) && !grant.has(Roles::CLIENT) => Roles::ADMIN,
            _ => Roles::CLIENT,
        },
    };
    let refused = match secret(req.headers()).map(|secret| auth.token(&secret)) {
        None => {
            metrics.record_refusal(Refusal::NoGrant);
            HttpError::Unauthorized
        }
        Some(None) => {
            metrics.record_refusal(Refusal::BadToken);
            HttpError::Unauthorized
        }
        Some(Some(grant)) if grant.has(role) => match call_outside(&grant, needs, function) {
            None => return Ok(Some(Access::Granted(grant))),
            Some(refused) => {
                // Counted as the front door counts a call outside its grant.
                metrics.record_refusal(Refusal::Call);
                metrics.record_refused(Outcome::Forbidden);
                refused
            }
        },
        Some(Some(grant)) => {
            metrics.record_refusal(Refusal::Role);
            let role = if role == Roles::ADMIN {
                "admin"
            } else {
                "client"
            };
            HttpError::Forbidden(format!("{} has no {role} role", grant.name))
        }
    };
    Err(Refused::Credentials(refused))
}

/// The caller a peer dispatcher names in [`CALLER_HEADER`], in the extensions of a request
/// it makes for that caller (beside the caller's grant as [`Access::Granted`]).
#[derive(Debug, Clone)]
pub struct VouchedCaller(pub ClientKey);

/// The access of a peer dispatcher's request for the caller it names: that caller's grant
/// here (its token of the same name, or its v1 grant by address), as forwarded calls are
/// decided; 403 when the header names no one this dispatcher grants the `client` or `admin`
/// role.
fn vouched(req: &ServiceRequest, auth: &Auth) -> Result<Access, Refused> {
    let named = (req.headers().get(CALLER_HEADER)).and_then(|v| ClientKey::from_meta(v.as_bytes()));
    let granted = named.as_ref().and_then(|caller| auth.vouched(caller));
    match granted.filter(|grant| grant.has(Roles::CLIENT) || grant.has(Roles::ADMIN)) {
        Some(grant) => {
            let caller = named.expect("a grant was found for it");
            actix_web::HttpMessage::extensions_mut(req).insert(VouchedCaller(caller));
            Ok(Access::Granted(grant))
        }
        None => Err(Refused::Credentials(HttpError::Forbidden(format!(
            "{CALLER_HEADER} names no caller this dispatcher grants the client or admin role"
        )))),
    }
}

/// The refusal of a call (`needs` is [`Needs::Client`]) of a function `grant` does not
/// cover. A peer dispatcher's grant is left to the front door: it calls for the callers it
/// names, whose grants decide.
fn call_outside(
    grant: &Grant,
    needs: Needs,
    function: impl FnOnce() -> Option<String>,
) -> Option<HttpError> {
    if needs != Needs::Client || grant.has(Roles::PEER) {
        return None;
    }
    let function = function()?;
    (!grant.may_call(function.as_bytes()))
        .then(|| HttpError::Forbidden(format!("{} may not call {function}", grant.name)))
}

/// The secret of `Authorization: Bearer <secret>` or `Basic base64(<user>:<secret>)`.
fn secret(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn secrets_from_bearer_and_basic() {
        assert_eq!(secret(&headers("Bearer abc")).unwrap(), b"abc");
        assert_eq!(secret(&headers("bearer  abc ")).unwrap(), b"abc");
        // "anyone:s3cret:with:colons"
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret:with:colons");
        assert_eq!(
            secret(&headers(&format!("Basic {basic}"))).unwrap(),
            b"s3cret:with:colons"
        );
        assert!(secret(&headers("Basic !!!")).is_none());
        assert!(secret(&headers("Digest x")).is_none());
        assert!(secret(&HeaderMap::new()).is_none());
    }
}
