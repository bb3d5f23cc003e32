//! Any bytes as AT response text: the parser never panics, and its result always serialises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modem_hal::at::parse::{ParseOptions, SinrScale, parse_text_with};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fifths = data.first().is_some_and(|b| b & 1 == 1);
    let opts = ParseOptions {
        qeng_lte_sinr: if fifths { SinrScale::Fifths } else { SinrScale::Db },
        ..ParseOptions::default()
    };
    let parsed = parse_text_with(&text, opts);
    assert!(parsed.unparsed.len() <= text.lines().count());
    let _ = serde_json::to_string(&parsed).expect("a report always serialises");
});
