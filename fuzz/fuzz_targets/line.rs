//! Line sensor output: arbitrary bytes through the line decoder with a few channel maps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_drivers::Reading;
use sensor_drivers::line::{DEFAULT_MAX_LINE, LineSensor, LineSpec};
use sensor_drivers::serial::{Output, Protocol};

const MAPS: [(&str, char); 4] = [
    ("t_ms,oil_temp,-,oil_pressure", ','),
    ("t_us,a,b", ' '),
    ("x", ';'),
    ("-,t_ms,y,,z", '\t'),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (map, delim) = MAPS[usize::from(pick) % MAPS.len()];
    let spec = LineSpec::parse(map, delim).expect("a valid map");
    let per_line = spec.channels().len();
    let mut s = LineSensor::new(spec, DEFAULT_MAX_LINE);
    let mut out = Output::default();
    s.opened(0);
    for (i, c) in rest.chunks(usize::from(pick / 4).max(1)).enumerate() {
        s.feed(c, 1_000 * i as u64, &mut out);
    }
    assert_eq!(out.readings.len() % per_line, 0, "whole lines only");
    for r in &out.readings {
        let Reading::Value(v) = r else {
            panic!("frame")
        };
        assert!(v.value.is_finite());
        assert!(usize::from(v.channel) < per_line);
    }
});
