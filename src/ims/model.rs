//! The job object of both job APIs (`GET /v1/{project_id}/jobs/{job_id}` and
//! `GET /v1/cloudimages/job/{job_id}`), parsed leniently.
//!
//! Real IMS answers vary (see the `ims` module doc): two time formats, `null` or
//! missing fields, numbers where strings are documented, unknown job types,
//! lower-case statuses in `results`. Parsing goes through `serde_json::Value`
//! so that no shape of input can make it panic; only a body that is not a
//! JSON object or a top-level status we do not know is an error.

use jiff::Timestamp;
use serde_json::{Map, Value};

/// The four documented job states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Init,
    Running,
    Success,
    Fail,
}

impl JobStatus {
    /// Case-insensitive, so `success` in `results[]` parses too.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_uppercase().as_str() {
            "INIT" => Some(Self::Init),
            "RUNNING" => Some(Self::Running),
            "SUCCESS" => Some(Self::Success),
            "FAIL" => Some(Self::Fail),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Running => "RUNNING",
            Self::Success => "SUCCESS",
            Self::Fail => "FAIL",
        }
    }

    /// SUCCESS and FAIL never change again: no more polling is needed.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Success | Self::Fail)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One IMS job, normalised: every field the API page documents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Job {
    pub job_id: Option<String>,
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
    pub begin_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
    /// The job's image: `entities.image_id`, or for a job that makes several
    /// images (and names them only in its sub-jobs) the system disk image.
    pub image_id: Option<String>,
    pub image_name: Option<String>,
    /// Every image the job made, from `entities`, its sub-jobs and
    /// `entities.__data_images`; see [`Image`].
    pub images: Vec<Image>,
    pub current_task: Option<String>,
    /// Percent 0–100, from `process_percent`.
    pub progress: Option<u8>,
    /// `entities.subJobId` (progress API): the sub-job doing the work.
    pub sub_job_id: Option<String>,
    pub results: Vec<JobResult>,
    pub sub_jobs: Vec<SubJob>,
    pub sub_job_ids: Vec<String>,
    /// How many sub-jobs (or sub-job IDs) IMS listed, when more than
    /// `MAX_PARSED_ITEMS` and so cut at parse time.
    pub sub_jobs_total: Option<usize>,
    /// How many results IMS listed, when cut at parse time.
    pub results_total: Option<usize>,
}

/// Lists are cut to this many entries at parse time (failed ones first),
/// and texts to `MAX_PARSED_TEXT` bytes: a hostile 4 MiB answer becomes a
/// small `Job`, which is what the shared-answer cache keeps. The status
/// cuts further (see `status::bound`).
pub const MAX_PARSED_ITEMS: usize = 100;
pub const MAX_PARSED_TEXT: usize = 8 * 1024;

/// `entities.results[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobResult {
    pub image_id: Option<String>,
    pub project_id: Option<String>,
    /// Upper-cased (`success` → `SUCCESS`); unknown values kept as sent.
    pub status: Option<String>,
}

/// Whether an image is a system disk (bootable) or a data disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    System,
    Data,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Data => "data",
        }
    }

    /// IMS names data-image work in the job type (`imsImportDataImageJob`).
    fn of_job_type(job_type: Option<&str>) -> Self {
        match job_type {
            Some(t) if t.to_ascii_lowercase().contains("dataimage") => Self::Data,
            _ => Self::System,
        }
    }
}

/// One image a job made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub kind: ImageKind,
    /// The sub-job that made it, when IMS says.
    pub sub_job_id: Option<String>,
}

/// `entities.sub_jobs_result[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubJob {
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    /// Upper-cased; unknown values kept as sent.
    pub status: Option<String>,
    pub begin_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
    pub image_id: Option<String>,
    pub image_name: Option<String>,
}

/// Why a 200 answer could not be used. All of these are treated as
/// transient by the client: a garbled answer is not a job failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the job answer is not valid JSON: {0}")]
    NotJson(String),
    #[error("the job answer is not a JSON object")]
    NotAnObject,
    #[error("the job answer has no status")]
    MissingStatus,
    #[error("the job answer has an unknown status {0:?}")]
    UnknownStatus(String),
}

