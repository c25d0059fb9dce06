//! The scenario file: who may log in, which jobs exist and how they evolve.
//!
//! A scenario is YAML (or JSON, which YAML reads too). Every key is
//! optional except where noted. Durations are strings like `500ms`, `2s`,
//! `1m 30s` (humantime) or plain numbers of seconds.
//!
//! ```yaml
//! settings:
//!   token_lifetime: 24h        # IAM token validity (password and agency tokens)
//!   federated_token_lifetime: 15s  # tokens from OIDC federation (default: token_lifetime)
//!   clock: first_query         # when job clocks start: first_query | sim_start
//!   time_format: rfc3339       # default for jobs: rfc3339 | legacy
//!   sdk_date_window: 15m       # allowed X-Sdk-Date skew
//!   lock_after_failures: 5     # consecutive bad AK/SK signatures before a lock
//!   lock_duration: 5m
//!   throttle:                  # token bucket per project, over all IMS requests
//!     rate: 20                 # requests per second
//!     burst: 40
//!     retry_after: 1           # optional Retry-After header, seconds
//!   api: current               # current | legacy: the defaults of the next three
//!                              #   and of error_in (see "The two APIs" below)
//!   status_api_progress: false # status API sends process_percent/current_task
//!                              #   (default: false; true with api: legacy)
//!   progress_api: served       # served | absent: GET /v1/cloudimages/job/{job_id}
//!                              #   (default: served; absent with api: legacy)
//!   unknown_job: not_found     # not_found (404 IMG.0027) | task_query_error (400 IMG.0023)
//! projects:
//!   - {id: 0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b, name: eu-de_demo}
//! users:                       # IAM password login
//!   - {name: demo, password: demo-password, domain: demo-domain,
//!      projects: [eu-de_demo]} # ids or names; empty or absent = all projects
//! access_keys:                 # AK/SK signing
//!   - {access: DEMOACCESSKEY, secret: demo-secret-key,
//!      security_token: null,   # when set, X-Security-Token must carry it
//!      projects: [],           # empty = all projects
//!      user: ci-bot}           # who signs, for agencies' `trusted` (default: the access key)
//! identity_providers:          # OIDC federation: POST /v3.0/OS-AUTH/id-token/tokens
//!   - id: k8s-cluster          # the X-Idp-Id clients send
//!     issuer: https://kubernetes.default.svc.cluster.local   # the tokens' `iss`
//!     client_id: iam-sim       # must be in the tokens' `aud`
//!     jwks: {keys: [{kty: RSA, kid: ..., alg: RS256, n: ..., e: AQAB}]}
//!                              # or the same as a JSON string (`kubectl get --raw /openid/v1/jwks`)
//!     domain: sim-domain       # the federated users' account (default: sim-domain)
//!     rules:                   # IAM conversion rules; every matching rule applies
//!       - remote: [{type: sub, any_one_of: ["system:serviceaccount:team-a:imagejobs"]}]
//!         local: [{user: {name: "{0}"}}, {group: {name: ims-team-a}}]
//!         projects: [eu-de_demo]   # ids or names it may scope to; empty or absent = all
//!       - remote: [{type: sub, not_any_of: ["system:serviceaccount:kube-system:default"]}]
//!         projects: [eu-de_shared]
//! agencies:                    # assume_role: POST /v3/auth/tokens
//!   - name: ims-reader         # xrole_name (OTC) or agency_name (Huawei)
//!     domain_name: other-account
//!     domain_id: 5c1f...       # default: derived from domain_name
//!     projects: [eu-de_other]  # ids or names; empty = all
//!     trusted: [demo, "system:serviceaccount:team-a:imagejobs"]  # empty = any caller
//! metadata:                    # the node's temporary keys: GET /openstack/latest/securitykey
//!   served: true               # false: 404, as off a cloud node
//!   key_lifetime: 1h           # each pair's validity (>= 2s); a new pair when < half is left
//!   projects: []               # ids or names the keys may sign for; empty = all
//!   user: node-agency          # who signs with them, for agencies' `trusted`
//! jobs:
//!   - project_id: 0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b   # required
//!     job_id: ff8080814dbd65d7014dbe0d84db0013        # required
//!     job_type: imsCreateImageByInstance              # required
//!     time_format: legacy      # overrides settings.time_format
//!     clock: sim_start         # overrides settings.clock
//!     age_at_start: 10s        # the job is this old when its clock starts
//!     image_name: web-server   # shown in entities in every phase
//!     status_api_progress: true   # overrides the setting for this job
//!     progress_api: absent     # overrides the setting for this job
//!     sub_job_id: 5d1e0c9b8a7f46e3a2b1c0d9e8f7a6b5  # progress API's entities.subJobId
//!     phases:                  # required; the first one at 0s
//!       - {after: 0s, status: INIT}
//!       - after: 2s
//!         status: RUNNING
//!         progress: [0.1, 0.9] # rises linearly until the next phase; or one number
//!         current_task: CreateImageByInstanceTask
//!       - after: 30s
//!         status: SUCCESS      # process_percent becomes the integer 1
//!         image_id: 49e9447f-7dff-41e0-8036-f66fe5488c8b
//!         results: [{image_id: 49e9447f-7dff-41e0-8036-f66fe5488c8b,
//!                    project_id: 0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b, status: success}]
//!     # A FAIL phase: {after: 20s, status: FAIL, error_code: IMG.0014,
//!     #   fail_reason: "...", error_in: both,  (top | entities | both)
//!     #   addition_error_code: "...", addition_error_msg: "..."}  (optional)
//!     # Any phase may add raw `entities: {key: value}`, merged last.
//!     sub_jobs:                # listed in sub_jobs_result once their first phase is reached
//!       - job_id: ff8080814dbd65d7014dbe0d84db0014
//!         job_type: imsImportImageJob
//!         phases: [{after: 1s, status: RUNNING}, {after: 20s, status: SUCCESS, image_id: ...}]
//!     sub_jobs_list: true      # also send entities.sub_jobs_list
//!     faults:                  # first matching non-latency fault answers
//!       - {fault: throttle, requests: 1-2, retry_after: 3, limit: 20}
//!       - {fault: error, from: 5s, until: 8s, status: 503, body: flat,
//!          code: APIGW.0503, message: Service Unavailable}
//!       - {fault: malformed, requests: 7}
//!       - {fault: error, requests: 9, code: IMG.0030}  # IMS's own: 400 (IMG.0026: 403)
//!       - {fault: latency, delay: 300ms}   # every request: all matching delays add up
//! job_sets:                    # many jobs from one template, for scale tests
//!   - count: 10000
//!     project_id: 0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b
//!     job_id_prefix: ff808081a0   # the index, in hex, fills up to 32 characters
//!     age_spread: 60s             # job i starts i/count of this into its life
//!     template: {job_type: imsCreateImageByInstance, clock: sim_start,
//!                phases: [{after: 0s, status: RUNNING, progress: [0, 1]},
//!                         {after: 60s, status: SUCCESS}]}
//! ```
//!
//! Semantics, decided here because IMS documents none of it:
//! - Times are measured from the job's creation. A job is created when its
//!   clock starts minus `age_at_start`. `first_query` (the default) starts
//!   the clock at the first authenticated query of the job, so a demo or a
//!   test sees the whole lifecycle whenever it starts polling; `sim_start`
//!   starts it when the simulator starts (or when the admin API adds the
//!   job), so a scale test can have jobs at all stages at once.
//! - `image_id`, `image_name` and `current_task` are sticky: once a phase
//!   sets one, later phases keep it until they set another. Everything
//!   else (`progress`, `results`, errors, raw `entities`) belongs to its phase.
//! - Fault conditions: `requests` counts the authenticated requests to the
//!   job, from 1 (`3`, `2-4`, or `5-` for "from 5 on"); `from`/`until` is a
//!   window of job time (`until` excluded). Both given: both must match;
//!   neither: always. Error `body` shapes: `nested` (IMS
//!   `{"error":{"code","message"}}`, the default), `flat` (gateway
//!   `{"error_code","error_msg","request_id"}`), `text`, `html`, `empty`.
//!   `malformed` answers 200 with the real answer cut in half, or `body`.
//!   An `error` fault may leave out `status` when its `code` is an IMS code
//!   (`IMG.*`): IMS answers all of its own errors 400, but IMG.0026 403.
//!   Gateway codes (`APIGW.*`, the 429 `APIG.0308`) keep their statuses.
//!
//! The two APIs. Jobs are served by both IMS job APIs, with the same
//! authentication, throttle, faults (one request count for both), latency,
//! error shapes and counters:
//! - the status API `GET /v1/{project_id}/jobs/{job_id}`, which by default
//!   sends no `process_percent`/`current_task`, as the docs since 2025-12
//!   and all their 14 examples (`status_api_progress: true` sends them, as
//!   older docs and older ims-sim did);
//! - the progress API `GET /v1/cloudimages/job/{job_id}`: the same job plus
//!   `entities.process_percent` (a 0–1 fraction, the integer `1` on
//!   SUCCESS) and `entities.current_task` (`""` without a task), and
//!   `entities.subJobId` on `imsImportImageJob`/`imsImportDataImageJob`
//!   (the real answers of 2026 carry it on those two only; `sub_job_id`
//!   sets it on any job; by default a stable 32-hex id from the job id).
//!   Finished `imsImportOvaImageJob`/`imsVolumesToSysDataImagesJob`
//!   answers carry no progress fields there, as their real answers.
//!   No project in the path: it is the IAM token's scope, or with AK/SK
//!   the `X-Project-Id` header, which must then be sent and be among the
//!   signed headers (else 401 `APIGW.0301` "x-project-id not found" / "x-
//!   project-id must be a signed header": unsigned, it could be changed on
//!   the way; the real gateway's answer is not documented). A job is found
//!   in that project only. `progress_api: absent` (per job or for all)
//!   answers 404 `{"error_code":"APIGW.0101","error_msg":"The API does not
//!   exist or has not been published in the environment","request_id"}`,
//!   before authentication, as a cloud without the API does.
//! - `api: legacy` brings back the shapes of ims-sim before both APIs:
//!   progress on the status API, no progress API, FAIL on top only. Each
//!   of those can still be set on its own.
//! - Multi-image jobs (`imsImportOvaImageJob`,
//!   `imsVolumesToSysDataImagesJob`) report their images in
//!   `sub_jobs_result[].entities`; a scenario gives them none on top (it
//!   may, to mimic an odd cloud).
//! - FAIL: `error_in: top` sets the top-level `error_code`/`fail_reason`;
//!   `entities` sets `entities.error_code` and `entities.error` (the
//!   message; the names of Huawei's generated SDKs since 2023-10) and
//!   leaves the top null; `both` (the default, `top` with `api: legacy`)
//!   sets both, as the SDKs model both places and the API page says an
//!   abnormal job has its error in `entities`. `addition_error_code`/
//!   `addition_error_msg` go to `entities` whenever a phase sets them.
//! - Counters (`/admin/jobs/{project_id}/{job_id}/requests`, and `total`
//!   and `jobs` of `/admin/requests`): `requests` and `by_status` count
//!   every job query through either API; `by_api.status` and
//!   `by_api.progress` have the same two fields per API. A refused request
//!   counts for the job it named (on the progress API: the token's or
//!   `X-Project-Id`'s project, unchecked).
//!
//! Identity (IDENTITY.md), every refusal in IAM's flat shape
//! `{"error_msg", "error_code"}`:
//! - OIDC federation, `POST /v3.0/OS-AUTH/id-token/tokens` with `X-Idp-Id`
//!   and `{"auth": {"id_token": {"id": JWT}, "scope": {"project": {"id"
//!   | "name"}}}}`: no `X-Idp-Id` or a bad body 400 `IAM.0011`; unknown
//!   provider 404 `IAM.0004`; a JWT failing a check (see [`super::oidc`]:
//!   alg, kid, signature, iss, aud, exp, nbf, sub; the message names the
//!   check) 401 `IAM.0001`; no matching rule, or a project its rules do
//!   not allow, 403 `IAM.0003`. Else 201, `X-Subject-Token`, `methods:
//!   ["mapped"]`, `user.OS-FEDERATION` with the provider, protocol `oidc`
//!   and the rules' groups, `user.name` from the rules (`FederationUser`
//!   without one). Rule conditions: `type` names a claim (`sub`, or any
//!   other; a list claim matches by any item); `any_one_of`: a value is
//!   listed; `not_any_of`: none is; neither: the claim is present. `{0}`…
//!   in `local` names are the matched conditions' values. `projects` is the
//!   sim's stand-in for the groups' permissions. The token works on both
//!   IMS APIs for its project, like a password token, until
//!   `federated_token_lifetime`; it is held by the token's `sub`.
//! - Agencies: `POST /v3/auth/tokens` with `methods: ["assume_role"]`,
//!   `assume_role: {domain_name | domain_id, xrole_name | agency_name}`
//!   and a project scope, authenticated by `X-Auth-Token` (any valid sim
//!   token: password, federated, agency) or an AK/SK signature (scenario
//!   or metadata keys; over the body too). Bad body 400 `IAM.0011`; no or
//!   bad credentials 401 `IAM.0001`; unknown agency 404 `IAM.0004`; caller
//!   not in `trusted`, or project outside the agency, 403 `IAM.0003`. Else
//!   201, `X-Subject-Token`, `methods: ["assume_role"]`, user
//!   `{domain_name}/{name}`, `assumed_by.user.name` the caller; valid
//!   `token_lifetime`. (Password logins keep their nested error shape.)
//! - Node metadata: `GET /openstack/latest/securitykey` answers
//!   `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`.
//!   A pair is signed with like an access key, with `X-Security-Token`
//!   required (else 401 `APIGW.0301` "security token invalid"); after its
//!   `expires_at` 401 `APIGW.0307` "The token must be updated: the
//!   temporary access key has expired". `PUT /meta-data/latest/api/token`
//!   (session tokens) answers 404, so SDKs fall back to the plain GET.
//! - Counters in `/admin/requests`: `iam.federation_requests`,
//!   `iam.federation_tokens_issued`, `iam.federation_failures`,
//!   `iam.agency_requests`, `iam.agency_tokens_issued`,
//!   `iam.agency_failures`, `metadata.key_requests`,
//!   `metadata.keys_issued` (`iam.token_requests` stays password logins).
//! - Test JWTs: [`super::test_idp`] signs them with published test keys
//!   whose JWKS is `test_idp::JWKS_JSON`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::agency::Agency;
pub use super::metadata::MetadataConfig;
pub use super::oidc::IdentityProvider;
use crate::ims::model::JobStatus;

