//! `nmid-faas --etcd`: the functions served on every dispatcher registered in a real etcd,
//! following dispatchers as they join and die.

use std::time::Duration;

use serde_json::Value;

use super::cluster_support::{Etcd, Nmid};
use super::{Faas, UPPER};

/// Whether `nmid`'s own workers serve `function` (not a peer's, forwarded).
fn serves(functions: &Value, function: &str) -> bool {
    functions.as_array().is_some_and(|all| {
        all.iter()
            .any(|f| f["name"] == function && f["workers"] == 1)
    })
}

async fn call_upper(nmid: &Nmid) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/call/Upper", nmid.http))
        .header("content-type", "application/json")
        .body(r#"{"name":"etcd"}"#)
        .send()
        .await
        .expect("HTTP call");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// With `--etcd` only, each function's worker registers on both dispatchers of the
/// cluster, then on a third that joins later; when one is SIGKILLed the others still answer.
#[actix_rt::test]
async fn serves_every_dispatcher_in_etcd_and_follows_them() {
    let etcd = Etcd::start().await;
    let first = Nmid::start(&etcd.url);
    let second = Nmid::start(&etcd.url);
    let faas = Faas::start_args(UPPER, &["--etcd", &etcd.url]);
    let patience = Duration::from_secs(20);
    for nmid in [&first, &second] {
        nmid.wait_json("/api/v1/functions", patience, "Upper served", |f| {
            serves(f, "Upper")
        })
        .await;
        assert_eq!(
            call_upper(nmid).await,
            (200, r#"{"NAME":"ETCD"}"#.to_owned())
        );
    }
    faas.wait_for_log(&format!("servers=[] etcd=[\"{}\"]", etcd.url))
        .await;

    let mut third = Nmid::start(&etcd.url);
    third
        .wait_json(
            "/api/v1/functions",
            patience,
            "Upper on the late one",
            |f| serves(f, "Upper"),
        )
        .await;
    assert_eq!(call_upper(&third).await.0, 200);
    third.kill();
    for nmid in [&first, &second] {
        assert_eq!(call_upper(nmid).await.0, 200, "after a peer died");
    }
    faas.stop().await;
}

/// A bad etcd endpoint is refused at start with the reason, from the flag, from the file
/// (also by `--check`) and from `NMID_ETCD`.
#[actix_rt::test]
async fn a_bad_etcd_endpoint_is_refused() {
    let run = |args: &[&str], env: Option<&str>, file: &str| {
        let dir = super::temp_dir();
        let path = dir.join("functions.toml");
        std::fs::write(&path, file).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"));
        command.args(args).arg(&path).env_remove("NMID_ETCD");
        if let Some(value) = env {
            command.env("NMID_ETCD", value);
        }
        let out = command.output().unwrap();
        let _ = std::fs::remove_dir_all(dir);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--etcd", "localhost:2379"], None, UPPER);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--etcd: \"localhost:2379\" must be an http:// URL"),
        "{err}"
    );
    let (code, err) = run(&[], Some("https://etcd:2379"), UPPER);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"https://etcd:2379\" must be an http:// URL"),
        "{err}"
    );
    let in_file = format!("etcd = [\"etcd:2379\"]\n{UPPER}");
    for args in [&["--check"][..], &[]] {
        let (code, err) = run(args, None, &in_file);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("key `etcd`: \"etcd:2379\" must be an http:// URL"),
            "{err}"
        );
    }
}
