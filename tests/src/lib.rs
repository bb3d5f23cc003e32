//! Harness for pitlink's end-to-end tests: the real `pitlink` binary as child processes, a real
//! Mosquitto broker per test, real files. Nothing here is mocked.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use pitlink::demo::broker::{BrokerOptions, BrokerTls, Mosquitto};
pub use pitlink::diag::Status;

/// Path of the `pitlink` binary, built once per test process (so a test never runs a stale one).
pub fn pitlink_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PITLINK_BIN") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-q", "-p", "pitlink", "--bin", "pitlink"])
            .current_dir(&root);
        // Cargo describes the test's own package in these; build scripts watch some of them
        // (ring's reruns when CARGO_MANIFEST_DIR or CARGO_PKG_NAME change), so passing them on
        // would rebuild the whole TLS stack here and again at the next plain `cargo build`.
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str()
                && (k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_MANIFEST_")
                    || matches!(
                        k,
                        "CARGO_CRATE_NAME"
                            | "CARGO_BIN_NAME"
                            | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR"
                            | "OUT_DIR"
                    ))
            {
                build.env_remove(k);
            }
        }
        let status = build.status().expect("cargo build of pitlink");
        assert!(status.success(), "building pitlink failed");
        // target/debug/deps/<test binary> → target/debug/pitlink
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        dir.join("pitlink")
    })
}

/// One synthetic source for a test config.
#[derive(Debug, Clone)]
pub struct Synth {
    pub name: &'static str,
    pub channels: u16,
    pub rate_hz: u32,
    pub waveform: &'static str,
}

/// Settings of a test config beyond its synthetic sources; the defaults are what
/// [`write_config`] uses.
#[derive(Debug, Clone)]
pub struct ConfigKnobs {
    /// Queue directory; `None`: `queue` inside the test's directory.
    pub dir: Option<PathBuf>,
    pub max_mb: u64,
    pub segment_mb: u64,
    pub flush_ms: u64,
    /// Further `[[sources]]` tables, as TOML text appended to the file.
    pub extra_sources: String,
    /// Broker address (`address` key) of each link, in order; missing ones use `[broker]`.
    pub link_addresses: Vec<std::net::SocketAddr>,
    /// AT port (`modem` key) of each link, in order; missing ones have no modem.
    pub link_modems: Vec<PathBuf>,
}

impl Default for ConfigKnobs {
    fn default() -> Self {
        ConfigKnobs {
            dir: None,
            max_mb: 512,
            segment_mb: 8,
            flush_ms: 100,
            extra_sources: String::new(),
            link_addresses: Vec::new(),
            link_modems: Vec::new(),
        }
    }
}

/// The shared third-party test data (`../shared/data` beside the repository).
pub fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// Writes a config file for a daemon talking to `broker_socket`, with its queue and diagnostics
/// socket inside `dir`. Returns the file's path.
pub fn write_config(
    dir: &Path,
    vehicle: &str,
    broker_socket: &Path,
    links: &[&str],
    sources: &[Synth],
) -> Result<PathBuf> {
    write_config_with(
        dir,
        vehicle,
        broker_socket,
        links,
        sources,
        &ConfigKnobs::default(),
    )
}

/// [`write_config`] with other queue settings.
pub fn write_config_with(
    dir: &Path,
    vehicle: &str,
    broker_socket: &Path,
    links: &[&str],
    sources: &[Synth],
    queue: &ConfigKnobs,
) -> Result<PathBuf> {
    let queue_dir = queue.dir.clone().unwrap_or_else(|| dir.join("queue"));
    let mut t = format!(
        "vehicle = \"{vehicle}\"\n\n[queue]\ndir = \"{}\"\nmax_mb = {}\nsegment_mb = {}\nflush_ms = {}\n\n[batch]\nwindow_ms = 100\n\n[broker]\nsocket = \"{}\"\nkeep_alive_s = 2\n\n[diag]\nsocket = \"{}\"\n",
        queue_dir.display(),
        queue.max_mb,
        queue.segment_mb,
        queue.flush_ms,
        broker_socket.display(),
        dir.join("pitlink.sock").display()
    );
    for (i, l) in links.iter().enumerate() {
        t.push_str(&format!("\n[[links]]\nname = \"{l}\"\n"));
        if let Some(a) = queue.link_addresses.get(i) {
            t.push_str(&format!("address = \"{a}\"\n"));
        }
        if let Some(m) = queue.link_modems.get(i) {
            t.push_str(&format!("modem = \"{}\"\n", m.display()));
        }
    }
    for s in sources {
        t.push_str(&format!(
            "\n[[sources]]\nname = \"{}\"\nkind = \"synthetic\"\nchannels = {}\nrate_hz = {}\nwaveform = \"{}\"\n",
            s.name, s.channels, s.rate_hz, s.waveform
        ));
    }
    t.push_str(&queue.extra_sources);
    let path = dir.join("pitlink.toml");
    std::fs::write(&path, t)?;
    Ok(path)
}

