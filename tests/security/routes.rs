//! HTTP authorization decided on what the router matched (issue 18): a matrix generated from
//! the dispatcher's own route tables (`nmid::http::routes::ROUTES` and `METRICS_ROUTES`, so
//! a route added tomorrow is in it), every route and nmid's gateway headers on every path,
//! × every method × spellings of the path × identities × both listeners, each answer checked
//! against a table of expected statuses written here from docs/security.md, not from the
//! guard's code.

use std::fmt::Write as _;

use nmid::http::routes::{Route, ANY_PATH, METRICS_ROUTES, ROUTES};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::*;

/// The methods every path is tried with.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
/// `GET` and `HEAD`: what reading routes answer.
const READ: &[&str] = &["GET", "HEAD"];
/// What a call route answers.
const POST: &[&str] = &["POST"];
/// Every method.
const ANY: &[&str] = &METHODS;

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    WrongToken,
    /// A client token whose grant covers `ToUpper`.
    ClientInGrant,
    /// A client token whose grant covers `Other*` only.
    ClientOutsideGrant,
    Worker,
    Admin,
}

const EVERYONE: [Who; 6] = [
    Who::Nobody,
    Who::WrongToken,
    Who::ClientInGrant,
    Who::ClientOutsideGrant,
    Who::Worker,
    Who::Admin,
];

const OUTSIDER_SECRET: &str = "outsider-secret-0123456789";

impl Who {
    fn secret(self) -> Option<&'static str> {
        match self {
            Who::Nobody => None,
            Who::WrongToken => Some("no-such-secret-0123456789"),
            Who::ClientInGrant => Some(CLIENT_SECRET),
            Who::ClientOutsideGrant => Some(OUTSIDER_SECRET),
            Who::Worker => Some(WORKER_SECRET),
            Who::Admin => Some(ADMIN_SECRET),
        }
    }
}

/// What a target needs, per docs/security.md's table of grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Nothing (the probes).
    Nothing,
    /// The admin role.
    Admin,
    /// A call of `ToUpper`: the client role and a grant that covers it.
    CallToUpper,
    /// Background jobs' status: the client or the admin role (a client sees its own jobs).
    Jobs,
}

/// What a target answers: what it needs, the methods it takes (405 for the others), and its
/// status when all is well.
#[derive(Debug, Clone, Copy)]
struct Expect {
    need: Need,
    methods: &'static [&'static str],
    ok: u16,
}

/// The front end's routes by pattern, as documented; a route missing here fails the test.
fn front_end(pattern: &str) -> Option<Expect> {
    let admin_read = Expect {
        need: Need::Admin,
        methods: READ,
        ok: 200,
    };
    Some(match pattern {
        "/healthz" | "/readyz" => Expect {
            need: Need::Nothing,
            methods: READ,
            ok: 200,
        },
        "/metrics" | "/dashboard" => admin_read,
        "/api/v1/functions" | "/api/v1/workers" | "/api/v1/stats" => admin_read,
        "/api/v1/cluster" | "/api/v1/calls" | "/api/v1/history" => admin_read,
        "/call/{func}" => Expect {
            need: Need::CallToUpper,
            methods: POST,
            ok: 200,
        },
        "/function/{func}" => Expect {
            need: Need::CallToUpper,
            methods: POST,
            ok: 200,
        },
        // Accepted for later: 202.
        "/async/{func}" | "/async-function/{func}" => Expect {
            need: Need::CallToUpper,
            methods: POST,
            ok: 202,
        },
        "/api/v1/jobs" => Expect {
            need: Need::Jobs,
            methods: READ,
            ok: 200,
        },
        // No job has the id the matrix asks for: 404, once the request may ask.
        "/api/v1/jobs/{id}" => Expect {
            need: Need::Jobs,
            methods: &["GET", "HEAD", "DELETE"],
            ok: 404,
        },
        "/api/v1/jobs/{id}/result" => Expect {
            need: Need::Jobs,
            methods: READ,
            ok: 404,
        },
        _ => return None,
    })
}

/// Any path no route has: nmid's gateway with its headers (on the front end), else a 404
/// that needs the admin role (deny by default).
fn unrouted(listener: Listener, gateway: bool) -> Expect {
    match (listener, gateway) {
        (Listener::FrontEnd, true) => Expect {
            need: Need::CallToUpper,
            methods: ANY,
            ok: 200,
        },
        _ => Expect {
            need: Need::Admin,
            methods: ANY,
            ok: 404,
        },
    }
}

