//! `pitlink bench chaos`: the whole system under fire.
//!
//! The real agent as a child process (`pitlink run`), a real Mosquitto, the track world with
//! three simulated modems, a GPS and one emulated link per modem, a line sensor on a PTY, the
//! RAV4 capture replayed in a loop (with malformed lines mixed in), synthetic channels at 1 kHz
//! and the receiver (in this process, writing CSV). While it runs, a seeded [`plan::Plan`]
//! SIGKILLs and restarts the agent (tearing the queue's tail now and then), restarts the
//! broker, blackholes, resets and flaps links, fills the queue's filesystem, injects malformed
//! input into every source, the modems and the telemetry topic, and reloads a changed
//! configuration with SIGHUP. Then the world heals, the agent drains its backlog and stops,
//! and the [`oracle`] checks what the receiver got.
//!
//! The disk-full episodes need a filesystem of their own for the queue: a tmpfs this bench
//! mounts, which needs root. Without it they are skipped and the report says so.

pub mod oracle;
pub mod plan;

use crate::config::{Config, SourceConfig, SourceKind};
use crate::receive::{self, ReceiveOptions, ReceiveSummary};
use anyhow::{Context, Result, bail};
use modem_hal::sim::drive::SimWorld;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oracle::{Excuses, Graceful, GridSource};
use plan::{Fault, Plan, Target, Torn};
use sensor_drivers::synthetic::Waveform;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

use crate::demo::broker::{BrokerOptions, Mosquitto};

const VEHICLE: &str = "chaos-car";
/// The queue's tmpfs; the cap leaves room for the receiver-side backlog of a broker outage.
const TMPFS_MIB: u64 = 512;
const QUEUE_MAX_MB: u64 = 384;
/// What a disk-full episode leaves free: less than a segment, so writes fail until it ends.
const DISK_FULL_ROOM: u64 = 640 << 10;
/// The receiver's output is complete once nothing new arrived for this long after the stop.
const QUIET: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// How long faults are injected (the drain and the checks come after).
    pub duration: Duration,
    pub seed: Option<u64>,
    /// Working directory (default: a temporary one, removed afterwards).
    pub dir: Option<PathBuf>,
    /// Synthetic channels in all (split over three sources) and their rate.
    pub channels: u16,
    pub rate_hz: u32,
    /// The candump log replayed (default: the RAV4 capture of the shared test data).
    pub candump: Option<PathBuf>,
    /// A progress line on stderr every 10 s.
    pub progress: bool,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            duration: Duration::from_secs(120),
            seed: None,
            dir: None,
            channels: 300,
            rate_hz: 1000,
            candump: None,
            progress: true,
        }
    }
}

/// The report (`--json`). The first six fields are the issue's; the rest say where they come
/// from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosBench {
    /// SIGKILLs of the agent.
    pub kills: u64,
    /// Faults injected, all kinds (kills included).
    pub faults: u64,
    /// Samples and frames the receiver wrote (rows of its CSV output).
    pub samples: u64,
    /// Durable batches neither delivered nor reported evicted / lost in a crash, plus
    /// synthetic samples missing from their grid where no reported event explains it.
    pub lost_unaccounted: u64,
    /// Samples written more than once after the receiver's deduplication.
    pub duplicates_after_dedup: u64,
    /// Peak resident memory of the agent (VmHWM, highest over its lives).
    pub rss_mib_max: f64,

    pub seed: u64,
    pub minutes: f64,
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Faults the plan had that could not be injected here (and why).
    pub skipped: Vec<String>,
    pub synthetic_channels: u32,
    pub rate_hz: u32,
    /// Runs of the agent's queue the receiver saw (one per start and per reload).
    pub runs: u64,
    pub lost_unaccounted_batches: u64,
    pub lost_unaccounted_samples: u64,
    /// Reported by the receiver: batches above a crashed run's durable end that never came.
    pub lost_in_crash_batches: u64,
    pub evicted_batches: u64,
    /// Samples the agent could not queue (disk full) and reported in gap notices.
    pub dropped_samples_reported: u64,
    /// Synthetic samples missing where a crash, reload, disk-full episode or gap notice
    /// explains it (never generated while the agent was down, or reported).
    pub explained_missing_samples: u64,
    pub wrong_values: u64,
    pub duplicate_batches_dropped: u64,
    /// Malformed wire payloads the receiver counted (and skipped).
    pub bad_payloads: u64,
    /// Input each source counted as malformed (summed over the agent's lives).
    pub malformed_by_source: BTreeMap<String, u64>,
    /// Readings sources dropped because the agent could not keep up.
    pub source_drops: u64,
    /// Whether every gracefully ended run's sequence count matches the receiver's accounting.
    pub sender_receiver_agree: bool,
    pub disagreements: Vec<String>,
    pub unannounced_runs: u64,
    /// "panicked" lines in the agent's logs.
    pub panics: u64,
    /// Times the agent exited without being killed or stopped.
    pub unexpected_exits: u64,
    /// Whether the final graceful stop exited 0 with nothing left undelivered.
    pub clean_stop: bool,
    pub samples_by_source: BTreeMap<String, u64>,
    pub holes: Vec<String>,
    pub elapsed_s: f64,
    /// The working directory, when kept (`--dir`).
    pub dir: Option<PathBuf>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A tmpfs mounted for the queue; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, mib: u64) -> Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .context("cannot run mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)?;
    Ok(st.blocks_available() * st.fragment_size())
}

