//! AT transport core: arbitrary modem bytes interleaved with commands, time steps and port
//! losses. Never panics; every accepted command completes exactly once; nothing is left
//! waiting once simulated time runs on.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use modem_hal::at::transport::{Action, AtCore, CoreConfig, Request};

const COMMANDS: [&str; 8] = [
    "AT+CSQ",
    "AT+CEREG?",
    "AT+CPIN?",
    "AT+QENG=\"servingcell\"",
    "AT+CFUN=1",
    "AT+COPS=?",
    "AT!GSTATUS?",
    "ATE0",
];

fuzz_target!(|data: &[u8]| {
    let cfg = CoreConfig {
        max_line_len: 64,
        max_pending: 4,
        max_response_lines: 8,
        resync_window: Duration::from_millis(500),
    };
    let mut core = AtCore::new(cfg);
    let mut now = 0u64;
    let mut accepted = HashSet::new();
    let mut done = HashSet::new();
    let check = |core: &mut AtCore, done: &mut HashSet<u64>| {
        while let Some(a) = core.poll_action() {
            match a {
                Action::Complete { id, result } => {
                    assert!(done.insert(id), "command {id} completed twice");
                    if let Ok(r) = result {
                        assert!(r.lines.len() <= 8);
                        assert!(r.lines.iter().all(|l| !l.is_empty() && l.len() <= 64));
                    }
                }
                Action::Urc(u) => assert!(!u.line.is_empty() && u.line.len() <= 64),
                Action::Write(w) => assert_eq!(w.last(), Some(&b'\r')),
            }
        }
    };
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            0..=3 => {
                let n = usize::from(op / 8).min(rest.len());
                core.feed(&rest[..n], now);
                rest = &rest[n..];
            }
            4 | 5 => {
                let line = COMMANDS[usize::from(op / 8) % COMMANDS.len()];
                let mut req = Request::new(line).timeout(Duration::from_millis(u64::from(op)));
                req.allow_disruptive = op & 0x80 != 0;
                if let Ok(id) = core.submit(req, now) {
                    assert!(accepted.insert(id));
                }
            }
            6 => {
                now += u64::from(op) * 10_000;
                core.tick(now);
            }
            _ => core.disconnected("fuzz"),
        }
        check(&mut core, &mut done);
        assert!(done.is_subset(&accepted));
    }
    for _ in 0..64 {
        if !core.is_busy() {
            break;
        }
        now += 1_000_000;
        core.tick(now);
        check(&mut core, &mut done);
    }
    assert!(!core.is_busy(), "commands left waiting");
    assert_eq!(done, accepted);
});
