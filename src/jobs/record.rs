//! One background job as it is stored: what to run, its options, and where it stands.
//! Encoded with MessagePack as an array of its fields in order (`rmp_serde::to_vec`): a
//! record is rewritten at each change of its job, and naming every field each time cost a
//! tenth of the dispatcher's instructions per job. Decoding takes that array or a map by
//! field name (how records were written before, so an older store still reads); a new
//! field goes at the end, with `#[serde(default)]`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::call::Priority;

/// Where a background job stands. `docs/jobs.md` draws the machine:
/// queued -> running -> succeeded | failed (or back to queued for another attempt);
/// queued -> cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its time, a slot or a worker.
    Queued,
    /// An attempt is on a worker.
    Running,
    /// A worker returned its result (kept for the job's result TTL).
    Succeeded,
    /// Its last attempt failed and no attempt is left, or it cannot run at all.
    Failed,
    /// Cancelled while queued.
    Cancelled,
}

impl JobState {
    /// Its name in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        use JobState::*;
        [Queued, Running, Succeeded, Failed, Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// The job is over: it holds its result or error until it expires.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A background job's id: the dispatcher that owns it (its store's node name) and its
/// number there, written `<node>-<number>`. The node name makes ids unique across a
/// cluster and says which dispatcher answers for the job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackgroundId {
    /// The owning dispatcher's node name (hex).
    pub node: String,
    /// The job's number in that dispatcher's store.
    pub seq: u64,
}

impl BackgroundId {
    /// Reads `<node>-<number>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (node, seq) = text.rsplit_once('-')?;
        let valid_node =
            !node.is_empty() && node.len() <= 64 && node.bytes().all(|b| b.is_ascii_alphanumeric());
        let seq = seq.parse().ok().filter(|_| valid_node)?;
        Some(Self {
            node: node.to_owned(),
            seq,
        })
    }
}

impl fmt::Display for BackgroundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.node, self.seq)
    }
}

/// A stored background job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its number in this store.
    pub seq: u64,
    /// The function to run.
    pub function: ByteBuf,
    /// Its params, opaque.
    pub params: ByteBuf,
    /// How the params are encoded.
    pub params_type: u32,
    /// `params_handle_type`, passed through.
    pub handle_type: u32,
    /// The caller's metadata (trace context; HTTP headers of an HTTP submission).
    #[serde(default)]
    pub meta: Vec<(ByteBuf, ByteBuf)>,
    /// Who submitted it ([`ClientKey::to_meta`](crate::call::ClientKey::to_meta)): it runs
    /// as that caller, and only that caller (or an admin) sees it.
    #[serde(default)]
    pub caller: Option<String>,
    /// Where it waits.
    #[serde(default)]
    pub priority: StoredPriority,
    /// Not started before this time (unix ms).
    pub run_at_ms: u64,
    /// The deadline of one attempt, in ms.
    pub attempt_timeout_ms: u64,
    /// Attempts at most.
    pub max_attempts: u32,
    /// Wait before the second attempt, doubling after each.
    pub backoff_ms: u64,
    /// How long the result is kept once it is final, in ms.
    pub result_ttl_ms: u64,
    /// Its unique key: submissions of the same caller, function and key share it while it
    /// is queued or running.
    #[serde(default)]
    pub unique: Option<ByteBuf>,
    /// Where its final state is POSTed.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// When it was accepted (unix ms).
    pub created_ms: u64,
    /// Where it stands.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The worker's last progress report (numerator, denominator).
    #[serde(default)]
    pub progress: Option<(u64, u64)>,
    /// When its last attempt started (unix ms).
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// When it became final (unix ms).
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Succeeded: the result. Failed: the error message.
    #[serde(default)]
    pub output: Option<ByteBuf>,
    /// Failed: the error's code (`worker_error`, `timeout`, ...).
    #[serde(default)]
    pub error_code: Option<String>,
    /// The callback's outcome, once it was tried: `delivered` or `failed: <why>`.
    #[serde(default)]
    pub callback: Option<String>,
}

/// [`Priority`] as stored (a name, so the enum may grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredPriority {
    /// [`Priority::High`].
    High,
    /// [`Priority::Normal`].
    #[default]
    Normal,
    /// [`Priority::Low`].
    Low,
}

impl From<Priority> for StoredPriority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::High => StoredPriority::High,
            Priority::Normal => StoredPriority::Normal,
            Priority::Low => StoredPriority::Low,
        }
    }
}

impl From<StoredPriority> for Priority {
    fn from(p: StoredPriority) -> Self {
        match p {
            StoredPriority::High => Priority::High,
            StoredPriority::Normal => Priority::Normal,
            StoredPriority::Low => Priority::Low,
        }
    }
}

