use super::*;
use crate::ims::model::{Job, JobStatus, SubJob};

fn ctx(now: i64) -> Inputs<'static> {
    Inputs { generation: Some(3), now: Timestamp::from_second(now).unwrap(), requested_at: None, eta: None }
}

fn job(status: JobStatus) -> Job {
    Job { status: Some(status), job_type: Some("imsCreateImageByInstance".into()), ..Job::default() }
}

fn cond_of(s: &ImageJobStatus, t: &str) -> (String, String) {
    let c = condition(s, t).unwrap_or_else(|| panic!("no {t} condition"));
    (c.status.clone(), c.reason.clone())
}

fn conds(s: &ImageJobStatus) -> [(String, String); 4] {
    [cond_of(s, READY), cond_of(s, RECONCILING), cond_of(s, STALLED), cond_of(s, FAILED)]
}

fn row(ready: (&str, &str), rec: (&str, &str), stalled: (&str, &str), failed: (&str, &str)) -> [(String, String); 4] {
    [ready, rec, stalled, failed].map(|(a, b)| (a.to_owned(), b.to_owned()))
}

#[test]
fn contract_condition_table() {
    let stalled = |reason| Outcome::Stalled { reason, message: "m".into() };
    type Row = [(String, String); 4];
    let cases: Vec<(&str, Outcome, Phase, Row)> = vec![
        (
            "INIT",
            Outcome::Job(job(JobStatus::Init)),
            Phase::Pending,
            row(("False", "Pending"), ("True", "Pending"), ("False", "Pending"), ("False", "Pending")),
        ),
        (
            "RUNNING",
            Outcome::Job(job(JobStatus::Running)),
            Phase::Running,
            row(("False", "JobRunning"), ("True", "JobRunning"), ("False", "JobRunning"), ("False", "JobRunning")),
        ),
        (
            "SUCCESS",
            Outcome::Job(job(JobStatus::Success)),
            Phase::Succeeded,
            row(("True", "Succeeded"), ("False", "Succeeded"), ("False", "Succeeded"), ("False", "Succeeded")),
        ),
        (
            "FAIL",
            Outcome::Job(job(JobStatus::Fail)),
            Phase::Failed,
            row(("False", "JobFailed"), ("False", "JobFailed"), ("True", "JobFailed"), ("True", "JobFailed")),
        ),
        (
            "deadline",
            Outcome::DeadlineExceeded { seconds: 60, last_error: None },
            Phase::Failed,
            row(
                ("False", "DeadlineExceeded"),
                ("False", "DeadlineExceeded"),
                ("True", "DeadlineExceeded"),
                ("True", "DeadlineExceeded"),
            ),
        ),
        (
            "no secret",
            stalled(StallReason::CredentialsNotFound),
            Phase::Pending,
            row(
                ("False", "CredentialsNotFound"),
                ("False", "CredentialsNotFound"),
                ("True", "CredentialsNotFound"),
                ("False", "CredentialsNotFound"),
            ),
        ),
        (
            "401",
            stalled(StallReason::AuthenticationFailed),
            Phase::Pending,
            row(
                ("False", "AuthenticationFailed"),
                ("False", "AuthenticationFailed"),
                ("True", "AuthenticationFailed"),
                ("False", "AuthenticationFailed"),
            ),
        ),
        (
            "403",
            stalled(StallReason::Forbidden),
            Phase::Pending,
            row(("False", "Forbidden"), ("False", "Forbidden"), ("True", "Forbidden"), ("False", "Forbidden")),
        ),
        (
            "404",
            stalled(StallReason::JobNotFound),
            Phase::Pending,
            row(("False", "JobNotFound"), ("False", "JobNotFound"), ("True", "JobNotFound"), ("False", "JobNotFound")),
        ),
        (
            "first answer transient",
            Outcome::Transient { message: "HTTP 503".into() },
            Phase::Pending,
            row(
                ("False", "Pending"),
                ("True", "RetryingAfterError"),
                ("False", "RetryingAfterError"),
                ("False", "RetryingAfterError"),
            ),
        ),
    ];
    for (name, outcome, phase, want) in cases {
        let s = next_status(None, &outcome, &ctx(100));
        assert_eq!(s.phase, Some(phase), "{name}: phase");
        assert_eq!(conds(&s), want, "{name}: conditions");
        assert_eq!(s.observed_generation, Some(3), "{name}: observedGeneration");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)), "{name}");
    }
}

