//! The API server killed (SIGKILL) and restarted mid-job on the same etcd:
//! the operator keeps running, counts the broken ImageJob watch, and the job
//! completes (issue 10; RELIABILITY.md). The fault needs a control plane of
//! its own — killing the shared one would fail every test beside this one —
//! so `tests/cluster/up` starts a private etcd + kube-apiserver (own cache
//! directory and ports, the built tools linked from the shared cache) and
//! `tests/cluster/up` again is what restarts the killed API server: the path
//! that keeps etcd's data.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use common::e2e::{self, Operator, Sim};
use common::operator::free_port;
use common::{TestNamespace, run};
use imagejob_operator::crd::Phase;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster");

/// etcd + kube-apiserver of this test only; `tests/cluster/down` on drop.
struct PrivateControlPlane {
    cache: tempfile::TempDir,
    ports: [u16; 3],
    kubeconfig: PathBuf,
}

impl PrivateControlPlane {
    fn up() -> Self {
        let shared_bin = common::tool("kube-apiserver").parent().unwrap().to_owned();
        let cache = tempfile::Builder::new().prefix("imagejob-private-cp-").tempdir().unwrap();
        std::os::unix::fs::symlink(&shared_bin, cache.path().join("bin")).unwrap();
        let mut cp =
            PrivateControlPlane { cache, ports: [free_port(), free_port(), free_port()], kubeconfig: PathBuf::new() };
        let (kubeconfig, _) = cp.script("up");
        cp.kubeconfig = PathBuf::from(kubeconfig.lines().last().expect("kubeconfig path").trim());
        cp
    }

    /// Runs a tests/cluster script against this control plane: (stdout, stderr).
    fn script(&self, name: &str) -> (String, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(SCRIPTS).join(name))
            .env("IMAGEJOB_CACHE", self.cache.path())
            .env("IMAGEJOB_ETCD_PORT", self.ports[0].to_string())
            .env("IMAGEJOB_ETCD_PEER_PORT", self.ports[1].to_string())
            .env("IMAGEJOB_APISERVER_PORT", self.ports[2].to_string())
            // Outside the 2..251 a cache path hashes to: never the shared
            // cluster's node network (which `down` would remove).
            .env("IMAGEJOB_NET_INDEX", "1");
        let out = run(&mut cmd, None);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "tests/cluster/{name} failed:\n{stderr}");
        (stdout.into_owned(), stderr.into_owned())
    }

    fn kill_apiserver(&self) {
        let pid_file = self.cache.path().join("cluster/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success(), "kill -9 {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie its adopter has not reaped yet.
        let alive = || std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"));
        while alive() {
            assert!(Instant::now() < deadline, "kube-apiserver {pid} still there after SIGKILL");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.script("down"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_killed_and_restarted_mid_job_loses_nothing() {
    let started = Instant::now();
    let cp = tokio::task::spawn_blocking(PrivateControlPlane::up).await.unwrap();
    eprintln!("private control plane ready in {:.1}s", started.elapsed().as_secs_f64());
    let client = cp.client().await;
    e2e::install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-apiserver-restart").await;
    let run_label = e2e::unique_label();

    // RUNNING with rising progress for 45 s: it ends after the API server is back.
    let sim = Sim::start(serde_json::json!([e2e::succeeding_job("ff8080817a0a0a0a017a0a0a0a0a0001", "0s", "45s")]));
    e2e::create_aksk_secret(&client, &ns.name, "creds", e2e::SK).await;
    let mut cmd = Operator::run_command(&sim, &run_label);
    cmd.env("KUBECONFIG", &cp.kubeconfig).args(["--poll-interval", "1s"]);
    let mut op = Operator::spawn(cmd, None).expect("start imagejob-operator");
    e2e::create(&client, &ns.name, &e2e::imagejob("survivor", &run_label, "ff8080817a0a0a0a017a0a0a0a0a0001", "creds"))
        .await;
    let running = e2e::wait_status(&client, &ns.name, "survivor", Duration::from_secs(30), "Running", |s| {
        s.phase == Some(Phase::Running)
    })
    .await;

    let down_at = Instant::now();
    cp.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!op.exited(), "the operator exited while the API server was down:\n{}", op.log());

    let (_, up_log) = tokio::task::block_in_place(|| cp.script("up"));
    assert!(up_log.contains("data kept"), "up restarts only the API server, on the running etcd:\n{up_log}");
    let back_after = down_at.elapsed();
    let back_at = Instant::now();

    // Same etcd: the ImageJob and its status are still there.
    let kept = e2e::status(&client, &ns.name, "survivor").await.expect("the ImageJob survived the restart");
    assert!(kept.phase.is_some() && kept.observed_generation == running.observed_generation, "{kept:?}");
    let moved = e2e::wait_status(&client, &ns.name, "survivor", Duration::from_secs(30), "progress written", |s| {
        s.progress > kept.progress || s.phase == Some(Phase::Succeeded)
    })
    .await;
    let first_write_after = back_at.elapsed();
    eprintln!("progress {:?} -> {:?}", kept.progress, moved.progress);
    let done = e2e::wait_status(&client, &ns.name, "survivor", Duration::from_secs(90), "Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(done.image_id.as_deref(), Some("49e9447f-7dff-41e0-8036-f66fe5488c8b"));
    assert!(!op.exited(), "the operator is still running:\n{}", op.log());
    let watch_errors = op.metric_with("imagejob_watch_errors_total", &[("resource", "imagejobs")]).await;
    assert!(watch_errors >= 1.0, "the broken ImageJob watch is counted ({watch_errors})");
    eprintln!(
        "API server down for {:.1}s (SIGKILL to ready again); first status write {:.1}s and Succeeded \
         {:.1}s after it was back; {watch_errors} ImageJob watch errors counted; {} IMS requests",
        back_after.as_secs_f64(),
        first_write_after.as_secs_f64(),
        back_at.elapsed().as_secs_f64(),
        sim.requests("ff8080817a0a0a0a017a0a0a0a0a0001").await
    );
    ns.cleanup().await;
}
