//! The bonded uplink end to end: the real daemon with three links, each through an emulated
//! link (a TCP relay with its own rate and latency) in front of a real Mosquitto, while links
//! are blackholed, reset, all cut for a minute and flapped. The receiver must end with every
//! sample exactly once.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use modem_hal::sim::link::{LinkControl, LinkEmulator, LinkParams};
use system_tests::*;

/// Three emulated links (20, 10 and 5 Mbit/s; 15, 30 and 60 ms one way) to `broker`.
fn links(rt: &tokio::runtime::Runtime, broker: SocketAddr) -> Result<Vec<LinkControl>> {
    rt.block_on(async {
        let mut v = Vec::new();
        for (i, (mbit, ms)) in [(20.0, 15), (10.0, 30), (5.0, 60)].into_iter().enumerate() {
            let p = LinkParams {
                rate_bps: mbit * 1e6,
                latency: Duration::from_millis(ms),
                jitter: Duration::from_millis(3),
                up: true,
            };
            v.push(LinkEmulator::spawn("127.0.0.1:0".parse()?, broker, p, i as u64 + 1).await?);
        }
        Ok(v)
    })
}

fn sleep(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

#[test]
fn blackholes_resets_a_minute_without_links_and_flapping_lose_and_duplicate_nothing() -> Result<()>
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        BrokerOptions {
            tcp: true,
            ..BrokerOptions::default()
        },
    )?;
    let tcp = match broker.tcp_addr().context("a TCP listener")? {
        pitlink::mqtt::BrokerAddr::Tcp { host, port } => format!("{host}:{port}").parse()?,
        other => anyhow::bail!("not TCP: {other}"),
    };
    let links = links(&rt, tcp)?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "600s")?;
    let engine = Synth {
        name: "engine",
        channels: 20,
        rate_hz: 1000,
        waveform: "sine",
    };
    let cfg = write_config_with(
        dir.path(),
        "car-bond",
        broker.socket(),
        &["a", "b", "c"],
        &[engine],
        &ConfigKnobs {
            link_addresses: links.iter().map(LinkControl::addr).collect(),
            ..ConfigKnobs::default()
        },
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    let socket = dir.path().join("pitlink.sock");
    wait_status(
        &mut d,
        &socket,
        Duration::from_secs(20),
        "three links up",
        |s| s.links.iter().all(|l| l.state == "up"),
    )?;
    sleep(2.0);

    // The busiest link goes silent mid-stream, connections open, for 5 s.
    links[0].blackhole(true);
    sleep(5.0);
    links[0].blackhole(false);
    sleep(2.0);
    // A reset.
    links[1].reset();
    sleep(3.0);
    // Every link gone for a minute.
    for l in &links {
        l.blackhole(true);
    }
    sleep(60.0);
    for l in &links {
        l.blackhole(false);
    }
    sleep(3.0);
    // One link flapping every 2 s.
    for k in 0..8 {
        links[2].blackhole(k % 2 == 0);
        sleep(2.0);
    }
    links[2].blackhole(false);
    // Let the backlog drain while live data flows, then stop.
    wait_status(
        &mut d,
        &socket,
        Duration::from_secs(90),
        "backlog drained",
        |s| {
            s.queue.stats.undelivered < 50
                && s.links.iter().filter(|l| l.state == "up").count() >= 2
        },
    )?;
    let status = pitlink::diag::fetch(&socket)?;
    let end = stop_daemon(&mut d, Duration::from_secs(30))?;
    assert_eq!((end.undelivered, end.dropped), (0, 0), "{end:?}");

    stop_receiver_when_quiet(&mut rx, &out, Duration::from_secs(3))?;
    let lines = read_samples(&out)?;
    assert_grid_exactly_once(&lines, 20, 1000);
    assert_eq!(
        lines.len() as u64,
        end.generated,
        "every generated sample written exactly once"
    );
    // Each emulated link carried data, and the faults were seen by the scheduler.
    for (i, l) in links.iter().enumerate() {
        assert!(l.counters().bytes_up > 0, "link {i}: {:?}", l.counters());
    }
    assert!(links[1].counters().resets >= 1);
    let moved: u64 = status.links.iter().map(|l| l.counters.moved).sum();
    assert!(moved > 0, "batches moved off failed links: {status:?}");
    let log = d.log_text();
    assert!(log.contains("link down"), "{log}");
    Ok(())
}
