//! `pitlink demo`: the whole flow on one machine, no hardware and no system broker.
//!
//! It starts a Mosquitto child process, the daemon (synthetic sources, three links) and the
//! receiver in this process, shows a live status line, stops the sources after `duration`,
//! lets the queue drain, and then counts what the receiver actually wrote to its JSONL file:
//! every sample line is checked for duplicates, and loss is what was generated but neither
//! written nor reported evicted.

pub mod broker;
pub mod modems;

use crate::config::{
    BatchConfig, BrokerConfig, Config, DiagConfig, LinkConfig, QueueConfig, SourceConfig,
    SourceKind,
};
use crate::daemon::{self, StartOptions};
use crate::receive::{self, ReceiveOptions, ReceiveSummary};
use anyhow::{Context, Result};
use broker::{BrokerOptions, Mosquitto};
use sensor_drivers::synthetic::Waveform;
use serde::Serialize;
use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub duration: Duration,
    /// Keep the demo's files (queue, broker log, received JSONL) in this directory.
    pub keep: Option<PathBuf>,
    /// Print the live status line (to stderr).
    pub live: bool,
}

/// The demo's result. The `samples_*` figures come from the receiver's output file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoSummary {
    pub duration_s: f64,
    pub samples_generated: u64,
    pub samples_delivered: u64,
    pub samples_duplicated: u64,
    pub samples_lost: u64,
    pub samples_evicted: u64,
    pub batches_delivered: u64,
    pub duplicate_batches_dropped: u64,
    pub bad_payloads: u64,
    /// Wire message bytes the agent queued (and sent) per sample generated.
    pub wire_bytes_per_sample: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub links: Vec<DemoLink>,
    pub output: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoLink {
    pub name: String,
    pub batches_acked: u64,
    pub batches_moved: u64,
}

/// The configuration the demo runs with (also a worked example of the file format).
pub fn demo_config(dir: &Path, broker_socket: &Path) -> Config {
    let synth = |name: &str, channels: u16, rate_hz: u32, w: Waveform| SourceConfig {
        channels: Some(channels),
        rate_hz: Some(rate_hz),
        waveform: Some(w),
        ..SourceConfig::new(name, SourceKind::Synthetic)
    };
    Config {
        vehicle: "demo-car".into(),
        queue: QueueConfig {
            dir: dir.join("queue"),
            max_mb: 256,
            segment_mb: 8,
            flush_ms: 100,
            flush_kb: 4096,
        },
        batch: BatchConfig::default(),
        broker: BrokerConfig {
            host: None,
            port: 1883,
            socket: Some(broker_socket.to_owned()),
            topic_prefix: "pitlink".into(),
            keep_alive_s: 5,
            username: None,
            password: None,
            tls: None,
        },
        diag: DiagConfig {
            socket: dir.join("pitlink.sock"),
        },
        links: ["wwan0", "wwan1", "wwan2"]
            .iter()
            .map(|n| LinkConfig {
                name: (*n).into(),
                interface: None,
                address: None,
                modem: None,
                modemmanager: None,
                modem_sinr: Default::default(),
            })
            .collect(),
        sources: vec![
            synth("engine", 16, 1000, Waveform::Sine),
            synth("chassis", 8, 500, Waveform::Noise),
            synth("suspension", 4, 1000, Waveform::Saw),
        ],
        towers: crate::config::TowersConfig {
            map: dir.join("cells.map"),
            ..Default::default()
        },
    }
}

