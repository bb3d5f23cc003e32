//! Whole wire messages as a receiver gets them: any bytes through the envelope decoder and then
//! the body decoder of its kind give an error or a value, never a panic or an allocation
//! beyond the batch's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitlink_fuzz::envelope::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = envelope::decode(data) else {
        return;
    };
    match env.kind {
        Kind::Data => {
            if let Ok((_, readings)) = envelope::data_readings(&env) {
                assert_eq!(readings.len(), env.samples as usize);
            }
        }
        Kind::Gap => {
            let _ = envelope::gap_body(&env);
        }
        Kind::Run => {
            let _ = envelope::run_body(&env);
        }
        Kind::Heartbeat => {
            let _ = envelope::heartbeat_body(&env);
        }
    }
});
