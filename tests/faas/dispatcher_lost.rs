//! What nmid-faas does with the calls it runs when their dispatcher goes away.

use std::time::{Duration, Instant};

use nmid::client::{CallOptions, Client};

use super::common::process::Process;
use super::{alive, read_pids, temp_dir, Faas, Name, SLOW};

/// A dispatcher killed (SIGKILL) while a call runs: nmid-faas kills the call's process
/// group at once, rather than let it work for an answer nobody can receive, and says so in
/// one log line.
#[actix_rt::test]
async fn a_lost_dispatchers_calls_are_killed_with_their_process_group() {
    let mut nmid = Process::start(&[]);
    let dir = temp_dir();
    let pids = dir.join("pids");
    let faas = Faas::start_args(
        &format!(
            "[[function]]\nname = \"Hang\"\ncommand = [\"sh\", \"-c\", \"sleep 60 & echo $$ $! > {}; wait\"]\ntimeout_ms = 120000\n",
            pids.display()
        ),
        &["--server", &nmid.addr.to_string()],
    );
    faas.wait_for_log("connected to dispatcher; functions registered")
        .await;
    let client = Client::connect(nmid.addr.to_string()).await.unwrap();
    let call = actix_rt::spawn(async move {
        let params = rmp_serde::to_vec_named(&Name { name: "x" }).unwrap();
        let options = CallOptions::default().timeout(Duration::from_secs(120));
        client.call_with("Hang", params, options).await
    });
    let deadline = Instant::now() + SLOW;
    while read_pids(&pids).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the call never ran:\n{}",
            faas.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = read_pids(&pids);
    assert!(running.iter().all(|pid| alive(*pid)), "{running:?}");

    nmid.signal("-KILL");
    nmid.wait_exit(SLOW);
    assert!(
        call.await.unwrap().is_err(),
        "the call's dispatcher is gone"
    );
    let deadline = Instant::now() + SLOW;
    while running.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "still running {:?} after the dispatcher died:\n{}",
            running,
            faas.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faas.wait_for_log("jobs_cancelled=1").await;
    let log = faas.log();
    assert_eq!(log.matches("jobs_cancelled=1").count(), 1, "{log}");
    let _ = std::fs::remove_dir_all(dir);
    faas.stop().await;
}
