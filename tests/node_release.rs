//! The release as users take it (tests/cluster/release --push, the node's
//! registry from tests/cluster/up --node): the files check out (SHA256SUMS,
//! krew's sha256, the chart pinned by digest, an SBOM that lists the Debian
//! packages and crates and is attached in the registry); `deploy/` with the
//! image rewritten by `kustomize edit set image` runs the operator from the
//! registry; the kubectl plugin installed by krew from the release files
//! shows an ImageJob that operator handled.

mod common;
#[path = "common/node.rs"]
mod node;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::e2e;
use imagejob_operator::crd::ImageJob;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sh(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    node::stdout_ok(common::run(cmd, None), &what)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn sha256(path: &Path) -> String {
    sh(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_owned()
}

/// Components of the SBOM whose package URL starts with `prefix`.
fn purls(sbom: &Value, prefix: &str) -> Vec<String> {
    let all = sbom["components"].as_array().expect("components");
    all.iter().filter_map(|c| c["purl"].as_str()).filter(|p| p.starts_with(prefix)).map(str::to_owned).collect()
}

#[test]
fn release_files_check_out_and_the_sbom_is_attached_in_the_registry() {
    let p = node::published();
    let v = &p.version;
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    sh(Command::new("sha256sum").arg("--check").arg("--strict").arg("SHA256SUMS").current_dir(&p.dir));
    let sums = std::fs::read_to_string(p.dir.join("SHA256SUMS")).unwrap();
    for f in ["plugins/imagejob.yaml", "RELEASE-NOTES.md", &format!("imagejob-operator-{v}.tgz")] {
        assert!(sums.lines().any(|l| l.ends_with(&format!("  {f}"))), "{f} not in SHA256SUMS:\n{sums}");
    }

    // krew's manifest names the tarball's sha256.
    let tarball = format!("kubectl-imagejob-{v}-linux-amd64.tar.gz");
    let manifest = std::fs::read_to_string(p.dir.join("plugins/imagejob.yaml")).unwrap();
    assert!(manifest.contains(&format!("sha256: {}", sha256(&p.dir.join(&tarball)))), "{manifest}");
    assert!(manifest.contains(&format!("/{tarball}")), "{manifest}");

    // The chart: version from Cargo.toml, the image pinned by digest.
    let chart = p.dir.join(format!("imagejob-operator-{v}.tgz"));
    let values = sh(Command::new("tar").arg("-xzOf").arg(&chart).arg("imagejob-operator/values.yaml"));
    assert!(values.contains(&format!("  digest: \"{}\"", p.digest)), "values.yaml pins no digest");
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&sh(Command::new("tar").arg("-xzOf").arg(&chart).arg("imagejob-operator/Chart.yaml")))
            .unwrap();
    assert_eq!(
        (chart_yaml["version"].as_str(), chart_yaml["appVersion"].as_str()),
        (Some(v.as_str()), Some(v.as_str()))
    );
    let rendered = sh(Command::new(common::tool("helm")).args(["template", "x"]).arg(&chart));
    assert!(rendered.contains(&format!("image: \"{}\"", p.image)), "helm template does not use {}", p.image);

    let sbom = json_file(&p.dir.join(format!("imagejob-operator-{v}.sbom.cdx.json")));
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let debs = purls(&sbom, "pkg:deb/debian/");
    let crates = purls(&sbom, "pkg:cargo/");
    eprintln!(
        "release: SBOM {} components: {} Rust crates, {} Debian packages",
        sbom["components"].as_array().unwrap().len(),
        crates.len(),
        debs.len()
    );
    for pkg in ["libc6", "libgcc-s1", "ca-certificates", "base-files"] {
        assert!(debs.iter().any(|d| d.starts_with(&format!("pkg:deb/debian/{pkg}@"))), "{pkg} not in {debs:?}");
    }
    if p.auditable {
        for c in ["kube-client", "tokio", "rustls"] {
            assert!(crates.iter().any(|d| d.starts_with(&format!("pkg:cargo/{c}@"))), "{c} not in the SBOM");
        }
        // A release's binaries run on any Linux: statically linked.
        let x = tempfile::tempdir().unwrap();
        sh(Command::new("tar").arg("-xzf").arg(p.dir.join(&tarball)).arg("-C").arg(x.path()));
        let ldd = Command::new("ldd").arg(x.path().join("kubectl-imagejob")).output().unwrap();
        let ldd = String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
        assert!(ldd.contains("statically linked"), "kubectl-imagejob is linked dynamically:\n{ldd}");
    }

    // The registry holds the SBOM as an artifact whose subject is the image.
    let (registry, path) = p.image.split_once('/').unwrap();
    let repo = path.split('@').next().unwrap();
    let tag = format!("{}.sbom", p.digest.replace(':', "-"));
    let url = format!("http://{registry}/v2/{repo}/manifests/{tag}");
    let raw = sh(Command::new("curl").args(["-fsS", "-H", "Accept: application/vnd.oci.image.manifest.v1+json", &url]));
    let m: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(m["subject"]["digest"], p.digest.as_str());
    assert_eq!(m["artifactType"], "application/vnd.cyclonedx+json");
}

#[tokio::test(flavor = "multi_thread")]
async fn kustomize_set_image_installs_deploy_from_the_registry_and_krew_installs_the_plugin() {
    let node::Release { client, ns, run, cleanup: _cleanup, .. } = node::release_setup("node-release").await;
    let p = node::published();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("deploy");
    std::fs::create_dir(&dir).unwrap();
    for f in ["00-namespace.yaml", "01-crd.yaml", "02-imagejob-operator.yaml", "Kustomization"] {
        std::fs::copy(Path::new(ROOT).join("deploy").join(f), dir.join(f)).unwrap();
    }
    // What a GitOps repository does with a new release: pin it by digest.
    let kustomize = |args: &[&str]| sh(Command::new(common::tool("kustomize")).args(args).current_dir(&dir));
    let (name, digest) = p.image.split_once('@').unwrap();
    kustomize(&["edit", "set", "image", &format!("imagejob-operator={name}@{digest}")]);
    // The cluster is shared: this operator handles only this run's ImageJobs.
    let env = format!(
        r#"[{{"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {{"name": "WATCH_LABEL_SELECTOR", "value": "e2e-run={run}"}}}}]"#
    );
    kustomize(&["edit", "add", "patch", "--kind", "Deployment", "--name", "imagejob-operator", "--patch", &env]);
    let built = kustomize(&["build", "."]);
    assert!(built.contains(&format!("image: {}", p.image)), "kustomize build does not pin {}", p.image);

    let t = Instant::now();
    node::kubectl(&["apply", "--server-side", "--force-conflicts", "-k", dir.to_str().unwrap()], None);
    let pods = node::wait_ready_pods(
        &client,
        "imagejob-system",
        &node::operator_selector("imagejob-operator"),
        1,
        Duration::from_secs(180),
    )
    .await;
    eprintln!("release: deploy/ (kustomize) operator Pod Ready {:.1}s after apply", t.elapsed().as_secs_f64());
    let status = pods[0].status.as_ref().unwrap();
    let image_id = status.container_statuses.as_ref().unwrap()[0].image_id.clone();
    assert!(image_id.ends_with(&p.digest), "the Pod runs {image_id}, not {}", p.digest);
    print_pull_event(&client, pods[0].metadata.name.as_deref().unwrap()).await;

    // An ImageJob whose Secret is missing: Stalled, no cloud request.
    let ij = e2e::imagejob("no-secret", &run, "ff8080810000000000000000000000bb", "absent");
    e2e::create(&client, &ns, &ij).await;
    common::eventually(Duration::from_secs(60), "no-secret Stalled", || async {
        let ij = Api::<ImageJob>::namespaced(client.clone(), &ns).get("no-secret").await.ok()?;
        let conds = ij.status?.conditions;
        conds.iter().any(|c| c.type_ == "Stalled" && c.status == "True").then_some(())
    })
    .await;
    let out = krew_plugin_status(p, &["status", "no-secret", "-n", &ns]);
    eprintln!("release: kubectl imagejob status (installed by krew):\n{out}");
    assert!(out.contains("no-secret") && out.contains("CredentialsNotFound"), "{out}");

    // The CRD stays: other tests' ImageJobs live in it.
    kustomize(&["edit", "remove", "resource", "01-crd.yaml"]);
    let _ = common::run(
        Command::new(common::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(node::up_node())
            .args(["delete", "--wait=false", "-k"])
            .arg(&dir),
        None,
    );
    node::cleanup(&client, "none", &ns).await;
}

/// `kubectl krew install --manifest --archive` from the release files into
/// a KREW_ROOT of its own, then `kubectl imagejob ARGS` found on PATH.
fn krew_plugin_status(p: &node::Published, args: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    let bin = common::tool("kubectl");
    let tools = bin.parent().unwrap();
    let path = format!("{}:{}:{}", root.path().join("bin").display(), tools.display(), std::env::var("PATH").unwrap());
    let archive = p.dir.join(format!("kubectl-imagejob-{}-linux-amd64.tar.gz", p.version));
    // krew runs as a kubectl plugin: `kubectl krew` finds kubectl-krew on PATH.
    std::os::unix::fs::symlink(common::tool("krew"), root.path().join("kubectl-krew")).unwrap();
    let krew_path = format!("{}:{path}", root.path().display());
    let t = Instant::now();
    sh(Command::new(&bin)
        .args(["krew", "install"])
        .arg(format!("--manifest={}", p.dir.join("plugins/imagejob.yaml").display()))
        .arg(format!("--archive={}", archive.display()))
        .env("KREW_ROOT", root.path())
        .env("KREW_NO_UPGRADE_CHECK", "1")
        .env("PATH", &krew_path));
    eprintln!("release: krew install from the release files in {:.1}s", t.elapsed().as_secs_f64());
    // kubectl passes no flags placed before a plugin's name: KUBECONFIG.
    sh(Command::new(&bin).arg("imagejob").args(args).env("KUBECONFIG", node::up_node()).env("PATH", &path))
}

/// The kubelet's Pulled Event: how long the pull from the registry took
/// (or that the image was already on the node).
async fn print_pull_event(client: &kube::Client, pod: &str) {
    let events = Api::<Event>::namespaced(client.clone(), "imagejob-system");
    let list = events.list(&ListParams::default().fields(&format!("involvedObject.name={pod}"))).await.unwrap();
    for e in list.items.iter().filter(|e| e.reason.as_deref() == Some("Pulled")) {
        eprintln!("release: kubelet: {}", e.message.as_deref().unwrap_or_default());
    }
}
