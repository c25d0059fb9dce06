//! The `ImageJob` custom resource: spec, status, printer columns and the
//! validation the API server enforces. The field names are a promise to
//! users, dashboards and GitOps tools: add, never rename.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// Annotation that asks for an immediate poll; its value is echoed to
/// `status.lastHandledReconcileAt`.
pub const REQUESTED_AT_ANNOTATION: &str = "ims.otc.io/requestedAt";

/// Go-style durations with integer amounts (`30s`, `2m`, `1h30m`): what both
/// the API server's CEL `duration()` and our parser accept.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// Tracks one IMS asynchronous job.
// Clippy reads the repeated `printcolumn(type_ = …)` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "ims.otc.io",
    version = "v1alpha1",
    kind = "ImageJob",
    plural = "imagejobs",
    shortname = "ij",
    category = "otc",
    namespaced,
    status = "ImageJobStatus",
    doc = "ImageJob tracks one Open Telekom Cloud IMS asynchronous job (an image creation, import or export) and reports its status, progress, image and sub-jobs.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "integer", json_path = ".status.progress"),
    printcolumn(name = "Job-ID", type_ = "string", json_path = ".spec.jobId"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.jobType"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.imageId"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    // A string, not a date: kubectl shows a future date as "<invalid>".
    printcolumn(name = "ETA", type_ = "string", json_path = ".status.estimatedCompletionTime", priority = 1)
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.credentialsRef) && has(self.serviceAccountRef))")
    .message("set at most one of credentialsRef and serviceAccountRef"))]
pub struct ImageJobSpec {
    /// The IMS job ID, e.g. the `job_id` returned when an image was created.
    /// Immutable: create a new ImageJob to track another job.
    #[x_kube(validation = Rule::new("self == oldSelf").message("jobId is immutable: create a new ImageJob to track another job"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"))]
    pub job_id: String,

    /// The project the job belongs to; required unless the credentials
    /// Secret has a `projectId` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub project_id: Option<String>,

    /// The region, e.g. `eu-de`; defaults to the operator's `--default-region`.
    /// Only letters, digits and dashes: it is placed into the configured
    /// endpoint host name and must not be able to name another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub region: Option<String>,

    /// A Secret in the same namespace with `accessKey`/`secretKey`
    /// (optional `securityToken`) or `username`/`password`/`domainName`,
    /// and optionally `projectId`. Exactly one of `credentialsRef` and
    /// `serviceAccountRef` (or neither when the operator runs with
    /// `--default-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsRef>,

    /// Workload identity: a ServiceAccount in the same namespace. The
    /// operator requests a short-lived token for it (audience
    /// `--oidc-audience`) and exchanges it at IAM (`--oidc-idp-id`) for a
    /// token of the project; IAM's conversion rules decide what it may do.
    /// Needs `projectId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountRef>,

    /// Act through an IAM agency of another account, on top of the identity
    /// above: an agency token of that account for `projectId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRole>,

    /// How often to poll while the job is INIT or RUNNING, e.g. `30s` or `2m`
    /// (1s to 1h). Defaults to the operator's `--poll-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(format!(
        "!self.matches('{DURATION_PATTERN}') || (duration(self) >= duration('1s') && duration(self) <= duration('1h'))"
    )).message("pollInterval must be between 1s and 1h"))]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub poll_interval: Option<String>,

    /// Marks the job failed (`DeadlineExceeded`) when it has been running
    /// longer than this many seconds, and stops polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Stops polling while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// `Fixed` polls every `pollInterval`; `Adaptive` polls from the job's
    /// progress: at least every 2× `pollInterval`, at most every ¼ of it, and
    /// more often near the predicted end. Default: `Fixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_policy: Option<PollPolicy>,

    /// On Succeeded (never Failed), a ConfigMap of this name in the same
    /// namespace receives the result: `imageId`, `imageName`, `jobId`,
    /// `jobType`, `projectId`, `region` in `data`, and `results.json` in
    /// `binaryData`. Owned by this ImageJob (deleted with it) and kept as
    /// written; a ConfigMap of that name that is not this ImageJob's is left
    /// alone (condition `OutputReady`, reason `OutputConflict`). For the next
    /// step, e.g. Flux `postBuild.substituteFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config_map_ref: Option<ConfigMapRef>,
}

/// How often to poll a running job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum PollPolicy {
    /// Every `pollInterval`.
    #[default]
    Fixed,
    /// From the job's progress rate: seldom while the end is far, often near it.
    Adaptive,
}

/// Reference to a ConfigMap in the ImageJob's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ConfigMapRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// Reference to a Secret in the ImageJob's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CredentialsRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// Reference to a ServiceAccount in the ImageJob's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ServiceAccountRef {
    /// Name of the ServiceAccount.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// An IAM agency (OTC's `xrole_name`) of the account that delegates, named
/// by `domainName` or `domainId` (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.domainName) != has(self.domainId)")
    .message("set exactly one of domainName and domainId"))]
pub struct AssumeRole {
    /// The agency's name in the delegating account.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub agency_name: String,
    /// The delegating account, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub domain_name: Option<String>,
    /// The delegating account, by ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9]+$"))]
    pub domain_id: Option<String>,
}

/// The phase shown in `kubectl get imagejobs`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Self::Pending, Self::Running, Self::Succeeded, Self::Failed];

    /// Succeeded and Failed never change: no more cloud calls.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

impl ImageJobStatus {
    /// A Succeeded or Failed job never changes: it is not polled again.
    pub fn is_finished(&self) -> bool {
        self.phase.is_some_and(Phase::is_finished)
    }
}

