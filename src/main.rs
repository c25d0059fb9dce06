//! The `imagejob-operator` command: wires subcommands to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imagejob_operator::cli::{self, job};
use imagejob_operator::config::{LogFormat, RunArgs};
use imagejob_operator::{controller, crd, http, telemetry};

/// Where `--help` sends a reader for the names it does not spell out.
const CONTRACT_HELP: &str = "Conditions, reasons, exit codes and every flag: docs/contract.md";

#[derive(Parser)]
#[command(
    name = "imagejob-operator",
    version,
    about = "Open Telekom Cloud IMS jobs as Kubernetes ImageJob resources",
    after_help = CONTRACT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `run`, which is the default subcommand.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the ImageJob CustomResourceDefinition as YAML.
    Crd,
    /// Query IMS jobs directly.
    #[command(subcommand)]
    Job(JobCommand),
    /// GET a URL once; exit 0 on a 2xx answer (`helm test` checks /readyz this way).
    Probe(http::probe::ProbeArgs),
}

#[derive(Subcommand)]
enum JobCommand {
    /// Query one job once and print it.
    Get(job::JobGetArgs),
    /// Follow one job until it ends (exit 0 SUCCESS, 1 FAIL, 2 timeout, 3 stalled, 4 usage;
    /// docs/contract.md).
    Wait(job::JobWaitArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match cli::parse_args() {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    let result = match cli.command {
        Some(Command::Crd) => {
            print!("{}", crd::crd_yaml());
            Ok(())
        }
        // Prints its own error details; only the exit code is left to set.
        Some(Command::Job(JobCommand::Get(args))) => {
            telemetry::init(LogFormat::Text, "warn");
            return job::get::run(args).await;
        }
        Some(Command::Job(JobCommand::Wait(args))) => {
            telemetry::init(LogFormat::Text, "warn");
            return job::wait::run(args).await;
        }
        Some(Command::Probe(args)) => return http::probe::run(args).await,
        Some(Command::Run(args)) => run(args).await,
        None => run(cli.run).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, "info");
    controller::run::run(args).await
}