impl JobRecord {
    /// The record's bytes in the store: its fields in order, unnamed.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a job record always encodes")
    }

    /// A record read back from the store, written by [`JobRecord::encode`] or, before, by
    /// field name.
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    /// What the record weighs against `jobs.max_stored_bytes`: its variable parts.
    pub fn weight(&self) -> usize {
        let meta: usize = self.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        256 + self.function.len()
            + self.params.len()
            + meta
            + self.unique.as_ref().map_or(0, |u| u.len())
            + self.callback_url.as_ref().map_or(0, |u| u.len())
            + self.output.as_ref().map_or(0, |o| o.len())
    }

    /// A succeeded job's result as `/call` would answer it: the `Data` of nmid's RetStruct
    /// when the worker answered one (with its `ContentType`, if it said), else the bytes as
    /// they are. `None` unless the job succeeded.
    pub fn result_data(&self) -> Option<(bytes::Bytes, Option<String>)> {
        let output = self
            .output
            .as_ref()
            .filter(|_| self.state == JobState::Succeeded)?;
        match crate::retstruct::RetStruct::decode(output) {
            Ok(ret) if ret.code == 0 => Some((ret.data, ret.content_type)),
            _ => Some((bytes::Bytes::copy_from_slice(output), None)),
        }
    }

    /// When a final job is forgotten (unix ms); `None` while it is not final. Kept at
    /// least [`MIN_RESULT_KEEP_MS`], whatever its TTL, so that callers already waiting for
    /// it read it.
    pub fn expires_ms(&self) -> Option<u64> {
        let finished = self.finished_ms.filter(|_| self.state.is_final())?;
        Some(finished.saturating_add(self.result_ttl_ms.max(MIN_RESULT_KEEP_MS)))
    }
}

/// The least time a final job is kept, in ms, even with a result TTL of 0: a caller
/// waiting for it (`?wait_ms=`, `C_JOB_STATUS`) is woken when it ends and reads it after.
pub const MIN_RESULT_KEEP_MS: u64 = 1000;

/// Now, in ms since the Unix epoch (the store's clock: it survives restarts, unlike
/// `Instant`).
pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> JobRecord {
        JobRecord {
            seq: 7,
            function: ByteBuf::from(b"ToUpper".to_vec()),
            params: ByteBuf::from(b"\x81\xa1a\x01".to_vec()),
            params_type: 5,
            handle_type: 1,
            meta: vec![(ByteBuf::from(b"k".to_vec()), ByteBuf::from(b"v".to_vec()))],
            caller: Some("ip:127.0.0.1".into()),
            priority: StoredPriority::High,
            run_at_ms: 10,
            attempt_timeout_ms: 30_000,
            max_attempts: 3,
            backoff_ms: 1000,
            result_ttl_ms: 3_600_000,
            unique: None,
            callback_url: None,
            created_ms: 5,
            state: JobState::Succeeded,
            attempts: 1,
            progress: Some((3, 4)),
            started_ms: Some(11),
            finished_ms: Some(20),
            output: Some(ByteBuf::from(b"done".to_vec())),
            error_code: None,
            callback: None,
        }
    }

    /// A record survives the store's encoding, and a final one expires its TTL after it
    /// finished.
    #[test]
    fn records_round_trip_and_expire_after_their_ttl() {
        let record = sample();
        assert_eq!(JobRecord::decode(&record.encode()).unwrap(), record);
        assert_eq!(record.expires_ms(), Some(3_600_020));
        let queued = JobRecord {
            state: JobState::Queued,
            ..record
        };
        assert_eq!(queued.expires_ms(), None);
    }

    /// A record written by field name (as stores were before the compact encoding) reads
    /// back whole; the compact encoding is the smaller.
    #[test]
    fn records_written_by_field_name_still_read() {
        let record = sample();
        let named = rmp_serde::to_vec_named(&record).unwrap();
        assert_eq!(JobRecord::decode(&named).unwrap(), record);
        let queued = JobRecord {
            state: JobState::Queued,
            output: None,
            progress: None,
            ..sample()
        };
        let named = rmp_serde::to_vec_named(&queued).unwrap();
        assert_eq!(JobRecord::decode(&named).unwrap(), queued);
        assert!(record.encode().len() * 2 < rmp_serde::to_vec_named(&record).unwrap().len());
    }

    /// Ids read back as written; junk is no id.
    #[test]
    fn ids_round_trip_through_their_text() {
        let id = BackgroundId {
            node: "a1b2c3d4".into(),
            seq: 42,
        };
        assert_eq!(BackgroundId::parse(&id.to_string()), Some(id));
        for junk in [
            "",
            "42",
            "-42",
            "a1-",
            "a1-x",
            "a/b-1",
            "a1-99999999999999999999999",
        ] {
            assert_eq!(BackgroundId::parse(junk), None, "{junk}");
        }
    }
}
