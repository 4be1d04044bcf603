//! The verification snippets of docs/jobs-callbacks.md (Python, shell), run as written
//! against real callbacks to a receiver on 127.0.0.1.

mod common;

use common::receiver::{jobs, succeeded, Answer, Receiver, SECRET};
use nmid::jobs::callback::{CallbackOutcome, Callbacks, Delivery};

/// The fenced block of `lang` under docs/jobs-callbacks.md's verification section.
fn doc_block(lang: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs-callbacks.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("no {lang} block in {path}"))
        + lang.len()
        + 4;
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_owned()
}

/// The docs' Python and shell verifications, run as written against a real callback:
/// the genuine one passes; one with its state changed, re-posted to another target, of
/// another submitter than the endpoint's, or replayed late does not.
#[tokio::test]
async fn the_documented_verifications_accept_a_real_callback_and_refuse_forgeries() {
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let callbacks = Callbacks::from_config(&jobs(&receiver.url("/hooks/"))).unwrap();
    let url = callbacks
        .validate(&receiver.url("/hooks/tenant-b/orders?order=42"))
        .unwrap();
    let delivery = Delivery {
        function: "Up per%\u{e9}".into(),
        submitter: Some("token:tenant-b".into()),
        ..succeeded("job-doc", b"line one\nline two\n\x00")
    };
    let outcome = callbacks.deliver(&url, delivery).await;
    assert!(matches!(outcome, CallbackOutcome::Delivered { .. }));
    let request = receiver.requests().remove(0);
    assert_eq!(request.header("x-nmid-function"), "Up%20per%25%C3%A9");
    let target = request.path.as_str();
    assert_eq!(target, "/hooks/tenant-b/orders?order=42");
    let elsewhere = "/hooks/other-receiver/refunds?order=7";

    let dir = std::env::temp_dir().join(format!("nmid-callback-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_file = dir.join("body");
    std::fs::write(&body_file, &request.body).unwrap();

    let python = doc_block("python");
    let run_python = |state: &str, target: &str, tenant: Option<&str>, late_s: u64| {
        let headers = serde_json::json!({
            "X-Nmid-Timestamp": request.header("x-nmid-timestamp"),
            "X-Call-Id": request.header("x-call-id"),
            "X-Nmid-Function": request.header("x-nmid-function"),
            "X-Nmid-Job-State": state,
            "X-Nmid-Submitter": request.header("x-nmid-submitter"),
            "X-Nmid-Signature": request.header("x-nmid-signature"),
        });
        let harness = format!(
            "{python}\nimport json, os, sys, time\n\
             ok = verify(os.environ['SECRET'].encode(), json.loads(os.environ['HEADERS']),\n\
             os.environ['TARGET'], open(os.environ['BODY_FILE'], 'rb').read(),\n\
             json.loads(os.environ['TENANT']), time.time() + {late_s})\n\
             sys.exit(0 if ok else 1)\n"
        );
        let status = std::process::Command::new("python3")
            .arg("-c")
            .arg(harness)
            .env("SECRET", SECRET)
            .env("HEADERS", headers.to_string())
            .env("TARGET", target)
            .env("TENANT", serde_json::json!(tenant).to_string())
            .env("BODY_FILE", &body_file)
            .status()
            .expect("python3 is needed by this test");
        assert!(status.code().is_some(), "python3 died: {status}");
        status.success()
    };
    let tenant_b = Some("token:tenant-b");
    assert!(
        run_python("succeeded", target, None, 0),
        "the genuine callback is refused"
    );
    assert!(
        run_python("succeeded", target, tenant_b, 0),
        "the genuine callback is refused by its own tenant"
    );
    assert!(
        !run_python("failed", target, None, 0),
        "a changed state is accepted"
    );
    assert!(
        !run_python("succeeded", elsewhere, None, 0),
        "a callback re-posted to another target is accepted"
    );
    assert!(
        !run_python("succeeded", target, Some("token:tenant-a"), 0),
        "another tenant's callback is accepted"
    );
    assert!(
        !run_python("succeeded", target, None, 1000),
        "a late replay is accepted"
    );

    let shell = doc_block("sh");
    let run_shell = |state: &str, target: &str, submitter: &str, tenant: &str| {
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(&shell)
            .env("SECRET", SECRET)
            .env("TIMESTAMP", request.header("x-nmid-timestamp"))
            .env("CALL_ID", request.header("x-call-id"))
            .env("FUNCTION", request.header("x-nmid-function"))
            .env("STATE", state)
            .env("SUBMITTER", submitter)
            .env("TARGET", target)
            .env("EXPECTED_SUBMITTER", tenant)
            .env("SIGNATURE", request.header("x-nmid-signature"))
            .env("BODY_FILE", &body_file)
            .status()
            .expect("bash is needed by this test");
        status.success()
    };
    let submitter = request.header("x-nmid-submitter");
    assert_eq!(submitter, "token:tenant-b");
    let ok = run_shell("succeeded", target, submitter, "");
    assert!(ok, "the genuine callback is refused");
    let ok = run_shell("succeeded", target, submitter, "token:tenant-b");
    assert!(ok, "the genuine callback is refused by its own tenant");
    let ok = run_shell("cancelled", target, submitter, "");
    assert!(!ok, "a changed state is accepted");
    let ok = run_shell("succeeded", elsewhere, submitter, "");
    assert!(!ok, "a callback re-posted to another target is accepted");
    let ok = run_shell("succeeded", target, "token:tenant-a", "");
    assert!(!ok, "a changed submitter is accepted");
    let ok = run_shell("succeeded", target, submitter, "token:tenant-a");
    assert!(!ok, "another tenant's callback is accepted");
    std::fs::remove_dir_all(&dir).unwrap();
}