/// The scenario used when `--scenario` is not given.
pub const DEFAULT_SCENARIO_YAML: &str = include_str!("default-scenario.yaml");

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub projects: Vec<Project>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub access_keys: Vec<AccessKey>,
    #[serde(default)]
    pub jobs: Vec<JobDef>,
    /// OIDC identity providers for `POST /v3.0/OS-AUTH/id-token/tokens`.
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
    /// Agencies for `assume_role` tokens.
    #[serde(default)]
    pub agencies: Vec<Agency>,
    /// The node metadata service's temporary keys.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// Expanded into `jobs` by [`Scenario::parse`].
    #[serde(default)]
    pub job_sets: Vec<JobSet>,
}

/// `count` copies of `template`, with ids `job_id_prefix` + hex index.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSet {
    pub count: u32,
    pub project_id: String,
    pub job_id_prefix: String,
    /// Spreads the jobs over their lifecycle: job `i` gets
    /// `age_at_start` += `age_spread * i / count`.
    #[serde(default)]
    pub age_spread: Dur,
    pub template: JobDef,
}

/// IMS job ids are 32 hex characters.
const JOB_ID_LEN: usize = 32;

impl JobSet {
    pub fn expand(&self) -> Result<Vec<JobDef>, ScenarioError> {
        let width = JOB_ID_LEN.saturating_sub(self.job_id_prefix.len());
        let fits = width > 0 && (width >= 8 || u64::from(self.count) <= 16u64.pow(width as u32));
        if !fits {
            return Err(ScenarioError(format!(
                "job set {}: {} jobs do not fit after the prefix {:?}",
                self.project_id, self.count, self.job_id_prefix
            )));
        }
        let spread = self.age_spread.0.as_secs_f64();
        Ok((0..self.count)
            .map(|i| {
                let mut job = self.template.clone();
                job.project_id = self.project_id.clone();
                job.job_id = format!("{}{i:0width$x}", self.job_id_prefix);
                let offset = Duration::from_secs_f64(spread * f64::from(i) / f64::from(self.count));
                job.age_at_start = Dur(job.age_at_start.0 + offset);
                job
            })
            .collect())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub token_lifetime: Dur,
    /// Tokens from OIDC federation; None: `token_lifetime`.
    pub federated_token_lifetime: Option<Dur>,
    pub clock: ClockStart,
    pub time_format: TimeFormat,
    pub sdk_date_window: Dur,
    pub lock_after_failures: u32,
    pub lock_duration: Dur,
    pub throttle: Option<Throttle>,
    pub api: ApiVersion,
    /// None: what `api` implies (no for `current`, yes for `legacy`).
    pub status_api_progress: Option<bool>,
    /// None: what `api` implies (served for `current`, absent for `legacy`).
    pub progress_api: Option<ProgressApi>,
    pub unknown_job: UnknownJob,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            token_lifetime: Dur::secs(24 * 3600),
            federated_token_lifetime: None,
            clock: ClockStart::FirstQuery,
            time_format: TimeFormat::Rfc3339,
            sdk_date_window: Dur::secs(15 * 60),
            lock_after_failures: 5,
            lock_duration: Dur::secs(5 * 60),
            throttle: None,
            api: ApiVersion::Current,
            status_api_progress: None,
            progress_api: None,
            unknown_job: UnknownJob::NotFound,
        }
    }
}

