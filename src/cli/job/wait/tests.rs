use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::ims::Job;
use crate::ims::error::Service;

/// Answers from a script, one per query; the last one repeats.
struct Script(Mutex<VecDeque<Result<Job, ImsError>>>);

impl Script {
    fn new(answers: Vec<Result<Job, ImsError>>) -> Self {
        Script(Mutex::new(answers.into()))
    }
}

impl JobSource for Script {
    async fn get_job(&self, _: &JobTarget, _: &Credentials) -> Result<Job, ImsError> {
        let mut answers = self.0.lock().unwrap();
        if answers.len() > 1 { answers.pop_front().unwrap() } else { answers[0].clone() }
    }
}

/// Records what it is told, with the time (tokio's, paused) since the start.
#[derive(Default)]
struct Seen {
    events: Vec<String>,
}

impl Watcher for Seen {
    fn answered(&mut self, status: &ImageJobStatus, _: Option<Timestamp>) {
        self.events.push(super::super::view::state(status));
    }
    fn retrying(&mut self, err: &ImsError, failures: u32, delay: Duration) {
        self.events.push(format!("retry {failures} after {} ({})", delay.as_secs(), err.status().unwrap_or(0)));
    }
}

fn job(json: &str) -> Result<Job, ImsError> {
    Ok(Job::parse(json.as_bytes()).unwrap())
}

fn http(status: u16, retry_after: Option<u64>) -> Result<Job, ImsError> {
    Err(ImsError::Http {
        service: Service::Ims,
        status,
        code: Some("APIGW.0301".into()).filter(|_| status == 401),
        message: None,
        request_id: None,
        retry_after: retry_after.map(Duration::from_secs),
    })
}

fn target() -> JobTarget {
    JobTarget {
        ims_endpoint: "https://ims".into(),
        iam_endpoint: "https://iam".into(),
        project_id: "p".into(),
        job_id: "j".into(),
    }
}

fn creds() -> Credentials {
    Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None }
}

const RUNNING: &str = r#"{"status":"RUNNING","entities":{"process_percent":0.5,"current_task":"T"}}"#;
const SUCCESS: &str = r#"{"status":"SUCCESS","entities":{"image_id":"img-1"}}"#;

async fn run_script(answers: Vec<Result<Job, ImsError>>, timeout: u64) -> (Ending, Tally, Vec<String>, Duration) {
    let source = Script::new(answers);
    let mut seen = Seen::default();
    let start = Instant::now();
    let (ending, tally) =
        follow(&source, &target(), &creds(), Duration::from_secs(timeout), Duration::from_secs(5), &mut seen).await;
    (ending, tally, seen.events, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_and_shown() {
    let script = vec![
        job(RUNNING),
        http(503, None),
        http(429, Some(7)),
        Err(ImsError::Timeout { service: Service::Ims }),
        job(RUNNING),
        job(SUCCESS),
    ];
    let (ending, tally, events, _) = run_script(script, 3600).await;
    assert_eq!(ending.exit(), Exit::Succeeded);
    assert_eq!(tally, Tally { requests: 6, retried: 3 });
    assert_eq!(events[0], "RUNNING 50% T");
    assert!(events[1].starts_with("retry 1 after ") && events[1].ends_with("(503)"), "{events:?}");
    assert_eq!(events[2], "retry 2 after 7 (429)", "Retry-After is honoured: {events:?}");
    assert!(events[3].starts_with("retry 3 after ") && events[3].ends_with("(0)"), "{events:?}");
    assert_eq!(events[5], "SUCCESS 100%");
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_between_failures() {
    let script = vec![http(503, None), http(503, None), http(503, None), http(503, None), job(SUCCESS)];
    let (_, tally, events, _) = run_script(script, 3600).await;
    assert_eq!(tally.retried, 4);
    let delays: Vec<u64> = events[..4].iter().map(|e| e.split(' ').nth(3).unwrap().parse().unwrap()).collect();
    assert!(delays.windows(2).all(|w| w[1] >= w[0]) && delays[3] >= 4, "{delays:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_signature_stops_at_once() {
    let (ending, tally, events, _) = run_script(vec![job(RUNNING), http(401, None)], 3600).await;
    assert_eq!(ending.exit(), Exit::Stalled);
    assert_eq!(tally, Tally { requests: 2, retried: 0 });
    assert_eq!(events.len(), 1);
    for status in [403, 404] {
        let (ending, tally, ..) = run_script(vec![http(status, None)], 3600).await;
        assert_eq!((ending.exit(), tally.requests), (Exit::Stalled, 1), "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn fail_and_timeout() {
    let fail = r#"{"status":"FAIL","error_code":"IMG.0014","fail_reason":"boom"}"#;
    let (ending, ..) = run_script(vec![job(RUNNING), job(fail)], 3600).await;
    assert_eq!(ending.exit(), Exit::Failed);

    let (ending, tally, _, took) = run_script(vec![job(RUNNING)], 60).await;
    assert_eq!(ending.exit(), Exit::TimedOut);
    assert_eq!(took, Duration::from_secs(60), "gives up at the deadline, not later");
    assert_eq!(tally.requests, 12, "every 5 s for 60 s");
    assert_eq!(ending.last_status().and_then(|s| s.progress), Some(50));
}

#[test]
fn polls_sooner_near_the_estimated_end() {
    let i = Duration::from_secs(8);
    assert_eq!(next_poll(i, None), i);
    assert_eq!(next_poll(i, Some(Duration::from_secs(60))), i);
    assert_eq!(next_poll(i, Some(Duration::from_secs(3))), Duration::from_secs(3));
    assert_eq!(next_poll(i, Some(Duration::ZERO)), Duration::from_secs(2), "a quarter of the interval at most");
    assert_eq!(next_poll(Duration::from_secs(2), Some(Duration::ZERO)), Duration::from_secs(1), "never below 1 s");
    assert_eq!(next_poll(Duration::from_secs(1), Some(Duration::ZERO)), Duration::from_secs(1));
}

#[test]
fn summaries() {
    let t = target();
    let tally = Tally { requests: 9, retried: 2 };
    let ok =
        status_of(&Job::parse(br#"{"status":"SUCCESS","entities":{"image_id":"img-1","image_name":"web"}}"#).unwrap());
    assert_eq!(
        summary(&Ending::Finished(ok), &t, tally, Duration::from_secs(75)),
        "Job j succeeded after 1m 15s.\nImage ID:     img-1\nImage name:   web\nRequests:     9 (2 retried after transient errors)\n"
    );
    let failed = status_of(&Job::parse(crate::cli::job::render::tests::OVA.as_bytes()).unwrap());
    let text = summary(&Ending::Finished(failed), &t, Tally { requests: 3, retried: 0 }, Duration::from_secs(5));
    assert_eq!(
        text,
        "Job j failed after 5s.\nError code:   IMG.0014\nReason:       An exception occurred\nFailed sub-jobs:\n  \
         JOB ID  TYPE                   ERROR\n  sub-b   imsImportDataImageJob  IMG.1075: registration failed\nRequests:     3\n"
    );
    let running = status_of(&Job::parse(RUNNING.as_bytes()).unwrap());
    let text = summary(&Ending::TimedOut(Some(running)), &t, tally, Duration::from_secs(600));
    assert!(text.starts_with("Timed out after 10m: job j is still RUNNING at 50% (T).\n"), "{text}");
    let err = http(401, None).unwrap_err();
    let text = summary(&Ending::Stalled(err, None), &t, Tally { requests: 1, retried: 0 }, Duration::ZERO);
    assert!(text.contains("401") && text.contains("not retried"), "{text}");
}
