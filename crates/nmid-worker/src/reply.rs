//! [`ReplyTo`]: where a job's answer goes, and the frame that carries it there — never one
//! larger than the dispatcher accepts.

use bytes::Bytes;
use tracing::warn;

use super::HandlerResult;
use nmid_proto::codec::{self, Frame, TaggedResult, WJobError, WReturnData};
use nmid_proto::retstruct::RetStruct;

/// The RetStruct `Code` a v1 caller sees when a handler fails.
const HANDLER_ERROR_CODE: i64 = 1;

/// Where a job's answer goes, in the protocol the job came in.
pub(super) enum ReplyTo {
    V1 {
        function: Bytes,
        params: Bytes,
        job_id: Bytes,
    },
    Tagged {
        job_id: u64,
    },
}

impl ReplyTo {
    /// The job id of a tagged job (whose partials have a frame); `None` for v1.
    pub(super) fn tagged_id(&self) -> Option<u64> {
        match self {
            ReplyTo::Tagged { job_id } => Some(*job_id),
            ReplyTo::V1 { .. } => None,
        }
    }

    /// The frame answering the job with `result`. An answer whose body would be over
    /// `max_frame_bytes` becomes an error saying so: the dispatcher would close the
    /// connection on reading its header, losing every job in flight on it, and retry this
    /// one on another worker, whose answer would be as large.
    pub(super) fn frame(self, result: HandlerResult, max_frame_bytes: usize, addr: &str) -> Frame {
        let frame = match (self, result) {
            (ReplyTo::Tagged { job_id }, Ok(ret)) => {
                Frame::WJobResult(TaggedResult { id: job_id, ret })
            }
            (ReplyTo::Tagged { job_id }, Err(err)) => Frame::WJobError(WJobError {
                job_id,
                message: Bytes::from(err.message().to_owned()),
            }),
            (
                ReplyTo::V1 {
                    function,
                    params,
                    job_id,
                },
                result,
            ) => {
                let ret = result.unwrap_or_else(|err| {
                    RetStruct::error(HANDLER_ERROR_CODE, err.message()).into()
                });
                Frame::WReturnData(WReturnData {
                    function,
                    params,
                    ret,
                    job_id,
                })
            }
        };
        let Some(body_len) = codec::over_limit(&frame, max_frame_bytes) else {
            return frame;
        };
        let message = format!(
            "result too large: a {body_len}-byte answer is over the {max_frame_bytes}-byte \
             frame limit"
        );
        warn!(%addr, body_len, max_frame_bytes, "answer too large; the caller gets an error");
        too_large(frame, message)
    }
}

/// The error answer replacing `frame`, an answer over the frame limit, with `message` (a v1
/// caller gets it as a RetStruct with `Code` 1, its params not echoed, so that it fits).
fn too_large(frame: Frame, message: String) -> Frame {
    match frame {
        Frame::WReturnData(answer) => Frame::WReturnData(WReturnData {
            function: answer.function,
            params: Bytes::new(),
            ret: RetStruct::error(HANDLER_ERROR_CODE, message).into(),
            job_id: answer.job_id,
        }),
        Frame::WJobResult(TaggedResult { id: job_id, .. })
        | Frame::WJobError(WJobError { job_id, .. }) => Frame::WJobError(WJobError {
            job_id,
            message: Bytes::from(message),
        }),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobError;

    /// An answer at the limit goes as it is; one byte over becomes an error naming both
    /// sizes, for a tagged and a v1 caller alike, and the error fits.
    #[test]
    fn an_answer_over_the_frame_limit_becomes_an_error_that_fits() {
        let tagged = || ReplyTo::Tagged { job_id: 7 };
        let ret = Bytes::from(vec![b'x'; 100]);
        // W_JOB_RESULT: job_id u64 | len(ret) | ret.
        let limit = 8 + 4 + 100;
        let fits = tagged().frame(Ok(ret.clone()), limit, "test");
        assert!(matches!(fits, Frame::WJobResult(r) if r.ret == ret));
        let over = tagged().frame(Ok(ret.clone()), limit - 1, "test");
        let Frame::WJobError(err) = over else {
            panic!("{over:?}")
        };
        assert_eq!(err.job_id, 7);
        let message = String::from_utf8_lossy(&err.message);
        assert!(
            message.contains("result too large: a 112-byte answer"),
            "{message}"
        );
        assert!(message.contains("111-byte"), "{message}");
        let huge_error = tagged().frame(Err(JobError::new("e".repeat(200))), 150, "test");
        assert!(
            codec::over_limit(&huge_error, 150).is_none(),
            "{huge_error:?}"
        );

        let v1 = ReplyTo::V1 {
            function: Bytes::from_static(b"F"),
            params: Bytes::from(vec![b'p'; 50]),
            job_id: Bytes::from_static(b"j1"),
        };
        let over = v1.frame(Ok(ret), 150, "test");
        let Frame::WReturnData(answer) = &over else {
            panic!("{over:?}")
        };
        let ret = RetStruct::decode(&answer.ret).unwrap();
        assert_eq!(ret.code, HANDLER_ERROR_CODE);
        assert!(ret.msg.starts_with("result too large"), "{}", ret.msg);
        assert_eq!(&answer.job_id[..], b"j1");
        assert!(codec::over_limit(&over, 150).is_none());
    }
}
