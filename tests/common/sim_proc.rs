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
    let mut child = Command::new(env!("CARGO_BIN_EXE_ims-sim"))
        .args(["--listen", listen, "--scenario"])
        .arg(scenario)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut line)?;
    let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    if !url.starts_with("http://") {
        let _ = child.kill();
        return Err(io::Error::other(format!("ims-sim said {line:?}")));
    }
    Ok((child, url))
}
