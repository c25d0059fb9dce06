//! What a scripted job answers at a given moment: a pure function of the
//! job definition, the job's age, the request number and the API asked.
//! No I/O, no clock.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::iam::fake_id;
use super::scenario::{
    ErrorPlacement, ErrorShape, FaultAction, FaultWhen, JobDef, Phase, Progress, Settings, SubJobDef, TimeFormat,
    ims_error_status,
};
use crate::ims::model::JobStatus;

/// Which of IMS's two job APIs a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobApi {
    /// `GET /v1/{project_id}/jobs/{job_id}` ("ShowJob").
    Status,
    /// `GET /v1/cloudimages/job/{job_id}` ("ShowJobProgress").
    Progress,
}

impl JobApi {
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Progress => "progress",
        }
    }
}

/// How a job's 200 body is shaped, resolved from the settings and the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyStyle {
    pub api: JobApi,
    pub format: TimeFormat,
    /// `entities.process_percent` and `entities.current_task`.
    pub progress_fields: bool,
    /// Where a FAIL phase that names no `error_in` puts its error.
    pub error_in: ErrorPlacement,
}

impl BodyStyle {
    pub fn new(settings: &Settings, job: &JobDef, api: JobApi) -> Self {
        Self {
            api,
            format: job.time_format.unwrap_or(settings.time_format),
            progress_fields: api == JobApi::Progress || settings.status_api_progress(job),
            error_in: settings.default_error_in(),
        }
    }

    /// The progress API of the current docs.
    pub fn progress(format: TimeFormat) -> Self {
        Self { api: JobApi::Progress, format, progress_fields: true, error_in: ErrorPlacement::Both }
    }
}

/// Jobs that make several images and report them only per sub-job (the
/// status page: `entities.image_id` is "returned for other job types").
const MULTI_IMAGE_JOB_TYPES: [&str; 2] = ["imsImportOvaImageJob", "imsVolumesToSysDataImagesJob"];

/// Jobs whose progress answers carry `entities.subJobId` (the real
/// answers of 2026; the OVA import shows its sub-jobs instead).
const SUB_JOB_ID_JOB_TYPES: [&str; 2] = ["imsImportImageJob", "imsImportDataImageJob"];

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
pub fn answer(job: &JobDef, at: JobTime, request_no: u64, style: &BodyStyle) -> ScriptedAnswer {
    let active: Vec<&FaultAction> =
        job.faults.iter().filter(|f| fault_applies(&f.when, at.age, request_no)).map(|f| &f.action).collect();
    let delay = active
        .iter()
        .map(|a| match a {
            FaultAction::Latency { delay } => delay.0,
            _ => Duration::ZERO,
        })
        .sum();
    let reply = match active.iter().find(|a| !matches!(a, FaultAction::Latency { .. })) {
        Some(action) => fault_reply(action, job, at, style),
        None => ScriptedReply::Job(body(job, at, style)),
    };
    ScriptedAnswer { delay, reply }
}

fn fault_applies(when: &FaultWhen, age: Duration, request_no: u64) -> bool {
    when.requests.is_none_or(|r| r.contains(request_no))
        && when.from.is_none_or(|from| age >= from.0)
        && when.until.is_none_or(|until| age < until.0)
}

fn fault_reply(action: &FaultAction, job: &JobDef, at: JobTime, style: &BodyStyle) -> ScriptedReply {
    match action {
        FaultAction::Throttle { retry_after, limit } => {
            ScriptedReply::Throttled { retry_after: *retry_after, limit: limit.unwrap_or(DEFAULT_THROTTLE_LIMIT) }
        }
        FaultAction::Error { status, body, code, message } => {
            // Validation made sure one of the two is there.
            let status = status.or(ims_error_status(code.as_deref())).unwrap_or(400);
            let (default_code, default_message) = default_error(status);
            let code = code.as_deref().unwrap_or(default_code);
            let message = message.as_deref().or(img_message(code)).unwrap_or(default_message);
            ScriptedReply::Error { status, shape: *body, code: code.into(), message: message.into() }
        }
        FaultAction::Malformed { body } => {
            ScriptedReply::Malformed(body.clone().unwrap_or_else(|| truncated(&self::body(job, at, style))))
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

/// The documented messages (error-code table) of IMS codes a job query may meet.
fn img_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "IMG.0014" => "An exception occurred when IaaS OpenStack was executing the task.",
        "IMG.0023" => "An exception occurred during task query.",
        "IMG.0027" => "The image ID in the request does not exist.",
        "IMG.0030" => "The project ID and token in the request are invalid.",
        _ => return None,
    })
}

