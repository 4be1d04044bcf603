//! The `nmidctl` binary: CLI -> [`nmid::ctl::run`] -> the exit status of the error's kind
//! (the table is in `nmid::ctl` and the README).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nmid::ctl::Cli::parse();
    match nmid::ctl::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nmidctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
