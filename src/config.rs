//! Configuration of `imagejob-operator run` (flags, then environment;
//! `docs/contract.md` lists them).

use std::net::SocketAddr;
use std::time::Duration;

use crate::ims::JobApi;
use crate::ims::target::Endpoints;
pub use crate::telemetry::LogFormat;

/// Region used when none is given (`--default-region` of `run`, `--region` of `job`).
pub const DEFAULT_REGION: &str = "eu-de";

/// The cloud's endpoints, shared by `run`, `job get` and `job wait`.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct EndpointArgs {
    /// IMS base URL; `{region}` is replaced by the region.
    #[arg(long, env = "IMS_ENDPOINT", default_value = "https://ims.{region}.otc.t-systems.com")]
    pub ims_endpoint: String,

    /// IAM base URL for password authentication; `{region}` is replaced.
    #[arg(long, env = "IAM_ENDPOINT", default_value = "https://iam.{region}.otc.t-systems.com")]
    pub iam_endpoint: String,

    /// Which IMS API to poll: `progress` (`GET /v1/cloudimages/job/{job_id}`, with
    /// progress), `status` (`GET /v1/{project_id}/jobs/{job_id}`), or `auto`: the
    /// progress API, and the status API where an endpoint lacks it.
    #[arg(long, env = "IMS_JOB_API", value_enum, default_value_t = JobApi::Auto)]
    pub ims_job_api: JobApi,

    /// Extra CA certificates (a PEM file, one or more) trusted for IMS, IAM
    /// and the metadata service on top of the built-in roots, e.g. a private
    /// cloud's or a TLS-inspecting proxy's CA. Never replaces the built-in roots.
    #[arg(long, env = "OTC_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// `--ims-endpoint` and `--iam-endpoint`; `{region}` is replaced by the ImageJob's region.
    #[command(flatten)]
    pub endpoints: EndpointArgs,

    /// Region used when an ImageJob names none.
    #[arg(long, env = "OTC_REGION", default_value = DEFAULT_REGION)]
    pub default_region: String,

    /// Poll interval while a job is INIT or RUNNING, unless the ImageJob sets one.
    #[arg(long, env = "POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Take a Lease before reconciling, so only one replica polls and writes.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "LEADER_ELECTION_LEASE", default_value = "imagejob-operator")]
    pub leader_election_lease: String,

    /// Only watch ImageJobs (and Secrets) in this namespace.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Only watch ImageJobs with these labels (e.g. `shard=a`).
    #[arg(long, env = "WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,

    /// Outbound IMS requests per second, per endpoint and project (token bucket).
    #[arg(long, env = "IMS_RATE_LIMIT", default_value_t = 10.0)]
    pub ims_rate_limit: f64,

    /// Burst size of the outbound token bucket.
    #[arg(long, env = "IMS_RATE_BURST", default_value_t = 20)]
    pub ims_rate_burst: u32,

    /// Timeout of one IMS or IAM request.
    #[arg(long, env = "IMS_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub ims_timeout: Duration,

    /// How many ImageJobs are reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export results to `spec.outputConfigMapRef` ConfigMaps. Off, the
    /// operator reads, caches and writes no ConfigMap at all.
    #[arg(long, env = "OUTPUTS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub outputs: bool,

    /// Use a credentials Secret only when it is labelled
    /// `ims.otc.io/credentials: "true"` (the chart turns this on).
    #[arg(long, env = "REQUIRE_CREDENTIALS_LABEL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub require_credentials_label: bool,

    /// Accept plain `http://` IMS/IAM endpoints on hosts other than loopback
    /// (credentials and tokens then cross the network unencrypted).
    #[arg(long, env = "ALLOW_INSECURE_HTTP", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_http: bool,

    /// Workload identity: the IAM identity provider (protocol oidc) that
    /// trusts this cluster's ServiceAccount tokens (`spec.serviceAccountRef`).
    #[arg(long, env = "OIDC_IDP_ID")]
    pub oidc_idp_id: Option<String>,

    /// Workload identity: the audience (the provider's `client_id`) of the
    /// ServiceAccount tokens the operator requests.
    #[arg(long, env = "OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// What ImageJobs that name no credentials use: `metadata`, the node's
    /// temporary keys (every Pod on the node shares them). Off by default.
    #[arg(long, env = "DEFAULT_CREDENTIALS", value_enum)]
    pub default_credentials: Option<DefaultCredentials>,

    /// The metadata service (`--default-credentials metadata`).
    #[arg(long, env = "METADATA_ENDPOINT", default_value = crate::ims::metadata::DEFAULT_ENDPOINT)]
    pub metadata_endpoint: String,

    /// Per-region IMS and IAM endpoints, e.g.
    /// `eu-ch2=https://ims.example,https://iam.example;eu-nl=…`.
    #[arg(long, env = "REGION_ENDPOINTS", default_value = "", value_parser = crate::regions::parse_region_endpoints)]
    pub region_endpoints: crate::regions::RegionEndpoints,

    /// Read credentials Secrets (`spec.credentialsRef`). true: in every
    /// namespace in scope, changes seen at once by a metadata watch.
    /// namespaced: only where a team grants it (a RoleBinding), no watch,
    /// each Secret read again after a minute. false: no Secret at all (every
    /// ImageJob on workload identity or the node's keys).
    #[arg(long, env = "READ_SECRETS", value_enum, default_value = "true", num_args = 0..=1, default_missing_value = "true")]
    pub read_secrets: ReadSecrets,

    /// Regions an ImageJob may name (comma-separated); default `eu-de,eu-nl`
    /// plus every region of `--region-endpoints`.
    #[arg(long, env = "ALLOWED_REGIONS", value_delimiter = ',')]
    pub allowed_regions: Option<Vec<String>>,
}

