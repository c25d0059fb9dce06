//! `docs/contract.md` is the one home of the condition reasons and exit
//! codes: every one the code can produce must be there. Read from the
//! source, so a new reason or exit code cannot be added without its row.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn contract() -> String {
    std::fs::read_to_string(root().join("docs/contract.md")).expect("docs/contract.md")
}

/// A source file without its test module.
fn production(path: &str) -> String {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split("#[cfg(test)]\nmod tests").next().unwrap().to_owned()
}

/// String literals that are one CamelCase word: condition types, condition
/// reasons and Event reasons (`"JobRunning"`, `"WaitingForJob"`).
fn camel_case_literals(source: &str) -> Vec<String> {
    let mut found: Vec<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_alphabetic())
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_condition_and_event_reason_is_in_the_contract() {
    let doc = contract();
    let mut reasons = Vec::new();
    for file in ["src/status.rs", "src/controller/output.rs"] {
        reasons.extend(camel_case_literals(&production(file)));
    }
    // Condition statuses and a kind, not reasons.
    reasons.retain(|r| !["True", "False", "ConfigMap"].contains(&r.as_str()));
    for must in ["Pending", "JobRunning", "Succeeded", "JobFailed", "WaitingForJob", "StatusTooLarge", "OutputWritten"]
    {
        assert!(reasons.iter().any(|r| r == must), "the scan lost {must}: {reasons:?}");
    }
    let missing: Vec<_> = reasons.iter().filter(|r| !doc.contains(&format!("`{r}`"))).collect();
    assert!(missing.is_empty(), "reasons in the code but not in docs/contract.md: {missing:?}");
}

/// Every file under `dir` ending in `.rs`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_exit_code_is_in_the_contract() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let sources: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let enums: Vec<&str> = sources
        .iter()
        .filter_map(|s| s.split_once("pub enum Exit {").map(|(_, rest)| rest.split('}').next().unwrap()))
        .collect();
    assert_eq!(enums.len(), 1, "one Exit type");
    let codes: Vec<(&str, &str)> = enums[0]
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').split_once(" = "))
        .map(|(name, code)| (name.trim(), code.trim()))
        .collect();
    assert!(codes.len() >= 5, "{codes:?}");
    let doc = contract();
    for (name, code) in codes {
        assert!(doc.contains(&format!("| {code} | {name} |")), "exit {code} ({name}) is not in docs/contract.md");
    }
}
