//! Every capture of RADIO.md §2.2 (and a few more real ones) parses to the JSON stored beside it.
//!
//! `tests/vectors/NAME.txt` starts with `# source: URL` comment lines (not fed to the parser);
//! `NAME.json` is the expected [`Parsed`] as JSON. Set `UPDATE_VECTORS=1` to rewrite the JSON
//! files after a deliberate change, then review the diff.

use modem_hal::at::parse::{Parsed, parse_text};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The capture without its `#` comment lines.
fn body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn vectors_match_expected_json() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("vectors dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "vectors missing: {}", names.len());
    let update = std::env::var_os("UPDATE_VECTORS").is_some();
    let mut failures = Vec::new();
    for txt in &names {
        let text = std::fs::read_to_string(txt).expect("read vector");
        assert!(
            text.starts_with("# source: "),
            "{} has no source line",
            txt.display()
        );
        let got = serde_json::to_value(parse_text(&body(&text))).expect("to json");
        let json = txt.with_extension("json");
        if update {
            let s = serde_json::to_string_pretty(&got).expect("pretty");
            std::fs::write(&json, s + "\n").expect("write json");
            continue;
        }
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("read json"))
                .expect("expected json parses");
        if got != want {
            failures.push(format!("{}:\n got  {got}\n want {want}", txt.display()));
        }
        // The expected JSON also deserialises back into the same Parsed value.
        let back: Parsed = serde_json::from_value(want).expect("json -> Parsed");
        assert_eq!(serde_json::to_value(&back).expect("to json"), got);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn captures_have_nothing_unparsed() {
    for e in std::fs::read_dir(dir()).expect("vectors dir") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "txt") {
            let text = std::fs::read_to_string(&p).expect("read");
            let out = parse_text(&body(&text));
            assert!(
                out.unparsed.is_empty(),
                "{}: {:?}",
                p.display(),
                out.unparsed
            );
        }
    }
}
