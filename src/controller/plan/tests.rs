use super::*;
use crate::crd::CredentialsRef;
use crate::crd::ImageJobSpec;
use crate::status;
use clap::Parser;

fn args() -> RunArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    Cli::parse_from([
        "test",
        "--ims-endpoint",
        "https://ims.{region}.example",
        "--iam-endpoint",
        "https://iam.{region}.example",
    ])
    .run
}

fn imagejob(spec: ImageJobSpec) -> ImageJob {
    let mut ij = ImageJob::new("ij", spec);
    ij.metadata.namespace = Some("ns".into());
    ij
}

fn spec() -> ImageJobSpec {
    ImageJobSpec {
        job_id: "job-1".into(),
        credentials_ref: Some(CredentialsRef { name: "creds".into() }),
        ..Default::default()
    }
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
    assert_eq!(oversized_request(&ij), None);
    // A value too long to store whole would never count as handled: refused.
    for (len, pending) in [(MAX_REQUESTED_AT, true), (MAX_REQUESTED_AT + 1, false), (300, false)] {
        let value = "9".repeat(len);
        ij.metadata.annotations = Some([(REQUESTED_AT_ANNOTATION.to_owned(), value.clone())].into());
        assert_eq!(pending_request(&ij).is_some(), pending, "{len} bytes");
        assert_eq!(oversized_request(&ij), (!pending).then_some(len));
    }
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

#[test]
fn only_an_api_server_away_is_retried_when_it_returns() {
    use super::super::{Error, SecretError};
    use kube::core::Status;
    let status = |code: u16| kube::Error::Api(Box::new(Status { code, ..Status::default() }));
    let away = || kube::Error::Service("connection refused".into());
    let secret = |source| Error::Secret(SecretError::Kube { namespace: "ns".into(), name: "s".into(), source });
    let cases = [
        (Error::Patch(away()), true),
        (Error::Lease(away()), true),
        (secret(away()), true),
        (Error::Output(status(503)), true),
        (Error::Patch(status(500)), true),
        (Error::Patch(status(403)), false), // RBAC: a retry will not mend it
        (Error::Patch(status(422)), false),
        (Error::Patch(status(429)), false), // the API server asks us to slow down
        (Error::Conflict, false),
        (Error::NotLeader, false),
        (secret(status(404)), false),
    ];
    for (error, want) in cases {
        assert_eq!(api_unavailable(&error), want, "{error}");
    }
}

mod reliability_tests {
    use super::*;
    use crate::ims::error::Service;
    use crate::ims::model::{Job, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn finished(status: JobStatus, end: Option<i64>) -> Outcome {
        Outcome::Job(Job { status: Some(status), end_time: end.map(t), ..Job::default() })
    }

    fn http(status: u16) -> ImsError {
        let body = br#"{"error":{"code":"IMG.0001","message":"m"}}"#;
        ImsError::from_response(Service::Ims, status, &Default::default(), body)
    }

    #[test]
    fn at_the_deadline_a_job_that_ended_in_time_wins() {
        let deadline = t(1005);
        let exceeded = |e: Option<&str>| Outcome::DeadlineExceeded { seconds: 5, last_error: e.map(str::to_owned) };
        let cases: Vec<(&str, Outcome, Outcome)> = vec![
            ("success before", finished(JobStatus::Success, Some(1002)), finished(JobStatus::Success, Some(1002))),
            ("fail before", finished(JobStatus::Fail, Some(1004)), finished(JobStatus::Fail, Some(1004))),
            ("success, no end time", finished(JobStatus::Success, None), finished(JobStatus::Success, None)),
            ("success after", finished(JobStatus::Success, Some(1006)), exceeded(None)),
            ("still running", finished(JobStatus::Running, None), exceeded(None)),
            ("unreachable", Outcome::Transient { message: "HTTP 503".into() }, exceeded(Some("HTTP 503"))),
        ];
        for (name, answer, want) in cases {
            assert_eq!(at_deadline(answer, deadline, 5), want, "{name}");
        }
    }

    #[test]
    fn a_young_never_answered_job_is_waited_for() {
        let mut ij = imagejob(spec());
        ij.metadata.creation_timestamp = Some(Time(t(1000)));
        let waiting = |ij: &ImageJob, now| matches!(outcome_for(ij, &http(404), t(now)), Outcome::NotYetKnown { .. });
        assert!(waiting(&ij, 1003));
        assert!(waiting(&ij, 1059));
        assert!(!waiting(&ij, 1061), "after the grace period: JobNotFound");
        let Outcome::NotYetKnown { message } = outcome_for(&ij, &http(404), t(1003)) else { unreachable!() };
        assert!(message.contains("does not know job job-1 yet"), "{message}");
        // Observed generation 0 (the CRD default) is still "never answered".
        ij.status = Some(ImageJobStatus { observed_generation: Some(0), ..Default::default() });
        assert!(waiting(&ij, 1003));
        ij.status = Some(ImageJobStatus { job_status: Some("RUNNING".into()), ..Default::default() });
        assert!(!waiting(&ij, 1003), "answered before: the job is gone");
        assert!(matches!(outcome_for(&ij, &http(503), t(1003)), Outcome::Transient { .. }));
        let short =
            plan_next(&Outcome::NotYetKnown { message: String::new() }, false, Duration::from_secs(30), 1, None);
        assert!(matches!(short, NextPoll::After { delay, failed: true } if delay <= Duration::from_secs(10)));
    }

    /// 400 IMG.0023 (IMS's "exception during task query") is waited for like
    /// a young job's 404, stalls as JobNotFound for a job IMS never answered,
    /// and is only transient for a job IMS has answered.
    #[test]
    fn task_query_errors_by_what_ims_said_before() {
        let img0023 = ImsError::from_response(
            crate::ims::error::Service::Ims,
            400,
            &Default::default(),
            br#"{"error":{"code":"IMG.0023","message":"An exception occurred during task query."}}"#,
        );
        let mut ij = imagejob(spec());
        ij.metadata.creation_timestamp = Some(Time(t(1000)));
        assert!(matches!(outcome_for(&ij, &img0023, t(1003)), Outcome::NotYetKnown { .. }));
        let after_grace = outcome_for(&ij, &img0023, t(1061));
        assert!(
            matches!(&after_grace, Outcome::Stalled { reason: StallReason::JobNotFound, message } if message.contains("IMG.0023")),
            "{after_grace:?}"
        );
        ij.status = Some(ImageJobStatus { job_status: Some("RUNNING".into()), ..Default::default() });
        assert!(matches!(outcome_for(&ij, &img0023, t(1003)), Outcome::Transient { .. }));
        assert!(matches!(outcome_for(&ij, &img0023, t(5000)), Outcome::Transient { .. }));
        // Other IMS 400s stay bad requests.
        let other = ImsError::from_response(
            crate::ims::error::Service::Ims,
            400,
            &Default::default(),
            br#"{"error":{"code":"IMG.0024","message":"The imagetype is invalid."}}"#,
        );
        assert!(matches!(outcome_for(&ij, &other, t(1003)), Outcome::Stalled { reason: StallReason::BadRequest, .. }));
    }

    #[test]
    fn forced_polls_are_spaced() {
        let now = tokio::time::Instant::now();
        assert_eq!(forced_poll_wait(None, now), None);
        assert_eq!(forced_poll_wait(Some(now), now), Some(FORCED_POLL_GAP));
        assert_eq!(forced_poll_wait(Some(now), now + Duration::from_secs(2)), Some(Duration::from_secs(3)));
        assert_eq!(forced_poll_wait(Some(now), now + FORCED_POLL_GAP), None);
    }

    #[test]
    fn ids_from_the_spec_and_the_secret_are_checked() {
        for bad in ["", ".", "..", "../x", "a/b", "p?q", "p#", &"p".repeat(65)] {
            assert!(target_of(&imagejob(spec()), &args(), Some(bad)).is_err(), "Secret projectId {bad:?} accepted");
        }
        for bad in [".", "..", ".x", "a/b", "a b", &"j".repeat(129)] {
            let ij = imagejob(ImageJobSpec { job_id: bad.into(), ..spec() });
            assert!(target_of(&ij, &args(), Some("p")).is_err(), "job ID {bad:?} accepted");
        }
        assert!(target_of(&imagejob(spec()), &args(), Some("0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b")).is_ok());
    }
}

mod plan_next_tests {
    use super::*;
    use crate::ims::model::{Job, JobStatus};

    const MIN: Duration = Duration::from_secs(1);

    fn running() -> Outcome {
        Outcome::Job(Job { status: Some(JobStatus::Running), ..Job::default() })
    }

    fn delay(n: NextPoll) -> Duration {
        match n {
            NextPoll::After { delay, .. } => delay,
            NextPoll::Never => panic!("expected a requeue"),
        }
    }

    #[test]
    fn running_jobs_poll_at_the_interval_with_jitter_below() {
        let d = delay(plan_next(&running(), false, Duration::from_secs(30), 1, None));
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(27), "{d:?}");
        assert!(matches!(plan_next(&running(), false, MIN, 1, None), NextPoll::After { failed: false, .. }));
    }

    #[test]
    fn finished_suspended_and_expired_jobs_are_never_polled() {
        let done = Outcome::Job(Job { status: Some(JobStatus::Success), ..Job::default() });
        assert_eq!(plan_next(&done, true, MIN, 1, None), NextPoll::Never);
        assert_eq!(plan_next(&Outcome::Suspended, false, MIN, 1, None), NextPoll::Never);
        assert_eq!(
            plan_next(&Outcome::DeadlineExceeded { seconds: 5, last_error: None }, true, MIN, 1, None),
            NextPoll::Never
        );
        // A forced refresh of a finished job that failed is not retried.
        let t = Outcome::Transient { message: "503".into() };
        assert_eq!(plan_next(&t, true, MIN, 1, None), NextPoll::Never);
    }

    #[test]
    fn transient_errors_back_off_exponentially_and_honour_retry_after() {
        let t = Outcome::Transient { message: "503".into() };
        let first = delay(plan_next(&t, false, MIN, 1, None));
        let sixth = delay(plan_next(&t, false, MIN, 6, None));
        assert!(first >= TRANSIENT_MIN && first <= TRANSIENT_MIN * 2, "{first:?}");
        assert!(sixth >= TRANSIENT_MIN * 32, "{sixth:?}");
        assert!(delay(plan_next(&t, false, MIN, 30, None)) <= TRANSIENT_MAX);
        let ra = delay(plan_next(&t, false, MIN, 1, Some(Duration::from_secs(20))));
        assert!(ra >= Duration::from_secs(20), "{ra:?}");
        assert!(matches!(plan_next(&t, false, MIN, 1, None), NextPoll::After { failed: true, .. }));
    }

    #[test]
    fn authentication_failures_retry_slowly() {
        let auth = Outcome::Stalled { reason: StallReason::AuthenticationFailed, message: "401".into() };
        let d = delay(plan_next(&auth, false, MIN, 1, None));
        assert!(d >= STALLED_MIN, "{d:?}: a rejected AK must not be retried within minutes");
        assert!(delay(plan_next(&auth, false, MIN, 20, None)) <= STALLED_MAX);
    }

    #[test]
    fn configuration_stalls_wait_for_a_change_with_a_safety_net() {
        let missing = Outcome::Stalled { reason: StallReason::CredentialsNotFound, message: "no".into() };
        let delay = |failures| match plan_next(&missing, false, MIN, failures, None) {
            NextPoll::After { delay, failed: true } => delay,
            other => panic!("{other:?}"),
        };
        // Soon at first (a ServiceAccount or RBAC fix is not watched), then
        // rarely, never past the safety net.
        assert!(delay(1) >= CONFIG_RECHECK_MIN && delay(1) < Duration::from_secs(15), "{:?}", delay(1));
        assert!(delay(3) > delay(1));
        assert_eq!(delay(30), CONFIG_RECHECK);
    }

    #[test]
    fn a_reader_of_a_shared_answer_comes_just_after_its_fetcher() {
        let interval = Duration::from_secs(30);
        // Read 4 s after the fetch: due 30 s after the fetch plus a margin.
        let d = follow_delay(interval, Duration::from_secs(4));
        assert!(d > Duration::from_secs(26) && d <= Duration::from_secs(28), "{d:?}");
        // The margin stays small at short intervals and never goes negative.
        assert_eq!(follow_delay(MIN, Duration::ZERO), MIN + Duration::from_millis(50));
        assert_eq!(follow_delay(MIN, Duration::from_secs(5)), Duration::from_millis(50));
    }
}

#[test]
fn a_poll_that_learned_nothing_new_writes_nothing_despite_millisecond_times() {
    use crate::ims::model::{Job, JobStatus};
    // IMS sends milliseconds; the API server keeps whole seconds.
    let begin: Timestamp = "2026-11-27T10:00:00.123Z".parse().unwrap();
    let job = Job { status: Some(JobStatus::Running), progress: Some(40), begin_time: Some(begin), ..Job::default() };
    let sctx = status::Inputs { generation: Some(1), now: Timestamp::now(), requested_at: None, eta: None };
    let written = as_stored(status::next_status(None, &Outcome::Job(job.clone()), &sctx));
    // What the watch brings back is the JSON the API server stored.
    let stored: ImageJobStatus = serde_json::from_value(serde_json::to_value(&written).unwrap()).unwrap();
    let again = as_stored(status::next_status(Some(&stored), &Outcome::Job(job.clone()), &sctx));
    assert!(!status::differs(&stored, &again), "same answer: no write");
    let unrounded = status::next_status(Some(&stored), &Outcome::Job(job), &sctx);
    assert!(status::differs(&stored, &unrounded), "the comparison needs the stored form");
}

#[test]
fn the_fingerprint_ignores_what_differs_ignores() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let cond = |type_: &str, at: i64| Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: "JobRunning".into(),
        message: "m".into(),
        observed_generation: Some(1),
        last_transition_time: Time(Timestamp::from_second(at).unwrap()),
    };
    let a = ImageJobStatus {
        progress: Some(10),
        conditions: vec![cond("Ready", 1), cond("Reconciling", 2)],
        ..Default::default()
    };
    let b = ImageJobStatus { conditions: vec![cond("Reconciling", 5), cond("Ready", 6)], ..a.clone() };
    assert_eq!(fingerprint(&a), fingerprint(&b));
    let c = ImageJobStatus { progress: Some(11), ..a.clone() };
    assert_ne!(fingerprint(&a), fingerprint(&c));
}

