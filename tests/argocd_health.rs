//! The Argo CD health check (charts/imagejob-operator/argocd/health.lua)
//! under a real Lua 5.1 interpreter, the dialect Argo CD runs through
//! gopher-lua, against the cases of argocd/health_test.yaml (Argo CD's own
//! fixture format). Most fixtures are ImageJobs captured from the operator.

use std::path::{Path, PathBuf};

use mlua::{Lua, LuaOptions, StdLib, Table, Value};
use serde::Deserialize;

fn argocd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/imagejob-operator/argocd")
}

#[derive(Deserialize)]
struct Cases {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    input_path: String,
    health_status: Expected,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Expected {
    status: String,
    message: String,
}

/// JSON to Lua the way Argo CD hands objects to scripts: null is nil,
/// arrays are 1-based tables, numbers are Lua numbers.
fn to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().expect("finite number")),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table()?;
            for (k, item) in map {
                t.raw_set(k.as_str(), to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Runs the script with `obj` set, as Argo CD does, and returns its
/// (status, message). Only Lua's base library is loaded: the script must not
/// depend on libraries Argo CD's sandbox may leave out.
fn health(script: &str, obj: &serde_json::Value) -> Expected {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default()).unwrap();
    lua.globals().set("obj", to_lua(&lua, obj).unwrap()).unwrap();
    let hs: Table = lua.load(script).set_name("health.lua").eval().expect("health.lua runs and returns a table");
    Expected { status: hs.get("status").unwrap(), message: hs.get("message").unwrap() }
}

fn script() -> String {
    std::fs::read_to_string(argocd_dir().join("health.lua")).unwrap()
}

fn load_yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn interpreter_is_lua_5_1() {
    let lua = Lua::new();
    let version: String = lua.globals().get("_VERSION").unwrap();
    assert_eq!(version, "Lua 5.1");
}

#[test]
fn every_fixture_gives_the_expected_status_and_message() {
    let dir = argocd_dir();
    let cases: Cases =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap()).unwrap();
    let script = script();
    let mut failures = Vec::new();
    for case in &cases.tests {
        let got = health(&script, &load_yaml(&dir.join(&case.input_path)));
        if got != case.health_status {
            failures.push(format!("{}: expected {:?}, got {:?}", case.input_path, case.health_status, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every fixture is exercised, and every status the script can return.
    let listed: Vec<_> = cases.tests.iter().map(|c| c.input_path.trim_start_matches("testdata/").to_owned()).collect();
    for entry in std::fs::read_dir(dir.join("testdata")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(listed.contains(&name), "testdata/{name} is not listed in health_test.yaml");
    }
    for status in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        assert!(cases.tests.iter().any(|c| c.health_status.status == status), "no fixture expects {status}");
    }
}

/// The operator's conditions are a list-map keyed by type: their order must
/// not matter, and a Failed job wins over any stale Ready.
#[test]
fn condition_order_does_not_matter() {
    let dir = argocd_dir();
    let script = script();
    for fixture in ["failed.yaml", "succeeded.yaml", "stalled-authentication-failed.yaml", "running.yaml"] {
        let obj = load_yaml(&dir.join("testdata").join(fixture));
        let mut reversed = obj.clone();
        reversed["status"]["conditions"].as_array_mut().unwrap().reverse();
        assert_eq!(health(&script, &obj), health(&script, &reversed), "{fixture}");
    }
}

/// Partial objects Argo CD may see (e.g. a status written by an older
/// operator, or by hand) never make the script fail.
#[test]
fn partial_status_is_progressing_not_an_error() {
    let script = script();
    let cases = [
        serde_json::json!({"metadata": {"generation": 1}, "spec": {}, "status": {}}),
        serde_json::json!({"metadata": {}, "spec": {}, "status": {"conditions": []}}),
        serde_json::json!({"metadata": {"generation": 1}, "spec": {"suspend": false},
                           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}),
        serde_json::json!({"metadata": {"generation": 3}, "spec": {},
                           "status": {"conditions": [{"type": "Reconciling", "status": "True", "reason": "JobRunning"}]}}),
    ];
    for obj in cases {
        let got = health(&script, &obj);
        assert_eq!(got.status, "Progressing", "{obj}: {got:?}");
    }
    // Without observedGeneration (status from a hand edit) the conditions count.
    let obj = serde_json::json!({"metadata": {"generation": 2}, "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "done"}]}});
    assert_eq!(health(&script, &obj), Expected { status: "Healthy".into(), message: "Succeeded: done".into() });
}

/// The chart README documents the argocd-cm snippet; it must carry the same
/// script as health.lua, line for line.
#[test]
fn readme_snippet_matches_health_lua() {
    let readme = std::fs::read_to_string(argocd_dir().join("../README.md")).unwrap();
    let key = "resource.customizations.health.ims.otc.io_ImageJob: |";
    let start = readme.find(key).expect("README documents the argocd-cm key");
    let after = &readme[start + key.len()..];
    let block = &after[..after.find("```").expect("snippet ends with a code fence")];
    let indent = block.lines().find(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).unwrap();
    let mut snippet: Vec<&str> = block.lines().skip(1).map(|l| l.get(indent..).unwrap_or("")).collect();
    while snippet.last().is_some_and(|l| l.is_empty()) {
        snippet.pop();
    }
    let script = script();
    let expected: Vec<&str> = script.lines().collect();
    assert_eq!(snippet, expected, "README's argocd-cm snippet differs from argocd/health.lua");
}

// ---------------------------------------------------------------- actions

fn actions_dir() -> PathBuf {
    argocd_dir().join("actions")
}

/// Lua to JSON the way Argo CD reads a script's result back: a table with
/// keys 1..n is an array, any other table an object.
fn from_lua(v: Value) -> serde_json::Value {
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(b),
        Value::Integer(i) => serde_json::json!(i),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => serde_json::json!(n as i64),
        Value::Number(n) => serde_json::json!(n),
        Value::String(s) => serde_json::Value::String(s.to_str().unwrap().to_owned()),
        Value::Table(t) => {
            let len = t.raw_len();
            let pairs: Vec<(Value, Value)> = t.pairs().map(Result::unwrap).collect();
            if len > 0 && pairs.len() == len {
                (1..=len).map(|i| from_lua(t.raw_get(i).unwrap())).collect()
            } else {
                let map = pairs.into_iter().map(|(k, v)| (k.to_string().unwrap(), from_lua(v))).collect();
                serde_json::Value::Object(map)
            }
        }
        other => panic!("a script returned a {}", other.type_name()),
    }
}

/// Runs an action or discovery script with `obj` set. Argo CD runs actions
/// with the standard libraries open (the restart action of Deployments uses
/// `os.date`), so they are open here too.
fn run_action(script_path: &Path, obj: &serde_json::Value) -> serde_json::Value {
    let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::default()).unwrap();
    lua.globals().set("obj", to_lua(&lua, obj).unwrap()).unwrap();
    let script = std::fs::read_to_string(script_path).unwrap();
    let name = script_path.display().to_string();
    from_lua(lua.load(&script).set_name(name.as_str()).eval().unwrap_or_else(|e| panic!("{name}: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionCases {
    discovery_tests: Vec<DiscoveryCase>,
    action_tests: Vec<ActionCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscoveryCase {
    input_path: String,
    result: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionCase {
    action: String,
    input_path: String,
    expected_output_path: String,
}

fn action_cases() -> ActionCases {
    let text = std::fs::read_to_string(actions_dir().join("action_test.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// discovery.lua offers refresh/suspend/resume, enabled as the object allows.
#[test]
fn discovery_offers_the_actions_the_object_allows() {
    let cases = action_cases();
    let mut failures = Vec::new();
    for case in &cases.discovery_tests {
        let got = run_action(&actions_dir().join("discovery.lua"), &load_yaml(&actions_dir().join(&case.input_path)));
        // Argo CD turns the map of action name to settings into a list.
        let mut listed: Vec<serde_json::Value> = got
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, settings)| {
                let mut entry = settings.as_object().cloned().unwrap_or_default();
                entry.insert("name".into(), name.clone().into());
                serde_json::Value::Object(entry)
            })
            .collect();
        let mut expected = case.result.clone();
        let by_name = |a: &serde_json::Value, b: &serde_json::Value| a["name"].as_str().cmp(&b["name"].as_str());
        listed.sort_by(by_name);
        expected.sort_by(by_name);
        if listed != expected {
            failures.push(format!("{}: expected {expected:?}, got {listed:?}", case.input_path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each action turns its input into the expected object; refresh writes the
/// current UTC time, which is checked and then normalised.
#[test]
fn every_action_gives_the_expected_object() {
    let cases = action_cases();
    let mut failures = Vec::new();
    let mut seen_actions = std::collections::BTreeSet::new();
    for case in &cases.action_tests {
        seen_actions.insert(case.action.clone());
        let script = actions_dir().join(&case.action).join("action.lua");
        let mut got = run_action(&script, &load_yaml(&actions_dir().join(&case.input_path)));
        if let Some(at) = got.pointer_mut("/metadata/annotations/ims.otc.io~1requestedAt") {
            let written: jiff::Timestamp = at.as_str().unwrap().parse().expect("requestedAt is RFC 3339");
            let age = jiff::Timestamp::now().duration_since(written);
            assert!(
                age.abs() < jiff::SignedDuration::from_secs(60),
                "{}: requestedAt {written} is not now",
                case.action
            );
            if case.action == "refresh" {
                *at = "0001-01-01T00:00:00Z".into();
            }
        }
        let expected = load_yaml(&actions_dir().join(&case.expected_output_path));
        if got != expected {
            failures.push(format!("{} on {}: expected\n{expected:#}\ngot\n{got:#}", case.action, case.input_path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every action directory is tested, and every fixture is used.
    for entry in std::fs::read_dir(actions_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.path().join("action.lua").exists() {
            assert!(seen_actions.contains(&name), "action {name} has no case in action_test.yaml");
        }
    }
    let text = std::fs::read_to_string(actions_dir().join("action_test.yaml")).unwrap();
    for entry in std::fs::read_dir(actions_dir().join("testdata")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(text.contains(&format!("testdata/{name}")), "testdata/{name} is not used by action_test.yaml");
    }
}

/// Refresh, then the operator's echo: the value the action wrote is what
/// `status.lastHandledReconcileAt` must reach, and it differs from an
/// earlier honoured one (else the operator would not poll).
#[test]
fn refresh_asks_for_a_poll_the_operator_has_not_honoured() {
    let input = load_yaml(&actions_dir().join("testdata/annotated.yaml"));
    let out = run_action(&actions_dir().join("refresh/action.lua"), &input);
    let ij: imagejob_operator::crd::ImageJob = serde_json::from_value(out).unwrap();
    let pending = imagejob_operator::controller::pending_request(&ij);
    assert!(pending.is_some_and(|v| v != "2026-11-27T14:20:00Z"), "{pending:?}");
}

/// The chart README documents the argocd-cm actions value; read as YAML
/// (as Argo CD reads it), it carries exactly the scripts of the files.
#[test]
fn readme_actions_snippet_matches_the_scripts() {
    let readme = std::fs::read_to_string(argocd_dir().join("../README.md")).unwrap();
    let start = readme.find("resource.customizations.actions.ims.otc.io_ImageJob: |").expect("README has the key");
    let fence = readme[..start].rfind("```yaml\n").expect("snippet starts with a code fence") + "```yaml\n".len();
    let block = &readme[fence..start + readme[start..].find("```").expect("snippet ends with a code fence")];
    let cm: serde_json::Value = serde_yaml_ng::from_str(block).unwrap();
    let value = cm["data"]["resource.customizations.actions.ims.otc.io_ImageJob"].as_str().unwrap();
    let actions: serde_json::Value = serde_yaml_ng::from_str(value).unwrap();
    let read = |f: &str| std::fs::read_to_string(actions_dir().join(f)).unwrap();
    assert_eq!(actions["discovery.lua"].as_str(), Some(read("discovery.lua").as_str()), "discovery.lua");
    let definitions = actions["definitions"].as_array().unwrap();
    let names: Vec<&str> = definitions.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["refresh", "suspend", "resume"]);
    for d in definitions {
        let file = format!("{}/action.lua", d["name"].as_str().unwrap());
        assert_eq!(d["action.lua"].as_str(), Some(read(&file).as_str()), "{file}");
    }
}

/// The fixtures' status is what the operator writes: each is replayed
/// through `status::next_status` (the operator's own mapping) from the
/// outcomes that produce it, and must match up to condition times and
/// order. A fixture kept by hand cannot drift from the operator.
#[test]
fn fixtures_match_what_the_operator_writes() {
    use imagejob_operator::crd::{ImageJob, ImageJobStatus};
    use imagejob_operator::status::{Inputs, Outcome, StallReason, differs, next_status};

    let dir = argocd_dir().join("testdata");
    fn ready_message(s: &ImageJobStatus, type_: &str) -> String {
        s.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone()).expect(type_)
    }
    /// The outcomes, in order, that lead to a fixture's status.
    type Replay = fn(&ImageJob, &ImageJobStatus) -> Vec<Outcome>;
    let cases: [(&str, Replay); 11] = [
        ("pending.yaml", |_, s| vec![Outcome::Job(job_of(s))]),
        ("running.yaml", |_, s| vec![Outcome::Job(job_of(s))]),
        ("succeeded.yaml", |_, s| vec![Outcome::Job(job_of(s))]),
        ("stale-generation.yaml", |_, s| vec![Outcome::Job(job_of(s))]),
        ("suspended-before-observed.yaml", |_, s| vec![Outcome::Job(job_of(s))]),
        ("failed.yaml", |_, s| vec![Outcome::Job(job_of(s))]),
        ("retrying.yaml", |_, s| {
            vec![Outcome::Job(job_of(s)), Outcome::Transient { message: ready_message(s, "Reconciling") }]
        }),
        ("deadline-exceeded.yaml", |ij, s| {
            let seconds = ij.spec.active_deadline_seconds.expect("activeDeadlineSeconds");
            vec![Outcome::Job(job_of(s)), Outcome::DeadlineExceeded { seconds, last_error: None }]
        }),
        ("stalled-authentication-failed.yaml", |_, s| {
            vec![Outcome::Stalled { reason: StallReason::AuthenticationFailed, message: ready_message(s, "Ready") }]
        }),
        ("stalled-credentials-not-found.yaml", |_, s| {
            vec![Outcome::Stalled { reason: StallReason::CredentialsNotFound, message: ready_message(s, "Ready") }]
        }),
        ("suspended.yaml", |_, _| vec![Outcome::Suspended]),
    ];
    let mut checked: Vec<&str> = vec!["no-status.yaml"];
    let mut drifted = Vec::new();
    for (file, outcomes) in cases {
        let ij: ImageJob = serde_json::from_value(load_yaml(&dir.join(file))).unwrap();
        let fixture = ij.status.clone().unwrap_or_else(|| panic!("{file} has a status"));
        let ctx = Inputs {
            generation: fixture.observed_generation,
            now: jiff::Timestamp::now(),
            requested_at: None,
            eta: None,
        };
        let mut written: Option<ImageJobStatus> = None;
        for outcome in outcomes(&ij, &fixture) {
            written = Some(next_status(written.as_ref(), &outcome, &ctx));
        }
        let written = written.unwrap();
        if differs(&written, &fixture) {
            drifted.push(format!("{file}: the operator writes\n{}", serde_yaml_ng::to_string(&written).unwrap()));
        }
        checked.push(file);
    }
    assert!(drifted.is_empty(), "fixtures differ from the operator's status:\n{}", drifted.join("\n"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(checked.contains(&name.as_str()), "testdata/{name} is not checked against next_status");
    }
    let no_status: ImageJob = serde_json::from_value(load_yaml(&dir.join("no-status.yaml"))).unwrap();
    assert!(no_status.status.is_none());
}

/// The cloud answer a fixture's job fields came from.
fn job_of(s: &imagejob_operator::crd::ImageJobStatus) -> imagejob_operator::ims::model::Job {
    use imagejob_operator::ims::model::{Image, ImageKind, Job, JobResult, JobStatus, SubJob};
    Job {
        job_id: None,
        status: s.job_status.as_deref().and_then(JobStatus::parse),
        job_type: s.job_type.clone(),
        begin_time: s.begin_time.as_ref().map(|t| t.0),
        end_time: s.end_time.as_ref().map(|t| t.0),
        error_code: s.error_code.clone(),
        fail_reason: s.fail_reason.clone(),
        image_id: s.image_id.clone(),
        image_name: s.image_name.clone(),
        images: s
            .images
            .iter()
            .map(|i| Image {
                id: i.id.clone(),
                name: i.name.clone(),
                kind: if i.kind == "data" { ImageKind::Data } else { ImageKind::System },
                sub_job_id: i.sub_job_id.clone(),
            })
            .collect(),
        current_task: s.current_task.clone(),
        progress: s.progress.map(|p| u8::try_from(p).unwrap()),
        sub_job_id: None,
        sub_jobs_total: None,
        results_total: None,
        results: s
            .results
            .iter()
            .map(|r| JobResult {
                image_id: r.image_id.clone(),
                project_id: r.project_id.clone(),
                status: r.status.clone(),
            })
            .collect(),
        sub_jobs: s
            .sub_jobs
            .iter()
            .map(|j| SubJob {
                job_id: j.job_id.clone(),
                job_type: j.job_type.clone(),
                status: j.status.clone(),
                begin_time: j.begin_time.as_ref().map(|t| t.0),
                end_time: j.end_time.as_ref().map(|t| t.0),
                error_code: j.error_code.clone(),
                fail_reason: j.fail_reason.clone(),
                image_id: j.image_id.clone(),
                image_name: j.image_name.clone(),
            })
            .collect(),
        sub_job_ids: s.sub_job_ids.clone(),
    }
}
