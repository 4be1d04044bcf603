//! The Kubernetes manifests of deploy/k8s as the cluster would get them: rendered by
//! `kubectl kustomize` and read as JSON (PyYAML, which `kubernetes-validate` brings), for
//! the tests that check what they say (tests/deploy.rs) and act it out (tests/rollout.rs).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The objects `kubectl kustomize <kustomization>` renders, as JSON.
pub fn rendered(kustomization: &str) -> Vec<Value> {
    let yaml = Command::new("kubectl")
        .args(["kustomize", kustomization])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): `make test` installs it"));
    assert!(
        yaml.status.success(),
        "kubectl kustomize {kustomization}: {}",
        String::from_utf8_lossy(&yaml.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): `make test` installs it"));
    use std::io::Write;
    python
        .stdin
        .take()
        .unwrap()
        .write_all(&yaml.stdout)
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "YAML to JSON (PyYAML comes with kubernetes-validate): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one object of `kind` among `objects`.
pub fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// The containers of the Deployment among `objects`.
pub fn containers(objects: &[Value]) -> Vec<Value> {
    object(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone()
}

/// The seconds a container's `preStop: exec: ["sleep", "N"]` waits.
pub fn pre_stop_seconds(container: &Value) -> u64 {
    let command = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(command[0], "sleep", "{}: preStop sleeps", container["name"]);
    command[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}: preStop sleep seconds", container["name"]))
}

/// The container named `name` among `containers`.
pub fn container<'a>(containers: &'a [Value], name: &str) -> &'a Value {
    containers
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}
