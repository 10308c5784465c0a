//! `docs/design.md` carries the byte diagrams of every persisted structure,
//! copied from the rustdoc next to the code that writes them. This test fails
//! when the two drift apart: change both together (and bump the version).

use std::fs;
use std::path::Path;

/// Source files whose rustdoc holds a byte diagram (a ```` ```text ```` block).
const DIAGRAMS: [&str; 5] = [
    "src/envelope.rs",
    "src/node.rs",
    "src/wrap.rs",
    "src/provider/file.rs",
    "src/keys.rs",
];

/// The first ```` ```text ```` block of a file's doc comments, without the
/// comment markers.
fn first_text_block(source: &str) -> Option<String> {
    let mut lines = source.lines().map(|line| {
        let line = line.trim_start();
        let line = line
            .strip_prefix("//!")
            .or_else(|| line.strip_prefix("///"))
            .unwrap_or(line);
        line.strip_prefix(' ').unwrap_or(line)
    });
    lines.find(|line| line.trim() == "```text")?;
    let block: Vec<&str> = lines.take_while(|line| line.trim() != "```").collect();
    Some(block.join("\n"))
}

#[test]
fn design_doc_diagrams_match_the_rustdoc() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let design = fs::read_to_string(crate_dir.join("../docs/design.md")).expect("docs/design.md");
    for file in DIAGRAMS {
        let source = fs::read_to_string(crate_dir.join(file)).expect(file);
        let diagram = first_text_block(&source).unwrap_or_else(|| panic!("{file}: no diagram"));
        assert!(diagram.lines().count() >= 4, "{file}: diagram too short");
        let fenced = format!("```text\n{diagram}\n```");
        assert!(
            design.contains(&fenced),
            "docs/design.md does not carry the diagram of {file} verbatim:\n{fenced}"
        );
    }
}
