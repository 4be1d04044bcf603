//! The HTTP front end on actix-web (port 6809): `POST /call/{func}` mapped straight onto job
//! actors, nmid's gateway headers on any path, the admin API and the dashboard.
//!
//! | route | what |
//! |---|---|
//! | `POST /call/{func}` | call `func`; body JSON (object -> msgpack map) or msgpack |
//! | any path + `N-NMID-RequestType: HTTP_DO_WORK` | nmid's gateway protocol |
//! | `GET /api/v1/functions`, `/api/v1/workers`, `/api/v1/stats` | introspection JSON |
//! | `GET /api/v1/cluster` | the dispatchers of the cluster (etcd discovery) |
//! | `GET /api/v1/calls`, `/api/v1/history` | call counters per function; recent rates |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /healthz`, `GET /readyz` | liveness, readiness (503 while draining) |
//! | `GET /dashboard` | the built-in dashboard page |

mod admin;
mod call;
mod error;
mod guard;
mod serve;

use std::time::{Duration, SystemTime};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};

pub use call::{call_params, REQUEST_ID_HEADER, TIMEOUT_HEADER};
pub use error::HttpError;
pub use serve::{HttpSite, Serving};

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
    /// Largest frame body workers accept (`tcp.max_frame_bytes`): a call whose job would be
    /// larger is refused with 413.
    pub max_frame_bytes: usize,
    /// When the dispatcher started, for the uptime.
    pub started: SystemTime,
    /// The cluster, when discovery is on (`GET /api/v1/cluster`).
    pub cluster: Option<crate::cluster::ClusterView>,
    /// The recent rates the dashboard charts.
    pub history: std::sync::Arc<std::sync::Mutex<crate::history::History>>,
    /// Who may connect and what each may do.
    pub security: crate::security::Security,
    /// Request headers passed on to functions (`http.forward_headers`).
    pub forward_headers: Vec<actix_web::http::header::HeaderName>,
    /// Functions that must have a worker for `/readyz` to say ready (`http.ready_functions`).
    pub ready_functions: Vec<String>,
}

/// The dashboard page: plain HTML and JS, no build step.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The `GET` routes of fixed paths (everything but `/call/{func}` and the fallback).
const FIXED_ROUTES: [&str; 10] = [
    "/api/v1/functions",
    "/api/v1/workers",
    "/api/v1/stats",
    "/api/v1/cluster",
    "/api/v1/calls",
    "/api/v1/history",
    "/metrics",
    "/healthz",
    "/readyz",
    "/dashboard",
];

/// Registers every route. The app must carry a `web::Data<HttpState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(CALL_ROUTE, web::post().to(call::call))
        .route("/api/v1/functions", web::get().to(admin::functions))
        .route("/api/v1/workers", web::get().to(admin::workers))
        .route("/api/v1/stats", web::get().to(admin::stats))
        .route("/api/v1/cluster", web::get().to(admin::cluster))
        .route("/api/v1/calls", web::get().to(admin::calls))
        .route("/api/v1/history", web::get().to(admin::history))
        .route("/metrics", web::get().to(admin::metrics))
        .route("/healthz", web::get().to(admin::healthz))
        .route("/readyz", web::get().to(admin::readyz))
        .route("/dashboard", web::get().to(dashboard))
        .default_service(web::to(fallback));
}

/// The one middleware, in front of every route: the guard (`guard.rs`) lets the request
/// through or answers it, then the request is counted by route pattern (bounded: unmatched
/// paths are `default`) and status. One layer, not two: each costs a boxed future and a
/// lookup of the state per request.
pub async fn front<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<HttpState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let route = route_label(req.path());
    let request_id = (route == CALL_ROUTE).then(|| req.headers().get(REQUEST_ID_HEADER).cloned());
    let mut response = guard::guard(req, next, &state).await?;
    if let Some(request_id) = request_id {
        // A call the guard refused (401, 403) carries its request id too; the handler sets
        // it on every other answer.
        let name = actix_web::http::header::HeaderName::from_static(REQUEST_ID_HEADER);
        if !response.headers().contains_key(&name) {
            let id = request_id.unwrap_or_else(|| crate::call::JobId::next().0.into());
            response.headers_mut().insert(name, id);
        }
    }
    state
        .jobs
        .metrics
        .record_http(route, response.status().as_u16());
    Ok(response)
}

/// The pattern of the call route.
const CALL_ROUTE: &str = "/call/{func}";

/// The `route` label of a request for `path`: the pattern of the route it matches, or
/// `default` (nmid's gateway, 404s). What `HttpRequest::match_pattern` answers, without
/// running the router's regular expressions a second time for every request.
fn route_label(path: &str) -> &'static str {
    if let Some(function) = path.strip_prefix("/call/") {
        if !function.is_empty() && !function.contains('/') {
            return CALL_ROUTE;
        }
    }
    (FIXED_ROUTES.iter().find(|route| **route == path)).map_or("default", |route| route)
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

