//! `imagejob-operator job get|wait`: one IMS job, from a terminal or a CI
//! step, with the controller's client, credentials and status mapping.
//!
//! Exit codes (docs/contract.md): 0 success, 1 job failed (or, for `get`, the
//! query failed), 2 timeout, 3 stalled (rejected credentials, forbidden,
//! unknown job), 4 usage error (bad flags or input, missing credentials, an
//! HTTP client that cannot be built).

pub mod get;
pub mod identity;
pub mod render;
pub mod view;
pub mod wait;

use std::time::Duration;

use crate::cli::Exit;
use crate::config::{DEFAULT_REGION, EndpointArgs};
use crate::ims::{Credentials, ImsClient, JobTarget, target};

pub use get::JobGetArgs;
pub use render::{render_json, render_table};
pub use wait::JobWaitArgs;

/// Which job, where: the flags `job get` and `job wait` share.
#[derive(Clone, Debug, clap::Args)]
pub struct JobArgs {
    /// Project ID the job belongs to.
    #[arg(long, env = "OTC_PROJECT_ID")]
    pub project_id: String,
    /// The asynchronous job ID (as returned by the job-creating call).
    #[arg(long)]
    pub job_id: String,
    /// Region, substituted for {region} in the endpoints.
    #[arg(long, env = "OTC_REGION", default_value = DEFAULT_REGION)]
    pub region: String,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Allow plain http:// endpoints on hosts other than loopback
    /// (credentials would cross the network unencrypted).
    #[arg(long, env = "ALLOW_INSECURE_HTTP", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_http: bool,
    /// An ID token file, the node's keys, an agency (`identity`).
    #[command(flatten)]
    pub identity: identity::IdentityArgs,
}

impl JobArgs {
    /// The job to query, once every input passed the operator's checks:
    /// nothing is sent anywhere before.
    pub fn target(&self) -> Result<JobTarget, String> {
        let (project_id, job_id, region) = (self.project_id.trim(), self.job_id.trim(), self.region.trim());
        target::resolve(&self.endpoints.with_insecure(self.allow_insecure_http), region, project_id, job_id)
    }

    /// The target, the environment's credentials and the HTTP client (with
    /// this request timeout), or the error printed and exit 4, the same for
    /// `get` and `wait`: nothing is sent before all three are ready.
    pub fn prepare(&self, request_timeout: Duration) -> Result<(JobTarget, Credentials, ImsClient), Exit> {
        let from_env = || Credentials::from_env().map_err(|e| e.to_string());
        let ready = self.target().and_then(|t| Ok((t, self.identity.credentials(from_env)?)));
        let client = |(t, c)| match self.endpoints.client(request_timeout) {
            Ok(client) => Ok((t, c, client)),
            Err(e) => Err(e.to_string()),
        };
        ready.and_then(client).map_err(|message| {
            eprintln!("error: {message}");
            Exit::Usage
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: JobArgs,
    }

    fn parse(extra: &[&str]) -> JobArgs {
        parse_ids("proj", "job-1", extra)
    }

    fn parse_ids(project: &str, job: &str, extra: &[&str]) -> JobArgs {
        let base = ["x", "--project-id", project, "--job-id", job];
        Cli::try_parse_from(base.iter().chain(extra)).unwrap().args
    }

    #[test]
    fn target_resolves_the_region() {
        let t = parse(&["--region", "eu-nl"]).target().unwrap();
        assert_eq!(t.ims_endpoint, "https://ims.eu-nl.otc.t-systems.com");
        assert_eq!(t.iam_endpoint, "https://iam.eu-nl.otc.t-systems.com");
        assert_eq!((t.project_id.as_str(), t.job_id.as_str()), ("proj", "job-1"));
        assert_eq!(parse(&[]).target().unwrap().ims_endpoint, "https://ims.eu-de.otc.t-systems.com");
    }

    #[test]
    fn target_refuses_what_the_operator_refuses() {
        let err = parse(&["--region", "attacker.example/"]).target().unwrap_err();
        assert!(err.contains("invalid region"), "{err}");
        assert!(parse_ids("proj", "..", &[]).target().unwrap_err().contains("invalid job ID"));
        assert!(parse_ids("../x", "job-1", &[]).target().unwrap_err().contains("invalid project ID"));
        let insecure = ["--ims-endpoint", "http://ims.{region}.example"];
        assert!(parse(&insecure).target().unwrap_err().contains("--allow-insecure-http"));
        let allowed = parse(&[&insecure[..], &["--allow-insecure-http"]].concat()).target().unwrap();
        assert_eq!(allowed.ims_endpoint, "http://ims.eu-de.example");
        assert!(parse(&["--iam-endpoint", "http://iam.example"]).target().is_err(), "IAM is checked too");
    }
}
