//! The receiver on MQTT 5 against a real Mosquitto while the agent publishes with MQTT 3.1.1:
//! every generated sample arrives exactly once.

use anyhow::{Context, Result};
use std::time::Duration;
use system_tests::*;

#[test]
fn mqtt5_receiver_gets_every_sample_of_a_v3_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let out = dir.path().join("received.jsonl");
    let sock = format!("unix:{}", broker.socket().display());
    let mut rx = Proc::spawn(
        &[
            "receive",
            "--mqtt-version",
            "5",
            "--broker",
            &sock,
            "--client-id",
            "v5-receiver",
            "--out",
            out.to_str().context("utf-8")?,
            "--idle-exit",
            "60s",
            "--json",
        ],
        &dir.path().join("receiver.log"),
    )?;
    rx.wait_log("subscribed", Duration::from_secs(10))?;
    assert!(rx.log_text().contains("mqtt=V5"), "{}", rx.log_text());
    let cfg = write_config(
        dir.path(),
        "car-v5",
        broker.socket(),
        &["wwan0"],
        &[Synth {
            name: "body",
            channels: 8,
            rate_hz: 500,
            waveform: "saw",
        }],
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    std::thread::sleep(Duration::from_secs(3));
    let end = stop_daemon(&mut d, Duration::from_secs(15))?;
    assert_eq!((end.undelivered, end.dropped), (0, 0), "{end:?}");
    stop_receiver_when_quiet(&mut rx, &out, Duration::from_secs(2))?;

    let lines = read_samples(&out)?;
    let per = by_channel(&lines);
    assert_eq!(per.len(), 8, "every channel arrived");
    for ((src, ch), ts) in &per {
        let mut sorted = ts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ts.len(), "{src}/{ch}: duplicates");
        assert!(
            sorted.windows(2).all(|w| w[1] - w[0] == 2000),
            "{src}/{ch}: gaps"
        );
    }
    assert_eq!(
        lines.len() as u64,
        end.generated,
        "every generated sample once"
    );
    let summary = receiver_summary(&rx)?;
    assert_eq!(summary["vehicles"]["car-v5"]["samples"], end.generated);
    assert_eq!(summary["vehicles"]["car-v5"]["missing_batches"], 0);
    Ok(())
}
