//! Every shape of IMS answer the public docs and SDKs show, as the
//! project's own fixtures (`tests/fixtures/ims-answers/`, one per shape,
//! each with what the user must see), through the controller's own mapping:
//! the parser, the status, the output ConfigMap and the error classes.
//!
//! `real_answers_replay` also runs the published answers themselves, read
//! from `../shared/real-answers/` beside the repository when it is there
//! (never copied into the project).

use std::path::{Path, PathBuf};

use serde_json::Value;

use imagejob_operator::cli::job::render::status_of;
use imagejob_operator::controller::output::output_data;
use imagejob_operator::crd::{ImageJob, ImageJobSpec, ImageJobStatus};
use imagejob_operator::ims::error::Service;
use imagejob_operator::ims::{ImsError, Job};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ims-answers");

struct Fixture {
    name: String,
    doc: Value,
}

fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Fixture {
            name: p.file_stem().unwrap().to_string_lossy().into_owned(),
            doc: serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
        })
        .collect()
}

/// The body as IMS sent it: JSON, or the published text when it is none.
fn body_bytes(doc: &Value) -> Vec<u8> {
    match doc.get("body_text").and_then(Value::as_str) {
        Some(text) => text.as_bytes().to_vec(),
        None => serde_json::to_vec(&doc["body"]).unwrap(),
    }
}

fn imagejob() -> ImageJob {
    ImageJob::new("ij", ImageJobSpec { job_id: "job".into(), ..Default::default() })
}

/// The status as JSON (the names a user reads), plus the ConfigMap's keys.
fn seen(status: &ImageJobStatus) -> (Value, std::collections::BTreeMap<String, String>) {
    (serde_json::to_value(status).unwrap(), output_data(&imagejob(), status, "eu-de", "p"))
}

#[test]
fn every_published_shape_is_shown_as_its_fixture_expects() {
    let all = fixtures();
    assert!(all.len() >= 20, "fixtures missing: {}", all.len());
    for Fixture { name, doc } in &all {
        let expect = &doc["expect"];
        let body = body_bytes(doc);
        let status_code = doc["http_status"].as_u64().unwrap() as u16;
        if let Some(want) = expect.get("error") {
            let err = ImsError::from_response(Service::Ims, status_code, &Default::default(), &body);
            assert_eq!(format!("{:?}", err.kind()), want["kind"].as_str().unwrap(), "{name}");
            assert_eq!(err.code(), want["code"].as_str(), "{name}");
            continue;
        }
        if expect.get("invalid").is_some() {
            assert!(Job::parse(&body).is_err(), "{name}: must not parse");
            continue;
        }
        let job = Job::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (status, output) = seen(&status_of(&job));
        check_status(name, expect, &status);
        check_output(name, expect, &output);
    }
}

fn check_status(name: &str, expect: &Value, status: &Value) {
    for (key, want) in expect.as_object().unwrap() {
        let got = match key.as_str() {
            "images" => {
                assert_images(name, want, &status["images"]);
                continue;
            }
            "results" | "subJobs" | "subJobIds" => {
                let n = status.get(key).and_then(Value::as_array).map_or(0, Vec::len);
                assert_eq!(n as u64, want.as_u64().unwrap(), "{name}: {key}");
                continue;
            }
            "resultStatus" => status["results"][0]["status"].clone(),
            "dataImageIds" | "outputImageId" => continue,
            _ => status.get(key).cloned().unwrap_or(Value::Null),
        };
        assert_eq!(&got, want, "{name}: status.{key} in {status:#}");
    }
}

fn assert_images(name: &str, want: &Value, got: &Value) {
    let want = want.as_array().unwrap();
    let got = got.as_array().map(Vec::as_slice).unwrap_or_default();
    assert_eq!(got.len(), want.len(), "{name}: images {got:?}");
    for (w, g) in want.iter().zip(got) {
        for (k, v) in w.as_object().unwrap() {
            assert_eq!(&g[k], v, "{name}: images[].{k}");
        }
    }
}

fn check_output(name: &str, expect: &Value, output: &std::collections::BTreeMap<String, String>) {
    if let Some(ids) = expect.get("dataImageIds") {
        let want: Vec<&str> = ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(output["dataImageIds"], want.join(","), "{name}: ConfigMap dataImageIds");
    }
    let image = expect.get("outputImageId").or_else(|| expect.get("imageId")).and_then(Value::as_str);
    if let Some(image) = image {
        assert_eq!(output["imageId"], image, "{name}: ConfigMap imageId");
    }
}

/// The published answers: every valid body parses, a multi-image job hands
/// on its system disk image, no SUCCESS is shown as a failure, and the two
/// examples that are not JSON are refused (retried, never a state).
#[test]
fn real_answers_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/real-answers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} is not there (only the project's own fixtures ran)", dir.display());
        return;
    };
    let mut paths: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    paths.sort();
    let mut shown = 0;
    for path in &paths {
        let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let line = replay_one(&name, &doc);
        println!("{name}\t{line}");
        shown += 1;
    }
    assert!(shown >= 37, "only {shown} published answers found");
}

fn replay_one(name: &str, doc: &Value) -> String {
    if doc["kind"] == "error" {
        let status = doc["http_status"].as_u64().unwrap_or(400) as u16;
        let err = ImsError::from_response(Service::Ims, status, &Default::default(), &body_bytes(doc));
        assert!(err.code().is_some(), "{name}: the code is read");
        return format!("error {:?}: {err}", err.kind());
    }
    let job = match Job::parse(&body_bytes(doc)) {
        Ok(job) => job,
        Err(e) => {
            assert!(doc["body"].is_null(), "{name}: a valid body must parse: {e}");
            return format!("refused, retried: {e}");
        }
    };
    let status = status_of(&job);
    let (_, output) = seen(&status);
    let made_images = !status.images.is_empty();
    if made_images {
        assert!(!output["imageId"].is_empty(), "{name}: a job that made images hands one on");
    }
    if job.status.is_some_and(|s| s.as_str() == "SUCCESS") {
        assert!(status.error_code.is_none() && status.fail_reason.is_none(), "{name}: SUCCESS shown as failure");
    }
    format!(
        "{} {}% image={} images={} data={} subJobs={} task={}",
        status.phase.map_or("-", |p| p.as_str()),
        status.progress.map_or("-".into(), |p| p.to_string()),
        output["imageId"],
        status.images.len(),
        output["dataImageIds"],
        status.sub_jobs.len(),
        status.current_task.as_deref().unwrap_or("-"),
    )
}
