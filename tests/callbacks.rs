//! Callbacks of background jobs (`nmid::jobs::callback`) against a real HTTP receiver on
//! 127.0.0.1: signed deliveries the receiver verifies with openssl, retries with growing
//! gaps, no retry of a refusal, timeouts, redirects not followed, and the bounds on requests
//! in flight, config checks (the receiver is tests/common/receiver.rs; the docs' snippets
//! run in tests/callback_docs.rs, jobs through a dispatcher in tests/callbacks_e2e.rs).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::receiver::{jobs, succeeded, verify, Answer, Received, Receiver};
use nmid::jobs::callback::{CallbackOutcome, Callbacks, Delivery};
use nmid::metrics::{CallbackEvent, Metrics};

/// A delivery arrives with every header, its body as it was, and a signature the receiver
/// verifies with openssl; a failed job's error arrives the same way; a forged one does not
/// verify.
#[tokio::test]
async fn a_delivery_arrives_with_headers_and_a_signature_the_receiver_verifies() {
    let receiver = Receiver::start(|_| Answer::Status(204)).await;
    let metrics = Arc::new(Metrics::new());
    let callbacks = Callbacks::from_config(&jobs(&receiver.url("/hooks/")))
        .unwrap()
        .with_metrics(metrics.clone());
    let url = callbacks.validate(&receiver.url("/hooks/job?x=1")).unwrap();
    let outcome = callbacks
        .deliver(&url, succeeded("job-1", b"HELLO \x00\xff"))
        .await;
    assert_eq!(
        outcome,
        CallbackOutcome::Delivered {
            attempts: 1,
            status: 204
        }
    );
    let failed = Delivery {
        job_id: "job-2".into(),
        function: "Fails".into(),
        state: "failed",
        attempts: 3,
        result: None,
        error: Some("worker said no".into()),
        submitter: None,
    };
    let outcome = callbacks.deliver(&url, failed).await;
    assert!(matches!(outcome, CallbackOutcome::Delivered { .. }));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let (ok, err) = (&requests[0], &requests[1]);
    assert_eq!(ok.path, "/hooks/job?x=1");
    assert_eq!(ok.body, b"HELLO \x00\xff");
    assert_eq!(ok.header("content-type"), "application/octet-stream");
    assert_eq!(ok.header("x-call-id"), "job-1");
    assert_eq!(ok.header("x-nmid-function"), "ToUpper");
    assert_eq!(ok.header("x-nmid-job-state"), "succeeded");
    assert_eq!(ok.header("x-nmid-attempts"), "1");
    assert_eq!(ok.header("x-nmid-callback-attempt"), "1");
    assert_eq!(ok.header("x-nmid-submitter"), "ip:127.0.0.1");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamp: u64 = ok.header("x-nmid-timestamp").parse().unwrap();
    assert!(now.abs_diff(stamp) < 60, "timestamp {stamp}, now {now}");
    assert!(ok.header("x-nmid-signature").starts_with("sha256="));
    assert!(verify(ok), "the receiver cannot verify {ok:?}");

    assert_eq!(err.body, b"worker said no");
    assert_eq!(err.header("x-nmid-job-state"), "failed");
    assert_eq!(err.header("x-nmid-attempts"), "3");
    assert_eq!(err.header("x-nmid-submitter"), "");
    assert!(verify(err), "the receiver cannot verify {err:?}");

    // The same body under another job id or state does not verify.
    let mut forged = ok.clone();
    forged.headers.retain(|(n, _)| n != "x-call-id");
    forged.headers.push(("x-call-id".into(), "job-9".into()));
    assert!(!verify(&forged));
    let mut forged = err.clone();
    forged.headers.retain(|(n, _)| n != "x-nmid-job-state");
    forged
        .headers
        .push(("x-nmid-job-state".into(), "succeeded".into()));
    assert!(!verify(&forged));

    assert_eq!(metrics.callback_count(CallbackEvent::Delivered), 2);
    assert_eq!(metrics.callback_count(CallbackEvent::Retried), 0);
}

