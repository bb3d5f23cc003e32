//! candump log lines: the parser never panics, and what it accepts it writes back into a line
//! that parses to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_drivers::candump::{LogLine, format_line, parse_line};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.split('\n') {
        if let Ok(LogLine::Frame(f)) = parse_line(line) {
            let again = format_line(f.timestamp, f.iface, &f.frame, f.direction);
            match parse_line(&again) {
                Ok(LogLine::Frame(g)) => {
                    assert_eq!(g.frame, f.frame, "{line:?} -> {again:?}");
                    assert_eq!(g.timestamp, f.timestamp, "{line:?} -> {again:?}");
                    assert_eq!(g.iface, f.iface, "{line:?} -> {again:?}");
                }
                other => panic!("{line:?} -> {again:?} -> {other:?}"),
            }
        }
    }
});