/// Fills the filesystem of `dir` up to `room` free bytes with a file that really occupies it.
fn fill(file: &Path, room: u64) -> Result<()> {
    let dir = file.parent().context("filler path")?;
    let want = free_bytes(dir)?.saturating_sub(room);
    let mut f = std::fs::File::create(file)?;
    let block = vec![0u8; 1 << 20];
    let mut left = want;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        match f.write_all(&block[..n]) {
            Ok(()) => left -= n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e).with_context(|| file.display().to_string()),
        }
    }
    Ok(())
}

/// Tears the tail of the newest segment in `queue`: garbage, or a record header that promises
/// more than follows (what a write cut short by a crash leaves).
fn tear_tail(queue: &Path, how: Torn, rng: &mut crate::bench::crash::XorShift) -> Result<u64> {
    let newest = std::fs::read_dir(queue)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max();
    let Some(seg) = newest else { return Ok(0) };
    let mut bytes: Vec<u8> = Vec::new();
    match how {
        Torn::Garbage => {
            let n = rng.range(1, 4096) as usize;
            bytes.extend(std::iter::repeat_with(|| rng.next_u64() as u8).take(n));
        }
        Torn::PartialRecord => {
            // len, crc, run, seq, then a fraction of the promised payload.
            bytes.extend_from_slice(&5000u32.to_le_bytes());
            bytes.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
            bytes.extend_from_slice(&u32::MAX.to_le_bytes());
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
            bytes.extend(std::iter::repeat_n(0xA5u8, rng.range(0, 2000) as usize));
        }
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg)?;
    f.write_all(&bytes)?;
    Ok(bytes.len() as u64)
}

/// The candump log with malformed lines mixed in every 97 lines.
fn spoil_candump(src: &Path, dst: &Path) -> Result<u64> {
    const BAD: [&str; 4] = [
        "(1.0) can0 12G#00",
        "garbage line without a frame",
        "(1605.5) can0 123#0011223",
        "(x) can0 7DF#",
    ];
    let f = std::fs::File::open(src).with_context(|| src.display().to_string())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst)?);
    let mut bad = 0u64;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        writeln!(out, "{line}")?;
        if i % 97 == 96 {
            writeln!(out, "{}", BAD[(i / 97) % BAD.len()])?;
            bad += 1;
        }
    }
    out.flush()?;
    Ok(bad)
}

