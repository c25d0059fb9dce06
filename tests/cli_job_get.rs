//! `imagejob-operator job get` against `ims-sim`, with both ways to authenticate.

mod common;

use std::process::{Command, Output};

use common::e2e::{AK, PROJECT, SK, Sim, succeeding_job};
use serde_json::{Value, json};

const JOB: &str = "ff8080814dbd65d7014dbe0d84dbd001";

fn job_get(sim: &Sim, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"));
    cmd.args(["job", "get", "--project-id", PROJECT])
        .args(extra)
        .env("IMS_ENDPOINT", &sim.url)
        .env("IAM_ENDPOINT", &sim.iam_url);
    for var in [
        "OTC_ACCESS_KEY",
        "OTC_SECRET_KEY",
        "OTC_SECURITY_TOKEN",
        "OTC_USERNAME",
        "OTC_PASSWORD",
        "OTC_DOMAIN_NAME",
        "OTC_PROJECT_ID",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().expect("run imagejob-operator job get")
}

const AKSK: [(&str, &str); 2] = [("OTC_ACCESS_KEY", AK), ("OTC_SECRET_KEY", SK)];
const PASSWORD: [(&str, &str); 3] =
    [("OTC_USERNAME", "e2e-user"), ("OTC_PASSWORD", "e2e-password"), ("OTC_DOMAIN_NAME", "e2e-domain")];

#[test]
fn json_output_with_aksk_uses_the_status_field_names() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h")]));
    let out = job_get(&sim, &AKSK, &["--job-id", JOB, "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["jobStatus"], "RUNNING");
    assert_eq!(v["jobType"], "imsCreateImageByInstance");
    assert_eq!(v["currentTask"], "CreateImageByInstanceTask");
    assert!(v["progress"].as_u64().is_some_and(|p| p <= 100), "{v}");
    assert!(v["beginTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
}

#[test]
fn table_output_with_password_auth() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h")]));
    let out = job_get(&sim, &PASSWORD, &["--job-id", JOB]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("RUNNING") && stdout.contains("imsCreateImageByInstance"), "{stdout}");
    assert!(!stdout.contains("e2e-password") && !String::from_utf8_lossy(&out.stderr).contains("e2e-password"));
}

#[test]
fn failures_exit_non_zero_with_status_code_and_message() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h")]));
    let out = job_get(&sim, &AKSK, &["--job-id", "ff8080814dbd65d7014dbe0d84dbdfff"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    assert!(stderr.contains("IMG."), "the cloud error code: {stderr}");
    // The ID ims-sim sent in X-Request-Id (32 hex digits), for a support case.
    let id = stderr.lines().find_map(|l| l.trim().strip_prefix("request id:")).map(str::trim);
    assert!(id.is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())), "{stderr}");
    assert!(out.stdout.is_empty());

    let wrong = [("OTC_ACCESS_KEY", AK), ("OTC_SECRET_KEY", "wrong")];
    let out = job_get(&sim, &wrong, &["--job-id", JOB]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("401") && stderr.contains("APIGW.0301"), "{stderr}");
    assert!(!stderr.contains("wrong\n") && !stderr.contains("secret key wrong"), "{stderr}");

    let out = job_get(&sim, &[], &["--job-id", JOB]);
    assert_eq!(out.status.code(), Some(4), "missing credentials are a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTC_ACCESS_KEY"));
}

/// Input the operator would refuse is refused before anything is sent:
/// the password never reaches another host, whatever the flags say.
#[tokio::test]
async fn refuses_what_the_operator_refuses_before_sending_anything() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h")]));
    let cases: [(&[&str], &str); 5] = [
        (&["--job-id", JOB, "--region", "attacker.example/"], "invalid region"),
        (&["--job-id", ".."], "invalid job ID"),
        (&["--job-id", "a/b"], "invalid job ID"),
        (&["--job-id", JOB, "--iam-endpoint", "http://iam.{region}.example.com"], "--allow-insecure-http"),
        (&["--job-id", JOB, "--bogus-flag"], "--bogus-flag"),
    ];
    for (args, expected) in cases {
        let out = job_get(&sim, &PASSWORD, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = job_get(
        &sim,
        &[("OTC_REGION", "attacker.example/"), PASSWORD[0], PASSWORD[1], PASSWORD[2]],
        &["--job-id", JOB],
    );
    assert_eq!(out.status.code(), Some(4), "OTC_REGION is checked too");
    let counters = sim.all_requests().await;
    assert_eq!(counters["total"]["requests"], 0, "nothing reached the simulator: {counters}");
    assert_eq!(counters["iam"]["token_requests"], 0, "{counters}");
}
