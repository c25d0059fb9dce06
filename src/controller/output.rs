//! Hands a Succeeded ImageJob's result on to the next step: the ConfigMap
//! named by `spec.outputConfigMapRef`, in the ImageJob's namespace, owned by
//! it. The pure part builds the ConfigMap and decides what to do with the one
//! that exists; `export` does the API calls. No cloud call is made here: the
//! data comes from the status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::FIELD_MANAGER;
use crate::crd::{ImageJob, ImageJobStatus, Phase};
use crate::status::{self, Cond, EventSpec};

/// The condition that reports the export (absent without `outputConfigMapRef`).
pub const OUTPUT_READY: &str = "OutputReady";
/// Reasons of `OutputReady`.
pub const WRITTEN: &str = "OutputWritten";
pub const CONFLICT: &str = "OutputConflict";
pub const FAILED: &str = "OutputFailed";
pub const INVALID: &str = "OutputInvalid";
pub const DISABLED: &str = "OutputsDisabled";

/// Labels on every exported ConfigMap: the operator watches (and caches)
/// only ConfigMaps with the first; the second names the ImageJob.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "imagejob-operator";
pub const IMAGEJOB_LABEL: &str = "ims.otc.io/imagejob";

/// The label selector of the ConfigMap watch.
pub fn selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// What the operator knows of its output ConfigMaps without holding their
/// data: any tenant may label ConfigMaps as ours, so the watch caches
/// metadata only, and the content is fetched when it may have changed.
pub struct Outputs {
    pub store: Store<PartialObjectMeta<ConfigMap>>,
    /// The resourceVersion at which each ConfigMap last held our content.
    verified: Mutex<HashMap<ObjectRef<PartialObjectMeta<ConfigMap>>, String>>,
}

impl Outputs {
    pub fn new(store: Store<PartialObjectMeta<ConfigMap>>) -> Self {
        Self { store, verified: Mutex::default() }
    }

    /// True when the cached metadata shows the very version we last checked.
    fn unchanged(&self, key: &ObjectRef<PartialObjectMeta<ConfigMap>>) -> bool {
        let seen = self.store.get(key).and_then(|m| m.resource_version());
        seen.is_some() && self.verified.lock().unwrap().get(key) == seen.as_ref()
    }

    fn verified_at(&self, key: ObjectRef<PartialObjectMeta<ConfigMap>>, resource_version: Option<String>) {
        let mut verified = self.verified.lock().unwrap();
        match resource_version {
            Some(rv) => verified.insert(key, rv),
            None => verified.remove(&key),
        };
    }
}

/// The ConfigMap's name when the ImageJob wants its result exported now:
/// Succeeded (never Failed) and `spec.outputConfigMapRef` set.
pub fn wanted<'a>(ij: &'a ImageJob, status: &ImageJobStatus) -> Option<&'a str> {
    let name = ij.spec.output_config_map_ref.as_ref()?.name.as_str();
    (status.phase == Some(Phase::Succeeded)).then_some(name)
}

/// True when a finished ImageJob's reconcile must look at its output: it
/// names a ConfigMap, or still shows `OutputReady` for one it no longer names.
pub fn involved(ij: &ImageJob, status: Option<&ImageJobStatus>) -> bool {
    ij.spec.output_config_map_ref.is_some() || status.is_some_and(|s| status::condition(s, OUTPUT_READY).is_some())
}

/// How often a conflict is looked at again: the foreign ConfigMap is not
/// watched (only the operator's own are), so its removal is noticed this way.
pub const CONFLICT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// When to look again at an ImageJob whose output is blocked, if it is.
pub fn recheck(status: &ImageJobStatus) -> Option<std::time::Duration> {
    let c = status::condition(status, OUTPUT_READY)?;
    (c.status != "True" && c.reason == CONFLICT).then_some(CONFLICT_RECHECK)
}

