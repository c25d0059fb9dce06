//! Cluster objects: the bench's namespaces, Secrets and ImageJobs, and
//! what the API server counted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use imagejob_operator::crd::ImageJob;

use crate::common::e2e::Sim;
use crate::plans::Unit;
use crate::tracking::{Tracked, Tracker};
use crate::{Args, log};

const AK: &str = "SCALEBENCHACCESSKEY";
const SK: &str = "scale-bench-secret-key";

/// An ims-sim scenario for `projects`, with the bench's AK/SK pair and an
/// optional gateway throttle.
pub fn scenario(throttle: Option<Value>, projects: &[String]) -> Value {
    let mut s = json!({
        "settings": {"clock": "sim_start", "time_format": "rfc3339"},
        "projects": projects.iter().map(|p| json!({"id": p})).collect::<Vec<_>>(),
        "access_keys": [{"access": AK, "secret": SK}],
    });
    if let Some(t) = throttle {
        s["settings"]["throttle"] = t;
    }
    s
}

pub struct Bench {
    pub args: Args,
    pub client: Client,
    pub run: String,
    pub run_no: u32,
    pub tracker: Arc<Mutex<Tracker>>,
    pub namespaces: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Bench {
    pub async fn create_namespaces(&mut self, n: usize) -> anyhow::Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        for i in 0..n {
            let name = format!("scale-{}-{i:02}", self.run);
            let ns: Namespace = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"imagejob-operator/test": "true", "scale-bench": self.run}}
            }))?;
            api.create(&PostParams::default(), &ns).await?;
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "otc-credentials"},
                "stringData": {"accessKey": AK, "secretKey": SK}
            }))?;
            Api::<Secret>::namespaced(self.client.clone(), &name).create(&PostParams::default(), &secret).await?;
            self.namespaces.push(name);
        }
        Ok(())
    }

    pub async fn cleanup(&self) {
        if self.args.keep {
            log(format!("keeping namespaces scale-{}-*", self.run));
            return;
        }
        let api = Api::<Namespace>::all(self.client.clone());
        for ns in &self.namespaces {
            let _ = api.delete(ns, &DeleteParams::default()).await;
        }
    }

    /// PUTs each cloud job into the simulator (its clock starts), then
    /// creates its ImageJobs; `concurrency` units in flight.
    pub async fn create_units(&self, sim: &Sim, units: Vec<Unit>, concurrency: usize) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(units)
            .map(|u| async move {
                sim.put_job(&u.job.project, &u.job.job_id, &u.job.sim_def()).await.map_err(anyhow::Error::msg)?;
                let _ = u.job.t0.set(Instant::now());
                for (ns, name) in &u.objects {
                    let mut ij: ImageJob = serde_json::from_value(json!({
                        "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob",
                        "metadata": {"name": name, "labels": {"scale-bench": self.run, "scale-op": u.op_label}},
                        "spec": {"jobId": u.job.job_id, "projectId": u.job.project, "credentialsRef": {"name": "otc-credentials"}}
                    }))?;
                    ij.spec.poll_policy = u.policy;
                    self.tracker.lock().unwrap().objs.insert(
                        (ns.clone(), name.clone()),
                        Tracked::new(u.job.clone(), u.group),
                    );
                    Api::<ImageJob>::namespaced(self.client.clone(), ns).create(&PostParams::default(), &ij).await?;
                }
                Ok(())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(start.elapsed())
    }

    pub async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Tracker) -> usize) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let left = done(&self.tracker.lock().unwrap());
            if left == 0 {
                return true;
            }
            if Instant::now() > deadline {
                log(format!("timed out waiting for {what}: {left} left"));
                return false;
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                log(format!("waiting for {what}: {left} left"));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `apiserver_request_total` for imagejobs/status patches, summed over codes.
/// Server-side apply is counted as verb="APPLY", other patches as "PATCH".
pub async fn apiserver_status_patches(client: &Client) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await.context("API server /metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            l.contains(r#"resource="imagejobs""#)
                && l.contains(r#"subresource="status""#)
                && (l.contains(r#"verb="PATCH""#) || l.contains(r#"verb="APPLY""#))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0)
}