/// What the operator last learned about the job.
// The schema default makes a new ImageJob read `observedGeneration: 0`
// before the first write, so kstatus (Flux) sees it InProgress, not Current.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct ImageJobStatus {
    /// `Pending` (INIT, or not polled yet), `Running`, `Succeeded` or `Failed`.
    /// Succeeded and Failed are final: the job is not polled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The raw cloud status: INIT, RUNNING, SUCCESS or FAIL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    /// The IMS job type, e.g. `imsCreateImageByInstance`, `imsImportOvaImageJob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// The task IMS is running now (`entities.current_task`), e.g. `CreateImageByInstanceTask`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    /// The ID of the image the job made, once IMS reports it (`entities.image_id`);
    /// for a job that makes several images (OVA import, volumes to system and
    /// data images) the system disk image. With `outputConfigMapRef` it is also
    /// exported as the ConfigMap key `imageId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The name of the image the job made (`entities.image_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// Every image the job made (a system disk image and data disk images),
    /// from the job and its sub-jobs. Cut to keep the object small.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageStatus>,
    /// Percent, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<i32>,
    /// When IMS started the job (RFC 3339, converted from whatever format IMS sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_time: Option<Time>,
    /// When IMS ended the job (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// The IMS error code of a failed job, e.g. `IMG.0014` (from the job, or
    /// from its first failed sub-job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Why IMS says the job failed, in its own words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// One entry per image the job made (`entities.results`); a cross-region copy
    /// yields one per project. Cut to keep the object small (see `resultsTotal`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<JobResultStatus>,
    /// The sub-jobs of a job made of several (e.g. one per disk of an OVA import),
    /// with their own status and image. Cut to keep the object small (see `subJobsTotal`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_jobs: Vec<SubJobStatus>,
    /// The IDs of the sub-jobs (`entities.sub_jobs_list`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_job_ids: Vec<String>,
    /// How many sub-jobs IMS reported; present only when `subJobs` was cut
    /// to keep the object small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_jobs_total: Option<i32>,
    /// How many results IMS reported; present only when `results` was cut
    /// to keep the object small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_total: Option<i32>,
    /// When the job is expected to end, from the progress observed so far;
    /// only while it runs and once progress has risen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion_time: Option<Time>,
    /// The `metadata.generation` this status describes; behind it, the status is
    /// older than the spec. 0 until the operator first writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `ims.otc.io/requestedAt` annotation last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Kubernetes conditions (kstatus): `Ready` (the job succeeded), `Reconciling`
    /// (being polled), `Stalled` (cannot go on until someone fixes something),
    /// `Failed` (the job failed or ran past its deadline), and `OutputReady` (the
    /// `outputConfigMapRef` ConfigMap holds the result). Each has a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One image a job made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The image ID.
    pub id: String,
    /// The image name, when IMS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `system` (a bootable system disk image) or `data` (a data disk image).
    pub kind: String,
    /// The sub-job that made the image, when IMS says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_job_id: Option<String>,
}

/// One entry of the cloud's `entities.results`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResultStatus {
    /// The ID of an image the job made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The project the image is in (for a cross-region copy, the target project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The result as IMS reports it, e.g. `SUCCESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// One entry of the cloud's `entities.sub_jobs_result`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubJobStatus {
    /// The sub-job's IMS job ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The sub-job's IMS job type, e.g. `imsImportDataImageJob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// The sub-job's raw IMS status: `INIT`, `RUNNING`, `SUCCESS` or `FAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When the sub-job started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_time: Option<Time>,
    /// When the sub-job ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// The IMS error code if the sub-job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Why the sub-job failed, as IMS says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// The ID of the image the sub-job made (e.g. one disk of an OVA import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The name of the image the sub-job made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
}

/// The CustomResourceDefinition as YAML, as `imagejob-operator crd` prints it
/// and `crds/imagejob.yaml` holds it.
pub fn crd_yaml() -> String {
    let yaml = serde_yaml_ng::to_string(&ImageJob::crd()).expect("the CRD always serialises");
    format!("# Generated by `imagejob-operator crd`; do not edit.\n---\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_matches_the_rust_types() {
        let checked_in = include_str!("../crds/imagejob.yaml");
        assert!(checked_in == crd_yaml(), "crds/imagejob.yaml is stale: run `cargo run -- crd > crds/imagejob.yaml`");
    }

    #[test]
    fn crd_has_the_contract_names_and_rules() {
        let crd = serde_json::to_value(ImageJob::crd()).unwrap();
        let names = &crd["spec"]["names"];
        assert_eq!(names["plural"], "imagejobs");
        assert_eq!(names["shortNames"][0], "ij");
        assert_eq!(names["categories"][0], "otc");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
        assert_eq!(status["conditions"]["x-kubernetes-list-map-keys"][0], "type");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["jobId"]["x-kubernetes-validations"][0]["rule"], "self == oldSelf");
        let required: Vec<&str> = spec["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, vec!["jobId"]);
        // Never both identities; neither is the operator's call (--default-credentials).
        let rule = "!(has(self.credentialsRef) && has(self.serviceAccountRef))";
        assert_eq!(spec["x-kubernetes-validations"][0]["rule"], rule);
        let role = &spec["properties"]["assumeRole"];
        assert_eq!(role["x-kubernetes-validations"][0]["rule"], "has(self.domainName) != has(self.domainId)");
        assert_eq!(spec["properties"]["serviceAccountRef"]["required"][0], "name");
    }

    #[test]
    fn duration_pattern_matches_the_schema() {
        let crd = serde_json::to_value(ImageJob::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["pollInterval"]["pattern"], DURATION_PATTERN);
    }
}