/// The real answer cut in half: what a proxy dropping the connection leaves.
fn truncated(body: &Value) -> String {
    let text = body.to_string();
    text[..text.len() / 2].to_owned()
}

/// The progress API's 200 body for this job at this age (what pollers
/// that want progress see); [`body`] for any API.
pub fn job_body(job: &JobDef, at: JobTime, format: TimeFormat) -> Value {
    body(job, at, &BodyStyle::progress(format))
}

/// The 200 body IMS would send for this job at this age, through the API
/// and in the shape of `style`.
pub fn body(job: &JobDef, at: JobTime, style: &BodyStyle) -> Value {
    let format = style.format;
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
    if style.api == JobApi::Progress
        && let Some(id) = sub_job_id(job)
    {
        entities.insert("subJobId".into(), id.into());
    }
    if sends_progress(job, phase, style) {
        entities.insert("current_task".into(), sticky.current_task.unwrap_or("").into());
        if let Some(p) = progress(&job.phases, i, at.age) {
            entities.insert("process_percent".into(), p);
        }
    }
    if let Some(results) = &phase.results {
        entities.insert("results".into(), json!(results));
    }
    if !job.sub_jobs.is_empty() {
        let subs: Vec<Value> = job.sub_jobs.iter().filter_map(|s| sub_job_body(s, at, style)).collect();
        entities.insert("sub_jobs_result".into(), subs.into());
    }
    if job.sub_jobs_list {
        let ids: Vec<&str> = job.sub_jobs.iter().map(|s| s.job_id.as_str()).collect();
        entities.insert("sub_jobs_list".into(), json!(ids));
    }
    let (error_code, fail_reason) = place_error(phase, style.error_in, &mut entities);
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

/// Progress fields, when the style wants them; the progress API's real
/// answers of finished multi-image jobs carry none.
fn sends_progress(job: &JobDef, phase: &Phase, style: &BodyStyle) -> bool {
    let finished_multi_image = style.api == JobApi::Progress
        && phase.status.is_finished()
        && phase.progress.is_none()
        && MULTI_IMAGE_JOB_TYPES.contains(&job.job_type.as_str());
    style.progress_fields && !finished_multi_image
}

/// `entities.subJobId`: the job's own, or a stable 32-hex id for the
/// import jobs whose real answers carry one.
fn sub_job_id(job: &JobDef) -> Option<String> {
    job.sub_job_id
        .clone()
        .or_else(|| SUB_JOB_ID_JOB_TYPES.contains(&job.job_type.as_str()).then(|| fake_id("subJobId", &job.job_id)))
}

/// A sub-job appears once its first phase is reached; its times are
/// counted from the parent's creation.
fn sub_job_body(sub: &SubJobDef, at: JobTime, style: &BodyStyle) -> Option<Value> {
    let format = style.format;
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
    let (error_code, fail_reason) = place_error(phase, style.error_in, &mut entities);
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
/// them on top); writes them into `entities` as `error_code`/`error` when
/// the placement says so. `addition_error_*` exist only in `entities`.
fn place_error(phase: &Phase, default: ErrorPlacement, entities: &mut Map<String, Value>) -> (Value, Value) {
    let code = phase.error_code.as_deref().map_or(Value::Null, Value::from);
    let reason = phase.fail_reason.as_deref().map_or(Value::Null, Value::from);
    let placement = phase.error_in.unwrap_or(default);
    if matches!(placement, ErrorPlacement::Entities | ErrorPlacement::Both) {
        insert_some(entities, "error_code", phase.error_code.as_deref());
        insert_some(entities, "error", phase.fail_reason.as_deref());
    }
    insert_some(entities, "addition_error_code", phase.addition_error_code.as_deref());
    insert_some(entities, "addition_error_msg", phase.addition_error_msg.as_deref());
    match placement {
        ErrorPlacement::Entities => (Value::Null, Value::Null),
        ErrorPlacement::Top | ErrorPlacement::Both => (code, reason),
    }
}

fn insert_some(entities: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        entities.insert(key.into(), v.into());
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
    use crate::sim::scenario::{JobDef, Settings};

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
        assert_eq!(inside["entities"]["error"], "boom", "the SDKs' name for the message");
        assert!(inside["entities"].get("fail_reason").is_none());
        let parsed = Job::from_value(&inside).unwrap();
        assert_eq!(parsed.error_code.as_deref(), Some("IMG.0014"));
    }

    fn style(yaml_settings: &str, job: &JobDef, api: JobApi) -> BodyStyle {
        let settings: Settings = serde_yaml_ng::from_str(yaml_settings).unwrap();
        BodyStyle::new(&settings, job, api)
    }

    #[test]
    fn status_api_has_no_progress_unless_asked() {
        let job = def(CREATE);
        let entities = |settings: &str, api| body(&job, at(7.0), &style(settings, &job, api))["entities"].clone();
        let status = entities("{}", JobApi::Status);
        assert_eq!(status, json!({"image_name": "web", "image_id": "img-1"}));
        let progress = entities("{}", JobApi::Progress);
        assert_eq!(progress["process_percent"], json!(0.5));
        assert_eq!(progress["current_task"], "CreateImageByInstanceTask");
        assert!(progress.get("subJobId").is_none(), "not an import job");
        for old in ["status_api_progress: true", "api: legacy"] {
            let restored = entities(old, JobApi::Status);
            assert_eq!(restored["process_percent"], json!(0.5), "{old}");
            assert_eq!(restored["current_task"], "CreateImageByInstanceTask", "{old}");
        }
        let legacy_but_not_this_job = def(&format!("{CREATE}\n        status_api_progress: false\n"));
        let s = style("api: legacy", &legacy_but_not_this_job, JobApi::Status);
        assert!(body(&legacy_but_not_this_job, at(7.0), &s)["entities"].get("process_percent").is_none());
    }

    #[test]
    fn progress_api_adds_sub_job_id_to_import_jobs() {
        let import = def("project_id: p\njob_id: ff8080814dbd65d7014dbe0d84db0099\njob_type: imsImportImageJob\n\
                          phases: [{after: 0s, status: RUNNING, progress: 0.4}, {after: 5s, status: SUCCESS, image_id: i}]");
        let progress = body(&import, at(9.0), &style("{}", &import, JobApi::Progress));
        let id = progress["entities"]["subJobId"].as_str().unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()) && id != import.job_id);
        assert_eq!(progress["entities"]["process_percent"], json!(1));
        assert!(progress["entities"]["process_percent"].is_u64());
        assert_eq!(progress["entities"]["current_task"], "");
        let status = body(&import, at(9.0), &style("{}", &import, JobApi::Status));
        assert!(status["entities"].get("subJobId").is_none());
        let named = def("project_id: p\njob_id: j\njob_type: imsCopyImageInRegionJob\nsub_job_id: abc\n\
                         phases: [{after: 0s, status: RUNNING}]");
        assert_eq!(body(&named, at(1.0), &style("{}", &named, JobApi::Progress))["entities"]["subJobId"], "abc");
    }

    const OVA: &str = r#"
        project_id: p
        job_id: j
        job_type: imsImportOvaImageJob
        sub_jobs_list: true
        phases: [{after: 0s, status: RUNNING, progress: [0, 1]}, {after: 10s, status: SUCCESS}]
        sub_jobs:
          - job_id: s1
            job_type: imsImportImageJob
            phases: [{after: 0s, status: RUNNING, image_name: sys}, {after: 5s, status: SUCCESS, image_id: i-sys}]
          - job_id: s2
            job_type: imsImportDataImageJob
            phases: [{after: 0s, status: RUNNING, image_name: data}, {after: 8s, status: SUCCESS, image_id: i-data}]
    "#;

    #[test]
    fn multi_image_jobs_report_images_only_per_sub_job() {
        let job = def(OVA);
        let done = body(&job, at(20.0), &style("{}", &job, JobApi::Progress));
        let entities = done["entities"].as_object().unwrap();
        let keys: Vec<&str> = entities.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["sub_jobs_list", "sub_jobs_result"],
            "no image_id, no progress once done, as the real answers"
        );
        let images: Vec<&Value> =
            done["entities"]["sub_jobs_result"].as_array().unwrap().iter().map(|s| &s["entities"]).collect();
        assert_eq!(
            images,
            [&json!({"image_id": "i-sys", "image_name": "sys"}), &json!({"image_id": "i-data", "image_name": "data"})]
        );
        let running = body(&job, at(5.0), &style("{}", &job, JobApi::Progress));
        assert_eq!(running["entities"]["process_percent"], json!(0.5), "progress while running");
        assert!(running["entities"].get("subJobId").is_none(), "the OVA job shows its sub-jobs instead");
    }

    #[test]
    fn failure_defaults_to_both_places_with_sdk_names() {
        let job = def("project_id: p\njob_id: j\njob_type: t\nphases:\n  - {after: 0s, status: INIT}\n  \
                       - {after: 1s, status: FAIL, error_code: IMG.0014, fail_reason: boom, \
                       addition_error_code: Ecs.0001, addition_error_msg: quota}\n");
        let both = body(&job, at(5.0), &style("{}", &job, JobApi::Status));
        assert_eq!((both["error_code"].as_str(), both["fail_reason"].as_str()), (Some("IMG.0014"), Some("boom")));
        assert_eq!(
            both["entities"],
            json!({"error_code": "IMG.0014", "error": "boom", "addition_error_code": "Ecs.0001", "addition_error_msg": "quota"})
        );
        let legacy = body(&job, at(5.0), &style("api: legacy", &job, JobApi::Status));
        assert_eq!(legacy["fail_reason"], "boom");
        assert!(legacy["entities"].get("error").is_none(), "legacy puts the error on top only");
        assert_eq!(legacy["entities"]["addition_error_msg"], "quota", "it has no top-level place");
    }

    #[test]
    fn ims_error_faults_are_400_except_img_0026() {
        let job = def(r#"
            project_id: p
            job_id: j
            job_type: t
            phases: [{after: 0s, status: RUNNING}]
            faults:
              - {fault: error, requests: 1, code: IMG.0030, message: The project ID and token in the request are invalid.}
              - {fault: error, requests: 2, code: IMG.0026}
              - {fault: error, requests: 3, code: IMG.0023, status: 500}
        "#);
        let s = style("{}", &job, JobApi::Status);
        let reply = |n| answer(&job, at(0.0), n, &s).reply;
        let ScriptedReply::Error { status, shape, code, .. } = reply(1) else { panic!() };
        assert_eq!((status, shape, code.as_str()), (400, ErrorShape::Nested, "IMG.0030"));
        assert!(matches!(reply(2), ScriptedReply::Error { status: 403, .. }));
        assert!(matches!(reply(3), ScriptedReply::Error { status: 500, .. }), "an explicit status wins");
        let no_status = "project_id: p\njob_id: j\njob_type: t\nphases: [{after: 0s, status: INIT}]\n\
                         faults: [{fault: error, code: APIGW.0201}]";
        assert!(JobDef::parse(no_status).unwrap().validate().unwrap_err().0.contains("IMG code"));
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
        let s = BodyStyle::progress(TimeFormat::Rfc3339);
        let a = |n, t| answer(&job, at(t), n, &s);
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