impl Settings {
    pub fn federated_token_lifetime(&self) -> Duration {
        self.federated_token_lifetime.unwrap_or(self.token_lifetime).0
    }

    /// Whether the status API sends `process_percent`/`current_task` for `job`.
    pub fn status_api_progress(&self, job: &JobDef) -> bool {
        job.status_api_progress.or(self.status_api_progress).unwrap_or(self.api == ApiVersion::Legacy)
    }

    /// Whether the progress API exists for `job` (or, with no job, at all).
    pub fn progress_api(&self, job: Option<&JobDef>) -> ProgressApi {
        let implied = match self.api {
            ApiVersion::Current => ProgressApi::Served,
            ApiVersion::Legacy => ProgressApi::Absent,
        };
        job.and_then(|j| j.progress_api).or(self.progress_api).unwrap_or(implied)
    }

    /// Where a FAIL phase without `error_in` puts its error.
    pub fn default_error_in(&self) -> ErrorPlacement {
        match self.api {
            ApiVersion::Current => ErrorPlacement::Both,
            ApiVersion::Legacy => ErrorPlacement::Top,
        }
    }
}

/// Which generation of the IMS API the simulator stands in for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiVersion {
    /// As the docs describe it since 2025-12/2026-07: no progress on the
    /// status API, a progress API, FAIL reasons on top and in `entities`.
    #[default]
    Current,
    /// As ims-sim answered before: progress on the status API, no progress
    /// API, FAIL reasons on top only.
    Legacy,
}

