//! Keeps a status small whatever IMS answers. etcd refuses objects over
//! 1.5 MiB and the API server a patch it cannot store, so an answer with
//! thousands of sub-jobs or a megabyte of `fail_reason` must never be copied
//! whole: text is cut on a UTF-8 boundary, lists to a bounded length (failed
//! entries first, so the cause is never what is dropped), and the totals IMS
//! reported go to `subJobsTotal`/`resultsTotal` when a list was cut.

use crate::crd::{ImageJobStatus, SubJobStatus};

/// The serialised status stays under this (aim: 64 KiB whatever the answer).
pub const MAX_STATUS_BYTES: usize = 60 * 1024;
/// `failReason` of the job.
pub const MAX_FAIL_REASON: usize = 2048;
/// Condition messages and Event notes.
pub const MAX_MESSAGE: usize = 1024;
/// IDs, names, types, tasks, codes.
pub const MAX_FIELD: usize = 256;
/// `failReason` of one sub-job.
pub const MAX_SUB_JOB_REASON: usize = 512;
pub const MAX_SUB_JOBS: usize = 20;
pub const MAX_RESULTS: usize = 30;
pub const MAX_SUB_JOB_IDS: usize = 30;
pub const MAX_IMAGES: usize = 30;

pub use crate::text::cut;

fn cut_opt(field: &mut Option<String>, max: usize) {
    if let Some(text) = field
        && text.len() > max
    {
        *text = cut(text, max);
    }
}

/// Keeps at most `max` items, those `failed` first when cutting (in their
/// order). Returns how many there were when it cut, else None.
pub fn keep_failed_first<T>(items: &mut Vec<T>, max: usize, failed: impl Fn(&T) -> bool) -> Option<usize> {
    let total = items.len();
    if total <= max {
        return None;
    }
    let (mut kept, rest): (Vec<T>, Vec<T>) = std::mem::take(items).into_iter().partition(|i| failed(i));
    kept.extend(rest);
    kept.truncate(max);
    *items = kept;
    Some(total)
}

pub fn is_failed_sub_job(s: &SubJobStatus) -> bool {
    s.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("FAIL") || s.eq_ignore_ascii_case("FAILED"))
}

/// Cuts every field of `status` to its bound, then halves the lists until
/// the whole serialises under `MAX_STATUS_BYTES`. `reported` are the list
/// lengths IMS reported (sub-jobs, results) when the parser already cut.
pub fn bound(status: &mut ImageJobStatus) {
    for field in [
        &mut status.job_status,
        &mut status.job_type,
        &mut status.current_task,
        &mut status.image_id,
        &mut status.image_name,
        &mut status.error_code,
        &mut status.last_handled_reconcile_at,
    ] {
        cut_opt(field, MAX_FIELD);
    }
    cut_opt(&mut status.fail_reason, MAX_FAIL_REASON);
    for c in &mut status.conditions {
        if c.message.len() > MAX_MESSAGE {
            c.message = cut(&c.message, MAX_MESSAGE);
        }
    }
    for s in &mut status.sub_jobs {
        bound_sub_job(s);
    }
    for r in &mut status.results {
        for field in [&mut r.image_id, &mut r.project_id, &mut r.status] {
            cut_opt(field, MAX_FIELD);
        }
    }
    for id in &mut status.sub_job_ids {
        if id.len() > MAX_FIELD {
            *id = cut(id, MAX_FIELD);
        }
    }
    for i in &mut status.images {
        i.id = cut(&i.id, MAX_FIELD);
        for field in [&mut i.name, &mut i.sub_job_id] {
            cut_opt(field, MAX_FIELD);
        }
    }
    let (mut sub_jobs, mut results, mut ids) = (MAX_SUB_JOBS, MAX_RESULTS, MAX_SUB_JOB_IDS);
    let mut images = MAX_IMAGES;
    loop {
        cut_lists(status, sub_jobs, results, ids);
        // The system disk image is what `imageId` names: never the one dropped.
        keep_failed_first(&mut status.images, images.max(1), |i| i.kind == "system");
        if serialised_len(status) <= MAX_STATUS_BYTES || sub_jobs + results + ids + images <= 1 {
            return;
        }
        (sub_jobs, results, ids, images) = (sub_jobs / 2, results / 2, ids / 2, images / 2);
    }
}

fn bound_sub_job(s: &mut SubJobStatus) {
    for field in [&mut s.job_id, &mut s.job_type, &mut s.status, &mut s.error_code, &mut s.image_id, &mut s.image_name]
    {
        cut_opt(field, MAX_FIELD);
    }
    cut_opt(&mut s.fail_reason, MAX_SUB_JOB_REASON);
}

