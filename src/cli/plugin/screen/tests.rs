use super::*;
use crate::crd::ImageJob;
use serde_json::json;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn parse(imagejob: serde_json::Value) -> Fetched {
    Fetched::from(serde_json::from_value::<ImageJob>(imagejob).unwrap())
}

fn fetched(status: serde_json::Value) -> Fetched {
    parse(json!({
        "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob",
        "metadata": {"name": "web", "namespace": "ci"},
        "spec": {"jobId": "ff80", "credentialsRef": {"name": "otc"}},
        "status": status
    }))
}

fn event(reason: &str, type_: &str, message: &str, last: &str, count: i32) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("web.{reason}"), "namespace": "ci"},
        "involvedObject": {"kind": "ImageJob", "name": "web"},
        "reason": reason, "type": type_, "message": message, "lastTimestamp": last, "count": count
    }))
    .unwrap()
}

#[test]
fn bars() {
    assert_eq!(bar(0), "[                              ]   0%");
    assert_eq!(bar(50), "[===============>              ]  50%");
    assert_eq!(bar(100), "[==============================] 100%");
    assert_eq!(bar(150), bar(100));
}

#[test]
fn ages() {
    let now = at("2026-11-29T17:00:00Z");
    assert_eq!(age(now, at("2026-11-29T16:59:18Z")), "42s");
    assert_eq!(age(now, at("2026-11-29T16:55:00Z")), "5m");
    assert_eq!(age(now, at("2026-11-29T14:00:00Z")), "3h");
    assert_eq!(age(now, at("2026-11-27T17:00:00Z")), "2d");
    assert_eq!(age(now, at("2026-11-29T17:00:05Z")), "0s", "clock skew is no negative age");
}

#[test]
fn running_screen_with_eta_sub_jobs_conditions_and_events() {
    let mut f = fetched(json!({
        "phase": "Running", "jobStatus": "RUNNING", "jobType": "imsImportOvaImageJob", "progress": 45,
        "currentTask": "ImportImageTask", "beginTime": "2026-11-29T16:50:00Z",
        "estimatedCompletionTime": "2026-11-29T17:03:10Z",
        "subJobs": [
            {"jobId": "sub-a", "jobType": "imsImportImageJob", "status": "SUCCESS", "imageId": "img-a"},
            {"jobId": "sub-b", "jobType": "imsImportDataImageJob", "status": "RUNNING"}
        ],
        "conditions": [{"type": "Ready", "status": "False", "reason": "JobRunning",
                        "message": "the IMS job is running (45%)", "lastTransitionTime": "2026-11-29T16:50:02Z"}]
    }));
    assert_eq!(f.eta, Some(at("2026-11-29T17:03:10Z")), "the typed status field");
    let events: Vec<Event> = (1..=7)
        .map(|i| event(&format!("R{i}"), "Normal", &format!("m{i}"), &format!("2026-11-29T16:5{i}:00Z"), 1))
        .chain([event("Throttled", "Warning", "IMS answered 429", "2026-11-29T16:59:30Z", 3)])
        .collect();
    let text = status_screen(&f, &events, at("2026-11-29T17:00:00Z"));
    let expected = "\
Name:         web
Namespace:    ci
Phase:        Running (RUNNING)
Progress:     [=============>                ]  45%
ETA:          2026-11-29T17:03:10Z (in 3m 10s)
Current task: ImportImageTask
Job:          ff80  imsImportOvaImageJob
Image:        -
Began:        2026-11-29T16:50:00Z (10m ago)
Ended:        -

Sub-jobs:
  JOB ID  TYPE                   STATUS   IMAGE ID  ERROR
  sub-a   imsImportImageJob      SUCCESS  img-a     -
  sub-b   imsImportDataImageJob  RUNNING  -         -

Conditions:
  TYPE   STATUS  REASON      AGE  MESSAGE
  Ready  False   JobRunning  9m   the IMS job is running (45%)

Events (last 5 of 8):
  AGE  TYPE     REASON     MESSAGE
  6m   Normal   R4         m4
  5m   Normal   R5         m5
  4m   Normal   R6         m6
  3m   Normal   R7         m7
  30s  Warning  Throttled  IMS answered 429 (x3)
";
    assert_eq!(text, expected, "{text}");
    assert_eq!(state_line(&f, at("2026-11-29T17:00:00Z")), "Running 45% ImportImageTask, ETA 3m 10s");
    f.eta = None;
    assert!(!status_screen(&f, &[], at("2026-11-29T17:00:00Z")).contains("ETA"));
}

#[test]
fn failed_screen_shows_the_error_and_no_eta() {
    let f = fetched(json!({
        "phase": "Failed", "jobStatus": "FAIL", "errorCode": "IMG.0014", "failReason": "boom\u{1b}[2J",
        "estimatedCompletionTime": "2026-11-29T17:03:10Z", "imageName": "web-image"
    }));
    let text = status_screen(&f, &[], at("2026-11-29T17:00:00Z"));
    assert!(text.contains("\nError:        IMG.0014: boom [2J\n"), "{text}");
    assert!(text.contains("\nImage:        web-image\n"), "{text}");
    assert!(!text.contains("ETA"), "{text}");
    assert!(text.ends_with("Events:\n  <none>\n"), "{text}");
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
}

#[test]
fn never_polled() {
    let f = parse(json!({
        "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob", "metadata": {"name": "new"},
        "spec": {"jobId": "j", "credentialsRef": {"name": "s"}}
    }));
    let text = status_screen(&f, &[], at("2026-11-29T17:00:00Z"));
    assert!(text.contains("Phase:        Pending (not polled yet)\nProgress:     -\n"), "{text}");
}
