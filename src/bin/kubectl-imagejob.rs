//! `kubectl imagejob status|wait|refresh`: see `imagejob_operator::plugin`.

use std::process::ExitCode;

use imagejob_operator::cli::parse_args;
use imagejob_operator::cli::plugin::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    match parse_args::<Cli>() {
        Ok(cli) => run(cli).await,
        Err(exit) => exit,
    }
}
