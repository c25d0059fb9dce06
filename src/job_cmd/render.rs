//! How a job looks on a terminal or to a script: the `get` table, the JSON
//! document (the ImageJob status fields), and small text helpers shared by
//! `job wait` and the kubectl plugin.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;

use crate::crd::ImageJobStatus;
use crate::ims::Job;

/// The cloud answer as the ImageJob status shows it, by the controller's
/// own mapping.
pub fn status_of(job: &Job) -> ImageJobStatus {
    let mut status = ImageJobStatus::default();
    crate::status::apply_job(&mut status, job);
    status
}

/// Status fields as pretty JSON with a final newline.
pub fn status_json(status: &ImageJobStatus) -> String {
    let mut text = serde_json::to_string_pretty(status).expect("a status always serialises");
    text.push('\n');
    text
}

/// Text from the cloud made safe for a terminal or a log: control
/// characters (escape sequences, carriage returns, newlines) become spaces.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `1h 2m 3s`, whole seconds.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Elapsed time as a clock: `0:42`, `12:03`, `1:02:03`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The `-o json` document: exactly the ImageJob status fields, built by the
/// same mapping the controller uses, so the two can never drift apart.
pub fn render_json(job: &Job) -> String {
    status_json(&status_of(job))
}

/// Key/value lines, then results and sub-jobs as small tables.
pub fn render_table(job: &Job) -> String {
    let dash = || "-".to_owned();
    let time = |t: Option<Timestamp>| t.map_or_else(dash, |t| t.to_string());
    let mut rows: Vec<(&str, String)> = vec![
        ("Job ID", job.job_id.clone().unwrap_or_else(dash)),
        ("Status", job.status.map_or_else(dash, |s| s.to_string())),
        ("Type", job.job_type.clone().unwrap_or_else(dash)),
        ("Progress", job.progress.map_or_else(dash, |p| format!("{p}%"))),
        ("Begin", time(job.begin_time)),
        ("End", time(job.end_time)),
    ];
    // As in the status: an error code on a SUCCESS answer is no failure.
    let succeeded = job.status == Some(crate::ims::model::JobStatus::Success);
    let failure = |text: &Option<String>| text.clone().filter(|_| !succeeded);
    let optional = [
        ("Current task", job.current_task.clone()),
        ("Image ID", job.image_id.clone()),
        ("Image name", job.image_name.clone()),
        ("Error code", failure(&job.error_code)),
        ("Fail reason", failure(&job.fail_reason)),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let data: Vec<&str> = job.data_image_ids().collect();
    if !data.is_empty() {
        rows.push(("Data images", data.join(", ")));
    }
    if let Some(sub_job) = &job.sub_job_id {
        rows.push(("Sub-job", sub_job.clone()));
    }
    let listed: Vec<&String> = job.sub_jobs.iter().filter_map(|s| s.job_id.as_ref()).collect();
    let unlisted: Vec<&str> = job.sub_job_ids.iter().filter(|id| !listed.contains(id)).map(String::as_str).collect();
    if !unlisted.is_empty() {
        rows.push(("Sub-job IDs", unlisted.join(", ")));
    }
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<14}{}", format!("{key}:"), clean(&value));
    }
    if !job.results.is_empty() {
        out.push_str("\nResults:\n");
        let rows = job.results.iter().map(|r| vec![opt(&r.image_id), opt(&r.project_id), opt(&r.status)]);
        out.push_str(&table(&["IMAGE ID", "PROJECT ID", "STATUS"], rows.collect()));
    }
    if !job.sub_jobs.is_empty() {
        out.push_str("\nSub-jobs:\n");
        let rows = job.sub_jobs.iter().map(|s| {
            let error = match (&s.error_code, &s.fail_reason) {
                (Some(c), Some(r)) => format!("{c}: {r}"),
                (Some(x), None) | (None, Some(x)) => x.clone(),
                (None, None) => dash(),
            };
            vec![
                opt(&s.job_id),
                opt(&s.job_type),
                opt(&s.status),
                time(s.begin_time),
                time(s.end_time),
                opt(&s.image_id),
                error,
            ]
        });
        let headers = ["JOB ID", "TYPE", "STATUS", "BEGIN", "END", "IMAGE ID", "ERROR"];
        out.push_str(&table(&headers, rows.collect()));
    }
    out
}

