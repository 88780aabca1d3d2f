//! The command line: commands, options and the environment variables behind them. A
//! usage error prints one line on stderr and exits 2; `--help` and `--version` exit 0.

use std::io::Write;

use chrono::{DateTime, SecondsFormat};
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use clap_complete::Shell;

use crate::error::{one_line, EXIT_OK, EXIT_USAGE};

/// Start, follow and inspect Crane runs over its HTTP API.
///
/// Exit status: 0 when the run completed (or the command succeeded), 1 when it ended in
/// any other status or the API refused the request, 2 on usage, configuration or
/// connection errors, 130 when following was interrupted.
#[derive(Debug, Parser)]
#[command(name = "crane", version, propagate_version = true)]
pub struct Cli {
    /// Base URL of the Crane API.
    #[arg(
        long,
        env = "CRANE_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub url: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "CRANE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Machine output: the JSON the API answered (events as JSON lines).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a run of PROMPT; prints its id (or, with --follow, its progress).
    Run {
        /// What to do, e.g. "calculate 2+3 then add a todo with the result".
        #[arg(required = true, num_args = 1..)]
        prompt: Vec<String>,
        /// Show each step live until the run ends; exit 0 only if it completed.
        #[arg(long, short)]
        follow: bool,
        /// Replays the same run instead of creating another when sent again.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show a run: status, steps, result.
    Get {
        id: String,
        /// The run as it was at this time (RFC 3339, e.g. 2026-11-26T10:00:00.5Z).
        #[arg(long, value_parser = rfc3339)]
        at: Option<String>,
    },
    /// Show a run's event log.
    Events {
        id: String,
        /// Keep showing the run live until it ends; exit 0 only if it completed.
        #[arg(long, short)]
        follow: bool,
    },
    /// List runs, newest first.
    Runs {
        /// pending, running, completed, failed, compensating, compensated,
        /// compensation_failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Runs per page (1-100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: Option<u32>,
        /// The page after the one that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel a run: nothing new is scheduled and what completed is undone.
    Cancel { id: String },
    /// Approve a step waiting for approval.
    Approve {
        run_id: String,
        step_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a step waiting for approval.
    Reject {
        run_id: String,
        step_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// List your todos.
    Todos {
        /// Todos per page (1-500).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: Option<u32>,
        /// The page after the one that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// List the tools and their circuit breakers.
    Tools,
    /// Check that the API, its store and its planner are up.
    Health,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: Shell },
}

/// The command line of this process, or the exit status to leave with (help, version and
/// usage errors are printed here).
pub fn parse() -> Result<Cli, u8> {
    parse_from(std::env::args_os())
}

pub fn parse_from<I, T>(args: I) -> Result<Cli, u8>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            EXIT_OK
        }
        _ => {
            let _ = writeln!(std::io::stderr(), "crane: {}", usage_line(&e));
            EXIT_USAGE
        }
    })
}

/// A clap error in one line: its message without the usage block and tips.
pub fn usage_line(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a command is required (crane --help)".into();
    }
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let line = one_line(&message.join(" "));
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("{line} (crane --help)")
}

fn rfc3339(s: &str) -> Result<String, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.to_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .map_err(|_| "not an RFC 3339 time like 2026-01-02T03:04:05Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).expect_err("a usage error");
        usage_line(&e)
    }

    #[test]
    fn given_the_commands_when_parsed_then_options_land_where_expected() {
        let cli = Cli::try_parse_from(["crane", "run", "calculate", "2+3", "--follow", "--json"])
            .expect("parses");
        assert!(cli.json);
        match cli.command {
            Command::Run { prompt, follow, .. } => {
                assert_eq!(prompt.join(" "), "calculate 2+3");
                assert!(follow);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["crane", "get", "r1", "--at", "2026-01-02T04:04:05+01:00"])
            .expect("parses");
        assert!(
            matches!(cli.command, Command::Get { at: Some(ref t), .. } if t == "2026-01-02T03:04:05Z")
        );
    }

    #[test]
    fn given_bad_arguments_when_parsed_then_the_error_is_one_line() {
        for args in [
            &["crane", "get"][..],
            &["crane", "frobnicate"],
            &["crane", "runs", "--limit", "0"],
            &["crane", "get", "r1", "--at", "yesterday"],
            &["crane"],
        ] {
            let line = error_of(args);
            assert!(!line.contains('\n'), "{args:?}: {line}");
            assert!(line.ends_with("(crane --help)"), "{args:?}: {line}");
        }
        assert!(error_of(&["crane", "get"]).contains("<ID>"));
        assert!(error_of(&["crane", "get", "r1", "--at", "yesterday"]).contains("RFC 3339"));
    }

    #[test]
    fn given_the_definition_when_checked_then_clap_accepts_it() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