/// The keys of the ConfigMap (docs/contract.md) but `results.json`. Every key is
/// present, empty when unknown, so that a consumer's `${imageId}` is never
/// left unresolved. All are valid Flux variable names: Flux's
/// `postBuild.substituteFrom` refuses a ConfigMap whose `data` has any key
/// that is not one, which is why `results.json` goes to `binaryData`.
pub fn output_data(ij: &ImageJob, status: &ImageJobStatus, region: &str, project_id: &str) -> BTreeMap<String, String> {
    // A cross-region copy may report its images only in the results.
    let image_id = status.image_id.clone().or_else(|| status.results.iter().find_map(|r| r.image_id.clone()));
    let data_image_ids: Vec<&str> = status.images.iter().filter(|i| i.kind == "data").map(|i| i.id.as_str()).collect();
    BTreeMap::from([
        ("imageId".to_owned(), image_id.unwrap_or_default()),
        ("imageName".to_owned(), status.image_name.clone().unwrap_or_default()),
        ("dataImageIds".to_owned(), data_image_ids.join(",")),
        ("jobId".to_owned(), ij.spec.job_id.clone()),
        ("jobType".to_owned(), status.job_type.clone().unwrap_or_default()),
        ("projectId".to_owned(), project_id.to_owned()),
        ("region".to_owned(), region.to_owned()),
    ])
}

/// `results.json`: the results list (one image per project for cross-region
/// copies), as JSON. In `binaryData`, which Flux ignores and a volume mount
/// shows as the file `results.json`.
pub fn results_json(status: &ImageJobStatus) -> BTreeMap<String, ByteString> {
    let json = serde_json::to_vec(&status.results).expect("results always serialise");
    BTreeMap::from([(RESULTS_KEY.to_owned(), ByteString(json))])
}

pub const RESULTS_KEY: &str = "results.json";

/// The ConfigMap as the operator applies it.
pub fn desired(ij: &ImageJob, name: &str, data: BTreeMap<String, String>, status: &ImageJobStatus) -> ConfigMap {
    let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]);
    // A label value holds at most 63 characters; longer names are found
    // through the owner reference instead.
    if ij.name_any().len() <= 63 {
        labels.insert(IMAGEJOB_LABEL.to_owned(), ij.name_any());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: ij.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(ij)]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        binary_data: Some(results_json(status)),
        ..ConfigMap::default()
    }
}

