//! `ims-sim --listen 127.0.0.1:PORT [--scenario FILE]`: a local IMS + IAM
//! simulator. Prints `ims-sim listening on http://ADDR` once it accepts
//! connections (port 0 picks a free port).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use imagejob_operator::sim::{self, Scenario, scenario::DEFAULT_SCENARIO_YAML};
use imagejob_operator::telemetry;

#[derive(Parser)]
#[command(name = "ims-sim", version, about = "Local Open Telekom Cloud IMS + IAM simulator")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
    /// Scenario file (YAML or JSON); the built-in demo when absent.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Print the built-in demo scenario and exit.
    #[arg(long)]
    print_default_scenario: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_scenario {
        print!("{DEFAULT_SCENARIO_YAML}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let scenario = load(args.scenario.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(jobs = scenario.jobs.len(), users = scenario.users.len(), "scenario loaded");
    println!("ims-sim listening on http://{addr}");
    std::io::stdout().flush()?;
    sim::serve_until(listener, scenario, telemetry::shutdown_signal()).await?;
    Ok(())
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Scenario> {
    let Some(path) = path else {
        return Ok(Scenario::demo());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Scenario::parse(&text).with_context(|| format!("invalid scenario {}", path.display()))
}
