//! Everything that can stop a command, and the exit status each gets: `2` when Crane could
//! not be asked (bad arguments or configuration, no connection, an answer that is not
//! Crane's), `1` when Crane refused the request, `130` when the user interrupted. Every
//! error prints as one line.

use std::io;

/// The run completed, or the command did what it was asked.
pub const EXIT_OK: u8 = 0;
/// The run ended in any status but `completed`, or the API refused the request.
pub const EXIT_FAILED: u8 = 1;
/// Usage or configuration error, or Crane could not be reached.
pub const EXIT_USAGE: u8 = 2;
/// Interrupted (Ctrl-C) while following a run.
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or configuration.
    #[error("{0}")]
    Usage(String),
    /// No answer: refused, timed out, TLS or DNS failure.
    #[error("cannot reach {url}: {reason}")]
    Connection { url: String, reason: String },
    /// An answer that is not Crane's JSON.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// Crane answered with its error body `{"error": {"code", "message"}}`.
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// Writing to stdout or stderr failed (a closed pipe is not reported).
    #[error("writing the output: {0}")]
    Output(#[source] io::Error),
    /// Ctrl-C while following: the run itself goes on.
    #[error("stopped following run {run_id}; it goes on (crane events {run_id} --follow)")]
    Interrupted { run_id: String },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Connection { .. }
            | CliError::Protocol { .. }
            | CliError::Output(_) => EXIT_USAGE,
            // Credentials are configuration: the request was never considered.
            CliError::Api {
                status: 401 | 403, ..
            } => EXIT_USAGE,
            CliError::Api { .. } => EXIT_FAILED,
            CliError::Interrupted { .. } => EXIT_INTERRUPTED,
        }
    }

    /// The reader went away (`crane events ID | head`): stop quietly.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The one line printed on stderr, with a hint where one helps.
    pub fn message(&self) -> String {
        let text = match self {
            CliError::Api { status: 401, .. } => {
                format!("{self}; set CRANE_API_KEY (or --api-key) to a key the server accepts")
            }
            _ => self.to_string(),
        };
        one_line(&text)
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

/// `text` on one line: line breaks and other control characters become spaces, so an
/// error message sent by a server cannot break the line or drive the terminal.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        if c.is_control() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_each_error_when_mapped_then_refusals_exit_1_and_everything_else_2() {
        let api = |status: u16| CliError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
        };
        assert_eq!(api(404).exit_code(), 1);
        assert_eq!(api(409).exit_code(), 1);
        assert_eq!(api(422).exit_code(), 1);
        assert_eq!(api(503).exit_code(), 1);
        assert_eq!(api(401).exit_code(), 2);
        assert_eq!(CliError::Usage("bad".into()).exit_code(), 2);
        let down = CliError::Connection {
            url: "u".into(),
            reason: "r".into(),
        };
        assert_eq!(down.exit_code(), 2);
        let stop = CliError::Interrupted { run_id: "r".into() };
        assert_eq!(stop.exit_code(), 130);
    }

    #[test]
    fn given_a_message_with_line_breaks_and_escapes_when_printed_then_it_is_one_plain_line() {
        let e = CliError::Api {
            status: 422,
            code: "prompt_not_understood".into(),
            message: "no idea\nwhat \x1b[31mthis\x1b[0m is\r\n".into(),
        };
        let line = e.message();
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\x1b'));
        assert!(line.starts_with("no idea what"), "{line}");
        assert!(line.ends_with("(422 prompt_not_understood)"), "{line}");
    }
}
