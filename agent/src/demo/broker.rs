//! A Mosquitto broker run as a child process: for `pitlink demo`, the benchmarks and the tests.
//!
//! It listens on a unix socket in its own directory (race-free) and, if asked, on a free TCP
//! port of 127.0.0.1. Persistence can be enabled so that a restart keeps sessions and queued
//! messages, as a production broker would.

use crate::mqtt::BrokerAddr;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Also listen on a free TCP port of 127.0.0.1.
    pub tcp: bool,
    /// Keep sessions and queued messages across a restart (saved on SIGTERM).
    pub persistence: bool,
    /// Serve TLS (and require client certificates) on the TCP port.
    pub tls: Option<BrokerTls>,
}

/// PEM files of a TLS listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS: refuse clients without a certificate signed by `ca`.
    pub require_client_cert: bool,
}

#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    port: Option<u16>,
    binary: PathBuf,
}

/// The mosquitto binary: `$MOSQUITTO`, then `PATH`, then Debian's `/usr/sbin/mosquitto`.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOSQUITTO") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free TCP port")?;
    Ok(l.local_addr()?.port())
}

impl Mosquitto {
    /// Starts a broker whose files (config, socket, log, persistence) live in `dir`.
    pub fn start(dir: &Path, opts: BrokerOptions) -> Result<Mosquitto> {
        let binary = find_binary().context(
            "mosquitto not found: install it (Debian: apt-get install mosquitto; \
             scripts/setup.sh does this) or set MOSQUITTO=/path/to/mosquitto",
        )?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create broker directory {}", dir.display()))?;
        let socket = dir.join("mqtt.sock");
        let conf = dir.join("mosquitto.conf");
        let mut last_err = None;
        for _ in 0..5 {
            let port = if opts.tcp { Some(free_port()?) } else { None };
            let mut text = String::new();
            // As root, mosquitto would otherwise switch to the 'mosquitto' user and lose access
            // to this directory.
            if nix::unistd::geteuid().is_root() {
                text.push_str("user root\n");
            }
            text.push_str("allow_anonymous true\n");
            text.push_str(&format!("listener 0 {}\n", socket.display()));
            // Listener options apply to the listener declared last: the TCP one goes last.
            if let Some(p) = port {
                text.push_str(&format!("listener {p} 127.0.0.1\n"));
                if let Some(t) = &opts.tls {
                    text.push_str(&format!(
                        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                        t.ca.display(),
                        t.cert.display(),
                        t.key.display(),
                        t.require_client_cert
                    ));
                }
            }
            text.push_str("max_queued_messages 0\nmax_queued_bytes 0\nmessage_size_limit 0\n");
            text.push_str("max_inflight_messages 0\n");
            if opts.persistence {
                text.push_str(&format!(
                    "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                    dir.display()
                ));
            } else {
                text.push_str("persistence false\n");
            }
            text.push_str(&format!(
                "log_dest file {}\n",
                dir.join("mosquitto.log").display()
            ));
            std::fs::write(&conf, text)?;
            let mut m = Mosquitto {
                child: None,
                dir: dir.to_owned(),
                conf: conf.clone(),
                socket: socket.clone(),
                port,
                binary: binary.clone(),
            };
            match m.spawn() {
                Ok(()) => return Ok(m),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not start")))
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!("mosquitto exited at start ({st}): {}", tail.join(" | "));
            }
            let unix_ok = std::os::unix::net::UnixStream::connect(&self.socket).is_ok();
            let tcp_ok = self
                .port
                .is_none_or(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok());
            if unix_ok && tcp_ok {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("mosquitto did not open its listeners within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The unix-socket address.
    pub fn addr(&self) -> BrokerAddr {
        BrokerAddr::Unix(self.socket.clone())
    }

    /// The TCP address, if started with `tcp`.
    pub fn tcp_addr(&self) -> Option<BrokerAddr> {
        self.port.map(|port| BrokerAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL: in-memory state not yet saved is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again with the same configuration, socket and port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
