//! The broker appears after the daemon: the backlog queued meanwhile goes out in one burst when
//! the link comes up, and must be acknowledged promptly, not only after the ack timeout.

use anyhow::Result;
use std::time::{Duration, Instant};
use system_tests::*;

/// A backlog burst at link-up: every publish must reach the broker on its first send. A publish
/// lost inside the MQTT client (its event loop cancelled mid-write) shows as a batch taken back
/// after the 10 s ack timeout (`moved`) and, later, a packet id collision.
#[test]
fn backlog_burst_at_link_up_is_delivered_without_a_resend() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The daemon's broker socket: a link to the real one, created once the receiver listens.
    let broker_link = dir.path().join("mqtt.sock");
    let sources = [Synth {
        name: "engine",
        channels: 100,
        rate_hz: 1000,
        waveform: "sine",
    }];
    let cfg = write_config(dir.path(), "car-late", &broker_link, &["wwan0"], &sources)?;
    let diag = dir.path().join("pitlink.sock");
    let mut d = spawn_daemon(&cfg, &dir.path().join("daemon.log"))?;
    // About 30 batches of 65 kB while nothing can be delivered.
    let st = wait_status(&mut d, &diag, Duration::from_secs(20), "a backlog", |s| {
        s.queue.stats.appended_batches >= 30
    })?;
    assert_eq!(st.queue.stats.delivered_batches, 0);

    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "10m")?;
    std::os::unix::fs::symlink(broker.socket(), &broker_link)?;
    d.wait_log("link up", Duration::from_secs(10))?;
    let up = Instant::now();
    let backlog = wait_status(&mut d, &diag, Duration::from_secs(20), "link up", |s| {
        s.links.iter().any(|l| l.state == "up")
    })?
    .queue
    .stats
    .appended_batches;
    let done = wait_status(
        &mut d,
        &diag,
        Duration::from_secs(20),
        "the backlog acknowledged",
        |s| s.queue.stats.delivered_batches >= backlog,
    )?;
    let took = up.elapsed();
    let log = d.log_text();
    println!(
        "late broker: {backlog} batches acknowledged {took:?} after link up; {} moved for a re-send",
        done.links.iter().map(|l| l.counters.moved).sum::<u64>()
    );
    let moved: u64 = done.links.iter().map(|l| l.counters.moved).sum();
    assert_eq!(
        moved, 0,
        "a publish was lost and re-sent after the ack timeout:\n{log}"
    );
    assert!(!log.contains("Collision on packet id"), "{log}");
    stop_daemon(&mut d, Duration::from_secs(15))?;
    stop_receiver_when_quiet(&mut rx, &out, Duration::from_millis(1500))?;
    Ok(())
}
