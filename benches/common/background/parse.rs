//! The answers the jobs benchmark reads to tell whether a system still holds jobs: gearmand's
//! admin `status` and nmid's `GET /api/v1/jobs` page. Plain functions of text, with no other
//! part of the harness, so that `tests/bench_parsers.rs` includes this file and tests them.

/// Jobs of `function` gearmand still holds (queued or running): the `total` column of its
/// admin `status` answer (`FUNCTION\tTOTAL\tRUNNING\tWORKERS` lines, ended by `.`); 0 when
/// the function is not listed. `None` when the answer is not a whole status listing.
pub fn gearman_pending(status: &str, function: &str) -> Option<u64> {
    let mut ended = false;
    let mut total = 0;
    for line in status.lines() {
        if line == "." {
            ended = true;
            break;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, queued, _running, _workers] = fields[..] else {
            return None;
        };
        if name == function {
            total = queued.trim().parse().ok()?;
        }
    }
    ended.then_some(total)
}

/// Whether a `GET /api/v1/jobs` answer (`{"jobs": [...], "next": ...}`) lists no job.
pub fn jobs_page_empty(body: &str) -> Result<bool, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body:.200}"))?;
    match value.get("jobs").and_then(|j| j.as_array()) {
        Some(jobs) => Ok(jobs.is_empty()),
        None => Err(format!("no \"jobs\" list in {body:.200}")),
    }
}
