//! `crane`: the command line of Crane's HTTP API. Starts runs, follows them live, shows
//! runs, events, todos, tools and health, cancels runs and decides approvals.
//!
//! It is a client of the API only (`infra/openapi.json`), so it reads runs and events as
//! JSON and tolerates fields, statuses and events newer than itself.
//!
//! # Layout
//! - [`cli`]: commands, options, environment variables; one-line usage errors.
//! - [`client`]: the HTTP client: base URL, bearer key, JSON answers and error bodies.
//! - [`commands`]: what each command asks and prints.
//! - [`follow`]: long-polling a run's events and showing them live or as plain lines.
//! - [`progress`]: the display model of a run, folded from events or read from a view.
//! - [`render`]: the text of frames, event lines and summaries (pure).
//! - [`error`]: errors and exit statuses.

use std::io::Write;

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod follow;
pub mod progress;
pub mod render;

/// Run the parsed command line; returns the exit status. Errors are printed here, on one
/// line of stderr.
pub async fn run(cli: cli::Cli) -> u8 {
    match commands::execute(cli).await {
        Ok(code) => code,
        Err(e) if e.is_closed_pipe() => error::EXIT_OK,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "crane: {}", e.message());
            e.exit_code()
        }
    }
}