/// `--read-secrets`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSecrets {
    /// Every namespace in scope (cluster-wide Secret read, a watch).
    #[value(name = "true")]
    Watched,
    /// Only namespaces that bind the chart's Secret-reader ClusterRole.
    Namespaced,
    /// No Secret at all.
    #[value(name = "false")]
    Off,
}

/// `--default-credentials`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultCredentials {
    /// The node's temporary keys from the metadata service.
    Metadata,
}

impl RunArgs {
    /// Refuses at start what would fail later or leak: nonsense numbers and
    /// plain-HTTP endpoints off this machine (unless allowed).
    pub fn validate(&self) -> Result<(), String> {
        if !self.ims_rate_limit.is_finite() || self.ims_rate_limit <= 0.0 {
            return Err(format!(
                "--ims-rate-limit must be a positive number of requests per second, not {}",
                self.ims_rate_limit
            ));
        }
        if self.ims_rate_burst == 0 {
            return Err("--ims-rate-burst must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.ims_timeout.is_zero() {
            return Err("--ims-timeout must be longer than zero".into());
        }
        if self.poll_interval < Duration::from_secs(1) || self.poll_interval > Duration::from_secs(3600) {
            return Err(format!("--poll-interval must be between 1s and 1h, not {:?}", self.poll_interval));
        }
        // The default region and both endpoints in it, by the rules every
        // ImageJob and `job get`/`job wait` meet (`ims::target`).
        self.endpoints().resolve(&self.default_region)?;
        self.region_endpoints.check(self.allow_insecure_http)?;
        if let Some(refusal) = crate::regions::refuse(&self.default_region, &self.allowed_regions()) {
            return Err(format!("--default-region: {refusal}"));
        }
        self.endpoints.ca_bundle()?;
        self.validate_identity()
    }

    /// The endpoint templates and whether plain `http://` is allowed.
    pub fn endpoints(&self) -> Endpoints<'_> {
        self.endpoints.with_insecure(self.allow_insecure_http)
    }

