//! How a job looks on a terminal, for `job get|wait` and the kubectl plugin
//! alike: one sheet drawn from the status type ([`ImageJobStatus`], what the
//! controller writes and what `job` maps an IMS answer to), the JSON
//! document, and the small text helpers (clean text, durations, tables).

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{ImageJobStatus, SubJobStatus};

/// Status fields as pretty JSON with a final newline.
pub fn status_json(status: &ImageJobStatus) -> String {
    let mut text = serde_json::to_string_pretty(status).expect("a status always serialises");
    text.push('\n');
    text
}

/// Text from the cloud made safe for a terminal or a log: control
/// characters (escape sequences, carriage returns, newlines) become spaces.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `1h 2m 3s`, whole seconds.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Elapsed time as a clock: `0:42`, `12:03`, `1:02:03`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// What an empty cell shows.
pub fn dash() -> String {
    "-".to_owned()
}

/// An optional text, or [`dash`].
pub fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(dash, str::to_owned)
}

/// `IMG.1075: registration failed`, either half alone, or nothing: how an
/// error code and its reason are joined everywhere on a terminal.
pub fn code_reason(code: Option<&str>, reason: Option<&str>) -> Option<String> {
    match (code, reason) {
        (Some(c), Some(r)) => Some(format!("{c}: {r}")),
        (Some(x), None) | (None, Some(x)) => Some(x.to_owned()),
        (None, None) => None,
    }
}

/// `Key:         value` lines, values [`clean`]ed.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<14}{}", format!("{key}:"), clean(value));
    }
    out
}

/// Columns padded to their widest cell, indented by two spaces; cells are [`clean`]ed.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|c| clean(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    out
}

/// A titled table after a blank line, or nothing when there are no rows.
pub fn section(title: &str, headers: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return String::new();
    }
    format!("\n{title}:\n{}", table(headers, rows))
}

/// Which columns the sub-jobs table has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubJobColumns {
    /// With BEGIN and END (`job get`).
    WithTimes,
    /// Without (the plugin's `status`, which has little width to spare).
    Short,
}

/// One job drawn from its status: the parts `job get`'s table and the
/// plugin's `status` screen are made of.
#[derive(Clone, Copy, Debug)]
pub struct Sheet<'a> {
    pub status: &'a ImageJobStatus,
}

impl<'a> Sheet<'a> {
    pub fn new(status: &'a ImageJobStatus) -> Self {
        Sheet { status }
    }

    /// `job get`'s table: key/value lines, then results and sub-jobs. The
    /// job and sub-job IDs are the answer's (the status names neither).
    pub fn table(&self, job_id: Option<&str>, sub_job_id: Option<&str>) -> String {
        let mut rows = self.get_rows(job_id);
        rows.extend(sub_job_id.map(|id| ("Sub-job", id.to_owned())));
        rows.extend(self.unlisted_sub_jobs().map(|ids| ("Sub-job IDs", ids)));
        let mut out = key_values(&rows);
        out.push_str(&self.results());
        out.push_str(&self.sub_jobs(SubJobColumns::WithTimes));
        out
    }

    fn get_rows(&self, job_id: Option<&str>) -> Vec<(&'static str, String)> {
        let s = self.status;
        let mut rows = vec![
            ("Job ID", or_dash(job_id)),
            ("Status", or_dash(s.job_status.as_deref())),
            ("Type", or_dash(s.job_type.as_deref())),
            ("Progress", s.progress.map_or_else(dash, |p| format!("{p}%"))),
            ("Begin", plain_time(&s.begin_time)),
            ("End", plain_time(&s.end_time)),
        ];
        let optional = [
            ("Current task", &s.current_task),
            ("Image ID", &s.image_id),
            ("Image name", &s.image_name),
            ("Error code", &s.error_code),
            ("Fail reason", &s.fail_reason),
        ];
        rows.extend(optional.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
        rows.extend(self.data_images().map(|ids| ("Data images", ids)));
        rows
    }

    /// The data images' IDs, comma-separated, if the job made any.
    pub fn data_images(&self) -> Option<String> {
        let data: Vec<&str> = self.status.images.iter().filter(|i| i.kind == "data").map(|i| i.id.as_str()).collect();
        (!data.is_empty()).then(|| data.join(", "))
    }

    /// The job's error code and reason, joined by [`code_reason`].
    pub fn error(&self) -> Option<String> {
        code_reason(self.status.error_code.as_deref(), self.status.fail_reason.as_deref())
    }

    /// Sub-job IDs that the sub-jobs table does not show.
    fn unlisted_sub_jobs(&self) -> Option<String> {
        let s = self.status;
        let listed: Vec<&String> = s.sub_jobs.iter().filter_map(|j| j.job_id.as_ref()).collect();
        let unlisted: Vec<&str> = s.sub_job_ids.iter().filter(|id| !listed.contains(id)).map(String::as_str).collect();
        (!unlisted.is_empty()).then(|| unlisted.join(", "))
    }

    /// `Results:` and its table, or nothing.
    pub fn results(&self) -> String {
        let rows = self.status.results.iter().map(|r| {
            vec![or_dash(r.image_id.as_deref()), or_dash(r.project_id.as_deref()), or_dash(r.status.as_deref())]
        });
        section("Results", &["IMAGE ID", "PROJECT ID", "STATUS"], rows.collect())
    }

    /// `Sub-jobs:` and its table, or nothing.
    pub fn sub_jobs(&self, columns: SubJobColumns) -> String {
        let rows = self.status.sub_jobs.iter().map(|s| sub_job_row(s, columns)).collect();
        match columns {
            SubJobColumns::WithTimes => {
                section("Sub-jobs", &["JOB ID", "TYPE", "STATUS", "BEGIN", "END", "IMAGE ID", "ERROR"], rows)
            }
            SubJobColumns::Short => section("Sub-jobs", &["JOB ID", "TYPE", "STATUS", "IMAGE ID", "ERROR"], rows),
        }
    }
}

fn sub_job_row(s: &SubJobStatus, columns: SubJobColumns) -> Vec<String> {
    let mut row = vec![or_dash(s.job_id.as_deref()), or_dash(s.job_type.as_deref()), or_dash(s.status.as_deref())];
    if columns == SubJobColumns::WithTimes {
        row.extend([plain_time(&s.begin_time), plain_time(&s.end_time)]);
    }
    let error = code_reason(s.error_code.as_deref(), s.fail_reason.as_deref());
    row.extend([or_dash(s.image_id.as_deref()), error.unwrap_or_else(dash)]);
    row
}

fn plain_time(t: &Option<Time>) -> String {
    t.as_ref().map_or_else(dash, |t| t.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_helpers() {
        assert_eq!(clean("Task\u{1b}[2J\r\nnext"), "Task [2J  next");
        assert_eq!(human(Duration::from_millis(62_900)), "1m 2s");
        assert_eq!(clock(Duration::from_secs(42)), "0:42");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }

    #[test]
    fn code_and_reason_are_joined_one_way() {
        assert_eq!(code_reason(Some("IMG.1"), Some("why")).as_deref(), Some("IMG.1: why"));
        assert_eq!(code_reason(Some("IMG.1"), None).as_deref(), Some("IMG.1"));
        assert_eq!(code_reason(None, Some("why")).as_deref(), Some("why"));
        assert_eq!(code_reason(None, None), None);
    }
}
