//! The three commands: `status` reads once; `wait` and `refresh` watch the
//! ImageJobs (one watch per name, filtered by the API server) until what
//! they wait for is in the status.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use futures::{Stream, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;

use super::screen::{stalled_reason, state_line, status_screen};
use super::{Cluster, Fetched, PluginError};
use crate::cli::Exit;
use crate::cli::render::{clean, clock};
use crate::crd::{Phase, REQUESTED_AT_ANNOTATION};

pub async fn status(cluster: &Cluster, name: &str) -> Result<Exit, PluginError> {
    let fetched = cluster.fetch(name).await?;
    let events = cluster.events(&fetched.imagejob).await;
    print!("{}", status_screen(&fetched, &events, Timestamp::now()));
    Ok(Exit::Succeeded)
}

/// Every change of one ImageJob, as the API server reports it.
fn watch(cluster: &Cluster, name: &str) -> impl Stream<Item = Fetched> + Send + 'static {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(cluster.api(), config)
        .default_backoff()
        .applied_objects()
        .filter_map(|obj| async move { obj.ok().map(Fetched::from) })
}

fn phase(f: &Fetched) -> Option<Phase> {
    f.imagejob.status.as_ref().and_then(|s| s.phase)
}

fn finished(f: &Fetched) -> bool {
    matches!(phase(f), Some(Phase::Succeeded | Phase::Failed))
}

/// The exit code for a set of ImageJobs: 1 if any failed, else 0 when all
/// succeeded, else 3 when one still running is stalled, else 2 (timeout).
pub fn wait_exit<'a>(imagejobs: impl IntoIterator<Item = &'a Fetched>) -> Exit {
    let phases: Vec<(Option<Phase>, bool)> = imagejobs
        .into_iter()
        .map(|f| (phase(f), f.imagejob.status.as_ref().and_then(stalled_reason).is_some()))
        .collect();
    if phases.iter().any(|(p, _)| *p == Some(Phase::Failed)) {
        Exit::Failed
    } else if phases.iter().all(|(p, _)| *p == Some(Phase::Succeeded)) {
        Exit::Succeeded
    } else if phases.iter().any(|(_, stalled)| *stalled) {
        Exit::Stalled
    } else {
        Exit::TimedOut
    }
}

/// The last line about one ImageJob: the image, the error, or where it stopped.
pub fn outcome_line(name: &str, f: &Fetched, now: Timestamp) -> String {
    let status = f.imagejob.status.clone().unwrap_or_default();
    let text = match status.phase {
        Some(Phase::Succeeded) => format!("Succeeded, image {}", status.image_id.as_deref().unwrap_or("-")),
        Some(Phase::Failed) => {
            let error = [status.error_code.as_deref(), status.fail_reason.as_deref()].into_iter().flatten();
            format!("Failed: {}", error.collect::<Vec<_>>().join(": "))
        }
        _ => format!("not finished: {}", state_line(f, now)),
    };
    clean(&format!("{name}: {text}"))
}

pub async fn wait(cluster: &Cluster, names: &[String], timeout: Duration) -> Result<Exit, PluginError> {
    let deadline = Instant::now() + timeout;
    let mut states = BTreeMap::new();
    for name in names {
        states.insert(name.clone(), cluster.fetch(name).await?);
    }
    let mut view = WaitView::new(names, std::io::stderr().is_terminal());
    for (name, f) in &states {
        view.show(name, f);
    }
    let streams = names.iter().map(|name| {
        let name = name.clone();
        watch(cluster, &name).map(move |f| (name.clone(), f)).boxed()
    });
    let mut changes = futures::stream::select_all(streams);
    while !states.values().all(finished) {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some((name, f))) => {
                view.show(&name, &f);
                states.insert(name, f);
            }
            Ok(None) | Err(_) => break,
        }
    }
    view.finish();
    let now = Timestamp::now();
    for (name, f) in &states {
        println!("{}", outcome_line(name, f, now));
    }
    let exit = wait_exit(states.values());
    let failed: Vec<&str> =
        states.iter().filter(|(_, f)| phase(f) == Some(Phase::Failed)).map(|(n, _)| n.as_str()).collect();
    match exit {
        Exit::Failed => eprintln!("failed: {}", failed.join(", ")),
        Exit::TimedOut => eprintln!("timed out after {}", crate::cli::render::human(timeout)),
        Exit::Stalled => eprintln!("stalled: the operator cannot make progress (see the Stalled condition)"),
        _ => {}
    }
    Ok(exit)
}