#[test]
fn the_poll_policy_sets_the_delay_while_running_and_how_old_a_shared_answer_may_be() {
    let t = Duration::from_secs(10);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
    // 1 % every 10 s, now at 99 %: the end is about 10 s away.
    let mut near_end = Progress::new();
    for k in 0..=9 {
        near_end.observe(at(10 * k - 90), 90 + k as u8);
    }
    let cases = [
        (None, Progress::new(), t, "no policy: Fixed"),
        (Some(PollPolicy::Fixed), near_end.clone(), t, "Fixed ignores progress"),
        (Some(PollPolicy::Adaptive), Progress::new(), t, "Adaptive without progress: the interval"),
        (Some(PollPolicy::Adaptive), near_end.clone(), Duration::from_secs(3), "Adaptive near the end"),
    ];
    for (policy, progress, want, what) in cases {
        assert_eq!(running_delay(policy, t, &progress, now), want, "{what}");
    }
    assert_eq!(max_shared_age(None, t), Duration::from_secs(8));
    assert_eq!(
        max_shared_age(Some(PollPolicy::Adaptive), t),
        Duration::from_secs(2),
        "under T/4: never its own answer"
    );
}

mod whole_step_tests {
    use super::*;
    use crate::crd::Phase;
    use crate::ims::model::{Job, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;
    use tokio::time::Instant;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// Facts at t(2000); `forced_ago`: when the last forced poll went.
    fn facts(not_due_for: Option<Duration>, forced_ago: Option<Duration>) -> Facts {
        let clock = Instant::now();
        let last_forced = forced_ago.map(|ago| clock.checked_sub(ago).unwrap());
        Facts { not_due_for, last_forced, interval: S(10), now: t(2000), clock, newcomers_waiting: false }
    }

    fn with(phase: Option<Phase>, edit: impl FnOnce(&mut ImageJob)) -> ImageJob {
        let mut ij = imagejob(spec());
        ij.metadata.generation = Some(1);
        ij.metadata.creation_timestamp = Some(Time(t(1000)));
        ij.status = Some(ImageJobStatus { phase, observed_generation: Some(1), ..Default::default() });
        edit(&mut ij);
        ij
    }

    fn annotated(value: String) -> impl FnOnce(&mut ImageJob) {
        move |ij| ij.metadata.annotations = Some(BTreeMap::from([(REQUESTED_AT_ANNOTATION.into(), value)]))
    }

    #[test]
    fn a_poll_steps_back_while_imagejobs_wait_for_a_first_status() {
        let running = Some(Phase::Running);
        let waiting = |newcomers: bool| Facts { newcomers_waiting: newcomers, ..facts(None, None) };
        let yields = BeforePoll::Skip(Action::requeue(YIELD_TO_NEWCOMERS));
        let poll = BeforePoll::Poll { forced: false, requested: None, deadline: None };
        let shown = with(running, |_| {});
        assert_eq!(before_poll(&shown, &waiting(true)), yields, "newcomers waiting");
        assert_eq!(before_poll(&shown, &waiting(false)), poll, "nobody waits");
        let newcomer = with(None, |_| {});
        assert_eq!(before_poll(&newcomer, &waiting(true)), poll, "a newcomer never steps back");
        let no_status = with(None, |ij| ij.status = None);
        assert_eq!(before_poll(&no_status, &waiting(true)), poll, "nor one without any status");
        let refresh = with(running, annotated("r1".into()));
        assert!(matches!(before_poll(&refresh, &waiting(true)), BeforePoll::Poll { forced: true, .. }), "requested");
    }

    #[test]
    fn before_poll_skips_writes_only_or_polls() {
        let done = Some(Phase::Succeeded);
        let poll = |requested: Option<&'static str>| BeforePoll::Poll {
            forced: requested.is_some(),
            requested,
            deadline: None,
        };
        let observed = BeforePoll::WriteOnly { outcome: Outcome::Observed, requested: None, recheck_output: true };
        let output =
            |ij: &mut ImageJob| ij.spec.output_config_map_ref = Some(crate::crd::ConfigMapRef { name: "o".into() });
        let suspended = |ij: &mut ImageJob| {
            ij.spec.suspend = Some(true);
            annotated("r1".into())(ij);
        };
        let cases: Vec<(&str, ImageJob, Facts, BeforePoll)> = vec![
            ("finished, nothing new", with(done, |_| {}), facts(None, None), BeforePoll::Skip(Action::await_change())),
            (
                "finished, spec edited",
                with(done, |ij| ij.metadata.generation = Some(2)),
                facts(None, None),
                observed.clone(),
            ),
            ("finished, output named", with(done, output), facts(None, None), observed.clone()),
            ("finished, refusal to show", with(done, annotated("x".repeat(65))), facts(None, None), observed),
            ("finished, refresh asked", with(done, annotated("r1".into())), facts(None, None), poll(Some("r1"))),
            (
                "suspended",
                with(None, suspended),
                facts(None, None),
                BeforePoll::WriteOnly { outcome: Outcome::Suspended, requested: Some("r1"), recheck_output: false },
            ),
            ("not due", with(None, |_| {}), facts(Some(S(3)), Some(S(1))), BeforePoll::Skip(Action::requeue(S(3)))),
            (
                "forced too soon",
                with(None, annotated("r1".into())),
                facts(Some(S(3)), Some(S(1))),
                BeforePoll::Skip(Action::requeue(S(4))),
            ),
            ("forced, not due", with(None, annotated("r1".into())), facts(Some(S(3)), Some(S(6))), poll(Some("r1"))),
            ("due", with(None, |_| {}), facts(None, Some(S(1))), poll(None)),
            (
                "past the deadline",
                with(None, |ij| ij.spec.active_deadline_seconds = Some(60)),
                facts(None, None),
                BeforePoll::Poll { forced: true, requested: None, deadline: Some((60, t(1060))) },
            ),
            (
                "before the deadline",
                with(None, |ij| ij.spec.active_deadline_seconds = Some(6000)),
                facts(None, None),
                poll(None),
            ),
        ];
        for (name, ij, facts, expected) in cases {
            assert_eq!(before_poll(&ij, &facts), expected, "{name}");
        }
    }

