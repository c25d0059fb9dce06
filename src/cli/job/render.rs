//! What `job get|wait` make of an IMS answer: the status by the
//! controller's own mapping, the `-o json` document, and `get`'s table
//! (the sheet in `cli/render.rs`, drawn from that status).

use crate::cli::render::{Sheet, status_json};
use crate::crd::ImageJobStatus;
use crate::ims::Job;
use crate::ims::model::JobStatus;

/// The cloud answer as the ImageJob status shows it, by the controller's
/// own mapping.
pub fn status_of(job: &Job) -> ImageJobStatus {
    let mut status = ImageJobStatus::default();
    crate::status::apply_job(&mut status, job);
    status
}

/// The `-o json` document: exactly the ImageJob status fields, built by the
/// same mapping the controller uses, so the two can never drift apart.
pub fn render_json(job: &Job) -> String {
    status_json(&status_of(job))
}

/// Key/value lines, then results and sub-jobs as small tables.
pub fn render_table(job: &Job) -> String {
    Sheet::new(&as_answered(job)).table(job.job_id.as_deref(), job.sub_job_id.as_deref())
}

/// The status, but where the mapping reads more into an answer than IMS
/// said, the table shows what IMS said: no status is `-` (not `INIT`), a
/// SUCCESS keeps the progress it reported (not 100), and an error comes
/// only from the job itself (not from its first failed sub-job).
fn as_answered(job: &Job) -> ImageJobStatus {
    let succeeded = job.status == Some(JobStatus::Success);
    let failure = |text: &Option<String>| text.clone().filter(|_| !succeeded);
    ImageJobStatus {
        job_status: job.status.map(|s| s.to_string()),
        progress: job.progress.map(i32::from),
        error_code: failure(&job.error_code),
        fail_reason: failure(&job.fail_reason),
        ..status_of(job)
    }
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
    fn table_shows_what_ims_said_where_the_status_reads_more() {
        let done = r#"{"status":"SUCCESS","error_code":"IMG.0001","entities":{"process_percent":0.2}}"#;
        let text = render_table(&Job::parse(done.as_bytes()).unwrap());
        assert!(text.contains("Progress:     20%\n") && !text.contains("IMG.0001"), "{text}");
        let sub_only = r#"{"status":"FAIL","entities":{"sub_jobs_result":[
            {"status":"FAIL","job_id":"s","error_code":"IMG.1075","fail_reason":"no"}]}}"#;
        let text = render_table(&Job::parse(sub_only.as_bytes()).unwrap());
        assert!(!text.contains("Error code:") && text.contains("IMG.1075: no"), "{text}");
        let bare = render_table(&Job::default());
        assert!(bare.starts_with("Job ID:       -\nStatus:       -\n"), "{bare}");
    }
}
