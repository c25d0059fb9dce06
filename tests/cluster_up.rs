//! `tests/cluster/up` on a loaded machine (issue 24): a control plane whose
//! processes live is waited for, never wiped, however slowly it answers; a
//! port held by another process is named, and nothing is started or killed.
//! Each case runs a private etcd + kube-apiserver (tests/common/control_plane.rs).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, PostParams};

use common::control_plane::{Frozen, PrivateControlPlane, process_alive};
use common::e2e::Sim;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn create_marker(client: &Client) {
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "issue-24-marker"}, "data": {"kept": "yes"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&PostParams::default(), &cm).await.unwrap();
}

async fn marker_kept(client: &Client) -> bool {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "default").get_opt("issue-24-marker").await.unwrap();
    cm.and_then(|c| c.data).is_some_and(|d| d.get("kept").map(String::as_str) == Some("yes"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_api_server_is_waited_for_and_reused_never_wiped() {
    let cp = tokio::task::spawn_blocking(PrivateControlPlane::up).await.unwrap();
    let client = cp.client().await;
    create_marker(&client).await;
    let (etcd, apiserver) = (cp.pid("etcd").unwrap(), cp.pid("kube-apiserver").unwrap());
    // Longer than `up`'s 3 s /readyz timeout: alive, but answering nothing.
    let frozen = Frozen::stop(apiserver);

    // A bounded wait that runs out fails, stopping and wiping nothing.
    let out = tokio::task::block_in_place(|| cp.try_script_with("up", &[("IMAGEJOB_UP_WAIT", "4")]));
    let log = stderr(&out);
    assert!(!out.status.success(), "up gave up on a frozen API server:\n{log}");
    assert!(log.contains("waiting up to 4s") && log.contains("giving up"), "{log}");
    assert!(log.contains("nothing stopped or wiped"), "{log}");
    eprintln!("up gave up:\n{log}");
    assert_eq!((cp.pid("etcd"), cp.pid("kube-apiserver")), (Some(etcd), Some(apiserver)), "pid files kept");
    assert!(process_alive(&etcd.to_string()) && process_alive(&apiserver.to_string()), "nothing killed");

    // Thawed while `up` waits: it reuses the same processes and data.
    let started = Instant::now();
    let up = cp.command("up").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut up = KillOnDrop(Some(up));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let child = up.0.as_mut().unwrap();
    assert!(child.try_wait().unwrap().is_none(), "up still waits for the frozen API server after 8 s");
    drop(frozen);
    let out = tokio::task::block_in_place(|| up.0.take().unwrap().wait_with_output().unwrap());
    let log = stderr(&out);
    assert!(out.status.success(), "up reused the thawed API server:\n{log}");
    assert!(log.contains("are running but /readyz did not answer ok") && log.contains("waiting up to 120s"), "{log}");
    assert!(log.contains("kube-apiserver ready after waiting") && log.contains("reusing the running cluster"), "{log}");
    assert_eq!((cp.pid("etcd"), cp.pid("kube-apiserver")), (Some(etcd), Some(apiserver)), "same processes:\n{log}");
    assert!(process_alive(&etcd.to_string()) && process_alive(&apiserver.to_string()), "{log}");
    assert!(marker_kept(&client).await, "etcd's data kept:\n{log}");
    eprintln!("up waited and reused the thawed API server in {:.1}s:\n{log}", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_port_is_named_and_nothing_is_started_or_killed() {
    let cp = tokio::task::spawn_blocking(PrivateControlPlane::new).await.unwrap();
    let apiserver_addr = format!("127.0.0.1:{}", cp.ports[2]);
    let holder = Sim::start_on(&apiserver_addr, Sim::scenario(serde_json::json!([])));

    // A fresh start: refused before etcd starts.
    let out = tokio::task::block_in_place(|| cp.try_script("up"));
    let log = stderr(&out);
    assert!(!out.status.success(), "up refused a held port:\n{log}");
    let named = format!("port {} is already in use by pid {} (", cp.ports[2], holder.pid());
    assert!(log.contains(&named) && log.contains("ims-sim"), "the holder is named ({named}):\n{log}");
    assert!(log.contains("nothing was stopped"), "{log}");
    eprintln!("up refused a held port:\n{log}");
    assert_eq!((cp.pid("etcd"), cp.pid("kube-apiserver")), (None, None), "nothing started:\n{log}");
    assert!(process_alive(&holder.pid().to_string()), "the holder is not killed");
    std::net::TcpStream::connect(&apiserver_addr).expect("the holder still serves its port");
    drop(holder);

    // The API server crashed and its port was taken meanwhile (the bug seen:
    // a second API server on it): the restart on the running etcd is refused
    // the same way, etcd and its data kept. The holder is this test (its
    // listener reuses the port past the killed server's TIME_WAIT sockets).
    let (_, first) = tokio::task::block_in_place(|| cp.script("up"));
    assert!(first.contains("control plane ready"), "{first}");
    let client = cp.client().await;
    create_marker(&client).await;
    let etcd = cp.pid("etcd").unwrap();
    tokio::task::block_in_place(|| cp.kill_apiserver());
    let holder = bind_when_free(&apiserver_addr);
    let out = tokio::task::block_in_place(|| cp.try_script("up"));
    let log = stderr(&out);
    assert!(!out.status.success(), "up refused a held port:\n{log}");
    let named = format!("port {} is already in use by pid {} (", cp.ports[2], std::process::id());
    assert!(log.contains("restarting it on the running etcd (data kept)") && log.contains(&named), "{log}");
    assert!(log.contains("not starting kube-apiserver"), "{log}");
    assert_eq!(cp.pid("etcd"), Some(etcd), "{log}");
    assert!(process_alive(&etcd.to_string()), "etcd not killed:\n{log}");
    drop(holder);

    let (_, log) = tokio::task::block_in_place(|| cp.script("up"));
    assert!(log.contains("restarting it on the running etcd (data kept)"), "{log}");
    assert_eq!(cp.pid("etcd"), Some(etcd), "{log}");
    assert!(marker_kept(&client).await, "etcd's data kept:\n{log}");
}

/// Binds `addr` once the killed server's sockets on it have let go (a moment
/// after SIGKILL).
fn bind_when_free(addr: &str) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => eprintln!("bind {addr}: {e}; retrying"),
            Err(e) => panic!("bind {addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An `up` child that a failing test does not leave behind.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
