//! The exit codes of `job get|wait` and `kubectl imagejob` (docs/contract.md).

/// The exit codes of the `job` commands and of the kubectl plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Succeeded = 0,
    Failed = 1,
    TimedOut = 2,
    Stalled = 3,
    Usage = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Parses the command line. Bad flags exit 4, the usage error (clap's own
/// 2 means timeout here); `--help` and `--version` exit 0.
pub fn parse_args<C: clap::Parser>() -> Result<C, std::process::ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { Exit::Usage.into() } else { std::process::ExitCode::SUCCESS }
    })
}
