//! slcan adapter output: arbitrary bytes through the line decoder and the whole sans-IO core.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_drivers::serial::{Output, PortSpec, Protocol};
use sensor_drivers::slcan::{Bitrate, Message, Slcan, SlcanConfig, decode_line, encode_frame};

fuzz_target!(|data: &[u8]| {
    // Every line that decodes to a frame encodes back to a line that decodes to the same frame.
    for line in data.split(|&b| b == b'\r') {
        if let Ok(Message::Frame {
            frame,
            timestamp_ms,
        }) = decode_line(line)
        {
            let mut again = Vec::new();
            encode_frame(&frame, timestamp_ms, &mut again).expect("a decoded frame encodes");
            assert_eq!(again.pop(), Some(b'\r'));
            assert_eq!(
                decode_line(&again),
                Ok(Message::Frame {
                    frame,
                    timestamp_ms
                })
            );
        }
    }

    // The core, after a handshake, fed the input in chunks whose size the first byte picks.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let port = PortSpec {
        path: "/dev/null".into(),
        baud: 115_200,
    };
    let mut cfg = SlcanConfig::new(port, Bitrate::K500);
    cfg.status_poll = Some(std::time::Duration::from_millis(10));
    cfg.timestamps = true;
    let mut core = Slcan::new(&cfg);
    let mut out = Output::default();
    let mut tx = Vec::new();
    let mut now = 1_700_000_000_000_000u64;
    core.opened(now);
    let mut chunks = rest.chunks(usize::from(cut).max(1));
    loop {
        core.transmit(&mut tx);
        if !tx.is_empty() && !core.ready() {
            core.feed(b"\r", now, &mut out);
        }
        tx.clear();
        let Some(c) = chunks.next() else { break };
        now += 1_000 * u64::from(c[0]);
        core.feed(c, now, &mut out);
        if let Some(d) = core.deadline()
            && d <= now
        {
            core.timeout(now, &mut out);
        }
        if out.fatal.take().is_some() {
            core.opened(now);
        }
        assert!(out.readings.iter().all(|r| r.t_us() > 0));
        out.readings.clear();
        out.errors.clear();
    }
});