#[test]
fn transient_error_keeps_ready_and_everything_known() {
    let mut running = job(JobStatus::Running);
    running.progress = Some(40);
    running.image_id = Some("img".into());
    let before = next_status(None, &Outcome::Job(running), &ctx(100));
    let after = next_status(Some(&before), &Outcome::Transient { message: "HTTP 503".into() }, &ctx(200));
    assert_eq!(after.phase, Some(Phase::Running));
    assert_eq!(after.progress, Some(40));
    assert_eq!(after.image_id.as_deref(), Some("img"));
    assert_eq!(cond_of(&after, READY), ("False".into(), "JobRunning".into()));
    assert_eq!(cond_of(&after, RECONCILING), ("True".into(), "RetryingAfterError".into()));
    assert_eq!(cond_of(&after, FAILED).0, "False");
}

#[test]
fn transient_error_after_a_stall_clears_it() {
    let stalled = Outcome::Stalled { reason: StallReason::CredentialsNotFound, message: "no secret".into() };
    let before = next_status(None, &stalled, &ctx(100));
    let after = next_status(Some(&before), &Outcome::Transient { message: "HTTP 503".into() }, &ctx(200));
    assert_eq!(cond_of(&after, STALLED).0, "False");
}

#[test]
fn stall_clears_once_the_job_answers() {
    let stalled = Outcome::Stalled { reason: StallReason::CredentialsNotFound, message: "no secret".into() };
    let before = next_status(None, &stalled, &ctx(100));
    let after = next_status(Some(&before), &Outcome::Job(job(JobStatus::Running)), &ctx(200));
    assert_eq!(cond_of(&after, STALLED), ("False".into(), "JobRunning".into()));
    assert_eq!(cond_of(&after, RECONCILING), ("True".into(), "JobRunning".into()));
}

#[test]
fn transition_time_moves_only_on_a_flip() {
    let s1 = next_status(None, &Outcome::Job(job(JobStatus::Init)), &ctx(100));
    let s2 = next_status(Some(&s1), &Outcome::Job(job(JobStatus::Running)), &ctx(200));
    let t = |s: &ImageJobStatus, ty| condition(s, ty).unwrap().last_transition_time.0.as_second();
    // Ready stayed False, Reconciling stayed True: their times are kept.
    assert_eq!(t(&s2, READY), 100);
    assert_eq!(t(&s2, RECONCILING), 100);
    let s3 = next_status(Some(&s2), &Outcome::Job(job(JobStatus::Success)), &ctx(300));
    assert_eq!(t(&s3, READY), 300);
    assert_eq!(t(&s3, RECONCILING), 300);
    assert_eq!(t(&s3, STALLED), 100);
}

#[test]
fn an_unchanged_poll_does_not_differ() {
    let mut running = job(JobStatus::Running);
    running.progress = Some(10);
    let s1 = next_status(None, &Outcome::Job(running.clone()), &ctx(100));
    let s2 = next_status(Some(&s1), &Outcome::Job(running.clone()), &ctx(200));
    assert!(!differs(&s1, &s2));
    running.progress = Some(11);
    let s3 = next_status(Some(&s2), &Outcome::Job(running), &ctx(300));
    assert!(differs(&s2, &s3));
}

#[test]
fn repeated_transient_errors_do_not_differ() {
    let t = Outcome::Transient { message: "IMS answered HTTP 503".into() };
    let s1 = next_status(None, &t, &ctx(100));
    let s2 = next_status(Some(&s1), &t, &ctx(200));
    assert!(!differs(&s1, &s2));
}

#[test]
fn success_reports_full_progress_and_times() {
    let mut done = job(JobStatus::Success);
    done.progress = Some(20); // the API page's SUCCESS example says 0.20
    done.begin_time = crate::ims::model::parse_time("04-Jun-2015 18:11:06:586");
    done.end_time = crate::ims::model::parse_time("2015-06-04T18:20:00Z");
    done.image_id = Some("img-1".into());
    let s = next_status(None, &Outcome::Job(done), &ctx(100));
    assert_eq!(s.progress, Some(100));
    assert_eq!(s.job_status.as_deref(), Some("SUCCESS"));
    let json = serde_json::to_value(&s).unwrap();
    // metav1.Time carries whole seconds, like every Kubernetes timestamp.
    assert_eq!(json["beginTime"], "2015-06-04T18:11:06Z");
    assert_eq!(json["endTime"], "2015-06-04T18:20:00Z");
    assert_eq!(condition(&s, READY).unwrap().message, "the IMS job succeeded: image img-1");
}

