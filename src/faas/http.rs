//! Http functions: each call is POSTed to a local HTTP service, which makes any HTTP service
//! in a pod callable as nmid functions without an SDK (the sidecar).
//!
//! The body is the params as JSON (`application/json`; a raw body an HTTP caller sent goes
//! as it came, with its content type; other params that are not a map or JSON go as they
//! came, `application/octet-stream`). An HTTP caller's query string is added to the URL's,
//! its request id is sent as `X-Request-Id`, and the headers the dispatcher forwards
//! (`http.forward_headers`) are sent on, never framing, hop-by-hop or credential ones
//! (`Content-Length`, `Host`, `Connection`, `Authorization`, ...). A 2xx answer's body is the result, with its
//! `Content-Type` (the RetStruct's `ContentType`); any other status is the function's
//! error, with the status as its `Code`, the start of the body as its message and the body
//! as its `Data` (the dispatcher answers a 4xx with that status and body). Connections are
//! pooled per function; the connect and the whole request have deadlines.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};

use super::params::{Call, ParamsFormat};
use super::spec::{FunctionSpec, HttpSpec};
use crate::retstruct::RetStruct;
use crate::worker::JobError;

/// The function called, sent to the service.
pub const FUNCTION_HEADER: &str = "x-nmid-function";
/// The dispatcher's job id, sent to the service.
pub const JOB_ID_HEADER: &str = "x-nmid-job-id";
/// The HTTP caller's request id, sent to the service.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One http function, ready to run calls: its spec and its connection pool.
#[derive(Debug)]
pub struct HttpFunction {
    spec: FunctionSpec,
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl HttpFunction {
    /// An http function of `spec` (whose kind is `http`).
    pub fn new(spec: FunctionSpec, http: &HttpSpec) -> Result<Self, JobError> {
        let url = reqwest::Url::parse(&http.url)
            .map_err(|e| JobError::new(format!("url {:?}: {e}", http.url)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &http.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| JobError::new(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| JobError::new(format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(http.connect_timeout)
            .pool_max_idle_per_host(spec.concurrency as usize)
            // A sidecar talks to its pod's own service: never through an HTTP proxy that
            // the environment may name.
            .no_proxy()
            .build()
            .map_err(|e| JobError::new(format!("http client: {e}")))?;
        Ok(Self {
            spec,
            url,
            headers,
            client,
        })
    }

    /// POSTs `call` to the service: its 2xx body as the RetStruct's `Data`, or why not.
    pub async fn run(&self, call: Call<'_>) -> Result<RetStruct, JobError> {
        let timeout = call.time_limit(self.spec.timeout);
        let (body, format) = call.input();
        let content_type = match (format, call.content_type) {
            (ParamsFormat::Json, _) => "application/json",
            (ParamsFormat::Raw, Some(content_type)) => content_type,
            (ParamsFormat::Raw, None) => "application/octet-stream",
        };
        let mut request = self
            .client
            .post(self.url_with(call.query))
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type)
            .header(FUNCTION_HEADER, call.function)
            .header(JOB_ID_HEADER, call.job_id)
            .timeout(timeout)
            .body(body);
        let forwarded = (call.headers.iter()).filter(|(name, _)| !is_framing_or_hop(name));
        for (key, value) in call.trace.iter().chain(forwarded) {
            request = request.header(*key, *value);
        }
        if let Some(id) = call.request_id {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        let unreachable = |err: reqwest::Error| {
            let why = if err.is_timeout() {
                format!("timed out after {} ms", timeout.as_millis())
            } else if err.is_connect() {
                format!("unreachable ({})", root_cause(&err))
            } else {
                root_cause(&err)
            };
            JobError::new(format!("upstream {}: {why}", self.url))
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let response_type = response.headers().get(CONTENT_TYPE).cloned();
        let limit = if status.is_success() {
            self.spec.max_output_bytes
        } else {
            self.spec.max_error_bytes
        };
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if status.is_success() && announced.is_some_and(|len| len > limit) {
            return Err(self.too_large());
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > limit {
                if status.is_success() {
                    return Err(self.too_large());
                }
                body.extend_from_slice(&chunk[..limit - body.len()]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let media_type = (response_type.as_ref()).and_then(|v| v.to_str().ok().map(str::to_owned));
        if status.is_success() {
            let ret = RetStruct::ok(Bytes::from(body));
            return Ok(match media_type {
                Some(media_type) => ret.with_content_type(media_type),
                None => ret,
            });
        }
        let text = String::from_utf8_lossy(&body);
        let mut msg = format!("upstream answered HTTP {status}");
        if !text.trim().is_empty() {
            msg = format!(
                "{msg}: {}{}",
                text.trim(),
                if truncated { "..." } else { "" }
            );
        }
        let mut ret = RetStruct::error(i64::from(status.as_u16()), msg);
        ret.data = Bytes::from(body);
        ret.content_type = media_type;
        Ok(ret)
    }

    /// The function's URL with the caller's `query` added to its own.
    fn url_with(&self, query: Option<&str>) -> reqwest::Url {
        let mut url = self.url.clone();
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            let joined = match url.query() {
                Some(own) if !own.is_empty() => format!("{own}&{query}"),
                _ => query.to_owned(),
            };
            url.set_query(Some(&joined));
        }
        url
    }

    fn too_large(&self) -> JobError {
        JobError::new(format!(
            "upstream {}: response body larger than max_output_bytes ({})",
            self.url, self.spec.max_output_bytes
        ))
    }
}

/// Request headers a caller's are never sent on as, whatever `http.forward_headers` lists:
/// this request's own framing and routing (its body is not the caller's), the hop-by-hop
/// ones (RFC 9110 7.6.1), and credentials (a function's own `headers` may set
/// Authorization).
const NEVER_FORWARDED: [&str; 12] = [
    "content-length",
    "content-type",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "proxy-authorization",
];

/// Whether a forwarded header named `name` is one never sent on ([`NEVER_FORWARDED`]).
fn is_framing_or_hop(name: &str) -> bool {
    (NEVER_FORWARDED.iter()).any(|never| never.eq_ignore_ascii_case(name))
}

/// The innermost cause of a reqwest error (e.g. "Connection refused (os error 111)").
fn root_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