/// The signature covers the request target and the submitter: a callback tenant A aimed at
/// tenant B's endpoint under a shared prefix says it is A's (and B can refuse it), and a
/// captured callback re-posted, headers unchanged, to another path or query, or with another
/// submitter, does not verify.
#[tokio::test]
async fn the_signature_covers_the_request_target_and_the_submitter() {
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let callbacks = Callbacks::from_config(&jobs(&receiver.url("/hooks/"))).unwrap();
    let url = callbacks
        .validate(&receiver.url("/hooks/tenant-b/orders?order=42"))
        .unwrap();
    let delivery = Delivery {
        submitter: Some("token:tenant-a".into()),
        ..succeeded("job-a", b"{\"paid\": true}")
    };
    let outcome = callbacks.deliver(&url, delivery).await;
    assert!(matches!(outcome, CallbackOutcome::Delivered { .. }));
    let genuine = receiver.requests().remove(0);
    assert_eq!(genuine.path, "/hooks/tenant-b/orders?order=42");
    assert_eq!(genuine.header("x-nmid-submitter"), "token:tenant-a");
    assert!(verify(&genuine), "{genuine:?}");

    for target in [
        "/hooks/other-receiver/refunds?order=7",
        "/hooks/tenant-b/orders?order=43",
        "/hooks/tenant-b/orders",
    ] {
        let reposted = Received {
            path: target.into(),
            ..genuine.clone()
        };
        assert!(!verify(&reposted), "re-posted to {target} verifies");
    }
    for submitter in ["token:tenant-b", ""] {
        let mut forged = genuine.clone();
        forged.headers.retain(|(n, _)| n != "x-nmid-submitter");
        forged
            .headers
            .push(("x-nmid-submitter".into(), submitter.into()));
        assert!(!verify(&forged), "submitter {submitter:?} verifies");
    }
}

/// A receiver failing twice with 500 gets three attempts, each gap at least the doubling
/// backoff, the same call id and a fresh signature each time.
#[tokio::test]
async fn a_failing_receiver_gets_retries_with_growing_gaps() {
    let receiver = Receiver::start(|n| match n {
        0 | 1 => Answer::Status(500),
        _ => Answer::Status(200),
    })
    .await;
    let mut config = jobs(&receiver.url("/"));
    config.callback_backoff_ms = 200;
    let metrics = Arc::new(Metrics::new());
    let callbacks = Callbacks::from_config(&config)
        .unwrap()
        .with_metrics(metrics.clone());
    let url = callbacks.validate(&receiver.url("/cb")).unwrap();
    let outcome = callbacks.deliver(&url, succeeded("job-r", b"ok")).await;
    assert_eq!(
        outcome,
        CallbackOutcome::Delivered {
            attempts: 3,
            status: 200
        }
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(400), "{gaps:?}");
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.header("x-call-id"), "job-r");
        assert_eq!(
            request.header("x-nmid-callback-attempt"),
            (i + 1).to_string()
        );
        assert!(verify(request), "attempt {}", i + 1);
    }
    assert_eq!(metrics.callback_count(CallbackEvent::Retried), 2);
    assert_eq!(metrics.callback_count(CallbackEvent::Delivered), 1);
}

