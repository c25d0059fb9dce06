//! The `imagejob-operator` command: wires subcommands to the library.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "imagejob-operator", version, about = "Open Telekom Cloud IMS jobs as Kubernetes ImageJob resources")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: imagejob_operator::config::RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(imagejob_operator::config::RunArgs),
    /// Print the ImageJob CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", imagejob_operator::crd::crd_yaml());
            Ok(())
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn run(_args: imagejob_operator::config::RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