fn cut_lists(status: &mut ImageJobStatus, sub_jobs: usize, results: usize, ids: usize) {
    let total = |cut: Option<usize>, prev: Option<i32>| cut.map(|n| (n as i32).max(prev.unwrap_or(0))).or(prev);
    let cut_sub_jobs = keep_failed_first(&mut status.sub_jobs, sub_jobs, is_failed_sub_job);
    let cut_ids = keep_failed_first(&mut status.sub_job_ids, ids, |_| false);
    status.sub_jobs_total = total(cut_sub_jobs.max(cut_ids), status.sub_jobs_total);
    let failed_result = |r: &crate::crd::JobResultStatus| r.status.as_deref().is_some_and(|s| s != "SUCCESS");
    let cut_results = keep_failed_first(&mut status.results, results, failed_result);
    status.results_total = total(cut_results, status.results_total);
}

/// Bytes of the status as JSON (what the API server stores, near enough).
pub fn serialised_len(status: &ImageJobStatus) -> usize {
    serde_json::to_vec(status).map_or(usize::MAX, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::JobResultStatus;

    #[test]
    fn cut_keeps_utf8_and_the_byte_limit() {
        let cases: [(&str, usize, &str); 5] = [
            ("short", 10, "short"),
            ("abcdefghij", 10, "abcdefghij"),
            ("abcdefghijk", 10, "abcdefg…"),
            // "é" is two bytes: the cut must not split it.
            ("ééééé", 8, "éé…"),
            ("日本語テキスト", 10, "日本…"),
        ];
        for (text, max, want) in cases {
            let got = cut(text, max);
            assert_eq!(got, want, "{text:?} at {max}");
            assert!(got.len() <= max, "{got:?} is {} bytes", got.len());
        }
    }

    #[test]
    fn failed_entries_survive_the_cut() {
        let mut items: Vec<i32> = (0..10).collect();
        assert_eq!(keep_failed_first(&mut items, 3, |i| *i == 7 || *i == 9), Some(10));
        assert_eq!(items, [7, 9, 0]);
        let mut few = vec![1, 2];
        assert_eq!(keep_failed_first(&mut few, 3, |_| true), None);
        assert_eq!(few, [1, 2], "order kept when nothing is cut");
    }

    fn sub_job(i: usize, status: &str, reason_bytes: usize) -> SubJobStatus {
        SubJobStatus {
            job_id: Some(format!("sub-{i}")),
            status: Some(status.into()),
            fail_reason: Some("x".repeat(reason_bytes)),
            ..SubJobStatus::default()
        }
    }

    #[test]
    fn a_maximal_answer_fits_and_keeps_the_failed_sub_job() {
        let mut status = ImageJobStatus {
            fail_reason: Some("é".repeat(1_000_000)),
            error_code: Some("E".repeat(10_000)),
            sub_jobs: (0..3000).map(|i| sub_job(i, if i == 2999 { "FAIL" } else { "SUCCESS" }, 5000)).collect(),
            results: (0..3000)
                .map(|_| JobResultStatus { image_id: Some("i".repeat(500)), ..Default::default() })
                .collect(),
            sub_job_ids: (0..3000).map(|i| format!("{i}{}", "z".repeat(400))).collect(),
            ..ImageJobStatus::default()
        };
        bound(&mut status);
        assert!(serialised_len(&status) <= MAX_STATUS_BYTES, "{}", serialised_len(&status));
        assert_eq!(status.sub_jobs[0].job_id.as_deref(), Some("sub-2999"));
        assert_eq!(status.sub_jobs_total, Some(3000));
        assert_eq!(status.results_total, Some(3000));
        assert!(status.fail_reason.as_ref().unwrap().len() <= MAX_FAIL_REASON);
        assert!(status.fail_reason.as_ref().unwrap().ends_with('…'));
    }

    #[test]
    fn a_small_answer_is_left_alone() {
        let mut status = ImageJobStatus {
            fail_reason: Some("disk full".into()),
            sub_jobs: (0..3).map(|i| sub_job(i, "SUCCESS", 10)).collect(),
            ..ImageJobStatus::default()
        };
        let before = status.clone();
        bound(&mut status);
        assert_eq!(status, before);
        assert_eq!(status.sub_jobs_total, None, "totals only when cut");
    }

    #[test]
    fn many_huge_failed_sub_jobs_are_halved_until_they_fit() {
        let mut status = ImageJobStatus {
            sub_jobs: (0..100).map(|i| sub_job(i, "FAIL", 100_000)).collect(),
            ..ImageJobStatus::default()
        };
        bound(&mut status);
        assert!(serialised_len(&status) <= MAX_STATUS_BYTES);
        assert!(!status.sub_jobs.is_empty());
        assert_eq!(status.sub_jobs_total, Some(100));
    }
}
