//! `imagejob-operator job wait` against `ims-sim` over real HTTP: every exit
//! code, a job that meets 503, 429, a request timeout and a garbled body on
//! its way and still ends 0, plain lines in a log, and the live bar in a
//! real pseudo-terminal (util-linux `script`), read back through a terminal
//! emulator (vt100).

mod common;

use std::num::NonZeroU16;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::e2e::{AK, PROJECT, SK, Sim, succeeding_job};
use serde_json::{Value, json};

const JOB: &str = "ff8080814dbd65d7014dbe0d84dbd001";
const AKSK: [(&str, &str); 2] = [("OTC_ACCESS_KEY", AK), ("OTC_SECRET_KEY", SK)];
/// Environment variables for one run.
type Env<'a> = &'a [(&'a str, &'a str)];

fn command(sim: &Sim, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"));
    cmd.args(["job", "wait", "--project-id", PROJECT, "--interval", "1s"])
        .args(args)
        .env("IMS_ENDPOINT", &sim.url)
        .env("IAM_ENDPOINT", &sim.iam_url);
    for var in ["OTC_ACCESS_KEY", "OTC_SECRET_KEY", "OTC_SECURITY_TOKEN", "OTC_USERNAME", "OTC_PASSWORD"] {
        cmd.env_remove(var);
    }
    cmd.env_remove("OTC_DOMAIN_NAME").env_remove("OTC_PROJECT_ID").env_remove("OTC_REGION");
    cmd.envs(env.iter().copied());
    cmd
}

