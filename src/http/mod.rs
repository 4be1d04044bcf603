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
//!
//! `routes.rs` holds the table of routes (what each needs of a request's credentials,
//! checked by `guard.rs` on what the router matched); `call.rs` admits calls through the
//! same [`FrontDoor`] as the nmid protocol's client sessions.

mod admin;
mod body;
mod call;
mod error;
pub mod guard;
mod idle;
mod jobs;
pub mod routes;

pub use jobs::JobsFront;
mod serve;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Addr;

pub use body::BodyLimits;
pub use call::{call_params, REQUEST_ID_HEADER, TIMEOUT_HEADER};
pub use error::HttpError;
pub use routes::{configure, configure_metrics};
pub use serve::{HttpSite, Serving};

use crate::actors::front_door::FrontDoor;
use crate::actors::registry::Registry;
use crate::metrics::Metrics;
use crate::security::Security;

/// What every HTTP handler shares.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Where calls are admitted (grants, limits, rate limits) into jobs: the client
    /// sessions' door too.
    pub door: FrontDoor,
    /// Default deadline of a call.
    pub job_timeout: Duration,
    /// The bounds on request bodies: size, time, and the bytes being received at once.
    pub bodies: Arc<BodyLimits>,
    /// When the dispatcher started, for the uptime.
    pub started: SystemTime,
    /// The cluster, when discovery is on (`GET /api/v1/cluster`).
    pub cluster: Option<crate::cluster::ClusterView>,
    /// The recent rates the dashboard charts.
    pub history: Arc<std::sync::Mutex<crate::history::History>>,
    /// Request headers passed on to functions (`http.forward_headers`).
    pub forward_headers: Vec<actix_web::http::header::HeaderName>,
    /// Functions that must have a worker for `/readyz` to say ready (`http.ready_functions`).
    pub ready_functions: Vec<String>,
    /// The background jobs (`/async/{func}`, `/api/v1/jobs`); `None` answers those 500.
    pub jobs: Option<jobs::JobsFront>,
}

