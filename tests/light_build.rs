//! A program that uses only the worker library builds on a machine without `protoc`
//! (issue 21): a scratch crate outside the workspace, made in a temporary directory with a
//! path dependency on `crates/nmid-worker`, is built with a `PATH` from which `protoc` is
//! missing (and `PROTOC` naming no file, so no build script can find one either). The
//! README's "Use it from Rust" programs are built in it too, as written there, with its
//! dependency lines.
//!
//! It builds the worker library's dependencies once (about a minute on two cores) into
//! `target/light-build`, which later runs reuse; so it is not part of `cargo test` but of
//! `make test-light` (`cargo test --test light_build`), which `make test` runs as well.

use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST: &str = r#"[package]
name = "light-worker"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
nmid-worker = { path = "NMID_WORKER" }
nmid-client = { path = "NMID_CLIENT" }
actix-rt = "2"
# The README's lines for a client and for both.
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
serde = { version = "1", features = ["derive"] }

# Not a member of the nmid workspace it sits beside.
[workspace]

[profile.dev]
debug = false
"#;

/// What a user's worker looks like: a handler, the builder, start and stop.
const MAIN: &str = r#"use nmid_worker::{Job, JobError, RetStruct, Worker};

async fn to_upper(job: Job) -> Result<RetStruct, JobError> {
    let name = String::from_utf8_lossy(job.params()).to_uppercase();
    Ok(RetStruct::ok(name))
}

#[actix_rt::main]
async fn main() {
    let worker = Worker::builder()
        .name("light")
        .server("127.0.0.1:6808")
        .function("ToUpper", to_upper)
        .start()
        .expect("a valid worker");
    worker.stop().await;
}
"#;

/// The dependency lines of the README's "Use it from Rust" that [`MANIFEST`] builds with.
const README_LINES: [&str; 3] = [
    r#"actix-rt = "2""#,
    r#"tokio = { version = "1", features = ["macros", "rt-multi-thread"] }"#,
    r#"serde = { version = "1", features = ["derive"] }"#,
];

/// The whole programs (those with a `fn main`) in the README's "Use it from Rust" section.
fn readme_programs(readme: &str) -> Vec<String> {
    let start = readme
        .find("## Use it from Rust")
        .expect("the README's section");
    let section = &readme[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let blocks = section.split("```rust\n").skip(1);
    blocks
        .map(|block| block[..block.find("```").expect("a closed block")].to_owned())
        .filter(|code| code.contains("fn main"))
        .collect()
}

/// A directory of links to every program on `PATH` but `protoc`.
fn path_without_protoc(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").expect("PATH is set");
    for entry in std::env::split_paths(&path).filter_map(|d| std::fs::read_dir(d).ok()) {
        for program in entry.flatten() {
            let name = program.file_name();
            let link = bin.join(&name);
            if name == "protoc" || link.exists() {
                continue;
            }
            std::os::unix::fs::symlink(program.path(), link).unwrap();
        }
    }
    bin
}

/// A program on the worker library alone builds without `protoc`, and builds none of the
/// dispatcher's heavy crates; so do the README's worker and client, as written there.
#[test]
fn a_program_on_the_worker_library_builds_without_protoc() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("nmid-light-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("src")).unwrap();
    let worker = workspace.join("crates/nmid-worker");
    let client = workspace.join("crates/nmid-client");
    let manifest = (MANIFEST.replace("NMID_WORKER", worker.to_str().unwrap()))
        .replace("NMID_CLIENT", client.to_str().unwrap());
    std::fs::write(scratch.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(scratch.join("src/main.rs"), MAIN).unwrap();
    let readme = std::fs::read_to_string(workspace.join("README.md")).unwrap();
    for line in README_LINES {
        assert!(
            readme.contains(line),
            "the README's Use it from Rust lacks {line}"
        );
    }
    let programs = readme_programs(&readme);
    assert_eq!(
        programs.len(),
        2,
        "a worker and a client program in the README"
    );
    std::fs::create_dir_all(scratch.join("src/bin")).unwrap();
    for (i, program) in programs.iter().enumerate() {
        std::fs::write(scratch.join(format!("src/bin/readme_{i}.rs")), program).unwrap();
    }
    // The workspace's versions, so that nothing is resolved afresh (or fetched).
    std::fs::copy(workspace.join("Cargo.lock"), scratch.join("Cargo.lock")).unwrap();
    let bin = path_without_protoc(&scratch);
    let which = Command::new("sh")
        .args(["-c", "command -v protoc"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(!which.status.success(), "protoc is still on the PATH");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(&scratch)
        .args(["build", "--offline"])
        .env("PATH", &bin)
        .env("PROTOC", scratch.join("no-protoc-here"))
        .env("CARGO_TARGET_DIR", workspace.join("target/light-build"))
        .output()
        .expect("cargo runs");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the scratch worker (and the README's programs) did not build without protoc:\n{log}"
    );
    for heavy in [
        "etcd-client",
        "prost-build",
        "tonic",
        "actix-web",
        "prometheus",
    ] {
        assert!(
            !log.contains(&format!("Compiling {heavy} v")),
            "{heavy} was built:\n{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
