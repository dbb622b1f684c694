//! The crate's modules depend downward only (the order is written in the crate doc, src/lib.rs):
//! a module that names a module above it (`crate::x`) fails this test. A new top-level module
//! must be given its place in `ORDER`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first: each module may use only those before it.
const ORDER: [&str; 14] = [
    "fault", "metrics", "settings", "retry", "aws", "source", "format", "filter", "lease", "sink",
    "commit", "pipeline", "config", "operate",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a file names as `crate::NAME`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `shardbridge::crate::` does not occur; skip identifiers that merely end in "crate".
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_module_depends_only_on_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let ordered: BTreeSet<&str> = ORDER.iter().copied().collect();
    assert_eq!(
        declared, ordered,
        "every module of lib.rs has its place in ORDER"
    );
    let mut violations = Vec::new();
    for (level, module) in ORDER.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        rust_files(&src.join(format!("{module}.rs")), &mut files);
        assert!(!files.is_empty(), "{module}: no source files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in named_modules(&text) {
                if used == *module {
                    continue;
                }
                match ORDER.iter().position(|m| *m == used) {
                    Some(l) if l < level => {}
                    _ => violations.push(format!(
                        "{} ({module}) uses crate::{used}",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward dependencies:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_must() {
    let text =
        "use crate::sink::Sink;\nfn f() { crate::fault::crash_point(\"x\"); }\n// notcrate::x";
    assert_eq!(
        named_modules(text),
        BTreeSet::from(["sink".to_string(), "fault".to_string()])
    );
}
