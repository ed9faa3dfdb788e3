//! Text shown to people, one record a line: text logs and the CLI's tables.
//!
//! Values in them come from requests (a JWT header's `kid`, an issuer URL, a display name), so
//! a control character printed raw could end the line and forge the next one, or drive the
//! terminal (ESC sequences clear the screen or retitle the window, BEL rings). [`escape`] makes
//! every such character a visible escape instead, so one record stays one line of inert text.
//!
//! What is escaped: the C0 controls (`\n`, `\r`, `\t` by name, the others as `\xHH`, NUL as
//! `\x00`), DEL (`\x7f`), the C1 controls U+0080-U+009F, the Unicode line and paragraph
//! separators U+2028/U+2029 and the bidirectional controls (U+061C, U+200E/F, U+202A-U+202E,
//! U+2066-U+2069) (as `\u{HHHH}`), and the backslash itself (as `\\`). Escaping the
//! backslash keeps the result unambiguous: every backslash in it starts an escape, so a value
//! holding the two characters `\n` is shown as `\\n` and cannot pass for an escaped newline;
//! the original is always recoverable. Everything else, printable Unicode included, is kept.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Whether `c` is shown as an escape rather than as itself.
fn needs_escape(c: char) -> bool {
    // `is_control` is the Cc category: C0, DEL and C1. The bidirectional controls reorder what
    // a terminal shows (a reason could show another account than the one it names).
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Writes `text` to `out` with every control character (and the backslash) escaped; see the
/// module documentation for the rules. Escaping is per character, so a text written in pieces
/// (as `fmt` does) is escaped exactly as it would be whole.
pub fn escape_into(out: &mut impl Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        out.write_str(&rest[..at])?;
        let mut chars = rest[at..].chars();
        let Some(c) = chars.next() else { break };
        match c {
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_ascii() => write!(out, "\\x{:02x}", u32::from(c))?,
            c => write!(out, "\\u{{{:x}}}", u32::from(c))?,
        }
        rest = chars.as_str();
    }
    out.write_str(rest)
}

/// `text` with every control character (and the backslash) escaped; borrowed when there is
/// none, as for nearly every value.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    // Writing to a String cannot fail.
    let _ = escape_into(&mut out, text);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bidirectional_controls_are_escaped() {
        // "admin" shown reversed by RIGHT-TO-LEFT OVERRIDE: not in a log or table.
        assert_eq!(escape("a\u{202e}nimda"), "a\\u{202e}nimda");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(escape("\u{200f}"), "\\u{200f}");
    }

    /// The inverse of [`escape`], to show that nothing is lost or ambiguous.
    fn unescape(text: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                }
                'u' => {
                    let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(
            escape("a\nINFO wid::audit: outcome=GRANTED\x1b[2J\x07\0"),
            "a\\nINFO wid::audit: outcome=GRANTED\\x1b[2J\\x07\\x00"
        );
        assert_eq!(escape("\r\t\x7f\u{85}\u{9b}"), "\\r\\t\\x7f\\u{85}\\u{9b}");
        assert_eq!(escape("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
        assert_eq!(escape(r"C:\n"), r"C:\\n", "a literal backslash is escaped");
        assert!(matches!(escape("ünïcødé ✓ 名前"), Cow::Borrowed(_)));
    }

    fn special() -> impl Strategy<Value = char> {
        prop_oneof![
            (0u32..0x20).prop_filter_map("C0", char::from_u32),
            Just('\x7f'),
            (0x80u32..0xa0).prop_filter_map("C1", char::from_u32),
            Just('\u{2028}'),
            Just('\u{2029}'),
            Just('\\'),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![any::<char>(), special()], 0..40)
            .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn escaped_text_is_inert_and_lossless(s in text()) {
            let escaped = escape(&s);
            prop_assert!(
                !escaped.contains(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
                "{escaped:?}"
            );
            prop_assert_eq!(unescape(&escaped), Some(s.clone()));
            // Escaping piecewise, as fmt writes, is escaping whole.
            let mut pieces = String::new();
            for c in s.chars() {
                escape_into(&mut pieces, c.encode_utf8(&mut [0; 4]))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            prop_assert_eq!(pieces, escaped.into_owned());
        }

        #[test]
        fn text_without_controls_is_kept(s in "[^\\p{Cc}\\\\\u{2028}\u{2029}\u{061c}\u{200e}\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}]*") {
            prop_assert!(matches!(escape(&s), Cow::Borrowed(t) if t == s));
        }
    }
}