    /// Workload identity needs both of its flags; the metadata endpoint is
    /// plain http by nature, so its default is allowed and only another one
    /// is checked like the cloud's endpoints.
    fn validate_identity(&self) -> Result<(), String> {
        if self.oidc_idp_id.is_some() != self.oidc_audience.is_some() {
            return Err("--oidc-idp-id and --oidc-audience go together (workload identity needs both)".into());
        }
        if self.metadata_endpoint.trim_end_matches('/') != crate::ims::metadata::DEFAULT_ENDPOINT {
            crate::ims::target::endpoint("--metadata-endpoint", &self.metadata_endpoint, self.allow_insecure_http)?;
        }
        Ok(())
    }

    /// `--allowed-regions`, or its default.
    /// Without `--allowed-regions`, the operator's own `--default-region` is
    /// allowed too: it is configuration, not a tenant's choice.
    pub fn allowed_regions(&self) -> Vec<String> {
        let mut allowed = crate::regions::allowed(self.allowed_regions.as_deref(), &self.region_endpoints);
        if self.allowed_regions.is_none() && !allowed.contains(&self.default_region) {
            allowed.push(self.default_region.clone());
        }
        allowed
    }
}

impl EndpointArgs {
    /// The templates as `ims::target` checks them.
    pub fn with_insecure(&self, allow_insecure_http: bool) -> Endpoints<'_> {
        Endpoints { ims: &self.ims_endpoint, iam: &self.iam_endpoint, allow_insecure_http }
    }

    /// `--ca-file`, read and parsed (refused when unreadable or holding no
    /// certificate).
    pub fn ca_bundle(&self) -> Result<Option<CaBundle>, String> {
        self.ca_file.as_deref().map(CaBundle::load).transpose()
    }

    /// The IMS client for these endpoints: `--ims-job-api`, `--ca-file`,
    /// `timeout` per request.
    pub fn client(&self, timeout: Duration) -> Result<crate::ims::ImsClient, crate::ims::ImsError> {
        let ca = self.ca_bundle().map_err(|detail| crate::ims::ImsError::InvalidRequest { detail })?;
        Ok(crate::ims::ImsClient::try_with_ca(timeout, ca.as_ref())?.with_job_api(self.ims_job_api))
    }
}

pub use crate::ims::CaBundle;

/// Parses `10s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{raw:?} is not a duration like 30s or 2m: {e}"))
}

