//! Credentials without keys (issue 22), end to end: the operator binary
//! against the local kube-apiserver, whose REAL ServiceAccount tokens
//! `ims-sim` verifies against the cluster's own JWKS and issuer.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use imagejob_operator::crd::Phase;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const IDP: &str = "k8s-e2e";
const AUDIENCE: &str = "iam-e2e";

/// A mapped namespace's ServiceAccount succeeds over 40 s with IAM tokens of
/// 15 s, renewed with no Stalled blip and about one exchange per token
/// lifetime; the same ServiceAccount name in an unmapped namespace is
/// refused by IAM and sends nothing to IMS.
#[tokio::test]
async fn workload_identity_is_per_namespace_and_renewed_before_expiry() {
    let (client, mapped, run) = setup("wi-mapped").await;
    let unmapped = common::TestNamespace::new(&client, "wi-unmapped").await;
    let (ok_job, refused_job) = ("ff8080814dbd65d7014dbe0d84de0001", "ff8080814dbd65d7014dbe0d84de0002");
    let mut scenario =
        Sim::scenario(json!([succeeding_job(ok_job, "0s", "40s"), succeeding_job(refused_job, "0s", "5s")]));
    let subject = format!("system:serviceaccount:{}:imagejobs", mapped.name);
    scenario["identity_providers"] = json!([cluster_identity_provider(&client, IDP, AUDIENCE, &[subject]).await]);
    scenario["settings"]["federated_token_lifetime"] = json!("15s");
    let sim = Sim::start_with(scenario);
    for ns in [&mapped.name, &unmapped.name] {
        service_account(&client, ns, "imagejobs").await;
    }
    let _op = Operator::start(&sim, &run, &["--oidc-idp-id", IDP, "--oidc-audience", AUDIENCE]);
    create(&client, &mapped.name, &workload_imagejob("mapped", &run, ok_job, "imagejobs")).await;
    create(&client, &unmapped.name, &workload_imagejob("unmapped", &run, refused_job, "imagejobs")).await;

    // Watch the mapped one to its end, noting any Stalled on the way.
    let started = Instant::now();
    let mut stalled = Vec::new();
    loop {
        let s = status(&client, &mapped.name, "mapped").await.unwrap_or_default();
        if let Some((state, reason, message)) = condition(&s, "Stalled").filter(|c| c.0 == "True") {
            stalled.push(format!("{state} {reason}: {message}"));
        }
        if s.phase == Some(Phase::Succeeded) {
            break;
        }
        assert!(started.elapsed() < WAIT, "not Succeeded in {WAIT:?}: {s:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(stalled.is_empty(), "a Stalled blip: {stalled:?}");
    let iam = sim.all_requests().await["iam"].clone();
    let issued = iam["federation_tokens_issued"].as_u64().unwrap();
    // 40 s of 15 s tokens renewed at 90 %: 3 or 4 exchanges, not one per poll.
    eprintln!("workload identity, 40 s job, 15 s IAM tokens: {iam}");
    assert!((3..=5).contains(&issued), "federated tokens issued: {iam}");
    assert_eq!(sim.counter("/auth_failures/token").await, 0, "no IMS request with an expired token");

    let s = wait_status(&client, &unmapped.name, "unmapped", WAIT, "Stalled", |s| {
        condition(s, "Stalled").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&s, "Stalled").unwrap();
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert!(message.contains("IAM") && message.contains("IAM.0003"), "{message}");
    assert_eq!(sim.requests(refused_job).await, 0, "nothing sent to IMS");
    assert!(!message.contains("eyJ"), "no token in the status: {message}");
    mapped.cleanup().await;
    unmapped.cleanup().await;
}

/// A region outside `--allowed-regions` sends nothing; a region with its
/// own endpoints (a second ims-sim) is served there.
#[tokio::test]
async fn regions_are_allowed_by_list_and_served_by_their_own_endpoints() {
    let (client, ns, run) = setup("regions").await;
    let (home_job, ch_job, far_job) =
        ("ff8080814dbd65d7014dbe0d84de0011", "ff8080814dbd65d7014dbe0d84de0012", "ff8080814dbd65d7014dbe0d84de0013");
    let home = Sim::start(json!([succeeding_job(home_job, "0s", "2s"), succeeding_job(far_job, "0s", "2s")]));
    let swiss = Sim::start(json!([succeeding_job(ch_job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let regions = format!("eu-ch2={},{}", swiss.url, swiss.url);
    let _op = Operator::start(&home, &run, &["--region-endpoints", &regions]);
    for (name, job, region) in [("home", home_job, "eu-de"), ("swiss", ch_job, "eu-ch2"), ("far", far_job, "ap-x1")] {
        let mut ij = imagejob(name, &run, job, "creds");
        ij.spec.region = Some(region.into());
        create(&client, &ns.name, &ij).await;
    }
    for name in ["home", "swiss"] {
        wait_status(&client, &ns.name, name, WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    }
    assert!(swiss.requests(ch_job).await > 0);
    assert_eq!(home.try_requests(ch_job).await.unwrap_or(0), 0, "eu-ch2 goes to its own endpoint only");
    let s = wait_status(&client, &ns.name, "far", WAIT, "Stalled", |s| condition(s, "Stalled").is_some()).await;
    let (_, reason, message) = condition(&s, "Stalled").unwrap();
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(message.contains("not allowed"), "{message}");
    assert_eq!(home.requests(far_job).await, 0, "nothing sent for a region outside the list");
    ns.cleanup().await;
}

/// `--default-credentials metadata`: an ImageJob naming no credentials signs
/// with the node's keys; keys of 12 s over a 40 s job are refreshed before
/// they expire, with no request refused.
#[tokio::test]
async fn the_nodes_keys_are_refreshed_with_no_rejected_request() {
    let (client, ns, run) = setup("metadata").await;
    let job = "ff8080814dbd65d7014dbe0d84de0021";
    let mut scenario = Sim::scenario(json!([succeeding_job(job, "0s", "40s")]));
    scenario["metadata"] = json!({"key_lifetime": "12s"});
    let sim = Sim::start_with(scenario);
    let flags = ["--default-credentials", "metadata", "--metadata-endpoint", &sim.url];
    let _op = Operator::start(&sim, &run, &flags);
    let mut ij = imagejob("node-keys", &run, job, "unused");
    ij.spec.credentials_ref = None;
    create(&client, &ns.name, &ij).await;
    wait_status(&client, &ns.name, "node-keys", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    let all = sim.all_requests().await;
    eprintln!("metadata keys, 40 s job, 12 s keys: {}", all["metadata"]);
    assert_eq!(all["auth_failures"]["aksk"], 0, "{all}");
    let fetched = all["metadata"]["key_requests"].as_u64().unwrap();
    // Refreshed with half their life left: every ~6 s, never per poll (40).
    assert!((5..=10).contains(&fetched), "{all}");
    ns.cleanup().await;
}

/// `spec.assumeRole`: an agency of another account on top of a Secret's
/// access keys; the agency token serves every poll.
#[tokio::test]
async fn an_agency_job_succeeds() {
    let (client, ns, run) = setup("agency").await;
    let job = "ff8080814dbd65d7014dbe0d84de0031";
    let mut scenario = Sim::scenario(json!([succeeding_job(job, "0s", "3s")]));
    scenario["agencies"] = json!([{"name": "ims-reader", "domain_name": "other-account"}]);
    let sim = Sim::start_with(scenario);
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    let mut ij = imagejob("agency", &run, job, "creds");
    ij.spec.assume_role =
        Some(serde_json::from_value(json!({"agencyName": "ims-reader", "domainName": "other-account"})).unwrap());
    create(&client, &ns.name, &ij).await;
    let s = wait_status(&client, &ns.name, "agency", WAIT, "Succeeded or Stalled", |s| {
        s.phase == Some(Phase::Succeeded) || condition(s, "Stalled").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(s.phase, Some(Phase::Succeeded), "{:?}", condition(&s, "Stalled"));
    let iam = sim.all_requests().await["iam"].clone();
    assert_eq!(iam["agency_tokens_issued"], 1, "{iam}");
    ns.cleanup().await;
}
