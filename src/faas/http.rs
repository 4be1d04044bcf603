//! Http functions: each call is POSTed to a local HTTP service, which makes any HTTP service
//! in a pod callable as nmid functions without an SDK (the sidecar).
//!
//! The body is the params as JSON (`application/json`; params that are not a map or JSON
//! go as they came, `application/octet-stream`). A 2xx answer's body is the result; any
//! other status is the function's error, with the status as its `Code` and the start of the
//! body as its message. Connections are pooled per function; the connect and the whole
//! request have deadlines.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};

use super::params::{stdin_of, Call, ParamsFormat};
use super::spec::{FunctionSpec, HttpSpec};
use crate::retstruct::RetStruct;
use crate::worker::JobError;

/// The function called, sent to the service.
pub const FUNCTION_HEADER: &str = "x-nmid-function";
/// The dispatcher's job id, sent to the service.
pub const JOB_ID_HEADER: &str = "x-nmid-job-id";

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
        let (body, format) = stdin_of(call.params, call.json);
        let content_type = match format {
            ParamsFormat::Json => "application/json",
            ParamsFormat::Raw => "application/octet-stream",
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type)
            .header(FUNCTION_HEADER, call.function)
            .header(JOB_ID_HEADER, call.job_id)
            .timeout(timeout)
            .body(body);
        for (key, value) in call.trace {
            request = request.header(key, value);
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
        if status.is_success() {
            return Ok(RetStruct::ok(Bytes::from(body)));
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
        Ok(RetStruct::error(i64::from(status.as_u16()), msg))
    }

    fn too_large(&self) -> JobError {
        JobError::new(format!(
            "upstream {}: response body larger than max_output_bytes ({})",
            self.url, self.spec.max_output_bytes
        ))
    }
}

/// The innermost cause of a reqwest error (e.g. "Connection refused (os error 111)").
fn root_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
