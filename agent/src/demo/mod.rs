//! `pitlink demo`: the whole simulated world on one machine, no hardware and no system broker.
//!
//! It starts a Mosquitto child process; the track world of the shipped scenario with its three
//! simulated modems and GPS receiver on PTYs and one emulated link per modem in front of the
//! broker (rate and latency following each modem's serving cell); the daemon with synthetic
//! 1 kHz sources, the RAV4 CAN capture replayed (when the shared test data is found), the GPS,
//! the three links and the tower policy; and the receiver. A link failure is scripted at 15 s;
//! the tower policy switches cells by itself. It shows a live view, stops the sources after
//! `duration`, lets the queue drain, and then counts what the receiver actually wrote: every
//! sample and frame line is checked for duplicates, and loss is what was generated but neither
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
    /// A candump log to replay (looped) as source `can0`, with its DBC for the receiver.
    pub can: Option<(PathBuf, Option<PathBuf>)>,
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
    /// Cell locks and releases the tower policy made.
    pub tower_switches: u64,
    /// Link failures survived (scripted blackholes, plus links the scheduler saw go down).
    pub failovers: u64,
    pub links: Vec<DemoLink>,
    pub output: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoLink {
    pub name: String,
    pub batches_acked: u64,
    pub batches_moved: u64,
    /// Bytes the link's emulated radio path carried towards the broker.
    pub bytes: u64,
    /// Serving cell at the end (EARFCN/PCI).
    pub cell: Option<String>,
}

/// The configuration the demo runs with (also a worked example of the file format): links
/// through the world's emulated links with its simulated modems, the GPS, synthetic sources,
/// and the CAN replay when given.
pub fn demo_config(
    dir: &Path,
    broker_socket: &Path,
    world: &modem_hal::sim::drive::SimWorld,
    can: Option<&Path>,
) -> Config {
    let synth = |name: &str, channels: u16, rate_hz: u32, w: Waveform| SourceConfig {
        channels: Some(channels),
        rate_hz: Some(rate_hz),
        waveform: Some(w),
        ..SourceConfig::new(name, SourceKind::Synthetic)
    };
    let mut sources = vec![
        synth("engine", 16, 1000, Waveform::Sine),
        synth("chassis", 8, 500, Waveform::Noise),
        synth("suspension", 4, 1000, Waveform::Saw),
        SourceConfig {
            device: Some(world.gps_path().to_path_buf()),
            ..SourceConfig::new("gps", SourceKind::Nmea)
        },
    ];
    if let Some(log) = can {
        sources.push(SourceConfig {
            path: Some(log.to_path_buf()),
            looped: Some(true),
            ..SourceConfig::new("can0", SourceKind::Candump)
        });
    }
    let scenario = world.world().scenario();
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
        links: scenario
            .modems
            .iter()
            .enumerate()
            .map(|(i, m)| LinkConfig {
                name: m.name.clone(),
                interface: None,
                address: world.links().get(i).map(|l| l.addr()),
                modem: world.modems().get(i).map(|m| m.path().to_path_buf()),
                modemmanager: None,
                modem_sinr: Default::default(),
            })
            .collect(),
        sources,
        towers: crate::config::TowersConfig {
            map: dir.join("cells.map"),
            rules: crate::towers::policy::PolicyConfig {
                // Shorter than the defaults, so that a switch happens within the first minute.
                time_to_trigger: Duration::from_secs(3),
                min_dwell: Duration::from_secs(20),
                ..Default::default()
            },
            ..Default::default()
        },
        metrics: Default::default(),
    }
}

/// The RAV4 capture and its DBC in the shared test data, when this checkout has them.
pub fn default_can() -> Option<(PathBuf, Option<PathBuf>)> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let log = data.join("candump/comma2k19_rav4_2017_can0_10s.log");
    let dbc = data.join("dbc/opendbc/_toyota_2017.dbc");
    log.is_file().then(|| (log, dbc.is_file().then_some(dbc)))
}