/// A receiver that always fails is given up after `callback_max_attempts`; 429 and 408
/// are retried like 5xx.
#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_after_max_attempts() {
    let receiver = Receiver::start(|n| match n % 3 {
        0 => Answer::Status(503),
        1 => Answer::Status(429),
        _ => Answer::Status(408),
    })
    .await;
    let mut config = jobs(&receiver.url("/"));
    config.callback_max_attempts = 4;
    let metrics = Arc::new(Metrics::new());
    let callbacks = Callbacks::from_config(&config)
        .unwrap()
        .with_metrics(metrics.clone());
    let url = callbacks.validate(&receiver.url("/cb")).unwrap();
    match callbacks.deliver(&url, succeeded("job-f", b"x")).await {
        CallbackOutcome::GaveUp {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 4);
            assert!(last_error.contains("503"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(receiver.requests().len(), 4);
    assert_eq!(metrics.callback_count(CallbackEvent::GaveUp), 1);
    assert_eq!(metrics.callback_count(CallbackEvent::Retried), 3);
}

/// A 400 is the receiver refusing the callback: one attempt, no retry.
#[tokio::test]
async fn a_refusing_receiver_gets_one_attempt() {
    let receiver = Receiver::start(|_| Answer::Status(400)).await;
    let callbacks = Callbacks::from_config(&jobs(&receiver.url("/"))).unwrap();
    let url = callbacks.validate(&receiver.url("/cb")).unwrap();
    match callbacks.deliver(&url, succeeded("job-400", b"x")).await {
        CallbackOutcome::GaveUp {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 1);
            assert!(last_error.contains("400"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    // `deliver` has returned: no later attempt can come.
    assert_eq!(receiver.requests().len(), 1);
}

/// A receiver that never answers is timed out on each attempt, then given up.
#[tokio::test]
async fn a_receiver_that_never_answers_is_timed_out() {
    let receiver = Receiver::start(|_| Answer::Never).await;
    let mut config = jobs(&receiver.url("/"));
    config.callback_timeout_ms = 300;
    config.callback_max_attempts = 2;
    let callbacks = Callbacks::from_config(&config).unwrap();
    let url = callbacks.validate(&receiver.url("/cb")).unwrap();
    let started = Instant::now();
    match callbacks.deliver(&url, succeeded("job-t", b"x")).await {
        CallbackOutcome::GaveUp {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 2);
            assert!(
                last_error.contains("no answer within 300 ms"),
                "{last_error}"
            );
        }
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(receiver.requests().len(), 2);
}

/// A redirect is not followed, even to a place the allow list covers: the receiver sees
/// the one request, never one at the redirect's target, and the callback is given up.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let target = Receiver::start(|_| Answer::Status(200)).await;
    let location = target.url("/landing");
    let receiver = Receiver::start(move |_| Answer::Redirect(location.clone())).await;
    let mut config = jobs(&receiver.url("/"));
    config.callback_allow.push(target.url("/"));
    let callbacks = Callbacks::from_config(&config).unwrap();
    let url = callbacks.validate(&receiver.url("/cb")).unwrap();
    match callbacks.deliver(&url, succeeded("job-3xx", b"x")).await {
        CallbackOutcome::GaveUp {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 1);
            assert!(last_error.contains("307"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(receiver.requests().len(), 1);
    assert!(target.requests().is_empty(), "{:?}", target.requests());
}

/// With `max_callbacks_in_flight = 2`, ten deliveries to a slow server under two
/// allow-list entries (two receivers of 2 slots each) all arrive, and the server never has
/// more than two requests in progress at once (and does have two: the bound, not a serial
/// sender, is what holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_on_callbacks_in_flight_holds() {
    let receiver = Receiver::start(|_| Answer::Slow(200, Duration::from_millis(150))).await;
    let mut config = jobs(&receiver.url("/a/"));
    config.callback_allow.push(receiver.url("/b/"));
    config.max_callbacks_in_flight = 2;
    config.max_callbacks_in_flight_per_receiver = 2;
    let callbacks = Callbacks::from_config(&config).unwrap();
    let urls = [
        callbacks.validate(&receiver.url("/a/cb")).unwrap(),
        callbacks.validate(&receiver.url("/b/cb")).unwrap(),
    ];
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (callbacks, url) = (callbacks.clone(), urls[i % 2].clone());
            tokio::spawn(async move {
                let delivery = succeeded(&format!("job-{i}"), b"x");
                callbacks.deliver(&url, delivery).await
            })
        })
        .collect();
    for task in tasks {
        let outcome = task.await.expect("a delivery task panicked");
        assert!(
            matches!(outcome, CallbackOutcome::Delivered { attempts: 1, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(receiver.requests().len(), 10);
    assert_eq!(receiver.most_at_once.load(Ordering::SeqCst), 2);
}

/// A slow receiver holds at most its own share of the global slots: with 4 slots in all
/// and 2 per receiver, twenty deliveries to a receiver that answers after 1.5 s do not
/// delay one to another receiver (it is sent at once, not after the slow ones), and the
/// slow receiver never has more than 2 requests at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_delay_another_receivers_callbacks() {
    let slow = Receiver::start(|_| Answer::Slow(200, Duration::from_millis(1500))).await;
    let fast = Receiver::start(|_| Answer::Status(200)).await;
    let mut config = jobs(&slow.url("/hooks/sleep"));
    config.callback_allow.push(fast.url("/hooks/"));
    config.max_callbacks_in_flight = 4;
    config.max_callbacks_in_flight_per_receiver = 2;
    let callbacks = Callbacks::from_config(&config).unwrap();
    let slow_url = callbacks.validate(&slow.url("/hooks/sleep")).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (callbacks, url) = (callbacks.clone(), slow_url.clone());
            tokio::spawn(async move {
                let delivery = succeeded(&format!("slow-{i}"), b"x");
                callbacks.deliver(&url, delivery).await
            })
        })
        .collect();
    // The slow receiver has its requests in progress: its slots are taken.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.requests().len() < 2 {
        assert!(Instant::now() < deadline, "the slow receiver got nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fast_url = callbacks.validate(&fast.url("/hooks/done")).unwrap();
    let started = Instant::now();
    let outcome = callbacks.deliver(&fast_url, succeeded("fast", b"y")).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, CallbackOutcome::Delivered { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert!(
        took < Duration::from_millis(700),
        "the fast callback took {took:?}"
    );
    assert_eq!(fast.requests().len(), 1);
    // Read before the slow deliveries are aborted: the receiver still counts an aborted
    // request as in progress until its answer is due.
    assert_eq!(slow.most_at_once.load(Ordering::SeqCst), 2);
    for task in tasks {
        task.abort();
    }
}

/// `nmid --check` with the callback keys in the environment, as a deployment gives them:
/// its exit status and stderr.
fn nmid_check(env: &[(&str, &str)]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nmid"));
    command
        .arg("--check")
        .env_remove("NMID__JOBS__CALLBACK_SECRET");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("run nmid --check");
    let code = out.status.code().expect("nmid --check exits");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The callback keys load from the environment (the list comma-separated); a bad entry,
/// a missing secret and an all-digit secret (which the environment's number parsing has
/// already mangled) are refused naming the key, never showing the secret.
#[test]
fn callback_keys_from_the_environment_are_checked_at_load() {
    let allow = (
        "NMID__JOBS__CALLBACK_ALLOW",
        "http://127.0.0.1:9000/hooks/, http://127.0.0.1:9001/",
    );
    let (code, stderr) =
        nmid_check(&[allow, ("NMID__JOBS__CALLBACK_SECRET", "9f3a-secret-b7c1e0")]);
    assert_eq!(code, 0, "{stderr}");

    let (code, stderr) = nmid_check(&[
        (
            "NMID__JOBS__CALLBACK_ALLOW",
            "http://user@127.0.0.1:9000/hooks/",
        ),
        ("NMID__JOBS__CALLBACK_SECRET", "9f3a-secret-b7c1e0"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("jobs.callback_allow"), "{stderr}");
    assert!(stderr.contains("user name or password"), "{stderr}");

    let secret = ("NMID__JOBS__CALLBACK_SECRET", "9f3a-secret-b7c1e0");
    let per_receiver = |n| {
        [
            allow,
            secret,
            ("NMID__JOBS__MAX_CALLBACKS_IN_FLIGHT_PER_RECEIVER", n),
        ]
    };
    let (code, stderr) = nmid_check(&per_receiver("16"));
    assert_eq!(code, 0, "{stderr}");
    for bad in ["0", "65"] {
        let (code, stderr) = nmid_check(&per_receiver(bad));
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains("jobs.max_callbacks_in_flight_per_receiver"),
            "{stderr}"
        );
    }

    let (code, stderr) = nmid_check(&[allow]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("jobs.callback_secret"), "{stderr}");

    let digits = "12345678901234567890123";
    let (code, stderr) = nmid_check(&[allow, ("NMID__JOBS__CALLBACK_SECRET", digits)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("jobs.callback_secret"), "{stderr}");
    assert!(
        !stderr.contains("123456789"),
        "the secret in stderr: {stderr}"
    );
}
