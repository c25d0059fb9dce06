//! What a person sees while `job wait` follows a job: a live bar on a
//! terminal ([`BarView`], drawn by indicatif), or one plain line per change
//! for a CI log ([`LineView`], no control characters).

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use jiff::Timestamp;
use tokio::time::Instant;

use crate::cli::render::{clean, clock, human};
use crate::crd::ImageJobStatus;
use crate::ims::ImsError;

/// Told what happens while a job is followed.
pub trait Watcher {
    /// A cloud answer, and the estimated end once there is one.
    fn answered(&mut self, status: &ImageJobStatus, eta: Option<Timestamp>);
    /// A transient error; the next query follows after `delay`.
    fn retrying(&mut self, err: &ImsError, failures: u32, delay: Duration);
}

/// `[0:42] RUNNING 45% CreateImageByInstanceTask, ETA 1m 40s`.
pub fn status_line(elapsed: Duration, status: &ImageJobStatus, remaining: Option<Duration>) -> String {
    let mut line = format!("[{}] {}", clock(elapsed), state(status));
    if let Some(left) = remaining {
        line.push_str(&format!(", ETA {}", human(left)));
    }
    line
}

/// `RUNNING 45% CreateImageByInstanceTask`: status, percent and task.
pub fn state(status: &ImageJobStatus) -> String {
    let percent = status.progress.map(|p| format!(" {p}%")).unwrap_or_default();
    format!("{}{percent}{}", job_status(status), task(status))
}

fn job_status(status: &ImageJobStatus) -> &str {
    status.job_status.as_deref().unwrap_or("INIT")
}

/// ` CreateImageByInstanceTask`, or nothing.
fn task(status: &ImageJobStatus) -> String {
    status.current_task.as_deref().filter(|t| !t.is_empty()).map(|t| format!(" {}", clean(t))).unwrap_or_default()
}

/// `[0:45] retry 2 in 4s: IMS answered 503 Service Unavailable …`.
pub fn retry_line(elapsed: Duration, err: &ImsError, failures: u32, delay: Duration) -> String {
    format!("[{}] retry {failures} in {}: {}", clock(elapsed), human_short(delay), clean(&err.to_string()))
}

/// Like [`human`], but sub-second delays stay visible (`500ms`).
fn human_short(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{}ms", d.as_millis()) } else { human(d) }
}

fn remaining(eta: Option<Timestamp>) -> Option<Duration> {
    let left = eta?.duration_since(Timestamp::now());
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The status, percent and task that make a new line when they change.
type LineKey = (Option<String>, Option<i32>, Option<String>);

/// One line per change, for logs.
pub struct LineView<W: Write> {
    out: W,
    started: Instant,
    last: Option<LineKey>,
}

impl<W: Write> LineView<W> {
    pub fn new(out: W) -> Self {
        LineView { out, started: Instant::now(), last: None }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Watcher for LineView<W> {
    fn answered(&mut self, status: &ImageJobStatus, eta: Option<Timestamp>) {
        let key = (status.job_status.clone(), status.progress, status.current_task.clone());
        if self.last.as_ref() != Some(&key) {
            let _ = writeln!(self.out, "{}", status_line(self.started.elapsed(), status, remaining(eta)));
            self.last = Some(key);
        }
    }

    fn retrying(&mut self, err: &ImsError, failures: u32, delay: Duration) {
        let _ = writeln!(self.out, "{}", retry_line(self.started.elapsed(), err, failures, delay));
    }
}

/// A live bar on stderr: percent, status and task, elapsed time and the ETA
/// (counting down between answers). Retries are printed above it.
pub struct BarView {
    bar: ProgressBar,
    eta: Arc<Mutex<Option<Timestamp>>>,
}

impl BarView {
    pub fn new(job_id: &str) -> Self {
        let eta: Arc<Mutex<Option<Timestamp>>> = Arc::default();
        let shown = eta.clone();
        let style =
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos:>3}% {ims_eta}{wide_msg}")
                .expect("a valid template")
                .with_key("ims_eta", move |_: &ProgressState, w: &mut dyn fmt::Write| {
                    if let Some(left) = remaining(*shown.lock().expect("not poisoned")) {
                        let _ = write!(w, "ETA {:<8} ", human(left));
                    }
                })
                .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr()).with_style(style);
        bar.set_message(format!("job {}: waiting for the first answer", clean(job_id)));
        bar.enable_steady_tick(Duration::from_millis(200));
        BarView { bar, eta }
    }

    /// Removes the bar, leaving the terminal clean for the summary.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Watcher for BarView {
    fn answered(&mut self, status: &ImageJobStatus, eta: Option<Timestamp>) {
        *self.eta.lock().expect("not poisoned") = eta;
        self.bar.set_position(status.progress.unwrap_or(0).clamp(0, 100) as u64);
        // The bar shows the percent already.
        self.bar.set_message(format!("{}{}", job_status(status), task(status)));
    }

    fn retrying(&mut self, err: &ImsError, failures: u32, delay: Duration) {
        self.bar.println(retry_line(self.bar.elapsed(), err, failures, delay));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::error::Service;

    fn running(progress: i32, task: &str) -> ImageJobStatus {
        ImageJobStatus {
            job_status: Some("RUNNING".into()),
            progress: Some(progress),
            current_task: Some(task.into()),
            ..Default::default()
        }
    }

    #[test]
    fn lines() {
        let s = running(45, "CreateImageByInstanceTask");
        let eta = Some(Duration::from_secs(100));
        assert_eq!(
            status_line(Duration::from_secs(42), &s, eta),
            "[0:42] RUNNING 45% CreateImageByInstanceTask, ETA 1m 40s"
        );
        assert_eq!(status_line(Duration::ZERO, &ImageJobStatus::default(), None), "[0:00] INIT");
        let evil = running(1, "Task\u{1b}[31m\nred");
        assert_eq!(state(&evil), "RUNNING 1% Task [31m red");
        let err = ImsError::Timeout { service: Service::Ims };
        assert_eq!(
            retry_line(Duration::from_secs(65), &err, 2, Duration::from_millis(1500)),
            "[1:05] retry 2 in 1s: IMS did not answer in time"
        );
        assert!(retry_line(Duration::ZERO, &err, 1, Duration::from_millis(500)).contains("retry 1 in 500ms"));
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_per_change() {
        let mut view = LineView::new(Vec::new());
        view.answered(&running(10, "A"), None);
        view.answered(&running(10, "A"), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        view.answered(&running(11, "A"), None);
        view.answered(&running(11, "B"), None);
        view.retrying(&ImsError::Timeout { service: Service::Ims }, 1, Duration::from_secs(2));
        view.answered(&running(11, "B"), None);
        let text = String::from_utf8(view.into_inner()).unwrap();
        let expected = "[0:00] RUNNING 10% A\n[0:05] RUNNING 11% A\n[0:05] RUNNING 11% B\n\
                        [0:05] retry 1 in 2s: IMS did not answer in time\n";
        assert_eq!(text, expected);
    }
}