impl Job {
    /// Parses a response body. The status is required and must be one of
    /// the four documented values; everything else is optional.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Self, ParseError> {
        let top = value.as_object().ok_or(ParseError::NotAnObject)?;
        let raw_status = string(top, "status").ok_or(ParseError::MissingStatus)?;
        let status = JobStatus::parse(&raw_status).ok_or(ParseError::UnknownStatus(raw_status))?;
        let empty = Map::new();
        let entities = top.get("entities").and_then(Value::as_object).unwrap_or(&empty);
        let (sub_jobs, sub_jobs_total) = bounded_objects(entities, "sub_jobs_result", is_fail);
        let (results, results_total) = bounded_objects(entities, "results", |o| {
            string(o, "status").is_some_and(|s| !s.eq_ignore_ascii_case("SUCCESS"))
        });
        let mut sub_job_ids = strings(entities, "sub_jobs_list");
        let ids_total = sub_job_ids.len();
        sub_job_ids.truncate(MAX_PARSED_ITEMS);
        let cut = |total: usize| (total > MAX_PARSED_ITEMS).then_some(total);
        let job_type = string(top, "job_type");
        let sub_job_id = string(entities, "subJobId").or_else(|| string(entities, "sub_job_id"));
        let sub_jobs: Vec<SubJob> = sub_jobs.into_iter().map(sub_job).collect();
        let images = images_of(entities, job_type.as_deref(), sub_job_id.as_deref(), &sub_jobs);
        let main_image = main_image(&images);
        Ok(Job {
            job_id: string(top, "job_id"),
            status: Some(status),
            job_type,
            begin_time: time(top, "begin_time"),
            end_time: time(top, "end_time"),
            error_code: string(top, "error_code").or_else(|| entity_error_code(entities)),
            fail_reason: string(top, "fail_reason").or_else(|| entity_fail_reason(entities)),
            image_id: main_image.map(|i| i.id.clone()),
            image_name: string(entities, "image_name").or_else(|| main_image.and_then(|i| i.name.clone())),
            images,
            current_task: string(entities, "current_task"),
            progress: entities.get("process_percent").and_then(percent),
            sub_job_id,
            results: results.into_iter().map(job_result).collect(),
            sub_job_ids,
            sub_jobs,
            sub_jobs_total: cut(sub_jobs_total.max(ids_total)),
            results_total: cut(results_total),
        })
    }

    /// The data disk images, in the order IMS listed them.
    pub fn data_image_ids(&self) -> impl Iterator<Item = &str> {
        self.images.iter().filter(|i| i.kind == ImageKind::Data).map(|i| i.id.as_str())
    }
}

/// The images of a job: its own `entities.image_id`; else those of its
/// sub-jobs (OVA imports and volumes-to-images jobs name them only there);
/// then `entities.__data_images`, which older SDKs read for data images.
fn images_of(
    entities: &Map<String, Value>,
    job_type: Option<&str>,
    sub_job_id: Option<&str>,
    sub_jobs: &[SubJob],
) -> Vec<Image> {
    let mut images: Vec<Image> = match string(entities, "image_id") {
        Some(id) => vec![Image {
            id,
            name: string(entities, "image_name"),
            kind: ImageKind::of_job_type(job_type),
            sub_job_id: sub_job_id.map(str::to_owned),
        }],
        None => sub_job_images(sub_jobs),
    };
    for id in data_image_ids(entities) {
        if !images.iter().any(|i| i.id == id) {
            images.push(Image { id, name: None, kind: ImageKind::Data, sub_job_id: None });
        }
    }
    images
}