fn opt(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

/// Columns padded to their widest cell, indented by two spaces; cells are [`clean`]ed.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|c| clean(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const OVA: &str = r#"{
        "status": "FAIL", "job_id": "job-1", "job_type": "imsImportOvaImageJob",
        "begin_time": "04-Jun-2015 18:11:06:586", "end_time": "2024-11-06T06:25:00Z",
        "error_code": "IMG.0014", "fail_reason": "An exception occurred",
        "entities": {
            "process_percent": 0.24, "current_task": "ImportImageTask:ObtainImageInfoTask",
            "results": [{"image_id": "img-r", "status": "success"}],
            "sub_jobs_list": ["sub-a", "sub-b", "sub-c"],
            "sub_jobs_result": [
                {"status": "SUCCESS", "job_id": "sub-a", "job_type": "imsImportImageJob",
                 "begin_time": "2024-11-06T06:19:44Z", "entities": {"image_id": "img-a", "image_name": "disk-0"}},
                {"status": "FAIL", "job_id": "sub-b", "job_type": "imsImportDataImageJob",
                 "error_code": "IMG.1075", "fail_reason": "registration failed", "entities": {}}
            ]
        }}"#;

    #[test]
    fn json_uses_status_field_names() {
        let job = Job::parse(OVA.as_bytes()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&render_json(&job)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "jobStatus": "FAIL", "jobType": "imsImportOvaImageJob",
                "currentTask": "ImportImageTask:ObtainImageInfoTask", "progress": 24,
                "imageId": "img-a", "imageName": "disk-0",
                "images": [{"id": "img-a", "name": "disk-0", "kind": "system", "subJobId": "sub-a"}],
                "phase": "Failed", "beginTime": "2015-06-04T18:11:06Z", "endTime": "2024-11-06T06:25:00Z",
                "errorCode": "IMG.0014", "failReason": "An exception occurred",
                "results": [{"imageId": "img-r", "status": "SUCCESS"}],
                "subJobs": [
                    {"jobId": "sub-a", "jobType": "imsImportImageJob", "status": "SUCCESS",
                     "beginTime": "2024-11-06T06:19:44Z", "imageId": "img-a", "imageName": "disk-0"},
                    {"jobId": "sub-b", "jobType": "imsImportDataImageJob", "status": "FAIL",
                     "errorCode": "IMG.1075", "failReason": "registration failed"}
                ],
                "subJobIds": ["sub-a", "sub-b", "sub-c"]
            })
        );
        let minimal = Job::parse(br#"{"status":"INIT"}"#).unwrap();
        assert_eq!(render_json(&minimal), "{\n  \"phase\": \"Pending\",\n  \"jobStatus\": \"INIT\"\n}\n");
    }

    #[test]
    fn table_is_readable() {
        let text = render_table(&Job::parse(OVA.as_bytes()).unwrap());
        let expected = "\
Job ID:       job-1
Status:       FAIL
Type:         imsImportOvaImageJob
Progress:     24%
Begin:        2015-06-04T18:11:06.586Z
End:          2024-11-06T06:25:00Z
Current task: ImportImageTask:ObtainImageInfoTask
Image ID:     img-a
Image name:   disk-0
Error code:   IMG.0014
Fail reason:  An exception occurred
Sub-job IDs:  sub-c

Results:
  IMAGE ID  PROJECT ID  STATUS
  img-r     -           SUCCESS

Sub-jobs:
  JOB ID  TYPE                   STATUS   BEGIN                 END  IMAGE ID  ERROR
  sub-a   imsImportImageJob      SUCCESS  2024-11-06T06:19:44Z  -    img-a     -
  sub-b   imsImportDataImageJob  FAIL     -                     -    -         IMG.1075: registration failed
";
        assert_eq!(text, expected);
        let minimal = render_table(&Job::parse(br#"{"status":"RUNNING"}"#).unwrap());
        assert!(minimal.starts_with("Job ID:       -\nStatus:       RUNNING\n"), "{minimal}");
    }

    #[test]
    fn text_helpers() {
        assert_eq!(clean("Task\u{1b}[2J\r\nnext"), "Task [2J  next");
        assert_eq!(human(Duration::from_millis(62_900)), "1m 2s");
        assert_eq!(clock(Duration::from_secs(42)), "0:42");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