    #[test]
    fn a_request_is_the_target_and_how_old_a_shared_answer_may_be() {
        let ij = imagejob(ImageJobSpec { project_id: Some("p1".into()), ..spec() });
        let (target, max_age) = request_of(&ij, &args(), None, false, S(10)).unwrap();
        assert_eq!((target.job_id.as_str(), max_age), ("job-1", S(8)));
        assert_eq!(request_of(&ij, &args(), None, true, S(10)).unwrap().1, Duration::ZERO, "forced: never shared");
        assert!(request_of(&imagejob(spec()), &args(), None, false, S(10)).is_err(), "no project");
    }

    #[test]
    fn after_poll_gives_the_verdict_at_the_deadline_else_the_answer() {
        let running = Outcome::Job(Job { status: Some(JobStatus::Running), progress: Some(40), ..Job::default() });
        let answer = AfterPoll::Answer { outcome: running.clone(), seen: Some((t(1997), 40)) };
        assert_eq!(after_poll(running.clone(), Some(S(3)), None, t(2000)), answer);
        let exceeded = Outcome::DeadlineExceeded { seconds: 60, last_error: None };
        assert_eq!(after_poll(running, None, Some((60, t(1060))), t(2000)), AfterPoll::Verdict(exceeded));
        let done = Outcome::Job(Job { status: Some(JobStatus::Success), end_time: Some(t(1050)), ..Job::default() });
        assert_eq!(after_poll(done.clone(), None, Some((60, t(1060))), t(2000)), AfterPoll::Verdict(done));
    }

