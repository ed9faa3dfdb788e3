//! Output: tables for people, JSON and YAML for scripts.

use serde_json::Value;

use crate::args::Format;

/// One column of a table: its header and the JSON field it shows.
pub type Column = (&'static str, &'static str);

fn cell(item: &Value, field: &str) -> String {
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

    #[test]
    fn yaml_of_a_resource() {
        let out = resource(&json!({"email": "a@b", "etag": "ACAB"}), Format::Yaml);
        assert!(out.contains("email: a@b"), "{out}");
    }
}
