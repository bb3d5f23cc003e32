//! The systemd notification protocol of `pitlink run`, against a notification socket the test
//! binds (as systemd would with Type=notify and WatchdogSec): READY=1 once the queue is
//! recovered, STATUS= lines, WATCHDOG=1 pings while the pipeline progresses, no more pings once
//! the core is stuck (a hidden test hook blocks the core thread), STOPPING=1 on SIGTERM.

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::*;

/// The watchdog interval given to the daemon (it pings at half of it).
const WATCHDOG: Duration = Duration::from_secs(2);

struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: &Path) -> Result<Notify> {
        let sock = UnixDatagram::bind(path).context("bind the notification socket")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Notify {
            sock,
            seen: Vec::new(),
        })
    }

    /// Receives messages until one satisfies `pred` (returned) or `limit` passes.
    fn until(
        &mut self,
        d: &mut Proc,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if pred(&msg) {
                        return Ok(msg);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(st) = d.child.try_wait()? {
                bail!(
                    "daemon exited ({st}); messages: {:?}\n{}",
                    self.seen,
                    d.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no matching notification within {limit:?}; messages: {:?}\n{}",
                    self.seen,
                    d.log_text()
                );
            }
        }
    }
}

fn spawn(dir: &Path, notify: &Path, stall_after_ms: Option<u64>) -> Result<Proc> {
    let sources = [Synth {
        name: "engine",
        channels: 8,
        rate_hz: 200,
        waveform: "sine",
    }];
    // No broker: batches are still stored in the queue, which is the progress judged.
    let config = write_config(
        dir,
        "car-notify",
        &dir.join("no-broker.sock"),
        &["l0"],
        &sources,
    )?;
    let log = dir.join("daemon.log");
    let mut cmd = Command::new(pitlink_bin());
    cmd.args(["--config", config.to_str().context("utf-8")?, "run"])
        .env("PITLINK_LOG", "info")
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    if let Some(ms) = stall_after_ms {
        cmd.env("PITLINK_TEST_STALL_CORE_AFTER_MS", ms.to_string());
    }
    Ok(Proc {
        child: cmd.spawn().context("spawn pitlink")?,
        log,
    })
}

#[test]
fn ready_status_watchdog_and_stopping() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notify");
    let mut n = Notify::bind(&path)?;
    let mut d = spawn(dir.path(), &path, None)?;

    n.until(&mut d, Duration::from_secs(20), |m| m == "READY=1")?;
    ensure!(
        d.log_text().contains("queue recovered"),
        "READY=1 before the queue was recovered:\n{}",
        d.log_text()
    );
    ensure!(n.seen.len() == 1, "messages before READY=1: {:?}", n.seen);
    let status = n.until(&mut d, Duration::from_secs(10), |m| {
        m.starts_with("STATUS=")
    })?;
    ensure!(
        status.contains("1 sources") && status.contains("links 0/1 up"),
        "unexpected STATUS line: {status}"
    );
    // Pings keep coming while the synthetic source's batches are stored.
    for _ in 0..4 {
        n.until(&mut d, WATCHDOG * 2, |m| m == "WATCHDOG=1")?;
    }
    // A later STATUS reflects the readings flowing.
    let later = n.until(&mut d, Duration::from_secs(10), |m| {
        m.starts_with("STATUS=") && !m.contains(" 0 readings/s")
    })?;
    ensure!(later.contains("readings/s"), "{later}");

    d.signal(Signal::SIGTERM);
    let stopping = n.until(&mut d, Duration::from_secs(10), |m| {
        m.contains("STOPPING=1")
    });
    let st = d.wait_exit(Duration::from_secs(10))?;
    stopping?;
    ensure!(st.success(), "daemon exit {st}:\n{}", d.log_text());
    Ok(())
}

#[test]
fn watchdog_pings_stop_when_the_core_is_stuck() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notify");
    let mut n = Notify::bind(&path)?;
    let mut d = spawn(dir.path(), &path, Some(2500))?;

    n.until(&mut d, Duration::from_secs(20), |m| m == "READY=1")?;
    n.until(&mut d, WATCHDOG * 2, |m| m == "WATCHDOG=1")?;
    d.wait_log(
        "test hook: the core thread stops here",
        Duration::from_secs(20),
    )?;
    let stuck = n.until(&mut d, WATCHDOG * 4, |m| m.starts_with("STATUS=stuck"))?;
    ensure!(stuck.contains("no status"), "{stuck}");
    // From here on no ping may arrive: wait several ping periods for one.
    let ping = n.until(&mut d, WATCHDOG * 3, |m| m == "WATCHDOG=1");
    d.signal(Signal::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(5));
    ensure!(ping.is_err(), "a WATCHDOG=1 ping after the core got stuck");
    ensure!(
        d.log_text().contains("pipeline stuck"),
        "no log line for the stall:\n{}",
        d.log_text()
    );
    Ok(())
}
