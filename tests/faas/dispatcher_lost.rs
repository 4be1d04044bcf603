//! What nmid-faas does with the calls it runs when their dispatcher goes away, and what it
//! logs about it.

use std::time::{Duration, Instant};

use nmid::client::{CallOptions, Client};
use nmid::config::Config;

use super::common::process::Process;
use super::common::{start_dispatcher_on, start_dispatcher_with_http};
use super::{alive, served, temp_dir, until_gone, until_pids, Faas, Name, SLOW};

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
    let running = until_pids(&pids, 2, SLOW, &faas).await;
    assert!(running.iter().all(|pid| alive(*pid)), "{running:?}");

    nmid.signal("-KILL");
    nmid.wait_exit(SLOW);
    assert!(
        call.await.unwrap().is_err(),
        "the call's dispatcher is gone"
    );
    until_gone(&running, "their dispatcher", SLOW, &faas).await;
    faas.wait_for_log("jobs_cancelled=1").await;
    let log = faas.log();
    assert_eq!(log.matches("jobs_cancelled=1").count(), 1, "{log}");
    let _ = std::fs::remove_dir_all(dir);
    faas.stop().await;
}

/// A call cancelled by its dispatcher's death takes along the process its command started
/// in a session of its own (`setsid`), which holds the call's stdout: killed at once, not
/// whenever some other call ends.
#[actix_rt::test]
async fn a_cancelled_calls_setsid_child_is_killed_at_once() {
    let mut nmid = Process::start(&[]);
    let dir = temp_dir();
    let pids = dir.join("pids");
    let faas = Faas::start_args(
        &format!(
            "[[function]]\nname = \"Hang\"\ncommand = [\"sh\", \"-c\", \"setsid sh -c 'echo $$ > {pids}; exec sleep 100' & sleep 60\"]\ntimeout_ms = 120000\n",
            pids = pids.display()
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
    let escaped = until_pids(&pids, 1, SLOW, &faas).await[0];
    assert!(alive(escaped), "{escaped}");

    nmid.signal("-KILL");
    nmid.wait_exit(SLOW);
    assert!(
        call.await.unwrap().is_err(),
        "the call's dispatcher is gone"
    );
    until_gone(
        &[escaped],
        "its cancelled call (a setsid child)",
        SLOW,
        &faas,
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
    faas.stop().await;
}

/// Three functions (a worker each) lose their dispatcher and get it back: nmid-faas logs
/// one line per change of the dispatcher's state, each counting the three ("connected"
/// once all are registered, "disconnected" and "unreachable" once, "connected" once when
/// it is back), not one line per function.
#[actix_rt::test]
async fn a_dispatcher_outage_is_one_line_per_change_for_all_functions() {
    let functions = ["A", "B", "C"];
    let file: String = (functions.iter())
        .map(|f| format!("[[function]]\nname = \"{f}\"\ncommand = [\"cat\"]\n"))
        .collect();
    let dispatcher = start_dispatcher_with_http(Config::default());
    let addr = dispatcher.addr;
    let faas = Faas::start(&dispatcher, &file);
    for function in functions {
        served(&dispatcher, function, 1).await;
    }
    faas.wait_for_log("connected to dispatcher; functions registered")
        .await;
    dispatcher.stop().await;
    faas.wait_for_log("dispatcher unreachable").await;
    let again = start_dispatcher_on(addr, Config::default());
    for function in functions {
        served(&again, function, 1).await;
    }
    let connected = "connected to dispatcher; functions registered";
    let deadline = Instant::now() + SLOW;
    while faas.log().matches(connected).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "not logged again:\n{}",
            faas.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = faas.log();
    for (line, times) in [
        (connected, 2),
        ("disconnected from dispatcher", 1),
        ("dispatcher unreachable", 1),
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
        assert_eq!(lines.len(), times, "{line:?}:\n{log}");
        assert!(lines.iter().all(|l| l.contains("workers=3")), "{lines:?}");
    }
    faas.stop().await;
    again.stop().await;
}