/// `GET /v1/cloudimages/job/{job_id}`: there, or not published (a cloud
/// that predates it answers the gateway's 404 `APIGW.0101`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressApi {
    Served,
    Absent,
}

/// What IMS answers for a job it does not know; no public source says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownJob {
    /// 404 `{"error":{"code":"IMG.0027","message":"The job does not exist."}}`.
    #[default]
    NotFound,
    /// 400 `{"error":{"code":"IMG.0023","message":"An exception occurred during task query."}}`.
    TaskQueryError,
}

/// A token bucket per project: `rate` tokens a second, at most `burst`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub rate: f64,
    pub burst: u32,
    #[serde(default)]
    pub retry_after: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStart {
    #[default]
    FirstQuery,
    SimStart,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2024-11-06T06:19:43.195Z`, as in current docs.
    #[default]
    Rfc3339,
    /// `04-Jun-2015 18:11:06:586`, as on the API page example.
    Legacy,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
    pub domain: String,
    /// Project ids or names; empty means every project of the scenario.
    #[serde(default)]
    pub projects: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub access: String,
    pub secret: String,
    #[serde(default)]
    pub security_token: Option<String>,
    /// Project ids or names; empty means any project.
    #[serde(default)]
    pub projects: Vec<String>,
    /// Who signs with this key, for agencies' `trusted`; default: the key.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub job_id: String,
    pub job_type: String,
    #[serde(default)]
    pub time_format: Option<TimeFormat>,
    #[serde(default)]
    pub clock: Option<ClockStart>,
    #[serde(default)]
    pub age_at_start: Dur,
    #[serde(default)]
    pub image_name: Option<String>,
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub sub_jobs: Vec<SubJobDef>,
    #[serde(default)]
    pub sub_jobs_list: bool,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Overrides `settings.status_api_progress`.
    #[serde(default)]
    pub status_api_progress: Option<bool>,
    /// Overrides `settings.progress_api`.
    #[serde(default)]
    pub progress_api: Option<ProgressApi>,
    /// The progress API's `entities.subJobId`; by default derived from the
    /// job id for the import jobs whose real answers carry one.
    #[serde(default)]
    pub sub_job_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubJobDef {
    pub job_id: String,
    pub job_type: String,
    pub phases: Vec<Phase>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub after: Dur,
    #[serde(deserialize_with = "job_status")]
    pub status: JobStatus,
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub current_task: Option<String>,
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub results: Option<Vec<ResultDef>>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub fail_reason: Option<String>,
    /// None: `both`, or `top` with `settings.api: legacy`.
    #[serde(default)]
    pub error_in: Option<ErrorPlacement>,
    /// `entities.addition_error_code`/`addition_error_msg`, as the SDKs model.
    #[serde(default)]
    pub addition_error_code: Option<String>,
    #[serde(default)]
    pub addition_error_msg: Option<String>,
    #[serde(default)]
    pub entities: Option<Map<String, Value>>,
}

/// `process_percent` during a phase: fixed, or rising from the first
/// value to the second until the next phase begins.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Progress {
    Fixed(f64),
    Rising([f64; 2]),
}

/// Where a FAIL phase puts its error code and reason: top-level
/// `error_code`/`fail_reason`, or `entities.error_code`/`entities.error`
/// (the names of Huawei's SDKs since 2023-10). The API page says an
/// abnormal job carries them in `entities`, and the SDKs model both places.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPlacement {
    Top,
    Entities,
    Both,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResultDef {
    pub image_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default = "lower_case_success")]
    pub status: String,
}

fn lower_case_success() -> String {
    "success".into()
}

#[derive(Clone, Debug, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub when: FaultWhen,
    #[serde(flatten)]
    pub action: FaultAction,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct FaultWhen {
    #[serde(default)]
    pub requests: Option<RequestRange>,
    #[serde(default)]
    pub from: Option<Dur>,
    #[serde(default)]
    pub until: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultAction {
    /// HTTP 429 `APIG.0308`, as the API gateway answers.
    Throttle {
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `status` may be left out when `code` is an IMS code: IMS answers
    /// all of them 400, but IMG.0026 403.
    Error {
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        body: ErrorShape,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    Malformed {
        #[serde(default)]
        body: Option<String>,
    },
    Latency {
        delay: Dur,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    #[default]
    Nested,
    Flat,
    Text,
    Html,
    Empty,
}

/// Inclusive range of request numbers; `last: None` means no end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRange {
    pub first: u64,
    pub last: Option<u64>,
}

impl RequestRange {
    pub fn contains(&self, n: u64) -> bool {
        n >= self.first && self.last.is_none_or(|last| n <= last)
    }

    /// `3`, `2-4`, `5-`.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let Some((first, last)) = raw.split_once('-') else {
            let n = raw.parse().ok()?;
            return Some(Self { first: n, last: Some(n) });
        };
        let first = first.trim().parse().ok()?;
        let last = match last.trim() {
            "" => None,
            s => Some(s.parse().ok()?),
        };
        (last.is_none_or(|l| l >= first)).then_some(Self { first, last })
    }
}

impl<'de> Deserialize<'de> for RequestRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(|n| Self { first: n, last: Some(n) })
                .ok_or_else(|| de::Error::custom("request number must be a positive integer")),
            Value::String(s) => RequestRange::parse(&s)
                .ok_or_else(|| de::Error::custom(format!("bad request range {s:?}: use 3, 2-4 or 5-"))),
            other => Err(de::Error::custom(format!("bad request range {other}"))),
        }
    }
}

/// A duration read from `"2s"`-style strings or numbers of seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map(Dur)
                .ok_or_else(|| de::Error::custom("a duration must not be negative")),
            Value::String(s) => humantime::parse_duration(s.trim())
                .map(Dur)
                .map_err(|e| de::Error::custom(format!("bad duration {s:?}: {e}"))),
            other => Err(de::Error::custom(format!("bad duration {other}"))),
        }
    }
}

fn job_status<'de, D: Deserializer<'de>>(d: D) -> Result<JobStatus, D::Error> {
    let raw = String::deserialize(d)?;
    JobStatus::parse(&raw)
        .ok_or_else(|| de::Error::custom(format!("unknown status {raw:?}: use INIT, RUNNING, SUCCESS or FAIL")))
}

/// IMS's status for one of its own codes: 400 for all, but IMG.0026
/// (403), as the error-code table of the API reference says.
pub fn ims_error_status(code: Option<&str>) -> Option<u16> {
    match code? {
        "IMG.0026" => Some(403),
        c if c.starts_with("IMG.") => Some(400),
        _ => None,
    }
}

/// A scenario that cannot be used, with the place of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Parses YAML or JSON and checks it.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let mut scenario: Scenario =
            serde_yaml_ng::from_str(text).map_err(|e| ScenarioError(format!("scenario: {e}")))?;
        for set in std::mem::take(&mut scenario.job_sets) {
            scenario.jobs.extend(set.expand()?);
        }
        scenario.validate()?;
        Ok(scenario)
    }

    /// The built-in demo: see `default-scenario.yaml`.
    pub fn demo() -> Self {
        Self::parse(DEFAULT_SCENARIO_YAML).expect("the embedded default scenario is valid")
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        if let Some(t) = &self.settings.throttle
            && (t.rate.is_nan() || t.rate <= 0.0 || t.burst == 0)
        {
            return Err(ScenarioError("settings.throttle: rate and burst must be positive".into()));
        }
        for job in &self.jobs {
            job.validate()?;
        }
        for idp in &self.identity_providers {
            idp.validate().map_err(|e| ScenarioError(format!("identity provider {}: {e}", idp.id)))?;
        }
        if self.metadata.key_lifetime.0 < Duration::from_secs(2) {
            return Err(ScenarioError("metadata.key_lifetime: at least 2s".into()));
        }
        Ok(())
    }

    /// The project named by an id or a name.
    pub fn resolve_project(&self, id_or_name: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id_or_name || p.name.as_deref() == Some(id_or_name))
    }
}

impl JobDef {
    /// Reads one job definition (YAML or JSON), as the admin API receives it.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let job: JobDef = serde_yaml_ng::from_str(text).map_err(|e| ScenarioError(format!("job: {e}")))?;
        Ok(job)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let name = format!("job {}/{}", self.project_id, self.job_id);
        if self.project_id.is_empty() || self.job_id.is_empty() {
            return Err(ScenarioError(format!("{name}: project_id and job_id are required")));
        }
        validate_phases(&name, &self.phases)?;
        if self.phases[0].after.0 != Duration::ZERO {
            return Err(ScenarioError(format!("{name}: the first phase must be at 0s")));
        }
        for sub in &self.sub_jobs {
            validate_phases(&format!("{name} sub-job {}", sub.job_id), &sub.phases)?;
        }
        for (i, fault) in self.faults.iter().enumerate() {
            validate_fault(&format!("{name} fault {i}"), fault)?;
        }
        Ok(())
    }
}

fn validate_phases(name: &str, phases: &[Phase]) -> Result<(), ScenarioError> {
    if phases.is_empty() {
        return Err(ScenarioError(format!("{name}: at least one phase is required")));
    }
    if phases.windows(2).any(|w| w[1].after <= w[0].after) {
        return Err(ScenarioError(format!("{name}: phases must be in strictly increasing `after` order")));
    }
    if let Some(i) = phases[..phases.len() - 1].iter().position(|p| p.status.is_finished()) {
        return Err(ScenarioError(format!("{name}: phase {i} is final (SUCCESS/FAIL) but is not the last")));
    }
    Ok(())
}

fn validate_fault(name: &str, fault: &Fault) -> Result<(), ScenarioError> {
    if let (Some(from), Some(until)) = (fault.when.from, fault.when.until)
        && until <= from
    {
        return Err(ScenarioError(format!("{name}: `until` must be after `from`")));
    }
    match &fault.action {
        FaultAction::Error { status: Some(status), .. } if !(400..=599).contains(status) => {
            Err(ScenarioError(format!("{name}: error status {status} is not 4xx/5xx")))
        }
        FaultAction::Error { status: None, code, .. } if ims_error_status(code.as_deref()).is_none() => {
            Err(ScenarioError(format!("{name}: an error fault needs a status unless its code is an IMG code")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_is_valid() {
        let s = Scenario::demo();
        assert_eq!(s.jobs.len(), 4);
        assert_eq!(s.users[0].name, "demo");
        assert_eq!(s.access_keys[0].access, "DEMOACCESSKEY");
        for job in &s.jobs {
            assert_eq!(job.job_id.len(), 32, "{}", job.job_id);
            assert!(job.job_id.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    /// The demo's multi-image jobs and its failure, at the end of their lives.
    #[test]
    fn the_default_scenario_shows_todays_shapes() {
        use crate::sim::lifecycle::{BodyStyle, JobApi, JobTime, body};
        let s = Scenario::demo();
        let end = JobTime { created_at: jiff::Timestamp::UNIX_EPOCH, age: Duration::from_secs(3600) };
        let job = |id: &str| s.jobs.iter().find(|j| j.job_id == id).unwrap();
        for id in ["ff8080817f3c1a2b017f3c5e9d8a0021", "ff8080817f3c1a2b017f3c5e9d8a0031"] {
            let answer = body(job(id), end, &BodyStyle::new(&s.settings, job(id), JobApi::Status));
            assert_eq!(answer["status"], "SUCCESS");
            assert!(answer["entities"].get("image_id").is_none(), "{answer}");
            let subs = answer["entities"]["sub_jobs_result"].as_array().unwrap();
            assert_eq!(subs.len(), 2);
            assert!(
                subs.iter().all(|s| s["entities"]["image_id"].is_string() && s["entities"]["image_name"].is_string())
            );
        }
        assert_eq!(job("ff8080817f3c1a2b017f3c5e9d8a0031").job_type, "imsVolumesToSysDataImagesJob");
        let failing = job("ff8080818a1b2c3d018a1b9f7e6d0042");
        let failed = body(failing, end, &BodyStyle::new(&s.settings, failing, JobApi::Status));
        assert_eq!((failed["status"].as_str(), &failed["fail_reason"]), (Some("FAIL"), &Value::Null));
        assert_eq!(failed["entities"]["error"], "An exception occurred when IaaS OpenStack was executing the task.");
        assert_eq!(failed["entities"]["error_code"], "IMG.0014");
    }

    #[test]
    fn settings_resolve_per_api_generation_and_job() {
        let job = JobDef::parse("project_id: p\njob_id: j\njob_type: t\nphases: [{after: 0s, status: INIT}]").unwrap();
        let absent = JobDef { progress_api: Some(ProgressApi::Absent), ..job.clone() };
        let current = Settings::default();
        assert!(!current.status_api_progress(&job));
        assert_eq!(current.progress_api(Some(&job)), ProgressApi::Served);
        assert_eq!(current.progress_api(Some(&absent)), ProgressApi::Absent);
        assert_eq!(current.default_error_in(), ErrorPlacement::Both);
        assert_eq!(current.unknown_job, UnknownJob::NotFound);
        let legacy = Scenario::parse("settings: {api: legacy, unknown_job: task_query_error}").unwrap().settings;
        assert!(legacy.status_api_progress(&job));
        assert_eq!(legacy.progress_api(None), ProgressApi::Absent);
        assert_eq!(legacy.default_error_in(), ErrorPlacement::Top);
        assert_eq!(legacy.unknown_job, UnknownJob::TaskQueryError);
        let served = JobDef { progress_api: Some(ProgressApi::Served), status_api_progress: Some(false), ..job };
        assert_eq!(legacy.progress_api(Some(&served)), ProgressApi::Served);
        assert!(!legacy.status_api_progress(&served));
        assert!(Scenario::parse("settings: {api: newest}").is_err());
    }

    #[test]
    fn job_sets_expand_with_spread_ages() {
        let s = Scenario::parse(
            r#"
            job_sets:
              - count: 4
                project_id: p
                job_id_prefix: ff808081a0
                age_spread: 8s
                template: {job_type: t, age_at_start: 1s, phases: [{after: 0s, status: RUNNING}]}
            "#,
        )
        .unwrap();
        let ids: Vec<&str> = s.jobs.iter().map(|j| j.job_id.as_str()).collect();
        assert_eq!(ids[0], "ff808081a00000000000000000000000");
        assert_eq!(ids[3], "ff808081a00000000000000000000003");
        let ages: Vec<u64> = s.jobs.iter().map(|j| j.age_at_start.0.as_secs()).collect();
        assert_eq!(ages, [1, 3, 5, 7]);
        let too_many = "job_sets: [{count: 17, project_id: p, job_id_prefix: ff808081a0000000000000000000000,\
                        template: {job_type: t, phases: [{after: 0s, status: INIT}]}}]";
        assert!(Scenario::parse(too_many).unwrap_err().0.contains("do not fit"));
    }

    #[test]
    fn request_ranges() {
        assert_eq!(RequestRange::parse("3"), Some(RequestRange { first: 3, last: Some(3) }));
        assert_eq!(RequestRange::parse("2-4"), Some(RequestRange { first: 2, last: Some(4) }));
        assert_eq!(RequestRange::parse("5-"), Some(RequestRange { first: 5, last: None }));
        assert_eq!(RequestRange::parse("4-2"), None);
        assert_eq!(RequestRange::parse("x"), None);
        let r = RequestRange::parse("2-3").unwrap();
        assert!(!r.contains(1) && r.contains(2) && r.contains(3) && !r.contains(4));
    }

    #[test]
    fn durations_and_faults_parse() {
        let job = JobDef::parse(
            r#"
            project_id: p
            job_id: j
            job_type: imsImportImageJob
            phases: [{after: 0, status: init}, {after: 1.5, status: RUNNING, progress: [0.1, 0.9]}]
            faults:
              - {fault: throttle, requests: 1-2, retry_after: 3}
              - {fault: error, from: 1s, until: 2s, status: 503, body: flat}
              - {fault: latency, delay: 250ms}
              - {fault: malformed, requests: "7-"}
            "#,
        )
        .unwrap();
        job.validate().unwrap();
        assert_eq!(job.phases[1].after, Dur(Duration::from_millis(1500)));
        assert_eq!(job.phases[1].progress, Some(Progress::Rising([0.1, 0.9])));
        assert!(matches!(job.faults[0].action, FaultAction::Throttle { retry_after: Some(3), .. }));
        assert!(matches!(job.faults[1].action, FaultAction::Error { status: Some(503), body: ErrorShape::Flat, .. }));
        assert_eq!(job.faults[1].when.until, Some(Dur::secs(2)));
        assert!(
            matches!(job.faults[2].action, FaultAction::Latency { delay } if delay.0 == Duration::from_millis(250))
        );
        assert_eq!(job.faults[3].when.requests, Some(RequestRange { first: 7, last: None }));
    }

    #[test]
    fn invalid_jobs_are_refused_with_a_reason() {
        let cases = [
            ("phases: []", "at least one phase"),
            ("phases: [{after: 1s, status: INIT}]", "first phase must be at 0s"),
            ("phases: [{after: 0s, status: INIT}, {after: 0s, status: RUNNING}]", "increasing"),
            ("phases: [{after: 0s, status: SUCCESS}, {after: 1s, status: RUNNING}]", "is final"),
            ("phases: [{after: 0s, status: INIT}]\nfaults: [{fault: error, status: 200}]", "not 4xx/5xx"),
        ];
        for (body, want) in cases {
            let text = format!("project_id: p\njob_id: j\njob_type: t\n{body}");
            let err = JobDef::parse(&text).and_then(|j| j.validate().map(|_| j)).unwrap_err();
            assert!(err.0.contains(want), "{body}: {err}");
        }
        assert!(JobDef::parse("job_type: t\nphases: [{after: 0s, status: PAUSED}]").is_err());
        assert!(JobDef::parse("job_type: t\nphases: []\nbogus: 1").is_err());
    }
}