#[test]
fn progress_is_reported_while_running() {
    for (input, want) in [(None, None), (Some(0), Some(0)), (Some(57), Some(57)), (Some(100), Some(100))] {
        let mut running = job(JobStatus::Running);
        running.progress = input;
        let s = next_status(None, &Outcome::Job(running), &ctx(100));
        assert_eq!(s.progress, want);
    }
}

#[test]
fn fail_message_is_code_colon_reason() {
    let mut failed = job(JobStatus::Fail);
    failed.error_code = Some("IMG.0014".into());
    failed.fail_reason = Some("An exception occurred".into());
    let s = next_status(None, &Outcome::Job(failed), &ctx(100));
    assert_eq!(condition(&s, FAILED).unwrap().message, "IMG.0014: An exception occurred");
    assert_eq!(condition(&s, READY).unwrap().message, "IMG.0014: An exception occurred");
}

#[test]
fn fail_reason_falls_back_to_the_failed_sub_job() {
    let mut failed = job(JobStatus::Fail);
    failed.sub_jobs = vec![
        SubJob { status: Some("SUCCESS".into()), ..SubJob::default() },
        SubJob {
            status: Some("FAIL".into()),
            error_code: Some("IMG.1075".into()),
            fail_reason: Some("image file registration failed".into()),
            ..SubJob::default()
        },
    ];
    let s = next_status(None, &Outcome::Job(failed), &ctx(100));
    assert_eq!(failure_message(&s), "IMG.1075: image file registration failed");
}

#[test]
fn an_oversized_refresh_request_is_a_condition_until_it_is_gone() {
    let mut s = next_status(None, &Outcome::Job(job(JobStatus::Running)), &ctx(1));
    refresh_request_condition(&mut s, Some(300), 64, &ctx(1));
    let c = condition(&s, REFRESH_REQUEST).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", ANNOTATION_TOO_LONG));
    assert!(c.message.contains("longer than 64 bytes"), "{}", c.message);
    refresh_request_condition(&mut s, None, 64, &ctx(2));
    assert!(condition(&s, REFRESH_REQUEST).is_none());
}

#[test]
fn requested_at_is_recorded() {
    let c = Inputs { requested_at: Some("2026-11-27T10:00:00Z"), ..ctx(100) };
    let s = next_status(None, &Outcome::Job(job(JobStatus::Running)), &c);
    assert_eq!(s.last_handled_reconcile_at.as_deref(), Some("2026-11-27T10:00:00Z"));
}

#[test]
fn suspended_only_touches_reconciling() {
    let running = next_status(None, &Outcome::Job(job(JobStatus::Running)), &ctx(100));
    let s = next_status(Some(&running), &Outcome::Suspended, &ctx(200));
    assert_eq!(cond_of(&s, RECONCILING), ("False".into(), "Suspended".into()));
    assert_eq!(cond_of(&s, READY), ("False".into(), "JobRunning".into()));
    assert_eq!(s.phase, Some(Phase::Running));
}

#[test]
fn events_on_transitions() {
    let init = next_status(None, &Outcome::Job(job(JobStatus::Init)), &ctx(1));
    assert!(transition_events(None, &init).is_empty());
    let running = next_status(Some(&init), &Outcome::Job(job(JobStatus::Running)), &ctx(2));
    assert_eq!(transition_events(Some(&init), &running), vec![normal("JobRunning", "the IMS job is running")]);
    assert!(transition_events(Some(&running), &running).is_empty());

    let mut failed_job = job(JobStatus::Fail);
    failed_job.error_code = Some("IMG.0014".into());
    failed_job.fail_reason = Some("boom".into());
    let failed = next_status(Some(&running), &Outcome::Job(failed_job), &ctx(3));
    let events = transition_events(Some(&running), &failed);
    assert_eq!(events, vec![warning("JobFailed", "IMG.0014: boom")]);

    let stalled = Outcome::Stalled { reason: StallReason::Forbidden, message: "HTTP 403".into() };
    let s = next_status(Some(&running), &stalled, &ctx(4));
    assert_eq!(transition_events(Some(&running), &s), vec![warning("Forbidden", "HTTP 403")]);
    assert!(transition_events(Some(&s), &s).is_empty());

    let t = next_status(Some(&running), &Outcome::Transient { message: "HTTP 503".into() }, &ctx(5));
    assert_eq!(transition_events(Some(&running), &t), vec![warning("CloudError", "HTTP 503")]);
    assert!(transition_events(Some(&t), &t).is_empty());
}

