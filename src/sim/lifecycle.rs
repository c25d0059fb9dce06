//! What a scripted job answers at a given moment: a pure function of the
//! job definition, the job's age and the request number. No I/O, no clock.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::scenario::{
    ErrorPlacement, ErrorShape, FaultAction, FaultWhen, JobDef, Phase, Progress, SubJobDef, TimeFormat,
};
use crate::ims::model::JobStatus;

/// Where a job stands in time: when it was created and how old it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobTime {
    pub created_at: Timestamp,
    pub age: Duration,
}

/// How the simulator answers one job query.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptedAnswer {
    /// Added latency, from `latency` faults.
    pub delay: Duration,
    pub reply: ScriptedReply,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScriptedReply {
    /// 200 with the job as JSON.
    Job(Value),
    /// 429 `APIG.0308`.
    Throttled { retry_after: Option<u64>, limit: u32 },
    /// An error status with a body of the given shape.
    Error { status: u16, shape: ErrorShape, code: String, message: String },
    /// 200 whose body is not valid JSON.
    Malformed(String),
}

/// The answer to request number `request_no` (from 1) at `at`.
pub fn answer(job: &JobDef, at: JobTime, request_no: u64, default_format: TimeFormat) -> ScriptedAnswer {
    let active: Vec<&FaultAction> =
        job.faults.iter().filter(|f| fault_applies(&f.when, at.age, request_no)).map(|f| &f.action).collect();
    let delay = active
        .iter()
        .map(|a| match a {
            FaultAction::Latency { delay } => delay.0,
            _ => Duration::ZERO,
        })
        .sum();
    let format = job.time_format.unwrap_or(default_format);
    let reply = match active.iter().find(|a| !matches!(a, FaultAction::Latency { .. })) {
        Some(action) => fault_reply(action, job, at, format),
        None => ScriptedReply::Job(job_body(job, at, format)),
    };
    ScriptedAnswer { delay, reply }
}

fn fault_applies(when: &FaultWhen, age: Duration, request_no: u64) -> bool {
    when.requests.is_none_or(|r| r.contains(request_no))
        && when.from.is_none_or(|from| age >= from.0)
        && when.until.is_none_or(|until| age < until.0)
}

fn fault_reply(action: &FaultAction, job: &JobDef, at: JobTime, format: TimeFormat) -> ScriptedReply {
    match action {
        FaultAction::Throttle { retry_after, limit } => {
            ScriptedReply::Throttled { retry_after: *retry_after, limit: limit.unwrap_or(DEFAULT_THROTTLE_LIMIT) }
        }
        FaultAction::Error { status, body, code, message } => {
            let (default_code, default_message) = default_error(*status);
            ScriptedReply::Error {
                status: *status,
                shape: *body,
                code: code.clone().unwrap_or_else(|| default_code.into()),
                message: message.clone().unwrap_or_else(|| default_message.into()),
            }
        }
        FaultAction::Malformed { body } => {
            ScriptedReply::Malformed(body.clone().unwrap_or_else(|| truncated(&job_body(job, at, format))))
        }
        FaultAction::Latency { .. } => unreachable!("latency faults only add delay"),
    }
}

/// No per-tenant IMS limit is published; 20 a minute is a plausible figure
/// for the `limit:XX` of the gateway's message.
pub const DEFAULT_THROTTLE_LIMIT: u32 = 20;

/// Codes for an error fault that names none. IMG.0023 is IMS's documented
/// "exception during task query"; the APIGW codes are what the gateway is
/// believed to send for an unreachable or slow backend (not documented for
/// OTC). Other statuses get an obviously simulated code.
fn default_error(status: u16) -> (&'static str, &'static str) {
    match status {
        500 => ("IMG.0023", "An exception occurred during task query."),
        502 => ("APIGW.0201", "Backend unavailable"),
        503 => ("APIGW.0201", "The service is unavailable."),
        504 => ("APIGW.0202", "Backend timeout"),
        _ => ("SIM.0001", "Simulated error"),
    }
}

/// The real answer cut in half: what a proxy dropping the connection leaves.
fn truncated(body: &Value) -> String {
    let text = body.to_string();
    text[..text.len() / 2].to_owned()
}

