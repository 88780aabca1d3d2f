//! `crane`: start, follow and inspect Crane runs from a shell.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match crane_cli::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crane: cannot start: {e}");
            return ExitCode::from(crane_cli::error::EXIT_USAGE);
        }
    };
    ExitCode::from(runtime.block_on(crane_cli::run(cli)))
}