/// The status `who` gets from a target that `expect`s, with `method`.
fn status(expect: Expect, who: Who, method: &str) -> u16 {
    let allowed = expect.methods.contains(&method);
    let role = match expect.need {
        Need::Nothing => return if allowed { expect.ok } else { 405 },
        Need::Admin => who == Who::Admin,
        Need::CallToUpper => matches!(who, Who::ClientInGrant | Who::ClientOutsideGrant),
        Need::Jobs => matches!(
            who,
            Who::ClientInGrant | Who::ClientOutsideGrant | Who::Admin
        ),
    };
    match who {
        Who::Nobody | Who::WrongToken => 401,
        _ if !role => 403,
        _ if !allowed => 405,
        Who::ClientOutsideGrant if expect.need == Need::CallToUpper => 403,
        _ => expect.ok,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    FrontEnd,
    MetricsPort,
}

/// Ways to spell a path: the router decodes percent-encoded letters; every other spelling
/// is another path, which only the catch-all matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    Plain,
    PercentLetter,
    DoubleSlash,
    DotSegment,
    DotDot,
    UpperCase,
    TrailingSlash,
}

const SPELLINGS: [Spelling; 7] = [
    Spelling::Plain,
    Spelling::PercentLetter,
    Spelling::DoubleSlash,
    Spelling::DotSegment,
    Spelling::DotDot,
    Spelling::UpperCase,
    Spelling::TrailingSlash,
];

impl Spelling {
    fn spell(self, path: &str) -> String {
        match self {
            Spelling::Plain => path.to_owned(),
            Spelling::PercentLetter => {
                let at = path.find(|c: char| c.is_ascii_alphabetic()).unwrap();
                let letter = path.as_bytes()[at];
                format!("{}%{letter:02x}{}", &path[..at], &path[at + 1..])
            }
            Spelling::DoubleSlash => format!("/{path}"),
            Spelling::DotSegment => format!("/.{path}"),
            Spelling::DotDot => format!("/x/..{path}"),
            Spelling::UpperCase => path.to_uppercase(),
            Spelling::TrailingSlash => format!("{path}/"),
        }
    }

    /// Whether the router sees the same path as with [`Spelling::Plain`].
    fn same_route(self) -> bool {
        matches!(self, Spelling::Plain | Spelling::PercentLetter)
    }
}

/// A path a route's pattern matches.
fn path_of(route: &Route) -> &'static str {
    match route.pattern {
        ANY_PATH => "/ToUpper",
        pattern if pattern.contains('{') => match pattern {
            "/call/{func}" => "/call/ToUpper",
            "/async/{func}" => "/async/ToUpper",
            "/function/{func}" => "/function/ToUpper",
            "/async-function/{func}" => "/async-function/ToUpper",
            "/api/v1/jobs/{id}" => "/api/v1/jobs/nosuchnode-1",
            "/api/v1/jobs/{id}/result" => "/api/v1/jobs/nosuchnode-1/result",
            _ => panic!("a new pattern {pattern}: give it a path here"),
        },
        pattern => pattern,
    }
}

/// One HTTP/1.1 connection, raw: the request line is sent exactly as spelled.
struct RawHttp {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl RawHttp {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Sends `method target` with `headers` and `body`; the status and the body. A
    /// connection the server closed is opened again (once per request).
    async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &str,
    ) -> (u16, String) {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}");
        let _ = write!(request, "Content-Length: {}\r\n\r\n{body}", body.len());
        for attempt in 0..2 {
            if self.conn.is_none() {
                let stream = TcpStream::connect(self.addr).await.expect("connect");
                self.conn = Some(BufReader::new(stream));
            }
            match self.exchange(method, &request).await {
                Ok(answer) => return answer,
                Err(err) if attempt == 0 => {
                    self.conn = None;
                    let _ = err;
                }
                Err(err) => panic!("{method} {target}: {err}"),
            }
        }
        unreachable!()
    }

    async fn exchange(&mut self, method: &str, request: &str) -> std::io::Result<(u16, String)> {
        let conn = self.conn.as_mut().expect("connected");
        conn.get_mut().write_all(request.as_bytes()).await?;
        let read = async {
            let mut line = String::new();
            if conn.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("closed before a response"));
            }
            let status: u16 = (line.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
            let (mut length, mut chunked, mut close) = (0usize, false, false);
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let header = line.trim_end().to_ascii_lowercase();
                if header.is_empty() {
                    break;
                }
                if let Some(value) = header.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                chunked |= header == "transfer-encoding: chunked";
                close |= header == "connection: close";
            }
            let mut body = Vec::new();
            if method != "HEAD" {
                if chunked {
                    loop {
                        line.clear();
                        conn.read_line(&mut line).await?;
                        let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                        let mut chunk = vec![0; size + 2];
                        conn.read_exact(&mut chunk).await?;
                        if size == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..size]);
                    }
                } else {
                    body.resize(length, 0);
                    conn.read_exact(&mut body).await?;
                }
            }
            Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
        };
        let (status, close, body) = tokio::time::timeout(PATIENCE, read)
            .await
            .map_err(|_| std::io::Error::other("no response in time"))??;
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }
}

