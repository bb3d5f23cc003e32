//! The AT transport over a real PTY: a scripted fake modem on the master side, the shell on the
//! slave side (reached through a symlink, like a `/dev/serial/by-id` link), then the port
//! vanishing as on a modem reset and a new one appearing at the same path.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use modem_hal::at::transport::{AtError, AtHandle, AtPort, CoreConfig, PortConfig, UrcKind};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// A new PTY in raw mode: (master, slave kept open by the test, slave path).
fn pty() -> (OwnedFd, OwnedFd, PathBuf) {
    let p = openpty(None, None).expect("openpty");
    let mut t = tcgetattr(&p.slave).expect("tcgetattr");
    cfmakeraw(&mut t);
    tcsetattr(&p.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
    let path = nix::unistd::ttyname(&p.slave).expect("ttyname");
    (p.master, p.slave, path)
}

/// Points `link` at `target`, replacing it atomically.
fn point(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

/// The fake modem: echo on; reports every command line it receives on `seen`. Returns when
/// the master side is closed (`AT+CFUN=1,1` resets the "modem": the port vanishes).
fn modem(master: OwnedFd, boot_urc: bool, seen: std_mpsc::Sender<String>) {
    let mut port = File::from(master);
    let mut buf = [0u8; 256];
    let mut line = Vec::new();
    let mut late_ok = false;
    let mut first = true;
    loop {
        let n = match port.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b != b'\r' {
                line.push(b);
                continue;
            }
            let cmd = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let mut out = String::new();
            if first && boot_urc {
                out.push_str("\r\nRDY\r\n");
            }
            first = false;
            if std::mem::take(&mut late_ok) {
                // The answer of the slow command arrives only now, before the next echo.
                out.push_str("\r\nOK\r\n");
            }
            out.push_str(&cmd);
            out.push('\r');
            let _ = seen.send(cmd.clone());
            let mut bytes = out.into_bytes();
            match cmd.as_str() {
                "AT+CSQ" => {
                    bytes.extend_from_slice(b"\xff\xfe\r\n+CSQ: 16,99\r\n\r\nOK\r\n");
                }
                "AT+QENG=\"neighbourcell\"" => bytes.extend_from_slice(
                    b"\r\n+QENG: \"neighbourcell intra\",\"LTE\",6300,188,-12,-105,-75,-20,23,4,12,10,62\r\n\
                      +QIND: \"csq\",20,99\r\n\
                      +QENG: \"neighbourcell inter\",\"LTE\",1501,-,-,-,-,-,-,0,10,7\r\n\r\nOK\r\n",
                ),
                "AT+CEREG?" => bytes.extend_from_slice(
                    b"\r\n+CEREG: 1,\"1F00\",\"079D903\",7\r\n+CEREG: 2,1,\"1F00\",\"079D903\",7\r\n\r\nOK\r\n",
                ),
                "AT+CFUN=4" => late_ok = true,
                "AT+CFUN=1,1" => {
                    let _ = port.write_all(&bytes);
                    return; // the device disappears
                }
                _ => bytes.extend_from_slice(b"\r\nERROR\r\n"),
            }
            if port.write_all(&bytes).is_err() {
                return;
            }
        }
    }
}

async fn wait_for(
    what: &str,
    handle: &AtHandle,
    cond: impl Fn(&modem_hal::at::transport::PortCounters) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = handle.counters();
        if cond(&c) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached, counters {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_modem_over_a_pty_and_a_port_that_vanishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("modem");
    let (master, slave, path) = pty();
    point(&link, &path);
    let (seen_tx, seen) = std_mpsc::channel();
    let tx = seen_tx.clone();
    let first_modem = std::thread::spawn(move || modem(master, false, tx));

    let mut cfg = PortConfig::new(&link);
    cfg.reopen_min = Duration::from_millis(20);
    cfg.reopen_max = Duration::from_millis(200);
    cfg.core = CoreConfig {
        resync_window: Duration::from_millis(200),
        ..CoreConfig::default()
    };
    let at = AtPort::spawn(cfg);
    let mut urcs = at.urcs();

    // Echo on, garbage bytes before the response.
    let r = at.command("AT+CSQ", None).await.expect("AT+CSQ");
    assert_eq!(r.lines, ["+CSQ: 16,99"]);

    // Multi-line response with a URC in the middle.
    let r = at
        .command("AT+QENG=\"neighbourcell\"", None)
        .await
        .expect("neighbourcell");
    assert_eq!(r.lines.len(), 2, "{r:?}");
    assert!(r.lines[0].starts_with("+QENG: \"neighbourcell intra\""));
    assert!(r.lines[1].starts_with("+QENG: \"neighbourcell inter\""));
    let urc = urcs.recv().await.expect("URC");
    assert_eq!(
        (urc.kind, urc.line.as_str()),
        (UrcKind::Qind, "+QIND: \"csq\",20,99")
    );

    // +CEREG: as URC and as the response of AT+CEREG? in the same reply.
    let r = at.command("AT+CEREG?", None).await.expect("AT+CEREG?");
    assert_eq!(r.lines, ["+CEREG: 2,1,\"1F00\",\"079D903\",7"]);
    assert_eq!(urcs.recv().await.expect("URC").kind, UrcKind::Cereg);

    // A slow command times out; its late OK is not taken as the answer of the next one.
    let err = at
        .command("AT+CFUN=4", Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, AtError::Timeout { .. }), "{err}");
    let r = at
        .command("AT+CSQ", None)
        .await
        .expect("AT+CSQ after a timeout");
    assert_eq!(r.lines, ["+CSQ: 16,99"]);

    // A network scan is refused on this link.
    let err = at.command("AT+COPS=?", None).await.unwrap_err();
    assert!(matches!(err, AtError::Refused(_)), "{err}");

    // The modem resets: the port vanishes under the command in flight.
    let err = at.command("AT+CFUN=1,1", None).await.unwrap_err();
    assert!(matches!(err, AtError::Disconnected { .. }), "{err}");
    first_modem.join().expect("first modem");
    drop(slave);

    // A new device appears at the same path (a PTY cannot be re-created under its old name).
    let (master, slave2, path) = pty();
    point(&link, &path);
    let second_modem = std::thread::spawn(move || modem(master, true, seen_tx));
    wait_for("reconnect", &at, |c| c.reconnects >= 1 && c.connected).await;
    let r = at
        .command("AT+CSQ", None)
        .await
        .expect("AT+CSQ after reconnect");
    assert_eq!(r.lines, ["+CSQ: 16,99"]);
    assert_eq!(urcs.recv().await.expect("URC").kind, UrcKind::Ready);

    let c = at.counters();
    assert_eq!(c.core.timeouts, 1);
    assert_eq!(c.core.disconnected, 1);
    assert_eq!(c.core.refused, 1);
    assert_eq!(c.core.stale_lines, 1);
    assert_eq!(c.core.urcs, 3);
    assert_eq!(c.core.garbage_bytes, 2 * 3);
    assert_eq!(c.reconnects, 1);
    let sent: Vec<String> = seen.try_iter().collect();
    assert_eq!(
        sent,
        [
            "AT+CSQ",
            "AT+QENG=\"neighbourcell\"",
            "AT+CEREG?",
            "AT+CFUN=4",
            "AT+CSQ",
            "AT+CFUN=1,1",
            "AT+CSQ"
        ]
    );
    drop(at);
    drop(slave2);
    second_modem.join().expect("second modem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_port_fails_commands_at_once_and_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = PortConfig::new(dir.path().join("absent"));
    cfg.reopen_min = Duration::from_millis(10);
    cfg.reopen_max = Duration::from_millis(20);
    let at = AtPort::spawn(cfg);
    let err = at.command("AT", None).await.unwrap_err();
    assert!(
        matches!(&err, AtError::Disconnected { why, .. } if why.contains("absent")),
        "{err}"
    );
    wait_for("open retries", &at, |c| {
        c.open_failures >= 3 && !c.connected
    })
    .await;
    assert_eq!(
        at.counters().core.disconnected,
        0,
        "never accepted by the core"
    );
}
