//! The bonded uplink's benchmarks: `bench failover`, `bench bond` and `bench live`.
//!
//! Each runs the real daemon in this process with one emulated link per `[[links]]` entry
//! ([`LinkEmulator`]: a TCP relay with its own rate and latency) in front of Mosquitto (started
//! here unless a broker address is given). Per-batch times come from the daemon's trace
//! ([`StartOptions::trace`]: queued, sent on a link, acknowledged on a link); what arrived comes
//! from the receiver's output file, read back at the end.

use crate::codec::{self, BatchId};
use crate::config::{
    BatchConfig, BrokerConfig, Config, DiagConfig, LinkConfig, QueueConfig, SourceConfig,
    SourceKind,
};
use crate::daemon::{self, StartOptions, TraceEvent};
use crate::demo::broker::{BrokerOptions, Mosquitto};
use crate::mqtt::BrokerAddr;
use crate::queue::{BatchMeta, Queue, QueueOptions};
use crate::receive::{self, ReceiveOptions, ReceiveSummary};
use anyhow::{Context, Result, bail};
use modem_hal::sim::link::{LinkControl, LinkEmulator, LinkParams};
use sensor_drivers::synthetic::{Synthetic, SyntheticSpec, Waveform};
use serde::Serialize;
use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One emulated link: capacity and round-trip time (one way = RTT / 2 on the emulator).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkSpec {
    pub mbit_s: f64,
    pub rtt_ms: f64,
}

/// Parses `2:30,5:60,10:150` (Mbit/s : RTT ms per link).
pub fn parse_links(s: &str) -> Result<Vec<LinkSpec>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (m, r) = part
            .split_once(':')
            .ok_or_else(|| format!("'{part}': expected MBIT:RTT_MS (example: 5:60)"))?;
        let mbit_s: f64 = m
            .parse()
            .map_err(|_| format!("'{part}': '{m}' is not a capacity in Mbit/s"))?;
        let rtt_ms: f64 = r
            .parse()
            .map_err(|_| format!("'{part}': '{r}' is not an RTT in ms"))?;
        if !(mbit_s > 0.0 && mbit_s <= 10_000.0 && (0.0..=10_000.0).contains(&rtt_ms)) {
            return Err(format!(
                "'{part}': capacity must be in (0, 10000] Mbit/s and RTT in [0, 10000] ms"
            ));
        }
        v.push(LinkSpec { mbit_s, rtt_ms });
    }
    if v.is_empty() || v.len() > 16 {
        return Err(format!("'{s}': between 1 and 16 links"));
    }
    Ok(v)
}

/// A synthetic source of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SourceSpec {
    pub channels: u16,
    pub rate_hz: u32,
    #[serde(skip)]
    pub waveform: Waveform,
}

/// Per-batch record built from the daemon's trace.
#[derive(Debug, Clone, Default)]
struct BatchLog {
    queued_us: u64,
    samples: u32,
    bytes: u64,
    sends: Vec<(usize, u64)>,
    /// First ack: link and time.
    first_ack: Option<(usize, u64)>,
    acks: u32,
}

/// What the trace collector keeps.
#[derive(Debug, Default)]
struct TraceLog {
    batches: HashMap<BatchId, BatchLog>,
    /// Ack times per link (first acks only), for "busiest lately".
    acks_by_link: Vec<Vec<u64>>,
}

impl TraceLog {
    fn on(&mut self, ev: TraceEvent) {
        match ev {
            TraceEvent::Queued {
                id,
                at_us,
                samples,
                bytes,
            } => {
                let b = self.batches.entry(id).or_default();
                b.queued_us = at_us;
                b.samples = samples;
                b.bytes = bytes;
            }
            TraceEvent::Sent {
                link,
                id,
                at_us,
                bytes,
            } => {
                let b = self.batches.entry(id).or_default();
                b.bytes = bytes;
                b.sends.push((link, at_us));
            }
            TraceEvent::Acked { link, id, at_us } => {
                let b = self.batches.entry(id).or_default();
                b.acks += 1;
                if b.first_ack.is_none() {
                    b.first_ack = Some((link, at_us));
                    if self.acks_by_link.len() <= link {
                        self.acks_by_link.resize(link + 1, Vec::new());
                    }
                    self.acks_by_link[link].push(at_us);
                }
            }
        }
    }

    /// The link with the most first acks since `since_us`.
    fn busiest_since(&self, since_us: u64) -> Option<usize> {
        self.acks_by_link
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().rev().take_while(|&&t| t >= since_us).count(), i))
            .max()
            .filter(|&(n, _)| n > 0)
            .map(|(_, i)| i)
    }
}

/// The scaffolding every uplink benchmark shares: scratch directory, broker, emulated links,
/// optionally the receiver, and the daemon with its trace.
struct World {
    dir: tempfile::TempDir,
    broker: Option<Mosquitto>,
    /// The broker's TCP address (the links relay to it).
    broker_tcp: SocketAddr,
    /// Where the receiver connects.
    receiver_addr: BrokerAddr,
    links: Vec<LinkControl>,
    vehicle: String,
    trace: Arc<Mutex<TraceLog>>,
}

