//! Real sources through the real daemon, broker and receiver: a candump log replayed and a
//! line sensor on a real PTY arrive at the receiver exactly once, unchanged.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;
use system_tests::*;

/// One CAN frame line of the receiver's output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
struct FrameLine {
    source: String,
    t_us: u64,
    id: u32,
    flags: u8,
    len: u8,
    data: String,
}

fn read_frames(path: &Path) -> Result<Vec<FrameLine>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        if v.get("id").is_some() && v.get("event").is_none() {
            out.push(serde_json::from_value(v).with_context(|| line.clone())?);
        }
    }
    Ok(out)
}

/// The test's own reading of a plain `candump -l` log of classic data frames
/// (`(secs.micros) iface ID#HEX`): (µs since the first frame, id, extended, payload hex).
fn oracle(log: &Path) -> Result<Vec<(u64, u32, bool, String)>> {
    let text = std::fs::read_to_string(log).with_context(|| log.display().to_string())?;
    let mut out = Vec::new();
    let mut t0 = None;
    for line in text.lines().filter(|l| l.starts_with('(')) {
        let mut it = line.split_whitespace();
        let ts = it.next().context("timestamp")?.trim_matches(['(', ')']);
        let (s, f) = ts.split_once('.').context("fraction")?;
        if f.len() != 6 {
            bail!("oracle reads 6-digit fractions only: {line}");
        }
        let t: u64 = s.parse::<u64>()? * 1_000_000 + f.parse::<u64>()?;
        let t0 = *t0.get_or_insert(t);
        let frame = it.nth(1).context("frame")?;
        let (id, data) = frame.split_once('#').context("#")?;
        out.push((
            t - t0,
            u32::from_str_radix(id, 16)?,
            id.len() == 8,
            data.to_ascii_lowercase(),
        ));
    }
    Ok(out)
}

/// A broker, a receiver and a daemon whose only source is `source_toml`, all in `dir`.
struct Rig {
    _broker: Mosquitto,
    rx: Proc,
    d: Proc,
    out: std::path::PathBuf,
}

fn start_rig(dir: &Path, vehicle: &str, source_toml: String) -> Result<Rig> {
    let broker = Mosquitto::start(&dir.join("broker"), BrokerOptions::default())?;
    let out = dir.join("received.jsonl");
    let rx = start_receiver(dir, broker.socket(), &out, "60s")?;
    let knobs = ConfigKnobs {
        extra_sources: source_toml,
        ..ConfigKnobs::default()
    };
    let cfg = write_config_with(dir, vehicle, broker.socket(), &["wwan0"], &[], &knobs)?;
    let d = start_daemon(dir, &cfg)?;
    Ok(Rig {
        _broker: broker,
        rx,
        d,
        out,
    })
}

#[test]
fn candump_replay_arrives_exactly_once_and_unchanged() -> Result<()> {
    let log = shared_data().join("candump/comma2k19_rav4_2017_can0_10s.log");
    let want = oracle(&log)?;
    assert_eq!(want.len(), 8977, "the capture's documented frame count");

    let dir = tempfile::tempdir()?;
    let Rig {
        _broker,
        mut rx,
        mut d,
        out,
    } = start_rig(
        dir.path(),
        "car-can",
        format!(
            "\n[[sources]]\nname = \"rav4\"\nkind = \"candump\"\npath = \"{}\"\nspeed = \"max\"\n",
            log.display()
        ),
    )?;
    let n = want.len() as u64;
    // A replay that does not loop ends; with every source finished the daemon delivers what it
    // queued and exits on its own.
    d.wait_log("core stopped", Duration::from_secs(60))?;
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert_eq!((end.generated, end.dropped, end.undelivered), (n, 0, 0));
    stop_receiver_when_quiet(&mut rx, &out, Duration::from_secs(1))?;

    let got = read_frames(&out)?;
    assert_eq!(got.len(), want.len(), "every frame exactly once");
    let t0 = got.iter().map(|f| f.t_us).min().context("frames")?;
    // Frames with equal timestamps may be batched in any order: compare as sorted multisets.
    let mut got: Vec<(u64, u32, bool, String)> = got
        .into_iter()
        .map(|f| {
            assert_eq!(f.source, "rav4");
            assert_eq!(usize::from(f.len), f.data.len() / 2);
            (f.t_us - t0, f.id, f.flags & 1 != 0, f.data)
        })
        .collect();
    let mut want = want;
    got.sort();
    want.sort();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "frame {i} (sorted by time) differs");
    }
    Ok(())
}

#[test]
fn line_sensor_on_a_pty_at_1khz_arrives_exactly_once() -> Result<()> {
    const LINES: u64 = 3000;
    let pty = nix::pty::openpty(None, None)?;
    let slave = nix::unistd::ttyname(&pty.slave)?;
    let mut master = std::fs::File::from(pty.master);

    let dir = tempfile::tempdir()?;
    let Rig {
        _broker,
        mut rx,
        mut d,
        out,
    } = start_rig(
        dir.path(),
        "car-line",
        format!(
            "\n[[sources]]\nname = \"oil\"\nkind = \"line\"\ndevice = \"{}\"\nfields = \"t_ms,oil_temp,-,oil_pressure\"\n",
            slave.display()
        ),
    )?;
    let sock = dir.path().join("pitlink.sock");
    wait_status(
        &mut d,
        &sock,
        Duration::from_secs(20),
        "the device open",
        |st| st.sources[0].counters.connected,
    )?;
    // The sensor: one line per millisecond, paced by the clock (pacing, not synchronisation).
    let start = std::time::Instant::now();
    for i in 0..LINES {
        let due = Duration::from_micros(i * 1000);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        writeln!(master, "{},{}.25,7,{}", i, 80 + i % 40, i)?;
    }
    master.flush()?;
    wait_status(
        &mut d,
        &sock,
        Duration::from_secs(30),
        "every line read and delivered",
        |st| st.sources[0].counters.readings == 2 * LINES && st.queue.stats.undelivered == 0,
    )?;
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert_eq!((end.generated, end.dropped), (2 * LINES, 0));
    stop_receiver_when_quiet(&mut rx, &out, Duration::from_secs(1))?;

    let lines = read_samples(&out)?;
    assert_eq!(
        lines.len() as u64,
        2 * LINES,
        "two channels per line, exactly once"
    );
    // Channel 0 is oil_temp, channel 1 oil_pressure (the skipped field has no channel).
    let mut pressure: BTreeMap<u64, f64> = BTreeMap::new();
    let mut temp: BTreeMap<u64, f64> = BTreeMap::new();
    for l in &lines {
        let slot = if l.ch == 0 { &mut temp } else { &mut pressure };
        assert!(
            slot.insert(l.t_us, l.v).is_none(),
            "duplicate at {}",
            l.t_us
        );
    }
    assert_eq!(pressure.len() as u64, LINES);
    // The device clock (t_ms) spaces the timestamps: line i is i ms after line 0.
    let times: Vec<u64> = pressure.keys().copied().collect();
    for (i, (&t, &v)) in pressure.iter().enumerate() {
        assert_eq!(v, i as f64, "pressure of line {i}");
        assert_eq!(t - times[0], i as u64 * 1000, "timestamp of line {i}");
        assert_eq!(temp.get(&t), Some(&(80.0 + (i % 40) as f64 + 0.25)));
    }
    Ok(())
}
