//! `pitlink bench footprint`: the agent's size and resource use as deployed. Binary sizes of the
//! stripped release builds, and the resident memory and CPU of a real `pitlink run` child
//! process (this executable) with a local Mosquitto as its broker: idle, and with a candump
//! replay looped at 160,000 frames/s through the whole pipeline (source → batcher → codec →
//! queue → link → broker).

use crate::demo::broker::{BrokerOptions, Mosquitto};
use anyhow::{Context, Result, bail};
use sensor_drivers::candump::{LogLine, parse_line};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FootprintOptions {
    /// Stripped release binaries to measure (`None`: the default cross/host release paths
    /// under `target/`, if present).
    pub amd64: Option<PathBuf>,
    pub arm64: Option<PathBuf>,
    /// The candump log replayed in the loaded phase (looped).
    pub input: PathBuf,
    /// Frames per second of the loaded phase.
    pub rate: u64,
    /// Length of the idle phase and of the loaded phase (each after `settle`).
    pub idle: Duration,
    pub loaded: Duration,
    /// Time given to each daemon to start and settle before measuring.
    pub settle: Duration,
    /// Scratch directory (default: the system temp directory).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FootprintBench {
    /// Stripped release binary sizes (null when that build was not found).
    pub binary_bytes_amd64: Option<u64>,
    pub binary_bytes_arm64: Option<u64>,
    /// The binary the daemon figures were measured with (this executable).
    pub daemon_binary: String,
    pub daemon_binary_bytes: u64,
    /// Resident memory of the idle daemon (one 1 Hz synthetic channel, one link up), MiB.
    pub rss_mib_idle: f64,
    /// CPU seconds per wall second of the idle daemon (1.0 = one core).
    pub cpu_fraction_idle: f64,
    /// Peak resident memory while `rate` frames/s go through the whole pipeline, MiB.
    pub rss_mib_at_160k: f64,
    /// CPU of the daemon in that phase (1.0 = one core).
    pub cpu_fraction_at_160k: f64,
    pub rate: u64,
    /// Frames per second the source actually handed over in the loaded phase.
    pub achieved_frames_per_s: f64,
    /// Batches the broker acknowledged in the loaded phase, and batches stored.
    pub delivered_batches: u64,
    pub appended_batches: u64,
    /// Readings the source dropped because the pipeline fell behind.
    pub dropped_readings: u64,
    pub idle_s: f64,
    pub loaded_s: f64,
}

/// The release binary of `triple` under `target/` (cwd or the workspace), if it exists.
fn default_binary(triple: &str) -> Option<PathBuf> {
    let rel = Path::new("target").join(triple).join("release/pitlink");
    [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&rel),
        rel.clone(),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn size_of(p: Option<&Path>) -> Result<Option<u64>> {
    p.map(|p| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .with_context(|| format!("cannot read {}", p.display()))
    })
    .transpose()
}

/// Frames per pass and the log's own frame rate.
fn log_rate(path: &Path) -> Result<(u64, f64)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let times: Vec<u64> = text
        .lines()
        .filter_map(|l| match parse_line(l) {
            Ok(LogLine::Frame(f)) => Some(f.timestamp.as_micros()),
            _ => None,
        })
        .collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) if b > a => Ok((
            times.len() as u64,
            times.len() as f64 / ((b - a) as f64 / 1e6),
        )),
        _ => bail!("{}: fewer than two timed frames", path.display()),
    }
}