/// A data-image sub-job makes a data image; of the others (a volumes job's
/// `imsCopyVolumeToImageJob`s all share one type) the first makes the system
/// disk image, as Terraform's provider reads it, and the rest data images.
fn sub_job_images(sub_jobs: &[SubJob]) -> Vec<Image> {
    let mut system_seen = false;
    let mut images = Vec::new();
    for s in sub_jobs {
        let Some(id) = s.image_id.clone() else { continue };
        let kind = match ImageKind::of_job_type(s.job_type.as_deref()) {
            ImageKind::System if !system_seen => ImageKind::System,
            _ => ImageKind::Data,
        };
        system_seen |= kind == ImageKind::System;
        images.push(Image { id, name: s.image_name.clone(), kind, sub_job_id: s.job_id.clone() });
    }
    images
}

/// `__data_images`: a string (one ID, or several separated by commas), or a list.
fn data_image_ids(entities: &Map<String, Value>) -> Vec<String> {
    let raw = match entities.get("__data_images") {
        Some(Value::Array(_)) => strings(entities, "__data_images"),
        _ => string(entities, "__data_images").into_iter().collect(),
    };
    raw.iter()
        .flat_map(|s| s.split(|c: char| c == ',' || c.is_whitespace()))
        .map(|id| id.trim_matches(|c: char| c == '"' || c == '[' || c == ']'))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .take(MAX_PARSED_ITEMS)
        .collect()
}

/// The image a user means by "the job's image": the system disk image, or
/// the only kind there is.
fn main_image(images: &[Image]) -> Option<&Image> {
    images.iter().find(|i| i.kind == ImageKind::System).or_else(|| images.first())
}

fn job_result(obj: &Map<String, Value>) -> JobResult {
    JobResult {
        image_id: string(obj, "image_id"),
        project_id: string(obj, "project_id"),
        status: string(obj, "status").map(|s| s.to_ascii_uppercase()),
    }
}

fn sub_job(obj: &Map<String, Value>) -> SubJob {
    let empty = Map::new();
    let entities = obj.get("entities").and_then(Value::as_object).unwrap_or(&empty);
    SubJob {
        job_id: string(obj, "job_id"),
        job_type: string(obj, "job_type"),
        status: string(obj, "status").map(|s| s.to_ascii_uppercase()),
        begin_time: time(obj, "begin_time"),
        end_time: time(obj, "end_time"),
        error_code: string(obj, "error_code").or_else(|| entity_error_code(entities)),
        fail_reason: string(obj, "fail_reason").or_else(|| entity_fail_reason(entities)),
        image_id: string(entities, "image_id"),
        image_name: string(entities, "image_name"),
    }
}

// The API page says an abnormal job carries "an error code and details" in
// `entities`; the vendor SDKs name them `error_code` and `error`, with an
// `addition_error_code`/`addition_error_msg` pair beside them. The other
// names are those IMS uses elsewhere.
fn entity_error_code(entities: &Map<String, Value>) -> Option<String> {
    ["error_code", "errorCode", "code", "addition_error_code"].iter().find_map(|k| string(entities, k))
}

/// The reason, with the additional error appended when it says more.
fn entity_fail_reason(entities: &Map<String, Value>) -> Option<String> {
    let reason = ["fail_reason", "failReason", "error", "error_msg", "error_message", "message", "reason"]
        .iter()
        .find_map(|k| string(entities, k));
    let addition = string(entities, "addition_error_msg");
    let addition_code = string(entities, "addition_error_code");
    match (reason, addition) {
        (Some(reason), Some(extra)) if !reason.contains(&extra) => {
            let extra = match addition_code {
                Some(code) => format!("{code}: {extra}"),
                None => extra,
            };
            Some(crate::text::cut(&format!("{reason} ({extra})"), MAX_PARSED_TEXT))
        }
        (Some(reason), _) => Some(reason),
        (None, extra) => extra,
    }
}

fn is_fail(obj: &Map<String, Value>) -> bool {
    obj.get("status").and_then(Value::as_str).is_some_and(|s| s.trim().eq_ignore_ascii_case("FAIL"))
}

