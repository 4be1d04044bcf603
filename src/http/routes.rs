//! The route tables of the two HTTP listeners: every route's pattern, the methods it answers,
//! what it needs of a request's credentials ([`Needs`]) and its handler, in one place.
//!
//! Each route is an actix resource wrapped in the guard: the router matches first (the
//! decoded path, so `/%61pi/v1/workers` is `/api/v1/workers`), then the guard decides on the
//! route it matched, for every method, before the resource answers `405` to a method it does
//! not serve. The last route of each table catches every path the others do not match, so no
//! request reaches a handler without a decision: on the front end it is nmid's gateway (a
//! call) or a `404` that needs the admin role; on the metrics port only the `404`.

use actix_service::{apply, fn_service, ServiceFactoryExt};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard as method, web, HttpRequest, HttpResponse};

use super::guard::{self, Needs};
use super::{admin, call, jobs, HttpState};

/// The methods a route answers; any other gets `405` with `Allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// `GET` and `HEAD` (the same answer without its body).
    Read,
    /// `POST`.
    Post,
    /// `GET`, `HEAD` and `DELETE` (a background job).
    ReadOrDelete,
    /// Every method (nmid's gateway, the catch-all `404`).
    Any,
}

impl Methods {
    /// Whether `method` is one of these.
    pub fn allow(self, method: &Method) -> bool {
        match self {
            Methods::Read => method == Method::GET || method == Method::HEAD,
            Methods::Post => method == Method::POST,
            Methods::ReadOrDelete => Methods::Read.allow(method) || method == Method::DELETE,
            Methods::Any => true,
        }
    }

    /// The `Allow` header of a `405`.
    fn header(self) -> &'static str {
        match self {
            Methods::Read => "GET, HEAD",
            Methods::Post => "POST",
            Methods::ReadOrDelete => "GET, HEAD, DELETE",
            Methods::Any => "*",
        }
    }
}

/// One route of a listener.
#[derive(Debug)]
pub struct Route {
    /// The router's pattern.
    pub pattern: &'static str,
    /// Its `route` label in `nmid_http_requests_total`.
    pub label: &'static str,
    /// The methods it answers.
    pub methods: Methods,
    /// What it needs of a request's credentials.
    pub needs: Needs,
    /// Its handler, for the methods it answers.
    handler: fn() -> actix_web::Route,
}

/// The pattern of the call route.
pub const CALL_ROUTE: &str = "/call/{func}";
/// The pattern of the background submission route.
pub const ASYNC_ROUTE: &str = "/async/{func}";
/// OpenFaaS's gateway spelling of the call route, for clients written for it.
pub const OPENFAAS_CALL_ROUTE: &str = "/function/{func}";
/// OpenFaaS's gateway spelling of the background submission route.
pub const OPENFAAS_ASYNC_ROUTE: &str = "/async-function/{func}";
/// The pattern of the route that catches every path the others do not match.
pub const ANY_PATH: &str = "/{path:.*}";

/// A route answering `methods` with `handler`, needing `needs`, labelled by its pattern.
macro_rules! route {
    ($pattern:expr, $methods:ident, $needs:ident, $handler:path) => {
        Route {
            pattern: $pattern,
            label: $pattern,
            methods: Methods::$methods,
            needs: Needs::$needs,
            handler: || web::to($handler),
        }
    };
}

/// The HTTP front end (port 6809), in matching order: the catch-all is last.
pub static ROUTES: [Route; 18] = [
    route!(CALL_ROUTE, Post, Client, call::call),
    route!(ASYNC_ROUTE, Post, Client, jobs::submit),
    route!(OPENFAAS_CALL_ROUTE, Post, Client, call::call),
    route!(OPENFAAS_ASYNC_ROUTE, Post, Client, jobs::submit),
    route!("/api/v1/jobs", Read, Jobs, jobs::list),
    route!(
        "/api/v1/jobs/{id}",
        ReadOrDelete,
        Jobs,
        jobs::status_or_cancel
    ),
    route!("/api/v1/jobs/{id}/result", Read, Jobs, jobs::result),
    route!("/api/v1/functions", Read, Admin, admin::functions),
    route!("/api/v1/workers", Read, Admin, admin::workers),
    route!("/api/v1/stats", Read, Admin, admin::stats),
    route!("/api/v1/cluster", Read, Admin, admin::cluster),
    route!("/api/v1/calls", Read, Admin, admin::calls),
    route!("/api/v1/history", Read, Admin, admin::history),
    route!("/metrics", Read, Metrics, admin::metrics),
    route!("/healthz", Read, Nothing, admin::healthz),
    route!("/readyz", Read, Probe, admin::readyz),
    route!("/dashboard", Read, Admin, admin::dashboard),
    Route {
        pattern: ANY_PATH,
        label: "default",
        methods: Methods::Any,
        needs: Needs::Gateway,
        handler: || web::to(gateway_or_not_found),
    },
];

/// The metrics port (`metrics.addr`): `GET /metrics` and nothing else.
pub static METRICS_ROUTES: [Route; 2] = [
    route!("/metrics", Read, Metrics, admin::metrics),
    Route {
        pattern: ANY_PATH,
        label: "default",
        methods: Methods::Any,
        needs: Needs::Admin,
        handler: || web::to(not_found),
    },
];

/// What a request whose target is no path at all (`OPTIONS *`) meets, on either listener:
/// no route can match it, so it is decided as any path no route covers (deny by default:
/// the admin role), then answered 404.
static NO_PATH: Route = Route {
    pattern: "*",
    label: "default",
    methods: Methods::Any,
    needs: Needs::Admin,
    handler: || web::to(not_found),
};