/// Registers only `GET /metrics`, for a metrics port of its own.
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(admin::metrics));
}

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DASHBOARD_HTML)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix::Actor;
    use actix_web::http::StatusCode;
    use actix_web::{test, App};

    use super::*;
    use crate::actors::registry::Registry;
    use crate::metrics::Metrics;

    fn state() -> web::Data<HttpState> {
        web::Data::new(HttpState {
            jobs: JobServices {
                registry: Registry::new(16).start(),
                retries: 1,
                metrics: Arc::new(Metrics::new()),
                rate_limits: None,
                breakers: false,
            },
            job_timeout: Duration::from_secs(1),
            max_body_bytes: 32,
            max_frame_bytes: crate::codec::DEFAULT_MAX_FRAME_BYTES,
            started: SystemTime::now(),
            cluster: None,
            history: std::sync::Arc::new(std::sync::Mutex::new(crate::history::History::new(
                crate::config::Config::default().history_settings(),
            ))),
            security: crate::security::Security::open(),
            forward_headers: Vec::new(),
            ready_functions: Vec::new(),
        })
    }

    async fn status_and_code(req: test::TestRequest) -> (StatusCode, serde_json::Value) {
        let app = test::init_service(App::new().app_data(state()).configure(configure)).await;
        let response = test::call_service(&app, req.to_request()).await;
        let status = response.status();
        let body: serde_json::Value = test::read_body_json(response).await;
        (status, body)
    }

    /// The route label is the router's own matched pattern, for every route and for
    /// paths that match none (`default`).
    #[actix_web::test]
    async fn route_labels_are_the_routers_patterns() {
        let app = test::init_service(App::new().app_data(state()).configure(configure).wrap_fn(
            |req, srv| {
                let matched = req.match_pattern().unwrap_or_else(|| "default".to_owned());
                let label = route_label(req.path());
                assert_eq!(label, matched, "{}", req.path());
                actix_web::dev::Service::call(srv, req)
            },
        ))
        .await;
        let mut paths: Vec<&str> = FIXED_ROUTES.to_vec();
        paths.extend([
            "/call/ToUpper",
            "/call/",
            "/call/a/b",
            "/call",
            "/",
            "/api/v1",
            "/metrics/x",
            "/dashboard/",
            "/ToUpper",
        ]);
        for path in paths {
            let _ = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        assert_eq!(route_label("/call/ToUpper"), CALL_ROUTE);
    }

    /// `/readyz?functions=F,G` is 503 naming both while no worker serves them; without the
    /// query (and no `http.ready_functions`) a dispatcher without workers is ready.
    #[actix_web::test]
    async fn readyz_waits_for_the_functions_it_is_asked_for() {
        let asked = test::TestRequest::get().uri("/readyz?functions=F,G");
        let (status, body) = status_and_code(asked).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["missing"], serde_json::json!(["F", "G"]), "{body}");
        let (status, body) = status_and_code(test::TestRequest::get().uri("/readyz")).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &serde_json::json!("ready"))
        );
    }

    /// A call of a function no worker ever served is 404 `unknown_function`.
    #[actix_web::test]
    async fn unknown_function_is_404() {
        let req = test::TestRequest::post()
            .uri("/call/Nobody")
            .insert_header(("content-type", "application/json"))
            .set_payload(r#"{"name":"x"}"#);
        let (status, body) = status_and_code(req).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "unknown_function");
        assert!(body["error"].as_str().unwrap().contains("Nobody"));
    }

    /// Malformed JSON is 400, a body over the limit 413, an unknown content type 415, a bad
    /// timeout header 400: each refused before any job starts.
    #[actix_web::test]
    async fn bad_requests_are_refused_with_their_status() {
        let json = ("content-type", "application/json");
        let cases = [
            (
                test::TestRequest::post()
                    .uri("/call/F")
                    .insert_header(json)
                    .set_payload("{nope"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                test::TestRequest::post()
                    .uri("/call/F")
                    .insert_header(json)
                    .set_payload(vec![b' '; 33]),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                test::TestRequest::post()
                    .uri("/call/F")
                    .insert_header(("content-type", "image/png"))
                    .set_payload("x"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                test::TestRequest::post()
                    .uri("/call/F")
                    .insert_header(json)
                    .insert_header((TIMEOUT_HEADER, "soon"))
                    .set_payload("{}"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                test::TestRequest::post()
                    .uri("/call/F?params=yaml")
                    .insert_header(json)
                    .set_payload("{}"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (req, want_status, want_code) in cases {
            let (status, body) = status_and_code(req).await;
            assert_eq!(
                (status, body["code"].as_str().unwrap()),
                (want_status, want_code),
                "{body}"
            );
        }
    }

    /// Readiness and health answer from the registry; an unknown route is a JSON 404.
    #[actix_web::test]
    async fn health_readiness_and_unknown_routes() {
        let (status, body) = status_and_code(test::TestRequest::get().uri("/readyz")).await;
        assert_eq!(
            (status, body["status"].as_str().unwrap()),
            (StatusCode::OK, "ready")
        );
        let (status, _) = status_and_code(test::TestRequest::get().uri("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = status_and_code(test::TestRequest::get().uri("/nothing")).await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (StatusCode::NOT_FOUND, "not_found")
        );
    }
}
