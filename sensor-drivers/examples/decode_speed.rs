//! Throughput of the hot paths on the RAV4 capture: candump line parsing, the replay core, the
//! whole replay source looped flat out into a channel (one thread), and DBC decoding with
//! `_toyota_2017.dbc`. Run in release:
//!
//! ```text
//! cargo run --release -p sensor-drivers --example decode_speed [DATA_DIR]
//! ```

use sensor_drivers::candump::{LogLine, ReplayCore, ReplayOptions, Speed, Step, parse_line};
use sensor_drivers::dbc::{Dbc, DecodeBuf};
use sensor_drivers::source::{Outlet, SourceStats};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `f` (one pass over the data, returning the items it handled) until `min` has passed.
fn rate(min: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < min {
        n += f();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data").to_string());
    let text = std::fs::read_to_string(format!("{data}/candump/comma2k19_rav4_2017_can0_10s.log"))?;
    let lines: Vec<&str> = text.lines().collect();
    let dbc = Dbc::load(format!("{data}/dbc/opendbc/_toyota_2017.dbc"))?;
    let run = Duration::from_secs(2);

    let parse = rate(run, || {
        for l in &lines {
            black_box(parse_line(black_box(l)).is_ok());
        }
        lines.len()
    });
    println!("candump parse_line: {:.2} M lines/s", parse / 1e6);

    let replay = rate(run, || {
        let mut core = ReplayCore::new(Speed::FlatOut, false, vec![], 1_700_000_000_000_000);
        for (n, l) in lines.iter().enumerate() {
            black_box(matches!(core.line(n as u64 + 1, l), Step::Frame { .. }));
        }
        lines.len()
    });
    println!(
        "replay core (parse + filter + pace): {:.2} M lines/s",
        replay / 1e6
    );

    let path = format!("{data}/candump/comma2k19_rav4_2017_can0_10s.log");
    let source = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let stats = Arc::new(SourceStats::default());
            let cancel = tokio_util::sync::CancellationToken::new();
            let opts = ReplayOptions {
                path: path.into(),
                speed: Speed::FlatOut,
                looping: true,
                interfaces: vec![],
            };
            let task = tokio::spawn(sensor_drivers::candump::run_replay(
                opts,
                Outlet::new(0, tx, stats.clone()),
                cancel.clone(),
            ));
            let start = Instant::now();
            let mut n = 0usize;
            while start.elapsed() < run {
                match rx.recv().await {
                    Some(c) => n += c.readings.len(),
                    None => break,
                }
            }
            let r = n as f64 / start.elapsed().as_secs_f64();
            cancel.cancel();
            while rx.recv().await.is_some() {}
            let _ = task.await;
            r
        });
    println!(
        "replay source, looped flat out into a channel: {:.2} M frames/s",
        source / 1e6
    );

    let frames: Vec<_> = lines
        .iter()
        .filter_map(|l| match parse_line(l) {
            Ok(LogLine::Frame(f)) => Some(f.frame),
            _ => None,
        })
        .collect();
    let mut buf = DecodeBuf::default();
    let (mut decoded, mut signals) = (0usize, 0usize);
    for f in &frames {
        if dbc.decode_into(f, &mut buf).is_some() {
            decoded += 1;
            signals += buf.values.len();
        }
    }
    let frames_per_pass = frames.len();
    let decode = rate(run, || {
        for f in &frames {
            black_box(dbc.decode_into(black_box(f), &mut buf).is_some());
        }
        frames_per_pass
    });
    println!(
        "dbc decode_into: {:.2} M frames/s ({decoded} of {} frames known, {signals} signals per pass: {:.1} M signals/s)",
        decode / 1e6,
        frames.len(),
        decode * signals as f64 / frames.len() as f64 / 1e6
    );
    Ok(())
}
