//! What peers can put in the `nmid` binary's log (issue 18): names with control characters
//! arrive escaped on one line, a flood of refused connections writes a line per window, not
//! one each, and the start-up warnings name what the configuration leaves open.

use super::*;

/// A configuration file of its own for one `nmid` process.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("nmid-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A worker registers a function whose name holds a newline, a forged log line and ANSI
/// escapes: the dispatcher logs it on one line, escaped, and no line of its log begins with
/// the forged text or holds an ESC byte.
#[actix_rt::test]
async fn a_name_with_a_newline_and_esc_is_one_escaped_log_line() {
    let mut nmid = Process::start(&[]);
    let evil = "evil\nINFO nmid: forged line\x1b[31mred";
    let mut worker = Peer::connect(nmid.addr).await;
    worker
        .send(Frame::WAddFunc {
            function: bytes(evil),
        })
        .await;
    assert_eq!(worker.recv().await, Frame::Ok);
    let line = nmid.wait_for_log("function registered");
    assert!(
        line.contains(r"evil\nINFO nmid: forged line\u{1b}[31mred"),
        "{line}"
    );
    drop(worker);
    let _ = nmid.child.kill();
    let lines = nmid.whole_log();
    assert!(
        !lines.iter().any(|l| l.starts_with("INFO nmid: forged")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\x1b')), "{lines:#?}");
}

/// Refused connections are logged once per kind and window: 300 connections from a denied
/// address write one or a few full lines, and summaries whose counts add up to the rest.
#[actix_rt::test]
async fn a_flood_of_refused_connections_is_summarised() {
    let config = TempConfig::new(
        "summaries",
        "[security]\ndeny = [\"127.0.0.2\"]\n[log]\nrefusal_summary_interval_ms = 500\n",
    );
    let nmid = Process::start(&["--config", &config.arg()]);
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        let mut denied = connect_from("127.0.0.2", nmid.addr).await;
        assert!(closed(&mut denied).await, "a denied connection stayed open");
    }
    let full = |seen: &[String]| {
        (seen.iter())
            .filter(|l| l.contains("address not allowed"))
            .count()
    };
    let summarised = |seen: &[String]| -> usize {
        (seen.iter())
            .filter(|l| l.contains("closed more connections"))
            .map(|l| {
                let more = l.split("more=").nth(1).expect("more=");
                more.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = nmid.log_so_far();
        let logged = full(&seen) + summarised(&seen);
        if logged == FLOOD {
            break;
        }
        assert!(
            logged < FLOOD && Instant::now() < deadline,
            "{logged} refusals logged of {FLOOD}: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = full(&nmid.log_so_far());
    assert!(
        (1..=10).contains(&lines),
        "{lines} full lines for {FLOOD} refusals"
    );
}

/// Each way the configuration leaves the dispatcher open is one `warn` line at start (here:
/// `[[auth.v1_peers]]` granting every address); a dispatcher with nothing open logs none.
#[actix_rt::test]
async fn the_start_up_warnings_name_what_is_left_open() {
    let open_v1 = TempConfig::new(
        "exposed",
        "[auth]\nenabled = true\n[[auth.v1_peers]]\nname = \"anyone\"\ncidrs = [\"0.0.0.0/0\"]\n\
         roles = [\"client\"]\nfunctions = [\"*\"]\n",
    );
    // Logged before the listeners are: among the lines read while it started.
    let nmid = Process::start(&["--config", &open_v1.arg()]);
    let seen = nmid.log_so_far();
    let warned: Vec<&String> = (seen.iter())
        .filter(|l| l.contains(r#"exposure="v1_peers_everyone""#))
        .collect();
    assert_eq!(warned.len(), 1, "{seen:#?}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains(r#""anyone""#),
        "{warned:?}"
    );
    drop(nmid);
    let quiet = Process::start(&[]);
    let seen = quiet.log_so_far();
    assert!(!seen.iter().any(|l| l.contains("exposure=")), "{seen:#?}");
}