/// The objects of the array at `key`, at most `MAX_PARSED_ITEMS` of them
/// (those `failed` first when cutting, else in order), and how many there were.
fn bounded_objects<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    failed: impl Fn(&Map<String, Value>) -> bool,
) -> (Vec<&'a Map<String, Value>>, usize) {
    let all: Vec<_> = objects(obj, key).collect();
    let total = all.len();
    if total <= MAX_PARSED_ITEMS {
        return (all, total);
    }
    let mut kept: Vec<_> = all.iter().copied().filter(|o| failed(o)).take(MAX_PARSED_ITEMS).collect();
    let room = MAX_PARSED_ITEMS - kept.len();
    kept.extend(all.iter().copied().filter(|o| !failed(o)).take(room));
    (kept, total)
}

/// A non-empty string, cut to `MAX_PARSED_TEXT`; numbers and booleans are
/// accepted and printed.
fn string(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => cleaned(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(obj: &Map<String, Value>, key: &str) -> Vec<String> {
    let Some(Value::Array(items)) = obj.get(key) else { return Vec::new() };
    items
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => cleaned(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// Every text IMS sends goes through `text::clean` (no control, bidi or
/// zero-width characters), cut to `MAX_PARSED_TEXT`; empty is none.
fn cleaned(raw: &str) -> Option<String> {
    let text = crate::text::clean(&crate::text::cut(raw, MAX_PARSED_TEXT * 2));
    (!text.is_empty()).then(|| crate::text::cut(&text, MAX_PARSED_TEXT))
}

fn objects<'a>(obj: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Map<String, Value>> {
    obj.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_object)
}

fn time(obj: &Map<String, Value>, key: &str) -> Option<Timestamp> {
    string(obj, key).and_then(|s| parse_time(&s))
}

/// Parses both formats IMS sends, as UTC: RFC 3339 and the legacy
/// `04-Jun-2015 18:11:06:586` (milliseconds after a colon). An unreadable
/// time is dropped rather than failing the whole answer.
pub fn parse_time(raw: &str) -> Option<Timestamp> {
    let raw = raw.trim();
    if let Ok(ts) = raw.parse::<Timestamp>() {
        return Some(ts);
    }
    let civil = jiff::fmt::strtime::parse("%d-%b-%Y %H:%M:%S:%f", raw)
        .or_else(|_| jiff::fmt::strtime::parse("%d-%b-%Y %H:%M:%S", raw))
        .and_then(|tm| tm.to_datetime())
        .or_else(|_| raw.parse::<jiff::civil::DateTime>())
        .ok()?;
    civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// `process_percent` is documented as a double; public answers show a
/// 0–1 fraction (`0.2`, and the integer `1` when done). Values above 1 are
/// read as percent. Never more than 100, never negative.
pub fn percent(value: &Value) -> Option<u8> {
    let raw = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().trim_end_matches('%').parse::<f64>().ok()?,
        _ => return None,
    };
    if !raw.is_finite() || raw < 0.0 {
        return None;
    }
    let pct = if raw <= 1.0 { raw * 100.0 } else { raw };
    // The epsilon keeps 0.29 * 100 = 28.999… at 29.
    Some((pct + 1e-6).floor().min(100.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const API_PAGE_EXAMPLE: &str = r#"{
      "status": "SUCCESS",
      "entities": {
        "image_id": "e9e91bff-14b6-4a0b-8377-4ed0813e3360",
        "image_name": "asdfasdfasdfas",
        "process_percent": 0.20,
        "current_task": "CreateImageByInstanceTask",
        "results": [{
          "image_id": "49e9447f-7dff-41e0-8036-f66fe5488c8b",
          "project_id": "089b2f9a3d80d3062f24c00ca4ed5cbd",
          "status": "success"
        }]
      },
      "job_id": "ff8080814dbd65d7014dbe0d84db0013",
      "job_type": "createImageByInstance",
      "begin_time": "04-Jun-2015 18:11:06:586",
      "end_time": "",
      "error_code": null,
      "fail_reason": null
    }"#;

    #[test]
    fn parses_the_api_page_example_verbatim() {
        let job = Job::parse(API_PAGE_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(job.status, Some(JobStatus::Success));
        assert_eq!(job.job_id.as_deref(), Some("ff8080814dbd65d7014dbe0d84db0013"));
        assert_eq!(job.job_type.as_deref(), Some("createImageByInstance"));
        assert_eq!(job.begin_time.unwrap().to_string(), "2015-06-04T18:11:06.586Z");
        assert_eq!(job.end_time, None);
        assert_eq!(job.error_code, None);
        assert_eq!(job.fail_reason, None);
        assert_eq!(job.image_id.as_deref(), Some("e9e91bff-14b6-4a0b-8377-4ed0813e3360"));
        assert_eq!(job.image_name.as_deref(), Some("asdfasdfasdfas"));
        assert_eq!(job.current_task.as_deref(), Some("CreateImageByInstanceTask"));
        assert_eq!(job.progress, Some(20));
        assert_eq!(
            job.results,
            vec![JobResult {
                image_id: Some("49e9447f-7dff-41e0-8036-f66fe5488c8b".into()),
                project_id: Some("089b2f9a3d80d3062f24c00ca4ed5cbd".into()),
                status: Some("SUCCESS".into()),
            }]
        );
    }

    #[test]
    fn parses_a_current_format_answer_with_sub_jobs() {
        let body = json!({
            "status": "RUNNING",
            "job_id": "2c9eb2c08f4a",
            "job_type": "imsImportOvaImageJob",
            "begin_time": "2024-11-06T06:19:43.195Z",
            "end_time": "",
            "entities": {
                "process_percent": 0.24,
                "current_task": "ImportImageTask:ObtainImageInfoTask",
                "results": [],
                "sub_jobs_list": ["sub-a", "sub-b"],
                "sub_jobs_result": [
                    {"status": "SUCCESS", "job_id": "sub-a", "job_type": "imsImportImageJob",
                     "begin_time": "2024-11-06T06:19:44Z", "end_time": "2024-11-06T06:25:00Z",
                     "entities": {"image_id": "img-a", "image_name": "disk-0"}},
                    {"status": "running", "job_id": "sub-b", "job_type": "imsImportDataImageJob",
                     "entities": {}, "error_code": null}
                ]
            }
        });
        let job = Job::from_value(&body).unwrap();
        assert_eq!(job.status, Some(JobStatus::Running));
        assert_eq!(job.progress, Some(24));
        assert_eq!(job.begin_time.unwrap().to_string(), "2024-11-06T06:19:43.195Z");
        assert_eq!(job.sub_job_ids, vec!["sub-a", "sub-b"]);
        assert_eq!(job.sub_jobs.len(), 2);
        assert_eq!(job.sub_jobs[0].image_id.as_deref(), Some("img-a"));
        assert_eq!(job.sub_jobs[0].end_time.unwrap().to_string(), "2024-11-06T06:25:00Z");
        assert_eq!(job.sub_jobs[1].status.as_deref(), Some("RUNNING"));
        assert!(job.results.is_empty());
    }

    #[test]
    fn fail_reason_only_inside_entities_is_surfaced() {
        let body = json!({"status": "FAIL", "error_code": null, "fail_reason": null,
            "entities": {"error_code": "IMG.0014", "error_msg": "OpenStack task failed"}});
        let job = Job::from_value(&body).unwrap();
        assert_eq!(job.error_code.as_deref(), Some("IMG.0014"));
        assert_eq!(job.fail_reason.as_deref(), Some("OpenStack task failed"));
    }

    #[test]
    fn minimal_and_null_answers_parse() {
        let job = Job::parse(br#"{"status":"INIT","entities":null}"#).unwrap();
        assert_eq!(job.status, Some(JobStatus::Init));
        assert_eq!(job.progress, None);
        let job =
            Job::parse(br#"{"status":"SUCCESS","entities":{"image_name":"x","image_id":"y"},"results":7}"#).unwrap();
        assert_eq!(job.image_id.as_deref(), Some("y"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(Job::parse(b"<html>502</html>"), Err(ParseError::NotJson(_))));
        assert_eq!(Job::parse(b"[1,2]"), Err(ParseError::NotAnObject));
        assert_eq!(Job::parse(b"{}"), Err(ParseError::MissingStatus));
        assert_eq!(Job::parse(br#"{"status":"PAUSED"}"#), Err(ParseError::UnknownStatus("PAUSED".into())));
    }

    /// A hostile answer (3,000 sub-jobs, a 2 MB `fail_reason`) parses into
    /// a small Job that keeps the failed sub-job and says how many there were.
    #[test]
    fn a_maximal_answer_is_cut_at_parse_time() {
        let sub_jobs: Vec<Value> = (0..3000)
            .map(|i| {
                json!({"job_id": format!("s{i}"), "status": if i == 2500 { "FAIL" } else { "SUCCESS" },
                "fail_reason": "r".repeat(500)})
            })
            .collect();
        let body = json!({"status": "FAIL", "fail_reason": "é".repeat(1_000_000), "entities": {
            "sub_jobs_result": sub_jobs, "sub_jobs_list": (0..3000).map(|i| format!("s{i}")).collect::<Vec<_>>(),
            "results": (0..150).map(|_| json!({"status": "success"})).collect::<Vec<_>>()}});
        let job = Job::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(job.sub_jobs.len(), MAX_PARSED_ITEMS);
        assert_eq!(job.sub_jobs[0].job_id.as_deref(), Some("s2500"), "the failed one first");
        assert_eq!(job.sub_jobs[1].job_id.as_deref(), Some("s0"));
        assert_eq!((job.sub_jobs_total, job.results_total), (Some(3000), Some(150)));
        assert_eq!(job.sub_job_ids.len(), MAX_PARSED_ITEMS);
        let reason = job.fail_reason.unwrap();
        assert!(reason.len() <= MAX_PARSED_TEXT && reason.ends_with('…'), "{}", reason.len());
        // A small answer keeps its order and has no totals.
        let small = Job::parse(
            br#"{"status":"RUNNING","entities":{"sub_jobs_result":[{"job_id":"a"},{"job_id":"b","status":"FAIL"}]}}"#,
        )
        .unwrap();
        assert_eq!(small.sub_jobs[0].job_id.as_deref(), Some("a"));
        assert_eq!(small.sub_jobs_total, None);
    }

    #[test]
    fn percent_edge_cases() {
        let cases = [
            (json!(0), Some(0)),
            (json!(0.2), Some(20)),
            (json!(0.29), Some(29)),
            (json!(0.999), Some(99)),
            (json!(1), Some(100)),
            (json!(1.0), Some(100)),
            (json!(55), Some(55)),
            (json!(250), Some(100)),
            (json!(-0.5), None),
            (json!("0.5"), Some(50)),
            (json!("80%"), Some(80)),
            (json!(null), None),
            (json!("abc"), None),
        ];
        for (input, want) in cases {
            assert_eq!(percent(&input), want, "process_percent {input}");
        }
    }

    #[test]
    fn time_formats() {
        let cases = [
            ("04-Jun-2015 18:11:06:586", Some("2015-06-04T18:11:06.586Z")),
            ("04-Jun-2015 18:11:06", Some("2015-06-04T18:11:06Z")),
            ("2024-11-06T06:19:43.195Z", Some("2024-11-06T06:19:43.195Z")),
            ("2024-11-06T08:19:43+02:00", Some("2024-11-06T06:19:43Z")),
            ("2024-11-06 06:19:43", Some("2024-11-06T06:19:43Z")),
            ("", None),
            ("yesterday", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time(input).map(|t| t.to_string()).as_deref(), want, "{input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Job::parse(&body);
        }

        #[test]
        fn never_panics_on_json(value in arb_json()) {
            let _ = Job::from_value(&value);
            let _ = Job::from_value(&json!({"status": "RUNNING", "entities": value.clone(),
                "begin_time": value.clone()}));
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            ".{0,20}".prop_map(Value::String),
            prop_oneof![Just("status"), Just("process_percent"), Just("SUCCESS"), Just("04-Jun-2015 18:11:06:586")]
                .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("status".to_string()),
                        Just("entities".to_string()),
                        Just("process_percent".to_string()),
                        Just("sub_jobs_result".to_string()),
                        Just("results".to_string()),
                        Just("begin_time".to_string()),
                        ".{0,8}".prop_map(String::from)
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
