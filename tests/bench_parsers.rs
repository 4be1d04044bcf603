//! The jobs benchmark's parsers (benches/common/background/parse.rs): gearmand's admin
//! `status` and nmid's job list, which tell the benchmark when every job is final. Tested
//! here because a bench target without libtest runs no tests of its own.

#[path = "../benches/common/background/parse.rs"]
mod parse;

use parse::{gearman_pending, jobs_page_empty};

#[test]
fn gearman_status_total_of_the_function() {
    let status = "Other\t7\t1\t2\nEcho\t12\t3\t64\n.\n";
    assert_eq!(gearman_pending(status, "Echo"), Some(12));
    assert_eq!(gearman_pending(status, "Other"), Some(7));
    // Not listed (no worker, no job): nothing pending.
    assert_eq!(gearman_pending(status, "Missing"), Some(0));
    assert_eq!(gearman_pending(".\n", "Echo"), Some(0));
}

#[test]
fn gearman_status_partial_or_junk_is_none() {
    // No terminating "." yet: the answer is not whole.
    assert_eq!(gearman_pending("Echo\t12\t3\t64\n", "Echo"), None);
    assert_eq!(gearman_pending("ERR UNKNOWN_COMMAND\n.\n", "Echo"), None);
    assert_eq!(gearman_pending("Echo\tmany\t3\t64\n.\n", "Echo"), None);
}

#[test]
fn job_pages() {
    assert_eq!(jobs_page_empty(r#"{"jobs":[],"next":null}"#), Ok(true));
    assert_eq!(
        jobs_page_empty(r#"{"jobs":[{"id":"a-1","state":"queued"}],"next":"a-1"}"#),
        Ok(false)
    );
    assert!(jobs_page_empty(r#"{"error":"x"}"#).is_err());
    assert!(jobs_page_empty("<html>").is_err());
}