/// Every route of both listeners (from their own tables) and nmid's gateway headers on each
/// path, with every method, spelling and identity: each status is the expected one, no call
/// is made that the caller's grant does not cover, and `/healthz` never runs a call.
#[actix_rt::test]
async fn http_authorization_follows_the_route_the_router_matched() {
    let mut config = auth_config();
    config
        .auth
        .tokens
        .push(token("outsider", OUTSIDER_SECRET, &["client"], &["Other*"]));
    let dispatcher = common::start_dispatcher_with_metrics_port(config);
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;
    let listeners = [
        (Listener::FrontEnd, dispatcher.http.unwrap(), &ROUTES[..]),
        (
            Listener::MetricsPort,
            dispatcher.handle().metrics_addr().unwrap(),
            &METRICS_ROUTES[..],
        ),
    ];
    let body = r#"{"name":"matrix"}"#;
    let (mut checked, mut wrong) = (0usize, Vec::new());
    for (listener, addr, routes) in listeners {
        let mut http = RawHttp::new(addr);
        for route in routes {
            let plain = path_of(route);
            let routed = match route.pattern {
                ANY_PATH => None,
                pattern => Some(
                    match listener {
                        Listener::FrontEnd => front_end(pattern),
                        Listener::MetricsPort => (pattern == "/metrics")
                            .then(|| front_end(pattern))
                            .flatten(),
                    }
                    .unwrap_or_else(|| panic!("{pattern} has no expected statuses here: add them")),
                ),
            };
            for spelling in SPELLINGS {
                let target = spelling.spell(plain);
                for gateway in [false, true] {
                    let expect = match routed {
                        Some(expect) if spelling.same_route() => expect,
                        _ => unrouted(listener, gateway),
                    };
                    for method in METHODS {
                        for who in EVERYONE {
                            let mut headers = String::from("Content-Type: application/json\r\n");
                            if gateway {
                                headers.push_str("N-NMID-RequestType: HTTP_DO_WORK\r\n");
                                headers.push_str("N-NMID-FunctionName: ToUpper\r\n");
                            }
                            if let Some(secret) = who.secret() {
                                let _ = write!(headers, "Authorization: Bearer {secret}\r\n");
                            }
                            let (got, answer) = http.request(method, &target, &headers, body).await;
                            let want = status(expect, who, method);
                            checked += 1;
                            // A job listing shows the results of background jobs submitted
                            // through /async above: to their submitter and the admin only
                            // (no call is made here); anyone else seeing one is a leak.
                            let own_jobs = expect.need == Need::Jobs
                                && matches!(who, Who::ClientInGrant | Who::Admin);
                            let called = answer.contains("MATRIX") && !own_jobs;
                            let may_call = want == 200 && expect.need == Need::CallToUpper;
                            if got != want || (called && !may_call) {
                                wrong.push(format!(
                                    "{listener:?} {method} {target} gateway={gateway} {who:?}: \
                                     {got}, expected {want} ({answer:.80})"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    let routes = ROUTES.len() + METRICS_ROUTES.len();
    assert_eq!(
        checked,
        routes * SPELLINGS.len() * 2 * METHODS.len() * EVERYONE.len()
    );
    println!("authorization matrix: {checked} requests checked");
    assert!(
        wrong.is_empty(),
        "{} of {checked} requests answered wrongly:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    worker.stop().await;
    dispatcher.stop().await;
}