impl World {
    async fn start(
        broker: Option<SocketAddr>,
        dir: Option<&Path>,
        links: &[LinkSpec],
        tag: &str,
    ) -> Result<World> {
        let base = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = tempfile::Builder::new()
            .prefix("pitlink-bench-uplink-")
            .tempdir_in(&base)
            .with_context(|| format!("cannot create a scratch directory in {}", base.display()))?;
        let (mosq, broker_tcp, receiver_addr) = match broker {
            Some(a) => (
                None,
                a,
                BrokerAddr::Tcp {
                    host: a.ip().to_string(),
                    port: a.port(),
                },
            ),
            None => {
                let m = Mosquitto::start(
                    &dir.path().join("broker"),
                    BrokerOptions {
                        tcp: true,
                        ..BrokerOptions::default()
                    },
                )?;
                let tcp = match m.tcp_addr() {
                    Some(BrokerAddr::Tcp { host, port }) => format!("{host}:{port}")
                        .parse()
                        .context("the broker's TCP address")?,
                    _ => bail!("the bench broker has no TCP listener"),
                };
                let addr = m.addr();
                (Some(m), tcp, addr)
            }
        };
        let mut ctl = Vec::new();
        for (i, l) in links.iter().enumerate() {
            ctl.push(
                LinkEmulator::spawn(
                    "127.0.0.1:0".parse().context("loopback")?,
                    broker_tcp,
                    params(l),
                    i as u64 + 1,
                )
                .await
                .context("cannot start an emulated link")?,
            );
        }
        // Unique per run, so a shared broker's retained sessions never mix runs.
        let vehicle = format!(
            "bench-{tag}-{}-{}",
            std::process::id(),
            crate::now_us() % 1_000_000
        );
        Ok(World {
            dir,
            broker: mosq,
            broker_tcp,
            receiver_addr,
            links: ctl,
            vehicle,
            trace: Arc::new(Mutex::new(TraceLog::default())),
        })
    }

    fn config(&self, sources: &[SourceSpec], queue_mb: u64) -> Config {
        Config {
            vehicle: self.vehicle.clone(),
            queue: QueueConfig {
                dir: self.dir.path().join("queue"),
                max_mb: queue_mb,
                segment_mb: 16,
                flush_ms: 100,
                flush_kb: 4096,
            },
            batch: BatchConfig::default(),
            broker: BrokerConfig {
                host: Some(self.broker_tcp.ip().to_string()),
                port: self.broker_tcp.port(),
                socket: None,
                topic_prefix: "pitlink".into(),
                keep_alive_s: 5,
                username: None,
                password: None,
                tls: None,
            },
            diag: DiagConfig {
                socket: self.dir.path().join("pitlink.sock"),
            },
            links: self
                .links
                .iter()
                .enumerate()
                .map(|(i, l)| LinkConfig {
                    name: format!("link{i}"),
                    interface: None,
                    address: Some(l.addr()),
                    modem: None,
                    modemmanager: None,
                    modem_sinr: Default::default(),
                })
                .collect(),
            sources: sources
                .iter()
                .enumerate()
                .map(|(i, s)| SourceConfig {
                    channels: Some(s.channels),
                    rate_hz: Some(s.rate_hz),
                    waveform: Some(s.waveform),
                    ..SourceConfig::new(&format!("synth{i}"), SourceKind::Synthetic)
                })
                .collect(),
            towers: Default::default(),
            metrics: Default::default(),
        }
    }

    /// Starts the receiver (JSONL into the scratch directory) for vehicles matching `topic`.
    async fn receiver(&self, topic: &str) -> Result<Receiver> {
        let out = self.dir.path().join("received.jsonl");
        let stop = CancellationToken::new();
        let (tx, stats) = tokio::sync::watch::channel(ReceiveSummary::default());
        let task = tokio::spawn(receive::run(
            ReceiveOptions {
                broker: self.receiver_addr.clone(),
                topic: topic.to_string(),
                client_id: format!("{}-receiver", self.vehicle),
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
            stop.clone(),
            tx,
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.borrow().subscribes == 0 {
            if Instant::now() > deadline || task.is_finished() {
                bail!("the bench receiver did not subscribe within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Receiver {
            out,
            stop,
            stats,
            task,
        })
    }

    /// Starts the daemon with its trace feeding [`World::trace`].
    fn daemon(&self, cfg: Config) -> Result<daemon::RunningDaemon> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let log = self.trace.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let Ok(mut l) = log.lock() {
                    l.on(ev);
                }
            }
        });
        daemon::start(
            cfg,
            StartOptions {
                drain_timeout: Duration::from_secs(30),
                diag_socket: false,
                trace: Some(tx),
                stall_core_after: None,
            },
        )
    }

    fn link_params(&self) -> Vec<LinkSpec> {
        self.links
            .iter()
            .map(|l| {
                let p = l.params();
                LinkSpec {
                    mbit_s: p.rate_bps / 1e6,
                    rtt_ms: p.latency.as_secs_f64() * 2000.0,
                }
            })
            .collect()
    }

    fn finish(mut self) {
        if let Some(b) = &mut self.broker {
            b.stop();
        }
    }
}

fn params(l: &LinkSpec) -> LinkParams {
    LinkParams {
        rate_bps: l.mbit_s * 1e6,
        latency: Duration::from_secs_f64(l.rtt_ms / 2000.0),
        jitter: Duration::from_millis(1),
        up: true,
    }
}

struct Receiver {
    out: PathBuf,
    stop: CancellationToken,
    stats: tokio::sync::watch::Receiver<ReceiveSummary>,
    task: tokio::task::JoinHandle<Result<ReceiveSummary>>,
}