/// When the scripted link failure starts, and how long it lasts.
const FAILURE_AT: Duration = Duration::from_secs(15);
const FAILURE_FOR: Duration = Duration::from_secs(5);

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
    let mut broker = Mosquitto::start(
        &dir.join("broker"),
        BrokerOptions {
            tcp: true,
            ..BrokerOptions::default()
        },
    )?;
    let tcp: std::net::SocketAddr = match broker.tcp_addr() {
        Some(crate::mqtt::BrokerAddr::Tcp { host, port }) => format!("{host}:{port}")
            .parse()
            .context("the broker's TCP address")?,
        _ => anyhow::bail!("the demo broker has no TCP listener"),
    };
    // The world: the track, three simulated modems and a GPS on PTYs, three emulated links.
    let world = modem_hal::sim::drive::SimWorld::start(
        modem_hal::sim::world::World::new(modem_hal::sim::scenario::Scenario::builtin()),
        &dir.join("modems"),
        modem_hal::sim::drive::WorldOptions {
            speed: 1.0,
            modem: modem_hal::sim::modem::SimConfig {
                latency_scale: 0.5,
                ..Default::default()
            },
            broker: Some(tcp),
            seed: 7,
        },
    )
    .await
    .context("cannot start the simulated world")?;
    let cfg = demo_config(
        &dir,
        broker.socket(),
        &world,
        opts.can.as_ref().map(|c| c.0.as_path()),
    );
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
            dbc: opts
                .can
                .as_ref()
                .and_then(|c| c.1.clone())
                .map(|d| vec![("can0".to_string(), d)])
                .unwrap_or_default(),
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
    let mut events: Vec<String> = Vec::new();
    let mut failed: Option<usize> = None;
    let mut failovers = 0u64;
    let mut seen_decisions = 0usize;
    let mut drawn_lines = 0usize;
    let mut printed_events = 0usize;
    while started.elapsed() < opts.duration {
        ticker.tick().await;
        let t = started.elapsed();
        let s = status.borrow().clone();
        // The scripted link failure: the busiest link goes silent for a while.
        if failed.is_none() && failovers == 0 && t >= FAILURE_AT && !world.links().is_empty() {
            let busiest = (0..s.links.len())
                .max_by_key(|&i| s.links[i].counters.acked)
                .unwrap_or(0);
            world.fault(busiest, true);
            failed = Some(busiest);
            failovers += 1;
            events.push(format!(
                "{:>3.0} s  link {} blackholed (scripted failure): its batches move to the others",
                t.as_secs_f64(),
                s.links.get(busiest).map_or("?", |l| l.name.as_str())
            ));
        }
        if let Some(i) = failed
            && t >= FAILURE_AT + FAILURE_FOR
        {
            world.fault(i, false);
            failed = None;
            events.push(format!(
                "{:>3.0} s  link {} back",
                t.as_secs_f64(),
                s.links.get(i).map_or("?", |l| l.name.as_str())
            ));
        }
        for d in s.towers.decisions.iter().skip(seen_decisions) {
            let link = s
                .links
                .get(d.command.modem())
                .map_or("?", |l| l.name.as_str());
            let what = match d.command {
                crate::towers::policy::Command::Lock { cell, .. } => format!("locked to {cell}"),
                crate::towers::policy::Command::Release { .. } => "released".into(),
            };
            events.push(format!(
                "{:>3.0} s  tower: modem {link} {what}: {}",
                t.as_secs_f64(),
                d.reason
            ));
        }
        seen_decisions = s.towers.decisions.len();
        if live {
            let r = rx_stats.borrow().clone();
            let view = live_view(&s, &r, &world, t, failovers, &events);
            if tty {
                // Redraw in place.
                if drawn_lines > 0 {
                    eprint!("\x1b[{drawn_lines}A\x1b[J");
                }
                eprint!("{view}");
                drawn_lines = view.lines().count();
            } else {
                // A log, not a screen: the status line, then each new event once.
                eprintln!("{}", view.lines().next().unwrap_or(""));
                for e in &events[printed_events..] {
                    eprintln!("  {e}");
                }
                printed_events = events.len();
            }
        }
    }
    if let Some(i) = failed {
        world.fault(i, false);
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
    let link_bytes: Vec<u64> = world
        .links()
        .iter()
        .map(|l| l.counters().bytes_up)
        .collect();
    world.shutdown();

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
        tower_switches: final_status.towers.switches,
        failovers,
        links: final_status
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| DemoLink {
                name: l.name.clone(),
                batches_acked: l.counters.acked,
                batches_moved: l.counters.moved,
                bytes: link_bytes.get(i).copied().unwrap_or(0),
                cell: l
                    .radio
                    .as_ref()
                    .and_then(|r| Some(format!("{}/{}", r.earfcn?, r.pci?))),
            })
            .collect(),
        output: if opts.keep.is_some() {
            out
        } else {
            PathBuf::from("(removed; use --keep DIR to keep it)")
        },
    })
}

