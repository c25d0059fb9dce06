//! The image `tests/cluster/image` writes without a container daemon must be
//! the Dockerfile's image: same binary paths, user, entrypoint, command,
//! exposed port and labels, and the distroless cc-debian12 files the
//! binaries need (glibc, libgcc_s, CA certificates, the nonroot user).
//! Builds a real archive (from this build's binaries) and reads it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

mod common;
#[path = "common/node.rs"]
mod node;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Dockerfile's instructions as (KEYWORD, arguments), continuation
/// lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    joined
        .iter()
        .map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace).unwrap_or((l, ""));
            (k.to_uppercase(), v.trim().to_owned())
        })
        .collect()
}

/// What the Dockerfile promises about its final image.
#[derive(Debug, PartialEq)]
struct Promised {
    base: String,
    user: String,
    entrypoint: Value,
    cmd: Value,
    exposed: Vec<String>,
    labels: BTreeMap<String, String>,
    binaries: Vec<String>,
}

fn promised(dockerfile: &str) -> Promised {
    let all = instructions(dockerfile);
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    let (builder, final_stage) = all.split_at(last_from);
    let get = |k: &str| final_stage.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    // `install ... /out/NAME` in the builder, `COPY --from=builder /out/ DEST`.
    let out_names: Vec<String> = builder
        .iter()
        .filter(|(k, _)| k == "RUN")
        .flat_map(|(_, v)| v.split("&&"))
        .filter_map(|cmd| cmd.trim().strip_prefix("install ")?.split_whitespace().last()?.strip_prefix("/out/"))
        .map(str::to_owned)
        .collect();
    let copy = get("COPY").expect("COPY in the final stage");
    let dest = copy.split_whitespace().last().unwrap().trim_end_matches('/').to_owned();
    assert!(copy.contains("/out/"), "final COPY copies /out/: {copy}");
    let mut labels = BTreeMap::new();
    for (_, v) in final_stage.iter().filter(|(k, _)| k == "LABEL") {
        let mut rest = v.as_str();
        while let Some((key, after)) = rest.trim_start().split_once("=\"") {
            let (value, tail) = after.split_once('"').expect("closing quote");
            labels.insert(key.trim().to_owned(), value.to_owned());
            rest = tail;
        }
    }
    Promised {
        base: final_stage[0].1.clone(),
        user: get("USER").expect("USER"),
        entrypoint: serde_json::from_str(&get("ENTRYPOINT").expect("ENTRYPOINT")).unwrap(),
        cmd: serde_json::from_str(&get("CMD").expect("CMD")).unwrap(),
        exposed: get("EXPOSE").unwrap_or_default().split_whitespace().map(|p| format!("{p}/tcp")).collect(),
        labels,
        binaries: out_names.iter().map(|n| format!("{dest}/{n}")).collect(),
    }
}

/// One entry of the layer: path without "./", mode string, owner.
struct Entry {
    mode: String,
    owner: String,
}

struct Archive {
    config: Value,
    files: BTreeMap<String, Entry>,
    passwd: String,
    annotations: Value,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

fn read_archive(tar: &Path, dir: &Path) -> Archive {
    sh(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(dir));
    let json = |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let index = json(dir.join("index.json"));
    let m = &index["manifests"][0];
    let manifest = json(blob(dir, m["digest"].as_str().unwrap()));
    let config = json(blob(dir, manifest["config"]["digest"].as_str().unwrap()));
    let layer = blob(dir, manifest["layers"][0]["digest"].as_str().unwrap());
    let listing = sh(Command::new("tar").args(["--numeric-owner", "-tvzf"]).arg(&layer));
    let files = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?.trim_start_matches("./").trim_end_matches('/').to_owned();
            Some((path, Entry { mode: f[0].to_owned(), owner: f[1].to_owned() }))
        })
        .collect();
    let passwd = sh(Command::new("tar").args(["-xzOf"]).arg(&layer).arg("./etc/passwd"));
    Archive { config, files, passwd, annotations: m["annotations"].clone() }
}