impl Receiver {
    /// Waits until the receiver has taken in `batches` distinct batches (or nothing arrived for
    /// `quiet`), then stops it.
    async fn stop_when(self, batches: u64, quiet: Duration) -> Result<(ReceiveSummary, PathBuf)> {
        let mut last = (Instant::now(), 0u64);
        loop {
            let got: u64 = self
                .stats
                .borrow()
                .vehicles
                .values()
                .map(|v| v.batches)
                .sum();
            if got >= batches {
                break;
            }
            if got != last.1 {
                last = (Instant::now(), got);
            } else if last.0.elapsed() > quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.cancel();
        let s = self.task.await.context("receiver task")??;
        Ok((s, self.out))
    }
}

/// Sample lines per batch in the receiver's JSONL output (event lines are not counted).
fn lines_per_batch(path: &Path) -> Result<HashMap<(String, BatchId), u64>> {
    fn num(line: &str, key: &str) -> Option<u64> {
        let i = line.find(key)? + key.len();
        let rest = &line[i..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    }
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut map: HashMap<(String, BatchId), u64> = HashMap::new();
    let mut last: Option<((String, BatchId), u64)> = None;
    for line in std::io::BufReader::with_capacity(1 << 20, f).lines() {
        let line = line.with_context(|| format!("{}", path.display()))?;
        if !line.starts_with("{\"vehicle\":\"") {
            continue;
        }
        let vehicle = line[12..].split('"').next().unwrap_or_default();
        let (Some(run), Some(seq)) = (num(&line, "\"run\":"), num(&line, "\"seq\":")) else {
            continue;
        };
        let id = BatchId {
            run: run as u32,
            seq,
        };
        // Lines of one batch come together: count runs of them before touching the map.
        match &mut last {
            Some((k, n)) if k.0 == vehicle && k.1 == id => *n += 1,
            _ => {
                if let Some((k, n)) = last.take() {
                    *map.entry(k).or_default() += n;
                }
                last = Some(((vehicle.to_string(), id), 1));
            }
        }
    }
    if let Some((k, n)) = last {
        *map.entry(k).or_default() += n;
    }
    Ok(map)
}

/// Lost and duplicated data batches of `vehicle`, from the trace and the receiver's output.
#[derive(Debug, Default, Clone, Copy)]
struct Delivery {
    data_batches: u64,
    lost_batches: u64,
    duplicate_samples: u64,
    partial_batches: u64,
    samples_generated: u64,
    samples_written: u64,
}

fn delivery(
    log: &TraceLog,
    lines: &HashMap<(String, BatchId), u64>,
    vehicle: &str,
    evicted: u64,
) -> Delivery {
    let mut d = Delivery::default();
    for (id, b) in &log.batches {
        if b.samples == 0 {
            continue;
        }
        d.data_batches += 1;
        d.samples_generated += u64::from(b.samples);
        match lines.get(&(vehicle.to_string(), *id)).copied().unwrap_or(0) {
            0 => d.lost_batches += 1,
            n if n > u64::from(b.samples) => d.duplicate_samples += n - u64::from(b.samples),
            n if n < u64::from(b.samples) => d.partial_batches += 1,
            _ => {}
        }
    }
    d.samples_written = lines
        .iter()
        .filter(|((v, _), _)| v == vehicle)
        .map(|(_, n)| n)
        .sum();
    d.lost_batches = d.lost_batches.saturating_sub(evicted);
    d
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Stops the daemon and returns its last status.
async fn stop_daemon(d: daemon::RunningDaemon) -> Result<crate::diag::Status> {
    d.shutdown.cancel();
    let st = d.status.clone();
    d.wait().await?;
    let s = st.borrow().clone();
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// bench failover

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    pub broker: Option<SocketAddr>,
    pub dir: Option<PathBuf>,
    pub blackholes: u32,
    /// How long each blackhole lasts.
    pub hold: Duration,
    /// Time between lifting a blackhole and the next one.
    pub gap: Duration,
    /// Run-in before the first blackhole.
    pub warmup: Duration,
    pub links: Vec<LinkSpec>,
    pub source: SourceSpec,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            broker: None,
            dir: None,
            blackholes: 20,
            hold: Duration::from_secs(1),
            gap: Duration::from_secs(1),
            warmup: Duration::from_secs(3),
            links: vec![
                LinkSpec {
                    mbit_s: 20.0,
                    rtt_ms: 30.0,
                },
                LinkSpec {
                    mbit_s: 10.0,
                    rtt_ms: 60.0,
                },
                LinkSpec {
                    mbit_s: 10.0,
                    rtt_ms: 100.0,
                },
            ],
            source: SourceSpec {
                channels: 300,
                rate_hz: 1000,
                waveform: Waveform::Sine,
            },
        }
    }
}

/// One blackhole's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Blackhole {
    pub link: usize,
    /// Batches in flight on the link at the blackhole, or sent to it while it lasted.
    pub affected: u64,
    /// Blackhole → the last affected batch acknowledged (ms); 0 when none was affected.
    pub failover_ms: f64,
    /// Affected batches whose first ack came on the blackholed link itself (after it came back).
    pub acked_on_same_link: u64,
    /// Affected batches never acknowledged.
    pub never_acked: u64,
    /// Blackhole → the last affected batch handed to another link (ms): detection and
    /// re-placement; the rest of `failover_ms` is that link's queue and RTT.
    pub resent_ms: f64,
    /// The link's RTO and smoothed RTT in the status just before the blackhole (ms).
    pub rto_ms: f64,
    pub srtt_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverBench {
    /// Over the blackholes that caught at least one batch.
    pub failover_ms_p50: Option<f64>,
    pub failover_ms_max: Option<f64>,
    pub lost_batches: u64,
    pub duplicates_delivered_after_dedup: u64,
    /// Blackholes that caught no batch (left out of the percentiles).
    pub blackholes_without_batches: u64,
    /// Goals: max ≤ 500 ms, nothing lost, nothing duplicated.
    pub goal_failover_ms_max: f64,
    pub goals_met: bool,
    pub blackholes: u64,
    pub hold_ms: f64,
    pub data_batches: u64,
    pub samples_generated: u64,
    pub samples_written: u64,
    /// Batches whose sample lines in the output were fewer than their samples.
    pub partial_batches: u64,
    /// Batches taken back from a link and sent again (scheduler counters, all links).
    pub batches_moved: u64,
    /// Acks of batches already delivered through another send.
    pub duplicate_acks: u64,
    /// Duplicate batches the receiver dropped.
    pub duplicate_batches_dropped: u64,
    pub evicted_batches: u64,
    pub affected_batches: u64,
    pub links: Vec<LinkSpec>,
    pub channels: u16,
    pub rate_hz: u32,
    pub elapsed_s: f64,
    pub per_blackhole: Vec<Blackhole>,
}

/// 20 blackholes of the busiest link under a steady synthetic load.
pub async fn failover(opts: &FailoverOptions) -> Result<FailoverBench> {
    let started = Instant::now();
    let world = World::start(opts.broker, opts.dir.as_deref(), &opts.links, "failover").await?;
    let cfg = world.config(&[opts.source], 4096);
    let rx = world.receiver(&cfg.data_topic()).await?;
    let d = world.daemon(cfg)?;
    tokio::time::sleep(opts.warmup).await;
    let mut holes = Vec::new();
    for _ in 0..opts.blackholes {
        let now = crate::now_us();
        let link = {
            let log = world
                .trace
                .lock()
                .map_err(|_| anyhow::anyhow!("trace lock"))?;
            log.busiest_since(now.saturating_sub(1_000_000))
                .unwrap_or(0)
        };
        let (rto_ms, srtt_ms) = d
            .status
            .borrow()
            .links
            .get(link)
            .map_or((0.0, None), |l| (l.metrics.rto_ms, l.metrics.srtt_ms));
        let t0 = crate::now_us();
        world.links[link].blackhole(true);
        tokio::time::sleep(opts.hold).await;
        let t1 = crate::now_us();
        world.links[link].blackhole(false);
        holes.push((link, t0, t1, rto_ms, srtt_ms));
        tokio::time::sleep(opts.gap).await;
    }
    let status = stop_daemon(d).await?;
    let delivered = status.queue.stats.delivered_batches;
    let (rsum, out) = rx.stop_when(delivered, Duration::from_secs(5)).await?;
    let lines = lines_per_batch(&out)?;
    let log = world
        .trace
        .lock()
        .map_err(|_| anyhow::anyhow!("trace lock"))?;
    let v = rsum
        .vehicles
        .get(&world.vehicle)
        .cloned()
        .unwrap_or_default();
    let del = delivery(&log, &lines, &world.vehicle, v.evicted_batches);
    let per_blackhole: Vec<Blackhole> = holes
        .iter()
        .map(|&(link, t0, t1, rto_ms, srtt_ms)| Blackhole {
            rto_ms,
            srtt_ms,
            ..blackhole_figures(&log, link, t0, t1)
        })
        .collect();
    drop(log);
    // A blackhole that caught no batch says nothing about failover.
    let mut fo: Vec<f64> = per_blackhole
        .iter()
        .filter(|b| b.affected > 0)
        .map(|b| b.failover_ms)
        .collect();
    fo.sort_by(f64::total_cmp);
    let max = fo.last().copied();
    let lost = del.lost_batches;
    let dups = del.duplicate_samples;
    let r = FailoverBench {
        failover_ms_p50: quantile(&fo, 0.5).map(round2),
        failover_ms_max: max.map(round2),
        lost_batches: lost,
        duplicates_delivered_after_dedup: dups,
        blackholes_without_batches: per_blackhole.iter().filter(|b| b.affected == 0).count() as u64,
        goal_failover_ms_max: 500.0,
        goals_met: max.is_some_and(|m| m <= 500.0) && lost == 0 && dups == 0,
        blackholes: holes.len() as u64,
        hold_ms: opts.hold.as_secs_f64() * 1000.0,
        data_batches: del.data_batches,
        samples_generated: del.samples_generated,
        samples_written: del.samples_written,
        partial_batches: del.partial_batches,
        batches_moved: status.links.iter().map(|l| l.counters.moved).sum(),
        duplicate_acks: status.links.iter().map(|l| l.counters.duplicate_acks).sum(),
        duplicate_batches_dropped: v.duplicate_batches,
        evicted_batches: v.evicted_batches,
        affected_batches: per_blackhole.iter().map(|b| b.affected).sum(),
        links: world.link_params(),
        channels: opts.source.channels,
        rate_hz: opts.source.rate_hz,
        elapsed_s: round2(started.elapsed().as_secs_f64()),
        per_blackhole,
    };
    world.finish();
    Ok(r)
}

fn blackhole_figures(log: &TraceLog, link: usize, t0: u64, t1: u64) -> Blackhole {
    let mut b = Blackhole {
        link,
        affected: 0,
        failover_ms: 0.0,
        acked_on_same_link: 0,
        never_acked: 0,
        resent_ms: 0.0,
        rto_ms: 0.0,
        srtt_ms: None,
    };
    let mut last_us = t0;
    let mut resent_us = t0;
    for bl in log.batches.values() {
        let first_ack_before = |t: u64| bl.first_ack.is_some_and(|(_, a)| a <= t);
        let affected = bl
            .sends
            .iter()
            .any(|&(l, s)| l == link && ((s <= t0 && !first_ack_before(t0)) || (s > t0 && s < t1)));
        if !affected || first_ack_before(t0) {
            continue;
        }
        b.affected += 1;
        if let Some(&(_, s)) = bl.sends.iter().find(|&&(l, s)| l != link && s > t0) {
            resent_us = resent_us.max(s);
        }
        match bl.first_ack {
            Some((l, a)) => {
                if l == link {
                    b.acked_on_same_link += 1;
                }
                last_us = last_us.max(a);
            }
            None => b.never_acked += 1,
        }
    }
    b.failover_ms = round2((last_us - t0) as f64 / 1000.0);
    b.resent_ms = round2((resent_us - t0) as f64 / 1000.0);
    b
}

// ---------------------------------------------------------------------------------------------
// bench bond

#[derive(Debug, Clone)]
pub struct BondOptions {
    pub broker: Option<SocketAddr>,
    pub dir: Option<PathBuf>,
    pub links: Vec<LinkSpec>,
    /// Measured window, after `warmup`.
    pub duration: Duration,
    pub warmup: Duration,
    /// Offered load over the capacity sum (the source is sized for it).
    pub overload: f64,
    /// Also run the fastest link alone (same load) as a baseline.
    pub baseline: bool,
    /// Samples per batch at most (`None`: the daemon's default).
    pub max_samples: Option<usize>,
}

impl Default for BondOptions {
    fn default() -> Self {
        BondOptions {
            broker: None,
            dir: None,
            links: parse_links("2:30,5:60,10:150").unwrap_or_default(),
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(5),
            overload: 1.3,
            baseline: true,
            max_samples: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BondLink {
    pub name: String,
    pub capacity_mbit_s: f64,
    pub rtt_ms: f64,
    /// This link's part of the goodput.
    pub share: f64,
    pub goodput_mbit_s: f64,
    /// Relay bytes up (MQTT framing, heartbeats and re-sends included) per second, in Mbit/s.
    pub wire_mbit_s: f64,
    /// `wire_mbit_s / capacity_mbit_s`.
    pub utilisation: f64,
    pub batches_acked: u64,
    pub batches_moved: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BondRun {
    pub goodput_mbit_s: f64,
    pub capacity_sum_mbit_s: f64,
    pub efficiency: f64,
    pub offered_mbit_s: f64,
    /// Relay bytes up on all links, per second (everything the links carried).
    pub wire_mbit_s: f64,
    /// Wire bytes beyond the acknowledged payload, per payload byte (MQTT framing, topic,
    /// heartbeats, re-sends and duplicates).
    pub wire_overhead: f64,
    pub mean_batch_bytes: f64,
    pub links: Vec<BondLink>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BondBench {
    pub goodput_mbit_s: f64,
    pub capacity_sum_mbit_s: f64,
    pub efficiency: f64,
    /// Goal: efficiency ≥ 0.90.
    pub goal_efficiency: f64,
    pub goal_met: bool,
    /// Wire rate of the batches the sources produced (payload appended to the queue).
    pub offered_mbit_s: f64,
    pub wire_mbit_s: f64,
    pub wire_overhead: f64,
    pub mean_batch_bytes: f64,
    pub links: Vec<BondLink>,
    /// Same run, same load: the fastest link alone.
    pub baseline_single_link: Option<BondRun>,
    /// `goodput_mbit_s` / the baseline's.
    pub ratio_to_single_link: Option<f64>,
    pub channels: u16,
    pub rate_hz: u32,
    /// Samples per batch at most.
    pub max_samples: usize,
    pub window_s: f64,
    pub warmup_s: f64,
}

/// Wire bytes per sample of the synthetic noise source (one 100 ms batch encoded as the daemon
/// does), to size the offered load.
fn bytes_per_sample(channels: u16, rate_hz: u32) -> f64 {
    let spec = SyntheticSpec {
        channels,
        rate_hz,
        waveform: Waveform::Noise,
    };
    let mut g = Synthetic::new(spec, 1_700_000_000_000_000);
    let mut v = Vec::new();
    g.poll(1_700_000_000_100_000, u64::MAX, &mut v);
    v.truncate(BatchConfig::default().max_samples);
    let version = BatchConfig::default().format_version;
    let env = codec::data_envelope_for(
        version,
        "bench-car",
        BatchId { run: 1, seq: 1 },
        "synth0",
        &v,
    );
    codec::encode_version(&env, version).len() as f64 / v.len().max(1) as f64
}

/// The bonded links under a load above their capacity sum; then the fastest link alone.
pub async fn bond(opts: &BondOptions) -> Result<BondBench> {
    let cap: f64 = opts.links.iter().map(|l| l.mbit_s).sum();
    let rate_hz = 1000u32;
    let per_channel_bits = bytes_per_sample(100, rate_hz) * 8.0 * f64::from(rate_hz);
    let channels = ((cap * 1e6 * opts.overload) / per_channel_bits)
        .ceil()
        .clamp(1.0, 4096.0) as u16;
    let source = SourceSpec {
        channels,
        rate_hz,
        waveform: Waveform::Noise,
    };
    let main = bond_run(opts, &opts.links, source).await?;
    let baseline = if opts.baseline && opts.links.len() > 1 {
        let fastest = opts
            .links
            .iter()
            .copied()
            .max_by(|a, b| a.mbit_s.total_cmp(&b.mbit_s))
            .context("a link")?;
        Some(bond_run(opts, &[fastest], source).await?)
    } else {
        None
    };
    Ok(BondBench {
        goodput_mbit_s: main.goodput_mbit_s,
        capacity_sum_mbit_s: main.capacity_sum_mbit_s,
        efficiency: main.efficiency,
        goal_efficiency: 0.9,
        goal_met: main.efficiency >= 0.9,
        offered_mbit_s: main.offered_mbit_s,
        wire_mbit_s: main.wire_mbit_s,
        wire_overhead: main.wire_overhead,
        mean_batch_bytes: main.mean_batch_bytes,
        links: main.links.clone(),
        ratio_to_single_link: baseline
            .as_ref()
            .filter(|b| b.goodput_mbit_s > 0.0)
            .map(|b| round2(main.goodput_mbit_s / b.goodput_mbit_s)),
        baseline_single_link: baseline,
        channels,
        rate_hz,
        max_samples: opts
            .max_samples
            .unwrap_or(BatchConfig::default().max_samples),
        window_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
    })
}

async fn bond_run(opts: &BondOptions, links: &[LinkSpec], source: SourceSpec) -> Result<BondRun> {
    let world = World::start(opts.broker, opts.dir.as_deref(), links, "bond").await?;
    let mut cfg = world.config(&[source], 4096);
    if let Some(m) = opts.max_samples {
        cfg.batch.max_samples = m.clamp(1, 1_000_000);
    }
    let d = world.daemon(cfg)?;
    tokio::time::sleep(opts.warmup).await;
    let w0 = crate::now_us();
    let c0: Vec<u64> = world.links.iter().map(|l| l.counters().bytes_up).collect();
    tokio::time::sleep(opts.duration).await;
    let w1 = crate::now_us();
    let c1: Vec<u64> = world.links.iter().map(|l| l.counters().bytes_up).collect();
    let status = stop_daemon(d).await?;
    let secs = (w1 - w0) as f64 / 1e6;
    let log = world
        .trace
        .lock()
        .map_err(|_| anyhow::anyhow!("trace lock"))?;
    let mut per_link = vec![(0u64, 0u64); links.len()];
    let (mut offered, mut acked_bytes, mut acked_n) = (0u64, 0u64, 0u64);
    for b in log.batches.values() {
        if b.queued_us >= w0 && b.queued_us < w1 {
            offered += b.bytes;
        }
        if let Some((l, a)) = b.first_ack
            && a >= w0
            && a < w1
        {
            acked_bytes += b.bytes;
            acked_n += 1;
            if let Some(p) = per_link.get_mut(l) {
                p.0 += b.bytes;
                p.1 += 1;
            }
        }
    }
    drop(log);
    let mbit = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
    let cap: f64 = links.iter().map(|l| l.mbit_s).sum();
    let goodput = mbit(acked_bytes);
    let wire: u64 = c1.iter().zip(&c0).map(|(a, b)| a - b).sum();
    let run = BondRun {
        goodput_mbit_s: round2(goodput),
        capacity_sum_mbit_s: cap,
        efficiency: (goodput / cap * 1000.0).round() / 1000.0,
        offered_mbit_s: round2(mbit(offered)),
        wire_mbit_s: round2(mbit(wire)),
        wire_overhead: if acked_bytes > 0 {
            (wire as f64 / acked_bytes as f64 - 1.0).max(0.0) * 1000.0 / 1000.0
        } else {
            0.0
        },
        mean_batch_bytes: (acked_bytes as f64 / acked_n.max(1) as f64).round(),
        links: links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let g = mbit(per_link[i].0);
                let w = mbit(c1[i] - c0[i]);
                let st = status.links.get(i);
                BondLink {
                    name: format!("link{i}"),
                    capacity_mbit_s: l.mbit_s,
                    rtt_ms: l.rtt_ms,
                    share: if acked_bytes > 0 {
                        (per_link[i].0 as f64 / acked_bytes as f64 * 1000.0).round() / 1000.0
                    } else {
                        0.0
                    },
                    goodput_mbit_s: round2(g),
                    wire_mbit_s: round2(w),
                    utilisation: (w / l.mbit_s * 1000.0).round() / 1000.0,
                    batches_acked: per_link[i].1,
                    batches_moved: st.map_or(0, |s| s.counters.moved),
                }
            })
            .collect(),
    };
    world.finish();
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// bench live

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub broker: Option<SocketAddr>,
    pub dir: Option<PathBuf>,
    /// Backlog pre-filled into the queue, in time of the live source's data.
    pub backlog: Duration,
    pub links: Vec<LinkSpec>,
    pub source: SourceSpec,
    /// Live data keeps flowing this long after the backlog has drained.
    pub tail: Duration,
    /// Give up waiting for the drain after this long.
    pub max_time: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            broker: None,
            dir: None,
            backlog: Duration::from_secs(600),
            links: parse_links("10:60,10:60,10:60").unwrap_or_default(),
            source: SourceSpec {
                channels: 20,
                rate_hz: 1000,
                waveform: Waveform::Sine,
            },
            tail: Duration::from_secs(5),
            max_time: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveBench {
    /// Last sample of a live batch → the receiver wrote it.
    pub live_latency_ms_p50: Option<f64>,
    pub live_latency_ms_p99: Option<f64>,
    /// Daemon start → the last backlog batch acknowledged; `null` if it did not drain in time.
    pub backlog_drain_s: Option<f64>,
    pub batch_window_ms: u64,
    /// Largest RTT of the links.
    pub rtt_ms: f64,
    /// Goal: p99 ≤ batch window + 2 × RTT + 50 ms.
    pub goal_p99_ms: f64,
    pub goal_met: bool,
    /// Last sample of a live batch → the broker's PUBACK reached the daemon (same batches while
    /// the backlog drained): the agent's part of the latency, without the receiver.
    pub live_ack_latency_ms_p50: Option<f64>,
    pub live_ack_latency_ms_p99: Option<f64>,
    /// The same figures over the live batches created while the backlog was draining.
    pub live_ack_latency_ms_p99_during_drain: Option<f64>,
    pub backlog_batches: u64,
    pub backlog_mib: f64,
    pub backlog_prefill_s: f64,
    pub live_batches: u64,
    pub lost_batches: u64,
    pub duplicates_delivered_after_dedup: u64,
    pub capacity_sum_mbit_s: f64,
    pub live_mbit_s: f64,
    pub links: Vec<LinkSpec>,
    pub channels: u16,
    pub rate_hz: u32,
}

/// What [`prefill`] wrote: batches, bytes, and each batch with its sample count.
struct Prefilled {
    batches: u64,
    bytes: u64,
    ids: Vec<(BatchId, u32)>,
}

/// Writes `span` of the source's data, ending now, into the queue at `dir` under `vehicle`.
fn prefill(dir: &Path, vehicle: &str, source: SourceSpec, span: Duration) -> Result<Prefilled> {
    let (mut q, _) = Queue::open(QueueOptions {
        vehicle: vehicle.to_string(),
        cap_bytes: 8 << 30,
        ..QueueOptions::new(dir)
    })
    .context("cannot open the bench queue")?;
    let cfg = BatchConfig::default();
    let end = crate::now_us();
    let start = end.saturating_sub(span.as_micros() as u64);
    let mut g = Synthetic::new(
        SyntheticSpec {
            channels: source.channels,
            rate_hz: source.rate_hz,
            waveform: source.waveform,
        },
        start,
    );
    let window = cfg.window_ms * 1000;
    let mut t = start;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut ids = Vec::new();
    let mut buf = Vec::new();
    while t < end {
        t = (t + window).min(end);
        buf.clear();
        g.poll(t, u64::MAX, &mut buf);
        for chunk in buf.chunks(cfg.max_samples.max(1)) {
            let readings: Vec<sensor_drivers::Reading> =
                chunk.iter().copied().map(Into::into).collect();
            let meta = BatchMeta::of_readings(&readings);
            let (res, _) = q.append(meta, |id| {
                codec::encode_version(
                    &codec::data_envelope_for(cfg.format_version, vehicle, id, "synth0", chunk),
                    cfg.format_version,
                )
            });
            if let Some((id, p)) = res {
                n += 1;
                bytes += p.len() as u64;
                ids.push((id, meta.samples));
            }
        }
        if q.wants_sync() {
            q.sync().context("queue sync")?;
        }
    }
    q.sync().context("queue sync")?;
    Ok(Prefilled {
        batches: n,
        bytes,
        ids,
    })
}

/// A pre-filled backlog draining while live data flows.
pub async fn live(opts: &LiveOptions) -> Result<LiveBench> {
    let world = World::start(opts.broker, opts.dir.as_deref(), &opts.links, "live").await?;
    let cfg = world.config(&[opts.source], 8192);
    // The backlog is written under a vehicle name of its own, so the receiver's per-vehicle
    // latency figures cover live batches only.
    let backlog_vehicle = format!("{}-backlog", world.vehicle);
    let t_prefill = Instant::now();
    let Prefilled {
        batches: backlog_batches,
        bytes: backlog_bytes,
        ids: backlog_ids,
    } = {
        let dir = cfg.queue.dir.clone();
        let v = backlog_vehicle.clone();
        let src = opts.source;
        let span = opts.backlog;
        tokio::task::spawn_blocking(move || prefill(&dir, &v, src, span))
            .await
            .context("prefill task")??
    };
    let backlog_prefill_s = t_prefill.elapsed().as_secs_f64();
    let backlog_run = backlog_ids.first().map(|(id, _)| id.run);
    let rx = world
        .receiver(&format!("{}/+/batch", cfg.broker.topic_prefix))
        .await?;
    let window_ms = cfg.batch.window_ms;
    let started_us = crate::now_us();
    let started = Instant::now();
    let d = world.daemon(cfg)?;
    // Wait for the backlog to drain.
    let mut drained_at: Option<u64> = None;
    while started.elapsed() < opts.max_time {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = world
            .trace
            .lock()
            .map_err(|_| anyhow::anyhow!("trace lock"))?;
        let mut done = 0u64;
        let mut last = 0u64;
        for (id, _) in &backlog_ids {
            if let Some((_, a)) = log.batches.get(id).and_then(|b| b.first_ack) {
                done += 1;
                last = last.max(a);
            }
        }
        if done == backlog_batches {
            drained_at = Some(last);
            break;
        }
    }
    tokio::time::sleep(opts.tail).await;
    let status = stop_daemon(d).await?;
    let delivered = status.queue.stats.delivered_batches + backlog_batches;
    let (rsum, out) = rx.stop_when(delivered, Duration::from_secs(5)).await?;
    let lines = lines_per_batch(&out)?;
    let log = world
        .trace
        .lock()
        .map_err(|_| anyhow::anyhow!("trace lock"))?;
    let live_v = rsum
        .vehicles
        .get(&world.vehicle)
        .cloned()
        .unwrap_or_default();
    let del_live = delivery(&log, &lines, &world.vehicle, live_v.evicted_batches);
    // Backlog batches: checked against the output under the backlog vehicle.
    let mut lost = del_live.lost_batches;
    let mut dups = del_live.duplicate_samples;
    for (id, samples) in &backlog_ids {
        match lines
            .get(&(backlog_vehicle.clone(), *id))
            .copied()
            .unwrap_or(0)
        {
            0 => lost += 1,
            n if n > u64::from(*samples) => dups += n - u64::from(*samples),
            _ => {}
        }
    }
    // The agent's part: sample time → PUBACK, live batches only.
    let mut ack_lat = Vec::new();
    let mut ack_lat_drain = Vec::new();
    let mut live_bytes = 0u64;
    for (id, b) in &log.batches {
        if b.samples == 0 || Some(id.run) == backlog_run {
            continue;
        }
        live_bytes += b.bytes;
        if let Some((_, a)) = b.first_ack {
            // Queued when its window closed, i.e. at its last sample (plus a core tick).
            let l = a.saturating_sub(b.queued_us) as f64 / 1000.0;
            ack_lat.push(l);
            if drained_at.is_some_and(|d| b.queued_us <= d) {
                ack_lat_drain.push(l);
            }
        }
    }
    drop(log);
    ack_lat.sort_by(f64::total_cmp);
    ack_lat_drain.sort_by(f64::total_cmp);
    let rtt_ms = opts.links.iter().map(|l| l.rtt_ms).fold(0.0, f64::max);
    let goal = window_ms as f64 + 2.0 * rtt_ms + 50.0;
    let elapsed = started.elapsed().as_secs_f64();
    let r = LiveBench {
        live_latency_ms_p50: live_v.latency_ms_p50.map(round2),
        live_latency_ms_p99: live_v.latency_ms_p99.map(round2),
        backlog_drain_s: drained_at.map(|d| round2(d.saturating_sub(started_us) as f64 / 1e6)),
        batch_window_ms: window_ms,
        rtt_ms,
        goal_p99_ms: goal,
        goal_met: live_v.latency_ms_p99.is_some_and(|p| p <= goal) && drained_at.is_some(),
        live_ack_latency_ms_p50: quantile(&ack_lat, 0.5).map(round2),
        live_ack_latency_ms_p99: quantile(&ack_lat, 0.99).map(round2),
        live_ack_latency_ms_p99_during_drain: quantile(&ack_lat_drain, 0.99).map(round2),
        backlog_batches,
        backlog_mib: round2(backlog_bytes as f64 / f64::from(1u32 << 20)),
        backlog_prefill_s: round2(backlog_prefill_s),
        live_batches: del_live.data_batches,
        lost_batches: lost,
        duplicates_delivered_after_dedup: dups,
        capacity_sum_mbit_s: opts.links.iter().map(|l| l.mbit_s).sum(),
        live_mbit_s: round2(live_bytes as f64 * 8.0 / elapsed / 1e6),
        links: world.link_params(),
        channels: opts.source.channels,
        rate_hz: opts.source.rate_hz,
    };
    world.finish();
    Ok(r)
}

/// Summaries for a person (stderr without `--json`).
pub fn render_failover(r: &FailoverBench) -> String {
    format!(
        "failover: {} blackholes, p50 {:?} ms, max {:?} ms (goal ≤ 500); lost {}, duplicates {}; {} batches, {} moved\n",
        r.blackholes,
        r.failover_ms_p50,
        r.failover_ms_max,
        r.lost_batches,
        r.duplicates_delivered_after_dedup,
        r.data_batches,
        r.batches_moved
    )
}

pub fn render_bond(r: &BondBench) -> String {
    let mut s = format!(
        "bond: goodput {:.2} Mbit/s of {:.1} (efficiency {:.3}, goal ≥ 0.90); offered {:.2}\n",
        r.goodput_mbit_s, r.capacity_sum_mbit_s, r.efficiency, r.offered_mbit_s
    );
    for l in &r.links {
        s.push_str(&format!(
            "  {} {} Mbit/s {} ms: share {:.3}, goodput {:.2}, wire {:.2}\n",
            l.name, l.capacity_mbit_s, l.rtt_ms, l.share, l.goodput_mbit_s, l.wire_mbit_s
        ));
    }
    s
}

pub fn render_live(r: &LiveBench) -> String {
    format!(
        "live: p50 {:?} ms, p99 {:?} ms (goal ≤ {} ms: {}); backlog {} batches drained in {:?} s\n",
        r.live_latency_ms_p50,
        r.live_latency_ms_p99,
        r.goal_p99_ms,
        if r.goal_met { "met" } else { "not met" },
        r.backlog_batches,
        r.backlog_drain_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_and_bad_ones_are_named() {
        let v = parse_links("2:30,5:60,10:150").expect("valid");
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[2],
            LinkSpec {
                mbit_s: 10.0,
                rtt_ms: 150.0
            }
        );
        assert!(
            parse_links("2")
                .expect_err("no rtt")
                .contains("MBIT:RTT_MS")
        );
        assert!(parse_links("x:1").expect_err("bad").contains("'x'"));
        assert!(parse_links("0:10").is_err());
        assert!(parse_links("").is_err());
    }

    fn id(seq: u64) -> BatchId {
        BatchId { run: 1, seq }
    }

    #[test]
    fn blackhole_counts_in_flight_and_later_sends_until_their_first_ack() {
        let mut log = TraceLog::default();
        let q = |id, samples| TraceEvent::Queued {
            id,
            at_us: 0,
            samples,
            bytes: 10,
        };
        let s = |link, id, at_us| TraceEvent::Sent {
            link,
            id,
            at_us,
            bytes: 10,
        };
        let a = |link, id, at_us| TraceEvent::Acked { link, id, at_us };
        for e in [
            q(id(1), 5),
            q(id(2), 5),
            q(id(3), 5),
            q(id(4), 5),
            // Acked before the blackhole at 1000: not affected.
            s(0, id(1), 100),
            a(0, id(1), 900),
            // In flight at the blackhole; moved, acked on link 1 at 1300.
            s(0, id(2), 800),
            s(1, id(2), 1200),
            a(1, id(2), 1300),
            // Sent into the blackhole; acked on link 2 at 1600.
            s(0, id(3), 1100),
            s(2, id(3), 1400),
            a(2, id(3), 1600),
            // Another link only.
            s(1, id(4), 1100),
            a(1, id(4), 5000),
        ] {
            log.on(e);
        }
        let b = blackhole_figures(&log, 0, 1000, 3000);
        assert_eq!(b.affected, 2);
        assert_eq!(b.failover_ms, 0.6);
        assert_eq!(b.resent_ms, 0.4);
        assert_eq!((b.acked_on_same_link, b.never_acked), (0, 0));
        assert_eq!(log.busiest_since(0), Some(1));
    }

    #[test]
    fn delivery_finds_lost_and_duplicated_batches_from_output_lines() {
        let mut log = TraceLog::default();
        for seq in 1..=3 {
            log.on(TraceEvent::Queued {
                id: id(seq),
                at_us: 0,
                samples: 4,
                bytes: 1,
            });
        }
        let mut lines = HashMap::new();
        lines.insert(("v".to_string(), id(1)), 4);
        lines.insert(("v".to_string(), id(2)), 8);
        let d = delivery(&log, &lines, "v", 0);
        assert_eq!(d.lost_batches, 1);
        assert_eq!(d.duplicate_samples, 4);
        assert_eq!(d.samples_written, 12);
    }

    #[test]
    fn output_lines_are_counted_per_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("o.jsonl");
        std::fs::write(
            &p,
            "{\"event\":\"run\",\"vehicle\":\"v\",\"run\":1,\"seq\":0}\n\
             {\"vehicle\":\"v\",\"run\":1,\"seq\":1,\"source\":\"s\",\"ch\":0,\"t_us\":1,\"v\":1}\n\
             {\"vehicle\":\"v\",\"run\":1,\"seq\":1,\"source\":\"s\",\"ch\":1,\"t_us\":1,\"v\":1}\n\
             {\"vehicle\":\"w\",\"run\":2,\"seq\":12,\"source\":\"s\",\"ch\":1,\"t_us\":1,\"v\":1}\n\
             {\"vehicle\":\"v\",\"run\":1,\"seq\":1,\"source\":\"s\",\"ch\":1,\"t_us\":1,\"v\":1}\n",
        )
        .expect("write");
        let m = lines_per_batch(&p).expect("read");
        assert_eq!(m.get(&("v".into(), id(1))), Some(&3));
        assert_eq!(m.get(&("w".into(), BatchId { run: 2, seq: 12 })), Some(&1));
        assert_eq!(m.len(), 2);
    }
}