#[test]
fn observed_only_moves_the_generation() {
    let done = next_status(None, &Outcome::Job(job(JobStatus::Success)), &ctx(100));
    let later = Inputs { generation: Some(4), ..ctx(200) };
    let s = next_status(Some(&done), &Outcome::Observed, &later);
    assert_eq!(s.observed_generation, Some(4));
    assert!(s.conditions.iter().all(|c| c.observed_generation == Some(4)));
    assert_eq!(conds(&s), conds(&done));
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert!(differs(&done, &s));
    assert!(transition_events(Some(&done), &s).is_empty());
}

#[test]
fn suspended_before_the_first_poll_is_not_ready() {
    let s = next_status(None, &Outcome::Suspended, &ctx(100));
    assert_eq!(cond_of(&s, READY), ("False".into(), "Suspended".into()));
    assert_eq!(s.phase, Some(Phase::Pending));
}

#[test]
fn a_failed_refresh_of_a_finished_job_keeps_its_result() {
    let done = next_status(None, &Outcome::Job(job(JobStatus::Success)), &ctx(1));
    let forced = Inputs { requested_at: Some("2026-11-27T10:00:00Z"), ..ctx(2) };
    let auth = Outcome::Stalled { reason: StallReason::AuthenticationFailed, message: "APIGW.0301".into() };
    for outcome in [Outcome::Transient { message: "HTTP 503".into() }, auth] {
        let s = next_status(Some(&done), &outcome, &forced);
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(cond_of(&s, READY), ("True".into(), "Succeeded".into()));
        assert_eq!(cond_of(&s, STALLED), ("False".into(), "Succeeded".into()));
        assert_eq!(cond_of(&s, FAILED), ("False".into(), "Succeeded".into()));
        assert_eq!(cond_of(&s, RECONCILING), ("False".into(), "RefreshFailed".into()));
        assert_eq!(s.last_handled_reconcile_at.as_deref(), Some("2026-11-27T10:00:00Z"));
        let events = transition_events(Some(&done), &s);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].warning && events[0].reason == "RefreshFailed");
        // Nothing new on the same request: no second Event.
        assert!(transition_events(Some(&s), &s).is_empty());
    }
    // A refresh that works clears it.
    let failed = next_status(Some(&done), &Outcome::Transient { message: "HTTP 503".into() }, &forced);
    let again = next_status(Some(&failed), &Outcome::Job(job(JobStatus::Success)), &ctx(3));
    assert_eq!(cond_of(&again, RECONCILING), ("False".into(), "Succeeded".into()));
}

#[test]
fn waiting_for_a_young_job_is_reconciling_not_stalled() {
    let out = Outcome::NotYetKnown { message: "IMS does not know job j yet".into() };
    let s = next_status(None, &out, &ctx(100));
    assert_eq!(
        conds(&s),
        row(("False", "Pending"), ("True", NOT_YET_KNOWN), ("False", NOT_YET_KNOWN), ("False", NOT_YET_KNOWN))
    );
    assert!(transition_events(None, &s).is_empty(), "no Warning for a job that is merely young");
}

#[test]
fn deadline_message_names_the_last_error() {
    let out = Outcome::DeadlineExceeded { seconds: 5, last_error: Some("IMS answered HTTP 503: busy".into()) };
    let s = next_status(None, &out, &ctx(100));
    let msg = &condition(&s, FAILED).unwrap().message;
    assert!(msg.contains("activeDeadlineSeconds (5s)") && msg.contains("HTTP 503: busy"), "{msg}");
}