/// A child process whose stderr goes to a log file that tests can read.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], log: &Path) -> Result<Proc> {
        let err = std::fs::File::create(log)?;
        let child = Command::new(pitlink_bin())
            .args(args)
            .env("PITLINK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("spawn pitlink")?;
        Ok(Proc {
            child,
            log: log.to_owned(),
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `probe` every 20 ms until it gives a value. Fails, with the log, if the process
    /// exits or `limit` passes; `probe`'s last `Err` note is added to that message.
    pub fn poll_until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut(&Proc) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            let note = match probe(self) {
                Ok(v) => return Ok(v),
                Err(note) => note,
            };
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "process exited ({st}) while waiting for {what}:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not reached within {limit:?}{note}\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle` (or the process exits, or `limit` passes).
    pub fn wait_log(&mut self, needle: &str, limit: Duration) -> Result<()> {
        self.poll_until(&format!("'{needle}' in the log"), limit, |p| {
            match p.log_text().contains(needle) {
                true => Ok(()),
                false => Err(String::new()),
            }
        })
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Waits for the exit, at most `limit`; kills the process past it.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "process did not exit within {limit:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `pitlink receive` on `broker_socket`, writing to `out`; returns once it is subscribed.
pub fn start_receiver(
    dir: &Path,
    broker_socket: &Path,
    out: &Path,
    idle_exit: &str,
) -> Result<Proc> {
    let broker = format!("unix:{}", broker_socket.display());
    let mut p = Proc::spawn(
        &[
            "receive",
            "--broker",
            &broker,
            "--client-id",
            "test-receiver",
            "--out",
            out.to_str().context("utf-8 path")?,
            "--idle-exit",
            idle_exit,
            "--json",
        ],
        &dir.join("receiver.log"),
    )?;
    p.wait_log("subscribed", Duration::from_secs(10))?;
    Ok(p)
}

/// One sample line of the receiver's JSONL output.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct SampleLine {
    pub vehicle: String,
    pub run: u32,
    pub seq: u64,
    pub source: String,
    pub ch: u16,
    pub t_us: u64,
    pub v: f64,
}

/// Reads every sample line (event lines are skipped) of a receiver's output.
pub fn read_samples(path: &Path) -> Result<Vec<SampleLine>> {
    read_data_lines(path)
}

/// Reads every data line (value or frame; `"event"` lines are skipped) of a receiver's JSONL
/// output as `T`.
pub fn read_data_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        if v.get("event").is_some() {
            continue;
        }
        out.push(serde_json::from_value(v).with_context(|| line.clone())?);
    }
    Ok(out)
}

/// Per (source, channel): the timestamps received, in order of arrival.
pub fn by_channel(lines: &[SampleLine]) -> BTreeMap<(String, u16), Vec<u64>> {
    let mut m: BTreeMap<(String, u16), Vec<u64>> = BTreeMap::new();
    for l in lines {
        m.entry((l.source.clone(), l.ch)).or_default().push(l.t_us);
    }
    m
}

/// The value of `key=<number>` in the last log line that contains `marker`.
pub fn log_field(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    pitlink::bench::chaos::field(line, key)
}

/// The daemon's closing counters (its last "core stopped" log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalCounters {
    pub generated: u64,
    pub dropped: u64,
    pub undelivered: u64,
}

/// Starts `pitlink run` with `config` and waits until a link is up.
pub fn start_daemon(dir: &Path, config: &Path) -> Result<Proc> {
    let mut d = spawn_daemon(config, &dir.join("daemon.log"))?;
    d.wait_log("link up", Duration::from_secs(10))?;
    Ok(d)
}

/// Starts `pitlink run` with `config`, logging to `log`, without waiting for anything.
pub fn spawn_daemon(config: &Path, log: &Path) -> Result<Proc> {
    Proc::spawn(
        &["--config", config.to_str().context("utf-8 path")?, "run"],
        log,
    )
}

/// Polls the daemon's diagnostics socket until `pred` holds; returns that status. Fails if the
/// daemon exits or `limit` passes (naming `what` and the last status seen).
pub fn wait_status(
    d: &mut Proc,
    socket: &Path,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Status) -> bool,
) -> Result<Status> {
    d.poll_until(what, limit, |_| {
        // Refused or missing socket: the daemon is not serving yet (or a killed one left it).
        match pitlink::diag::fetch(socket) {
            Ok(st) if pred(&st) => Ok(st),
            Ok(st) => Err(format!(
                "; last status: {}",
                serde_json::to_string(&st).unwrap_or_default()
            )),
            Err(_) => Err("; no status yet".into()),
        }
    })
}