/// `controller: true` makes the ImageJob the one owner that acts on it;
/// `blockOwnerDeletion` keeps a foreground deletion of the ImageJob waiting
/// until the ConfigMap is gone.
fn owner_reference(ij: &ImageJob) -> OwnerReference {
    OwnerReference {
        api_version: ImageJob::api_version(&()).into_owned(),
        kind: ImageJob::kind(&()).into_owned(),
        name: ij.name_any(),
        uid: ij.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The ImageJob (by namespace and name) that controls a ConfigMap, if any.
pub fn controller_of(cm: &impl Resource<DynamicType = ()>) -> Option<ObjectRef<ImageJob>> {
    let owner = cm.owner_references().iter().find(|o| o.controller == Some(true))?;
    let ours = owner.kind == ImageJob::kind(&()) && owner.api_version.starts_with("ims.otc.io/");
    let namespace = cm.namespace()?;
    ours.then(|| ObjectRef::new(&owner.name).within(&namespace))
}

/// What to do about the ConfigMap of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// None exists: create it (a create, not an apply, so that one made
    /// meanwhile by someone else is never merged into).
    Create,
    /// Ours, but a key, label or the owner reference differs (changed by
    /// someone else, or the result changed): apply ours again.
    Apply,
    UpToDate,
    /// Someone else's: leave it alone and say so.
    Conflict {
        owner: String,
    },
    /// A value IMS sent is not what its key promises: nothing is written
    /// (it would reach manifests through substitution).
    Refused {
        why: String,
    },
}

/// Checks each value that came from IMS against what IMS itself allows:
/// image IDs are UUIDs (letters, digits, `-`, `_` are let through), image names follow IMS's naming rule (letters,
/// digits, spaces, `_`, `-`, `.`), job types are identifiers. Empty values
/// (not reported) pass. The first offence, or None.
pub fn invalid_value(data: &BTreeMap<String, String>) -> Option<String> {
    type Rule = (&'static str, fn(&str) -> bool, &'static str);
    let rules: [Rule; 4] = [
        ("imageId", is_image_id, "an image ID (letters, digits, '-', '_')"),
        ("dataImageIds", |v| v.split(',').all(is_image_id), "image IDs separated by ','"),
        ("imageName", is_image_name, "an image name (1-255 letters, digits, spaces, '_', '-', '.')"),
        ("jobType", is_job_type, "a job type (letters and digits)"),
    ];
    rules.into_iter().find_map(|(key, valid, what)| {
        let value = data.get(key).map(String::as_str).unwrap_or_default();
        (!value.is_empty() && !valid(value))
            .then(|| format!("IMS reported a {key} that is not {what}: {:?}", crate::status::bound::cut(value, 80)))
    })
}

fn is_image_id(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_image_name(v: &str) -> bool {
    (1..=255).contains(&v.chars().count())
        && v.trim() == v
        && v.chars().all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'))
}

fn is_job_type(v: &str) -> bool {
    v.len() <= 64 && v.starts_with(|c: char| c.is_ascii_alphabetic()) && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub fn plan(existing: Option<&ConfigMap>, desired: &ConfigMap, uid: &str) -> Plan {
    let Some(cm) = existing else { return Plan::Create };
    let controller = cm.owner_references().iter().find(|o| o.controller == Some(true));
    if controller.map(|o| o.uid.as_str()) != Some(uid) {
        let owner = controller.map_or_else(|| "no controller".to_owned(), |o| format!("{} {}", o.kind, o.name));
        return Plan::Conflict { owner };
    }
    // Keys or labels others added are theirs (server-side apply keeps them).
    let same_owner = desired.owner_references().iter().all(|o| cm.owner_references().contains(o));
    if contains(&cm.data, &desired.data)
        && contains(&cm.binary_data, &desired.binary_data)
        && contains(&cm.metadata.labels, &desired.metadata.labels)
        && same_owner
    {
        Plan::UpToDate
    } else {
        Plan::Apply
    }
}

/// Every entry of `want` is in `have`.
fn contains<V: PartialEq>(have: &Option<BTreeMap<String, V>>, want: &Option<BTreeMap<String, V>>) -> bool {
    let have = have.as_ref();
    want.iter().flatten().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// The `OutputReady` condition for what happened.
pub fn condition(name: &str, result: &Result<Plan, String>) -> Cond {
    let (ok, reason, message) = match result {
        Ok(Plan::Conflict { owner }) => (
            false,
            CONFLICT,
            format!("ConfigMap {name} exists and is not owned by this ImageJob ({owner}); it was left unchanged"),
        ),
        Ok(Plan::Refused { why }) => (false, INVALID, format!("ConfigMap {name} was not written: {why}")),
        Ok(_) => (true, WRITTEN, format!("ConfigMap {name} holds the result")),
        Err(e) => (false, FAILED, format!("writing ConfigMap {name} failed: {e}; retrying")),
    };
    Cond { type_: OUTPUT_READY, status: ok, reason: reason.to_owned(), message }
}

/// Events when `OutputReady` changes: a Warning on a conflict or failure, a
/// Normal event when the ConfigMap is first written.
pub fn transition_events(prev: Option<&ImageJobStatus>, new: &ImageJobStatus) -> Vec<EventSpec> {
    let Some(c) = status::condition(new, OUTPUT_READY) else { return Vec::new() };
    let old = prev.and_then(|p| status::condition(p, OUTPUT_READY));
    if old.is_some_and(|o| o.status == c.status && o.reason == c.reason) {
        return Vec::new();
    }
    vec![EventSpec { warning: c.status != "True", reason: c.reason.clone(), message: c.message.clone() }]
}

/// Exports the result when wanted and records it in `new`'s conditions
/// (dropping `OutputReady` when `outputConfigMapRef` is gone). An API error
/// is both shown in the condition and returned, so the reconcile retries.
pub async fn export<S>(
    ij: &ImageJob,
    ctx: &super::Ctx<S>,
    new: &mut ImageJobStatus,
    inputs: &status::Inputs<'_>,
) -> Result<(), kube::Error> {
    if ij.spec.output_config_map_ref.is_none() {
        new.conditions.retain(|c| c.type_ != OUTPUT_READY);
        return Ok(());
    }
    let Some(name) = wanted(ij, new) else { return Ok(()) };
    if !ctx.args.outputs {
        let message = format!(
            "ConfigMap {name} was not written: this operator runs without outputs (--outputs=false; chart value outputs.enabled)"
        );
        let cond = Cond { type_: OUTPUT_READY, status: false, reason: DISABLED.to_owned(), message };
        status::set_condition(&mut new.conditions, cond, inputs);
        return Ok(());
    }
    let result = write(ij, ctx, new, name).await;
    let shown = result.as_ref().map(Clone::clone).map_err(ToString::to_string);
    status::set_condition(&mut new.conditions, condition(name, &shown), inputs);
    result.map(drop)
}

const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn write<S>(
    ij: &ImageJob,
    ctx: &super::Ctx<S>,
    status: &ImageJobStatus,
    name: &str,
) -> Result<Plan, kube::Error> {
    let namespace = ij.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::new(name).within(&namespace);
    // Before its first list the cache would call every ConfigMap missing; a
    // watch that cannot list (e.g. RBAC) must not hold the reconcile up.
    let outputs = match &ctx.outputs {
        Some(o) => tokio::time::timeout(CACHE_WAIT, o.store.wait_until_ready()).await.ok().map(|_| o),
        None => None,
    };
    if outputs.is_some_and(|o| o.unchanged(&key)) {
        return Ok(Plan::UpToDate);
    }
    let cached = api.get_opt(name).await?;
    let region = ij.spec.region.clone().unwrap_or_else(|| ctx.args.default_region.clone());
    let project_id = project_id(ij, ctx, cached.as_ref()).await;
    let data = output_data(ij, status, &region, &project_id);
    if let Some(why) = invalid_value(&data) {
        return Ok(Plan::Refused { why });
    }
    let want = desired(ij, name, data, status);
    let uid = ij.uid().unwrap_or_default();
    let mut existing = cached;
    loop {
        let plan = plan(existing.as_ref(), &want, &uid);
        let mut written_rv = existing.as_ref().and_then(|cm| cm.resource_version());
        match &plan {
            Plan::Create => {
                let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
                written_rv = match api.create(&pp, &want).await {
                    // Made by someone else since the cache saw none: look at it.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        existing = Some(api.get(name).await?);
                        continue;
                    }
                    other => other?.resource_version(),
                };
            }
            Plan::Apply => {
                // The resourceVersion we judged is a precondition: a ConfigMap
                // replaced meanwhile by someone else's is not overwritten.
                let mut cm = want.clone();
                cm.metadata.resource_version = existing.as_ref().and_then(|e| e.resource_version());
                let patch = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": cm.metadata, "data": cm.data, "binaryData": cm.binary_data,
                });
                written_rv = api
                    .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
                    .await?
                    .resource_version();
            }
            Plan::Conflict { .. } | Plan::Refused { .. } => written_rv = None,
            Plan::UpToDate => {}
        }
        if let Some(o) = outputs {
            o.verified_at(key, written_rv);
        }
        return Ok(plan);
    }
}

/// `spec.projectId`, else the one this ConfigMap already carries (it came
/// from the Secret), else the credentials Secret's `projectId`: a Secret
/// read only when there is nothing else to go by.
async fn project_id<S>(ij: &ImageJob, ctx: &super::Ctx<S>, existing: Option<&ConfigMap>) -> String {
    if let Some(p) = &ij.spec.project_id {
        return p.clone();
    }
    let uid = ij.uid().unwrap_or_default();
    let ours = existing.filter(|cm| cm.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true)));
    if let Some(p) = ours.and_then(|cm| cm.data.as_ref()?.get("projectId").filter(|p| !p.is_empty()).cloned()) {
        return p;
    }
    let namespace = ij.namespace().unwrap_or_default();
    let Some(secret) = &ij.spec.credentials_ref else { return String::new() };
    match ctx.secrets.load(&namespace, &secret.name).await {
        Ok(loaded) => loaded.project_id.clone().unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::JobResultStatus;
    use serde_json::json;

    fn imagejob(output: Option<&str>) -> ImageJob {
        let mut spec = json!({"jobId": "job-1", "projectId": "p1", "credentialsRef": {"name": "creds"}});
        if let Some(name) = output {
            spec["outputConfigMapRef"] = json!({"name": name});
        }
        serde_json::from_value(json!({
            "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob",
            "metadata": {"name": "build", "namespace": "ns", "uid": "uid-1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn succeeded() -> ImageJobStatus {
        ImageJobStatus {
            phase: Some(Phase::Succeeded),
            image_id: Some("img-1".into()),
            image_name: Some("my-image".into()),
            job_type: Some("imsCreateImageByInstance".into()),
            results: vec![JobResultStatus {
                image_id: Some("img-1".into()),
                project_id: Some("p1".into()),
                status: Some("SUCCESS".into()),
            }],
            ..ImageJobStatus::default()
        }
    }

    #[test]
    fn only_a_succeeded_job_with_a_ref_is_exported() {
        let ij = imagejob(Some("out"));
        assert_eq!(wanted(&ij, &succeeded()), Some("out"));
        for phase in [Phase::Pending, Phase::Running, Phase::Failed] {
            assert_eq!(wanted(&ij, &ImageJobStatus { phase: Some(phase), ..succeeded() }), None, "{phase:?}");
        }
        assert_eq!(wanted(&imagejob(None), &succeeded()), None);
    }

    #[test]
    fn values_from_ims_are_checked_before_export() {
        let data = |key: &str, value: &str| {
            let mut d = output_data(&imagejob(Some("out")), &succeeded(), "eu-de", "p1");
            d.insert(key.into(), value.into());
            d
        };
        assert_eq!(invalid_value(&data("imageName", "")), None, "not reported is fine");
        for (key, ok) in [
            ("imageId", "49e9447f-7dff-41e0-8036-f66fe5488c8b"),
            ("dataImageIds", "5b7d3c1e-2f4a-4e6b-9c8d-1a2b3c4d5e6f,0d2e4f6a-8b1c-4d3e-9f5a-7b6c5d4e3f2a"),
            ("imageName", "web server_1.0-rc"),
            ("imageName", "镜像 Ubuntu"),
            ("jobType", "imsImportOvaImageJob"),
        ] {
            assert_eq!(invalid_value(&data(key, ok)), None, "{key}={ok}");
        }
        for (key, bad) in [
            ("imageName", "web   hostNetwork: true"),
            ("imageName", "web\n  hostNetwork: true"),
            ("imageName", " padded"),
            ("imageName", "${SECRET}"),
            ("imageId", "49e9447f/../x"),
            ("imageId", "id with space"),
            ("dataImageIds", "ok-1,bad id"),
            ("jobType", "ims Job"),
        ] {
            let why = invalid_value(&data(key, bad)).unwrap_or_else(|| panic!("{key}={bad:?} must be refused"));
            assert!(why.contains(key), "{why}");
        }
        let refused = condition("out", &Ok(Plan::Refused { why: "IMS reported a imageName …".into() }));
        assert_eq!((refused.status, refused.reason.as_str()), (false, INVALID));
    }

    #[test]
    fn data_has_every_contract_key() {
        let data = output_data(&imagejob(Some("out")), &succeeded(), "eu-de", "p1");
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["dataImageIds", "imageId", "imageName", "jobId", "jobType", "projectId", "region"]);
        // Flux's substituteFrom refuses the whole ConfigMap over one key that
        // is not a variable name (^[_a-zA-Z][_a-zA-Z0-9]*$).
        assert!(keys.iter().all(|k| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')));
        assert_eq!(data["imageId"], "img-1");
        assert_eq!(data["jobId"], "job-1");
        assert_eq!(data["region"], "eu-de");
        let binary = results_json(&succeeded());
        let results: serde_json::Value = serde_json::from_slice(&binary["results.json"].0).unwrap();
        assert_eq!(results, json!([{"imageId": "img-1", "projectId": "p1", "status": "SUCCESS"}]));
        // A copy that names its images only in the results still hands one on.
        let copy = ImageJobStatus { image_id: None, ..succeeded() };
        assert_eq!(output_data(&imagejob(Some("out")), &copy, "eu-de", "p1")["imageId"], "img-1");
        let empty = ImageJobStatus { phase: Some(Phase::Succeeded), ..ImageJobStatus::default() };
        assert_eq!(output_data(&imagejob(Some("out")), &empty, "eu-de", "")["imageId"], "");
        assert_eq!(output_data(&imagejob(Some("out")), &empty, "eu-de", "")["dataImageIds"], "");
        // An OVA import: the system disk image is imageId, the data disks follow.
        let image =
            |id: &str, kind: &str| crate::crd::ImageStatus { id: id.into(), kind: kind.into(), ..Default::default() };
        let ova = ImageJobStatus {
            images: vec![image("sys", "system"), image("d1", "data"), image("d2", "data")],
            ..succeeded()
        };
        assert_eq!(output_data(&imagejob(Some("out")), &ova, "eu-de", "p1")["dataImageIds"], "d1,d2");
        assert_eq!(results_json(&empty)["results.json"].0, b"[]");
    }

    #[test]
    fn desired_is_owned_and_labelled() {
        let ij = imagejob(Some("out"));
        let cm = desired(&ij, "out", BTreeMap::new(), &succeeded());
        assert_eq!(cm.metadata.namespace.as_deref(), Some("ns"));
        let owner = &cm.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("ImageJob", "build", "uid-1"));
        assert_eq!(owner.api_version, "ims.otc.io/v1alpha1");
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(cm.labels()[MANAGED_BY_LABEL], "imagejob-operator");
        assert_eq!(cm.labels()[IMAGEJOB_LABEL], "build");
        assert_eq!(controller_of(&cm), Some(ObjectRef::new("build").within("ns")));
        let mut long = ij.clone();
        long.metadata.name = Some("x".repeat(64));
        assert!(!desired(&long, "out", BTreeMap::new(), &succeeded()).labels().contains_key(IMAGEJOB_LABEL));
    }

    #[test]
    fn plan_creates_repairs_and_never_takes_over() {
        let ij = imagejob(Some("out"));
        let want = desired(&ij, "out", output_data(&ij, &succeeded(), "eu-de", "p1"), &succeeded());
        assert_eq!(plan(None, &want, "uid-1"), Plan::Create);
        assert_eq!(plan(Some(&want), &want, "uid-1"), Plan::UpToDate);

        // Someone else's keys and labels are theirs; ours are restored.
        let mut added = want.clone();
        added.data.as_mut().unwrap().insert("extra".into(), "x".into());
        added.labels_mut().insert("team".into(), "a".into());
        assert_eq!(plan(Some(&added), &want, "uid-1"), Plan::UpToDate);
        let mut edited = want.clone();
        edited.data.as_mut().unwrap().insert("imageId".into(), "tampered".into());
        assert_eq!(plan(Some(&edited), &want, "uid-1"), Plan::Apply);
        let mut stale = want.clone();
        stale.binary_data = Some(results_json(&ImageJobStatus::default()));
        assert_eq!(plan(Some(&stale), &want, "uid-1"), Plan::Apply);
        let mut unlabelled = want.clone();
        unlabelled.labels_mut().remove(MANAGED_BY_LABEL);
        assert_eq!(plan(Some(&unlabelled), &want, "uid-1"), Plan::Apply);

        // A ConfigMap without us as controller is never ours to write.
        let mut foreign = want.clone();
        foreign.metadata.owner_references = None;
        assert_eq!(plan(Some(&foreign), &want, "uid-1"), Plan::Conflict { owner: "no controller".into() });
        // Nor one of an earlier ImageJob of the same name (another uid).
        assert_eq!(plan(Some(&want), &want, "uid-2"), Plan::Conflict { owner: "ImageJob build".into() });
    }

    #[test]
    fn condition_and_events_follow_the_result() {
        let written = condition("out", &Ok(Plan::Create));
        assert_eq!((written.status, written.reason.as_str()), (true, WRITTEN));
        let conflict = condition("out", &Ok(Plan::Conflict { owner: "no controller".into() }));
        assert_eq!((conflict.status, conflict.reason.as_str()), (false, CONFLICT));
        assert!(conflict.message.contains("not owned by this ImageJob"), "{}", conflict.message);
        let failed = condition("out", &Err("forbidden".into()));
        assert_eq!((failed.status, failed.reason.as_str()), (false, FAILED));

        let inputs = status::Inputs { generation: Some(1), now: jiff::Timestamp::now(), requested_at: None, eta: None };
        let mut prev = succeeded();
        status::set_condition(&mut prev.conditions, written.clone(), &inputs);
        assert_eq!(transition_events(None, &prev).len(), 1);
        assert!(!transition_events(None, &prev)[0].warning);
        assert!(transition_events(Some(&prev), &prev).is_empty(), "no Event without a change");
        let mut now = prev.clone();
        status::set_condition(&mut now.conditions, conflict, &inputs);
        let events = transition_events(Some(&prev), &now);
        assert_eq!(events.len(), 1);
        assert!(events[0].warning && events[0].reason == CONFLICT, "{events:?}");

        // Only a conflict is looked at again by itself; a written one waits for its watch.
        assert_eq!(recheck(&now), Some(CONFLICT_RECHECK));
        assert_eq!(recheck(&prev), None);
        assert!(involved(&imagejob(Some("out")), None));
        assert!(involved(&imagejob(None), Some(&prev)), "a condition left from a removed ref");
        assert!(!involved(&imagejob(None), Some(&succeeded())));
    }
}