#[test]
fn a_huge_failure_is_bounded_in_the_status_and_its_event() {
    let mut j = job(JobStatus::Fail);
    j.fail_reason = Some("ü".repeat(500_000));
    j.sub_jobs = (0..100).map(|i| SubJob { job_id: Some(format!("s{i}")), ..SubJob::default() }).collect();
    j.sub_jobs_total = Some(3000);
    let s = next_status(None, &Outcome::Job(j), &ctx(100));
    assert!(bound::serialised_len(&s) <= bound::MAX_STATUS_BYTES);
    assert_eq!(s.sub_jobs.len(), bound::MAX_SUB_JOBS);
    assert_eq!(s.sub_jobs_total, Some(3000), "the total IMS reported, not the parsed count");
    assert!(s.conditions.iter().all(|c| c.message.len() <= bound::MAX_MESSAGE));
    for e in transition_events(None, &s) {
        assert!(e.message.len() <= bound::MAX_MESSAGE, "{} bytes", e.message.len());
    }
}

#[test]
fn the_minimal_status_keeps_the_verdict_and_says_why() {
    let mut j = job(JobStatus::Fail);
    j.error_code = Some("IMG.0014".into());
    j.fail_reason = Some("x".repeat(5000));
    j.sub_jobs = vec![SubJob::default(); 3];
    let full = next_status(None, &Outcome::Job(j), &ctx(100));
    let (min, event) = minimal_status(&full, "HTTP 422: too long", &ctx(100));
    assert_eq!(min.phase, Some(Phase::Failed));
    assert_eq!(min.error_code.as_deref(), Some("IMG.0014"));
    assert!(min.sub_jobs.is_empty() && min.sub_jobs_total == Some(3));
    assert_eq!(cond_of(&min, FAILED), ("True".into(), "JobFailed".into()));
    assert_eq!(cond_of(&min, STATUS_TOO_LARGE), ("True".into(), STATUS_TOO_LARGE.into()));
    assert!(event.warning && event.reason == STATUS_TOO_LARGE && event.message.contains("HTTP 422"));
    assert!(bound::serialised_len(&min) < 4096, "{}", bound::serialised_len(&min));
}

/// `estimatedCompletionTime`: set when progress moves while RUNNING, kept
/// while it does not (so it never causes a write of its own), cleared when
/// the job ends.
#[test]
fn the_eta_moves_with_progress_only_and_is_cleared_at_the_end() {
    let running = |p: u8| Outcome::Job(Job { progress: Some(p), ..job(JobStatus::Running) });
    let eta = |s: i64| Some(Timestamp::from_second(s).unwrap());
    let with_eta = |now: i64, at: i64| Inputs { eta: eta(at), ..ctx(now) };
    let shown = |s: &ImageJobStatus| s.estimated_completion_time.as_ref().map(|t| t.0.as_second());

    let first = next_status(None, &running(10), &with_eta(1, 500));
    assert_eq!(shown(&first), Some(500), "progress appeared");
    let same = next_status(Some(&first), &running(10), &with_eta(2, 900));
    assert_eq!(shown(&same), Some(500), "progress unchanged: the ETA stays");
    assert!(!differs(&first, &same), "no write for a new ETA alone");
    let moved = next_status(Some(&same), &running(20), &with_eta(3, 600));
    assert_eq!(shown(&moved), Some(600), "progress moved: the new ETA");
    let unknown = next_status(Some(&moved), &running(30), &ctx(4));
    assert_eq!(shown(&unknown), None, "progress moved and no estimate: none shown");
    let transient = Outcome::Transient { message: "503".into() };
    assert_eq!(shown(&next_status(Some(&moved), &transient, &with_eta(5, 700))), Some(600), "a cloud error keeps it");
    let done = next_status(Some(&moved), &Outcome::Job(job(JobStatus::Success)), &with_eta(6, 700));
    assert_eq!(shown(&done), None, "cleared on SUCCESS");
    let failed = next_status(Some(&moved), &Outcome::Job(job(JobStatus::Fail)), &with_eta(6, 700));
    assert_eq!(shown(&failed), None, "cleared on FAIL");
    let late =
        next_status(Some(&moved), &Outcome::DeadlineExceeded { seconds: 5, last_error: None }, &with_eta(6, 700));
    assert_eq!(shown(&late), None, "cleared past the deadline");
}