/// A bar per ImageJob on a terminal; otherwise a line per change.
struct WaitView {
    bars: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    last: BTreeMap<String, String>,
    started: Instant,
}

impl WaitView {
    fn new(names: &[String], tty: bool) -> Self {
        let bars = tty.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
            let template = format!("{{prefix:<{width}}} [{{bar:30}}] {{pos:>3}}% {{wide_msg}}");
            let style = ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> ");
            let bars = names
                .iter()
                .map(|name| {
                    let bar = multi.add(ProgressBar::new(100).with_style(style.clone()).with_prefix(clean(name)));
                    bar.enable_steady_tick(Duration::from_millis(200));
                    (name.clone(), bar)
                })
                .collect();
            (multi, bars)
        });
        WaitView { bars, last: BTreeMap::new(), started: Instant::now() }
    }

    fn show(&mut self, name: &str, f: &Fetched) {
        let line = state_line(f, Timestamp::now());
        match &self.bars {
            Some((_, bars)) => {
                let bar = &bars[name];
                bar.set_position(f.imagejob.status.as_ref().and_then(|s| s.progress).unwrap_or(0).clamp(0, 100) as u64);
                bar.set_message(line);
            }
            None => {
                // The ETA alone does not make a new line.
                let key = line.split(", ETA").next().unwrap_or_default().to_owned();
                if self.last.get(name) != Some(&key) {
                    eprintln!("[{}] {}: {line}", clock(self.started.elapsed()), clean(name));
                    self.last.insert(name.to_owned(), key);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some((multi, bars)) = &self.bars {
            bars.values().for_each(ProgressBar::finish_and_clear);
            let _ = multi.clear();
        }
    }
}

/// A fresh value for the annotation: the time to the nanosecond.
fn fresh_request() -> String {
    Timestamp::now().to_string()
}

pub async fn refresh(cluster: &Cluster, name: &str, timeout: Duration) -> Result<Exit, PluginError> {
    cluster.fetch(name).await?;
    let requested = fresh_request();
    let patch = serde_json::json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: requested}}});
    if let Err(err) = cluster.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        return Err(cluster.explain(err, name).await);
    }
    eprintln!("requested a poll ({REQUESTED_AT_ANNOTATION}={requested}); waiting for the operator");
    let echoed = |f: &Fetched| {
        f.imagejob.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(requested.as_str())
    };
    let mut changes = Box::pin(watch(cluster, name));
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(f)) if echoed(&f) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                eprintln!(
                    "timed out after {}: the operator has not handled the request; is it running and watching namespace {}?",
                    crate::cli::render::human(timeout),
                    cluster.namespace
                );
                return Ok(Exit::TimedOut);
            }
        }
    }
    status(cluster, name).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fetched(status: serde_json::Value) -> Fetched {
        Fetched::from(
            serde_json::from_value::<crate::crd::ImageJob>(json!({
                "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob", "metadata": {"name": "a"},
                "spec": {"jobId": "j", "credentialsRef": {"name": "s"}}, "status": status
            }))
            .unwrap(),
        )
    }

    #[test]
    fn exit_codes_of_wait() {
        let ok = fetched(json!({"phase": "Succeeded", "imageId": "img"}));
        let failed = fetched(json!({"phase": "Failed", "errorCode": "IMG.0014", "failReason": "boom"}));
        let running = fetched(json!({"phase": "Running", "progress": 40}));
        let stalled = fetched(json!({"phase": "Pending", "conditions": [
            {"type": "Stalled", "status": "True", "reason": "AuthenticationFailed", "message": "rejected",
             "lastTransitionTime": "2026-11-29T17:00:00Z"}]}));
        assert_eq!(wait_exit([&ok, &ok]), Exit::Succeeded);
        assert_eq!(wait_exit([&ok, &failed]), Exit::Failed);
        assert_eq!(wait_exit([&failed, &stalled, &running]), Exit::Failed, "a failure wins");
        assert_eq!(wait_exit([&ok, &running]), Exit::TimedOut);
        assert_eq!(wait_exit([&ok, &running, &stalled]), Exit::Stalled);
        let now = Timestamp::now();
        assert_eq!(outcome_line("b", &failed, now), "b: Failed: IMG.0014: boom");
        assert_eq!(outcome_line("a", &ok, now), "a: Succeeded, image img");
        assert_eq!(outcome_line("c", &running, now), "c: not finished: Running 40%");
        assert!(outcome_line("d", &stalled, now).ends_with("(stalled: AuthenticationFailed: rejected)"));
    }
}
