//! The workspace's shape, as ARCHITECTURE.md states it: every crate in the layer table, no
//! dependency sideways or up, and no production function or file longer than the rule allows
//! unless ARCHITECTURE.md says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A crate's place in the table: its layer number, or `None` for the tools.
type Layer = Option<u32>;

/// The layer table of ARCHITECTURE.md: crate directory name to layer.
fn layers(architecture: &str) -> BTreeMap<String, Layer> {
    let mut layers = BTreeMap::new();
    for row in architecture.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(layer), Some(krate)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(name) = krate
            .strip_prefix("`crates/")
            .and_then(|k| k.strip_suffix('`'))
        else {
            continue;
        };
        let number = layer.split(',').next().and_then(|n| n.trim().parse().ok());
        assert!(
            number.is_some() || layer.starts_with("tools"),
            "ARCHITECTURE.md gives {name} the layer {layer:?}: a number, or tools"
        );
        layers.insert(name.to_owned(), number);
    }
    layers
}

/// The workspace crates a manifest's `[dependencies]` name.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && line.starts_with("wid") {
            let name = line.split(['.', ' ', '=']).next().unwrap_or_default();
            found.push(name.to_owned());
        }
    }
    found
}

fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_crate_is_in_the_layer_table_and_depends_only_downwards() {
    let layers = layers(&read(&root().join("ARCHITECTURE.md")));
    let mut wrong = Vec::new();
    for name in crates() {
        let Some(&layer) = layers.get(&name) else {
            wrong.push(format!(
                "{name} is missing from ARCHITECTURE.md's layer table"
            ));
            continue;
        };
        let manifest = read(&root().join("crates").join(&name).join("Cargo.toml"));
        for dependency in dependencies(&manifest) {
            let Some(&below) = layers.get(&dependency) else {
                wrong.push(format!(
                    "{name} depends on {dependency}, which has no layer"
                ));
                continue;
            };
            let allowed = match (layer, below) {
                // Only tests depend on the tools.
                (_, None) => false,
                // The tools may use any library.
                (None, Some(_)) => true,
                (Some(layer), Some(below)) => below < layer,
            };
            if !allowed {
                wrong.push(format!(
                    "{name} (layer {layer:?}) depends on {dependency} (layer {below:?})"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The production lines of a source file: up to its test module.
fn production(source: &str) -> Vec<&str> {
    source
        .lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .collect()
}

/// The functions of `lines` longer than `max` lines: name and length.
fn long_functions(lines: &[&str], max: usize) -> Vec<(String, usize)> {
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub async fn ",
        ]
        .iter()
        .chain(&[
            "pub(crate) async fn ",
            "pub(super) fn ",
            "pub(super) async fn ",
        ])
        .find_map(|prefix| trimmed.strip_prefix(prefix));
        let Some(signature) = signature else {
            continue;
        };
        // A body ends with a `}` at the signature's own indentation.
        let end = lines[start + 1..]
            .iter()
            .position(|l| *l == format!("{indent}}}"));
        let body_opens = lines[start..].iter().take(12).any(|l| l.ends_with('{'));
        if let (Some(end), true) = (end, body_opens) {
            let length = end + 2;
            if length > max {
                let name = signature.split(['(', '<']).next().unwrap_or_default();
                long.push((name.to_owned(), length));
            }
        }
    }
    long
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && name != "tests" {
            sources(&path, found);
        } else if name.ends_with(".rs") && name != "tests.rs" {
            found.push(path);
        }
    }
}

#[test]
fn functions_and_files_are_short_or_said_why() {
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let mut files = Vec::new();
    for name in crates() {
        sources(&root().join("crates").join(name).join("src"), &mut files);
    }
    let mut wrong = Vec::new();
    for file in files {
        let source = read(&file);
        let lines = production(&source);
        let relative = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        let excused = architecture.contains(&format!("`{relative}`"));
        if lines.len() > 600 && !excused {
            wrong.push(format!("{relative}: {} lines", lines.len()));
        }
        for (function, length) in long_functions(&lines, 120) {
            if !excused {
                wrong.push(format!("{relative}: fn {function}, {length} lines"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "longer than ARCHITECTURE.md's rule, which does not say why: {wrong:#?}"
    );
}

#[test]
fn the_rules_read_what_they_should() {
    let table = "| Layer | Crate | What |\n|---|---|---|\n| 0, pure | `crates/a` | x |\n\
                 | 2, I/O | `crates/b` | y |\n| tools | `crates/t` | z |";
    let layers = layers(table);
    assert_eq!(layers.get("a"), Some(&Some(0)));
    assert_eq!(layers.get("b"), Some(&Some(2)));
    assert_eq!(layers.get("t"), Some(&None));
    let manifest = "[dependencies]\nwid-a.workspace = true\nserde = \"1\"\n\
                    wid-b = { path = \"x\" }\n[dev-dependencies]\nwid-t.workspace = true\n";
    assert_eq!(dependencies(manifest), vec!["wid-a", "wid-b"]);
    let source = "fn short() {\n    1\n}\n\npub async fn long(\n    a: u8,\n) -> u8 {\n".to_owned()
        + &"    a;\n".repeat(5)
        + "}\n";
    let lines: Vec<&str> = source.lines().collect();
    assert_eq!(long_functions(&lines, 5), vec![("long".to_owned(), 9)]);
}
