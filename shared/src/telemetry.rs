//! One place that sets up logging: human-readable text locally, JSON in Lambda or with
//! `CRANE_LOG_FORMAT=json`. Filter with `RUST_LOG` (default `info`).
//!
//! Logs carry user strings (prompts, todo titles, model answers). In the text format every
//! field value and message goes through [`EscapedFields`], so a newline cannot forge a log
//! line and an escape sequence cannot reach the terminal; the JSON format escapes by itself.

use std::fmt;

use tracing::Subscriber;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init();
        }
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let _ = text_subscriber(filter, std::io::stderr, ansi).try_init();
        }
    }
}

/// The text-format subscriber writing to `writer`, with every field value and message
/// escaped ([`EscapedFields`]); `ansi` colours the level (never the values).
pub fn text_subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(EscapedFields::default())
        .finish()
}

/// The default `key=value` field format with control characters escaped: `\n`, `\r` and
/// `\t` as such, every other C0 or C1 control, DEL, the Unicode line separators and the
/// bidirectional overrides as `\u{..}`. Used for event fields (the message included) and
/// span fields alike.
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut escaping = Escaping(&mut writer);
        self.0.format_fields(Writer::new(&mut escaping), fields)
    }
}

/// Escapes control characters on their way to the inner writer.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            self.0.write_str(&s[clean..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            clean = i + c.len_utf8();
        }
        self.0.write_str(&s[clean..])
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn text(&self) -> String {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `f` logs through the text subscriber (level `info`).
    pub(crate) fn logged(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = text_subscriber(EnvFilter::new("info"), buffer.clone(), false);
        tracing::subscriber::with_default(subscriber, f);
        buffer.text()
    }

    #[test]
    fn given_a_title_with_a_newline_when_logged_then_no_line_is_forged() {
        let title = "buy milk\n2026-01-01T00:00:00.000000Z  INFO crane: admin logged in";
        let out = logged(|| {
            tracing::info!(title = %title, "todo added: {title}");
            tracing::info!(title, "as a str field");
        });
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("todo added: buy milk\\n2026-01-01"), "{out}");
        assert!(out.contains("title=buy milk\\n2026-01-01"), "{out}");
        assert!(!out
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")));
    }

    #[test]
    fn given_escape_sequences_when_logged_then_none_reaches_the_terminal() {
        let nasty = "\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}txt.exe\u{7f}\tend";
        let out = logged(|| {
            let span = tracing::info_span!("request", path = %nasty);
            let _entered = span.enter();
            tracing::warn!(prompt = %nasty, error = nasty, "failed: {nasty}");
        });
        let line = out.trim_end_matches('\n');
        assert!(!line.contains('\n'), "{out}");
        let raw: Vec<char> = line.chars().filter(|c| needs_escape(*c)).collect();
        assert!(raw.is_empty(), "unescaped {raw:?} in {line}");
        for escaped in [
            "\\u{1b}]0;pwned\\u{7}",
            "\\r",
            "\\u{9b}31m",
            "\\u{202e}",
            "\\u{7f}",
            "\\tend",
        ] {
            assert!(line.contains(escaped), "{escaped} missing from {line}");
        }
        // The span's fields, the event's fields and its message are all escaped.
        assert!(line.contains("request{path=\\u{1b}]0;"), "{line}");
        assert!(line.contains("prompt=\\u{1b}]0;"), "{line}");
    }

    #[test]
    fn given_plain_text_when_logged_then_it_is_unchanged() {
        let out = logged(|| tracing::info!(run_id = "r-1", steps = 4, "run created: é ✓"));
        assert!(
            out.ends_with("run created: é ✓ run_id=\"r-1\" steps=4\n"),
            "{out}"
        );
    }
}
