//! Bytes as a CAN_RAW socket could hand them over: decoding never panics, and whatever decodes
//! encodes back to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_drivers::socketcan::{decode_frame, describe_error, encode_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame(data) {
        let (buf, n) = encode_frame(&frame);
        assert_eq!(decode_frame(&buf[..n]), Ok(frame));
        if frame.is_error() {
            let _ = describe_error(&frame);
        }
    }
});
