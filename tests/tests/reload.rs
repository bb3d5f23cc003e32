//! SIGHUP: a changed configuration replaces the running pipeline without losing queued data;
//! an invalid one is rejected with one log line and the running configuration stays.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;
use system_tests::*;

/// The sum of `key=` over every "core stopped" line (one per pipeline the process ran).
fn sum_field(log: &str, key: &str) -> u64 {
    let pat = format!("{key}=");
    log.lines()
        .filter(|l| l.contains("core stopped"))
        .filter_map(|l| {
            let at = l.find(&pat)? + pat.len();
            l[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_an_invalid_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "600s")?;
    let engine = Synth {
        name: "engine",
        channels: 4,
        rate_hz: 1000,
        waveform: "sine",
    };
    let chassis = Synth {
        name: "chassis",
        channels: 2,
        rate_hz: 500,
        waveform: "noise",
    };
    let cfg = write_config(
        dir.path(),
        "car-hup",
        broker.socket(),
        &["a", "b"],
        std::slice::from_ref(&engine),
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    let socket = dir.path().join("pitlink.sock");
    std::thread::sleep(Duration::from_secs(2));

    // A second source and a third link.
    write_config(
        dir.path(),
        "car-hup",
        broker.socket(),
        &["a", "b", "c"],
        &[engine, chassis],
    )?;
    d.signal(Signal::SIGHUP);
    d.wait_log("configuration reloaded", Duration::from_secs(20))?;
    let st = wait_status(
        &mut d,
        &socket,
        Duration::from_secs(20),
        "the new pipeline",
        |s| s.sources.len() == 2 && s.links.len() == 3,
    )?;
    assert!(st.sources.iter().any(|s| s.name == "chassis"));
    std::thread::sleep(Duration::from_secs(2));

    // An invalid file: one error line naming the file and line, the pipeline keeps running.
    let good = std::fs::read_to_string(&cfg)?;
    std::fs::write(&cfg, good.replace("rate_hz = 500", "rate_hz = 0"))?;
    d.signal(Signal::SIGHUP);
    d.wait_log("keeping the running configuration", Duration::from_secs(10))?;
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("keeping the running configuration"))
        .unwrap_or_default();
    assert!(
        line.contains("pitlink.toml:") && line.contains("rate_hz"),
        "{line}"
    );
    let before = wait_status(&mut d, &socket, Duration::from_secs(5), "status", |_| true)?;
    std::thread::sleep(Duration::from_secs(1));
    let after = wait_status(&mut d, &socket, Duration::from_secs(5), "status", |_| true)?;
    assert_eq!(after.sources.len(), 2, "the valid configuration still runs");
    assert!(
        after.sources[1].counters.readings > before.sources[1].counters.readings,
        "chassis still produces"
    );

    stop_daemon(&mut d, Duration::from_secs(20))?;
    let log = d.log_text();
    assert_eq!(
        log.matches("core stopped").count(),
        2,
        "two pipelines ran:\n{log}"
    );
    assert_eq!(sum_field(&log, "undelivered"), 0, "{log}");
    let generated = sum_field(&log, "generated");
    stop_receiver_when_quiet(&mut rx, &out, Duration::from_secs(3))?;
    let lines = read_samples(&out)?;
    // Nothing twice, nothing missing, both pipelines' data there.
    let mut seen = HashSet::new();
    for l in &lines {
        assert!(
            seen.insert((l.source.clone(), l.ch, l.t_us)),
            "duplicate {}/{} at {}",
            l.source,
            l.ch,
            l.t_us
        );
    }
    assert_eq!(
        lines.len() as u64,
        generated,
        "every generated sample exactly once"
    );
    let runs: HashSet<u32> = lines.iter().map(|l| l.run).collect();
    assert_eq!(runs.len(), 2, "one run per pipeline");
    assert!(lines.iter().any(|l| l.source == "chassis"));
    Ok(())
}
