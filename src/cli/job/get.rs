//! `imagejob-operator job get`: query one IMS job once and print it.
//!
//! Uses the same client as the controller. Exit status 0 whenever the
//! query worked, whatever the job's state; 4 for bad input, missing
//! credentials (nothing is sent) or an HTTP client that cannot be built; 1
//! with every detail of a failed query
//! (HTTP status, cloud code, message, request ID on stderr).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use super::{JobArgs, render_json, render_table};
use crate::cli::render::clean;
use crate::ims::{Credentials, ErrorKind, ImsError, JobSource, JobTarget};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Query one IMS job. Credentials come from OTC_ACCESS_KEY/OTC_SECRET_KEY
/// (optional OTC_SECURITY_TOKEN) or OTC_USERNAME/OTC_PASSWORD/OTC_DOMAIN_NAME.
#[derive(Clone, Debug, clap::Args)]
pub struct JobGetArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Timeout of each HTTP request, e.g. 30s or 1m.
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

/// Runs the command: the job on stdout, or every detail of the failure on
/// stderr and a non-zero exit code.
pub async fn run(args: JobGetArgs) -> ExitCode {
    let (target, creds, client) = match args.job.prepare(args.timeout) {
        Ok(ready) => ready,
        Err(exit) => return exit.into(),
    };
    match fetch_and_render(&client, &target, args.output, &creds).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprint!("{}", describe_error(&err, &target));
            ExitCode::FAILURE
        }
    }
}

/// The whole command minus the environment and stdout, for tests.
pub async fn fetch_and_render(
    source: &impl JobSource,
    target: &JobTarget,
    output: OutputFormat,
    creds: &Credentials,
) -> Result<String, ImsError> {
    let job = source.get_job(target, creds).await?;
    Ok(match output {
        OutputFormat::Table => render_table(&job),
        OutputFormat::Json => render_json(&job),
    })
}

/// The stderr lines for a failed query: every detail the cloud gave, and
/// what the person can do about it.
pub fn describe_error(err: &ImsError, target: &JobTarget) -> String {
    let mut out = format!("error: querying job {} in project {} failed\n", target.job_id, target.project_id);
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
            let _ = writeln!(out, "  {:<12} {}", format!("{name}:"), clean(&value));
        }
    }
    if !any {
        let _ = writeln!(out, "  {}", clean(&err.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::job::render::tests::OVA;
    use crate::ims::ImsClient;
    use crate::ims::testing::{FakeCloud, FakeReply};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: JobGetArgs,
    }

    fn args(extra: &[&str]) -> JobGetArgs {
        let base = ["x", "--project-id", "proj", "--job-id", "job-1", "--region", "eu-nl"];
        Cli::try_parse_from(base.iter().chain(extra)).unwrap().args
    }

    #[test]
    fn flags_and_defaults() {
        let a = args(&[]);
        assert_eq!(a.output, OutputFormat::Table);
        assert_eq!(a.timeout, Duration::from_secs(30));
        let t = a.job.target().unwrap();
        assert_eq!(t.ims_endpoint, "https://ims.eu-nl.otc.t-systems.com");
        assert_eq!(t.iam_endpoint, "https://iam.eu-nl.otc.t-systems.com");
        let a = args(&["-o", "json", "--timeout", "2m", "--ims-endpoint", "http://127.0.0.1:1"]);
        assert_eq!((a.output, a.timeout), (OutputFormat::Json, Duration::from_secs(120)));
        assert_eq!(a.job.target().unwrap().ims_endpoint, "http://127.0.0.1:1");
        assert!(Cli::try_parse_from(["x", "--project-id", "p", "--job-id", "j", "-o", "yaml"]).is_err());
    }

    #[tokio::test]
    async fn queries_the_configured_endpoint() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(200, OVA));
        let a = args(&["-o", "json", "--ims-endpoint", &cloud.url()]);
        let creds = Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None };
        let client = ImsClient::new(Duration::from_secs(5));
        let text = fetch_and_render(&client, &a.job.target().unwrap(), a.output, &creds).await.unwrap();
        assert!(text.contains("\"jobStatus\": \"FAIL\""));
        assert_eq!(cloud.last_ims_request().path, "/v1/cloudimages/job/job-1", "auto: the progress API");
        assert_eq!(a.job.endpoints.ims_job_api, crate::ims::JobApi::Auto, "the default");
        let b = args(&["--ims-endpoint", &cloud.url(), "--ims-job-api", "status"]);
        let client = ImsClient::new(Duration::from_secs(5)).with_job_api(b.job.endpoints.ims_job_api);
        fetch_and_render(&client, &b.job.target().unwrap(), b.output, &creds).await.unwrap();
        assert_eq!(cloud.last_ims_request().path, "/v1/proj/jobs/job-1");
    }

    #[tokio::test]
    async fn errors_show_status_code_message_and_request_id() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(
            FakeReply::json(403, r#"{"error":{"code":"IMG.0026","message":"You do not have permission"}}"#)
                .with_header("x-request-id", "8f1c"),
        );
        let a = args(&["--ims-endpoint", &cloud.url()]);
        let t = a.job.target().unwrap();
        let creds = Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None };
        let err = fetch_and_render(&ImsClient::new(Duration::from_secs(5)), &t, a.output, &creds).await.unwrap_err();
        assert_eq!(
            describe_error(&err, &t),
            "error: querying job job-1 in project proj failed\n  \
             HTTP status: 403 Forbidden\n  \
             error code:  IMG.0026\n  \
             message:     You do not have permission\n  \
             request id:  8f1c\n  \
             hint: the credentials may not read IMS jobs in this project\n"
        );
        let timeout = ImsError::Timeout { service: crate::ims::error::Service::Ims };
        assert!(describe_error(&timeout, &t).contains("  IMS did not answer in time\n  hint: a temporary"));
    }
}
