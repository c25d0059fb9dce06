//! `imagejob-operator job get`: query one IMS job once and print it.
//!
//! Uses the same client as the controller. Exit status 0 whenever the
//! query worked, whatever the job's state; an error (HTTP status, cloud
//! code, message, request ID on stderr) otherwise.

use std::fmt::Write as _;
use std::time::Duration;

use crate::crd::ImageJobStatus;
use jiff::Timestamp;

use crate::ims::{Credentials, ErrorKind, ImsClient, ImsError, Job, JobSource, JobTarget, resolve_endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Query one IMS job. Credentials come from OTC_ACCESS_KEY/OTC_SECRET_KEY
/// (optional OTC_SECURITY_TOKEN) or OTC_USERNAME/OTC_PASSWORD/OTC_DOMAIN_NAME.
#[derive(Clone, Debug, clap::Args)]
pub struct JobGetArgs {
    /// Project ID the job belongs to.
    #[arg(long, env = "OTC_PROJECT_ID")]
    pub project_id: String,
    /// The asynchronous job ID (as returned by the job-creating call).
    #[arg(long)]
    pub job_id: String,
    /// Region, substituted for {region} in the endpoints.
    #[arg(long, env = "OTC_REGION", default_value = "eu-de")]
    pub region: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// IMS base URL; {region} is replaced.
    #[arg(long, env = "IMS_ENDPOINT", default_value = "https://ims.{region}.otc.t-systems.com")]
    pub ims_endpoint: String,
    /// IAM base URL for password authentication; {region} is replaced.
    #[arg(long, env = "IAM_ENDPOINT", default_value = "https://iam.{region}.otc.t-systems.com")]
    pub iam_endpoint: String,
    /// Timeout of each HTTP request, e.g. 30s or 1m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl JobGetArgs {
    pub fn target(&self) -> JobTarget {
        JobTarget {
            ims_endpoint: resolve_endpoint(&self.ims_endpoint, &self.region),
            iam_endpoint: resolve_endpoint(&self.iam_endpoint, &self.region),
            project_id: self.project_id.trim().to_owned(),
            job_id: self.job_id.trim().to_owned(),
        }
    }
}

/// Runs the command: the job on stdout, or every detail of the failure on
/// stderr and a non-zero exit code.
pub async fn run(args: JobGetArgs) -> std::process::ExitCode {
    match query(&args).await {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprint!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn query(args: &JobGetArgs) -> Result<String, String> {
    let creds = Credentials::from_env().map_err(|e| format!("error: {e}\n"))?;
    let client = ImsClient::try_new(args.timeout).map_err(|e| format!("error: {e}\n"))?;
    fetch_and_render(&client, args, &creds).await.map_err(|err| describe_error(&err, args))
}

/// The whole command minus the environment and stdout, for tests.
pub async fn fetch_and_render(
    source: &impl JobSource,
    args: &JobGetArgs,
    creds: &Credentials,
) -> Result<String, ImsError> {
    let job = source.get_job(&args.target(), creds).await?;
    Ok(match args.output {
        OutputFormat::Table => render_table(&job),
        OutputFormat::Json => render_json(&job),
    })
}

/// The stderr lines for a failed query: every detail the cloud gave, and
/// what the person can do about it.
pub fn describe_error(err: &ImsError, args: &JobGetArgs) -> String {
    let mut out = format!("error: querying job {} in project {} failed\n", args.job_id, args.project_id);
    let status = err.status().map(|s| {
        let reason = reqwest::StatusCode::from_u16(s).ok().and_then(|c| c.canonical_reason());
        format!("{s} {}", reason.unwrap_or("")).trim_end().to_owned()
    });
    let rows = [
        ("HTTP status", status),
        ("error code", err.code().map(str::to_owned)),
        ("message", err.message().map(str::to_owned)),
        ("request id", err.request_id().map(str::to_owned)),
    ];
    let mut any = false;
    for (name, value) in rows {
        if let Some(value) = value {
            any = true;
            let _ = writeln!(out, "  {:<12} {value}", format!("{name}:"));
        }
    }
    if !any {
        let _ = writeln!(out, "  {err}");
    }
    let _ = writeln!(out, "  hint: {}", hint(err.kind()));
    out
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transient => "a temporary failure (network, throttling or service error); try again later",
        ErrorKind::AuthenticationFailed => {
            "the credentials were rejected; check OTC_ACCESS_KEY/OTC_SECRET_KEY \
             or OTC_USERNAME/OTC_PASSWORD/OTC_DOMAIN_NAME, and the system clock"
        }
        ErrorKind::Forbidden => "the credentials may not read IMS jobs in this project",
        ErrorKind::JobNotFound => "no such job in this project and region",
        ErrorKind::BadRequest => "check the project ID, job ID, region and endpoints",
    }
}

/// The `-o json` document: exactly the ImageJob status fields, built by the
/// same mapping the controller uses, so the two can never drift apart.
pub fn render_json(job: &Job) -> String {
    let mut status = ImageJobStatus::default();
    crate::status::apply_job(&mut status, job);
    let mut text = serde_json::to_string_pretty(&status).expect("a status always serialises");
    text.push('\n');
    text
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
    let optional = [
        ("Current task", &job.current_task),
        ("Image ID", &job.image_id),
        ("Image name", &job.image_name),
        ("Error code", &job.error_code),
        ("Fail reason", &job.fail_reason),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
    let listed: Vec<&String> = job.sub_jobs.iter().filter_map(|s| s.job_id.as_ref()).collect();
    let unlisted: Vec<&str> = job.sub_job_ids.iter().filter(|id| !listed.contains(id)).map(String::as_str).collect();
    if !unlisted.is_empty() {
        rows.push(("Sub-job IDs", unlisted.join(", ")));
    }
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<14}{value}", format!("{key}:"));
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

/// Columns padded to their widest cell, indented by two spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
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
mod tests {
    use super::*;
    use crate::ims::testing::{FakeCloud, FakeReply};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: JobGetArgs,
    }

    const OVA: &str = r#"{
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

    fn args(extra: &[&str]) -> JobGetArgs {
        let base = ["x", "--project-id", "proj", "--job-id", "job-1", "--region", "eu-nl"];
        Cli::try_parse_from(base.iter().chain(extra)).unwrap().args
    }

    #[test]
    fn flags_and_defaults() {
        let a = args(&[]);
        assert_eq!(a.output, OutputFormat::Table);
        assert_eq!(a.timeout, Duration::from_secs(30));
        let t = a.target();
        assert_eq!(t.ims_endpoint, "https://ims.eu-nl.otc.t-systems.com");
        assert_eq!(t.iam_endpoint, "https://iam.eu-nl.otc.t-systems.com");
        let a = args(&["-o", "json", "--timeout", "2m", "--ims-endpoint", "http://127.0.0.1:1"]);
        assert_eq!((a.output, a.timeout), (OutputFormat::Json, Duration::from_secs(120)));
        assert_eq!(a.target().ims_endpoint, "http://127.0.0.1:1");
        assert!(Cli::try_parse_from(["x", "--project-id", "p", "--job-id", "j", "-o", "yaml"]).is_err());
    }

    #[test]
    fn json_uses_status_field_names() {
        let job = Job::parse(OVA.as_bytes()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&render_json(&job)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "jobStatus": "FAIL", "jobType": "imsImportOvaImageJob",
                "currentTask": "ImportImageTask:ObtainImageInfoTask", "progress": 24,
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

    #[tokio::test]
    async fn queries_the_configured_endpoint() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(200, OVA));
        let a = args(&["-o", "json", "--ims-endpoint", &cloud.url()]);
        let creds = Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None };
        let text = fetch_and_render(&ImsClient::new(Duration::from_secs(5)), &a, &creds).await.unwrap();
        assert!(text.contains("\"jobStatus\": \"FAIL\""));
        assert_eq!(cloud.last_ims_request().path, "/v1/proj/jobs/job-1");
    }

    #[tokio::test]
    async fn errors_show_status_code_message_and_request_id() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(
            FakeReply::json(403, r#"{"error":{"code":"IMG.0030","message":"The project ID or token is invalid"}}"#)
                .with_header("x-request-id", "8f1c"),
        );
        let a = args(&["--ims-endpoint", &cloud.url()]);
        let creds = Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None };
        let err = fetch_and_render(&ImsClient::new(Duration::from_secs(5)), &a, &creds).await.unwrap_err();
        assert_eq!(
            describe_error(&err, &a),
            "error: querying job job-1 in project proj failed\n  \
             HTTP status: 403 Forbidden\n  \
             error code:  IMG.0030\n  \
             message:     The project ID or token is invalid\n  \
             request id:  8f1c\n  \
             hint: the credentials may not read IMS jobs in this project\n"
        );
        let timeout = ImsError::Timeout { service: crate::ims::error::Service::Ims };
        assert!(describe_error(&timeout, &a).contains("  IMS did not answer in time\n  hint: a temporary"));
    }
}
