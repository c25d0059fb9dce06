//! Starts the ims-sim binary on a free loopback port (tests and the bench).

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts ims-sim with a scenario file. Returns the process and its base
/// URL, the last word of the first line it prints.
pub fn spawn_ims_sim(scenario: &Path) -> io::Result<(Child, String)> {
    spawn_ims_sim_on("127.0.0.1:0", scenario)
}

/// As `spawn_ims_sim`, listening on `listen` (a loopback address).
pub fn spawn_ims_sim_on(listen: &str, scenario: &Path) -> io::Result<(Child, String)> {
    let options = SimOptions { listen, ..SimOptions::default() };
    spawn_ims_sim_with(scenario, &options).map(|s| (s.child, s.url))
}

/// How ims-sim listens: `iam_listen` gives IAM a listener of its own
/// (`--iam-listen`), `tls` (certificate chain, key: PEM files) makes both
/// HTTPS.
#[derive(Clone, Copy)]
pub struct SimOptions<'a> {
    pub listen: &'a str,
    pub iam_listen: Option<&'a str>,
    pub tls: Option<(&'a Path, &'a Path)>,
}

impl Default for SimOptions<'_> {
    fn default() -> Self {
        SimOptions { listen: "127.0.0.1:0", iam_listen: None, tls: None }
    }
}

/// A started ims-sim: its IMS base URL and IAM's (the same unless IAM
/// listens on its own).
pub struct SpawnedSim {
    pub child: Child,
    pub url: String,
    pub iam_url: String,
}

/// Starts ims-sim as `options` say; the URLs are the last words of the
/// lines it prints (the IMS one first, then IAM's own, if any).
pub fn spawn_ims_sim_with(scenario: &Path, options: &SimOptions<'_>) -> io::Result<SpawnedSim> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ims-sim"));
    cmd.args(["--listen", options.listen, "--scenario"]).arg(scenario);
    if let Some(iam) = options.iam_listen {
        cmd.args(["--iam-listen", iam]);
    }
    if let Some((cert, key)) = options.tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let mut child = cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let scheme = if options.tls.is_some() { "https://" } else { "http://" };
    let mut read_url = || -> io::Result<String> {
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        if url.starts_with(scheme) { Ok(url) } else { Err(io::Error::other(format!("ims-sim said {line:?}"))) }
    };
    let urls = read_url().and_then(|url| {
        let iam_url = if options.iam_listen.is_some() { read_url()? } else { url.clone() };
        Ok((url, iam_url))
    });
    match urls {
        Ok((url, iam_url)) => Ok(SpawnedSim { child, url, iam_url }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}
