//! Structured logs on stderr, as text for people or JSON for collectors.

//!
//! Text logs escape every control character of their fields and messages
//! ([`wid_api::text::escape`]): values come from requests (a JWT's `kid` reaches the audit
//! reason), and a raw newline or ESC would forge a log line or drive the reader's terminal. JSON
//! logs need nothing more: JSON escapes control characters itself.

use std::fmt::{self, Write};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive such as `info` or
/// `wid_token_service=debug,info`; a bad one falls back to `info` with a warning.
pub fn init(format: LogFormat, filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let result = match format {
        LogFormat::Text => tracing::subscriber::set_global_default(text(
            filter,
            std::io::stderr,
            colours(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
        )),
        LogFormat::Json => tracing::subscriber::set_global_default(json(filter, std::io::stderr)),
    };
    // A second init (tests, `wid dev`) keeps the first subscriber; that is fine.
    drop(result);
    if let Some(e) = bad {
        tracing::warn!(error = %e, "bad log filter; using 'info'");
    }
}

/// Whether text logs are coloured: only on a terminal (a log file is read by tools, and its only
/// escape bytes would be ours), and never when `NO_COLOR` is set to anything but empty
/// (no-color.org).
pub fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The text subscriber, coloured or not.
fn text<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(EscapedFields)
        .with_ansi(ansi)
        .finish()
}

fn json<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        // The request a line belongs to (`span: {name, id}`), not the whole stack of spans.
        .with_current_span(true)
        .with_span_list(false)
        .finish()
}

/// The fields of text logs in the shape of tracing-subscriber's default (`message key=value`,
/// strings recorded as `&str` quoted), with every value escaped. Field names are not styled: the
/// default's italics are private to tracing-subscriber.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

/// Writes through to `0`, escaping; escaping is per character, so it holds across the pieces
/// `fmt` writes.
struct Escaping<'a, W>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        wid_api::text::escape_into(self.0, s)
    }
}

impl EscapingVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); false when writing failed
    /// before.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !std::mem::take(&mut self.empty) {
            self.result = self.writer.write_char(' ');
        }
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self.result.and_then(|()| write!(self.writer, "{name}="));
        }
        self.result.is_ok()
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        if !self.start(field) {
            return;
        }
        self.result = quoted(&mut self.writer, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // As the default: the error, then its chain of sources.
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!("{value} {}.sources={}", field.name(), Sources(source)),
            ),
            None => self.record_debug(field, &format_args!("{value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            if self.start(field) {
                self.result = write!(Escaping(&mut self.writer), "{value:?}");
            }
            return;
        }
        if !self.start(field) {
            return;
        }
        // A value with a space, `=` or `"` in it is quoted, so that no value can pass for more
        // fields after it (` outcome=GRANTED` inside a reason); plain words and numbers are not.
        let text = format!("{value:?}");
        self.result = if text.is_empty() || text.contains([' ', '=', '"']) {
            quoted(&mut self.writer, &text)
        } else {
            Escaping(&mut self.writer).write_str(&text)
        };
    }
}

/// `value` quoted as the default quotes a `&str`, with `"` escaped so that the quotes stay the
/// value's bounds; the backslash is escaped already, so `\"` is unambiguous.
fn quoted(out: &mut impl Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    for (i, part) in value.split('"').enumerate() {
        if i > 0 {
            out.write_str("\\\"")?;
        }
        wid_api::text::escape_into(out, part)?;
    }
    out.write_char('"')
}

/// An error's sources as a list, `[first, second]`.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&format_args!("{error}"));
            next = error.source();
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log line's worth of hostile input: a newline, a forged audit line, terminal escapes.
    const FORGED: &str = "x'\nINFO wid::audit: outcome=GRANTED\x1b[2J\x07\0";

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    /// Logs one event carrying `FORGED` in its message and in a Display, a str, an error and a
    /// Debug field, through `subscriber`.
    fn log_forged(subscriber: impl tracing::Subscriber + Send + Sync) {
        let cause = std::io::Error::other(FORGED);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "wid::audit",
                reason = %FORGED,
                kid = FORGED,
                quoted = r#"a"b\"#,
                cause = &cause as &(dyn std::error::Error + 'static),
                error = ?FORGED,
                "refused {FORGED}"
            );
        });
    }

    fn has_raw_controls(text: &str) -> bool {
        text.trim_end_matches('\n')
            .contains(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    }

    #[test]
    fn text_logs_escape_controls_in_every_field() {
        for terminal in [false, true] {
            let buffer = Buffer::default();
            let writer = buffer.clone();
            log_forged(text(
                EnvFilter::new("info"),
                move || writer.clone(),
                terminal,
            ));
            let out = buffer.text();
            assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
            assert!(out.ends_with('\n'), "{out:?}");
            let escaped = "x'\\nINFO wid::audit: outcome=GRANTED\\x1b[2J\\x07\\x00";
            assert!(out.contains(&format!("refused {escaped}")), "{out:?}");
            // Values with a space (or `=`, `"`) are quoted, whatever their kind.
            assert!(out.contains(&format!("reason=\"{escaped}\"")), "{out:?}");
            assert!(out.contains(&format!("kid=\"{escaped}\"")), "{out:?}");
            assert!(out.contains(&format!("cause=\"{escaped}\"")), "{out:?}");
            assert!(out.contains(r#"quoted="a\"b\\""#), "{out:?}");
            if !terminal {
                assert!(!has_raw_controls(&out), "{out:?}");
            }
        }
    }

    /// A value cannot pass for fields after it: the only `outcome=` outside quotes is the real
    /// one, and plain words stay unquoted.
    #[test]
    fn values_cannot_forge_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let forged = "kid 'k' outcome=GRANTED caller=bootstrap-admin";
        tracing::subscriber::with_default(
            text(EnvFilter::new("info"), move || writer.clone(), false),
            || {
                tracing::info!(reason = %forged, outcome = %"DENIED", count = 3, "audit");
            },
        );
        let out = buffer.text();
        assert!(
            out.contains(
                r#"reason="kid 'k' outcome=GRANTED caller=bootstrap-admin" outcome=DENIED count=3"#
            ),
            "{out:?}"
        );
        // Outside quotes, one `outcome=`.
        let unquoted: String = out.split('"').step_by(2).collect();
        assert_eq!(unquoted.matches("outcome=").count(), 1, "{out:?}");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(
            colours(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None), "a file or a pipe gets no escapes");
        assert!(!colours(false, Some(OsStr::new("1"))));
    }

    /// Uncoloured text logs carry no escape byte at all, not even tracing's level colours.
    #[test]
    fn uncoloured_logs_have_no_escapes() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing::subscriber::with_default(
            text(EnvFilter::new("info"), move || writer.clone(), false),
            || tracing::warn!(path = "/x", "plain"),
        );
        let out = buffer.text();
        assert!(out.contains("WARN") && !out.contains('\x1b'), "{out:?}");
    }

    /// JSON escapes control characters itself; this pins that.
    #[test]
    fn json_logs_are_one_line_without_controls() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        log_forged(json(EnvFilter::new("info"), move || writer.clone()));
        let out = buffer.text();
        assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
        assert!(!has_raw_controls(&out), "{out:?}");
        let line: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(line["reason"], FORGED);
    }
}