/// The three synthetic sources' names, waveforms and channel counts for `channels` in all.
fn synthetic_split(channels: u16) -> [(&'static str, Waveform, u16); 3] {
    let a = channels / 2;
    let b = channels / 3;
    let c = channels.saturating_sub(a + b).max(1);
    [
        ("engine", Waveform::Sine, a.max(1)),
        ("chassis", Waveform::Saw, b.max(1)),
        ("suspension", Waveform::Noise, c),
    ]
}

fn chaos_config(
    dir: &Path,
    queue_dir: &Path,
    broker: &Path,
    world: &SimWorld,
    line: &Path,
    can: Option<&Path>,
    opts: &ChaosOptions,
) -> Config {
    let mut cfg = crate::demo::demo_config(dir, broker, world, None);
    cfg.vehicle = VEHICLE.into();
    cfg.queue.dir = queue_dir.to_owned();
    cfg.queue.max_mb = QUEUE_MAX_MB;
    cfg.queue.segment_mb = 4;
    cfg.broker.keep_alive_s = 2;
    let mut sources: Vec<SourceConfig> = synthetic_split(opts.channels)
        .into_iter()
        .map(|(name, w, n)| SourceConfig {
            channels: Some(n),
            rate_hz: Some(opts.rate_hz),
            waveform: Some(w),
            ..SourceConfig::new(name, SourceKind::Synthetic)
        })
        .collect();
    sources.push(SourceConfig {
        device: Some(world.gps_path().to_path_buf()),
        ..SourceConfig::new("gps", SourceKind::Nmea)
    });
    sources.push(SourceConfig {
        device: Some(line.to_owned()),
        fields: Some(modem_hal::sim::line::FIELDS.into()),
        ..SourceConfig::new("oil", SourceKind::Line)
    });
    if let Some(log) = can {
        sources.push(SourceConfig {
            path: Some(log.to_owned()),
            looped: Some(true),
            ..SourceConfig::new("can0", SourceKind::Candump)
        });
    }
    cfg.sources = sources;
    cfg
}

/// Writes `cfg` as the agent's TOML file; `variant` changes what a reload changes.
fn write_config(path: &Path, cfg: &Config, variant: u32) -> Result<()> {
    let mut c = cfg.clone();
    if variant % 2 == 1 {
        c.queue.flush_ms = 200;
        c.towers.rules.min_dwell += Duration::from_secs(5);
    }
    let text = toml::to_string(&c).context("the chaos configuration as TOML")?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// One life of the agent.
struct Agent {
    child: Child,
    log: PathBuf,
    /// Queue run, from the last status that answered.
    run: Option<u32>,
}

impl Agent {
    fn spawn(config: &Path, log: PathBuf) -> Result<Agent> {
        let err = std::fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("PITLINK_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("cannot start the agent")?;
        Ok(Agent {
            child,
            log,
            run: None,
        })
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Peak resident memory in MiB (VmHWM).
    fn rss_mib(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = s
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

/// Things to do later.
#[derive(Debug, Clone, Copy)]
enum Later {
    StartAgent,
    LinkUp(usize),
    BrokerUp,
    FreeDisk,
}

/// Counters per run, from the last status each run answered.
#[derive(Debug, Default, Clone)]
struct RunSeen {
    malformed: BTreeMap<String, u64>,
    drops: u64,
}

/// The number after `key=` in a log line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    let pat = format!("{key}=");
    let at = line.find(&pat)? + pat.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// The pipelines a log shows stopping gracefully, and its panic lines.
fn read_log(log: &str) -> (Vec<Graceful>, u64) {
    let mut out = Vec::new();
    let mut run = None;
    let mut panics = 0;
    for l in log.lines() {
        if l.contains("queue recovered") {
            run = field(l, "run").and_then(|r| u32::try_from(r).ok());
        } else if l.contains("core stopped")
            && let (Some(r), Some(seqs)) = (run.take(), field(l, "seqs"))
        {
            out.push(Graceful { run: r, seqs });
        }
        if l.contains("panicked") {
            panics += 1;
        }
    }
    (out, panics)
}

/// Publishes a payload that is not a batch on the telemetry topic.
async fn publish_junk(addr: std::net::SocketAddr, n: u64) -> Result<()> {
    let mut o = rumqttc::MqttOptions::new(
        format!("chaos-junk-{n}"),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = rumqttc::AsyncClient::new(o, 4);
    let payload: Vec<u8> = match n % 3 {
        0 => b"not a batch at all".to_vec(),
        1 => vec![0xFF; 64],
        _ => {
            // Plausible start, then nonsense.
            let mut p = vec![1u8, 0, 0, 0];
            p.extend(std::iter::repeat_n(0x42, 200));
            p
        }
    };
    client
        .publish(
            format!("pitlink/{VEHICLE}/batch"),
            rumqttc::QoS::AtLeastOnce,
            false,
            payload,
        )
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), ev.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}

pub async fn chaos(opts: &ChaosOptions) -> Result<ChaosBench> {
    let started = Instant::now();
    let seed = opts.seed.unwrap_or_else(crate::bench::crash::clock_seed);
    let mut rng = crate::bench::crash::XorShift::new(seed);
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("pitlink-chaos-")
                .tempdir()?;
            tmp.path().to_owned()
        }
    };
    let say = |s: String| {
        if opts.progress {
            eprintln!("chaos: {s}");
        }
    };
    say(format!(
        "seed {seed} (replay: --seed {seed}), directory {}",
        dir.display()
    ));
    let mut report = ChaosBench {
        seed,
        minutes: opts.duration.as_secs_f64() / 60.0,
        synthetic_channels: u32::from(opts.channels),
        rate_hz: opts.rate_hz,
        dir: opts.dir.clone(),
        ..ChaosBench::default()
    };

    // The queue on a tmpfs of its own, for the disk-full episodes.
    let queue_dir = dir.join("queue");
    let tmpfs = match Tmpfs::mount(&queue_dir, TMPFS_MIB) {
        Ok(t) => Some(t),
        Err(e) => {
            report.skipped.push(format!(
                "disk_full: the queue needs a tmpfs of its own ({e}); run as root"
            ));
            std::fs::create_dir_all(&queue_dir)?;
            None
        }
    };

    let broker = Mosquitto::start(
        &dir.join("broker"),
        BrokerOptions {
            tcp: true,
            persistence: true,
            ..BrokerOptions::default()
        },
    )?;
    let tcp: std::net::SocketAddr = match broker.tcp_addr() {
        Some(crate::mqtt::BrokerAddr::Tcp { host, port }) => format!("{host}:{port}").parse()?,
        _ => bail!("the chaos broker has no TCP listener"),
    };
    let broker_socket = broker.socket().to_owned();
    let broker_addr = broker.addr();
    let broker = Arc::new(Mutex::new(broker));

    let world = Arc::new(
        SimWorld::start(
            modem_hal::sim::world::World::new(modem_hal::sim::scenario::Scenario::builtin()),
            &dir.join("modems"),
            modem_hal::sim::drive::WorldOptions {
                speed: 1.0,
                modem: modem_hal::sim::modem::SimConfig {
                    latency_scale: 0.5,
                    ..Default::default()
                },
                broker: Some(tcp),
                seed,
            },
        )
        .await
        .context("cannot start the simulated world")?,
    );
    let line = modem_hal::sim::line::SimLineSensor::spawn(&dir.join("modems").join("oil0"), 100.0)?;
    let candump = match &opts.candump {
        Some(p) => Some(p.clone()),
        None => crate::bench::ingest::default_input().ok(),
    };
    let can = match &candump {
        Some(src) => {
            let dst = dir.join("can0-spoiled.log");
            spoil_candump(src, &dst)?;
            Some(dst)
        }
        None => {
            report
                .skipped
                .push("can0: no candump log (pass --candump or provide ../shared/data)".into());
            None
        }
    };
    let cfg = chaos_config(
        &dir,
        &queue_dir,
        &broker_socket,
        &world,
        line.path(),
        can.as_deref(),
        opts,
    );
    let cfg_path = dir.join("pitlink.toml");
    let mut variant = 0u32;
    write_config(&cfg_path, &cfg, variant)?;
    Config::load(&cfg_path).context("the chaos configuration does not load back")?;
    let diag = cfg.diag.socket.clone();

    // The receiver first, so nothing is published before anyone listens.
    let csv_dir = dir.join("csv");
    let rx_stop = CancellationToken::new();
    let (rx_tx, rx_stats) = tokio::sync::watch::channel(ReceiveSummary::default());
    let receiver = tokio::spawn(receive::run(
        ReceiveOptions {
            client_id: "pitlink-chaos-receiver".into(),
            topic: format!("{}/+/batch", cfg.broker.topic_prefix),
            csv: Some(csv_dir.clone()),
            ..ReceiveOptions::new(broker_addr)
        },
        rx_stop.clone(),
        rx_tx,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx_stats.borrow().subscribes == 0 {
        if Instant::now() > deadline {
            bail!("the chaos receiver did not subscribe within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut plan = Plan::new(
        seed,
        opts.duration,
        world.links().len(),
        world.modems().len(),
    );
    let mut lives = 0u32;
    let log_of = |n: u32| dir.join(format!("agent-{n}.log"));
    let mut agent = Some(Agent::spawn(&cfg_path, log_of(lives))?);
    let mut logs = vec![log_of(lives)];
    let mut later: Vec<(Instant, Later)> = Vec::new();
    let mut excuses = Excuses {
        crash_window_us: 2_000_000,
        ..Excuses::default()
    };
    let mut disk_full_since: Option<u64> = None;
    let mut runs_seen: BTreeMap<u32, RunSeen> = BTreeMap::new();
    let mut rss_max = 0f64;
    let mut junk = 0u64;
    let mut modem_fault = 0u64;
    let mut pending_reload = false;
    let t0 = Instant::now();
    let mut last_poll = Instant::now();
    let mut last_say = Instant::now();
    let filler = queue_dir.join("filler");

    let count = |r: &mut ChaosBench, f: &Fault| {
        r.faults += 1;
        *r.faults_by_kind.entry(f.kind().to_string()).or_default() += 1;
    };

    while t0.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();

        // The agent exiting by itself is a failure; it is started again at once.
        if let Some(a) = agent.as_mut()
            && let Ok(Some(st)) = a.child.try_wait()
        {
            report.unexpected_exits += 1;
            excuses.crashes.push(now_us());
            say(format!(
                "the agent exited by itself ({st}); see {}",
                a.log.display()
            ));
            agent = None;
            later.push((now, Later::StartAgent));
        }

        // Deferred actions.
        let mut i = 0;
        while i < later.len() {
            if later[i].0 > now {
                i += 1;
                continue;
            }
            let (_, what) = later.swap_remove(i);
            match what {
                Later::StartAgent => {
                    if disk_full_since.is_some() {
                        later.push((now + Duration::from_millis(200), Later::StartAgent));
                    } else if agent.is_none() {
                        lives += 1;
                        logs.push(log_of(lives));
                        agent = Some(Agent::spawn(&cfg_path, log_of(lives))?);
                    }
                }
                Later::LinkUp(l) => world.fault(l, false),
                Later::BrokerUp => {
                    let b = broker.clone();
                    tokio::task::spawn_blocking(move || {
                        b.lock().unwrap_or_else(PoisonError::into_inner).restart()
                    })
                    .await??;
                }
                Later::FreeDisk => {
                    let _ = std::fs::remove_file(&filler);
                    if let Some(s) = disk_full_since.take() {
                        excuses.disk_full.push((s, now_us()));
                    }
                }
            }
        }

        // A pending reload waits for a running agent that has answered a status (before its
        // signal handlers are installed, SIGHUP would end it).
        if pending_reload
            && let Some(a) = agent.as_ref()
            && a.run.is_some()
        {
            variant += 1;
            write_config(&cfg_path, &cfg, variant)?;
            excuses.reloads.push(now_us());
            let _ = kill(a.pid(), Signal::SIGHUP);
            pending_reload = false;
        }

        for f in plan.due(t0.elapsed()) {
            match f {
                Fault::Kill { down, torn } => {
                    let Some(mut a) = agent.take() else {
                        continue; // already down
                    };
                    if let Some(r) = a.rss_mib() {
                        rss_max = rss_max.max(r);
                    }
                    excuses.crashes.push(now_us());
                    let _ = kill(a.pid(), Signal::SIGKILL);
                    let _ = a.child.wait();
                    report.kills += 1;
                    count(&mut report, &f);
                    if let Some(how) = torn {
                        tear_tail(&queue_dir, how, &mut rng)?;
                    }
                    later.push((now + down, Later::StartAgent));
                }
                Fault::BrokerRestart { down } => {
                    let b = broker.clone();
                    tokio::task::spawn_blocking(move || {
                        b.lock().unwrap_or_else(PoisonError::into_inner).stop()
                    })
                    .await?;
                    count(&mut report, &f);
                    later.push((now + down, Later::BrokerUp));
                }
                Fault::Blackhole { link, hold } => {
                    world.fault(link, true);
                    count(&mut report, &f);
                    later.push((now + hold, Later::LinkUp(link)));
                }
                Fault::Reset { link } => {
                    if let Some(l) = world.links().get(link) {
                        l.reset();
                        count(&mut report, &f);
                    }
                }
                Fault::Flap {
                    link,
                    times,
                    period,
                } => {
                    let w = world.clone();
                    tokio::spawn(async move {
                        for _ in 0..times {
                            w.fault(link, true);
                            tokio::time::sleep(period).await;
                            w.fault(link, false);
                            tokio::time::sleep(period).await;
                        }
                    });
                    count(&mut report, &f);
                }
                Fault::DiskFull { hold } => {
                    if tmpfs.is_none() || disk_full_since.is_some() {
                        continue;
                    }
                    fill(&filler, DISK_FULL_ROOM)?;
                    disk_full_since = Some(now_us());
                    count(&mut report, &f);
                    later.push((now + hold, Later::FreeDisk));
                }
                Fault::Malformed(target) => {
                    match target {
                        Target::Gps => world.gps().inject(
                            b"$GPRMC,123519,A,48\r\n\x00\xff\xfe\x01noise\r\n$GPGGA,1,2,3*ZZ\r\n",
                        ),
                        Target::Line => line.inject(b"oops,not,numbers\n\xff\xfe\x00\n12,3\n"),
                        Target::Modem(m) => {
                            if let Some(h) = world.modems().get(m) {
                                modem_fault += 1;
                                match modem_fault % 3 {
                                    0 => h.inject_garbage(b"\xff\x00\x13garbage\r\n"),
                                    1 => h.inject_urc_in_response("+QIURC: \"pdpdeact\",1"),
                                    _ => h.fail_next(100),
                                }
                            }
                        }
                        Target::Wire => {
                            junk += 1;
                            let n = junk;
                            tokio::spawn(async move {
                                let _ = publish_junk(tcp, n).await;
                            });
                        }
                    }
                    count(&mut report, &f);
                }
                Fault::Reload => {
                    pending_reload = true;
                    count(&mut report, &f);
                }
            }
        }

        // Status: the run, the sources' counters, memory.
        if now.duration_since(last_poll) >= Duration::from_millis(500)
            && let Some(a) = agent.as_mut()
        {
            last_poll = now;
            if let Some(r) = a.rss_mib() {
                rss_max = rss_max.max(r);
            }
            let d = diag.clone();
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(move || crate::diag::fetch(&d)),
            )
            .await
            .map(|j| j.unwrap_or_else(|e| Err(anyhow::anyhow!("{e}"))))
            {
                a.run = Some(s.queue.stats.run);
                let seen = runs_seen.entry(s.queue.stats.run).or_default();
                seen.malformed = s
                    .sources
                    .iter()
                    .map(|x| (x.name.clone(), x.counters.parse_errors))
                    .collect();
                seen.drops = s.sources.iter().map(|x| x.counters.drops).sum();
            }
        }
        if opts.progress && now.duration_since(last_say) >= Duration::from_secs(10) {
            last_say = now;
            let r = rx_stats.borrow().clone();
            let v = r.vehicles.get(VEHICLE);
            say(format!(
                "{:>4.0} s  kills {}  faults {}  agent {}  received {} batches, {} samples",
                t0.elapsed().as_secs_f64(),
                report.kills,
                report.faults,
                agent
                    .as_ref()
                    .and_then(|a| a.run)
                    .map_or("down".into(), |r| format!("run {r}")),
                v.map_or(0, |v| v.batches),
                v.map_or(0, |v| v.samples),
            ));
        }
    }

    // Heal: links up, disk free, broker up, the agent running.
    say("healing: links up, disk free, broker up".into());
    for i in 0..world.links().len() {
        world.fault(i, false);
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // flaps end
    for i in 0..world.links().len() {
        world.fault(i, false);
    }
    let _ = std::fs::remove_file(&filler);
    if let Some(s) = disk_full_since.take() {
        excuses.disk_full.push((s, now_us()));
    }
    {
        let b = broker.clone();
        tokio::task::spawn_blocking(move || {
            let mut b = b.lock().unwrap_or_else(PoisonError::into_inner);
            if b.pid().is_none() {
                b.restart()
            } else {
                Ok(())
            }
        })
        .await??;
    }
    let mut a = match agent.take() {
        Some(a) => a,
        None => {
            lives += 1;
            logs.push(log_of(lives));
            Agent::spawn(&cfg_path, log_of(lives))?
        }
    };

    // Drain: the backlog (anything older than this pipeline) delivered.
    say("draining the backlog".into());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(Some(st)) = a.child.try_wait() {
            report.unexpected_exits += 1;
            bail!(
                "the agent exited during the drain ({st}); see {}",
                a.log.display()
            );
        }
        if let Some(r) = a.rss_mib() {
            rss_max = rss_max.max(r);
        }
        let d = diag.clone();
        if let Ok(Ok(s)) = tokio::task::spawn_blocking(move || crate::diag::fetch(&d)).await {
            let seen = runs_seen.entry(s.queue.stats.run).or_default();
            seen.malformed = s
                .sources
                .iter()
                .map(|x| (x.name.clone(), x.counters.parse_errors))
                .collect();
            seen.drops = s.sources.iter().map(|x| x.counters.drops).sum();
            let backlog_done = s
                .queue
                .stats
                .oldest_undelivered_us
                .is_none_or(|t| t >= s.started_us);
            if backlog_done && s.queue.stats.delivered_batches > 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            say("the backlog was not delivered within 180 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = kill(a.pid(), Signal::SIGTERM);
    let stop_deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Ok(Some(st)) = a.child.try_wait() {
            break Some(st);
        }
        if Instant::now() > stop_deadline {
            let _ = a.child.kill();
            let _ = a.child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last_log = std::fs::read_to_string(&a.log).unwrap_or_default();
    let last_stop = last_log.lines().rev().find(|l| l.contains("core stopped"));
    report.clean_stop = status.is_some_and(|s| s.success())
        && last_stop.and_then(|l| field(l, "undelivered")) == Some(0);

    // The receiver: until nothing new arrives.
    say("waiting for the receiver to go quiet".into());
    let mut last = (Instant::now(), u64::MAX);
    loop {
        let got = rx_stats
            .borrow()
            .vehicles
            .values()
            .map(|v| v.batches + v.duplicate_batches)
            .sum::<u64>();
        if got != last.1 {
            last = (Instant::now(), got);
        } else if last.0.elapsed() >= QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx_stop.cancel();
    let rsum = receiver.await.context("receiver task")??;
    world.shutdown();
    drop(line);
    broker.lock().unwrap_or_else(PoisonError::into_inner).stop();

    // The agent's side: graceful pipelines and panics, over every life.
    let mut graceful = Vec::new();
    for l in &logs {
        let text = std::fs::read_to_string(l).unwrap_or_default();
        let (g, p) = read_log(&text);
        graceful.extend(g);
        report.panics += p;
    }

    // The oracle.
    say("checking what the receiver wrote".into());
    let v = rsum.vehicles.get(VEHICLE).cloned().unwrap_or_default();
    let runs = oracle::check_runs(&v, &graceful);
    excuses.gaps = oracle::read_gaps(&csv_dir.join(VEHICLE).join("events.csv"))?;
    let period = (1_000_000 + u64::from(opts.rate_hz) / 2) / u64::from(opts.rate_hz.max(1));
    let grids: BTreeMap<String, GridSource> = synthetic_split(opts.channels)
        .into_iter()
        .map(|(name, waveform, _)| {
            (
                name.to_string(),
                GridSource {
                    period_us: period,
                    waveform,
                },
            )
        })
        .collect();
    let samples = oracle::read_csv_dir(&csv_dir.join(VEHICLE), &grids, &excuses)?;

    report.samples = samples.rows;
    report.duplicates_after_dedup = samples.duplicates;
    report.lost_unaccounted_batches = runs.lost_unaccounted_batches;
    report.lost_unaccounted_samples = samples.unexplained_missing;
    report.lost_unaccounted = runs.lost_unaccounted_batches + samples.unexplained_missing;
    report.rss_mib_max = (rss_max * 10.0).round() / 10.0;
    report.runs = runs.runs;
    report.lost_in_crash_batches = runs.lost_in_crash_batches;
    report.evicted_batches = runs.evicted_batches;
    report.dropped_samples_reported = v.dropped_samples;
    report.explained_missing_samples = samples.explained_missing;
    report.wrong_values = samples.wrong_values;
    report.duplicate_batches_dropped = v.duplicate_batches;
    report.bad_payloads = rsum.bad_payloads;
    report.unannounced_runs = runs.unannounced_runs;
    report.disagreements = runs.disagreements;
    if samples.rows != v.samples {
        report.disagreements.push(format!(
            "the receiver counted {} samples but wrote {} rows",
            v.samples, samples.rows
        ));
    }
    if !graceful
        .iter()
        .any(|g| Some(g.run) == runs_seen.keys().last().copied())
    {
        report
            .disagreements
            .push("the last run has no graceful stop in its log".into());
    }
    report.sender_receiver_agree = report.disagreements.is_empty();
    for seen in runs_seen.values() {
        for (s, n) in &seen.malformed {
            *report.malformed_by_source.entry(s.clone()).or_default() += n;
        }
        report.source_drops += seen.drops;
    }
    report.samples_by_source = samples.by_source;
    report.holes = samples.holes;
    for k in plan::KINDS {
        report.faults_by_kind.entry(k.to_string()).or_default();
    }
    if tmpfs.is_none() {
        report.skipped.push(format!(
            "{} disk-full episodes of the plan",
            plan.counts()["disk_full"]
        ));
    }
    report.elapsed_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    drop(tmpfs);
    Ok(report)
}

pub fn render(r: &ChaosBench) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pitlink bench chaos: {:.1} min of faults, seed {}",
        r.minutes, r.seed
    );
    let _ = writeln!(
        o,
        "  kills {}  faults {}  ({})",
        r.kills,
        r.faults,
        r.faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(o, "  samples received        {}", r.samples);
    let _ = writeln!(
        o,
        "  lost, unaccounted       {}  ({} batches, {} samples)",
        r.lost_unaccounted, r.lost_unaccounted_batches, r.lost_unaccounted_samples
    );
    let _ = writeln!(o, "  duplicates after dedup  {}", r.duplicates_after_dedup);
    let _ = writeln!(
        o,
        "  reported: {} batches lost in crashes, {} evicted, {} samples dropped (disk full)",
        r.lost_in_crash_batches, r.evicted_batches, r.dropped_samples_reported
    );
    let _ = writeln!(
        o,
        "  runs {}  sender/receiver agree {}  panics {}  unexpected exits {}  clean stop {}",
        r.runs, r.sender_receiver_agree, r.panics, r.unexpected_exits, r.clean_stop
    );
    let _ = writeln!(o, "  agent RSS peak {:.1} MiB", r.rss_mib_max);
    for d in &r.disagreements {
        let _ = writeln!(o, "  DISAGREE {d}");
    }
    for h in &r.holes {
        let _ = writeln!(o, "  HOLE {h}");
    }
    for s in &r.skipped {
        let _ = writeln!(o, "  skipped: {s}");
    }
    o
}
