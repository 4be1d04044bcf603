//! The HTTP front end on actix-web (port 6809): `POST /call/{func}` mapped straight onto job
//! actors, nmid's gateway headers on any path, the admin API and the dashboard.
//!
//! | route | what |
//! |---|---|
//! | `POST /call/{func}` | call `func`; body JSON (object -> msgpack map) or msgpack |
//! | any path + `N-NMID-RequestType: HTTP_DO_WORK` | nmid's gateway protocol |
//! | `GET /api/v1/functions`, `/api/v1/workers`, `/api/v1/stats` | introspection JSON |
//! | `GET /healthz`, `GET /readyz` | liveness, readiness (503 while draining) |
//! | `GET /dashboard` | the built-in dashboard page |

mod admin;
mod call;
mod error;

use std::time::{Duration, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};

pub use call::{REQUEST_ID_HEADER, TIMEOUT_HEADER};
pub use error::HttpError;

use crate::actors::job::JobServices;

/// What every HTTP handler shares.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Registry, retries and counters for the jobs requests start.
    pub jobs: JobServices,
    /// Default deadline of a call.
    pub job_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// When the dispatcher started, for the uptime.
    pub started: SystemTime,
}

/// The dashboard page: plain HTML and JS, no build step.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Registers every route. The app must carry a `web::Data<HttpState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/call/{func}", web::post().to(call::call))
        .route("/api/v1/functions", web::get().to(admin::functions))
        .route("/api/v1/workers", web::get().to(admin::workers))
        .route("/api/v1/stats", web::get().to(admin::stats))
        .route("/healthz", web::get().to(admin::healthz))
        .route("/readyz", web::get().to(admin::readyz))
        .route("/dashboard", web::get().to(dashboard))
        .default_service(web::to(fallback));
}

/// Any other request: nmid's gateway when it says `HTTP_DO_WORK`, else a JSON 404.
async fn fallback(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let gateway = req
        .headers()
        .get(call::NMID_REQUEST_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HTTP_DO_WORK"));
    if gateway {
        return call::gateway(req, payload, state).await;
    }
    HttpResponse::NotFound().json(serde_json::json!({
        "error": format!("no route for {} {}", req.method(), req.path()),
        "code": "not_found",
    }))
}

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DASHBOARD_HTML)
}