/// CPU seconds (user + system) of `pid` so far, from /proc/<pid>/stat.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("malformed /proc stat field")
    };
    // utime and stime are fields 14 and 15 (1-based) of stat: 11 and 12 after the ')'.
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// `VmRSS` of `pid`, MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb as f64 / 1024.0)
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, broker: &Path, source: &str) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("pitlink.sock");
        let cfg = format!(
            "vehicle = \"car-footprint\"\n\n[queue]\ndir = \"{}\"\nmax_mb = 2048\n\n[broker]\nsocket = \"{}\"\n\n[diag]\nsocket = \"{}\"\n\n[[links]]\nname = \"l0\"\n\n{source}",
            dir.join("queue").display(),
            broker.display(),
            socket.display()
        );
        let path = dir.join("pitlink.toml");
        std::fs::write(&path, cfg)?;
        let log = dir.join("daemon.log");
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env("PITLINK_LOG", "warn")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start the daemon")?;
        Ok(Daemon { child, socket, log })
    }

    /// Waits until the link is up (or fails with the daemon's log).
    fn wait_up(&mut self, limit: Duration) -> Result<crate::diag::Status> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(st) = crate::diag::fetch(&self.socket)
                && st.links.iter().all(|l| l.state == "up")
            {
                return Ok(st);
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "the daemon exited ({st}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("the daemon's link did not come up within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

fn source_readings(st: &crate::diag::Status) -> (u64, u64) {
    st.sources.iter().fold((0, 0), |(r, d), s| {
        (r + s.counters.readings, d + s.counters.drops)
    })
}

/// Runs the measurements; see the module doc.
pub fn footprint(opts: &FootprintOptions) -> Result<FootprintBench> {
    let amd64 = opts
        .amd64
        .clone()
        .or_else(|| default_binary("x86_64-unknown-linux-gnu"));
    let arm64 = opts
        .arm64
        .clone()
        .or_else(|| default_binary("aarch64-unknown-linux-gnu"));
    let exe = std::env::current_exe()?;
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("pitlink-bench-footprint-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a scratch directory in {}", base.display()))?;
    let broker = Mosquitto::start(&tmp.path().join("broker"), BrokerOptions::default())?;

    // Idle: one 1 Hz channel, the link up.
    let mut idle = Daemon::start(
        &tmp.path().join("idle"),
        broker.socket(),
        "[[sources]]\nname = \"idle\"\nkind = \"synthetic\"\nchannels = 1\nrate_hz = 1\n",
    )?;
    idle.wait_up(Duration::from_secs(20))?;
    std::thread::sleep(opts.settle);
    let c0 = cpu_secs(idle.pid())?;
    let t0 = Instant::now();
    std::thread::sleep(opts.idle);
    let idle_s = t0.elapsed().as_secs_f64();
    let cpu_fraction_idle = (cpu_secs(idle.pid())? - c0) / idle_s;
    let rss_mib_idle = rss_mib(idle.pid())?;
    drop(idle);

    // Loaded: the candump log looped at `rate` frames/s.
    let (_, native) = log_rate(&opts.input)?;
    let factor = opts.rate as f64 / native;
    let mut busy = Daemon::start(
        &tmp.path().join("loaded"),
        broker.socket(),
        &format!(
            "[[sources]]\nname = \"can\"\nkind = \"candump\"\npath = \"{}\"\nspeed = {factor:.6}\nloop = true\n",
            opts.input.display()
        ),
    )?;
    busy.wait_up(Duration::from_secs(20))?;
    std::thread::sleep(opts.settle);
    let s0 = crate::diag::fetch(&busy.socket)?;
    let c0 = cpu_secs(busy.pid())?;
    let t0 = Instant::now();
    let mut peak = rss_mib(busy.pid())?;
    while t0.elapsed() < opts.loaded {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_mib(busy.pid())?);
        if let Some(st) = busy.child.try_wait()? {
            bail!("the loaded daemon exited ({st})");
        }
    }
    let s1 = crate::diag::fetch(&busy.socket)?;
    let loaded_s = t0.elapsed().as_secs_f64();
    let cpu_fraction_at_160k = (cpu_secs(busy.pid())? - c0) / loaded_s;
    drop(busy);
    let (r0, d0) = source_readings(&s0);
    let (r1, d1) = source_readings(&s1);
    let q0 = &s0.queue.stats;
    let q1 = &s1.queue.stats;
    Ok(FootprintBench {
        binary_bytes_amd64: size_of(amd64.as_deref())?,
        binary_bytes_arm64: size_of(arm64.as_deref())?,
        daemon_binary: exe.display().to_string(),
        daemon_binary_bytes: std::fs::metadata(&exe)?.len(),
        rss_mib_idle,
        cpu_fraction_idle,
        rss_mib_at_160k: peak,
        cpu_fraction_at_160k,
        rate: opts.rate,
        achieved_frames_per_s: r1.saturating_sub(r0) as f64 / loaded_s,
        delivered_batches: q1.delivered_batches.saturating_sub(q0.delivered_batches),
        appended_batches: q1.appended_batches.saturating_sub(q0.appended_batches),
        dropped_readings: d1.saturating_sub(d0),
        idle_s,
        loaded_s,
    })
}

pub fn render(r: &FootprintBench) -> String {
    let mib = |b: Option<u64>| {
        b.map_or("not built".into(), |b| {
            format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
        })
    };
    format!(
        "footprint\n  binaries (stripped release): amd64 {}, arm64 {}\n  idle: RSS {:.1} MiB, {:.4} of one core\n  {} frames/s through the whole pipeline: peak RSS {:.1} MiB, {:.3} of one core, {:.0} frames/s achieved, {} readings dropped, {} of {} batches delivered\n  (daemon figures measured with {})\n",
        mib(r.binary_bytes_amd64),
        mib(r.binary_bytes_arm64),
        r.rss_mib_idle,
        r.cpu_fraction_idle,
        r.rate,
        r.rss_mib_at_160k,
        r.cpu_fraction_at_160k,
        r.achieved_frames_per_s,
        r.dropped_readings,
        r.delivered_batches,
        r.appended_batches,
        r.daemon_binary,
    )
}
