//! `ims-sim --listen 127.0.0.1:PORT [--scenario FILE] [--iam-listen ADDR]
//! [--tls-cert FILE --tls-key FILE]`: a local IMS + IAM simulator. Prints
//! `ims-sim listening on http://ADDR` once it accepts connections (port 0
//! picks a free port), and with `--iam-listen` a second line `ims-sim IAM
//! listening on http://ADDR`; `https://` with `--tls-cert`.

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
    /// Serve IAM (`/v3/auth/tokens`, `/v3.0/OS-AUTH/...`) on this address
    /// only, as a cloud has IAM on its own host; `--listen` then answers
    /// IAM paths with the gateway's 404. Same state: its tokens work on
    /// `--listen`.
    #[arg(long)]
    iam_listen: Option<String>,
    /// HTTPS: the server's certificate chain (PEM, its own first).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
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
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
            Some(sim::tls::server_config(&read(cert)?, &read(key)?)?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ims = bind(&args.listen).await?;
    let iam = match &args.iam_listen {
        Some(listen) => Some(bind(listen).await?),
        None => None,
    };
    tracing::info!(jobs = scenario.jobs.len(), users = scenario.users.len(), "scenario loaded");
    println!("ims-sim listening on {scheme}://{}", ims.local_addr()?);
    if let Some(iam) = &iam {
        println!("ims-sim IAM listening on {scheme}://{}", iam.local_addr()?);
    }
    std::io::stdout().flush()?;
    let listeners = sim::Listeners { ims, iam, tls };
    sim::serve_listeners(listeners, scenario, telemetry::shutdown_signal()).await?;
    Ok(())
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Scenario> {
    let Some(path) = path else {
        return Ok(Scenario::demo());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Scenario::parse(&text).with_context(|| format!("invalid scenario {}", path.display()))
}
