//! How the operator reaches the cloud: IAM on a host of its own (not the
//! IMS one), and HTTPS with a CA of one's own (`--ca-file`).

mod common;

use std::time::Duration;

use common::e2e::*;
use common::sim_proc::SimOptions;
use common::tls::TestCa;
use imagejob_operator::crd::{ImageJobStatus, Phase};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Password credentials with IAM on its own listener: the operator must
/// ask `--iam-endpoint` for the token (the IMS listener answers IAM paths
/// with the gateway's 404), then IMS accepts that token.
#[tokio::test]
async fn password_login_goes_to_the_iam_endpoint() {
    let (client, ns, run) = setup("e2e-iam-host").await;
    let job = "ff8080814dbd65d7014dbe0d84db7101";
    let sim = Sim::start_split(Sim::scenario(json!([succeeding_job(job, "0s", "2s")])));
    assert_ne!(sim.url, sim.iam_url);
    create_password_secret(&client, &ns.name, "creds").await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("iam-host", &run, job, "creds")).await;
    let s = wait_status(&client, &ns.name, "iam-host", WAIT, "Succeeded, or a stall or error", settled).await;
    assert_eq!(s.phase, Some(Phase::Succeeded), "{}", conditions(&s));
    assert_eq!(sim.counter("/iam/tokens_issued").await, 1);
    ns.cleanup().await;
}

/// ims-sim on HTTPS with a certificate of a private CA, IAM on its own
/// listener as well.
fn https_sim(ca: &TestCa, job: &str) -> Sim {
    let options = SimOptions {
        iam_listen: Some("127.0.0.1:0"),
        tls: Some((&ca.cert_file, &ca.key_file)),
        ..SimOptions::default()
    };
    let sim =
        Sim::launch(Sim::scenario(json!([succeeding_job(job, "0s", "2s")])), &options, Some(ca.ca_pem.as_bytes()));
    assert!(sim.url.starts_with("https://") && sim.iam_url.starts_with("https://"), "{} {}", sim.url, sim.iam_url);
    sim
}

/// `--ca-file`: the operator trusts the private CA (besides the built-in
/// roots) for IAM and IMS, and the job succeeds over HTTPS.
#[tokio::test]
async fn https_with_a_private_ca_given_by_ca_file() {
    let (client, ns, run) = setup("e2e-https").await;
    let job = "ff8080814dbd65d7014dbe0d84db7201";
    let ca = TestCa::new("imagejob-operator e2e CA");
    let sim = https_sim(&ca, job);
    create_password_secret(&client, &ns.name, "creds").await;
    let ca_file = ca.ca_file.to_str().unwrap();
    let _op = Operator::start(&sim, &run, &["--ca-file", ca_file]);
    create(&client, &ns.name, &imagejob("https", &run, job, "creds")).await;
    let s = wait_status(&client, &ns.name, "https", WAIT, "Succeeded, or a stall or error", settled).await;
    assert_eq!(s.phase, Some(Phase::Succeeded), "{}", conditions(&s));
    assert_eq!(sim.counter("/iam/tokens_issued").await, 1);
    ns.cleanup().await;
}

/// Without `--ca-file` the same server is refused: a transient error whose
/// message says the certificate failed verification, no success, and not
/// one request reaches IMS (nothing falls back to plain HTTP).
#[tokio::test]
async fn a_certificate_of_an_unknown_ca_is_refused_clearly() {
    let (client, ns, run) = setup("e2e-badca").await;
    let job = "ff8080814dbd65d7014dbe0d84db7202";
    let ca = TestCa::new("imagejob-operator e2e CA");
    let sim = https_sim(&ca, job);
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("badca", &run, job, "creds")).await;
    let s = wait_status(&client, &ns.name, "badca", WAIT, "an error", settled).await;
    let retrying = s.conditions.iter().find(|c| c.type_ == "Reconciling" && c.reason == "RetryingAfterError");
    let message = retrying.map(|c| c.message.as_str()).unwrap_or_else(|| panic!("{}", conditions(&s)));
    assert!(message.contains("TLS certificate verification failed") && message.contains("--ca-file"), "{message}");
    assert_ne!(s.phase, Some(Phase::Succeeded));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&client, &ns.name, "badca").await.unwrap();
    assert_ne!(s.phase, Some(Phase::Succeeded), "{}", conditions(&s));
    assert_eq!(sim.try_requests(job).await, Some(0), "a request reached IMS");
    ns.cleanup().await;
}

/// `job get` over HTTPS: trusted with `OTC_CA_FILE`, refused (exit 1, the
/// verification failure named) without.
#[tokio::test]
async fn job_get_over_https_trusts_otc_ca_file() {
    let job = "ff8080814dbd65d7014dbe0d84db7203";
    let ca = TestCa::new("imagejob-operator cli CA");
    let sim = https_sim(&ca, job);
    let job_get = |ca_file: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imagejob-operator"));
        cmd.args(["job", "get", "--project-id", PROJECT, "--job-id", job, "-o", "json"])
            .env("IMS_ENDPOINT", &sim.url)
            .env("IAM_ENDPOINT", &sim.iam_url)
            .env("OTC_USERNAME", "e2e-user")
            .env("OTC_PASSWORD", "e2e-password")
            .env("OTC_DOMAIN_NAME", "e2e-domain")
            .env_remove("OTC_ACCESS_KEY")
            .env_remove("OTC_SECRET_KEY")
            .env_remove("OTC_CA_FILE");
        if let Some(path) = ca_file {
            cmd.env("OTC_CA_FILE", path);
        }
        cmd.output().unwrap()
    };
    let out = job_get(Some(&ca.ca_file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["jobType"], "imsCreateImageByInstance", "{body}");
    let out = job_get(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TLS certificate verification failed"), "{stderr}");
}

/// Succeeded, Stalled, or retrying after an error: enough to judge.
fn settled(s: &ImageJobStatus) -> bool {
    s.phase == Some(Phase::Succeeded)
        || s.conditions.iter().any(|c| (c.type_ == "Stalled" && c.status == "True") || c.reason == "RetryingAfterError")
}

fn conditions(s: &ImageJobStatus) -> String {
    let shown: Vec<String> =
        s.conditions.iter().map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message)).collect();
    format!("phase {:?}; conditions: {}", s.phase, shown.join("; "))
}
