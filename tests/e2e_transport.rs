//! How the operator reaches the cloud: IAM on a host of its own (not the
//! IMS one), and HTTPS with a CA of one's own (`--ca-file`).

mod common;

use std::time::Duration;

use common::e2e::*;
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
