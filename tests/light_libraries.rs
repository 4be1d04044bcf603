//! The libraries a user adds stay light (issue 21): `cargo tree` of each with its default
//! features has at most [`MAX_CRATES`] crates and none of the dispatcher's heavy ones (no
//! `protoc` step, no web server, no Prometheus), while the opt-in features bring theirs.
//! Nothing is built here: `cargo tree` only reads the lock file and the manifests.
//! (`tests/light_build.rs`, `make test-light`, builds a program on the worker library
//! without `protoc`.)

use std::collections::BTreeSet;
use std::process::Command;

/// The most crates a library may pull in with its default features.
const MAX_CRATES: usize = 80;

/// Crates the default features must not bring: the `protoc` build step (etcd-client's
/// tonic/prost), the dispatcher's web server and metrics, the OTLP exporter, TLS.
const FORBIDDEN: &[&str] = &[
    "tonic-build",
    "prost-build",
    "tonic",
    "etcd-client",
    "actix-web",
    "opentelemetry-otlp",
    "prometheus",
    "rustls",
];

const LIBRARIES: &[&str] = &["nmid-proto", "nmid-client", "nmid-worker"];

/// The distinct crates (name, version) of `package`'s normal and build dependencies with
/// `features` on top of its defaults, itself included.
fn crates_of(package: &str, features: &[&str]) -> BTreeSet<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--locked", "-p", package, "-e", "normal,build"])
        .args(["--prefix", "none"]);
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

fn names(crates: &BTreeSet<(String, String)>) -> BTreeSet<&str> {
    crates.iter().map(|(name, _)| name.as_str()).collect()
}

/// Each library with its default features: at most 80 crates, none of the heavy ones.
#[test]
fn each_library_with_default_features_is_light_and_needs_no_protoc() {
    for library in LIBRARIES {
        let crates = crates_of(library, &[]);
        assert!(
            crates.len() <= MAX_CRATES,
            "{library} pulls {} crates with its default features (at most {MAX_CRATES}): {:?}",
            crates.len(),
            names(&crates)
        );
        let names = names(&crates);
        assert!(
            names.contains(library),
            "{library} missing from its own tree"
        );
        let heavy: Vec<&&str> = FORBIDDEN.iter().filter(|c| names.contains(**c)).collect();
        assert!(
            heavy.is_empty(),
            "{library}'s default features bring {heavy:?}"
        );
    }
}

/// The opt-in features bring what they are for: etcd-client with `discovery`, rustls with
/// `tls`, the OTLP exporter with `otlp`, Prometheus with the worker's `metrics`.
#[test]
fn the_opt_in_features_bring_their_crates() {
    for library in LIBRARIES {
        let discovery = crates_of(library, &["discovery"]);
        assert!(
            names(&discovery).contains("etcd-client"),
            "{library} --features discovery has no etcd-client"
        );
        assert!(names(&crates_of(library, &["tls"])).contains("rustls"));
        assert!(names(&crates_of(library, &["otlp"])).contains("opentelemetry-otlp"));
    }
    let metrics = crates_of("nmid-worker", &["metrics"]);
    assert!(names(&metrics).contains("prometheus"));
}

/// The libraries sit below the dispatcher: none of them depends on the `nmid` package, in
/// any feature combination.
#[test]
fn no_library_depends_on_the_dispatcher() {
    for library in LIBRARIES {
        let all = crates_of(library, &["discovery", "tls", "otlp"]);
        assert!(
            !names(&all).contains("nmid"),
            "{library} depends on the dispatcher package"
        );
    }
}
