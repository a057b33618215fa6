//! `flotillactl completions SHELL` and `flotillactl man --out DIR`: shell completions and man
//! pages generated from the CLI definition itself (clap's own `clap_complete` and
//! `clap_mangen`), so they never drift from the flags the program takes. Neither opens the
//! inventory: a package build runs them without a data directory.

use crate::error::{ApiError, ErrorCode};
use clap::{CommandFactory, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum DocsCommand {
    /// Print the shell completion script for bash, zsh or fish on stdout.
    ///
    /// E.g. `flotillactl completions bash > ~/.local/share/bash-completion/completions/flotillactl`.
    /// Changes nothing and needs no inventory.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages into a folder: flotillactl.1 and one page per subcommand.
    ///
    /// The pages are named after the command: flotillactl-unit-rollout.1, … Needs no
    /// inventory.
    Man {
        /// The folder to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// The shells a completion script is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => Self::Bash,
            Shell::Zsh => Self::Zsh,
            Shell::Fish => Self::Fish,
        }
    }
}

/// Runs a docs command for the command line `C` (the `flotillactl` parser).
pub(super) fn run<C: CommandFactory>(cmd: &DocsCommand) -> Result<ExitCode, ApiError> {
    match cmd {
        DocsCommand::Completions { shell } => {
            let mut command = C::command();
            let name = command.get_name().to_owned();
            // Rendered first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(
                clap_complete::Shell::from(*shell),
                &mut command,
                name,
                &mut script,
            );
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&script).and_then(|()| stdout.flush()) {
                // The reader had enough (`| head`): not a failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        format!("cannot print the completion script: {e}"),
                    ));
                }
                _ => {}
            }
        }
        DocsCommand::Man { out } => {
            write_man_pages(C::command(), out)?;
            eprintln!("man pages written to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_man_pages(command: clap::Command, out: &Path) -> Result<(), ApiError> {
    std::fs::create_dir_all(out).map_err(|e| cannot_write(out, &e))?;
    clap_mangen::generate_to(command, out).map_err(|e| cannot_write(out, &e))
}

fn cannot_write(out: &Path, e: &std::io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidInput,
        format!("cannot write man pages into {}: {e}", out.display()),
    )
}