#[test]
fn dockerfile_parser_reads_the_final_stage() {
    let p = promised(
        "FROM rust AS builder\nRUN cargo build \\\n && install -D -m 0755 a /out/one \\\n && install -D b /out/two\n\
         FROM base:nonroot\nLABEL a=\"x y\" \\\n      b=\"z\"\nCOPY --from=builder /out/ /bin/\nUSER 1:1\nEXPOSE 80\n\
         ENTRYPOINT [\"/bin/one\"]\nCMD [\"go\"]\n",
    );
    assert_eq!(p.base, "base:nonroot");
    assert_eq!(p.binaries, ["/bin/one", "/bin/two"]);
    assert_eq!(p.labels.get("a").map(String::as_str), Some("x y"));
    assert_eq!(p.labels.len(), 2);
    assert_eq!((p.user.as_str(), p.entrypoint.clone(), p.cmd.clone()), ("1:1", json!(["/bin/one"]), json!(["go"])));
    assert_eq!(p.exposed, ["80/tcp"]);
}

#[test]
fn daemonless_image_matches_the_dockerfile() {
    let p = promised(&std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap());
    assert!(p.base.contains("distroless/cc-debian12"), "the image script rebuilds cc-debian12, not {}", p.base);

    let bins = node::stripped_binaries();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("image.tar");
    let started = std::time::Instant::now();
    let out = sh(Command::new("bash")
        .arg(Path::new(ROOT).join("tests/cluster/image"))
        .arg("--bin-dir")
        .arg(bins.path())
        .arg("--out")
        .arg(&tar)
        .arg("--no-import"));
    let reference = out.lines().last().expect("image reference").to_owned();
    eprintln!(
        "image: {reference}, archive {} MiB (stripped debug binaries), written in {:.1}s",
        std::fs::metadata(&tar).unwrap().len() >> 20,
        started.elapsed().as_secs_f64()
    );
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let a = read_archive(&tar, &layout);
    let c = &a.config["config"];

    assert_eq!(a.annotations["io.containerd.image.name"], json!(reference));
    assert_eq!(c["User"], json!(p.user), "USER");
    assert_eq!(c["Entrypoint"], p.entrypoint, "ENTRYPOINT");
    assert_eq!(c["Cmd"], p.cmd, "CMD");
    let exposed: Vec<String> = c["ExposedPorts"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    assert_eq!(exposed, p.exposed, "EXPOSE");
    let labels: BTreeMap<String, String> = serde_json::from_value(c["Labels"].clone()).unwrap();
    assert_eq!(labels, p.labels, "LABELs");
    assert_eq!(a.config["os"], "linux");

    assert!(!p.binaries.is_empty());
    for bin in &p.binaries {
        let e = a.files.get(bin.trim_start_matches('/')).unwrap_or_else(|| panic!("{bin} missing from the image"));
        assert_eq!(e.mode, "-rwxr-xr-x", "{bin}");
    }
    let entry = p.entrypoint[0].as_str().unwrap();
    assert!(p.binaries.iter().any(|b| b == entry), "ENTRYPOINT {entry} is one of the copied binaries");

    // What distroless cc-debian12:nonroot gives the binaries.
    for f in [
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libm.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        // dpkg status per Debian package, as distroless ships them: SBOM scanners read these.
        "var/lib/dpkg/status.d/libc6",
        "var/lib/dpkg/status.d/libgcc-s1",
        "var/lib/dpkg/status.d/ca-certificates",
    ] {
        assert!(a.files.contains_key(f), "{f} missing from the image");
    }
    assert!(!a.files.keys().any(|f| f == "bin/sh" || f == "usr/bin/sh"), "no shell, like distroless");
    let uid = p.user.split(':').next().unwrap();
    assert!(a.passwd.lines().any(|l| l.starts_with(&format!("nonroot:x:{uid}:"))), "{}", a.passwd);
    assert_eq!(a.files["home/nonroot"].owner, format!("{uid}/{uid}"));
    assert_eq!(a.files["tmp"].mode, "drwxrwxrwt");
}