/// The live view: position, links with radio and goodput, queue, delivered and lost, the
/// last events.
fn live_view(
    s: &crate::diag::Status,
    r: &ReceiveSummary,
    world: &modem_hal::sim::drive::SimWorld,
    t: Duration,
    failovers: u64,
    events: &[String],
) -> String {
    use std::fmt::Write as _;
    let generated: u64 = s
        .sources
        .iter()
        .map(|x| x.counters.readings + x.counters.drops)
        .sum();
    let received: u64 = r.vehicles.values().map(|v| v.samples).sum();
    let pos = world.position();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pitlink demo {:>4.0} s   lap {} at {:.0} m, {:.0} km/h   generated {generated}  received {received}  queue {} undelivered   failovers {failovers}  tower switches {}",
        t.as_secs_f64(),
        pos.lap + 1,
        pos.lap_distance_m,
        pos.speed_mps * 3.6,
        s.queue.stats.undelivered,
        s.towers.switches
    );
    let _ = writeln!(
        o,
        "  {:<4} {:<8} {:<10} {:>6} {:>6} {:>12} {:>9} {:>7}",
        "link", "state", "cell", "RSRP", "SINR", "goodput", "acked", "moved"
    );
    for l in &s.links {
        let radio = l.radio.as_ref();
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let _ = writeln!(
            o,
            "  {:<4} {:<8} {:<10} {:>6} {:>6} {:>12} {:>9} {:>7}",
            l.name,
            l.state,
            radio
                .and_then(|r| Some(format!("{}/{}", r.earfcn?, r.pci?)))
                .unwrap_or_else(|| "-".into()),
            num(radio.and_then(|r| r.rsrp_dbm)),
            num(radio.and_then(|r| r.sinr_db)),
            l.metrics
                .goodput_bytes_s
                .map_or("-".into(), |g| format!("{:.1} Mbit/s", g * 8.0 / 1e6)),
            l.counters.acked,
            l.counters.moved
        );
    }
    for e in events.iter().rev().take(4).rev() {
        let _ = writeln!(o, "  {e}");
    }
    o
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
        id: Option<u32>,
        t_us: Option<u64>,
    }
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    // Values by channel; frames by identifier (offset past every channel number).
    let mut seen: HashSet<(String, String, u64, u64)> = HashSet::new();
    let (mut unique, mut dup) = (0u64, 0u64);
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let l: Line = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a receiver line", path.display(), n + 1))?;
        let key = match (l.ch, l.id) {
            (Some(ch), _) => u64::from(ch),
            (None, Some(id)) => (1 << 32) | u64::from(id),
            (None, None) => continue, // an event line (run, gap)
        };
        let (Some(source), Some(t)) = (l.source, l.t_us) else {
            continue;
        };
        if seen.insert((l.vehicle, source, key, t)) {
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
    let _ = writeln!(
        o,
        "  failovers          {}  tower switches {}",
        s.failovers, s.tower_switches
    );
    for l in &s.links {
        let _ = writeln!(
            o,
            "  link {:<6} acked {:>6} batches ({:.1} MB), moved {}, cell {}",
            l.name,
            l.batches_acked,
            l.bytes as f64 / 1e6,
            l.batches_moved,
            l.cell.as_deref().unwrap_or("-")
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
