use super::*;
use crate::crd::{CredentialsRef, ImageJobSpec};
use clap::Parser;

fn args() -> RunArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    Cli::parse_from(["test", "--ims-endpoint", "https://ims.{region}.example", "--iam-endpoint", "https://iam.{region}.example"]).run
}

fn imagejob(spec: ImageJobSpec) -> ImageJob {
    let mut ij = ImageJob::new("ij", spec);
    ij.metadata.namespace = Some("ns".into());
    ij
}

fn spec() -> ImageJobSpec {
    ImageJobSpec { job_id: "job-1".into(), credentials_ref: CredentialsRef { name: "creds".into() }, ..Default::default() }
}

#[test]
fn target_uses_configured_endpoints_and_the_region() {
    let ij = imagejob(ImageJobSpec { region: Some("eu-nl".into()), project_id: Some("p1".into()), ..spec() });
    let t = target_of(&ij, &args(), None).unwrap();
    assert_eq!(t.ims_endpoint, "https://ims.eu-nl.example");
    assert_eq!(t.iam_endpoint, "https://iam.eu-nl.example");
    assert_eq!((t.project_id.as_str(), t.job_id.as_str()), ("p1", "job-1"));
}

#[test]
fn target_falls_back_to_default_region_and_secret_project() {
    let t = target_of(&imagejob(spec()), &args(), Some("from-secret")).unwrap();
    assert_eq!(t.ims_endpoint, "https://ims.eu-de.example");
    assert_eq!(t.project_id, "from-secret");
    let err = target_of(&imagejob(spec()), &args(), None).unwrap_err();
    assert!(err.contains("projectId"), "{err}");
}

#[test]
fn a_region_cannot_name_another_host() {
    for region in ["evil.com/", "eu-de.attacker.net#", "EU", "", "a b", "x@y"] {
        let ij = imagejob(ImageJobSpec { region: Some(region.into()), project_id: Some("p".into()), ..spec() });
        assert!(target_of(&ij, &args(), None).is_err(), "{region:?} accepted");
    }
}

#[test]
fn requested_at_is_pending_until_handled() {
    let mut ij = imagejob(spec());
    assert_eq!(pending_request(&ij), None);
    ij.metadata.annotations = Some([(REQUESTED_AT_ANNOTATION.to_owned(), "now-1".to_owned())].into());
    assert_eq!(pending_request(&ij), Some("now-1"));
    ij.status = Some(ImageJobStatus { last_handled_reconcile_at: Some("now-1".into()), ..Default::default() });
    assert_eq!(pending_request(&ij), None);
}

#[test]
fn deadline_counts_from_the_cloud_begin_time_else_creation() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let t = |s: i64| Timestamp::from_second(s).unwrap();
    let mut ij = imagejob(ImageJobSpec { active_deadline_seconds: Some(60), ..spec() });
    ij.metadata.creation_timestamp = Some(Time(t(1000)));
    assert_eq!(deadline_exceeded(&ij, t(1060)), None);
    assert_eq!(deadline_exceeded(&ij, t(1061)), Some(60));
    ij.status = Some(ImageJobStatus { begin_time: Some(Time(t(1050))), ..Default::default() });
    assert_eq!(deadline_exceeded(&ij, t(1061)), None);
    assert_eq!(deadline_exceeded(&ij, t(1111)), Some(60));
    ij.spec.active_deadline_seconds = None;
    assert_eq!(deadline_exceeded(&ij, t(99999)), None);
}
