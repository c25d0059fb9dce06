//! `imagejob-operator probe URL`, the binary as `helm test` runs it, against
//! a real HTTP server on 127.0.0.1 (ims-sim's admin API): the exit code is
//! what a test Pod's phase is made of.

use std::process::Command;

use imagejob_operator::sim::{self, Scenario};

fn probe(url: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"))
        .args(["probe", "--timeout", "3s", url])
        .output()
        .expect("the operator binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_exits_0_only_on_a_2xx_answer() {
    let sim = sim::spawn(Scenario::parse("jobs: []").unwrap()).await.expect("sim starts");
    let ok = sim.url("/admin/requests");
    let missing = sim.url("/no-such-page");

    let (code, text) = tokio::task::spawn_blocking(move || probe(&ok)).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ok: ") && text.contains(": 200"), "{text}");

    let (code, text) = tokio::task::spawn_blocking(move || probe(&missing)).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(": 404"), "{text}");

    // Nothing listens on port 9 of loopback (discard, never served here).
    let (code, text) = tokio::task::spawn_blocking(|| probe("http://127.0.0.1:9/readyz")).await.unwrap();
    assert_eq!(code, Some(1), "{text}");

    let (code, text) = tokio::task::spawn_blocking(|| probe("file:///etc/passwd")).await.unwrap();
    assert_eq!(code, Some(4), "a usage error: {text}");
}