/// Registers the front end's routes. The app must carry a `web::Data<HttpState>`. A query
/// string a route cannot read (`?limit=-1`) is a JSON 400 `bad_request`, as every other
/// refusal.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| {
        super::HttpError::BadRequest(format!("bad query string: {err}")).into()
    }));
    register(cfg, &ROUTES);
}

/// Registers only `GET /metrics`, for a metrics port of its own.
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    register(cfg, &METRICS_ROUTES);
}

/// Registers `routes`, each behind the guard, and behind it too a default service for
/// requests whose target is no path at all ([`NO_PATH`]).
fn register(cfg: &mut web::ServiceConfig, routes: &'static [Route]) {
    for route in routes {
        let methods = route.methods;
        let handler = (route.handler)().guard(method::fn_guard(move |ctx| {
            methods.allow(&ctx.head().method)
        }));
        cfg.service(
            web::resource(route.pattern)
                .wrap(from_fn(move |req, next| guarded(req, next, route)))
                .route(handler)
                .default_service(web::to(move || method_not_allowed(methods))),
        );
    }
    let no_path = fn_service(|req: ServiceRequest| async move {
        let (req, _) = req.into_parts();
        let response = not_found(req.clone()).await;
        Ok::<_, actix_web::Error>(ServiceResponse::new(req, response))
    });
    let guard = from_fn(|req, next| guarded(req, next, &NO_PATH));
    cfg.default_service(apply(guard, no_path).map(ServiceResponse::map_into_boxed_body));
}

/// The guard in front of `route`: the request goes on, or is answered with its refusal;
/// counted by the route's label and the status either way.
async fn guarded<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
    route: &'static Route,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<HttpState>>().cloned() else {
        let refused = HttpResponse::InternalServerError().finish();
        return Ok(req.into_response(refused).map_into_right_body());
    };
    let needs = (route.needs).of_request(call::is_gateway(req.headers()));
    // Of a call the route answers: a method it does not answer is 405 whatever the grant.
    let answered = route.methods.allow(req.method());
    let function = || {
        answered
            .then(|| call::function_named(req.request()))
            .flatten()
    };
    let response = match guard::check(&req, &state, needs, function) {
        Ok(access) => {
            if let Some(access) = access {
                actix_web::HttpMessage::extensions_mut(&req).insert(access);
            }
            next.call(req).await?.map_into_left_body()
        }
        Err(refused) => req.into_response(refused.response()).map_into_right_body(),
    };
    // Every answer carries a request id: the call handler sets its own (the one its function
    // got); any other answer, a refusal or a 405 included, gets the caller's or a fresh one.
    let mut response = response;
    if !response.headers().contains_key(call::REQUEST_ID_HEADER) {
        let id = call::request_id_of(response.request().headers());
        let name = header::HeaderName::from_static(call::REQUEST_ID_HEADER);
        response.headers_mut().insert(name, id);
    }
    let status = response.status().as_u16();
    state.metrics().record_http(route.label, status);
    Ok(response)
}

/// Any path no other route matches: nmid's gateway when it says `HTTP_DO_WORK`, else a
/// JSON 404.
async fn gateway_or_not_found(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    if call::is_gateway(req.headers()) {
        return call::gateway(req, payload, state).await;
    }
    not_found(req).await
}

/// A JSON 404 naming the method and the path.
async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": format!("no route for {} {}", req.method(), req.path()),
        "code": "not_found",
    }))
}

/// A JSON 405 with the methods the route answers.
async fn method_not_allowed(methods: Methods) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, methods.header()))
        .json(serde_json::json!({
            "error": format!("method not allowed: use {}", methods.header()),
            "code": "method_not_allowed",
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(routes: &[Route], pattern: &str) -> Needs {
        let route = routes.iter().find(|r| r.pattern == pattern);
        route.unwrap_or_else(|| panic!("no route {pattern}")).needs
    }

    /// Each route declares the credentials it needs; the catch-all is last on both
    /// listeners, and the metrics port's needs the admin role for whatever it catches.
    #[test]
    fn routes_need_their_roles() {
        assert_eq!(needs(&ROUTES, "/healthz"), Needs::Nothing);
        assert_eq!(needs(&ROUTES, "/readyz"), Needs::Probe);
        assert_eq!(needs(&ROUTES, "/metrics"), Needs::Metrics);
        assert_eq!(needs(&ROUTES, "/api/v1/workers"), Needs::Admin);
        assert_eq!(needs(&ROUTES, "/dashboard"), Needs::Admin);
        assert_eq!(needs(&ROUTES, CALL_ROUTE), Needs::Client);
        assert_eq!(needs(&ROUTES, ANY_PATH), Needs::Gateway);
        assert_eq!(needs(&METRICS_ROUTES, ANY_PATH), Needs::Admin);
        assert_eq!(ROUTES.last().unwrap().pattern, ANY_PATH);
        assert_eq!(METRICS_ROUTES.last().unwrap().pattern, ANY_PATH);
        assert_eq!(needs(&ROUTES, ASYNC_ROUTE), Needs::Client);
        assert_eq!(needs(&ROUTES, "/api/v1/jobs/{id}"), Needs::Jobs);
        let admin = (ROUTES.iter())
            .filter(|r| r.pattern.starts_with("/api/") && !r.pattern.starts_with("/api/v1/jobs"));
        assert!(admin.clone().count() >= 6);
        assert!(admin.into_iter().all(|r| r.needs == Needs::Admin));
    }
}
