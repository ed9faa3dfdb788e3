//! Output: tables for people, JSON and YAML for scripts.
//!
//! Table cells escape control characters ([`wid_api::text::escape`]): values come from the
//! service, and through it from requests (an audit reason quotes a JWT's `kid`), so a raw
//! newline or ESC would forge a row or drive the terminal. JSON and YAML escape them themselves
//! (serde-saphyr writes `\e`, `\n`, `\L` in double quotes).

use serde_json::Value;

use crate::args::Format;

/// Writes `text` to standard output. A reader that went away (`wid ... | head`) ends the output
/// quietly, as for any Unix tool, rather than with a panic as `print!` would.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("warning: cannot write to standard output: {e}"),
    }
}

/// One column of a table: its header and the JSON field it shows.
pub type Column = (&'static str, &'static str);

/// The text of a cell, escaped.
fn cell(item: &Value, field: &str) -> String {
    wid_api::text::escape(&cell_text(item, field)).into_owned()
}

fn cell_text(item: &Value, field: &str) -> String {
    match item.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(cell_value).collect::<Vec<_>>().join(","),
        Some(other) => cell_value(other),
    }
}

fn cell_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders `items` as an aligned table.
pub fn table(items: &[Value], columns: &[Column]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, f)| cell(item, f)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())];
    lines.extend(rows.into_iter().map(line));
    lines.join("\n") + "\n"
}

/// A single resource in the chosen format; a table of one resource is its YAML, as gcloud's
/// describe prints.
pub fn resource(value: &Value, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Format::Yaml | Format::Table => yaml(value),
    }
}

/// A list of resources in the chosen format.
pub fn list(items: &[Value], format: Format, columns: &[Column]) -> String {
    match format {
        Format::Table if items.is_empty() => "Listed 0 items.\n".to_owned(),
        Format::Table => table(items, columns),
        Format::Json => serde_json::to_string_pretty(items).unwrap_or_default() + "\n",
        Format::Yaml => items.iter().map(|i| format!("---\n{}", yaml(i))).collect(),
    }
}

fn yaml(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => "{}\n".to_owned(),
        _ => serde_saphyr::to_string(value)
            .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let items = [
            json!({"email": "a@b", "disabled": true}),
            json!({"email": "longer@b"}),
        ];
        assert_eq!(
            table(&items, &[("EMAIL", "email"), ("DISABLED", "disabled")]),
            "EMAIL     DISABLED\na@b       true\nlonger@b\n"
        );
    }

    /// A forged line and terminal escapes, as a hostile JWT `kid` brings them into a reason.
    const FORGED: &str =
        "kid 'x\nINFO wid::audit: outcome=GRANTED\x1b[2J\x07\0\t\r\x7f\u{9b}\u{85}\u{2028}'";

    fn has_raw_controls(text: &str) -> bool {
        text.contains(|c: char| {
            (c.is_control() && c != '\n') || matches!(c, '\u{2028}' | '\u{2029}')
        })
    }

    #[test]
    fn table_cells_escape_controls() {
        let items = [json!({"outcome": "DENIED", "reason": FORGED, "members": [FORGED]})];
        let out = table(
            &items,
            &[
                ("OUTCOME", "outcome"),
                ("REASON", "reason"),
                ("MEMBERS", "members"),
            ],
        );
        let escaped = "kid 'x\\nINFO wid::audit: outcome=GRANTED\\x1b[2J\\x07\\x00\\t\\r\\x7f\\u{9b}\\u{85}\\u{2028}'";
        assert_eq!(
            out,
            format!(
                "OUTCOME  REASON{pad}  MEMBERS\nDENIED   {escaped}  {escaped}\n",
                pad = " ".repeat(escaped.len() - 6)
            ),
        );
        assert!(!has_raw_controls(&out), "{out:?}");
    }

    /// serde-saphyr writes control characters as YAML escapes in double quotes; this pins it.
    #[test]
    fn yaml_escapes_controls() {
        let value = json!({"reason": FORGED, "nested": {"list": [FORGED]}});
        for out in [
            resource(&value, Format::Yaml),
            list(std::slice::from_ref(&value), Format::Yaml, &[]),
        ] {
            assert!(!has_raw_controls(&out), "{out:?}");
            assert!(
                !out.lines().any(|l| l.trim_start().starts_with("INFO")),
                "{out}"
            );
        }
    }

    #[test]
    fn yaml_of_a_resource() {
        let out = resource(&json!({"email": "a@b", "etag": "ACAB"}), Format::Yaml);
        assert!(out.contains("email: a@b"), "{out}");
    }
}
