//! The HTTP side of `[security]` and `[auth]`, in front of every route: the peer's address
//! against the allow and deny lists, then the credentials the route needs.
//!
//! | route | needs (with auth on) |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | nothing (probes) |
//! | `POST /call/{func}`, nmid's gateway | the `client` role; the handler checks the function |
//! | `GET /metrics` | the `admin` role, unless `auth.open_metrics` |
//! | the admin API, the dashboard | the `admin` role |
//!
//! Credentials are `Authorization: Bearer <secret>`, or `Basic` with the secret as the
//! password (what a browser sends for the dashboard after asking).

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use base64::Engine;

use super::{HttpError, HttpState};
use crate::metrics::{Outcome, Refusal};
use crate::security::{Grant, Roles};

/// Refuses a request from an address the lists do not admit (403, and the connection
/// closed), or without the credentials its route needs (401 / 403); else passes it on to
/// `next`. A request that passes carries its grant, for the handler's per-function check.
pub async fn guard<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
    state: &HttpState,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let policy = state.security.policy();
    let metrics = &state.jobs.metrics;
    if let Some(peer) = req.peer_addr() {
        if !policy.admits(peer.ip()) {
            metrics.record_refusal(Refusal::Address);
            let mut response = HttpResponse::Forbidden().json(serde_json::json!({
                "error": "forbidden: this address may not connect",
                "code": "forbidden_address",
            }));
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    let Some(auth) = &policy.auth else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let Some(role) = needed_role(req.path(), auth.open_metrics) else {
        return Ok(next.call(req).await?.map_into_left_body());
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
        Some(Some(grant)) if grant.has(role) => {
            req.extensions_mut().insert(grant);
            return Ok(next.call(req).await?.map_into_left_body());
        }
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
    let response = refused.error_response();
    Ok(req.into_response(response).map_into_right_body())
}

/// The role `path` needs; `None` for the probes.
fn needed_role(path: &str, open_metrics: bool) -> Option<Roles> {
    match path {
        "/healthz" | "/readyz" => None,
        "/metrics" if open_metrics => None,
        "/metrics" | "/dashboard" => Some(Roles::ADMIN),
        _ if path.starts_with("/api/") => Some(Roles::ADMIN),
        // `/call/{func}` and nmid's gateway on any other path.
        _ => Some(Roles::CLIENT),
    }
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

/// Refuses a call of `function` that the request's grant does not cover (with auth off
/// there is no grant, and every call may go on).
pub fn authorize_call(
    req: &HttpRequest,
    state: &HttpState,
    function: &str,
) -> Result<(), HttpError> {
    let extensions = req.extensions();
    let Some(grant) = extensions.get::<Arc<Grant>>() else {
        return Ok(());
    };
    if grant.may_call(function.as_bytes()) {
        return Ok(());
    }
    state.jobs.metrics.record_refusal(Refusal::Call);
    state.jobs.metrics.record_refused(Outcome::Forbidden);
    Err(HttpError::Forbidden(format!(
        "{} may not call {function}",
        grant.name
    )))
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

    #[test]
    fn routes_need_their_roles() {
        assert_eq!(needed_role("/healthz", false), None);
        assert_eq!(needed_role("/readyz", false), None);
        assert_eq!(needed_role("/metrics", false), Some(Roles::ADMIN));
        assert_eq!(needed_role("/metrics", true), None);
        assert_eq!(needed_role("/api/v1/workers", false), Some(Roles::ADMIN));
        assert_eq!(needed_role("/dashboard", false), Some(Roles::ADMIN));
        assert_eq!(needed_role("/call/ToUpper", false), Some(Roles::CLIENT));
        assert_eq!(needed_role("/ToUpper", false), Some(Roles::CLIENT));
    }
}
