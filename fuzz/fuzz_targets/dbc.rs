//! DBC files and frames: arbitrary bytes as a DBC file never panic the loader; a DBC that loads
//! decodes arbitrary frames of each of its messages without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_drivers::can::{CanFrame, FD_LENS};
use sensor_drivers::dbc::{Dbc, DecodeBuf};

fuzz_target!(|data: &[u8]| {
    // The first bytes are frame material, the rest the DBC file.
    let split = data.len().min(72);
    let (frame_bytes, file) = data.split_at(split);
    let Ok(dbc) = Dbc::from_bytes(file) else {
        return;
    };
    let mut buf = DecodeBuf::default();
    for m in dbc.messages() {
        for len in FD_LENS {
            let len = usize::from(len).min(frame_bytes.len());
            let payload = &frame_bytes[..len];
            let frame = if len <= 8 {
                CanFrame::classic(m.id, m.extended, payload)
            } else {
                CanFrame::fd(m.id, m.extended, 0, payload)
            };
            let Ok(frame) = frame else { continue };
            if let Some(msg) = dbc.decode_into(&frame, &mut buf) {
                assert!(buf.values.len() + buf.missing.len() <= msg.signals.len());
                for v in &buf.values {
                    let s = &msg.signals[usize::from(v.signal)];
                    let _ = s.label(v.raw);
                }
            }
        }
    }
});
