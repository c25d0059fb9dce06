//! A private etcd + kube-apiserver for tests that break the control plane
//! (killing or freezing the shared one would fail every test beside them):
//! `tests/cluster/up` with its own cache directory and ports, the built
//! tools linked from the shared cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::operator::free_port;
use super::run;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster");

/// etcd + kube-apiserver of one test; `tests/cluster/down` on drop.
pub struct PrivateControlPlane {
    cache: tempfile::TempDir,
    /// etcd client, etcd peer and kube-apiserver ports.
    pub ports: [u16; 3],
    pub kubeconfig: PathBuf,
}

impl PrivateControlPlane {
    /// Its directory and ports, nothing started yet.
    pub fn new() -> Self {
        let shared_bin = super::tool("kube-apiserver").parent().unwrap().to_owned();
        let cache = tempfile::Builder::new().prefix("imagejob-private-cp-").tempdir().unwrap();
        std::os::unix::fs::symlink(&shared_bin, cache.path().join("bin")).unwrap();
        let kubeconfig = cache.path().join("cluster/admin.kubeconfig");
        PrivateControlPlane { cache, ports: [free_port(), free_port(), free_port()], kubeconfig }
    }

    /// Started by `tests/cluster/up`.
    pub fn up() -> Self {
        Self::up_with(&[])
    }

    /// Started by `tests/cluster/up` with more environment variables.
    pub fn up_with(env: &[(&str, &str)]) -> Self {
        let cp = Self::new();
        let (stdout, _) = cp.script_with("up", env);
        assert_eq!(Path::new(stdout.lines().last().expect("kubeconfig path").trim()), cp.kubeconfig);
        cp
    }

    /// A tests/cluster script against this control plane, not yet run.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(SCRIPTS).join(name))
            .env("IMAGEJOB_CACHE", self.cache.path())
            .env("IMAGEJOB_ETCD_PORT", self.ports[0].to_string())
            .env("IMAGEJOB_ETCD_PEER_PORT", self.ports[1].to_string())
            .env("IMAGEJOB_APISERVER_PORT", self.ports[2].to_string())
            // Outside the 2..251 a cache path hashes to: never the shared
            // cluster's node network (which `down` would remove).
            .env("IMAGEJOB_NET_INDEX", "1");
        cmd
    }

    /// Runs a tests/cluster script to its end: its output, success or not.
    pub fn try_script(&self, name: &str) -> Output {
        self.try_script_with(name, &[])
    }

    /// As `try_script`, with more environment variables.
    pub fn try_script_with(&self, name: &str, env: &[(&str, &str)]) -> Output {
        run(self.command(name).envs(env.iter().copied()), None)
    }

    /// Runs a tests/cluster script that must succeed: (stdout, stderr).
    pub fn script(&self, name: &str) -> (String, String) {
        self.script_with(name, &[])
    }

    /// As `script`, with more environment variables.
    pub fn script_with(&self, name: &str, env: &[(&str, &str)]) -> (String, String) {
        let out = self.try_script_with(name, env);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "tests/cluster/{name} failed:\n{stderr}");
        (stdout.into_owned(), stderr.into_owned())
    }

    /// The pid `up` recorded for `etcd` or `kube-apiserver`, if any.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let file = self.cache.path().join(format!("cluster/{name}.pid"));
        std::fs::read_to_string(file).ok().map(|p| p.trim().parse().expect("a pid"))
    }

    pub fn kill_apiserver(&self) {
        let pid = self.pid("kube-apiserver").expect("kube-apiserver.pid").to_string();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success(), "kill -9 {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(&pid) {
            assert!(Instant::now() < deadline, "kube-apiserver {pid} still there after SIGKILL");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops `etcd` or `kube-apiserver` (SIGSTOP) until the guard drops.
    pub fn freeze(&self, name: &str) -> Frozen {
        Frozen::stop(self.pid(name).unwrap_or_else(|| panic!("{name}.pid")))
    }

    pub async fn client(&self) -> Client {
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

/// A process stopped by SIGSTOP: it keeps its connections open and answers
/// nothing, as a process stalled on its disk (or etcd cut off from its
/// quorum) does. SIGCONT on drop, so a failing test never leaves it stopped.
pub struct Frozen(u32);

impl Frozen {
    pub fn stop(pid: u32) -> Self {
        let sent = Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
        assert!(sent.success(), "kill -STOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// There, and neither gone nor a zombie its adopter has not reaped yet.
pub fn process_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"))
}