/// The 200 body IMS would send for this job at this age.
pub fn job_body(job: &JobDef, at: JobTime, format: TimeFormat) -> Value {
    let i = phase_index(&job.phases, at.age).unwrap_or(0);
    let phase = &job.phases[i];
    let sticky = Sticky::of(&job.phases[..=i]);
    let mut entities = Map::new();
    if let Some(name) = sticky.image_name.or(job.image_name.as_deref()) {
        entities.insert("image_name".into(), name.into());
    }
    if let Some(id) = sticky.image_id {
        entities.insert("image_id".into(), id.into());
    }
    entities.insert("current_task".into(), sticky.current_task.unwrap_or("").into());
    if let Some(p) = progress(&job.phases, i, at.age) {
        entities.insert("process_percent".into(), p);
    }
    if let Some(results) = &phase.results {
        entities.insert("results".into(), json!(results));
    }
    if !job.sub_jobs.is_empty() {
        let subs: Vec<Value> = job.sub_jobs.iter().filter_map(|s| sub_job_body(s, at, format)).collect();
        entities.insert("sub_jobs_result".into(), subs.into());
    }
    if job.sub_jobs_list {
        let ids: Vec<&str> = job.sub_jobs.iter().map(|s| s.job_id.as_str()).collect();
        entities.insert("sub_jobs_list".into(), json!(ids));
    }
    let (error_code, fail_reason) = place_error(phase, &mut entities);
    merge_raw(&mut entities, phase);
    json!({
        "status": phase.status.as_str(),
        "job_id": job.job_id,
        "job_type": job.job_type,
        "begin_time": format_time(at.created_at, format),
        "end_time": end_time(phase, at.created_at, format),
        "error_code": error_code,
        "fail_reason": fail_reason,
        "entities": entities,
    })
}

/// A sub-job appears once its first phase is reached; its times are
/// counted from the parent's creation.
fn sub_job_body(sub: &SubJobDef, at: JobTime, format: TimeFormat) -> Option<Value> {
    let i = phase_index(&sub.phases, at.age)?;
    let phase = &sub.phases[i];
    let sticky = Sticky::of(&sub.phases[..=i]);
    let mut entities = Map::new();
    if let Some(id) = sticky.image_id {
        entities.insert("image_id".into(), id.into());
    }
    if let Some(name) = sticky.image_name {
        entities.insert("image_name".into(), name.into());
    }
    let (error_code, fail_reason) = place_error(phase, &mut entities);
    merge_raw(&mut entities, phase);
    Some(json!({
        "status": phase.status.as_str(),
        "job_id": sub.job_id,
        "job_type": sub.job_type,
        "begin_time": format_time(at.created_at + sub.phases[0].after.0, format),
        "end_time": end_time(phase, at.created_at, format),
        "error_code": error_code,
        "fail_reason": fail_reason,
        "entities": entities,
    }))
}

/// The last phase that has begun, if any.
pub fn phase_index(phases: &[Phase], age: Duration) -> Option<usize> {
    phases.iter().rposition(|p| p.after.0 <= age)
}

/// Fields that, once set by a phase, stay until a later phase changes them.
#[derive(Default)]
struct Sticky<'a> {
    image_id: Option<&'a str>,
    image_name: Option<&'a str>,
    current_task: Option<&'a str>,
}

impl<'a> Sticky<'a> {
    fn of(phases: &'a [Phase]) -> Self {
        phases.iter().fold(Self::default(), |s, p| Self {
            image_id: p.image_id.as_deref().or(s.image_id),
            image_name: p.image_name.as_deref().or(s.image_name),
            current_task: p.current_task.as_deref().or(s.current_task),
        })
    }
}

/// `process_percent` as IMS writes it: a 0–1 fraction with two decimals,
/// and the integer 1 once a job succeeded (unless the phase says otherwise).
fn progress(phases: &[Phase], i: usize, age: Duration) -> Option<Value> {
    let phase = &phases[i];
    let value = match phase.progress {
        Some(Progress::Fixed(v)) => v,
        Some(Progress::Rising([from, to])) => match phases.get(i + 1) {
            Some(next) => {
                let span = (next.after.0 - phase.after.0).as_secs_f64();
                let done = ((age - phase.after.0).as_secs_f64() / span).clamp(0.0, 1.0);
                from + (to - from) * done
            }
            None => from,
        },
        None if phase.status == JobStatus::Success => return Some(json!(1)),
        None => return None,
    };
    Some(json!((value * 100.0).round() / 100.0))
}

/// Top-level `error_code`/`fail_reason` (null unless the phase failed with
/// them on top); copies them into `entities` when the phase says so.
fn place_error(phase: &Phase, entities: &mut Map<String, Value>) -> (Value, Value) {
    let code = phase.error_code.as_deref().map_or(Value::Null, Value::from);
    let reason = phase.fail_reason.as_deref().map_or(Value::Null, Value::from);
    if matches!(phase.error_in, ErrorPlacement::Entities | ErrorPlacement::Both) {
        if !code.is_null() {
            entities.insert("error_code".into(), code.clone());
        }
        if !reason.is_null() {
            entities.insert("fail_reason".into(), reason.clone());
        }
    }
    match phase.error_in {
        ErrorPlacement::Entities => (Value::Null, Value::Null),
        ErrorPlacement::Top | ErrorPlacement::Both => (code, reason),
    }
}

