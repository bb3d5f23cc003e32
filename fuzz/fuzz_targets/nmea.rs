//! GPS receiver output: arbitrary bytes through the NMEA decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_drivers::nmea::{NmeaDecoder, NmeaOutput};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut d = NmeaDecoder::new();
    let mut out = NmeaOutput::default();
    let mut now = 0u64;
    for c in rest.chunks(usize::from(cut).max(1)) {
        now += 50_000;
        d.push(c, now, &mut out);
        d.timeout(now, &mut out);
    }
    d.flush(&mut out);
    let mut samples = Vec::new();
    for f in &out.fixes {
        assert!(f.quality <= 8);
        if let Some(lat) = f.latitude_deg {
            assert!(lat.abs() <= 90.0, "{lat}");
        }
        f.samples(&mut samples);
    }
    assert!(samples.iter().all(|s| s.value.is_finite()));
});