/// `spec.pollInterval` as a duration, within the 1s–1h the CRD allows.
pub fn poll_interval(spec: Option<&str>, default: Duration) -> Duration {
    spec.and_then(|s| parse_duration(s).ok())
        .unwrap_or(default)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("banana").is_err());
    }

    /// `run`'s arguments from a command line, for tests across the crate.
    pub(crate) fn args(extra: &[&str]) -> RunArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv = std::iter::once("op").chain(extra.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().run
    }

    #[test]
    fn validation_refuses_nonsense_at_start() {
        let cases: [(&[&str], Option<&str>); 11] = [
            (&[], None),
            (&["--ims-rate-limit", "NaN"], Some("--ims-rate-limit")),
            (&["--ims-rate-limit", "inf"], Some("--ims-rate-limit")),
            (&["--ims-rate-limit", "0"], Some("--ims-rate-limit")),
            (&["--ims-rate-limit", "0.5"], None),
            (&["--ims-rate-burst", "0"], Some("--ims-rate-burst")),
            (&["--concurrency", "0"], Some("--concurrency")),
            (&["--ims-endpoint", "http://127.0.0.1:9999"], None),
            (&["--ims-endpoint", "http://ims.{region}.example.com"], Some("refusing plain http://")),
            (&["--ims-endpoint", "http://ims.example.com", "--allow-insecure-http"], None),
            (&["--iam-endpoint", "ftp://iam.example.com"], Some("scheme")),
        ];
        for (argv, want) in cases {
            let got = args(argv).validate();
            match want {
                None => assert_eq!(got, Ok(()), "{argv:?}"),
                Some(text) => assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{argv:?}: {got:?}"),
            }
        }
    }

    /// The identity flags: workload identity needs both; the metadata
    /// endpoint's link-local default is the one plain-http host allowed.
    #[test]
    fn identity_and_region_flags_are_checked_at_start() {
        let cases: [(&[&str], Option<&str>); 8] = [
            (&["--oidc-idp-id", "k8s", "--oidc-audience", "iam"], None),
            (&["--oidc-idp-id", "k8s"], Some("go together")),
            (&["--default-credentials", "metadata"], None),
            (&["--default-credentials", "metadata", "--metadata-endpoint", "http://169.254.169.254/"], None),
            (&["--metadata-endpoint", "http://meta.example"], Some("refusing plain http://")),
            (&["--metadata-endpoint", "http://127.0.0.1:9"], None),
            (&["--region-endpoints", "eu-ch2=http://ims.example,https://iam.example"], Some("eu-ch2")),
            (&["--region-endpoints", "x=https://a"], Some("IMS,IAM")),
        ];
        for (argv, want) in cases {
            let got =
                std::panic::catch_unwind(|| args(argv)).map_err(|_| "IMS,IAM".to_owned()).and_then(|a| a.validate());
            match want {
                None => assert_eq!(got, Ok(()), "{argv:?}"),
                Some(text) => assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{argv:?}: {got:?}"),
            }
        }
        let a = args(&["--region-endpoints", "eu-ch2=https://a,https://b"]);
        assert_eq!(a.allowed_regions(), ["eu-de", "eu-nl", "eu-ch2"]);
        assert_eq!(args(&["--allowed-regions", "eu-de"]).allowed_regions(), ["eu-de"]);
        // The operator's own default region is allowed unless a list is given.
        assert_eq!(args(&["--default-region", "eu-ch2"]).allowed_regions(), ["eu-de", "eu-nl", "eu-ch2"]);
        let listed = args(&["--default-region", "eu-ch2", "--allowed-regions", "eu-de"]);
        assert_eq!(listed.allowed_regions(), ["eu-de"]);
        assert!(listed.validate().unwrap_err().contains("--default-region"), "refused at start");
    }

    /// `run`, `job get` and `job wait` share the endpoint flags: their names,
    /// variables and defaults stay those of docs/contract.md.
    #[test]
    fn shared_endpoint_flags_keep_their_names_and_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let a = Cli::try_parse_from(["x"]).unwrap().run;
        assert_eq!(a.endpoints.ims_endpoint, "https://ims.{region}.otc.t-systems.com");
        assert_eq!(a.endpoints.iam_endpoint, "https://iam.{region}.otc.t-systems.com");
        assert_eq!(a.default_region, "eu-de");
        let flags = ["x", "--ims-endpoint", "http://127.0.0.1:1", "--iam-endpoint", "http://127.0.0.1:2"];
        let a = Cli::try_parse_from(flags).unwrap().run;
        assert_eq!((a.endpoints.ims_endpoint.as_str(), a.endpoints.iam_endpoint.as_str()), (flags[2], flags[4]));
        let envs: Vec<_> = <Cli as clap::CommandFactory>::command()
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_owned()))
            .collect();
        for env in ["IMS_ENDPOINT", "IAM_ENDPOINT", "OTC_REGION"] {
            assert!(envs.iter().any(|e| e == env), "{env} in {envs:?}");
        }
    }

    #[test]
    fn poll_interval_falls_back_and_clamps() {
        let d = Duration::from_secs(10);
        assert_eq!(poll_interval(None, d), d);
        assert_eq!(poll_interval(Some("2m"), d), Duration::from_secs(120));
        assert_eq!(poll_interval(Some("100ms"), d), Duration::from_secs(1));
        assert_eq!(poll_interval(Some("junk"), d), d);
    }
}
