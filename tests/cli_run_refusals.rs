//! `imagejob-operator run` and `crd` as users start them. `run` refuses at
//! start what would fail later or leak (issue 25, item 2): plain-HTTP
//! endpoints off this machine (signatures and
//! IAM passwords in clear text), nonsense numbers, a bad default region. The
//! binary is started against the real local API server, so without the
//! check it would start and run: each case must exit non-zero, quickly, with
//! a message that names the flag.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `run` with `args`; the exit code and stderr, or None when it was
/// still running after `limit` (then killed).
fn run_briefly(args: &[&str], limit: Duration) -> Option<(i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"))
        .arg("run")
        .args(["--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", common::kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
            return Some((status.code().unwrap_or(-1), stderr));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_refused_flag_stops_the_operator_with_its_message() {
    let cases: [(&[&str], &str); 7] = [
        (&["--ims-endpoint", "http://ims.example.com"], "--ims-endpoint"),
        (&["--iam-endpoint", "http://iam.{region}.example.com"], "--iam-endpoint"),
        (&["--ims-endpoint", "https://user:pw@ims.example.com"], "--ims-endpoint"),
        (&["--poll-interval", "500ms"], "--poll-interval"),
        (&["--ims-rate-limit", "0"], "--ims-rate-limit"),
        (&["--concurrency", "0"], "--concurrency"),
        (&["--default-region", "eu-de.evil.example/"], "region"),
    ];
    for (args, names) in cases {
        let (code, stderr) = run_briefly(args, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("`run {args:?}` started instead of refusing"));
        assert_ne!(code, 0, "`run {args:?}` exited 0");
        assert!(stderr.contains(names), "`run {args:?}`: the message should name {names}: {stderr}");
        assert!(!stderr.contains("pw@"), "the password in the URL is echoed: {stderr}");
    }
    // The same start-up with a good configuration runs (the cases above are
    // refusals, not a broken harness).
    assert!(run_briefly(&["--ims-endpoint", "http://127.0.0.1:9"], Duration::from_secs(3)).is_none());
}

/// `imagejob-operator crd` prints exactly what `crds/` and the chart's
/// `crds/` hold (issue 25, item 11: only the function was compared, never
/// the subcommand): one YAML document, the ImageJob CRD the code defines,
/// which the API server accepts as it is (`kubectl apply --server-side
/// --dry-run=server` of the binary's output). Red with the subcommand
/// printing JSON or a second document.
#[test]
fn crd_subcommand_prints_the_checked_in_crd() {
    use imagejob_operator::crd::ImageJob;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;

    let out = Command::new(env!("CARGO_BIN_EXE_imagejob-operator")).arg("crd").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let documents: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&printed)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).expect("`crd` prints YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(documents.len(), 1, "`crd` prints one document:\n{printed}");
    let crd: CustomResourceDefinition = serde_json::from_value(documents[0].clone()).expect("a CRD");
    assert_eq!(serde_json::to_value(&crd).unwrap(), serde_json::to_value(ImageJob::crd()).unwrap());
    for file in ["crds/imagejob.yaml", "charts/imagejob-operator/crds/imagejob.yaml"] {
        let checked_in = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(printed == checked_in, "`crd` differs from {file}");
    }

    let mut apply = Command::new(common::tool("kubectl"));
    apply
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--field-manager=crd-test",
            "-f",
            "-",
        ])
        .env("KUBECONFIG", common::kubeconfig_path());
    let applied = common::run(&mut apply, Some(&printed));
    let said = String::from_utf8_lossy(&applied.stdout);
    assert!(applied.status.success(), "the API server refused `crd`: {}", String::from_utf8_lossy(&applied.stderr));
    assert!(said.contains("imagejobs.ims.otc.io") && said.contains("server dry run"), "{said}");
}
