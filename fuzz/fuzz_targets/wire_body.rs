//! The columnar body decoder (codec 1 of the wire format) on arbitrary bytes, compressed and
//! raw: an error or readings, never a panic or an allocation beyond the batch's bound. What
//! decodes must encode and decode again to the same readings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitlink_fuzz::columnar::{self, Encoder};
use sensor_drivers::Reading;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let samples = u32::from(u16::from_le_bytes([data[1], data[2]]));
    let t0 = u64::from(data[3]) << 40;
    let body = &data[4..];
    let decoded = if data[0] & 1 == 0 {
        columnar::decode(body, t0, samples)
    } else {
        columnar::decode_raw(body, t0, samples)
    };
    let Ok((source, readings)) = decoded else {
        return;
    };
    assert_eq!(readings.len(), samples as usize);
    let mut enc = Encoder::new(1).expect("zstd level 1");
    let again = enc.encode(&source, t0, &readings);
    let (s2, r2) = columnar::decode(&again, t0, samples).expect("re-encoded body decodes");
    assert_eq!(s2, source);
    assert_eq!(r2.len(), readings.len());
    for (a, b) in r2.iter().zip(&readings) {
        match (a, b) {
            (Reading::Value(a), Reading::Value(b)) => {
                assert_eq!(
                    (a.t_us, a.channel, a.value.to_bits()),
                    (b.t_us, b.channel, b.value.to_bits())
                );
            }
            (a, b) => assert_eq!(a, b),
        }
    }
});