pub async fn run(opts: DemoOptions) -> Result<DemoSummary> {
    let tmp;
    let dir = match &opts.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("pitlink-demo-").tempdir()?;
            tmp.path().to_owned()
        }
    };
    let mut broker = Mosquitto::start(&dir.join("broker"), BrokerOptions::default())?;
    let cfg = demo_config(&dir, broker.socket());
    let out = dir.join("received.jsonl");

    // The receiver subscribes first, so nothing is published before anyone listens.
    let rx_stop = CancellationToken::new();
    let (rx_stats_tx, rx_stats) = tokio::sync::watch::channel(ReceiveSummary::default());
    let receiver = tokio::spawn(receive::run(
        ReceiveOptions {
            broker: broker.addr(),
            topic: format!("{}/+/batch", cfg.broker.topic_prefix),
            client_id: "pitlink-demo-receiver".into(),
            out: Some(out.clone()),
            csv: None,
            state: None,
            limits: Default::default(),
            dbc: Vec::new(),
            mqtt_version: Default::default(),
            tls: None,
            credentials: None,
            duration: None,
            idle_exit: None,
        },
        rx_stop.clone(),
        rx_stats_tx,
    ));
    wait_for(Duration::from_secs(10), || rx_stats.borrow().subscribes > 0)
        .await
        .context("the demo receiver did not subscribe within 10 s")?;

    let started = Instant::now();
    let daemon = daemon::start(
        cfg.clone(),
        StartOptions {
            drain_timeout: Duration::from_secs(30),
            diag_socket: true,
            ..StartOptions::default()
        },
    )?;
    let status = daemon.status.clone();
    let live = opts.live;
    let tty = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < opts.duration {
        ticker.tick().await;
        if live {
            let s = status.borrow().clone();
            let r = rx_stats.borrow().clone();
            let generated: u64 = s
                .sources
                .iter()
                .map(|x| x.counters.readings + x.counters.drops)
                .sum();
            let received: u64 = r.vehicles.values().map(|v| v.samples).sum();
            let links: Vec<String> = s
                .links
                .iter()
                .map(|l| format!("{} {} {}", l.name, l.state, l.counters.acked))
                .collect();
            let line = format!(
                "{:>4.0}s  generated {generated}  received {received}  queue {} undelivered  links [{}]",
                started.elapsed().as_secs_f64(),
                s.queue.stats.undelivered,
                links.join(", ")
            );
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    if live && tty {
        eprintln!();
    }
    daemon.shutdown.cancel();
    let final_status = {
        let st = daemon.status.clone();
        daemon.wait().await?;
        st.borrow().clone()
    };
    let duration_s = started.elapsed().as_secs_f64();
    let delivered_batches = final_status.queue.stats.delivered_batches;
    // Wait until the receiver has written every batch the broker acknowledged (or a quiet 3 s).
    let mut last = (Instant::now(), 0u64);
    loop {
        let r = rx_stats.borrow().clone();
        let got: u64 = r
            .vehicles
            .values()
            .map(|v| v.batches + v.gap_notices + v.run_announcements)
            .sum();
        if got >= delivered_batches {
            break;
        }
        if got != last.1 {
            last = (Instant::now(), got);
        } else if last.0.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx_stop.cancel();
    let rsum = receiver.await.context("receiver task")??;
    broker.stop();

    let (delivered, duplicated) = count_written(&out)?;
    let generated: u64 = final_status
        .sources
        .iter()
        .map(|x| x.counters.readings + x.counters.drops)
        .sum();
    let v = rsum.vehicles.get(&cfg.vehicle).cloned().unwrap_or_default();
    let evicted = v.evicted_samples;
    Ok(DemoSummary {
        duration_s,
        samples_generated: generated,
        samples_delivered: delivered,
        samples_duplicated: duplicated,
        samples_lost: generated.saturating_sub(delivered + evicted),
        samples_evicted: evicted,
        batches_delivered: v.batches,
        duplicate_batches_dropped: v.duplicate_batches,
        bad_payloads: rsum.bad_payloads,
        wire_bytes_per_sample: final_status.queue.stats.appended_bytes as f64
            / generated.max(1) as f64,
        latency_ms_p50: v.latency_ms_p50,
        latency_ms_p99: v.latency_ms_p99,
        links: final_status
            .links
            .iter()
            .map(|l| DemoLink {
                name: l.name.clone(),
                batches_acked: l.counters.acked,
                batches_moved: l.counters.moved,
            })
            .collect(),
        output: if opts.keep.is_some() {
            out
        } else {
            PathBuf::from("(removed; use --keep DIR to keep it)")
        },
    })
}

async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Counts distinct sample lines (vehicle, source, channel, timestamp) in the receiver's JSONL
/// output, and how many lines repeat one already seen.
pub fn count_written(path: &Path) -> Result<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Line {
        vehicle: String,
        source: Option<String>,
        ch: Option<u16>,
        t_us: Option<u64>,
    }
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut seen: HashSet<(String, String, u16, u64)> = HashSet::new();
    let (mut unique, mut dup) = (0u64, 0u64);
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let l: Line = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a receiver line", path.display(), n + 1))?;
        let (Some(source), Some(ch), Some(t)) = (l.source, l.ch, l.t_us) else {
            continue; // an event line (run, gap)
        };
        if seen.insert((l.vehicle, source, ch, t)) {
            unique += 1;
        } else {
            dup += 1;
        }
    }
    Ok((unique, dup))
}

/// The human-readable closing summary.
pub fn render(s: &DemoSummary) -> String {
    let mut o = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(o, "pitlink demo: {:.1} s", s.duration_s);
    let _ = writeln!(o, "  samples generated  {}", s.samples_generated);
    let _ = writeln!(
        o,
        "  samples delivered  {}  (distinct lines the receiver wrote)",
        s.samples_delivered
    );
    let _ = writeln!(o, "  samples duplicated {}", s.samples_duplicated);
    let _ = writeln!(
        o,
        "  samples evicted    {}  (reported by gap notices)",
        s.samples_evicted
    );
    let _ = writeln!(o, "  samples lost       {}", s.samples_lost);
    let _ = writeln!(
        o,
        "  batches delivered  {}  (duplicates dropped by the receiver: {})",
        s.batches_delivered, s.duplicate_batches_dropped
    );
    let _ = writeln!(
        o,
        "  wire bytes         {:.2} per sample  (whole messages, columnar + zstd)",
        s.wire_bytes_per_sample
    );
    if let (Some(p50), Some(p99)) = (s.latency_ms_p50, s.latency_ms_p99) {
        let _ = writeln!(o, "  end-to-end latency p50 {p50:.0} ms, p99 {p99:.0} ms");
    }
    for l in &s.links {
        let _ = writeln!(
            o,
            "  link {:<6} acked {:>6} batches, moved {}",
            l.name, l.batches_acked, l.batches_moved
        );
    }
    let _ = writeln!(o, "  output {}", s.output.display());
    o
}

/// Flushes stdout after printing (the JSON line must be complete before exit).
pub fn print_json(s: &DemoSummary) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, s)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