impl HttpState {
    /// The dispatcher's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.door.metrics()
    }

    /// The function registry.
    pub fn registry(&self) -> &Addr<Registry> {
        &self.door.jobs().registry
    }

    /// Who may connect and call (reloadable).
    pub fn security(&self) -> &Security {
        self.door.security()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix::Actor;
    use actix_web::http::StatusCode;
    use actix_web::{test, App};

    use super::routes::ROUTES;
    use super::*;
    use actix_web::web;

    fn state() -> web::Data<HttpState> {
        let jobs = crate::actors::job::JobServices::with_registry(Registry::new(16).start());
        let max_frame_bytes = crate::codec::DEFAULT_MAX_FRAME_BYTES;
        web::Data::new(HttpState {
            door: FrontDoor::new(jobs, max_frame_bytes, Security::open()),
            job_timeout: Duration::from_secs(1),
            bodies: Arc::new(BodyLimits::new(32, Duration::from_secs(5), 64, 64)),
            started: SystemTime::now(),
            cluster: None,
            history: Arc::new(std::sync::Mutex::new(crate::history::History::new(
                crate::config::Config::default().history_settings(),
            ))),
            forward_headers: Vec::new(),
            ready_functions: Vec::new(),
            jobs: None,
        })
    }

    async fn status_and_code(req: test::TestRequest) -> (StatusCode, serde_json::Value) {
        let app = test::init_service(App::new().app_data(state()).configure(configure)).await;
        let response = test::call_service(&app, req.to_request()).await;
        let status = response.status();
        let body: serde_json::Value = test::read_body_json(response).await;
        (status, body)
    }

    /// The route label is the pattern of the route the router matched, `default` for the
    /// paths only the catch-all matches; a method a route does not answer is 405.
    #[actix_web::test]
    async fn route_labels_are_the_routers_patterns() {
        let state = state();
        let app = test::init_service(App::new().app_data(state.clone()).configure(configure)).await;
        let mut expected: Vec<(&str, &str)> = (ROUTES.iter())
            .filter(|r| r.pattern != routes::ANY_PATH && r.pattern != routes::CALL_ROUTE)
            .map(|r| (r.pattern, r.label))
            .collect();
        expected.extend([
            ("/call/ToUpper", routes::CALL_ROUTE),
            ("/call/", "default"),
            ("/call/a/b", "default"),
            ("/call", "default"),
            ("/", "default"),
            ("/api/v1", "default"),
            ("/metrics/x", "default"),
            ("/dashboard/", "default"),
            ("/ToUpper", "default"),
        ]);
        for (path, _) in &expected {
            let _ = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        let post = test::TestRequest::post().uri("/healthz").to_request();
        let response = test::call_service(&app, post).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let text = state.metrics().render(&Default::default());
        for (path, label) in expected {
            let series = format!("nmid_http_requests_total{{route=\"{label}\"");
            assert!(text.contains(&series), "{path}: no {series} in\n{text}");
        }
        let healthz_405 = "nmid_http_requests_total{route=\"/healthz\",status=\"405\"}";
        assert!(text.contains(healthz_405), "{text}");
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

    /// Every answer carries `X-Request-Id`, the caller's when it sent one: a 405 of a health
    /// endpoint, an unknown route's 404, a refused call's 400, a readiness answer.
    #[actix_web::test]
    async fn every_answer_carries_a_request_id() {
        let app = test::init_service(App::new().app_data(state()).configure(configure)).await;
        let requests = [
            (test::TestRequest::post().uri("/healthz"), 405),
            (test::TestRequest::put().uri("/readyz"), 405),
            (test::TestRequest::get().uri("/nothing"), 404),
            (test::TestRequest::get().uri("/readyz"), 200),
            (
                test::TestRequest::post()
                    .uri("/call/F")
                    .insert_header(("content-type", "application/json"))
                    .set_payload("{nope"),
                400,
            ),
        ];
        for (request, status) in requests {
            let request = request.insert_header((REQUEST_ID_HEADER, "rid-1"));
            let response = test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers().get(REQUEST_ID_HEADER).unwrap(), "rid-1");
        }
        let made_up = test::TestRequest::post().uri("/healthz").to_request();
        let response = test::call_service(&app, made_up).await;
        assert!(response.headers().contains_key(REQUEST_ID_HEADER));
    }

    /// A request refused by the HTTP front end before it becomes a call (400 malformed, 413
    /// too large, 415 unsupported) counts as outcome `bad_request`, as a TCP client's
    /// unusable call does.
    #[actix_web::test]
    async fn http_refusals_count_as_bad_requests() {
        let state = state();
        let app = test::init_service(App::new().app_data(state.clone()).configure(configure)).await;
        let json = ("content-type", "application/json");
        let requests = [
            test::TestRequest::post()
                .uri("/call/F")
                .insert_header(json)
                .set_payload("{nope"),
            test::TestRequest::post()
                .uri("/call/F")
                .insert_header(json)
                .set_payload(vec![b' '; 33]),
            test::TestRequest::post()
                .uri("/call/F")
                .insert_header(("content-type", "image/png"))
                .set_payload("x"),
            test::TestRequest::post()
                .uri("/F")
                .insert_header((super::call::NMID_REQUEST_TYPE, "HTTP_DO_WORK"))
                .insert_header((super::call::NMID_PARAMS_TYPE, "7"))
                .set_payload("{}"),
        ];
        for request in requests {
            let response = test::call_service(&app, request.to_request()).await;
            assert!(
                response.status().is_client_error(),
                "{:?}",
                response.status()
            );
        }
        let text = state.metrics().render(&Default::default());
        let refused = r#"nmid_calls_total{function="_unknown",outcome="bad_request"} 4"#;
        assert!(text.contains(refused), "{text}");
        assert_eq!(state.metrics().read().errors, 4);
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