fn merge_raw(entities: &mut Map<String, Value>, phase: &Phase) {
    if let Some(raw) = &phase.entities {
        entities.extend(raw.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// `""` until the job has finished, as IMS does.
fn end_time(phase: &Phase, created_at: Timestamp, format: TimeFormat) -> String {
    if phase.status.is_finished() { format_time(created_at + phase.after.0, format) } else { String::new() }
}

/// Both time formats IMS is known to send, always UTC with milliseconds.
pub fn format_time(ts: Timestamp, format: TimeFormat) -> String {
    match format {
        TimeFormat::Rfc3339 => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        TimeFormat::Legacy => ts.strftime("%d-%b-%Y %H:%M:%S:%3f").to_string(),
    }
}

/// When a job created `age` ago was created.
pub fn created_at(now: Timestamp, age: Duration) -> Timestamp {
    now - SignedDuration::try_from(age).unwrap_or(SignedDuration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::model::Job;
    use crate::sim::scenario::JobDef;

    fn def(yaml: &str) -> JobDef {
        let job = JobDef::parse(yaml).unwrap();
        job.validate().unwrap();
        job
    }

    fn at(secs: f64) -> JobTime {
        JobTime { created_at: "2024-11-06T06:19:43.195Z".parse().unwrap(), age: Duration::from_secs_f64(secs) }
    }

    const CREATE: &str = r#"
        project_id: 0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b
        job_id: ff8080814dbd65d7014dbe0d84db0013
        job_type: imsCreateImageByInstance
        image_name: web
        phases:
          - {after: 0s, status: INIT}
          - {after: 2s, status: RUNNING, progress: [0.1, 0.9], current_task: CreateImageByInstanceTask, image_id: img-1}
          - {after: 12s, status: SUCCESS, results: [{image_id: img-1, project_id: p}]}
    "#;

    #[test]
    fn init_phase() {
        let body = job_body(&def(CREATE), at(1.0), TimeFormat::Rfc3339);
        assert_eq!(body["status"], "INIT");
        assert_eq!(body["begin_time"], "2024-11-06T06:19:43.195Z");
        assert_eq!(body["end_time"], "");
        assert_eq!(body["error_code"], Value::Null);
        assert_eq!(body["entities"], json!({"image_name": "web", "current_task": ""}));
    }

    #[test]
    fn progress_rises_linearly_while_running() {
        let job = def(CREATE);
        let percent = |t| job_body(&job, at(t), TimeFormat::Rfc3339)["entities"]["process_percent"].clone();
        assert_eq!(percent(2.0), json!(0.1));
        assert_eq!(percent(7.0), json!(0.5));
        assert_eq!(percent(11.99), json!(0.9));
        let body = job_body(&job, at(7.0), TimeFormat::Rfc3339);
        assert_eq!(body["status"], "RUNNING");
        assert_eq!(body["entities"]["current_task"], "CreateImageByInstanceTask");
        assert_eq!(body["entities"]["image_id"], "img-1");
    }

    #[test]
    fn success_looks_like_the_api_page() {
        let body = job_body(&def(CREATE), at(100.0), TimeFormat::Legacy);
        assert_eq!(body["status"], "SUCCESS");
        assert_eq!(body["begin_time"], "06-Nov-2024 06:19:43:195");
        assert_eq!(body["end_time"], "06-Nov-2024 06:19:55:195");
        assert_eq!(body["error_code"], Value::Null);
        assert_eq!(body["fail_reason"], Value::Null);
        assert_eq!(body["entities"]["process_percent"], json!(1));
        assert!(body["entities"]["process_percent"].is_u64(), "an integer 1, as IMS sends");
        assert_eq!(body["entities"]["image_id"], "img-1", "sticky from the RUNNING phase");
        assert_eq!(body["entities"]["current_task"], "CreateImageByInstanceTask");
        assert_eq!(body["entities"]["results"], json!([{"image_id": "img-1", "project_id": "p", "status": "success"}]));
        // The operator's own parser reads it back.
        let parsed = Job::from_value(&body).unwrap();
        assert_eq!(parsed.progress, Some(100));
        assert_eq!(parsed.end_time.unwrap().to_string(), "2024-11-06T06:19:55.195Z");
    }

    #[test]
    fn failure_on_top_or_only_in_entities() {
        let yaml = |place: &str| {
            format!(
                "project_id: p\njob_id: j\njob_type: t\nphases:\n  - {{after: 0s, status: INIT}}\n  \
                 - {{after: 1s, status: FAIL, error_code: IMG.0014, fail_reason: boom, error_in: {place}}}\n"
            )
        };
        let top = job_body(&def(&yaml("top")), at(5.0), TimeFormat::Rfc3339);
        assert_eq!((top["status"].as_str(), top["error_code"].as_str()), (Some("FAIL"), Some("IMG.0014")));
        assert_eq!(top["end_time"], "2024-11-06T06:19:44.195Z");
        assert!(top["entities"].get("error_code").is_none());
        let inside = job_body(&def(&yaml("entities")), at(5.0), TimeFormat::Rfc3339);
        assert_eq!(inside["error_code"], Value::Null);
        assert_eq!(inside["entities"]["error_code"], "IMG.0014");
        assert_eq!(inside["entities"]["fail_reason"], "boom");
        let parsed = Job::from_value(&inside).unwrap();
        assert_eq!(parsed.error_code.as_deref(), Some("IMG.0014"));
    }

    #[test]
    fn sub_jobs_appear_when_they_start_and_finish_on_their_own() {
        let job = def(r#"
            project_id: p
            job_id: j
            job_type: imsImportOvaImageJob
            sub_jobs_list: true
            phases: [{after: 0s, status: INIT}, {after: 1s, status: RUNNING}, {after: 10s, status: SUCCESS}]
            sub_jobs:
              - job_id: s1
                job_type: imsImportImageJob
                phases: [{after: 1s, status: RUNNING, image_name: d0}, {after: 5s, status: SUCCESS, image_id: i0}]
              - job_id: s2
                job_type: imsImportDataImageJob
                phases: [{after: 3s, status: RUNNING}, {after: 8s, status: FAIL, error_code: IMG.1075, fail_reason: bad}]
        "#);
        let subs = |t| job_body(&job, at(t), TimeFormat::Rfc3339)["entities"]["sub_jobs_result"].clone();
        assert_eq!(subs(0.5), json!([]));
        assert_eq!(subs(2.0).as_array().unwrap().len(), 1);
        let late = subs(9.0);
        assert_eq!(late[0]["status"], "SUCCESS");
        assert_eq!(late[0]["entities"], json!({"image_id": "i0", "image_name": "d0"}));
        assert_eq!(late[0]["begin_time"], "2024-11-06T06:19:44.195Z");
        assert_eq!(late[0]["end_time"], "2024-11-06T06:19:48.195Z");
        assert_eq!(late[1]["status"], "FAIL");
        assert_eq!(late[1]["error_code"], "IMG.1075");
        let body = job_body(&job, at(9.0), TimeFormat::Rfc3339);
        assert_eq!(body["entities"]["sub_jobs_list"], json!(["s1", "s2"]));
        assert_eq!(Job::from_value(&body).unwrap().sub_jobs.len(), 2);
    }

    #[test]
    fn faults_by_request_number_and_time_window() {
        let job = def(r#"
            project_id: p
            job_id: j
            job_type: t
            phases: [{after: 0s, status: RUNNING, progress: 0.5}]
            faults:
              - {fault: latency, delay: 100ms}
              - {fault: throttle, requests: 1-2, retry_after: 3}
              - {fault: error, from: 5s, until: 6s, status: 503, body: flat}
              - {fault: malformed, requests: 4}
              - {fault: latency, requests: 4, delay: 50ms}
        "#);
        let a = |n, t| answer(&job, at(t), n, TimeFormat::Rfc3339);
        assert_eq!(a(1, 0.0).reply, ScriptedReply::Throttled { retry_after: Some(3), limit: DEFAULT_THROTTLE_LIMIT });
        assert_eq!(a(1, 0.0).delay, Duration::from_millis(100));
        assert!(matches!(a(3, 0.0).reply, ScriptedReply::Job(_)));
        assert_eq!(
            a(3, 5.5).reply,
            ScriptedReply::Error {
                status: 503,
                shape: ErrorShape::Flat,
                code: "APIGW.0201".into(),
                message: "The service is unavailable.".into()
            }
        );
        assert!(matches!(a(3, 6.0).reply, ScriptedReply::Job(_)), "until is excluded");
        let malformed = a(4, 0.0);
        assert_eq!(malformed.delay, Duration::from_millis(150));
        let ScriptedReply::Malformed(text) = malformed.reply else { panic!("{malformed:?}") };
        assert!(serde_json::from_str::<Value>(&text).is_err());
        assert!(text.starts_with('{'));
    }

    #[test]
    fn time_formats() {
        let ts: Timestamp = "2015-06-04T18:11:06.586Z".parse().unwrap();
        assert_eq!(format_time(ts, TimeFormat::Legacy), "04-Jun-2015 18:11:06:586");
        assert_eq!(format_time(ts, TimeFormat::Rfc3339), "2015-06-04T18:11:06.586Z");
        let whole: Timestamp = "2015-06-04T18:11:06Z".parse().unwrap();
        assert_eq!(format_time(whole, TimeFormat::Rfc3339), "2015-06-04T18:11:06.000Z");
    }
}
