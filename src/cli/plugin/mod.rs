//! `kubectl imagejob`: a kubectl plugin to look at and wait for ImageJobs.
//!
//! `status NAME` (one screen), `wait NAME… [--timeout]` (until each is
//! Succeeded or Failed, exit codes of `job wait`), `refresh NAME` (asks the
//! operator for a poll now and waits until the status echoes the request).
//! The kubeconfig is found as kubectl finds it: `--kubeconfig`, else
//! `KUBECONFIG` (a list of files), else `~/.kube/config`; `--context`;
//! `-n/--namespace`, else the context's namespace.

pub mod follow;
pub mod screen;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::Exit;
use crate::crd::ImageJob;

#[derive(clap::Parser, Debug)]
#[command(
    name = "kubectl-imagejob",
    version,
    about = "Look at and wait for ImageJobs (ims.otc.io)",
    after_help = "Exit codes and condition reasons: docs/contract.md"
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Phase, progress, ETA, current task, image, sub-jobs, conditions and the last Events.
    Status { name: String },
    /// Wait until each ImageJob is Succeeded or Failed (exit 0 all succeeded,
    /// 1 any failed, 2 timeout, 3 stalled or not found, 4 usage).
    Wait {
        #[arg(required = true)]
        names: Vec<String>,
        /// Give up after this long, e.g. 10m.
        #[arg(long, default_value = "1h", value_parser = crate::config::parse_duration)]
        timeout: Duration,
    },
    /// Ask the operator to poll the cloud now, wait until it did, show the status.
    Refresh {
        name: String,
        /// Give up after this long.
        #[arg(long, default_value = "1m", value_parser = crate::config::parse_duration)]
        timeout: Duration,
    },
}

/// Which cluster and namespace, as kubectl chooses them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// What stops the plugin, each with a message a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("imagejobs.ims.otc.io \"{name}\" not found in namespace {namespace}")]
    NotFound { name: String, namespace: String },
    #[error(
        "the ImageJob CRD (imagejobs.ims.otc.io) is not installed in this cluster: \
         apply crds/imagejob.yaml or install the chart"
    )]
    CrdMissing,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

impl PluginError {
    pub fn exit(&self) -> Exit {
        match self {
            PluginError::Kubeconfig(_) => Exit::Usage,
            _ => Exit::Stalled,
        }
    }
}

/// A connected client and the namespace to work in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl KubeArgs {
    pub async fn connect(&self) -> Result<Cluster, PluginError> {
        let bad = |e: &dyn std::fmt::Display| PluginError::Kubeconfig(e.to_string());
        let kubeconfig = match &self.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| bad(&e))?;
        let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| bad(&e))?;
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| bad(&e))?;
        Ok(Cluster { client, namespace })
    }
}

/// One ImageJob as read from the API server, and its ETA.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub imagejob: ImageJob,
    /// `status.estimatedCompletionTime`, the operator's estimate.
    pub eta: Option<Timestamp>,
}

impl From<ImageJob> for Fetched {
    fn from(imagejob: ImageJob) -> Self {
        let eta = imagejob.status.as_ref().and_then(|s| s.estimated_completion_time.as_ref()).map(|t| t.0);
        Fetched { imagejob, eta }
    }
}

impl Cluster {
    pub fn api(&self) -> Api<ImageJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The ImageJob, or an error that says whether the object, the CRD or
    /// the permission is missing.
    pub async fn fetch(&self, name: &str) -> Result<Fetched, PluginError> {
        match self.api().get(name).await {
            Ok(imagejob) => Ok(imagejob.into()),
            Err(err) => Err(self.explain(err, name).await),
        }
    }

    /// Turns a 404 into "no such ImageJob" or "no such CRD", a 403 into a
    /// clear refusal.
    pub async fn explain(&self, err: kube::Error, name: &str) -> PluginError {
        match err {
            kube::Error::Api(status) if status.code == 404 => {
                if self.crd_installed().await {
                    PluginError::NotFound { name: name.to_owned(), namespace: self.namespace.clone() }
                } else {
                    PluginError::CrdMissing
                }
            }
            kube::Error::Api(status) if status.code == 403 => PluginError::Forbidden(status.message),
            other => PluginError::Kube(other),
        }
    }

    /// Discovery is open to every authenticated user, unlike reading CRDs.
    async fn crd_installed(&self) -> bool {
        match self.client.list_api_group_resources("ims.otc.io/v1alpha1").await {
            Ok(list) => list.resources.iter().any(|r| r.name == "imagejobs"),
            Err(_) => false,
        }
    }

    /// The Events about one ImageJob, oldest first (none when they may not be read).
    pub async fn events(&self, imagejob: &ImageJob) -> Vec<Event> {
        let name = imagejob.metadata.name.as_deref().unwrap_or_default();
        let lp = ListParams::default().fields(&format!("involvedObject.name={name},involvedObject.kind=ImageJob"));
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut events = api.list(&lp).await.map(|l| l.items).unwrap_or_default();
        let uid = imagejob.metadata.uid.as_deref();
        events.retain(|e| uid.is_none() || e.involved_object.uid.as_deref() == uid);
        events.sort_by_key(screen::event_time);
        events
    }
}

/// Runs the plugin and returns its exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = async {
        let cluster = cli.kube.connect().await?;
        match cli.command {
            Command::Status { name } => follow::status(&cluster, &name).await,
            Command::Wait { names, timeout } => follow::wait(&cluster, &names, timeout).await,
            Command::Refresh { name, timeout } => follow::refresh(&cluster, &name, timeout).await,
        }
    }
    .await;
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("error: {err}");
            err.exit().into()
        }
    }
}