    #[test]
    fn progress_is_seen_only_in_a_running_answer_at_the_time_it_was_fetched() {
        let job = |status, progress| Outcome::Job(Job { status: Some(status), progress, ..Job::default() });
        assert_eq!(progress_seen(&job(JobStatus::Running, Some(40)), None, t(2000)), Some((t(2000), 40)));
        assert_eq!(progress_seen(&job(JobStatus::Running, Some(40)), Some(S(3)), t(2000)), Some((t(1997), 40)));
        assert_eq!(progress_seen(&job(JobStatus::Running, None), None, t(2000)), None);
        assert_eq!(progress_seen(&job(JobStatus::Success, Some(100)), None, t(2000)), None);
    }

    #[test]
    fn after_write_keeps_the_phase_follows_a_sharer_and_stops_at_the_deadline() {
        let running = Outcome::Job(Job { status: Some(JobStatus::Running), ..Job::default() });
        let transient = Outcome::Transient { message: "m".into() };
        let progress = Progress::default();
        let w = |outcome| Written {
            outcome,
            finished: false,
            progress: &progress,
            interval: S(10),
            failures: 1,
            retry_after: None,
            shared_age: None,
            answered_at: t(2000),
            now: t(2000),
        };
        let after = |delay, failed| NextPoll::After { delay, failed };
        let ij = with(None, |_| {});
        // Phase already drawn: exactly the running delay.
        assert_eq!(after_write(&ij, &w(&running), || true), after(S(10), false));
        // First poll: jittered around the interval.
        let NextPoll::After { delay, failed: false } = after_write(&ij, &w(&running), || false) else { panic!() };
        assert!(delay >= S(9) && delay <= S(11), "{delay:?}");
        // A sharer's answer 4 s old: just after the fetcher is due.
        let shared = Written { shared_age: Some(S(4)), ..w(&running) };
        assert_eq!(after_write(&ij, &shared, || false), after(follow_delay(S(10), S(4)), false));
        // Never past the deadline (plus a margin): it runs out at t(2003).
        let near = with(None, |ij| ij.spec.active_deadline_seconds = Some(1003));
        assert_eq!(after_write(&near, &w(&running), || true), after(Duration::from_millis(3200), false));
        // A failure backs off and does not ask about the phase.
        let NextPoll::After { failed: true, .. } = after_write(&ij, &w(&transient), || panic!("asked")) else {
            panic!()
        };
        // Finished: never.
        let finished = Written { finished: true, ..w(&running) };
        assert_eq!(after_write(&ij, &finished, || panic!("asked")), NextPoll::Never);
    }
}