/// Stops a receiver (started with an idle exit longer than the test) once its output has not
/// grown for `quiet`: SIGTERM, on which it exits cleanly and prints its summary. Unlike
/// `--idle-exit`, the quiet period only counts from now: call it once every sender has stopped,
/// so a pause while the test still waits on the daemon cannot end the receiver early.
pub fn stop_receiver_when_quiet(rx: &mut Proc, out: &Path, quiet: Duration) -> Result<()> {
    stop_receiver_when_still(rx, quiet, || std::fs::metadata(out).map_or(0, |m| m.len()))
}

/// Stops the receiver (SIGTERM, clean exit) once `measure` (the size of its output, however
/// it is laid out) has not changed for `quiet`; fails if it keeps changing for 2 minutes or the
/// receiver exits by itself.
pub fn stop_receiver_when_still(
    rx: &mut Proc,
    quiet: Duration,
    mut measure: impl FnMut() -> u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (measure(), Instant::now());
    while since.elapsed() < quiet {
        if let Some(st) = rx.child.try_wait()? {
            bail!("receiver exited early ({st}):\n{}", rx.log_text());
        }
        if Instant::now() > deadline {
            bail!("the receiver's output kept growing for 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
        let now = measure();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    rx.signal(Signal::SIGTERM);
    let st = rx.wait_exit(Duration::from_secs(30))?;
    if !st.success() {
        bail!("receiver exit: {st}\n{}", rx.log_text());
    }
    Ok(())
}

/// Every channel's timestamps form the exact grid of `period_us`, each exactly once; returns
/// the sample count.
pub fn assert_grid_exactly_once(lines: &[SampleLine], channels: u16, period_us: u64) -> u64 {
    let per = by_channel(lines);
    assert_eq!(per.len(), usize::from(channels), "every channel arrived");
    for ((src, ch), ts) in &per {
        let mut sorted = ts.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            n,
            "{src}/{ch}: {} duplicates",
            n - sorted.len()
        );
        for w in sorted.windows(2) {
            assert_eq!(w[1] - w[0], period_us, "{src}/{ch}: gap after {}", w[0]);
        }
    }
    lines.len() as u64
}

/// The receiver's closing summary: the JSON object `pitlink receive --json` prints as the last
/// line of its stderr.
pub fn receiver_summary(rx: &Proc) -> Result<serde_json::Value> {
    let log = rx.log_text();
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("the receiver printed nothing:\n{log}"))?;
    serde_json::from_str(last)
        .with_context(|| format!("the receiver's last line is not its JSON summary:\n{log}"))
}

/// SIGTERM, a clean exit within `limit`, and the closing counters.
pub fn stop_daemon(d: &mut Proc, limit: Duration) -> Result<FinalCounters> {
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(limit)?;
    let log = d.log_text();
    if !st.success() {
        bail!("daemon exit: {st}\n{log}");
    }
    let field = |k: &str| {
        log_field(&log, "core stopped", k)
            .with_context(|| format!("no {k}= in the closing log line:\n{log}"))
    };
    Ok(FinalCounters {
        generated: field("generated")?,
        dropped: field("dropped")?,
        undelivered: field("undelivered")?,
    })
}

/// Waits for the receiver to exit cleanly (it was started with --idle-exit) and reads its output.
pub fn finish_receiver(rx: &mut Proc, out: &Path) -> Result<Vec<SampleLine>> {
    let st = rx.wait_exit(Duration::from_secs(30))?;
    if !st.success() {
        bail!("receiver exit: {st}\n{}", rx.log_text());
    }
    read_samples(out)
}

/// A `pitlink modem sim` child (simulated modems and GPS on PTYs), killed on drop.
#[derive(Debug)]
pub struct SimModems {
    child: Child,
    /// The JSON line it printed at start: `scenario`, `modems` (`name`, `carrier`, `path`),
    /// `gps`.
    pub started: serde_json::Value,
}

impl Drop for SimModems {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pitlink modem sim --json --dir DIR ARGS...` and reads its start line.
pub fn start_sim_modems(dir: &Path, args: &[&str]) -> Result<SimModems> {
    let mut child = Command::new(pitlink_bin())
        .args(["modem", "sim", "--json", "--dir"])
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn pitlink modem sim")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let started =
        serde_json::from_str(&line).with_context(|| format!("modem sim said {line:?}"))?;
    Ok(SimModems { child, started })
}
