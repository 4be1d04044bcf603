//! `nmidctl call FUNC [JSON]`: one call through the client library; the RetStruct's `Data`
//! (or, with `--raw`, the result bytes) on stdout. With `--stream`, the worker's partial
//! results first, on stdout as they arrive, and its progress on stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;

use super::cli::{CallArgs, Cli};
use super::CtlError;
use crate::client::{CallOptions, Client, ClientError, StreamEvent};
use crate::codec::ParamsType;
use crate::retstruct::RetStruct;

/// Params from the command line (`-`: JSON read from stdin): a JSON object as a msgpack map,
/// other JSON as JSON params, or a msgpack file's bytes.
pub fn params_of(
    json: Option<&str>,
    msgpack: Option<&Path>,
) -> Result<(Bytes, ParamsType), CtlError> {
    if let Some(path) = msgpack {
        let mut bytes = Vec::new();
        let read = if path == Path::new("-") {
            std::io::stdin().read_to_end(&mut bytes)
        } else {
            std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
        };
        read.map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))?;
        if bytes.is_empty() {
            return Err(CtlError::Usage(format!("{} is empty", path.display())));
        }
        return Ok((Bytes::from(bytes), ParamsType::MSGPACK));
    }
    let stdin;
    let text = match json {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CtlError::Usage(format!("cannot read params from stdin: {e}")))?;
            stdin = text;
            stdin.trim()
        }
        other => other.unwrap_or("{}"),
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| CtlError::Usage(format!("params are not valid JSON ({e}): {text}")))?;
    if value.is_object() {
        let map = rmp_serde::to_vec_named(&value)
            .map_err(|e| CtlError::Usage(format!("cannot encode params: {e}")))?;
        return Ok((Bytes::from(map), ParamsType::MSGPACK));
    }
    Ok((Bytes::copy_from_slice(text.as_bytes()), ParamsType::JSON))
}

/// Connects the client the way the command line says.
pub async fn connect(cli: &Cli, timeout: std::time::Duration) -> Result<Client, CtlError> {
    let mut builder = Client::builder(cli.addr.clone())
        .protocol(cli.protocol())
        .timeout(timeout);
    if let Some(token) = &cli.token {
        builder = builder.token(token.clone());
    }
    if let Some(tls) = cli.client_tls() {
        builder = builder.tls(tls);
    }
    builder
        .connect()
        .await
        .map_err(|e| CtlError::of_call("", e))
}

pub(super) async fn call(cli: &Cli, args: &CallArgs) -> Result<(), CtlError> {
    let (params, params_type) = params_of(args.params.as_deref(), args.msgpack.as_deref())?;
    let client = connect(cli, args.timeout).await?;
    let options = CallOptions::default()
        .timeout(args.timeout)
        .params_type(params_type);
    let ret = match args.stream {
        true => streamed(&client, args, params, options).await,
        false => client.call_with(&args.function, params, options).await,
    };
    let ret = ret.map_err(|e| CtlError::of_call(&args.function, e))?;
    print_result(ret, args.raw)
}

/// Prints a worker's result as `call` does: the RetStruct's `Data` (a non-zero `Code` is
/// [`CtlError::Function`]), or with `raw` the bytes as they are (still failing on a
/// non-zero `Code`).
pub fn print_result(ret: Bytes, raw: bool) -> Result<(), CtlError> {
    let (data, failure) = match RetStruct::decode(&ret) {
        Ok(decoded) if decoded.code != 0 => {
            let failure = CtlError::Function {
                code: decoded.code,
                message: decoded.msg,
            };
            // --raw prints what came, and still says the function failed.
            match raw {
                true => (ret, Some(failure)),
                false => return Err(failure),
            }
        }
        Ok(decoded) if !raw => (decoded.data, None),
        // --raw, or not a RetStruct: the worker's bytes are the answer.
        _ => (ret, None),
    };
    print(&data)?;
    failure.map_or(Ok(()), Err)
}

/// A `--stream` call: its partials printed as they arrive, its progress on stderr; the
/// result bytes.
async fn streamed(
    client: &Client,
    args: &CallArgs,
    params: Bytes,
    options: CallOptions,
) -> Result<Bytes, ClientError> {
    let mut events = client.call_stream(&args.function, params, options).await?;
    while let Some(event) = events.next().await {
        match event? {
            StreamEvent::Partial(data) => {
                print(&data).map_err(|e| ClientError::Decode(e.to_string()))?;
            }
            StreamEvent::Progress {
                numerator,
                denominator,
            } => eprintln!("progress {numerator}/{denominator}"),
            StreamEvent::Done(ret) => return Ok(ret),
        }
    }
    Err(ClientError::ConnectionLost)
}

/// Writes `data` to stdout, with a newline after it on a terminal when it has none.
fn print(data: &[u8]) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(data).and_then(|()| {
        if out.is_terminal() && !data.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        out.flush()
    });
    written.map_err(|e| CtlError::Usage(format!("cannot write the result: {e}")))
}
