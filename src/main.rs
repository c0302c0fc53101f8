//! Entry shim: run the command, print the error once, map it to pigen's exit codes.
use std::process::ExitCode;

fn main() -> ExitCode {
    pigen::cli::main()
}