fn job_wait(sim: &Sim, env: &[(&str, &str)], args: &[&str]) -> Output {
    command(sim, env, args).output().expect("run imagejob-operator job wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// A log line holds no control character at all (no colour, no `\r`).
fn assert_plain(output: &str) {
    for line in output.lines() {
        assert!(!line.chars().any(char::is_control), "control character in {line:?}");
    }
}

/// A job that runs 0–3 s, fails with sub-jobs, its reason on top.
fn failing_job(job_id: &str) -> Value {
    json!({
        "project_id": PROJECT, "job_id": job_id, "job_type": "imsImportOvaImageJob", "sub_jobs_list": true,
        "phases": [
            {"after": "0s", "status": "RUNNING", "progress": [0.1, 0.3], "current_task": "ImportImageTask"},
            {"after": "2s", "status": "FAIL", "error_code": "IMG.0014",
             "fail_reason": "An exception occurred when IaaS OpenStack was executing the task."}
        ],
        "sub_jobs": [
            {"job_id": "sub-ok", "job_type": "imsImportImageJob",
             "phases": [{"after": "0s", "status": "SUCCESS", "image_id": "img-sys"}]},
            {"job_id": "sub-bad", "job_type": "imsImportDataImageJob",
             "phases": [{"after": "0s", "status": "RUNNING"},
                        {"after": "1s", "status": "FAIL", "error_code": "IMG.1075", "fail_reason": "registration failed"}]}
        ]
    })
}

#[tokio::test]
async fn success_exits_0_with_one_plain_line_per_change_and_the_image_id() {
    let sim = Sim::start(json!([succeeding_job(JOB, "1s", "6s")]));
    let out = job_wait(&sim, &AKSK, &["--job-id", JOB]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_plain(&stdout);
    assert_plain(&stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].ends_with("] INIT"), "{stderr}");
    assert!(lines.last().unwrap().contains("] SUCCESS 100%"), "{stderr}");
    let running: Vec<&str> = lines.iter().copied().filter(|l| l.contains("RUNNING")).collect();
    assert!(running.len() >= 3, "one line per change while running: {stderr}");
    let percents: Vec<u32> =
        running.iter().map(|l| l.split_whitespace().nth(2).unwrap().trim_end_matches('%').parse().unwrap()).collect();
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "each line is a change: {percents:?}");
    assert!(running.iter().any(|l| l.contains(", ETA ")), "an ETA once progress rose: {stderr}");
    assert!(stdout.starts_with(&format!("Job {JOB} succeeded after ")), "{stdout}");
    assert!(stdout.contains("Image ID:     49e9447f-7dff-41e0-8036-f66fe5488c8b\n"), "{stdout}");
    let sent = sim.requests(JOB).await;
    assert!(
        stdout.contains(&format!("Requests:     {sent}\n")),
        "the summary counts what the cloud saw ({sent}): {stdout}"
    );
}

#[tokio::test]
async fn json_output_is_the_final_status() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "2s")]));
    let out = job_wait(&sim, &AKSK, &["--job-id", JOB, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!((v["phase"].as_str(), v["jobStatus"].as_str()), (Some("Succeeded"), Some("SUCCESS")));
    assert_eq!(v["imageId"], "49e9447f-7dff-41e0-8036-f66fe5488c8b");
    assert_eq!(v["progress"], 100);
}

#[test]
fn failure_exits_1_with_code_reason_and_each_failed_sub_job() {
    let sim = Sim::start(json!([failing_job(JOB)]));
    let out = job_wait(&sim, &AKSK, &["--job-id", JOB]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Error code:   IMG.0014\n"), "{stdout}");
    assert!(stdout.contains("Reason:       An exception occurred when IaaS OpenStack"), "{stdout}");
    let sub =
        stdout.lines().find(|l| l.contains("sub-bad")).unwrap_or_else(|| panic!("failed sub-job listed: {stdout}"));
    assert!(sub.contains("imsImportDataImageJob") && sub.contains("IMG.1075: registration failed"), "{sub}");
    assert!(!stdout.contains("sub-ok"), "only failed sub-jobs: {stdout}");

    let out = job_wait(&sim, &AKSK, &["--job-id", JOB, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["errorCode"].as_str(), v["phase"].as_str()), (Some("IMG.0014"), Some("Failed")));
}

#[test]
fn timeout_exits_2_saying_where_the_job_was() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h")]));
    let started = Instant::now();
    let out = job_wait(&sim, &AKSK, &["--job-id", JOB, "--timeout", "3s"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(10), "stops at its timeout");
    assert!(stdout.starts_with("Timed out after 3s: job ") && stdout.contains("is still RUNNING at "), "{stdout}");
}

#[tokio::test]
async fn rejected_key_forbidden_and_unknown_job_exit_3_after_one_request() {
    let forbidden = "ff8080814dbd65d7014dbe0d84dbd403";
    let mut job403 = succeeding_job(forbidden, "0s", "1h");
    job403["faults"] = json!([{"fault": "error", "status": 403, "code": "IMG.0030", "message": "forbidden"}]);
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h"), job403]));

    let out = job_wait(&sim, &[("OTC_ACCESS_KEY", AK), ("OTC_SECRET_KEY", "wrong")], &["--job-id", JOB]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("401") && stderr.contains("APIGW.0301") && stderr.contains("not retried"), "{stderr}");
    assert!(!stderr.contains("wrong"), "the secret is never shown: {stderr}");
    let counters = sim.all_requests().await;
    assert_eq!(counters["auth_failures"]["aksk"], 1, "a rejected signature is sent once: {counters}");

    let out = job_wait(&sim, &AKSK, &["--job-id", forbidden]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("403"));
    assert_eq!(sim.requests(forbidden).await, 1);

    let out = job_wait(&sim, &AKSK, &["--job-id", "ff8080814dbd65d7014dbe0d84dbdfff"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("404"));
    assert_eq!(sim.all_requests().await["unknown_jobs"], 1);
}

#[tokio::test]
async fn usage_errors_exit_4_before_sending_anything() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "1h")]));
    let cases: [(Env, &[&str], &str); 6] = [
        (&AKSK, &["--job-id", JOB, "--region", "attacker.example/"], "invalid region"),
        (&AKSK, &["--job-id", ".."], "invalid job ID"),
        (&AKSK, &["--job-id", JOB, "--ims-endpoint", "http://ims.example.com"], "--allow-insecure-http"),
        (&AKSK, &["--job-id", JOB, "--timeout", "0s"], "shorter than 1s"),
        (&AKSK, &["--job-id", JOB, "-o", "yaml"], "yaml"),
        (&[], &["--job-id", JOB], "OTC_ACCESS_KEY"),
    ];
    for (env, args, expected) in cases {
        let out = job_wait(&sim, env, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(sim.all_requests().await["total"]["requests"], 0);
}

/// The point of `job wait`: the OTC SDK's WaitForJob gives up on the first
/// 503. Here a 503, two 429s (one with Retry-After), a request that times
/// out and a garbled answer are all shown, retried, and the job ends 0.
#[tokio::test]
async fn transient_errors_are_retried_and_the_job_still_ends_0() {
    let mut job = succeeding_job(JOB, "0s", "20s");
    job["faults"] = json!([
        {"fault": "error", "requests": 2, "status": 503, "body": "flat"},
        {"fault": "throttle", "requests": "4-5", "retry_after": 2},
        {"fault": "latency", "requests": 7, "delay": "3s"},
        {"fault": "malformed", "requests": 9},
    ]);
    let sim = Sim::start(json!([job]));
    let started = Instant::now();
    let out = job_wait(&sim, &AKSK, &["--job-id", JOB, "--request-timeout", "1s"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_plain(&stderr);
    let retries: Vec<&str> = stderr.lines().filter(|l| l.contains("] retry ")).collect();
    assert_eq!(retries.len(), 5, "each transient error shown once: {stderr}");
    for (line, what) in retries.iter().zip(["503", "429", "429", "did not answer in time", "unusable body"]) {
        assert!(line.contains(what), "{line} should mention {what}");
    }
    assert!(
        retries[1].contains("retry 1 in 2s") || retries[1].contains("retry 1 in 3s"),
        "Retry-After: {}",
        retries[1]
    );
    // The simulator counts the answers it wrote; the request that timed out got none.
    let answered = sim.requests(JOB).await;
    let by_status = &sim.all_requests().await["total"]["by_status"];
    assert_eq!((by_status["503"].as_u64(), by_status["429"].as_u64()), (Some(1), Some(2)), "{by_status}");
    let sent = answered + 1;
    assert!(
        stdout.contains(&format!("Requests:     {sent} (5 retried after transient errors)")),
        "{answered} {stdout}"
    );
    eprintln!(
        "flaky job: {sent} requests ({answered} answered, 5 retried) in {:.1}s to reach SUCCESS after 20 s",
        started.elapsed().as_secs_f64()
    );
}

/// A real pseudo-terminal: the bar is drawn and redrawn while the job runs,
/// and once it ends the screen holds the summary and no trace of the bar.
#[test]
fn on_a_terminal_a_live_bar_then_a_clean_summary() {
    let sim = Sim::start(json!([succeeding_job(JOB, "0s", "5s")]));
    let inner = command(&sim, &AKSK, &["--job-id", JOB]);
    let mut shell_line = shell_quote(inner.get_program().to_str().unwrap());
    for arg in inner.get_args() {
        shell_line.push(' ');
        shell_line.push_str(&shell_quote(arg.to_str().unwrap()));
    }
    let mut cmd = Command::new("script");
    cmd.args(["--quiet", "--return", "--command", &shell_line, "/dev/null"]).env("COLUMNS", "100").env("LINES", "30");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("util-linux script");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let raw = out.stdout;

    // Drawn and redrawn: many frames, each with a bar and a percentage.
    let frames = raw.iter().filter(|&&b| b == b'\r').count();
    assert!(frames >= 10, "the bar is redrawn ({frames} carriage returns)");
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(raw_text.contains("[=") && raw_text.contains("% RUNNING"), "a bar with percent and status");
    assert!(raw_text.contains("ETA "), "an ETA once progress rose");

    // What the person sees at the end, through a terminal emulator.
    let mut screen = vt100::Parser::new(NonZeroU16::new(30).unwrap(), NonZeroU16::new(100).unwrap(), 0);
    screen.process(&raw);
    let contents = screen.screen().contents();
    let shown: Vec<&str> = contents.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    assert!(shown[0].starts_with(&format!("Job {JOB} succeeded after ")), "{contents}");
    assert!(shown.iter().any(|l| l.starts_with("Image ID:")), "{contents}");
    assert!(shown.last().unwrap().starts_with("Requests:"), "{contents}");
    assert!(!contents.contains('%') && !contents.contains("[="), "no trace of the bar: {contents}");
    let final_part = &raw_text[raw_text.rfind("Job ").unwrap()..];
    assert!(!final_part.contains('\u{1b}'), "the summary is plain text: {final_part:?}");
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
